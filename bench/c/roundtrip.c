// Fault round trip, the C reference for bench/js/roundtrip.ts: the same job and the same one-line JSON
// output, so the runner can compare them.
//
// The main thread reads one u32 per 4 KiB page of a MISSING-registered private anonymous mapping, timing
// every read. A handler pthread polls the uffd, reads the fault message and resolves it with UFFDIO_COPY of
// a page filled with 0x5a whose first 4 bytes hold the page index (the main thread checks them).
//
// usage: roundtrip FAULTS WARMUP
// The installed <linux/userfaultfd.h> (6.1) has everything used here: API, REGISTER, COPY, WAKE.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL
#define FILL 0x5a
#define BATCH 64 // messages per read(), as the JS side's uffd.read()

struct handler {
  int uffd;
  int stop; // eventfd: the main thread is done
  uint64_t base;
  uint64_t served;
  uint32_t *page; // the source page, outside the registered range
};

static void die(const char *what) {
  fprintf(stderr, "roundtrip: %s: %s\n", what, strerror(errno));
  exit(1);
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

static void resolve(struct handler *h, uint64_t address) {
  h->page[0] = (uint32_t)((address - h->base) / PAGE);
  struct uffdio_copy copy = { .dst = address, .src = (uintptr_t)h->page, .len = PAGE, .mode = 0, .copy = 0 };
  if (ioctl(h->uffd, UFFDIO_COPY, &copy) < 0) {
    // Two messages for one page (a signal during the fault) find it present: wake the faulter instead.
    if (errno != EEXIST) die("UFFDIO_COPY");
    struct uffdio_range range = { .start = address, .len = PAGE };
    if (ioctl(h->uffd, UFFDIO_WAKE, &range) < 0) die("UFFDIO_WAKE");
  }
  h->served++;
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
      if (msgs[i].event == UFFD_EVENT_PAGEFAULT) resolve(h, msgs[i].arg.pagefault.address);
    }
  }
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts); // what process.hrtime.bigint() reads (uv_hrtime)
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

// One read per page, each timed; returns how many pages did not hold their index.
static size_t touch(const volatile uint32_t *words, size_t first, size_t count, double *samples) {
  size_t mismatches = 0;
  for (size_t page = first; page < first + count; page++) {
    uint64_t t0 = now_ns();
    uint32_t word = words[page * (PAGE / sizeof *words)];
    uint64_t t1 = now_ns();
    samples[page] = (double)(t1 - t0);
    if (word != (uint32_t)page) mismatches++;
  }
  return mismatches;
}

static int compare(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

// Nearest rank, the same formula as the JS side.
static double percentile(const double *sorted, size_t n, double q) {
  return sorted[(size_t)ceil(q * (double)n) - 1];
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

static size_t count_arg(const char *arg) {
  char *end;
  unsigned long long value = strtoull(arg, &end, 10);
  if (*arg == '\0' || *end != '\0' || value == 0) {
    fprintf(stderr, "roundtrip: expected a positive integer, got '%s'\n", arg);
    exit(2);
  }
  return (size_t)value;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s FAULTS WARMUP\n", argv[0]);
    return 2;
  }
  size_t faults = count_arg(argv[1]), warmup = count_arg(argv[2]), pages = warmup + faults;

  int uffd = open_uffd();
  void *memory = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (memory == MAP_FAILED) die("mmap");
  struct uffdio_register reg = { .range = { .start = (uintptr_t)memory, .len = pages * PAGE }, .mode = UFFDIO_REGISTER_MODE_MISSING };
  if (ioctl(uffd, UFFDIO_REGISTER, &reg) < 0) die("UFFDIO_REGISTER");

  struct handler h = { .uffd = uffd, .base = (uintptr_t)memory };
  h.stop = eventfd(0, EFD_CLOEXEC);
  if (h.stop < 0) die("eventfd");
  if (posix_memalign((void **)&h.page, PAGE, PAGE) != 0) die("posix_memalign");
  memset(h.page, FILL, PAGE);
  // Written now so that the sample array's own page faults stay out of the timed loop (as on the JS side).
  double *samples = malloc(pages * sizeof *samples);
  if (samples == NULL) die("malloc");
  for (size_t i = 0; i < pages; i++) samples[i] = -1;

  pthread_t thread;
  int err = pthread_create(&thread, NULL, handle, &h);
  if (err != 0) {
    errno = err;
    die("pthread_create");
  }

  size_t mismatches = touch(memory, 0, warmup, samples);
  uint64_t start = now_ns();
  mismatches += touch(memory, warmup, faults, samples);
  uint64_t total = now_ns() - start;

  if (eventfd_write(h.stop, 1) < 0) die("eventfd_write");
  pthread_join(thread, NULL);

  double *measured = samples + warmup;
  qsort(measured, faults, sizeof *measured, compare);
  char cpus[128];
  allowed_cpus(cpus, sizeof cpus);
  printf("{\"side\":\"c\",\"faults\":%zu,\"warmup\":%zu,\"totalNs\":%llu,\"p50Ns\":%.0f,\"p99Ns\":%.0f,"
         "\"mismatches\":%zu,\"served\":%llu,\"allowedCpus\":\"%s\"}\n",
         faults, warmup, (unsigned long long)total, percentile(measured, faults, 0.5), percentile(measured, faults, 0.99),
         mismatches, (unsigned long long)h.served, cpus);
  return 0;
}
