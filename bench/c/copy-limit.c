// The copy limit of this machine: UFFDIO_COPY in large chunks from a read-only, populated mapping of the
// memory file into fresh MISSING-registered anonymous memory (4 KiB pages, or 2 MiB hugetlb pages with
// --hugetlb), no faults and no messages: the bandwidth no page server can beat, measured in the same run as
// the servers (bench/serve.ts).
//
// usage: copy-limit --memory FILE [--chunk BYTES] [--hugetlb]
//   --chunk BYTES  bytes per UFFDIO_COPY (default 2 MiB; a multiple of the page size)
// stdout: {"tool":"copy-limit","mibps":M,"bytes":N,"chunk":C,"pageSize":P,"allowedCpus":"0"}
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define HUGE_PAGE (2UL << 20)

static void die(const char *what) {
  fprintf(stderr, "copy-limit: %s: %s\n", what, strerror(errno));
  exit(1);
}

static double now_seconds(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void allowed_cpus(char *out, size_t size) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  snprintf(out, size, "?");
  if (f == NULL) return;
  while (fgets(line, sizeof line, f) != NULL) {
    if (strncmp(line, "Cpus_allowed_list:", 18) == 0 && sscanf(line + 18, "%127s", out) == 1) break;
  }
  fclose(f);
}

int main(int argc, char **argv) {
  const char *path = NULL;
  size_t chunk = HUGE_PAGE;
  int hugetlb = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--memory") == 0 && i + 1 < argc) path = argv[++i];
    else if (strcmp(argv[i], "--chunk") == 0 && i + 1 < argc) chunk = strtoul(argv[++i], NULL, 10);
    else if (strcmp(argv[i], "--hugetlb") == 0) hugetlb = 1;
    else {
      fprintf(stderr, "usage: copy-limit --memory FILE [--chunk BYTES] [--hugetlb]\n");
      return 2;
    }
  }
  size_t page = hugetlb ? HUGE_PAGE : (size_t)sysconf(_SC_PAGESIZE);
  if (path == NULL || chunk == 0 || chunk % page != 0) {
    fprintf(stderr, "usage: copy-limit --memory FILE [--chunk BYTES, a multiple of the page size] [--hugetlb]\n");
    return 2;
  }
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) die("open");
  struct stat st;
  if (fstat(fd, &st) != 0) die("fstat");
  size_t length = (size_t)st.st_size / page * page;
  if (length == 0) {
    fprintf(stderr, "copy-limit: %s is smaller than one page\n", path);
    return 2;
  }
  const uint8_t *source = mmap(NULL, length, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
  if (source == MAP_FAILED) die("mmap of the memory file");
  uint8_t *memory = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | (hugetlb ? MAP_HUGETLB : MAP_NORESERVE), -1, 0);
  if (memory == MAP_FAILED) die("mmap of the destination");
  int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
  if (uffd < 0) die("userfaultfd");
  struct uffdio_api api = { .api = UFFD_API };
  if (ioctl(uffd, UFFDIO_API, &api) != 0) die("UFFDIO_API");
  struct uffdio_register reg = { .range = { .start = (uintptr_t)memory, .len = length }, .mode = UFFDIO_REGISTER_MODE_MISSING };
  if (ioctl(uffd, UFFDIO_REGISTER, &reg) != 0) die("UFFDIO_REGISTER");

  double start = now_seconds();
  for (size_t done = 0; done < length;) {
    size_t n = length - done < chunk ? length - done : chunk;
    struct uffdio_copy c = { .dst = (uintptr_t)(memory + done), .src = (uintptr_t)(source + done), .len = n, .mode = UFFDIO_COPY_MODE_DONTWAKE };
    if (ioctl(uffd, UFFDIO_COPY, &c) != 0 && !(errno == EAGAIN && c.copy > 0)) die("UFFDIO_COPY");
    done += c.copy > 0 ? (size_t)c.copy : n;
  }
  double seconds = now_seconds() - start;
  if (memcmp(memory, source, length) != 0) {
    fprintf(stderr, "copy-limit: the copy differs from the file\n");
    return 1;
  }
  char cpus[128];
  allowed_cpus(cpus, sizeof cpus);
  printf("{\"tool\":\"copy-limit\",\"mibps\":%.1f,\"bytes\":%zu,\"chunk\":%zu,\"pageSize\":%zu,\"allowedCpus\":\"%s\"}\n",
         (double)length / (1 << 20) / seconds, length, chunk, page, cpus);
  return 0;
}
