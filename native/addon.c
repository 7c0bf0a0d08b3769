/* Module entry: per-env instance data, then each concern registers its functions. */
#include "addon.h"

#include <stdlib.h>

static void free_state(napi_env env, void *data, void *hint) { free(data); }

addon_state *addon_get_state(napi_env env) {
  void *data = NULL;
  if (napi_get_instance_data(env, &data) != napi_ok) return NULL;
  return data;
}

napi_status export_fns(napi_env env, napi_value exports, const export_entry *table, size_t count) {
  for (size_t i = 0; i < count; i++) {
    napi_value fn;
    napi_status st = napi_create_function(env, table[i].name, NAPI_AUTO_LENGTH, table[i].cb, NULL, &fn);
    if (st == napi_ok) st = napi_set_named_property(env, exports, table[i].name, fn);
    if (st != napi_ok) return st;
  }
  return napi_ok;
}

static napi_value live_handles(napi_env env, napi_callback_info info) {
  addon_state *st = addon_get_state(env);
  if (st == NULL) return throw_usage(env, "userfaultfd binding: no instance data for this environment");
  napi_value out;
  NAPI_OK(napi_create_object(env, &out));
  NAPI_OK(napi_set_named_property(env, out, "watchers", make_i32(env, st->live_watchers)));
  return out;
}

static napi_value init(napi_env env, napi_value exports) {
  addon_state *st = calloc(1, sizeof *st);
  if (st == NULL) {
    napi_throw_error(env, "ERR_UFFD_BINDING", "userfaultfd: out of memory loading the addon");
    return NULL;
  }
  if (napi_set_instance_data(env, st, free_state, NULL) != napi_ok) {
    free(st);
    return throw_status(env);
  }
  static const export_entry table[] = {{"liveHandles", live_handles}};
  /* A registration that fails leaves the module unloaded with the reason, never half the functions. */
  if (EXPORTS(table) != napi_ok || register_fd(env, exports) != napi_ok || register_memory(env, exports) != napi_ok ||
      register_poll(env, exports) != napi_ok || register_process(env, exports) != napi_ok ||
      register_socket(env, exports) != napi_ok || register_uffd(env, exports) != napi_ok)
    return throw_status(env);
  return exports;
}

NAPI_MODULE_INIT() { return init(env, exports); }
