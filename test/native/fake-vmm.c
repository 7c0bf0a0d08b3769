/* fake-vmm: a stand-in for Firecracker restoring a snapshot with a UFFD memory backend, for testing and
 * benchmarking page servers (`uffd serve`, bench/c/page-server.c). On the wire it is Firecracker, byte for
 * byte (the project's notes: reference/page-servers.md §1):
 *   1. guest memory: one anonymous MAP_PRIVATE|MAP_NORESERVE mapping per region (|MAP_HUGETLB|MAP_HUGE_2MB
 *      for 2 MiB pages); the regions sit in one reserved PROT_NONE span with --gap pages between them;
 *   2. userfaultfd(O_CLOEXEC|O_NONBLOCK) (/dev/userfaultfd when the syscall is refused), UFFDIO_API requiring
 *      EVENT_REMOVE and nothing else;
 *   3. UFFDIO_REGISTER (MISSING) of each region;
 *   4. connect(2) to the handler's Unix stream socket and ONE sendmsg: the JSON array of the regions, with the
 *      uffd as the only SCM_RIGHTS fd. Field order is Firecracker's serde struct, compact, no newline:
 *        1.1 - 1.6   {"base_host_virt_addr":A,"size":S,"offset":O}
 *        1.7 - 1.11  ... ,"page_size_kib":P}                  P is the page size in BYTES (Firecracker's bug)
 *        1.12+       ... ,"page_size":P,"page_size_kib":P}
 *      offset is the running sum of the earlier regions' sizes: the memory file is the regions back to back;
 *   5. before 1.12 the socket is closed right after the send; 1.12 keeps it open for the process's lifetime.
 *      We keep our own uffd open, as Firecracker does.
 * Then it plays the guest: --threads threads ("vCPUs") each touch their share of the pages, in address order
 * or in a random order (fixed seed), timed; every touch checks the page's first 8 bytes against the memory
 * file, and afterwards every byte of every page is compared with the file (pread), untimed.
 *
 * usage: fake-vmm --socket PATH --memory FILE [options]
 *   --protocol V         Firecracker version whose payload to send: 1.1, 1.7, 1.12 (any X.Y; default 1.12)
 *   --hugetlb            2 MiB hugetlb pages (needs free huge pages: vm.nr_hugepages; protocol 1.7 or later,
 *                        as in Firecracker, unless --payload says otherwise)
 *   --regions N          split guest memory into N regions (default 1): equal page counts, the remainder in
 *                        the last one
 *   --gap PAGES          PROT_NONE pages between regions in the address space (default 1)
 *   --size BYTES         guest memory size (default: the file's size; a multiple of the page size). Larger
 *                        than the file only makes sense with --touch none (a bad-input test)
 *   --threads N          touching threads (default 1)
 *   --random             random page order (Fisher-Yates over all pages, split among threads); default: each
 *                        thread walks a contiguous share in address order
 *   --seed N             seed of the random order (default 1)
 *   --working-set PCT    touch (and verify) only the first PCT percent of the page order (default 100): with
 *                        --random, a working set in a fixed random order, as a restored guest touches it
 *   --work-us N          the guest's own work after each touch: a busy wait of N µs (default 0)
 *   --write              touch by writing the page's expected first 8 bytes (a write fault) instead of reading
 *   --touch all|none     none: after the handshake touch nothing; wait up to --hold ms for the peer to close
 *                        the socket (1.12 only; reported as peerClosed), then exit 0
 *   --send json|none     none: connect and never send anything; wait as with --touch none
 *   --hold MS            how long --touch none / --send none wait (default 1000)
 *   --linger MS          after printing the result, stay alive (memory registered) this long before exiting
 *   --delay-touch MS     after the handshake, wait this long before touching (a head start for a prefetch)
 *   --file-offset BYTES  the regions start this far into the memory file (default 0; guest memory defaults
 *                        to the rest of the file)
 *   --balloon [F:C]      after verification, MADV_DONTNEED pages [F, F+C) (page indexes over all of guest
 *                        memory, default F = pages/4, C = max(1, pages/8)), touch them again: every byte must
 *                        be zero (Firecracker's balloon: removed pages read as zeros); then verify the rest
 *                        of memory again
 *   --balloon-during     the balloon happens mid-run instead: thread 0 first touches the balloon pages, then
 *                        madvises them while the other threads are still faulting; no other thread touches
 *                        them; after the run they must read as zeros
 *   --die-after N        once N pages have been touched, wait until a touching thread is blocked in a fault
 *                        (state S/D in /proc) and SIGKILL ourselves (a VMM dying with faults outstanding)
 *   --payload TEMPLATE   send TEMPLATE instead of the generated JSON, with @json@ (the generated JSON),
 *                        @addrI@, @sizeI@, @offsetI@ (region I) and @pagesize@ substituted
 *   --fds LIST           what the SCM_RIGHTS message carries, comma separated, in order: uffd, eventfd, file
 *                        (the memory file), devnull; or none (no control message). Default: uffd
 *   --split BYTES        send the payload in chunks of BYTES (the first one carries the fds),
 *   --split-delay MS     this far apart (default 50). Firecracker never does this: a test of partial reads
 *   --keep-socket, --close-socket   override the protocol's choice
 *   --timeout MS         give up with exit 4 when the run has not finished in time (default 120000, 0 = never)
 *   --connect-timeout MS retry connect while the socket is missing or refuses (default 5000, 0 = once)
 *   --no-uffd            baseline without a page server: map the memory file MAP_PRIVATE (regions at their
 *                        offsets) and touch it the same way: the kernel's own page-cache faults
 *   --verbose            the payload and each step on stderr
 *
 * stdout: one JSON line, e.g.
 *   {"tool":"fake-vmm","protocol":"1.12","pageSize":4096,"regions":1,"pages":262144,"bytes":1073741824,
 *    "threads":1,"order":"sequential","write":false,"uffd":true,"ns":812345678,"mibps":1260.5,"touched":262144,
 *    "verified":262144,"zeroChecked":0,"mismatches":0,"peerClosed":null,"pid":1234,"allowedCpus":"0"}
 *   ns and mibps cover the touching only; mismatches counts pages with any failed check; peerClosed is
 *   true/false after --touch none or --send none on an open socket, else null.
 * stderr: diagnostics, the first mismatches (page, region, first differing byte, whether the page is zero).
 * exit: 0 every page right; 1 mismatches; 2 usage; 3 setup failed (mmap, uffd, connect, send, huge pages);
 *       4 timed out; killed by SIGKILL with --die-after.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* Our own uapi: the build machine's <linux/userfaultfd.h> (Debian 12: 6.1) is older than the kernels we run. */
#define UFFD_API 0xAAULL
#define UFFD_FEATURE_EVENT_REMOVE (1ULL << 3)
#define UFFDIO_REGISTER_MODE_MISSING 1ULL
struct uffd_api_arg { uint64_t api, features, ioctls; };
struct uffd_range_arg { uint64_t start, len; };
struct uffd_register_arg { struct uffd_range_arg range; uint64_t mode, ioctls; };
#define UFFDIO_REGISTER_REQ _IOWR(0xAA, 0x00, struct uffd_register_arg)
#define UFFDIO_API_REQ _IOWR(0xAA, 0x3F, struct uffd_api_arg)
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#ifndef SYS_userfaultfd
#define SYS_userfaultfd 323
#endif
#ifndef MAP_HUGE_2MB
#define MAP_HUGE_2MB (21 << 26)
#endif

#define HUGE_2M (2UL << 20)
#define MAX_REPORTS 10
#define MAX_FDS 8

enum { EXIT_MISMATCH = 1, EXIT_USAGE = 2, EXIT_SETUP = 3, EXIT_TIMEOUT = 4 };

struct options {
  const char *socket, *memory, *payload, *fds;
  char protocol[16];
  int shape; /* 1: three fields; 2: + page_size_kib; 3: + page_size, page_size_kib */
  int hugetlb, random, write, touch, send, balloon, balloon_during, no_uffd, verbose, keep_socket;
  size_t regions, gap_pages, threads, split, balloon_first, balloon_count, working_set, work_us;
  uint64_t seed, size, file_offset;
  long die_after, linger_ms, delay_touch_ms, hold_ms, timeout_ms, connect_timeout_ms, split_delay_ms;
  int balloon_range_given;
};

struct region { uintptr_t addr; size_t first, pages; uint64_t offset; };

struct worker {
  struct vmm *vmm;
  pthread_t thread;
  size_t from, to;              /* its share: order[from, to) */
  _Atomic size_t touched;
  _Atomic int tid, state;       /* state: 0 waiting, 1 touching, 2 done */
  uint64_t started, finished;   /* CLOCK_MONOTONIC ns around its touching */
  size_t mismatches, verified;
  unsigned char *buffer;        /* one page, for verification */
};

struct vmm {
  struct options o;
  int file, uffd, sock;
  uint64_t file_size;
  size_t page_size, pages;
  struct region *regions;
  size_t *order;                /* the pages to touch in the timed phase, split among workers */
  size_t order_len;
  uint64_t *expected;           /* first 8 bytes of each page in the file */
  struct worker *workers;
  pthread_barrier_t start;
  pthread_mutex_t report_lock;
  int reports;
  int skip_balloon;             /* verification leaves the ballooned-out pages to check_zero */
  _Atomic unsigned char *bad;   /* per page: a check failed (each page counts once in mismatches) */
  _Atomic size_t mismatches;
};

static void die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
static void die(int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("fake-vmm: ", stderr);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  exit(code);
}

static void note(const struct vmm *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(const struct vmm *v, const char *fmt, ...) {
  if (!v->o.verbose) return;
  va_list ap;
  va_start(ap, fmt);
  fputs("fake-vmm: ", stderr);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void sleep_ms(long ms) {
  struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {}
}

/* ---- options ---- */

static uint64_t number(const char *flag, const char *text) {
  char *end;
  errno = 0;
  unsigned long long n = strtoull(text == NULL ? "" : text, &end, 0);
  if (text == NULL || *text == '\0' || *text == '-' || *end != '\0' || errno != 0) {
    die(EXIT_USAGE, "%s needs a non-negative integer, got '%s'", flag, text == NULL ? "" : text);
  }
  return n;
}

/* 1.1-1.6: three fields; 1.7-1.11: page_size_kib; 1.12 on: page_size and page_size_kib. */
static int protocol_shape(const char *text) {
  unsigned major, minor;
  char rest;
  if (sscanf(text, "%u.%u%c", &major, &minor, &rest) != 2 || major < 1 || (major == 1 && minor < 1)) {
    die(EXIT_USAGE, "--protocol needs a Firecracker version 1.1 or later like 1.1, 1.7 or 1.12, got '%s'", text);
  }
  if (major > 1 || minor >= 12) return 3;
  return minor >= 7 ? 2 : 1;
}

static void parse_options(int argc, char **argv, struct options *o) {
  *o = (struct options){ .fds = "uffd", .shape = 3, .touch = 1, .send = 1, .keep_socket = -1, .regions = 1,
                         .gap_pages = 1, .threads = 1, .working_set = 100, .seed = 1, .die_after = -1, .hold_ms = 1000,
                         .timeout_ms = 120000, .connect_timeout_ms = 5000, .split_delay_ms = 50 };
  snprintf(o->protocol, sizeof o->protocol, "1.12");
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *value = i + 1 < argc ? argv[i + 1] : NULL;
#define TAKE() (i++, value)
    if (strcmp(a, "--socket") == 0) o->socket = TAKE();
    else if (strcmp(a, "--memory") == 0) o->memory = TAKE();
    else if (strcmp(a, "--protocol") == 0) {
      const char *v = TAKE();
      if (v == NULL || strlen(v) >= sizeof o->protocol) die(EXIT_USAGE, "--protocol needs a version like 1.12");
      o->shape = protocol_shape(v);
      snprintf(o->protocol, sizeof o->protocol, "%s", v);
    } else if (strcmp(a, "--hugetlb") == 0) o->hugetlb = 1;
    else if (strcmp(a, "--regions") == 0) o->regions = number(a, TAKE());
    else if (strcmp(a, "--gap") == 0) o->gap_pages = number(a, TAKE());
    else if (strcmp(a, "--size") == 0) o->size = number(a, TAKE());
    else if (strcmp(a, "--threads") == 0) o->threads = number(a, TAKE());
    else if (strcmp(a, "--random") == 0) o->random = 1;
    else if (strcmp(a, "--working-set") == 0) o->working_set = number(a, TAKE());
    else if (strcmp(a, "--work-us") == 0) o->work_us = number(a, TAKE());
    else if (strcmp(a, "--seed") == 0) o->seed = number(a, TAKE());
    else if (strcmp(a, "--write") == 0) o->write = 1;
    else if (strcmp(a, "--touch") == 0) {
      const char *v = TAKE();
      if (v == NULL || (strcmp(v, "all") != 0 && strcmp(v, "none") != 0)) die(EXIT_USAGE, "--touch needs all or none");
      o->touch = strcmp(v, "all") == 0;
    } else if (strcmp(a, "--send") == 0) {
      const char *v = TAKE();
      if (v == NULL || (strcmp(v, "json") != 0 && strcmp(v, "none") != 0)) die(EXIT_USAGE, "--send needs json or none");
      o->send = strcmp(v, "json") == 0;
    } else if (strcmp(a, "--hold") == 0) o->hold_ms = (long)number(a, TAKE());
    else if (strcmp(a, "--linger") == 0) o->linger_ms = (long)number(a, TAKE());
    else if (strcmp(a, "--delay-touch") == 0) o->delay_touch_ms = (long)number(a, TAKE());
    else if (strcmp(a, "--file-offset") == 0) o->file_offset = number(a, TAKE());
    else if (strcmp(a, "--balloon") == 0) {
      o->balloon = 1;
      unsigned long long first, count;
      char rest;
      if (value != NULL && sscanf(value, "%llu:%llu%c", &first, &count, &rest) == 2) {
        i++;
        o->balloon_first = first;
        o->balloon_count = count;
        o->balloon_range_given = 1;
      }
    } else if (strcmp(a, "--balloon-during") == 0) o->balloon = o->balloon_during = 1;
    else if (strcmp(a, "--die-after") == 0) o->die_after = (long)number(a, TAKE());
    else if (strcmp(a, "--payload") == 0) {
      o->payload = TAKE();
      if (o->payload == NULL) die(EXIT_USAGE, "--payload needs a template");
    } else if (strcmp(a, "--fds") == 0) {
      o->fds = TAKE();
      if (o->fds == NULL) die(EXIT_USAGE, "--fds needs a list");
    } else if (strcmp(a, "--split") == 0) o->split = number(a, TAKE());
    else if (strcmp(a, "--split-delay") == 0) o->split_delay_ms = (long)number(a, TAKE());
    else if (strcmp(a, "--keep-socket") == 0) o->keep_socket = 1;
    else if (strcmp(a, "--close-socket") == 0) o->keep_socket = 0;
    else if (strcmp(a, "--timeout") == 0) o->timeout_ms = (long)number(a, TAKE());
    else if (strcmp(a, "--connect-timeout") == 0) o->connect_timeout_ms = (long)number(a, TAKE());
    else if (strcmp(a, "--no-uffd") == 0) o->no_uffd = 1;
    else if (strcmp(a, "--verbose") == 0) o->verbose = 1;
    else die(EXIT_USAGE, "unknown option '%s' (the options are listed at the top of fake-vmm.c)", a);
#undef TAKE
  }
  if (o->memory == NULL) die(EXIT_USAGE, "--memory FILE is required");
  if (o->socket == NULL && !o->no_uffd) die(EXIT_USAGE, "--socket PATH is required");
  if (o->regions == 0 || o->threads == 0) die(EXIT_USAGE, "--regions and --threads must be at least 1");
  if (o->no_uffd && o->hugetlb) die(EXIT_USAGE, "--no-uffd maps the file itself: no --hugetlb");
  if (o->hugetlb && o->shape == 1 && o->payload == NULL) {
    die(EXIT_USAGE, "--hugetlb needs --protocol 1.7 or later: before 1.7 Firecracker had no huge pages and its payload no page size");
  }
  if (o->keep_socket < 0) o->keep_socket = o->shape == 3; /* Firecracker 1.12 forgets the socket, older drop it */
}

/* ---- guest memory ---- */

static size_t free_huge_pages(void) {
  FILE *f = fopen("/proc/meminfo", "r");
  size_t free_pages = 0;
  char line[256];
  if (f == NULL) return 0;
  while (fgets(line, sizeof line, f) != NULL) {
    if (sscanf(line, "HugePages_Free: %zu", &free_pages) == 1) break;
  }
  fclose(f);
  return free_pages;
}

static void layout(struct vmm *v) {
  struct options *o = &v->o;
  v->page_size = o->hugetlb ? HUGE_2M : (size_t)sysconf(_SC_PAGESIZE);
  if (o->file_offset % v->page_size != 0 || o->file_offset >= v->file_size) {
    die(EXIT_USAGE, "--file-offset %" PRIu64 " must be a multiple of the page size within the file", o->file_offset);
  }
  uint64_t size = o->size != 0 ? o->size : v->file_size - o->file_offset;
  if (size == 0 || size % v->page_size != 0) {
    die(EXIT_USAGE, "guest memory (%" PRIu64 " bytes: %s) must be a non-zero multiple of the page size %zu",
        size, o->size != 0 ? "--size" : "the memory file's size", v->page_size);
  }
  v->pages = size / v->page_size;
  if (o->regions > v->pages) die(EXIT_USAGE, "--regions %zu: more regions than pages (%zu)", o->regions, v->pages);
  if (o->working_set < 1 || o->working_set > 100) die(EXIT_USAGE, "--working-set %zu: a percentage in [1, 100]", o->working_set);
  if (o->hugetlb && o->touch && o->send && free_huge_pages() < v->pages) {
    die(EXIT_SETUP, "needs %zu free 2 MiB huge pages, HugePages_Free is %zu (raise vm.nr_hugepages)", v->pages,
        free_huge_pages());
  }
  v->regions = calloc(o->regions, sizeof *v->regions);
  if (v->regions == NULL) die(EXIT_SETUP, "out of memory");
  size_t per = v->pages / o->regions;
  for (size_t r = 0; r < o->regions; r++) {
    v->regions[r].first = r * per;
    v->regions[r].pages = r + 1 == o->regions ? v->pages - r * per : per;
    v->regions[r].offset = o->file_offset + (uint64_t)v->regions[r].first * v->page_size; /* the running sum of sizes */
  }
}

/* One PROT_NONE span for everything, aligned to the page size, then each region mapped over its place in it
 * (MAP_FIXED): the gaps stay PROT_NONE, so regions are never adjacent. */
static void map_memory(struct vmm *v) {
  const struct options *o = &v->o;
  size_t span = (v->pages + o->gap_pages * (o->regions - 1)) * v->page_size;
  char *reserve = mmap(NULL, span + v->page_size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (reserve == MAP_FAILED) die(EXIT_SETUP, "mmap of %zu bytes: %s", span, strerror(errno));
  uintptr_t base = ((uintptr_t)reserve + v->page_size - 1) & ~(uintptr_t)(v->page_size - 1);
  for (size_t r = 0; r < o->regions; r++) {
    struct region *g = &v->regions[r];
    void *want = (void *)(base + (g->first + r * o->gap_pages) * v->page_size);
    size_t len = g->pages * v->page_size;
    void *got;
    if (o->no_uffd) {
      got = mmap(want, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, v->file, (off_t)g->offset);
    } else {
      int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED | (o->hugetlb ? MAP_HUGETLB | MAP_HUGE_2MB : 0);
      got = mmap(want, len, PROT_READ | PROT_WRITE, flags, -1, 0);
    }
    if (got == MAP_FAILED) die(EXIT_SETUP, "mmap of region %zu (%zu bytes): %s", r, len, strerror(errno));
    g->addr = (uintptr_t)got;
  }
}

static size_t region_of(const struct vmm *v, size_t page) {
  size_t per = v->pages / v->o.regions;
  size_t r = page / per;
  return r < v->o.regions ? r : v->o.regions - 1;
}

static unsigned char *page_address(const struct vmm *v, size_t page) {
  const struct region *g = &v->regions[region_of(v, page)];
  return (unsigned char *)(g->addr + (page - g->first) * v->page_size);
}

/* ---- the uffd, registered as Firecracker does ---- */

static int create_uffd(struct vmm *v) {
  int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
  if (fd < 0 && errno == EPERM) {
    int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
    if (dev < 0) die(EXIT_SETUP, "userfaultfd refused (EPERM) and /dev/userfaultfd: %s", strerror(errno));
    fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
    close(dev);
  }
  if (fd < 0) die(EXIT_SETUP, "userfaultfd: %s", strerror(errno));
  struct uffd_api_arg api = { .api = UFFD_API, .features = UFFD_FEATURE_EVENT_REMOVE };
  if (ioctl(fd, UFFDIO_API_REQ, &api) < 0) die(EXIT_SETUP, "UFFDIO_API (EVENT_REMOVE): %s", strerror(errno));
  if ((api.features & UFFD_FEATURE_EVENT_REMOVE) == 0) die(EXIT_SETUP, "this kernel does not offer EVENT_REMOVE");
  for (size_t r = 0; r < v->o.regions; r++) {
    struct uffd_register_arg reg = { .range = { .start = v->regions[r].addr, .len = v->regions[r].pages * v->page_size },
                                     .mode = UFFDIO_REGISTER_MODE_MISSING };
    if (ioctl(fd, UFFDIO_REGISTER_REQ, &reg) < 0) die(EXIT_SETUP, "UFFDIO_REGISTER of region %zu: %s", r, strerror(errno));
  }
  return fd;
}

/* ---- the handshake ---- */

struct text { char *s; size_t len, cap; };

static void append(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void append(struct text *t, const char *fmt, ...) {
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(t->s == NULL ? NULL : t->s + t->len, t->cap - t->len, fmt, ap);
    va_end(ap);
    if (n < 0) die(EXIT_SETUP, "vsnprintf failed");
    if (t->s != NULL && (size_t)n < t->cap - t->len) {
      t->len += (size_t)n;
      return;
    }
    t->cap = (t->cap + (size_t)n + 1) * 2;
    t->s = realloc(t->s, t->cap);
    if (t->s == NULL) die(EXIT_SETUP, "out of memory");
  }
}

/* Exactly what serde_json makes of Firecracker's Vec<GuestRegionUffdMapping> in that version. */
static void generated_json(const struct vmm *v, struct text *t) {
  append(t, "[");
  for (size_t r = 0; r < v->o.regions; r++) {
    const struct region *g = &v->regions[r];
    append(t, "%s{\"base_host_virt_addr\":%" PRIuPTR ",\"size\":%zu,\"offset\":%" PRIu64, r == 0 ? "" : ",",
           g->addr, g->pages * v->page_size, g->offset);
    if (v->o.shape == 3) append(t, ",\"page_size\":%zu", v->page_size);
    if (v->o.shape >= 2) append(t, ",\"page_size_kib\":%zu", v->page_size); /* bytes, as Firecracker sends */
    append(t, "}");
  }
  append(t, "]");
}

static int placeholder(const struct vmm *v, const char *name, size_t len, struct text *t) {
  char field[16];
  size_t r;
  char rest;
  if (len == 4 && strncmp(name, "json", 4) == 0) {
    generated_json(v, t);
    return 1;
  }
  if (len == 8 && strncmp(name, "pagesize", 8) == 0) {
    append(t, "%zu", v->page_size);
    return 1;
  }
  char copy[64];
  if (len >= sizeof copy) return 0;
  memcpy(copy, name, len);
  copy[len] = '\0';
  if (sscanf(copy, "%15[a-z]%zu%c", field, &r, &rest) != 2 || r >= v->o.regions) return 0;
  const struct region *g = &v->regions[r];
  if (strcmp(field, "addr") == 0) append(t, "%" PRIuPTR, g->addr);
  else if (strcmp(field, "size") == 0) append(t, "%zu", g->pages * v->page_size);
  else if (strcmp(field, "offset") == 0) append(t, "%" PRIu64, g->offset);
  else return 0;
  return 1;
}

static void build_payload(const struct vmm *v, struct text *t) {
  if (v->o.payload == NULL) {
    generated_json(v, t);
    return;
  }
  const char *p = v->o.payload;
  while (*p != '\0') {
    const char *close = *p == '@' ? strchr(p + 1, '@') : NULL;
    if (close != NULL && placeholder(v, p + 1, (size_t)(close - p - 1), t)) {
      p = close + 1;
      continue;
    }
    append(t, "%c", *p++);
  }
}

static int connect_socket(const struct vmm *v) {
  struct sockaddr_un addr = { .sun_family = AF_UNIX };
  if (strlen(v->o.socket) >= sizeof addr.sun_path) die(EXIT_USAGE, "socket path too long: %s", v->o.socket);
  strcpy(addr.sun_path, v->o.socket);
  uint64_t deadline = now_ns() + (uint64_t)v->o.connect_timeout_ms * 1000000u;
  for (;;) {
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) die(EXIT_SETUP, "socket: %s", strerror(errno));
    if (connect(s, (struct sockaddr *)&addr, sizeof addr) == 0) return s;
    int err = errno;
    close(s);
    // The handler may still be starting: Firecracker itself does not retry, but a test runner should not race.
    if ((err != ENOENT && err != ECONNREFUSED) || now_ns() >= deadline) {
      die(EXIT_SETUP, "connect %s: %s", v->o.socket, strerror(err));
    }
    sleep_ms(5);
  }
}

static size_t collect_fds(struct vmm *v, int *fds) {
  if (strcmp(v->o.fds, "none") == 0) return 0;
  char *list = strdup(v->o.fds), *save = NULL;
  size_t n = 0;
  for (char *k = strtok_r(list, ",", &save); k != NULL; k = strtok_r(NULL, ",", &save)) {
    if (n == MAX_FDS) die(EXIT_USAGE, "--fds: at most %d fds", MAX_FDS);
    if (strcmp(k, "uffd") == 0) fds[n] = v->uffd;
    else if (strcmp(k, "eventfd") == 0) fds[n] = eventfd(0, EFD_CLOEXEC);
    else if (strcmp(k, "file") == 0) fds[n] = v->file;
    else if (strcmp(k, "devnull") == 0) fds[n] = open("/dev/null", O_RDWR | O_CLOEXEC);
    else die(EXIT_USAGE, "--fds: unknown kind '%s' (uffd, eventfd, file, devnull, or none alone)", k);
    if (fds[n] < 0) die(EXIT_SETUP, "--fds %s: %s", k, strerror(errno));
    n++;
  }
  free(list);
  return n;
}

/* One sendmsg with the whole payload and the fds, as Firecracker's send_with_fd; --split sends pieces. */
static void send_handshake(struct vmm *v, const struct text *payload) {
  int fds[MAX_FDS];
  size_t nfds = collect_fds(v, fds);
  union { struct cmsghdr align; char buf[CMSG_SPACE(sizeof(int) * MAX_FDS)]; } control;
  memset(&control, 0, sizeof control);
  size_t chunk = v->o.split != 0 && v->o.split < payload->len ? v->o.split : payload->len;
  struct iovec iov = { .iov_base = payload->s, .iov_len = chunk };
  struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
  if (nfds > 0) {
    msg.msg_control = control.buf;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
  }
  ssize_t n = sendmsg(v->sock, &msg, MSG_NOSIGNAL);
  if (n < 0) die(EXIT_SETUP, "sendmsg: %s", strerror(errno));
  size_t sent = (size_t)n;
  while (sent < payload->len) {
    if (v->o.split != 0) sleep_ms(v->o.split_delay_ms);
    size_t len = payload->len - sent;
    if (v->o.split != 0 && len > v->o.split) len = v->o.split;
    n = send(v->sock, payload->s + sent, len, MSG_NOSIGNAL);
    if (n < 0) die(EXIT_SETUP, "send: %s", strerror(errno));
    sent += (size_t)n;
  }
  note(v, "sent %zu bytes with %zu fd(s)%s", payload->len, nfds, v->o.keep_socket ? "" : "; closing the socket");
}

/* --touch none / --send none: wait for the peer to hang up (a refused handshake), at most --hold ms. */
static const char *wait_for_peer(const struct vmm *v) {
  if (v->sock < 0) {
    sleep_ms(v->o.hold_ms);
    return "null";
  }
  struct pollfd p = { .fd = v->sock, .events = POLLIN | POLLRDHUP };
  uint64_t deadline = now_ns() + (uint64_t)v->o.hold_ms * 1000000u;
  for (;;) {
    uint64_t now = now_ns();
    int wait = now >= deadline ? 0 : (int)((deadline - now) / 1000000u);
    int r = poll(&p, 1, wait);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return "false";
    char byte;
    ssize_t n = recv(v->sock, &byte, 1, MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) return "true";
    if (n > 0) fprintf(stderr, "fake-vmm: the handler sent data on the socket (Firecracker never expects any)\n");
    if (now_ns() >= deadline) return "false";
  }
}

/* ---- what the file says each page holds ---- */

static void read_expected(struct vmm *v) {
  v->expected = calloc(v->pages, sizeof *v->expected);
  size_t chunk_pages = (8u << 20) / v->page_size;
  if (chunk_pages == 0) chunk_pages = 1;
  unsigned char *buf = malloc(chunk_pages * v->page_size);
  if (v->expected == NULL || buf == NULL) die(EXIT_SETUP, "out of memory");
  for (size_t page = 0; page < v->pages; page += chunk_pages) {
    size_t want = (v->pages - page < chunk_pages ? v->pages - page : chunk_pages) * v->page_size;
    off_t at = (off_t)(v->o.file_offset + page * v->page_size);
    ssize_t n = (uint64_t)at < v->file_size ? pread(v->file, buf, want, at) : 0;
    if (n < 0) die(EXIT_SETUP, "pread %s: %s", v->o.memory, strerror(errno));
    if ((size_t)n < want) memset(buf + n, 0, want - (size_t)n); /* past the end of the file: zeros */
    for (size_t i = 0; i < want / v->page_size; i++) memcpy(&v->expected[page + i], buf + i * v->page_size, 8);
  }
  free(buf);
}

/* ---- touching and verifying ---- */

static void report(struct vmm *v, size_t page, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void report(struct vmm *v, size_t page, const char *fmt, ...) {
  if (atomic_exchange(&v->bad[page], 1) == 0) atomic_fetch_add(&v->mismatches, 1);
  pthread_mutex_lock(&v->report_lock);
  if (v->reports < MAX_REPORTS) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "fake-vmm: page %zu (region %zu, address 0x%" PRIxPTR "): ", page, region_of(v, page),
            (uintptr_t)page_address(v, page));
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
  } else if (v->reports == MAX_REPORTS) {
    fprintf(stderr, "fake-vmm: more mismatches not shown\n");
  }
  v->reports++;
  pthread_mutex_unlock(&v->report_lock);
}

static int in_balloon(const struct vmm *v, size_t page) {
  return v->o.balloon && page >= v->o.balloon_first && page < v->o.balloon_first + v->o.balloon_count;
}

static void touch_page(struct vmm *v, struct worker *w, size_t page) {
  volatile uint64_t *word = (volatile uint64_t *)page_address(v, page);
  if (v->o.write) {
    *word = v->expected[page]; /* a write fault; the value keeps the page equal to the file */
  } else {
    uint64_t got = *word;
    if (got != v->expected[page]) {
      w->mismatches++;
      report(v, page, "first 8 bytes 0x%016" PRIx64 ", the file has 0x%016" PRIx64, got, v->expected[page]);
    }
  }
  atomic_store_explicit(&w->touched, atomic_load_explicit(&w->touched, memory_order_relaxed) + 1, memory_order_relaxed);
}

/* MADV_DONTNEED of the balloon pages, region by region (the range may span a gap). */
static void balloon_out(struct vmm *v) {
  size_t page = v->o.balloon_first, end = v->o.balloon_first + v->o.balloon_count;
  while (page < end) {
    const struct region *g = &v->regions[region_of(v, page)];
    size_t stop = g->first + g->pages < end ? g->first + g->pages : end;
    if (madvise(page_address(v, page), (stop - page) * v->page_size, MADV_DONTNEED) < 0) {
      die(EXIT_SETUP, "madvise(MADV_DONTNEED) of pages [%zu, %zu): %s", page, stop, strerror(errno));
    }
    page = stop;
  }
  note(v, "ballooned out pages [%zu, %zu)", v->o.balloon_first, end);
}

/* The guest's own work between touches: a busy wait (a vCPU computing, not sleeping). */
static void work(size_t micros) {
  uint64_t until = now_ns() + (uint64_t)micros * 1000;
  while (now_ns() < until) {
  }
}

static void *toucher(void *arg) {
  struct worker *w = arg;
  struct vmm *v = w->vmm;
  atomic_store(&w->tid, (int)syscall(SYS_gettid));
  pthread_barrier_wait(&v->start);
  w->started = now_ns();
  atomic_store(&w->state, 1);
  if (v->o.balloon_during && w == &v->workers[0]) {
    for (size_t p = v->o.balloon_first; p < v->o.balloon_first + v->o.balloon_count; p++) touch_page(v, w, p);
    balloon_out(v); /* while the other threads are still faulting */
  }
  for (size_t i = w->from; i < w->to; i++) {
    touch_page(v, w, v->order[i]);
    if (v->o.work_us > 0) work(v->o.work_us);
  }
  w->finished = now_ns();
  atomic_store(&w->state, 2);
  return NULL;
}

static void check_zero(struct vmm *v, size_t page) {
  const unsigned char *p = page_address(v, page);
  for (size_t i = 0; i < v->page_size; i++) {
    if (p[i] != 0) {
      report(v, page, "ballooned out, byte %zu is 0x%02x instead of zero", i, p[i]);
      return;
    }
  }
}

static int all_zero(const unsigned char *p, size_t len) {
  for (size_t i = 0; i < len; i++) {
    if (p[i] != 0) return 0;
  }
  return 1;
}

static void verify_page(struct vmm *v, struct worker *w, size_t page) {
  off_t at = (off_t)(v->o.file_offset + page * v->page_size);
  ssize_t n = (uint64_t)at < v->file_size ? pread(v->file, w->buffer, v->page_size, at) : 0;
  if (n < 0) die(EXIT_SETUP, "pread %s: %s", v->o.memory, strerror(errno));
  if ((size_t)n < v->page_size) memset(w->buffer + n, 0, v->page_size - (size_t)n);
  const unsigned char *got = page_address(v, page);
  w->verified++;
  if (memcmp(got, w->buffer, v->page_size) == 0) return;
  size_t i = 0;
  while (got[i] == w->buffer[i]) i++;
  report(v, page, "byte %zu is 0x%02x, the file has 0x%02x%s", i, got[i], w->buffer[i],
         all_zero(got, v->page_size) ? " (the page is all zeros)" : "");
}

static void *verifier(void *arg) {
  struct worker *w = arg;
  struct vmm *v = w->vmm;
  for (size_t i = w->from; i < w->to; i++) {
    if (!(v->skip_balloon && in_balloon(v, v->order[i]))) verify_page(v, w, v->order[i]);
  }
  return NULL;
}

static void run_workers(struct vmm *v, void *(*fn)(void *)) {
  for (size_t t = 0; t < v->o.threads; t++) {
    int err = pthread_create(&v->workers[t].thread, NULL, fn, &v->workers[t]);
    if (err != 0) die(EXIT_SETUP, "pthread_create: %s", strerror(err));
  }
}

static void join_workers(struct vmm *v) {
  for (size_t t = 0; t < v->o.threads; t++) pthread_join(v->workers[t].thread, NULL);
}

static uint64_t splitmix(uint64_t *state) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/* Every page once, sequential or shuffled; with --balloon-during the balloon pages are left out (thread 0
 * touches them first, by itself). Then each thread gets a contiguous share of the list. */
static void plan(struct vmm *v) {
  v->order = malloc(v->pages * sizeof *v->order);
  v->workers = calloc(v->o.threads, sizeof *v->workers);
  v->bad = calloc(v->pages, sizeof *v->bad);
  if (v->order == NULL || v->workers == NULL || v->bad == NULL) die(EXIT_SETUP, "out of memory");
  size_t n = 0;
  for (size_t p = 0; p < v->pages; p++) {
    if (!(v->o.balloon_during && in_balloon(v, p))) v->order[n++] = p;
  }
  if (v->o.random) {
    uint64_t state = v->o.seed;
    for (size_t i = n; i > 1; i--) {
      size_t j = (size_t)(splitmix(&state) % i);
      size_t tmp = v->order[i - 1];
      v->order[i - 1] = v->order[j];
      v->order[j] = tmp;
    }
  }
  /* A working set: the first pages of the order only (touched, then verified); the rest stay untouched. */
  if (v->o.working_set < 100) n = n * v->o.working_set / 100 > 0 ? n * v->o.working_set / 100 : 1;
  v->order_len = n;
  for (size_t t = 0; t < v->o.threads; t++) {
    struct worker *w = &v->workers[t];
    w->vmm = v;
    w->from = n * t / v->o.threads;
    w->to = n * (t + 1) / v->o.threads;
    w->buffer = malloc(v->page_size);
    if (w->buffer == NULL) die(EXIT_SETUP, "out of memory");
  }
}

static size_t touched(const struct vmm *v) {
  size_t sum = 0;
  for (size_t t = 0; v->workers != NULL && t < v->o.threads; t++) sum += atomic_load_explicit(&v->workers[t].touched, memory_order_relaxed);
  return sum;
}

/* A toucher that sleeps is blocked in a fault: touching memory is all it does. */
static int blocked_in_fault(const struct worker *w) {
  char path[64], line[512];
  snprintf(path, sizeof path, "/proc/self/task/%d/stat", atomic_load(&w->tid));
  FILE *f = fopen(path, "r");
  if (f == NULL) return 0;
  char *ok = fgets(line, sizeof line, f);
  fclose(f);
  const char *paren = ok == NULL ? NULL : strrchr(line, ')');
  return paren != NULL && (paren[2] == 'S' || paren[2] == 'D');
}

static void *killer(void *arg) {
  struct vmm *v = arg;
  struct timespec tick = { 0, 50000 };
  while (touched(v) < (size_t)v->o.die_after) nanosleep(&tick, NULL);
  for (;;) {
    for (size_t t = 0; t < v->o.threads; t++) {
      const struct worker *w = &v->workers[t];
      if (atomic_load(&w->state) == 1 && blocked_in_fault(w)) {
        fprintf(stderr, "fake-vmm: dying (SIGKILL) after %zu pages, thread %zu blocked in a fault\n", touched(v), t);
        kill(getpid(), SIGKILL);
      }
    }
    nanosleep(&tick, NULL);
  }
  return NULL;
}

static void *watchdog(void *arg) {
  struct vmm *v = arg;
  sleep_ms(v->o.timeout_ms);
  fprintf(stderr, "fake-vmm: timed out after %ld ms: %zu of %zu pages touched (is the handler serving?)\n",
          v->o.timeout_ms, touched(v), v->pages);
  _exit(EXIT_TIMEOUT);
  return NULL;
}

static void start_thread(void *(*fn)(void *), void *arg) {
  pthread_t t;
  int err = pthread_create(&t, NULL, fn, arg);
  if (err != 0) die(EXIT_SETUP, "pthread_create: %s", strerror(err));
  pthread_detach(t);
}

static void allowed_cpus(char *out, size_t size) {
  snprintf(out, size, "?");
  FILE *f = fopen("/proc/self/status", "r");
  if (f == NULL) return;
  char line[512];
  while (fgets(line, sizeof line, f) != NULL) {
    if (strncmp(line, "Cpus_allowed_list:", 18) == 0) {
      sscanf(line + 18, "%127s", out);
      break;
    }
  }
  fclose(f);
}

static void print_result(const struct vmm *v, uint64_t ns, size_t verified, size_t zero_checked, const char *peer) {
  char cpus[128];
  allowed_cpus(cpus, sizeof cpus);
  size_t done = touched(v);
  double mibps = ns == 0 ? 0 : (double)done * (double)v->page_size / (1 << 20) / ((double)ns / 1e9);
  printf("{\"tool\":\"fake-vmm\",\"protocol\":\"%s\",\"pageSize\":%zu,\"regions\":%zu,\"pages\":%zu,\"bytes\":%zu,"
         "\"threads\":%zu,\"order\":\"%s\",\"write\":%s,\"uffd\":%s,\"ns\":%" PRIu64 ",\"mibps\":%.1f,\"touched\":%zu,"
         "\"verified\":%zu,\"zeroChecked\":%zu,\"mismatches\":%zu,\"peerClosed\":%s,\"pid\":%d,\"allowedCpus\":\"%s\"}\n",
         v->o.protocol, v->page_size, v->o.regions, v->pages, v->pages * v->page_size, v->o.threads,
         v->o.random ? "random" : "sequential", v->o.write ? "true" : "false", v->o.no_uffd ? "false" : "true", ns,
         mibps, done, verified, zero_checked, atomic_load(&v->mismatches), peer, (int)getpid(), cpus);
  fflush(stdout);
}

int main(int argc, char **argv) {
  struct vmm v = { .uffd = -1, .sock = -1 };
  parse_options(argc, argv, &v.o);
  pthread_mutex_init(&v.report_lock, NULL);
  v.file = open(v.o.memory, O_RDONLY | O_CLOEXEC);
  struct stat st;
  if (v.file < 0 || fstat(v.file, &st) < 0) die(EXIT_SETUP, "open %s: %s", v.o.memory, strerror(errno));
  v.file_size = (uint64_t)st.st_size;
  layout(&v);
  if (v.o.balloon && !v.o.balloon_range_given) {
    v.o.balloon_first = v.pages / 4;
    v.o.balloon_count = v.pages / 8 > 0 ? v.pages / 8 : 1;
  }
  if (v.o.balloon && (v.o.balloon_count == 0 || v.o.balloon_first + v.o.balloon_count > v.pages)) {
    die(EXIT_USAGE, "--balloon %zu:%zu is not within the %zu pages", v.o.balloon_first, v.o.balloon_count, v.pages);
  }
  map_memory(&v);
  if (v.o.timeout_ms > 0) start_thread(watchdog, &v);
  if (v.o.touch && v.o.send) { /* before the handshake: Firecracker resumes the vCPUs right after sending it */
    read_expected(&v);
    plan(&v);
  }

  if (!v.o.no_uffd) {
    v.uffd = create_uffd(&v);
    v.sock = connect_socket(&v);
    if (!v.o.send) {
      note(&v, "connected; sending nothing");
      print_result(&v, 0, 0, 0, wait_for_peer(&v));
      return 0;
    }
    struct text payload = { 0 };
    build_payload(&v, &payload);
    note(&v, "payload (%zu bytes): %.*s", payload.len, (int)payload.len, payload.s);
    send_handshake(&v, &payload);
    if (!v.o.keep_socket) {
      close(v.sock); /* Firecracker before 1.12 drops the UnixStream right after the send */
      v.sock = -1;
    }
    free(payload.s);
    if (!v.o.touch) {
      print_result(&v, 0, 0, 0, wait_for_peer(&v));
      return 0;
    }
  }

  if (v.o.delay_touch_ms > 0) sleep_ms(v.o.delay_touch_ms); /* the handler gets a head start (a prefetch) */
  if (v.o.die_after >= 0) start_thread(killer, &v);
  if (pthread_barrier_init(&v.start, NULL, (unsigned)v.o.threads + 1) != 0) die(EXIT_SETUP, "pthread_barrier_init");
  run_workers(&v, toucher);
  pthread_barrier_wait(&v.start);
  join_workers(&v);
  /* From the first thread's start to the last one's end: our own clock reads could come late. */
  uint64_t first = UINT64_MAX, last = 0;
  for (size_t t = 0; t < v.o.threads; t++) {
    if (v.workers[t].started < first) first = v.workers[t].started;
    if (v.workers[t].finished > last) last = v.workers[t].finished;
  }
  uint64_t ns = last - first;
  note(&v, "touched %zu pages in %.3f s", touched(&v), (double)ns / 1e9);
  if (v.o.die_after >= 0) {
    fprintf(stderr, "fake-vmm: dying (SIGKILL) after the run: no fault was outstanding when the count was reached\n");
    kill(getpid(), SIGKILL);
  }

  run_workers(&v, verifier);
  join_workers(&v);
  size_t verified = 0, zero_checked = 0;
  for (size_t t = 0; t < v.o.threads; t++) verified += v.workers[t].verified;

  if (v.o.balloon) {
    if (!v.o.balloon_during) balloon_out(&v);
    /* Removed pages fault again: the handler must answer them with zeros, never the file's content. */
    for (size_t p = v.o.balloon_first; p < v.o.balloon_first + v.o.balloon_count; p++, zero_checked++) check_zero(&v, p);
    if (!v.o.balloon_during) { /* and nothing else changed */
      v.skip_balloon = 1;
      for (size_t t = 0; t < v.o.threads; t++) v.workers[t].verified = 0;
      run_workers(&v, verifier);
      join_workers(&v);
    }
  }
  print_result(&v, ns, verified, zero_checked, "null");
  if (v.o.linger_ms > 0) sleep_ms(v.o.linger_ms); /* still a live client while the handler is looked at */
  return atomic_load(&v.mismatches) == 0 ? 0 : EXIT_MISMATCH;
}
