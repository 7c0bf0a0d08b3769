/* Shared declarations of the addon. Each C file in native/ covers one concern and exports its functions
 * through a register_* function called from addon.c. Convention for every function: arguments arrive
 * already validated by TypeScript; failures come back as a negative errno (never thrown), so the
 * TypeScript side decides what an error means. Only misuse of the binding itself throws. */
#ifndef UFFD_ADDON_H
#define UFFD_ADDON_H

#include <node_api.h>
#include <stdbool.h>
#include <stdint.h>

/* Per-env state (one per main thread or worker). */
typedef struct {
  int32_t live_watchers; /* uv_poll handles not yet closed (tests check that teardown closes them) */
} addon_state;

addon_state *addon_get_state(napi_env env);

/* args.c */
#define NAPI_OK(call)                                   \
  do {                                                  \
    if ((call) != napi_ok) return throw_status(env);    \
  } while (0)
napi_value throw_status(napi_env env);
napi_value throw_usage(napi_env env, const char *message);
bool get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv);
bool arg_i32(napi_env env, napi_value v, int32_t *out);
bool arg_i64(napi_env env, napi_value v, int64_t *out);
bool arg_u64(napi_env env, napi_value v, uint64_t *out);   /* BigInt */
bool arg_bytes(napi_env env, napi_value v, void **data, size_t *len); /* TypedArray, DataView or ArrayBuffer */
/* A string copied whole into buf (size bytes with its NUL), never cut: false with an exception pending when
 * `v` is not a string; else *err is 0, -ENAMETOOLONG when it does not fit, or -EINVAL when it holds a NUL
 * byte (C would see a shorter string than the caller meant). */
bool arg_cstring(napi_env env, napi_value v, char *buf, size_t size, int *err);
/* A native handle: an external tagged with `tag` when it was made, so a handle of another kind (a watcher
 * where a region is expected) or any other value throws a TypeError instead of being used as the wrong
 * struct. */
bool arg_handle(napi_env env, napi_value v, const napi_type_tag *tag, const char *what, void **out);
/* The make_* helpers return NULL with an exception pending when Node-API fails (a caller returning it hands
 * the exception to JavaScript; one passing it on to another napi call gets napi_invalid_arg). */
napi_value make_i32(napi_env env, int32_t v);
napi_value make_i64(napi_env env, int64_t v);
napi_value make_u64(napi_env env, uint64_t v);              /* BigInt */
napi_value make_neg_errno(napi_env env, int err);

typedef struct {
  const char *name;
  napi_callback cb;
} export_entry;
#define EXPORTS(table) export_fns(env, exports, table, sizeof table / sizeof table[0])
napi_status export_fns(napi_env env, napi_value exports, const export_entry *table, size_t count);
napi_status register_fd(napi_env env, napi_value exports);
napi_status register_memory(napi_env env, napi_value exports);
napi_status register_poll(napi_env env, napi_value exports);
napi_status register_process(napi_env env, napi_value exports);
napi_status register_socket(napi_env env, napi_value exports);
napi_status register_uffd(napi_env env, napi_value exports);

#endif
