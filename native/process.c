/* Process handles: a pidfd watches a peer's exit (the uffd itself never reports it: no POLLHUP, no EOF),
 * and pidfd_getfd copies a descriptor out of another process (tests take a helper's uffd this way). */
#include "addon.h"

#include <errno.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434 /* Linux 5.3; the same number on every architecture */
#endif
#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438 /* Linux 5.6 */
#endif

/* pidfdOpen(pid) -> pidfd (close-on-exec) or -errno */
static napi_value pidfd_open(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int32_t pid;
  if (!get_args(env, info, 1, argv) || !arg_i32(env, argv[0], &pid)) return NULL;
  long fd = syscall(SYS_pidfd_open, pid, 0);
  return fd < 0 ? make_neg_errno(env, errno) : make_i32(env, (int32_t)fd);
}

/* pidfdGetfd(pidfd, targetFd) -> a close-on-exec copy of the target's fd, or -errno */
static napi_value pidfd_getfd(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int32_t pidfd, target;
  if (!get_args(env, info, 2, argv) || !arg_i32(env, argv[0], &pidfd) || !arg_i32(env, argv[1], &target)) return NULL;
  long fd = syscall(SYS_pidfd_getfd, pidfd, target, 0);
  return fd < 0 ? make_neg_errno(env, errno) : make_i32(env, (int32_t)fd);
}

napi_status register_process(napi_env env, napi_value exports) {
  static const export_entry table[] = {
      {"pidfdOpen", pidfd_open},
      {"pidfdGetfd", pidfd_getfd},
  };
  return EXPORTS(table);
}
