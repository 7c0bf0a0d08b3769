/* Module entry: per-env instance data, then each concern registers its functions. */
#include "addon.h"

#include <stdlib.h>

static void free_state(napi_env env, void *data, void *hint) { free(data); }

addon_state *addon_get_state(napi_env env) {
  void *data = NULL;
  if (napi_get_instance_data(env, &data) != napi_ok) return NULL;
  return data;
}

void export_fn(napi_env env, napi_value exports, const char *name, napi_callback cb) {
  napi_value fn;
  if (napi_create_function(env, name, NAPI_AUTO_LENGTH, cb, NULL, &fn) != napi_ok) return;
  napi_set_named_property(env, exports, name, fn);
}

static napi_value live_handles(napi_env env, napi_callback_info info) {
  addon_state *st = addon_get_state(env);
  napi_value out;
  NAPI_OK(napi_create_object(env, &out));
  NAPI_OK(napi_set_named_property(env, out, "watchers", make_i32(env, st->live_watchers)));
  return out;
}

static napi_value init(napi_env env, napi_value exports) {
  addon_state *st = calloc(1, sizeof *st);
  if (st == NULL || napi_set_instance_data(env, st, free_state, NULL) != napi_ok) {
    free(st);
    napi_throw_error(env, NULL, "userfaultfd: cannot set instance data");
    return NULL;
  }
  export_fn(env, exports, "liveHandles", live_handles);
  register_fd(env, exports);
  register_memory(env, exports);
  register_poll(env, exports);
  register_process(env, exports);
  register_socket(env, exports);
  register_uffd(env, exports);
  return exports;
}

NAPI_MODULE_INIT() { return init(env, exports); }
