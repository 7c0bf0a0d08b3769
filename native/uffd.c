/* Creating a userfaultfd and talking to it. The struct layouts live in src/abi.ts: the ioctl entry point
 * takes the request number and the struct bytes from TypeScript, and checks only that the buffer is as
 * large as the size the request number encodes, so the kernel never reads or writes past it. */
#include "addon.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef __NR_userfaultfd
#error "this platform's headers do not define __NR_userfaultfd"
#endif

#define USERFAULTFD_IOC_NEW 0xAA00 /* _IO(0xAA, 0x00), Linux 6.1; our own: the build header may lack it */

/* userfaultfd(flags) -> fd or -errno */
static napi_value uffd_syscall(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int32_t flags;
  if (!get_args(env, info, 1, argv) || !arg_i32(env, argv[0], &flags)) return NULL;
  long fd = syscall(__NR_userfaultfd, flags);
  return fd < 0 ? make_neg_errno(env, errno) : make_i32(env, (int32_t)fd);
}

/* openDevice(path, flags) -> fd or -errno: open the misc device, ask it for a new uffd, close it. */
static napi_value uffd_open_device(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  char path[256];
  int err;
  int32_t flags;
  if (!get_args(env, info, 2, argv) || !arg_i32(env, argv[1], &flags) || !arg_cstring(env, argv[0], path, sizeof path, &err))
    return NULL;
  if (err != 0) return make_i32(env, err);
  int dev = open(path, O_RDWR | O_CLOEXEC);
  if (dev < 0) return make_neg_errno(env, errno);
  int fd = ioctl(dev, USERFAULTFD_IOC_NEW, (unsigned long)flags);
  int saved = errno;
  close(dev);
  return fd < 0 ? make_neg_errno(env, saved) : make_i32(env, fd);
}

/* ioctl(fd, request, bytes) -> 0 or -errno. The struct is read and written in place. */
static napi_value uffd_ioctl(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int32_t fd;
  uint32_t request;
  void *data;
  size_t len;
  if (!get_args(env, info, 3, argv) || !arg_i32(env, argv[0], &fd)) return NULL;
  NAPI_OK(napi_get_value_uint32(env, argv[1], &request));
  if (!arg_bytes(env, argv[2], &data, &len)) return NULL;
  size_t size = (request >> 16) & 0x3fff; /* _IOC_SIZE */
  if (len < size) return throw_usage(env, "userfaultfd binding: ioctl buffer smaller than the request's size");
  int rc = ioctl(fd, (unsigned long)request, data);
  return rc < 0 ? make_neg_errno(env, errno) : make_i32(env, rc);
}

/* read(fd, bytes) -> bytes read or -errno. Used for uffd_msg batches (non-blocking fds). */
static napi_value fd_read(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int32_t fd;
  void *data;
  size_t len;
  if (!get_args(env, info, 2, argv) || !arg_i32(env, argv[0], &fd) || !arg_bytes(env, argv[1], &data, &len))
    return NULL;
  ssize_t n = read(fd, data, len);
  return n < 0 ? make_neg_errno(env, errno) : make_i64(env, n);
}

napi_status register_uffd(napi_env env, napi_value exports) {
  static const export_entry table[] = {
      {"userfaultfd", uffd_syscall},
      {"openDevice", uffd_open_device},
      {"ioctl", uffd_ioctl},
      {"read", fd_read},
  };
  return EXPORTS(table);
}
