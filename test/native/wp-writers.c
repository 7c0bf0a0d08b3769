/* wp-writers: a process whose threads keep writing sequence numbers into its memory, for the dirty-tracking
 * and snapshot tests. The test tracks this process's memory through a uffd this program creates (the test
 * takes it with pidfd_getfd) and reads the memory back through /proc/<pid>/mem.
 *
 *   wp-writers KIND PAGES FEATURES TOUCH
 *     KIND: anon | shmem | shmem-private | hugetlb | hugetlb-private (memfds); PAGES in KIND's page size;
 *     FEATURES: the UFFDIO_API features (hex), only ever what the test's probe offers; TOUCH 1 writes every
 *     page once before reporting ready (memory without WP_UNPOPULATED must be populated to be protected).
 *   -> "ready ADDR PAGESIZE UFFD"
 *
 * Commands, one per line on stdin, each answered by one line:
 *   start THREADS     -> "started"; thread T writes, at a pseudo-random 4 KiB page of the area, the u64
 *                        (N << 8 | T) at byte 8*T, N its own count of writes from 1 (so every write leaves a
 *                        new value). Page N of thread T is xorshift32 step N from seed (T + 1) * 0x9E3779B9,
 *                        modulo the number of 4 KiB pages: a test can replay which page each write hit.
 *   stop              -> "stopped WRITES": the threads finished their last write and were joined
 *   exit
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define UFFD_API 0xAAULL
struct uffd_api_arg { uint64_t api, features, ioctls; };
#define UFFDIO_API_REQ _IOWR(0xAA, 0x3F, struct uffd_api_arg)
#ifndef SYS_userfaultfd
#define SYS_userfaultfd 323
#endif
#define MAX_THREADS 64

static unsigned char *area;
static size_t area_len;
static atomic_int stopping;
static atomic_ullong total_writes;

static void die(const char *what) {
  printf("error %s %d %s\n", what, errno, strerror(errno));
  fflush(stdout);
  exit(1);
}

static size_t huge_page_size(void) {
  FILE *f = fopen("/proc/meminfo", "r");
  char line[256];
  size_t kb = 0;
  if (f == NULL) return 0;
  while (fgets(line, sizeof line, f) != NULL)
    if (sscanf(line, "Hugepagesize: %zu kB", &kb) == 1) break;
  fclose(f);
  return kb * 1024;
}

static void *writer(void *arg) {
  uintptr_t t = (uintptr_t)arg;
  uint64_t n = 0;
  uint32_t x = (uint32_t)(t + 1) * 0x9E3779B9u;
  size_t small_pages = area_len / 4096;
  const struct timespec pause = { 0, 50000 };
  while (!atomic_load_explicit(&stopping, memory_order_relaxed)) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    size_t page = (size_t)x % small_pages;
    volatile uint64_t *slot = (volatile uint64_t *)(area + page * 4096 + 8 * t);
    *slot = (++n << 8) | t;
    /* Leave CPU to the tracker and the other tests on this 2-vCPU machine: a short sleep every 16 writes. */
    if ((n & 15) == 0) nanosleep(&pause, NULL);
  }
  atomic_fetch_add(&total_writes, n);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: wp-writers KIND PAGES FEATURES TOUCH\n");
    return 2;
  }
  const char *kind = argv[1];
  size_t pages = strtoull(argv[2], NULL, 0);
  uint64_t features = strtoull(argv[3], NULL, 16);
  int touch = atoi(argv[4]);
  int hugetlb = strncmp(kind, "hugetlb", 7) == 0;
  int is_private = strcmp(kind, "anon") == 0 || strstr(kind, "-private") != NULL;
  size_t page_size = hugetlb ? huge_page_size() : 4096;
  if (page_size == 0) die("hugepagesize");
  area_len = pages * page_size;
  int fd = -1;
  if (strcmp(kind, "anon") == 0) {
    area = mmap(NULL, area_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  } else {
    fd = memfd_create(kind, MFD_CLOEXEC | (hugetlb ? MFD_HUGETLB : 0));
    if (fd < 0 || ftruncate(fd, (off_t)area_len) < 0) die("memfd");
    area = mmap(NULL, area_len, PROT_READ | PROT_WRITE, (is_private ? MAP_PRIVATE : MAP_SHARED) | MAP_NORESERVE, fd, 0);
  }
  if (area == MAP_FAILED) die("mmap");
  if (touch)
    for (size_t off = 0; off < area_len; off += 4096) area[off] = 0;
  int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
  if (uffd < 0) die("userfaultfd");
  struct uffd_api_arg api = { UFFD_API, features, 0 };
  if (ioctl(uffd, UFFDIO_API_REQ, &api) < 0) die("UFFDIO_API");
  printf("ready 0x%lx %zu %d\n", (unsigned long)(uintptr_t)area, page_size, uffd);
  fflush(stdout);

  pthread_t threads[MAX_THREADS];
  int running = 0;
  char line[128];
  while (fgets(line, sizeof line, stdin) != NULL) {
    int count;
    if (sscanf(line, "start %d", &count) == 1 && running == 0 && count > 0 && count <= MAX_THREADS) {
      atomic_store(&stopping, 0);
      atomic_store(&total_writes, 0);
      for (int t = 0; t < count; t++)
        if (pthread_create(&threads[t], NULL, writer, (void *)(uintptr_t)t) != 0) die("pthread_create");
      running = count;
      printf("started\n");
    } else if (strncmp(line, "stop", 4) == 0) {
      atomic_store(&stopping, 1);
      for (int t = 0; t < running; t++) pthread_join(threads[t], NULL);
      running = 0;
      printf("stopped %llu\n", (unsigned long long)atomic_load(&total_writes));
    } else if (strncmp(line, "exit", 4) == 0) {
      return 0;
    } else {
      printf("error command %s", line);
    }
    fflush(stdout);
  }
  return 0;
}
