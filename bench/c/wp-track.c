/* The C reference for bench/track.ts: dirty-page tracking the classic way, mprotect + SIGSEGV. Every page is
 * made read-only; the first write to a page traps, the handler records the page and makes it writable again.
 * Prints one JSON line: the cost per tracked write against a plain write to the same populated memory.
 *
 *   wp-track PAGES ROUNDS
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static unsigned char *area;
static size_t pages;
static uint8_t *dirty;

static void on_segv(int sig, siginfo_t *si, void *ctx) {
  (void)sig;
  (void)ctx;
  uintptr_t page = ((uintptr_t)si->si_addr - (uintptr_t)area) / 4096;
  if (page >= pages) abort();
  dirty[page] = 1;
  mprotect(area + page * 4096, 4096, PROT_READ | PROT_WRITE);
}

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static double write_all(unsigned char value) {
  double start = now_ns();
  for (size_t p = 0; p < pages; p++) ((volatile unsigned char *)area)[p * 4096] = value;
  return (now_ns() - start) / (double)pages;
}

int main(int argc, char **argv) {
  pages = argc > 1 ? strtoull(argv[1], NULL, 0) : 16384;
  int rounds = argc > 2 ? atoi(argv[2]) : 5;
  area = mmap(NULL, pages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  dirty = calloc(pages, 1);
  if (area == MAP_FAILED || dirty == NULL) return 1;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_segv;
  sa.sa_flags = SA_SIGINFO;
  sigaction(SIGSEGV, &sa, NULL);
  double plain = 1e300, tracked = 1e300;
  size_t seen = 0;
  for (int r = 0; r < rounds; r++) {
    double p = write_all((unsigned char)r);
    if (p < plain) plain = p;
    memset(dirty, 0, pages);
    mprotect(area, pages * 4096, PROT_READ);
    double t = write_all((unsigned char)(r + 1));
    if (t < tracked) tracked = t;
    seen = 0;
    for (size_t i = 0; i < pages; i++) seen += dirty[i];
  }
  printf("{\"side\":\"c-mprotect\",\"pages\":%zu,\"plainNsPerPage\":%.1f,\"trackedNsPerPage\":%.1f,\"dirtySeen\":%zu}\n", pages, plain, tracked, seen);
  return seen == pages ? 0 : 2;
}
