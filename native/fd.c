/* Plain descriptor operations that Node's fs module does not offer (or offers only with exceptions). */
#include "addon.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

static bool one_fd(napi_env env, napi_callback_info info, int32_t *fd) {
  napi_value argv[1];
  return get_args(env, info, 1, argv) && arg_i32(env, argv[0], fd);
}

static napi_value result(napi_env env, int rc) { return rc < 0 ? make_neg_errno(env, errno) : make_i32(env, rc); }

/* setNonBlocking(fd, on) -> 0 or -errno */
static napi_value set_nonblocking(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int32_t fd;
  bool on;
  if (!get_args(env, info, 2, argv) || !arg_i32(env, argv[0], &fd)) return NULL;
  NAPI_OK(napi_get_value_bool(env, argv[1], &on));
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0) return make_neg_errno(env, errno);
  int want = on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);
  return result(env, want == flags ? 0 : fcntl(fd, F_SETFL, want));
}

/* getStatusFlags(fd) -> F_GETFL or -errno */
static napi_value get_status_flags(napi_env env, napi_callback_info info) {
  int32_t fd;
  if (!one_fd(env, info, &fd)) return NULL;
  return result(env, fcntl(fd, F_GETFL));
}

/* getFdFlags(fd) -> F_GETFD (FD_CLOEXEC) or -errno */
static napi_value get_fd_flags(napi_env env, napi_callback_info info) {
  int32_t fd;
  if (!one_fd(env, info, &fd)) return NULL;
  return result(env, fcntl(fd, F_GETFD));
}

/* dupCloexec(fd) -> new fd or -errno */
static napi_value dup_cloexec(napi_env env, napi_callback_info info) {
  int32_t fd;
  if (!one_fd(env, info, &fd)) return NULL;
  return result(env, fcntl(fd, F_DUPFD_CLOEXEC, 0));
}

/* close(fd) -> 0 or -errno. EINTR still closes the fd on Linux: never retried. */
static napi_value close_fd(napi_env env, napi_callback_info info) {
  int32_t fd;
  if (!one_fd(env, info, &fd)) return NULL;
  return result(env, close(fd));
}

/* pollNow(fd) -> revents of a zero-timeout poll(POLLIN), or -errno. On a non-blocking uffd POLLERR means
 * UFFDIO_API has not succeeded yet: the only way to tell on kernels before 5.15, whose fdinfo lacks it. */
static napi_value poll_now(napi_env env, napi_callback_info info) {
  int32_t fd;
  if (!one_fd(env, info, &fd)) return NULL;
  struct pollfd p = {.fd = fd, .events = POLLIN};
  int rc = poll(&p, 1, 0);
  return result(env, rc < 0 ? rc : p.revents);
}

napi_status register_fd(napi_env env, napi_value exports) {
  static const export_entry table[] = {
      {"pollNow", poll_now},
      {"setNonBlocking", set_nonblocking},
      {"getStatusFlags", get_status_flags},
      {"getFdFlags", get_fd_flags},
      {"dupCloexec", dup_cloexec},
      {"close", close_fd},
  };
  return EXPORTS(table);
}
