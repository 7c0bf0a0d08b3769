/* Unix stream sockets that libuv does not own, so descriptors can travel with SCM_RIGHTS (a libuv-owned
 * socket drops received fds). Readiness comes from the same uv_poll watcher as the uffd's. */
#include "addon.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77 /* Linux 6.5 */
#endif

#define MAX_FDS 16

/* A socket path whole (at most 107 bytes, no NUL) or *err: a cut path would name another socket (the
 * prefix), and a NUL would bind the prefix. */
static bool arg_path(napi_env env, napi_value v, struct sockaddr_un *addr, socklen_t *len, int *err) {
  memset(addr, 0, sizeof *addr);
  addr->sun_family = AF_UNIX;
  if (!arg_cstring(env, v, addr->sun_path, sizeof addr->sun_path, err)) return false;
  *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(addr->sun_path) + 1);
  return true;
}

/* unixListen(path, backlog, mode) -> listening fd (non-blocking, close-on-exec) or -errno.
 * The socket file gets `mode` before listen(): nobody can connect before the permissions are set. */
static napi_value unix_listen(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  struct sockaddr_un addr;
  socklen_t len;
  int32_t backlog, mode;
  int err;
  if (!get_args(env, info, 3, argv) || !arg_path(env, argv[0], &addr, &len, &err) || !arg_i32(env, argv[1], &backlog) ||
      !arg_i32(env, argv[2], &mode))
    return NULL;
  if (err != 0) return make_i32(env, err);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return make_neg_errno(env, errno);
  if (bind(fd, (struct sockaddr *)&addr, len) < 0) {
    int saved = errno;
    close(fd);
    return make_neg_errno(env, saved);
  }
  if (chmod(addr.sun_path, (mode_t)mode) < 0 || listen(fd, backlog) < 0) {
    int saved = errno;
    close(fd);
    unlink(addr.sun_path); /* bind made the file: nobody will listen on it */
    return make_neg_errno(env, saved);
  }
  return make_i32(env, fd);
}

/* unixConnect(path) -> connected fd (non-blocking, close-on-exec) or -errno */
static napi_value unix_connect(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  struct sockaddr_un addr;
  socklen_t len;
  int err;
  if (!get_args(env, info, 1, argv) || !arg_path(env, argv[0], &addr, &len, &err)) return NULL;
  if (err != 0) return make_i32(env, err);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return make_neg_errno(env, errno);
  if (connect(fd, (struct sockaddr *)&addr, len) < 0) {
    int saved = errno;
    close(fd);
    return make_neg_errno(env, saved);
  }
  return make_i32(env, fd);
}

/* socketPair() -> [fd, fd] (stream, non-blocking, close-on-exec) or -errno */
static napi_value socket_pair(napi_env env, napi_callback_info info) {
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) < 0) return make_neg_errno(env, errno);
  napi_value out;
  NAPI_OK(napi_create_array_with_length(env, 2, &out));
  NAPI_OK(napi_set_element(env, out, 0, make_i32(env, fds[0])));
  NAPI_OK(napi_set_element(env, out, 1, make_i32(env, fds[1])));
  return out;
}

/* accept(fd) -> connected fd (non-blocking, close-on-exec) or -errno */
static napi_value unix_accept(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int32_t fd;
  if (!get_args(env, info, 1, argv) || !arg_i32(env, argv[0], &fd)) return NULL;
  int conn = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
  return conn < 0 ? make_neg_errno(env, errno) : make_i32(env, conn);
}

/* { bytes, fds, truncated }, or NULL with an exception pending. */
static napi_value recv_result(napi_env env, ssize_t bytes, const int *fds, uint32_t count, bool cut) {
  napi_value out, list, truncated;
  NAPI_OK(napi_create_object(env, &out));
  NAPI_OK(napi_create_array_with_length(env, count, &list));
  for (uint32_t i = 0; i < count; i++) NAPI_OK(napi_set_element(env, list, i, make_i32(env, fds[i])));
  NAPI_OK(napi_get_boolean(env, cut, &truncated));
  NAPI_OK(napi_set_named_property(env, out, "bytes", make_i64(env, bytes)));
  NAPI_OK(napi_set_named_property(env, out, "fds", list));
  NAPI_OK(napi_set_named_property(env, out, "truncated", truncated));
  return out;
}

/* recvWithFds(fd, buffer) -> { bytes, fds: number[], truncated } or -errno.
 * Received fds are close-on-exec; `truncated` reports control data the kernel cut (MSG_CTRUNC): those fds
 * were closed by the kernel and the message must be refused. */
static napi_value recv_with_fds(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int32_t fd;
  void *data;
  size_t len;
  if (!get_args(env, info, 2, argv) || !arg_i32(env, argv[0], &fd) || !arg_bytes(env, argv[1], &data, &len)) return NULL;
  union {
    char buf[CMSG_SPACE(MAX_FDS * sizeof(int))];
    struct cmsghdr align;
  } control;
  struct iovec iov = {.iov_base = data, .iov_len = len};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf, .msg_controllen = sizeof control.buf};
  ssize_t n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
  if (n < 0) return make_neg_errno(env, errno);
  /* The descriptors are in this process now: collected first, and closed if the result cannot be built. */
  int received[MAX_FDS];
  uint32_t count = 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < k; i++) {
      int one;
      memcpy(&one, CMSG_DATA(c) + i * sizeof(int), sizeof one);
      if (count < MAX_FDS) received[count++] = one;
      else close(one); /* cannot happen with a control buffer of MAX_FDS; never leaked if it does */
    }
  }
  napi_value out = recv_result(env, n, received, count, (msg.msg_flags & MSG_CTRUNC) != 0);
  if (out == NULL)
    for (uint32_t i = 0; i < count; i++) close(received[i]);
  return out;
}

/* sendWithFds(fd, buffer, fds[]) -> bytes sent or -errno (one sendmsg, MSG_NOSIGNAL) */
static napi_value send_with_fds(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int32_t fd;
  void *data;
  size_t len;
  uint32_t count;
  if (!get_args(env, info, 3, argv) || !arg_i32(env, argv[0], &fd) || !arg_bytes(env, argv[1], &data, &len)) return NULL;
  NAPI_OK(napi_get_array_length(env, argv[2], &count));
  if (count > MAX_FDS) return throw_usage(env, "userfaultfd binding: too many fds for one message");
  union {
    char buf[CMSG_SPACE(MAX_FDS * sizeof(int))];
    struct cmsghdr align;
  } control;
  memset(&control, 0, sizeof control);
  struct iovec iov = {.iov_base = data, .iov_len = len};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
  if (count > 0) {
    msg.msg_control = control.buf;
    msg.msg_controllen = CMSG_SPACE(count * sizeof(int));
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(count * sizeof(int));
    for (uint32_t i = 0; i < count; i++) {
      napi_value v;
      int32_t one;
      NAPI_OK(napi_get_element(env, argv[2], i, &v));
      if (!arg_i32(env, v, &one)) return NULL;
      memcpy(CMSG_DATA(c) + i * sizeof(int), &one, sizeof one);
    }
  }
  ssize_t n = sendmsg(fd, &msg, MSG_NOSIGNAL);
  return n < 0 ? make_neg_errno(env, errno) : make_i64(env, n);
}

/* peerCredentials(fd) -> { pid, uid, gid } (SO_PEERCRED) or -errno */
static napi_value peer_credentials(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int32_t fd;
  if (!get_args(env, info, 1, argv) || !arg_i32(env, argv[0], &fd)) return NULL;
  struct ucred cred;
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) return make_neg_errno(env, errno);
  napi_value out;
  NAPI_OK(napi_create_object(env, &out));
  NAPI_OK(napi_set_named_property(env, out, "pid", make_i32(env, cred.pid)));
  NAPI_OK(napi_set_named_property(env, out, "uid", make_i64(env, cred.uid)));
  NAPI_OK(napi_set_named_property(env, out, "gid", make_i64(env, cred.gid)));
  return out;
}

/* peerPidfd(fd) -> a pidfd of the peer (SO_PEERPIDFD, Linux 6.5) or -errno (ENOPROTOOPT before 6.5) */
static napi_value peer_pidfd(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int32_t fd;
  if (!get_args(env, info, 1, argv) || !arg_i32(env, argv[0], &fd)) return NULL;
  int pidfd = -1;
  socklen_t len = sizeof pidfd;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &len) < 0) return make_neg_errno(env, errno);
  return make_i32(env, pidfd);
}

napi_status register_socket(napi_env env, napi_value exports) {
  static const export_entry table[] = {
      {"unixListen", unix_listen},
      {"unixConnect", unix_connect},
      {"socketPair", socket_pair},
      {"accept", unix_accept},
      {"recvWithFds", recv_with_fds},
      {"sendWithFds", send_with_fds},
      {"peerCredentials", peer_credentials},
      {"peerPidfd", peer_pidfd},
  };
  return EXPORTS(table);
}
