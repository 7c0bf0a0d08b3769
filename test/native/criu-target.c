// A process for CRIU lazy-restore tests: fills private anonymous memory with a pattern that names each page,
// writes DIR/ready, then waits for DIR/go (the dump happens meanwhile). After the restore it checks its
// memory from inside, page by page, and writes DIR/result-<name>: "ok" or "FAIL: ...". Exit status 0 when
// every check of this process (and its children) passed.
//
// usage: criu-target DIR MODE MIB
//   plain    one process, the memory in three areas (one made read-only: copies must split at area edges)
//   threads  4 threads check their quarter at once
//   fork     2 children forked before the dump, and after the restore each process forks one more; all check
//   remap    during the check: mremap (move) a quarter, munmap one, MADV_DONTNEED one (must read as zeros)
//   slow     one page after the other, 1 ms every 16 pages (for a daemon killed mid-restore)
//   touch    (bench) pages in a scattered order, the first 2048 touches timed one by one; reports
//            "ok touch_ns=T p50_ns=L pages=N", then waits for DIR/stop
//   futex    4 threads hand a token round via futexes that live in lazy pages, while a fifth thread maps
//            and unmaps memory (UNMAP events: copies answer EAGAIN meanwhile); then all check
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL
#define THREADS 4
#define ROUNDS 2000

static const char *dir;
static unsigned char *mem;
static size_t pages;
static char failure[512];
static pthread_mutex_t failure_lock = PTHREAD_MUTEX_INITIALIZER;

static uint64_t word_at(size_t page, size_t k) {
  return (page + 1) * 0x9e3779b97f4a7c15ULL ^ (k * 0xbf58476d1ce4e5b9ULL) ^ 0x5a5a5a5a5a5a5a5aULL;
}

static void fill_page(unsigned char *at, size_t page) {
  uint64_t *w = (uint64_t *)at;
  for (size_t k = 0; k < PAGE / 8; k++) w[k] = word_at(page, k);
}

static void fail(const char *fmt, ...) {
  pthread_mutex_lock(&failure_lock);
  if (failure[0] == 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(failure, sizeof failure, fmt, ap);
    va_end(ap);
  }
  pthread_mutex_unlock(&failure_lock);
}

/** Checks that `at` holds page `page`'s pattern (or zeros, when `zero`). */
static int check_page(const unsigned char *at, size_t page, int zero) {
  const uint64_t *w = (const uint64_t *)at;
  for (size_t k = 0; k < PAGE / 8; k++) {
    uint64_t want = zero ? 0 : word_at(page, k);
    if (w[k] != want) {
      int all_zero = 1;
      for (size_t j = 0; j < PAGE / 8; j++) if (w[j] != 0) all_zero = 0;
      fail("page %zu word %zu: 0x%016llx, expected 0x%016llx%s", page, k, (unsigned long long)w[k], (unsigned long long)want, all_zero ? " (the page is all zeros)" : "");
      return 0;
    }
  }
  return 1;
}

static int check_range(size_t first, size_t end) {
  for (size_t p = first; p < end; p++) if (!check_page(mem + p * PAGE, p, 0)) return 0;
  return 1;
}

static void touch_file(const char *name, const char *text) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) _exit(3);
  size_t n = strlen(text);
  if (write(fd, text, n) != (ssize_t)n) _exit(3);
  close(fd);
  if (rename(tmp, path) != 0) _exit(3);
}

static void wait_for(const char *name) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  struct stat st;
  while (stat(path, &st) != 0) usleep(5000);
}

static int report(const char *name) {
  char text[600];
  snprintf(text, sizeof text, "%s\n", failure[0] == 0 ? "ok" : failure);
  char file[64];
  snprintf(file, sizeof file, "result-%s", name);
  touch_file(file, text);
  return failure[0] == 0 ? 0 : 1;
}

/* ---- threads ---- */
static void *check_quarter(void *arg) {
  size_t i = (size_t)arg;
  check_range(pages * i / THREADS, pages * (i + 1) / THREADS);
  return NULL;
}

static void run_threads(void) {
  pthread_t t[THREADS];
  for (size_t i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, check_quarter, (void *)i);
  for (size_t i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
}

/* ---- futex ---- */
static volatile int stop_mapper;

/** The futex words: one page each in an area of their own, filled like pages `pages`.. before the dump. */
static unsigned char *tokens;

static uint32_t *futex_word(size_t i) {
  return (uint32_t *)(tokens + i * PAGE);
}

static void *token_thread(void *arg) {
  size_t i = (size_t)arg;
  uint32_t *mine = futex_word(i);
  uint32_t *next = futex_word((i + 1) % THREADS);
  for (int r = 0; r < ROUNDS; r++) {
    while (__atomic_load_n(mine, __ATOMIC_ACQUIRE) == 0) syscall(SYS_futex, mine, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
    __atomic_store_n(mine, 0, __ATOMIC_RELEASE);
    __atomic_store_n(next, 1, __ATOMIC_RELEASE);
    syscall(SYS_futex, next, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
  }
  return NULL;
}

static void *mapper_thread(void *arg) {
  (void)arg;
  while (!stop_mapper) {
    void *p = mmap(NULL, 16 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p != MAP_FAILED) {
      memset(p, 1, 16 * PAGE);
      munmap(p, 16 * PAGE);
    }
  }
  return NULL;
}

static void run_futex(void) {
  // The futex pages are checked first (their words become the token), then everything else in parallel.
  for (size_t i = 0; i < THREADS; i++) check_page((unsigned char *)futex_word(i), pages + i, 0);
  for (size_t i = 0; i < THREADS; i++) *futex_word(i) = 0;
  pthread_t mapper, t[THREADS];
  pthread_create(&mapper, NULL, mapper_thread, NULL);
  for (size_t i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, token_thread, (void *)i);
  __atomic_store_n(futex_word(0), 1, __ATOMIC_RELEASE);
  syscall(SYS_futex, futex_word(0), FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
  pthread_t c[THREADS];
  for (size_t i = 0; i < THREADS; i++) pthread_create(&c[i], NULL, check_quarter, (void *)i);
  for (size_t i = 0; i < THREADS; i++) pthread_join(c[i], NULL);
  for (size_t i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
  stop_mapper = 1;
  pthread_join(mapper, NULL);
}

/* ---- remap ---- */
static void run_remap(void) {
  size_t q = pages / 4;
  // Quarter 1 moves elsewhere before any of it is touched: its pages must follow it.
  unsigned char *target = mmap(NULL, q * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  unsigned char *moved = mremap(mem + q * PAGE, q * PAGE, q * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, target);
  if (moved == MAP_FAILED) { fail("mremap: %s", strerror(errno)); return; }
  // Quarter 2's first half is unmapped, its second half dropped (MADV_DONTNEED: zeros from now on).
  if (munmap(mem + 2 * q * PAGE, q / 2 * PAGE) != 0) fail("munmap: %s", strerror(errno));
  if (madvise(mem + (2 * q + q / 2) * PAGE, (q - q / 2) * PAGE, MADV_DONTNEED) != 0) fail("madvise: %s", strerror(errno));
  check_range(0, q);
  for (size_t p = 0; p < q; p++) if (!check_page(moved + p * PAGE, q + p, 0)) break;
  for (size_t p = 2 * q + q / 2; p < 3 * q; p++) if (!check_page(mem + p * PAGE, p, 1)) break;
  check_range(3 * q, pages);
}

/* ---- fork ---- */
/** Forks before touching anything, so the child's lazy pages come through its own uffd; both check. */
static int fork_and_check(const char *name) {
  pid_t child = fork();
  if (child < 0) { fail("fork: %s", strerror(errno)); return 1; }
  if (child == 0) {
    failure[0] = 0;
    check_range(0, pages);
    _exit(report(name));
  }
  check_range(0, pages);
  int status;
  if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0) fail("%s exited with status 0x%x", name, status);
  return 0;
}

/* ---- touch (bench) ---- */
#define SAMPLES 2048

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static int by_value(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static int run_touch(void) {
  static uint64_t lat[SAMPLES];
  size_t stride = 40503; // odd, so i * stride visits every page of a power-of-two count once
  uint64_t start = now_ns();
  size_t n = 0;
  for (size_t i = 0; i < pages; i++) {
    size_t p = (i * stride) % pages;
    uint64_t t = i < SAMPLES ? now_ns() : 0;
    volatile uint64_t w = *(volatile uint64_t *)(mem + p * PAGE);
    if (i < SAMPLES) lat[n++] = now_ns() - t;
    if (w != word_at(p, 0)) fail("page %zu: 0x%016llx", p, (unsigned long long)w);
  }
  uint64_t total = now_ns() - start;
  check_range(0, pages);
  qsort(lat, n, sizeof lat[0], by_value);
  char text[200];
  snprintf(text, sizeof text, "ok touch_ns=%llu p50_ns=%llu pages=%zu", (unsigned long long)total, (unsigned long long)lat[n / 2], pages);
  if (failure[0] == 0) touch_file("result-root", text);
  else report("root");
  wait_for("stop");
  return failure[0] == 0 ? 0 : 1;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: criu-target DIR plain|threads|fork|remap|slow|futex MIB\n");
    return 2;
  }
  dir = argv[1];
  const char *mode = argv[2];
  pages = (size_t)strtoul(argv[3], NULL, 10) * 256;
  if (pages < 16) return 2;
  mem = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return 3;
  for (size_t p = 0; p < pages; p++) fill_page(mem + p * PAGE, p);
  if (strcmp(mode, "plain") == 0) {
    // Three areas: the middle third read-only. A pagemap entry may run across the edges.
    if (mprotect(mem + pages / 3 * PAGE, pages / 3 * PAGE, PROT_READ) != 0) return 3;
  }
  if (strcmp(mode, "futex") == 0) {
    tokens = mmap(NULL, THREADS * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (tokens == MAP_FAILED) return 3;
    for (size_t i = 0; i < THREADS; i++) fill_page(tokens + i * PAGE, pages + i);
  }
  char name[32] = "root";
  if (strcmp(mode, "fork") == 0) {
    for (int i = 0; i < 2; i++) {
      pid_t child = fork();
      if (child < 0) return 3;
      if (child == 0) {
        snprintf(name, sizeof name, "child%d", i);
        char ready[48];
        snprintf(ready, sizeof ready, "ready-%s", name);
        touch_file(ready, "1\n");
        wait_for("go");
        char grandchild[48];
        snprintf(grandchild, sizeof grandchild, "%s-fork", name);
        fork_and_check(grandchild);
        _exit(report(name));
      }
    }
  }
  touch_file("ready", "1\n");
  wait_for("go");
  if (strcmp(mode, "threads") == 0) run_threads();
  else if (strcmp(mode, "futex") == 0) run_futex();
  else if (strcmp(mode, "remap") == 0) run_remap();
  else if (strcmp(mode, "fork") == 0) fork_and_check("root-fork");
  else if (strcmp(mode, "touch") == 0) return run_touch();
  else if (strcmp(mode, "slow") == 0) {
    for (size_t p = 0; p < pages && check_page(mem + p * PAGE, p, 0); p++) if (p % 16 == 15) usleep(1000);
  } else check_range(0, pages);
  if (strcmp(mode, "fork") == 0) {
    int status;
    while (wait(&status) > 0) if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) fail("a child exited with status 0x%x", status);
  }
  return report(name);
}
