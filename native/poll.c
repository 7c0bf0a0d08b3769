/* A uv_poll watcher on an fd of the caller's event loop (main thread or worker): calls back into JS
 * when the fd is readable. Each watcher holds an async cleanup hook, so an env that is torn down
 * (a worker exiting) closes the handle first; libuv aborts on a loop closed with live handles.
 * The hook is removed only in the close callback: until then the env (and its instance data) stays. */
#include "addon.h"

#include <errno.h>
#include <stdlib.h>
#include <uv.h>

typedef struct {
  uv_poll_t handle;
  napi_env env;
  napi_ref callback;
  napi_ref resource;
  napi_async_context async;
  napi_async_cleanup_hook_handle hook;
  int events;
  bool closing;
  bool closed;
  bool handle_alive; /* the JS external that names this watcher has not been finalized */
} watcher;

static void on_closed(uv_handle_t *h) {
  watcher *w = h->data;
  napi_env env = w->env;
  addon_state *st = addon_get_state(env);
  if (st != NULL) st->live_watchers--;
  if (w->async != NULL) napi_async_destroy(env, w->async);
  if (w->callback != NULL) napi_delete_reference(env, w->callback);
  if (w->resource != NULL) napi_delete_reference(env, w->resource);
  if (w->hook != NULL) napi_remove_async_cleanup_hook(w->hook);
  w->closed = true;
  if (!w->handle_alive) free(w);
}

/* The JS handle is gone; the watcher may still be open (it keeps its callback alive until stopped). */
static void on_handle_finalized(napi_env env, void *data, void *hint) {
  watcher *w = data;
  w->handle_alive = false;
  if (w->closed) free(w);
}

static void watcher_close(watcher *w) {
  if (w->closing) return;
  w->closing = true;
  uv_poll_stop(&w->handle);
  uv_close((uv_handle_t *)&w->handle, on_closed);
}

static void on_env_cleanup(napi_async_cleanup_hook_handle hook, void *arg) { watcher_close(arg); }

static void on_poll(uv_poll_t *h, int status, int events) {
  watcher *w = h->data;
  if (w->closing) return;
  napi_env env = w->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value cb, recv, argv[2], ignored;
  argv[0] = make_i32(env, status);
  argv[1] = make_i32(env, events);
  if (napi_get_reference_value(env, w->callback, &cb) == napi_ok &&
      napi_get_reference_value(env, w->resource, &recv) == napi_ok &&
      napi_make_callback(env, w->async, recv, cb, 2, argv, &ignored) != napi_ok) {
    /* An exception thrown by the JS callback: report it as uncaught, as Node does for its own handles. */
    napi_value err;
    if (napi_get_and_clear_last_exception(env, &err) == napi_ok) napi_fatal_exception(env, err);
  }
  napi_close_handle_scope(env, scope);
}

/* Marks the externals that name a watcher (a random 128-bit value: no other addon's handle carries it). */
static const napi_type_tag WATCHER_TAG = {0x8d1f3c2a6b7e4d90ULL, 0xa35c0e91f2b84c17ULL};

static bool arg_watcher(napi_env env, napi_value v, watcher **out) {
  return arg_handle(env, v, &WATCHER_TAG, "userfaultfd binding: expected a watcher handle", (void **)out);
}

/* pollStart(fd, events, callback(status, events)) -> watcher handle, or -errno (uv error) */
static napi_value poll_start(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int32_t fd, events;
  if (!get_args(env, info, 3, argv) || !arg_i32(env, argv[0], &fd) || !arg_i32(env, argv[1], &events)) return NULL;
  uv_loop_t *loop;
  NAPI_OK(napi_get_uv_event_loop(env, &loop));
  addon_state *st = addon_get_state(env);
  if (st == NULL) return throw_usage(env, "userfaultfd binding: no instance data for this environment");
  watcher *w = calloc(1, sizeof *w);
  if (w == NULL) return make_neg_errno(env, ENOMEM);
  int rc = uv_poll_init(loop, &w->handle, fd);
  if (rc < 0) {
    free(w);
    return make_i32(env, rc);
  }
  w->handle.data = w;
  w->env = env;
  w->events = events;
  st->live_watchers++;
  napi_value resource, name, handle;
  if (napi_create_object(env, &resource) != napi_ok ||
      napi_create_string_utf8(env, "UffdWatcher", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_async_init(env, resource, name, &w->async) != napi_ok ||
      napi_create_reference(env, argv[2], 1, &w->callback) != napi_ok ||
      napi_create_reference(env, resource, 1, &w->resource) != napi_ok ||
      napi_add_async_cleanup_hook(env, on_env_cleanup, w, &w->hook) != napi_ok ||
      napi_create_external(env, w, on_handle_finalized, NULL, &handle) != napi_ok) {
    /* Half built: on_closed releases whatever was created (the fields still NULL are skipped). */
    napi_value pending;
    napi_get_and_clear_last_exception(env, &pending);
    watcher_close(w);
    return throw_usage(env, "userfaultfd binding: cannot create a watcher");
  }
  w->handle_alive = true;
  if (napi_type_tag_object(env, handle, &WATCHER_TAG) != napi_ok) {
    watcher_close(w); /* the handle's finalizer frees it */
    return throw_status(env);
  }
  rc = uv_poll_start(&w->handle, events, on_poll);
  if (rc < 0) {
    watcher_close(w);
    return make_i32(env, rc);
  }
  return handle;
}

/* pollStop(watcher): idempotent. The handle must not be used afterwards. */
static napi_value poll_stop(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  watcher *w;
  if (!get_args(env, info, 1, argv) || !arg_watcher(env, argv[0], &w)) return NULL;
  watcher_close(w);
  return NULL;
}

/* pollPause(watcher) / pollResume(watcher): a level-triggered poll on a descriptor with pending data fires
 * on every loop turn; a consumer that is busy elsewhere (awaiting a source) pauses it instead of spinning. */
static napi_value poll_pause(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  watcher *w;
  if (!get_args(env, info, 1, argv) || !arg_watcher(env, argv[0], &w)) return NULL;
  if (!w->closing) uv_poll_stop(&w->handle);
  return NULL;
}

static napi_value poll_resume(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  watcher *w;
  if (!get_args(env, info, 1, argv) || !arg_watcher(env, argv[0], &w)) return NULL;
  if (w->closing) return make_i32(env, 0);
  return make_i32(env, uv_poll_start(&w->handle, w->events, on_poll));
}

/* pollRef(watcher, keepsLoopAlive) */
static napi_value poll_ref(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  watcher *w;
  bool on;
  if (!get_args(env, info, 2, argv) || !arg_watcher(env, argv[0], &w)) return NULL;
  NAPI_OK(napi_get_value_bool(env, argv[1], &on));
  if (!w->closing) (on ? uv_ref : uv_unref)((uv_handle_t *)&w->handle);
  return NULL;
}

napi_status register_poll(napi_env env, napi_value exports) {
  static const export_entry table[] = {
      {"pollStart", poll_start}, {"pollStop", poll_stop}, {"pollRef", poll_ref},
      {"pollPause", poll_pause}, {"pollResume", poll_resume},
  };
  napi_status st = EXPORTS(table);
  napi_value events, readable, disconnect;
  if (st == napi_ok) st = napi_create_object(env, &events);
  if (st == napi_ok) st = napi_create_int32(env, UV_READABLE, &readable);
  if (st == napi_ok) st = napi_create_int32(env, UV_DISCONNECT, &disconnect);
  if (st == napi_ok) st = napi_set_named_property(env, events, "READABLE", readable);
  if (st == napi_ok) st = napi_set_named_property(env, events, "DISCONNECT", disconnect);
  if (st == napi_ok) st = napi_set_named_property(env, exports, "pollEvents", events);
  return st;
}
