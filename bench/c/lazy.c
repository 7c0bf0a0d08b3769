// Lazy file memory, the C reference for bench/js/lazy.ts: the same job, the same touch loop and the same
// one-line JSON output, so the runner (bench/lazy.ts) can compare them.
//
// handler: the main thread reads one 8-byte word per 4 KiB page of a MISSING-registered private anonymous
//   mapping as long as the file, in the given page order. A handler pthread does what LazyMemory's resolver
//   worker does (PageFiller.fault() in src/fill/page-filler.ts, formerly src/lazy/resolver.ts), step for
//   step: poll + read a batch of messages; per fault, ask the read-ahead policy for a window; UFFDIO_COPY with
//   DONTWAKE the faulting page and the missing pages after it, then each further run of missing pages in the
//   window (at most 1 MiB per copy), straight from a read-only mmap of the file; a page found present
//   (EEXIST) is marked and skipped; then one UFFDIO_WAKE for the whole window.
// mmap: the same touch loop over a read-only private mmap of the file: the kernel's own page cache mapping.
// The first WARMUP pages in touch order are touched untimed; the rest is timed.
//
// usage: lazy handler FILE seq|rand WARMUP READAHEAD    READAHEAD: a page count, or auto
//        lazy mmap FILE seq|rand WARMUP
// The installed <linux/userfaultfd.h> (6.1) has everything used here: API, REGISTER, COPY, WAKE.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL
#define BATCH 64                  // messages per read(), as Userfaultfd.read()'s default
#define MAX_RUN ((1UL << 20) / PAGE) // pages per UFFDIO_COPY at most, as PageFiller's MAX_RUN_BYTES
#define SEED 0x5eed1a2fu          // the page-order shuffle, as bench/js/lazy-common.ts

static void die(const char *what) {
  fprintf(stderr, "lazy: %s: %s\n", what, strerror(errno));
  exit(1);
}

// ---- read-ahead: src/policy/readahead.ts, fixedReadahead() and autoReadahead() (initial 4, max 256) ----

struct policy {
  int automatic;
  uint64_t window, max;
  int64_t expected, last_start;
};

static uint64_t policy_next(struct policy *p, int64_t page) {
  if (!p->automatic) return p->window;
  int sequential = page == p->expected || (page > p->last_start && page < p->expected);
  if (sequential) p->window = p->window * 2 < p->max ? p->window * 2 : p->max;
  else p->window = p->window >> 1 > 1 ? p->window >> 1 : 1;
  p->last_start = page;
  p->expected = page + (int64_t)p->window;
  return p->window;
}

// ---- the handler: src/fill/page-filler.ts, PageFiller.fault() ----

struct handler {
  int uffd;
  int stop; // eventfd: the main thread is done
  uint64_t base;
  size_t pages;
  uint8_t *served; // one byte per page, as PageFiller's #served (no REMOVED state: no remove events here)
  const uint8_t *source; // the read-only mapping of the file
  struct policy policy;
  uint64_t faults, copied_pages, copies, eexist;
};

// Userfaultfd.copy(): partial progress (EAGAIN with a positive count) is continued; returns 0 or the errno
// of the first real error, with *done = bytes copied before it.
static int copy_range(struct handler *h, uint64_t dst, const uint8_t *src, uint64_t len, uint64_t *done) {
  *done = 0;
  for (;;) {
    struct uffdio_copy copy = {
      .dst = dst + *done, .src = (uintptr_t)(src + *done), .len = len - *done, .mode = UFFDIO_COPY_MODE_DONTWAKE, .copy = 0,
    };
    h->copies++;
    if (ioctl(h->uffd, UFFDIO_COPY, &copy) == 0) {
      *done = len;
      return 0;
    }
    int err = errno;
    if (err == EAGAIN && copy.copy > 0 && *done + (uint64_t)copy.copy <= len) {
      *done += (uint64_t)copy.copy;
      if (*done == len) return 0;
      continue;
    }
    return err;
  }
}

static void mark_served(struct handler *h, size_t start, size_t end) {
  memset(h->served + start, 1, end - start);
  h->copied_pages += end - start;
}

// PageFiller.#fillRun(): copies pages [start, end) without waking; a present page is marked and skipped.
static size_t fill_run(struct handler *h, size_t start, size_t end) {
  size_t page = start;
  while (page < end) {
    uint64_t done;
    int err = copy_range(h, h->base + page * PAGE, h->source + page * PAGE, (end - page) * PAGE, &done);
    size_t n = (size_t)(done / PAGE);
    mark_served(h, page, page + n);
    if (err == 0) return end - start;
    if (err != EEXIST) {
      errno = err;
      die("UFFDIO_COPY");
    }
    h->eexist++;
    h->served[page + n] = 1; // already present: never overwritten
    page += n + 1;
  }
  return end - start;
}

static void fault(struct handler *h, uint64_t address) {
  if (address < h->base) return;
  size_t page = (size_t)((address - h->base) / PAGE);
  if (page >= h->pages) return;
  __atomic_fetch_add(&h->faults, 1, __ATOMIC_RELEASE);
  uint64_t want = policy_next(&h->policy, (int64_t)page);
  size_t end = page + (want > 1 ? want : 1);
  if (end > h->pages) end = h->pages;
  // The faulting page is served even if marked (a MADV_DONTNEED can empty it again), with the missing pages
  // right after it in the same copy.
  size_t demand_end = page + 1;
  while (demand_end < end && !h->served[demand_end] && demand_end - page < MAX_RUN) demand_end++;
  size_t next = page + fill_run(h, page, demand_end);
  while (next < end) {
    if (h->served[next]) {
      next++;
      continue;
    }
    size_t run_end = next + 1;
    while (run_end < end && !h->served[run_end] && run_end - next < MAX_RUN) run_end++;
    fill_run(h, next, run_end);
    next = run_end;
  }
  struct uffdio_range range = { .start = h->base + page * PAGE, .len = (end - page) * PAGE };
  if (ioctl(h->uffd, UFFDIO_WAKE, &range) < 0) die("UFFDIO_WAKE");
}

static void *handle(void *arg) {
  struct handler *h = arg;
  struct uffd_msg msgs[BATCH];
  struct pollfd fds[2] = { { .fd = h->uffd, .events = POLLIN }, { .fd = h->stop, .events = POLLIN } };
  for (;;) {
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      die("poll");
    }
    if (fds[1].revents != 0) return NULL;
    ssize_t n = read(h->uffd, msgs, sizeof msgs);
    if (n < 0) {
      if (errno == EAGAIN) continue;
      die("read");
    }
    for (size_t i = 0; i < (size_t)n / sizeof msgs[0]; i++) {
      if (msgs[i].event == UFFD_EVENT_PAGEFAULT) fault(h, msgs[i].arg.pagefault.address);
    }
  }
}

// Like Userfaultfd.open() with via 'auto': the syscall, then /dev/userfaultfd when the syscall is refused.
static int open_uffd(void) {
  int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
  if (fd < 0 && errno == EPERM) {
    int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
    if (dev < 0) die("open /dev/userfaultfd");
    fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
    close(dev);
  }
  if (fd < 0) die("userfaultfd");
  struct uffdio_api api = { .api = UFFD_API, .features = 0 };
  if (ioctl(fd, UFFDIO_API, &api) < 0) die("UFFDIO_API");
  return fd;
}

// ---- the touch loop and the file's contents: bench/js/lazy-common.ts ----

// mulberry32: the same 32-bit generator as the JS side, so both shuffle the pages the same way.
static uint32_t next_random(uint32_t *state) {
  uint32_t t = (*state += 0x6d2b79f5u);
  t = (t ^ (t >> 15)) * (t | 1u);
  t ^= t + (t ^ (t >> 7)) * (t | 61u);
  return t ^ (t >> 14);
}

static uint32_t *page_order(size_t pages, int random) {
  uint32_t *order = malloc(pages * sizeof *order);
  if (order == NULL) die("malloc");
  for (size_t i = 0; i < pages; i++) order[i] = (uint32_t)i;
  if (!random) return order;
  uint32_t state = SEED;
  for (size_t i = pages - 1; i > 0; i--) { // Fisher-Yates
    size_t j = next_random(&state) % (uint32_t)(i + 1);
    uint32_t t = order[i];
    order[i] = order[j];
    order[j] = t;
  }
  return order;
}

// The u64 word at byte offset 8w of the file: low half w, high half a hash of w.
static uint32_t pattern_high(uint32_t w) {
  return (w * 0x9e3779b1u) ^ 0x5a5a5a5au;
}

struct touched {
  uint32_t checksum;
  size_t mismatches;
};

// One 8-byte word per page for the pages order[from..to), at a different offset in each page (word p mod 512
// of page p), checked against the pattern and folded into an order-dependent checksum (FNV-1a steps over its
// two halves), continuing from r.
static struct touched touch(const volatile uint64_t *words, const uint32_t *order, size_t from, size_t to, struct touched r) {
  for (size_t i = from; i < to; i++) {
    uint32_t p = order[i];
    uint32_t w = p * 512u + (p & 511u);
    uint64_t word = words[w];
    uint32_t lo = (uint32_t)word, hi = (uint32_t)(word >> 32);
    if (lo != w || hi != pattern_high(w)) r.mismatches++;
    r.checksum = (r.checksum ^ lo) * 16777619u;
    r.checksum = (r.checksum ^ hi) * 16777619u;
  }
  return r;
}

// ---- reporting ----

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts); // what process.hrtime.bigint() reads (uv_hrtime)
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

struct usage {
  long minor_faults;
  uint64_t cpu_ns; // user + system, all threads
};

static struct usage usage_now(void) {
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) < 0) die("getrusage");
  uint64_t us = (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000u + (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
  return (struct usage){ .minor_faults = ru.ru_minflt, .cpu_ns = us * 1000u };
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

// Pages of the file in the page cache (mincore on its mapping): the runner checks the cache stayed warm.
static size_t cached_pages(const void *mapping, size_t pages) {
  unsigned char *vec = malloc(pages);
  if (vec == NULL) die("malloc");
  if (mincore((void *)mapping, pages * PAGE, vec) < 0) die("mincore");
  size_t n = 0;
  for (size_t i = 0; i < pages; i++) n += vec[i] & 1;
  free(vec);
  return n;
}

static void usage(const char *argv0) {
  fprintf(stderr, "usage: %s handler FILE seq|rand WARMUP READAHEAD(pages|auto)\n       %s mmap FILE seq|rand WARMUP\n", argv0, argv0);
  exit(2);
}

int main(int argc, char **argv) {
  if (argc < 5) usage(argv[0]);
  int handler_mode = strcmp(argv[1], "handler") == 0;
  if (!handler_mode && strcmp(argv[1], "mmap") != 0) usage(argv[0]);
  if (handler_mode ? argc != 6 : argc != 5) usage(argv[0]);
  const char *path = argv[2];
  int random = strcmp(argv[3], "rand") == 0;
  if (!random && strcmp(argv[3], "seq") != 0) usage(argv[0]);
  struct policy policy = { .automatic = 0, .window = 1, .max = 256, .expected = -1, .last_start = -1 };
  char *end;
  unsigned long long warmup = strtoull(argv[4], &end, 10);
  if (*argv[4] == '\0' || *end != '\0') usage(argv[0]);
  if (handler_mode) {
    if (strcmp(argv[5], "auto") == 0) {
      policy.automatic = 1;
      policy.window = 4;
    } else {
      unsigned long n = strtoul(argv[5], &end, 10);
      if (*argv[5] == '\0' || *end != '\0' || n == 0 || n > 65536) usage(argv[0]);
      policy.window = n;
    }
  }

  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) die("open");
  struct stat st;
  if (fstat(fd, &st) < 0) die("fstat");
  if (st.st_size <= 0 || st.st_size % (off_t)PAGE != 0) {
    fprintf(stderr, "lazy: %s must be a positive multiple of %lu bytes\n", path, PAGE);
    return 2;
  }
  size_t length = (size_t)st.st_size, pages = length / PAGE;
  if (warmup >= pages) usage(argv[0]);
  // As Mapping.file(): read-only, private.
  const uint8_t *file = mmap(NULL, length, PROT_READ, MAP_PRIVATE, fd, 0);
  if (file == MAP_FAILED) die("mmap file");
  close(fd);
  size_t cached = cached_pages(file, pages);
  uint32_t *order = page_order(pages, random);

  struct handler h = { .uffd = -1, .pages = pages, .source = file, .policy = policy };
  pthread_t thread;
  const volatile uint64_t *words = (const volatile uint64_t *)file;
  if (handler_mode) {
    h.uffd = open_uffd();
    void *memory = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (memory == MAP_FAILED) die("mmap");
    struct uffdio_register reg = { .range = { .start = (uintptr_t)memory, .len = length }, .mode = UFFDIO_REGISTER_MODE_MISSING };
    if (ioctl(h.uffd, UFFDIO_REGISTER, &reg) < 0) die("UFFDIO_REGISTER");
    h.base = (uintptr_t)memory;
    h.served = calloc(pages, 1);
    if (h.served == NULL) die("calloc");
    h.stop = eventfd(0, EFD_CLOEXEC);
    if (h.stop < 0) die("eventfd");
    int err = pthread_create(&thread, NULL, handle, &h);
    if (err != 0) {
      errno = err;
      die("pthread_create");
    }
    words = memory;
  }

  uint64_t warming = now_ns();
  struct touched r = touch(words, order, 0, warmup, (struct touched){ .checksum = 2166136261u, .mismatches = 0 });
  uint64_t warmup_ns = now_ns() - warming;
  uint64_t warm_faults = __atomic_load_n(&h.faults, __ATOMIC_ACQUIRE);
  struct usage before = usage_now();
  uint64_t start = now_ns();
  r = touch(words, order, warmup, pages, r);
  uint64_t touch_ns = now_ns() - start;
  struct usage after = usage_now();
  long minor = after.minor_faults - before.minor_faults;

  if (handler_mode) {
    if (eventfd_write(h.stop, 1) < 0) die("eventfd_write");
    pthread_join(thread, NULL);
  }
  char cpus[128];
  allowed_cpus(cpus, sizeof cpus);
  // faults: those of the timed part (uffd faults served, or minor faults for mmap); pagesCopied: the whole run.
  uint64_t faults = handler_mode ? h.faults - warm_faults : (uint64_t)minor;
  printf("{\"side\":\"c\",\"mode\":\"%s\",\"order\":\"%s\",\"readahead\":\"%s\",\"bytes\":%zu,\"warmupPages\":%llu,"
         "\"warmupNs\":%llu,\"touchNs\":%llu,\"timedBytes\":%llu,\"cpuNs\":%llu,\"checksum\":%u,\"mismatches\":%zu,"
         "\"faults\":%llu,\"pagesCopied\":%llu,\"copies\":%llu,\"eexist\":%llu,\"cachedPages\":%zu,\"allowedCpus\":\"%s\"}\n",
         handler_mode ? "handler" : "mmap", random ? "rand" : "seq", handler_mode ? argv[5] : "-", length, warmup,
         (unsigned long long)warmup_ns, (unsigned long long)touch_ns, (unsigned long long)((pages - warmup) * PAGE),
         (unsigned long long)(after.cpu_ns - before.cpu_ns), r.checksum, r.mismatches, (unsigned long long)faults,
         (unsigned long long)h.copied_pages, (unsigned long long)h.copies, (unsigned long long)h.eexist, cached, cpus);
  return 0;
}
