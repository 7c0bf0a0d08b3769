// The C reference for `uffd serve` (bench/serve.ts runs both against test/native/fake-vmm.c): a page server
// for one Firecracker-style client, written for speed rather than for hostile input.
//
// It listens on a Unix stream socket, accepts one client and reads its handshake: a JSON array of regions
// ({"base_host_virt_addr","size","offset"} plus "page_size" and/or "page_size_kib", which holds bytes) with
// exactly one fd, the client's uffd. The JSON is parsed minimally: it trusts its peer. The memory file is
// mapped read-only (MAP_POPULATE, as Firecracker's example handler does, so the source's own page faults stay
// out of the figures) and each fault is served with UFFDIO_COPY straight from that mapping:
//   - read-ahead: the missing pages of [fault, fault + PAGES) clipped to the region, copied with DONTWAKE in
//     runs (pages already present are skipped, never overwritten), then one UFFDIO_WAKE over the window;
//   - EEXIST (someone else filled the page): marked present, and the wake follows;
//   - EAGAIN with nothing done (an unread REMOVE): the fault is deferred and retried after the next read;
//   - REMOVE (balloon, MADV_DONTNEED): the pages are marked removed and read as zeros from then on (ZEROPAGE,
//     or a copy of zeros on hugetlb, where ZEROPAGE is EINVAL); events of a batch are applied before its faults.
// The client's liveness is a pidfd (SO_PEERPIDFD, else pidfd_open of the SO_PEERCRED pid): Firecracker before
// 1.12 closes the socket right after the handshake, so end-of-file says nothing. When the client exits, the
// server prints one JSON line of counters on stdout and exits 0.
//
// usage: page-server --socket PATH --memory FILE [--readahead PAGES] [--no-populate] [--verbose]
//   --readahead PAGES  the window, faulting page included (default 1: Firecracker's example handler)
//   --no-populate      map the memory file without MAP_POPULATE: copies then fault the source pages in
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

// Our own uapi, as in test/native: the installed <linux/userfaultfd.h> is older than the kernels we run on.
struct uffd_range_arg { uint64_t start, len; };
struct uffd_copy_arg { uint64_t dst, src, len, mode; int64_t copy; };
struct uffd_zeropage_arg { struct uffd_range_arg range; uint64_t mode; int64_t zeropage; };
struct uffd_msg {
  uint8_t event, reserved1;
  uint16_t reserved2;
  uint32_t reserved3;
  union {
    struct { uint64_t flags, address; uint32_t ptid; } pagefault;
    struct { uint64_t start, end, reserved; } remove;
    uint64_t raw[3];
  } arg;
} __attribute__((packed));
_Static_assert(sizeof(struct uffd_msg) == 32, "uffd_msg is 32 bytes");
#define UFFDIO_WAKE_REQ _IOR(0xAA, 0x02, struct uffd_range_arg)
#define UFFDIO_COPY_REQ _IOWR(0xAA, 0x03, struct uffd_copy_arg)
#define UFFDIO_ZEROPAGE_REQ _IOWR(0xAA, 0x04, struct uffd_zeropage_arg)
#define UFFDIO_COPY_MODE_DONTWAKE 1ULL
#define UFFDIO_ZEROPAGE_MODE_DONTWAKE 1ULL
#define UFFD_EVENT_PAGEFAULT 0x12
#define UFFD_EVENT_REMOVE 0x15
#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

#define MAX_HANDSHAKE (1u << 20)
#define MAX_REGIONS 1024
#define BATCH 64

enum { MISSING = 0, PRESENT = 1, REMOVED = 2 };

struct region {
  uint64_t base, size, offset;
  size_t pages;
  uint8_t *state;  // per page: MISSING, PRESENT, REMOVED
};

struct counters {
  uint64_t faults, pages_copied, copy_calls, wake_calls, eexist, deferred, zero_pages, removes, removed_pages;
};

struct server {
  const char *socket_path, *memory_path;
  size_t readahead;
  int verbose, populate;
  const unsigned char *memory;  // the memory file, mapped read-only
  uint64_t memory_size;
  int uffd, pidfd;
  pid_t pid;
  size_t page_size, nregions;
  struct region regions[MAX_REGIONS];
  unsigned char *zeros;  // one page of zeros, for removed pages on hugetlb
  uint64_t *deferred;
  size_t ndeferred, deferred_cap;
  struct counters n;
};

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("page-server: ", stderr);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  exit(1);
}

static uint64_t number(const char *flag, const char *text) {
  char *end;
  errno = 0;
  unsigned long long n = strtoull(text == NULL ? "" : text, &end, 10);
  if (text == NULL || *text == '\0' || *end != '\0' || errno != 0) die("%s needs a number, got '%s'", flag, text == NULL ? "" : text);
  return n;
}

static void parse_options(int argc, char **argv, struct server *s) {
  s->readahead = 1;
  s->populate = 1;
  for (int i = 1; i < argc; i++) {
    const char *value = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(argv[i], "--socket") == 0 && value != NULL) s->socket_path = argv[++i];
    else if (strcmp(argv[i], "--memory") == 0 && value != NULL) s->memory_path = argv[++i];
    else if (strcmp(argv[i], "--readahead") == 0 && value != NULL) s->readahead = (size_t)number(argv[i++], value);
    else if (strcmp(argv[i], "--verbose") == 0) s->verbose = 1;
    else if (strcmp(argv[i], "--no-populate") == 0) s->populate = 0;
    else die("usage: page-server --socket PATH --memory FILE [--readahead PAGES] [--no-populate] [--verbose] (bad argument '%s')", argv[i]);
  }
  if (s->socket_path == NULL || s->memory_path == NULL) die("usage: page-server --socket PATH --memory FILE [--readahead PAGES]");
  if (s->readahead == 0) s->readahead = 1;
}

static void map_memory(struct server *s) {
  int fd = open(s->memory_path, O_RDONLY | O_CLOEXEC);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) < 0) die("open %s: %s", s->memory_path, strerror(errno));
  s->memory_size = (uint64_t)st.st_size;
  if (s->memory_size == 0) die("%s is empty", s->memory_path);
  void *m = mmap(NULL, s->memory_size, PROT_READ, MAP_PRIVATE | (s->populate ? MAP_POPULATE : 0), fd, 0);
  if (m == MAP_FAILED) die("mmap %s: %s", s->memory_path, strerror(errno));
  s->memory = m;
  close(fd);
}

static int listen_socket(const struct server *s) {
  struct sockaddr_un addr = { .sun_family = AF_UNIX };
  if (strlen(s->socket_path) >= sizeof addr.sun_path) die("socket path too long: %s", s->socket_path);
  strcpy(addr.sun_path, s->socket_path);
  struct stat st;
  if (lstat(s->socket_path, &st) == 0 && S_ISSOCK(st.st_mode)) unlink(s->socket_path);  // a stale socket
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) die("socket: %s", strerror(errno));
  mode_t old = umask(0077);  // created 0600: only our user may hand us a uffd
  if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) die("bind %s: %s", s->socket_path, strerror(errno));
  umask(old);
  if (listen(fd, 1) < 0) die("listen: %s", strerror(errno));
  return fd;
}

// ---- the handshake ----

// Complete once the brackets balance (outside strings) after the first '['.
static int json_complete(const char *buf, size_t len) {
  int depth = 0, in_string = 0, started = 0;
  for (size_t i = 0; i < len; i++) {
    char c = buf[i];
    if (in_string) {
      if (c == '\\') i++;
      else if (c == '"') in_string = 0;
    } else if (c == '"') {
      in_string = 1;
    } else if (c == '[' || c == '{') {
      depth++;
      started = 1;
    } else if (c == ']' || c == '}') {
      if (--depth == 0 && started) return 1;
    }
  }
  return 0;
}

static int receive_handshake(int conn, char *buf, size_t cap, size_t *len) {
  int uffd = -1, fds_seen = 0;
  *len = 0;
  while (!json_complete(buf, *len)) {
    if (*len + 1 >= cap) die("handshake larger than %zu bytes", cap);
    union { struct cmsghdr align; char buf[CMSG_SPACE(sizeof(int) * 8)]; } control;
    struct iovec iov = { .iov_base = buf + *len, .iov_len = cap - 1 - *len };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf, .msg_controllen = sizeof control.buf };
    ssize_t n = recvmsg(conn, &msg, MSG_CMSG_CLOEXEC);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) die("recvmsg: %s", strerror(errno));
    if (msg.msg_flags & MSG_CTRUNC) die("handshake: control data truncated (too many fds)");
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; i++) {
        int fd;
        memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
        if (fds_seen++ == 0) uffd = fd;
        else close(fd);
      }
    }
    if (n == 0) die("handshake: the client closed the socket after %zu bytes of an incomplete JSON body", *len);
    *len += (size_t)n;
  }
  buf[*len] = '\0';
  if (fds_seen != 1) die("handshake: expected exactly one fd (the uffd), got %d", fds_seen);
  return uffd;
}

// The number after "key": inside [from, to), or -1 when the key is absent.
static int64_t field(const char *from, const char *to, const char *key) {
  size_t klen = strlen(key);
  for (const char *p = from; p + klen < to; p++) {
    if (memcmp(p, key, klen) == 0) return (int64_t)strtoull(p + klen, NULL, 10);
  }
  return -1;
}

static void parse_regions(struct server *s, const char *json) {
  const char *p = json;
  while ((p = strchr(p, '{')) != NULL) {
    const char *end = strchr(p, '}');
    if (end == NULL) die("handshake: unterminated object");
    if (s->nregions == MAX_REGIONS) die("handshake: more than %d regions", MAX_REGIONS);
    int64_t base = field(p, end, "\"base_host_virt_addr\":"), size = field(p, end, "\"size\":");
    int64_t offset = field(p, end, "\"offset\":"), page_size = field(p, end, "\"page_size\":");
    if (page_size < 0) page_size = field(p, end, "\"page_size_kib\":");  // bytes, despite the name
    if (page_size < 0) page_size = sysconf(_SC_PAGESIZE);                  // Firecracker before 1.7
    if (base < 0 || size <= 0 || offset < 0) die("handshake: a region lacks base_host_virt_addr, size or offset");
    if (s->page_size == 0) s->page_size = (size_t)page_size;
    if ((size_t)page_size != s->page_size || size % page_size != 0 || base % page_size != 0) die("handshake: bad page size or alignment");
    if ((uint64_t)offset + (uint64_t)size > s->memory_size) die("handshake: a region reaches past the end of the memory file");
    struct region *r = &s->regions[s->nregions++];
    *r = (struct region){ .base = (uint64_t)base, .size = (uint64_t)size, .offset = (uint64_t)offset,
                          .pages = (size_t)(size / page_size) };
    r->state = calloc(r->pages, 1);
    if (r->state == NULL) die("out of memory");
    p = end + 1;
  }
  if (s->nregions == 0) die("handshake: no regions");
}

static void peer_pidfd(struct server *s, int conn) {
  struct ucred cred;
  socklen_t len = sizeof cred;
  if (getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) die("SO_PEERCRED: %s", strerror(errno));
  s->pid = cred.pid;
  len = sizeof s->pidfd;
  if (getsockopt(conn, SOL_SOCKET, SO_PEERPIDFD, &s->pidfd, &len) == 0) return;  // 6.5+: no pid reuse race
  s->pidfd = (int)syscall(SYS_pidfd_open, cred.pid, 0);
  if (s->pidfd < 0) die("pidfd_open(%d): %s", (int)cred.pid, strerror(errno));
}

// ---- serving ----

enum { DONE = 0, DEFER = 1, GONE = 2 };

static struct region *region_for(struct server *s, uint64_t address) {
  for (size_t i = 0; i < s->nregions; i++) {
    if (address - s->regions[i].base < s->regions[i].size) return &s->regions[i];
  }
  return NULL;
}

static uint64_t page_addr(const struct server *s, const struct region *r, size_t page) {
  return r->base + (uint64_t)page * s->page_size;
}

// Pages [page, end) copied without waking anyone; present pages are marked and skipped, never overwritten.
static int copy_run(struct server *s, struct region *r, size_t page, size_t end) {
  while (page < end) {
    struct uffd_copy_arg c = { .dst = page_addr(s, r, page), .src = (uintptr_t)(s->memory + r->offset + (uint64_t)page * s->page_size),
                               .len = (uint64_t)(end - page) * s->page_size, .mode = UFFDIO_COPY_MODE_DONTWAKE };
    s->n.copy_calls++;
    int rc = ioctl(s->uffd, UFFDIO_COPY_REQ, &c);
    size_t done = rc == 0 ? end - page : c.copy > 0 ? (size_t)c.copy / s->page_size : 0;
    memset(r->state + page, PRESENT, done);
    s->n.pages_copied += done;
    page += done;
    if (rc == 0 || done > 0) continue;  // partial progress (EAGAIN with a count): go on from there
    if (errno == EEXIST) {
      s->n.eexist++;
      r->state[page++] = PRESENT;
    } else if (errno == EAGAIN) {
      return DEFER;  // an unread event (REMOVE): read it first
    } else if (errno == ESRCH) {
      return GONE;
    } else if (errno == ENOENT) {
      return DONE;  // no longer registered (the client unmapped it)
    } else {
      die("UFFDIO_COPY at 0x%" PRIx64 ": %s", c.dst, strerror(errno));
    }
  }
  return DONE;
}

static int zero_fill(struct server *s, struct region *r, size_t page) {
  int rc;
  if (s->page_size == 4096) {
    struct uffd_zeropage_arg z = { .range = { page_addr(s, r, page), s->page_size }, .mode = UFFDIO_ZEROPAGE_MODE_DONTWAKE };
    rc = ioctl(s->uffd, UFFDIO_ZEROPAGE_REQ, &z);
  } else {
    struct uffd_copy_arg c = { .dst = page_addr(s, r, page), .src = (uintptr_t)s->zeros, .len = s->page_size,
                               .mode = UFFDIO_COPY_MODE_DONTWAKE };
    rc = ioctl(s->uffd, UFFDIO_COPY_REQ, &c);
  }
  if (rc < 0 && errno == EAGAIN) return DEFER;
  if (rc < 0 && errno == ESRCH) return GONE;
  if (rc < 0 && errno != EEXIST && errno != ENOENT) die("zero fill at page %zu: %s", page, strerror(errno));
  if (rc == 0) s->n.zero_pages++;
  r->state[page] = PRESENT;
  return DONE;
}

static void wake(struct server *s, uint64_t start, uint64_t len) {
  struct uffd_range_arg range = { start, len };
  s->n.wake_calls++;
  if (ioctl(s->uffd, UFFDIO_WAKE_REQ, &range) < 0 && errno != ENOENT && errno != ESRCH) die("UFFDIO_WAKE: %s", strerror(errno));
}

static int serve_fault(struct server *s, uint64_t address) {
  struct region *r = region_for(s, address);
  if (r == NULL) return DONE;  // not in any region: nothing we can do (it cannot happen with a real client)
  size_t page = (size_t)((address - r->base) / s->page_size);
  if (r->state[page] == REMOVED) {
    int rc = zero_fill(s, r, page);
    if (rc == DONE) wake(s, page_addr(s, r, page), s->page_size);
    return rc;
  }
  size_t end = page + s->readahead < r->pages ? page + s->readahead : r->pages;
  // The faulting page always, whatever its mark: the client may have emptied it again.
  size_t run_end = page + 1;
  while (run_end < end && r->state[run_end] == MISSING) run_end++;
  int rc = copy_run(s, r, page, run_end);
  for (size_t next = run_end; rc == DONE && next < end;) {
    if (r->state[next] != MISSING) {
      next++;
      continue;
    }
    size_t stop = next + 1;
    while (stop < end && r->state[stop] == MISSING) stop++;
    rc = copy_run(s, r, next, stop);
    next = stop;
  }
  if (rc == GONE) return GONE;
  if (rc == DEFER && r->state[page] != PRESENT) return DEFER;  // the faulting page itself is not there yet
  wake(s, page_addr(s, r, page), (uint64_t)(end - page) * s->page_size);
  return DONE;
}

static void apply_remove(struct server *s, uint64_t start, uint64_t end) {
  s->n.removes++;
  for (size_t i = 0; i < s->nregions; i++) {
    struct region *r = &s->regions[i];
    uint64_t lo = start > r->base ? start : r->base, hi = end < r->base + r->size ? end : r->base + r->size;
    if (lo >= hi) continue;
    size_t first = (size_t)((lo - r->base + s->page_size - 1) / s->page_size), last = (size_t)((hi - r->base) / s->page_size);
    if (first < last) memset(r->state + first, REMOVED, last - first);
    s->n.removed_pages += last > first ? last - first : 0;
  }
}

static void defer(struct server *s, uint64_t address) {
  if (s->ndeferred == s->deferred_cap) {
    s->deferred_cap = s->deferred_cap == 0 ? 64 : s->deferred_cap * 2;
    s->deferred = realloc(s->deferred, s->deferred_cap * sizeof *s->deferred);
    if (s->deferred == NULL) die("out of memory");
  }
  s->deferred[s->ndeferred++] = address;
}

// One batch: REMOVEs first (the kernel hands out queued faults before events), then the deferred faults,
// then the new ones. Returns GONE when the client's memory is gone.
static int serve_batch(struct server *s, const struct uffd_msg *msgs, size_t count) {
  for (size_t i = 0; i < count; i++) {
    if (msgs[i].event == UFFD_EVENT_REMOVE) apply_remove(s, msgs[i].arg.remove.start, msgs[i].arg.remove.end);
  }
  size_t retry = s->ndeferred;
  s->ndeferred = 0;
  for (size_t i = 0; i < retry; i++) {
    uint64_t address = s->deferred[i];
    int rc = serve_fault(s, address);
    if (rc == GONE) return GONE;
    if (rc == DEFER) defer(s, address);
  }
  for (size_t i = 0; i < count; i++) {
    if (msgs[i].event != UFFD_EVENT_PAGEFAULT) continue;
    s->n.faults++;
    int rc = serve_fault(s, msgs[i].arg.pagefault.address);
    if (rc == GONE) return GONE;
    if (rc == DEFER) {
      s->n.deferred++;
      defer(s, msgs[i].arg.pagefault.address);
    }
  }
  return DONE;
}

static void serve(struct server *s) {
  struct uffd_msg msgs[BATCH];
  struct pollfd fds[2] = { { .fd = s->uffd, .events = POLLIN }, { .fd = s->pidfd, .events = POLLIN } };
  for (;;) {
    // With deferred faults, look again soon: the REMOVE that blocked them may already have been read, and
    // the kernel lets copies through once the madvise that raised it finishes.
    int rc = poll(fds, 2, s->ndeferred > 0 ? 1 : -1);
    if (rc < 0 && errno == EINTR) continue;
    if (rc < 0) die("poll: %s", strerror(errno));
    if (fds[1].revents != 0) return;  // the client exited
    size_t count = 0;
    if (fds[0].revents & POLLIN) {
      ssize_t n = read(s->uffd, msgs, sizeof msgs);
      if (n < 0 && errno != EAGAIN && errno != EINTR) die("read uffd: %s", strerror(errno));
      count = n > 0 ? (size_t)n / sizeof msgs[0] : 0;
    } else if (fds[0].revents != 0) {
      die("poll uffd: revents 0x%x", fds[0].revents);
    }
    if (count == 0 && s->ndeferred == 0) continue;
    if (serve_batch(s, msgs, count) == GONE) return;
  }
}

int main(int argc, char **argv) {
  static struct server s = { .uffd = -1, .pidfd = -1 };
  parse_options(argc, argv, &s);
  map_memory(&s);
  int listener = listen_socket(&s);
  if (s.verbose) fprintf(stderr, "page-server: listening on %s\n", s.socket_path);
  int conn = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
  if (conn < 0) die("accept: %s", strerror(errno));
  close(listener);
  unlink(s.socket_path);
  peer_pidfd(&s, conn);

  char *buf = malloc(MAX_HANDSHAKE);
  size_t len;
  if (buf == NULL) die("out of memory");
  s.uffd = receive_handshake(conn, buf, MAX_HANDSHAKE, &len);
  parse_regions(&s, buf);
  if (s.verbose) fprintf(stderr, "page-server: client pid %d, %zu region(s), page size %zu: %s\n", (int)s.pid, s.nregions, s.page_size, buf);
  free(buf);
  // poll on a blocking uffd reports POLLERR: make sure it is non-blocking whatever the client chose.
  int flags = fcntl(s.uffd, F_GETFL);
  if (flags < 0 || fcntl(s.uffd, F_SETFL, flags | O_NONBLOCK) < 0) die("fcntl: %s", strerror(errno));
  if (posix_memalign((void **)&s.zeros, 4096, s.page_size) != 0) die("out of memory");
  memset(s.zeros, 0, s.page_size);

  serve(&s);
  printf("{\"side\":\"c\",\"pid\":%d,\"regions\":%zu,\"pageSize\":%zu,\"readahead\":%zu,\"faults\":%" PRIu64 ",\"pagesCopied\":%" PRIu64
         ",\"copyCalls\":%" PRIu64 ",\"wakeCalls\":%" PRIu64 ",\"eexist\":%" PRIu64 ",\"deferred\":%" PRIu64 ",\"zeroPages\":%" PRIu64
         ",\"removes\":%" PRIu64 ",\"removedPages\":%" PRIu64 "}\n",
         (int)s.pid, s.nregions, s.page_size, s.readahead, s.n.faults, s.n.pages_copied, s.n.copy_calls, s.n.wake_calls, s.n.eexist,
         s.n.deferred, s.n.zero_pages, s.n.removes, s.n.removed_pages);
  return 0;
}
