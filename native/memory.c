/* Mappings and the memory they expose to JavaScript.
 *
 * A mapping is a refcounted region: the region handle (a napi external) holds one reference and every
 * ArrayBuffer created over it holds one more. close() cannot munmap while buffers may still be reached
 * (or while native I/O may be writing into them), so it maps PROT_NONE over the range instead, and the
 * single munmap happens when the last reference is finalized. A second munmap could hit an unrelated
 * mapping placed at the same address later. */
#include "addon.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

typedef struct {
  uint8_t *addr;
  size_t len;
  atomic_int refs;
} region;

static void region_unref(region *r) {
  if (atomic_fetch_sub(&r->refs, 1) == 1) {
    munmap(r->addr, r->len);
    free(r);
  }
}

static void region_finalize(napi_env env, void *data, void *hint) { region_unref(data); }
static void buffer_finalize(napi_env env, void *data, void *hint) { region_unref(hint); }

/* Marks the externals that name a region: anything else (a watcher handle) is refused, never munmapped. */
static const napi_type_tag REGION_TAG = {0x3e6a9d0c51f24b87ULL, 0xc7b21f48e90d3a65ULL};

static bool arg_region(napi_env env, napi_value v, region **out) {
  return arg_handle(env, v, &REGION_TAG, "userfaultfd binding: expected a region handle", (void **)out);
}

/* mmap(length, prot, flags, fd, offset) -> region handle, or -errno */
static napi_value mem_mmap(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  int64_t len, offset;
  int32_t prot, flags, fd;
  if (!get_args(env, info, 5, argv) || !arg_i64(env, argv[0], &len) || !arg_i32(env, argv[1], &prot) ||
      !arg_i32(env, argv[2], &flags) || !arg_i32(env, argv[3], &fd) || !arg_i64(env, argv[4], &offset))
    return NULL;
  void *addr = mmap(NULL, (size_t)len, prot, flags, fd, (off_t)offset);
  if (addr == MAP_FAILED) return make_neg_errno(env, errno);
  region *r = malloc(sizeof *r);
  if (r == NULL) {
    munmap(addr, (size_t)len);
    return make_neg_errno(env, ENOMEM);
  }
  r->addr = addr;
  r->len = (size_t)len;
  atomic_init(&r->refs, 1);
  napi_value handle;
  if (napi_create_external(env, r, region_finalize, NULL, &handle) != napi_ok) {
    region_unref(r);
    return throw_status(env);
  }
  /* Untagged, the handle is refused by every function; its finalizer still unmaps the region. */
  if (napi_type_tag_object(env, handle, &REGION_TAG) != napi_ok) return throw_status(env);
  return handle;
}

/* regionAddress(region) -> BigInt */
static napi_value mem_region_address(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  region *r;
  if (!get_args(env, info, 1, argv) || !arg_region(env, argv[0], &r)) return NULL;
  return make_u64(env, (uint64_t)(uintptr_t)r->addr);
}

/* regionBuffer(region, offset, length) -> an ArrayBuffer over the mapped memory itself (no copy) */
static napi_value mem_region_buffer(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  region *r;
  int64_t offset, len;
  if (!get_args(env, info, 3, argv) || !arg_region(env, argv[0], &r) || !arg_i64(env, argv[1], &offset) ||
      !arg_i64(env, argv[2], &len))
    return NULL;
  if (offset < 0 || len < 0 || (uint64_t)offset + (uint64_t)len > r->len)
    return throw_usage(env, "userfaultfd binding: window outside the region");
  napi_value ab;
  atomic_fetch_add(&r->refs, 1);
  napi_status st = napi_create_external_arraybuffer(env, r->addr + offset, (size_t)len, buffer_finalize, r, &ab);
  /* On failure Node may already have run the finalizer (it does for ERR_BUFFER_TOO_LARGE), or may not: the
   * reference is left taken either way. A region that is never unmapped is a leak of address space; a
   * second unref would unmap memory that is still in use. */
  if (st != napi_ok) return throw_status(env);
  return ab;
}

/* regionSeal(region) -> 0 or -errno: PROT_NONE over the whole range, in place (the munmap comes later). */
static napi_value mem_region_seal(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  region *r;
  if (!get_args(env, info, 1, argv) || !arg_region(env, argv[0], &r)) return NULL;
  void *p = mmap(r->addr, r->len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
  return p == MAP_FAILED ? make_neg_errno(env, errno) : make_i32(env, 0);
}

/* detach(arrayBuffer): every view of it reads as length 0 from now on. */
static napi_value mem_detach(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  bool detached = false;
  if (!get_args(env, info, 1, argv)) return NULL;
  NAPI_OK(napi_is_detached_arraybuffer(env, argv[0], &detached));
  if (!detached) NAPI_OK(napi_detach_arraybuffer(env, argv[0]));
  return NULL;
}

/* madvise(address, length, advice) -> 0 or -errno. A raw address: length 0 probes an advice. */
static napi_value mem_madvise(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  uint64_t addr;
  int64_t len;
  int32_t advice;
  if (!get_args(env, info, 3, argv) || !arg_u64(env, argv[0], &addr) || !arg_i64(env, argv[1], &len) ||
      !arg_i32(env, argv[2], &advice))
    return NULL;
  int rc = madvise((void *)(uintptr_t)addr, (size_t)len, advice);
  return rc < 0 ? make_neg_errno(env, errno) : make_i32(env, 0);
}

/* mprotect(address, length, prot) -> 0 or -errno */
static napi_value mem_mprotect(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  uint64_t addr;
  int64_t len;
  int32_t prot;
  if (!get_args(env, info, 3, argv) || !arg_u64(env, argv[0], &addr) || !arg_i64(env, argv[1], &len) ||
      !arg_i32(env, argv[2], &prot))
    return NULL;
  int rc = mprotect((void *)(uintptr_t)addr, (size_t)len, prot);
  return rc < 0 ? make_neg_errno(env, errno) : make_i32(env, 0);
}

/* memfdCreate(name, flags) -> fd or -errno */
static napi_value mem_memfd_create(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  char name[250]; /* the kernel's limit: 249 bytes and the NUL */
  int err;
  int32_t flags;
  if (!get_args(env, info, 2, argv) || !arg_i32(env, argv[1], &flags) || !arg_cstring(env, argv[0], name, sizeof name, &err))
    return NULL;
  if (err != 0) return make_i32(env, err);
  int fd = memfd_create(name, (unsigned)flags);
  return fd < 0 ? make_neg_errno(env, errno) : make_i32(env, fd);
}

/* addressOf(view) -> BigInt address of the view's first byte (the source of UFFDIO_COPY) */
static napi_value mem_address_of(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  void *data;
  size_t len;
  if (!get_args(env, info, 1, argv) || !arg_bytes(env, argv[0], &data, &len)) return NULL;
  return make_u64(env, (uint64_t)(uintptr_t)data);
}

/* byteLengthOf(view) -> the view's length in bytes as V8 holds it: a JavaScript byteLength property can be
 * redefined by user code, so lengths of memory handed to the kernel come from here. */
static napi_value mem_byte_length_of(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  void *data;
  size_t len;
  if (!get_args(env, info, 1, argv) || !arg_bytes(env, argv[0], &data, &len)) return NULL;
  return make_i64(env, (int64_t)len);
}

/* pageSize() -> the base page size */
static napi_value mem_page_size(napi_env env, napi_callback_info info) {
  return make_i64(env, sysconf(_SC_PAGESIZE));
}

napi_status register_memory(napi_env env, napi_value exports) {
  static const export_entry table[] = {
      {"mmap", mem_mmap},
      {"regionAddress", mem_region_address},
      {"regionBuffer", mem_region_buffer},
      {"regionSeal", mem_region_seal},
      {"detach", mem_detach},
      {"madvise", mem_madvise},
      {"mprotect", mem_mprotect},
      {"memfdCreate", mem_memfd_create},
      {"addressOf", mem_address_of},
      {"byteLengthOf", mem_byte_length_of},
      {"pageSize", mem_page_size},
  };
  return EXPORTS(table);
}
