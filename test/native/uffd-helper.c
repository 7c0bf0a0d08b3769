/* uffd-helper: a native peer process for the userfaultfd tests.
 *
 * The tests need what Node cannot do in its own process: fork(), a SIGBUS handler, threads that block in a
 * page fault while the test's event loop resolves it, and madvise/mremap/munmap calls that block until a
 * monitor reads the event they raise. This program does those on command; the test is the monitor. It owns
 * the memory (every address below is in this process), creates the uffd itself, and the test copies that fd
 * out with pidfd_getfd(2) (we are its parent and root), then tells us to close our copy so that the test
 * holds the last descriptor.
 *
 * Protocol: one command per line on stdin; numbers are decimal or 0x-hex; addresses are printed in hex.
 * Every command gets exactly one reply line, "ok <cmd> [values]" or "err <cmd> <errno> <text>", sent once
 * the command has been carried out, or, for the asynchronous ones (marked *), once its thread runs.
 * Asynchronous work reports later with lines that start with a word and the command's TAG:
 *   tid TAG I TID          thread I of the job started (printed before it touches anything)
 *   sigbus TAG I ADDR      thread I took SIGBUS at ADDR (si_addr) and went on with its next page
 *   done TAG ...           the job finished (fields per command)
 *
 *   uffd FEATURES                 userfaultfd(O_CLOEXEC|O_NONBLOCK) + UFFDIO_API(FEATURES) -> ok uffd FD
 *   close-uffd                    close our copy of the uffd
 *   map ID KIND PAGES             KIND: anon | shmem | shmem-private | hugetlb | hugetlb-private (memfds)
 *                                 -> ok map ID ADDR PAGESIZE MEMFD   (MEMFD -1 for anon)
 *   register ID MODE              UFFDIO_REGISTER the whole map (MODE 1 missing, 2 wp, 4 minor) -> ok register IOCTLS
 *   unregister ID
 *   touch* TAG ID PAGE PAGES THREADS OFFSET r|w [VALUE]
 *                                 thread I accesses byte OFFSET of pages [PAGE + I*PAGES, PAGE + (I+1)*PAGES),
 *                                 reading it or writing VALUE, then sums every byte of the page
 *                                 -> done TAG SUM SIGBUSES
 *   madvise* TAG ID PAGE PAGES dontneed|remove   -> tid TAG 0 TID; done TAG RESULT (0 or -errno)
 *   munmap* TAG ID PAGE PAGES                    -> tid TAG 0 TID; done TAG RESULT
 *   mremap* TAG ID                               moves the whole map to a new address (later commands
 *                                                on ID use it) -> tid TAG 0 TID; done TAG RESULT NEWADDR
 *   fork* TAG ID PAGE             the child reads page PAGE, prints "child TAG PID SUM PAGEMAP" (the page's
 *                                 /proc/self/pagemap entry before the read) and exits
 *                                 -> tid TAG 0 TID; forked TAG PID (fork returned); done TAG WAITSTATUS
 *   bounce-init DST SRC           page p of SRC (in DST's page size): a pthread mutex at 0, the counter p + 1
 *                                 at COUNTER_OFFSET; SRC is what the monitor serves DST's faults from
 *   bounce* TAG DST THREADS OPS SEED
 *                                 one round of a uffd-stress style bounce: THREADS threads each do OPS times
 *                                 "lock the mutex of a random page of DST, check its counter, bump it";
 *                                 then every counter of DST is checked (all pages fault in)
 *                                 -> done TAG TOTAL MISMATCHES  (TOTAL = sum of all counters)
 *   bounce-swap DST SRC           copies DST to SRC, then empties DST (DONTNEED, or REMOVE for shared memory)
 *                                 so that the next round faults again and the monitor serves it from SRC
 *   signal TID                    tgkill(SIGUSR1) with a no-op handler: a thread blocked in a fault retries it
 *   exit CODE
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* Our own uapi: the build machine's <linux/userfaultfd.h> (Debian 12: 6.1) is older than the kernels we test. */
#define UFFD_API 0xAAULL
struct uffd_api_arg { uint64_t api, features, ioctls; };
struct uffd_range_arg { uint64_t start, len; };
struct uffd_register_arg { struct uffd_range_arg range; uint64_t mode, ioctls; };
#define UFFDIO_REGISTER_REQ _IOWR(0xAA, 0x00, struct uffd_register_arg)
#define UFFDIO_UNREGISTER_REQ _IOR(0xAA, 0x01, struct uffd_range_arg)
#define UFFDIO_API_REQ _IOWR(0xAA, 0x3F, struct uffd_api_arg)
#ifndef SYS_userfaultfd
#define SYS_userfaultfd 323
#endif

#define MAX_MAPS 16
#define COUNTER_OFFSET 64 /* past the pthread_mutex_t (40 bytes on x86_64 glibc) */

struct map {
  int used;
  uintptr_t addr;
  size_t pages, page_size;
  int memfd;
  int shared;
};

static struct map maps[MAX_MAPS];
static int uffd = -1;
static uint64_t *bounce_expected; /* counter values the bounce threads expect, outside registered memory */
static size_t bounce_pages;

/* One write(2) per line: a pipe write of less than PIPE_BUF bytes is atomic, so lines from several threads
 * never interleave, and unlike a mutex (or stdio's lock) this is safe in a child forked from a thread. */
__attribute__((format(printf, 1, 2))) static void say(const char *fmt, ...) {
  char line[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof line - 1, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if ((size_t)n > sizeof line - 2) n = (int)sizeof line - 2;
  line[n++] = '\n';
  for (int off = 0; off < n;) {
    ssize_t w = write(STDOUT_FILENO, line + off, (size_t)(n - off));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) _exit(3); /* the test is gone */
    off += (int)w;
  }
}

static pid_t gettid_(void) { return (pid_t)syscall(SYS_gettid); }

/* SIGBUS: a thread arms a jump buffer around its access; a SIGBUS outside one is a real crash. volatile: the
 * handler reads them, so the compiler must neither drop nor move the stores around the access. */
static __thread sigjmp_buf *volatile bus_jump;
static __thread void *volatile bus_addr;

static void on_sigbus(int sig, siginfo_t *si, void *ctx) {
  (void)ctx;
  if (bus_jump == NULL) {
    signal(sig, SIG_DFL); /* returning re-executes the access and dies with the default action */
    return;
  }
  bus_addr = si->si_addr;
  siglongjmp(*bus_jump, 1);
}

static void on_sigusr1(int sig) { (void)sig; } /* only interrupts: the faulting access is retried */

/* ---- argument parsing ---- */

static char *next_token(char **save) { return strtok_r(NULL, " \t\r\n", save); }

static int parse_u64(char **save, uint64_t *out) {
  char *tok = next_token(save), *end;
  if (tok == NULL) return -1;
  errno = 0;
  unsigned long long v = strtoull(tok, &end, 0);
  if (errno != 0 || *end != '\0') return -1;
  *out = v;
  return 0;
}

static int parse_size(char **save, size_t *out) {
  uint64_t v;
  if (parse_u64(save, &v) != 0) return -1;
  *out = (size_t)v;
  return 0;
}

static struct map *parse_map(char **save) {
  size_t id;
  if (parse_size(save, &id) != 0 || id >= MAX_MAPS || !maps[id].used) return NULL;
  return &maps[id];
}

static void fail(const char *cmd, int err) { say("err %s %d %s", cmd, err, strerror(err)); }

/* ---- jobs: a detached thread per asynchronous command ---- */

typedef void *(*job_fn)(void *);

static int start_job(job_fn fn, void *arg) {
  pthread_t t;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  int rc = pthread_create(&t, &attr, fn, arg);
  pthread_attr_destroy(&attr);
  return rc;
}

/* touch */

struct touch_job {
  char tag[64];
  struct map m;
  size_t page, pages, threads, offset;
  int write;
  unsigned char value;
  uint64_t sum;
  uint64_t sigbuses;
};

struct touch_worker {
  struct touch_job *job;
  size_t index;
};

/* Returns 0 and adds the page's byte sum, or -1 after a SIGBUS (its address in *where). */
static int touch_page(unsigned char *page, const struct touch_job *job, uint64_t *sum, void **where) {
  sigjmp_buf jump;
  if (sigsetjmp(jump, 1) != 0) {
    bus_jump = NULL;
    *where = bus_addr;
    return -1;
  }
  bus_jump = &jump;
  volatile unsigned char *target = page + job->offset;
  if (job->write)
    *target = job->value;
  else
    (void)*target;
  bus_jump = NULL;
  uint64_t s = 0;
  for (size_t i = 0; i < job->m.page_size; i++) s += page[i];
  *sum += s;
  return 0;
}

static void *touch_thread(void *arg) {
  struct touch_worker *w = arg;
  struct touch_job *job = w->job;
  say("tid %s %zu %d", job->tag, w->index, gettid_());
  uint64_t sum = 0;
  for (size_t k = 0; k < job->pages; k++) {
    size_t n = job->page + w->index * job->pages + k;
    unsigned char *page = (unsigned char *)(job->m.addr + n * job->m.page_size);
    void *where = NULL;
    if (touch_page(page, job, &sum, &where) != 0) {
      __atomic_fetch_add(&job->sigbuses, 1, __ATOMIC_RELAXED);
      say("sigbus %s %zu %p", job->tag, w->index, where);
    }
  }
  __atomic_fetch_add(&job->sum, sum, __ATOMIC_RELAXED);
  return NULL;
}

static void *touch_coordinator(void *arg) {
  struct touch_job *job = arg;
  pthread_t threads[64];
  struct touch_worker workers[64];
  size_t started = 0;
  for (; started < job->threads; started++) {
    workers[started] = (struct touch_worker){job, started};
    if (pthread_create(&threads[started], NULL, touch_thread, &workers[started]) != 0) break;
  }
  for (size_t i = 0; i < started; i++) pthread_join(threads[i], NULL);
  if (started < job->threads)
    say("done %s -1 -1", job->tag);
  else
    say("done %s %llu %llu", job->tag, (unsigned long long)job->sum, (unsigned long long)job->sigbuses);
  free(job);
  return NULL;
}

static void cmd_touch(char **save) {
  struct touch_job *job = calloc(1, sizeof *job);
  char *tag = next_token(save);
  struct map *m = tag == NULL ? NULL : parse_map(save);
  char *how = NULL;
  if (job == NULL || m == NULL || parse_size(save, &job->page) != 0 || parse_size(save, &job->pages) != 0 ||
      parse_size(save, &job->threads) != 0 || parse_size(save, &job->offset) != 0 ||
      (how = next_token(save)) == NULL || (how[0] != 'r' && how[0] != 'w') || job->threads == 0 ||
      job->threads > 64 || job->offset >= m->page_size ||
      job->page + job->threads * job->pages > m->pages || strlen(tag) >= sizeof job->tag) {
    free(job);
    return fail("touch", EINVAL);
  }
  uint64_t value = 1;
  if (how[0] == 'w') parse_u64(save, &value); /* optional */
  snprintf(job->tag, sizeof job->tag, "%s", tag);
  job->m = *m;
  job->write = how[0] == 'w';
  job->value = (unsigned char)value;
  int rc = start_job(touch_coordinator, job);
  if (rc != 0) {
    free(job);
    return fail("touch", rc);
  }
  say("ok touch");
}

/* madvise, munmap, mremap, fork: one thread that reports its tid, makes the call and reports its result */

enum mm_op { OP_MADVISE, OP_MUNMAP, OP_MREMAP, OP_FORK };

struct mm_job {
  char tag[64];
  enum mm_op op;
  uintptr_t addr;
  size_t len;
  int advice;
  uintptr_t target; /* mremap destination */
  uintptr_t child_page;
  size_t page_size;
  struct map *map;
};

static void fork_child(struct mm_job *job) {
  /* Only async-signal-safe calls here: the parent has other threads. */
  prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the helper, even when a test fails */
  const unsigned char *page = (const unsigned char *)job->child_page;
  /* The page's pagemap entry before it is touched: the WP tests read PM_UFFD_WP (bit 57) of the child. */
  uint64_t entry = 0;
  int pm = open("/proc/self/pagemap", O_RDONLY);
  if (pm >= 0) {
    if (pread(pm, &entry, sizeof entry, (off_t)((uintptr_t)page / 4096 * sizeof entry)) != (ssize_t)sizeof entry) entry = 0;
    close(pm);
  }
  uint64_t sum = 0;
  for (size_t i = 0; i < job->page_size; i++) sum += page[i]; /* faults on the child's uffd first */
  say("child %s %d %llu 0x%llx", job->tag, getpid(), (unsigned long long)sum, (unsigned long long)entry);
  _exit(0);
}

static void *mm_thread(void *arg) {
  struct mm_job *job = arg;
  say("tid %s 0 %d", job->tag, gettid_());
  long result = 0;
  switch (job->op) {
  case OP_MADVISE:
    result = madvise((void *)job->addr, job->len, job->advice) == 0 ? 0 : -errno;
    say("done %s %ld", job->tag, result);
    break;
  case OP_MUNMAP:
    result = munmap((void *)job->addr, job->len) == 0 ? 0 : -errno;
    say("done %s %ld", job->tag, result);
    break;
  case OP_MREMAP: {
    void *to = mremap((void *)job->addr, job->len, job->len, MREMAP_MAYMOVE | MREMAP_FIXED, (void *)job->target);
    if (to == MAP_FAILED)
      result = -errno;
    else /* later commands on this map use the new address; the test sends them only after "done" */
      __atomic_store_n(&job->map->addr, (uintptr_t)to, __ATOMIC_RELEASE);
    say("done %s %ld %p", job->tag, result, to == MAP_FAILED ? NULL : to);
    break;
  }
  case OP_FORK: {
    pid_t pid = fork();
    if (pid == 0) fork_child(job);
    if (pid < 0) {
      say("done %s %d", job->tag, -errno);
      break;
    }
    say("forked %s %d", job->tag, pid);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    say("done %s %d", job->tag, status);
    break;
  }
  }
  free(job);
  return NULL;
}

static void cmd_mm(const char *name, enum mm_op op, char **save) {
  struct mm_job *job = calloc(1, sizeof *job);
  char *tag = next_token(save);
  struct map *m = tag == NULL ? NULL : parse_map(save);
  if (job == NULL || m == NULL || strlen(tag) >= sizeof job->tag) {
    free(job);
    return fail(name, EINVAL);
  }
  snprintf(job->tag, sizeof job->tag, "%s", tag);
  job->op = op;
  job->page_size = m->page_size;
  job->map = m;
  size_t page = 0, pages = m->pages;
  if (op == OP_MADVISE || op == OP_MUNMAP) {
    if (parse_size(save, &page) != 0 || parse_size(save, &pages) != 0 || pages == 0 || page + pages > m->pages) {
      free(job);
      return fail(name, EINVAL);
    }
  }
  if (op == OP_MADVISE) {
    char *advice = next_token(save);
    if (advice != NULL && strcmp(advice, "dontneed") == 0)
      job->advice = MADV_DONTNEED;
    else if (advice != NULL && strcmp(advice, "remove") == 0)
      job->advice = MADV_REMOVE;
    else {
      free(job);
      return fail(name, EINVAL);
    }
  }
  if (op == OP_FORK) {
    size_t child_page;
    if (parse_size(save, &child_page) != 0 || child_page >= m->pages) {
      free(job);
      return fail(name, EINVAL);
    }
    job->child_page = m->addr + child_page * m->page_size;
  }
  job->addr = m->addr + page * m->page_size;
  job->len = pages * m->page_size;
  if (op == OP_MREMAP) {
    /* A PROT_NONE reservation as the destination: MREMAP_FIXED replaces it, and since it is not registered
     * its replacement raises no UNMAP event of its own. */
    void *target = mmap(NULL, job->len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (target == MAP_FAILED) {
      int err = errno;
      free(job);
      return fail(name, err);
    }
    job->target = (uintptr_t)target;
  }
  int rc = start_job(mm_thread, job);
  if (rc != 0) {
    free(job);
    return fail(name, rc);
  }
  say("ok %s", name);
}

/* bounce */

struct bounce_job {
  char tag[64];
  struct map dst;
  size_t threads, ops;
  uint64_t seed;
  uint64_t mismatches;
};

struct bounce_worker {
  struct bounce_job *job;
  size_t index;
};

/* Page p of the area at `addr`, in pages of `page_size` (DST's: SRC is laid out like DST). */
static pthread_mutex_t *page_mutex(uintptr_t addr, size_t page_size, size_t p) {
  return (pthread_mutex_t *)(addr + p * page_size);
}

static uint64_t *page_counter(uintptr_t addr, size_t page_size, size_t p) {
  return (uint64_t *)(addr + p * page_size + COUNTER_OFFSET);
}

static void *bounce_thread(void *arg) {
  struct bounce_worker *w = arg;
  struct bounce_job *job = w->job;
  uint64_t x = (job->seed + 1) * 0x9E3779B97F4A7C15ULL ^ (w->index + 1) * 0xBF58476D1CE4E5B9ULL;
  for (size_t i = 0; i < job->ops; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    size_t p = (size_t)(x % job->dst.pages);
    /* The lock's first access faults the page in (every thread races for the same pages); the expected
     * value is only ever changed under the page's own mutex. */
    pthread_mutex_t *mutex = page_mutex(job->dst.addr, job->dst.page_size, p);
    pthread_mutex_lock(mutex);
    uint64_t *counter = page_counter(job->dst.addr, job->dst.page_size, p);
    if (*counter != bounce_expected[p]) __atomic_fetch_add(&job->mismatches, 1, __ATOMIC_RELAXED);
    *counter += 1;
    bounce_expected[p] += 1;
    pthread_mutex_unlock(mutex);
  }
  return NULL;
}

static void *bounce_coordinator(void *arg) {
  struct bounce_job *job = arg;
  pthread_t threads[64];
  struct bounce_worker workers[64];
  size_t started = 0;
  for (; started < job->threads; started++) {
    workers[started] = (struct bounce_worker){job, started};
    if (pthread_create(&threads[started], NULL, bounce_thread, &workers[started]) != 0) break;
  }
  for (size_t i = 0; i < started; i++) pthread_join(threads[i], NULL);
  uint64_t total = 0;
  for (size_t p = 0; p < job->dst.pages; p++) { /* pages no thread picked fault in here */
    uint64_t v = *page_counter(job->dst.addr, job->dst.page_size, p);
    total += v;
    if (v != bounce_expected[p]) job->mismatches++;
  }
  if (started < job->threads)
    say("done %s -1 -1", job->tag);
  else
    say("done %s %llu %llu", job->tag, (unsigned long long)total, (unsigned long long)job->mismatches);
  free(job);
  return NULL;
}

static void cmd_bounce_init(char **save) {
  struct map *dst = parse_map(save);
  struct map *src = dst == NULL ? NULL : parse_map(save);
  if (src == NULL || dst->pages * dst->page_size != src->pages * src->page_size) return fail("bounce-init", EINVAL);
  free(bounce_expected);
  bounce_pages = dst->pages;
  bounce_expected = calloc(bounce_pages, sizeof *bounce_expected);
  if (bounce_expected == NULL) return fail("bounce-init", ENOMEM);
  for (size_t p = 0; p < dst->pages; p++) {
    memset((void *)(src->addr + p * dst->page_size), 0, dst->page_size);
    pthread_mutex_init(page_mutex(src->addr, dst->page_size, p), NULL);
    *page_counter(src->addr, dst->page_size, p) = p + 1;
    bounce_expected[p] = p + 1;
  }
  say("ok bounce-init");
}

/* Synchronous, and only between rounds: the monitor has stopped copying into DST, so no copy it read from SRC
 * before this memcpy can land in DST after it was emptied. */
static void cmd_bounce_swap(char **save) {
  struct map *dst = parse_map(save);
  struct map *src = dst == NULL ? NULL : parse_map(save);
  size_t len = dst == NULL ? 0 : dst->pages * dst->page_size;
  if (src == NULL || len != src->pages * src->page_size) return fail("bounce-swap", EINVAL);
  memcpy((void *)src->addr, (void *)dst->addr, len);
  /* Shared memory keeps its page cache through DONTNEED: only REMOVE makes its pages missing again. */
  if (madvise((void *)dst->addr, len, dst->shared ? MADV_REMOVE : MADV_DONTNEED) != 0) return fail("bounce-swap", errno);
  say("ok bounce-swap");
}

static void cmd_bounce(char **save) {
  struct bounce_job *job = calloc(1, sizeof *job);
  char *tag = next_token(save);
  struct map *dst = tag == NULL ? NULL : parse_map(save);
  if (job == NULL || dst == NULL || parse_size(save, &job->threads) != 0 || parse_size(save, &job->ops) != 0 ||
      parse_u64(save, &job->seed) != 0 || job->threads == 0 || job->threads > 64 || strlen(tag) >= sizeof job->tag ||
      bounce_expected == NULL || dst->pages != bounce_pages) {
    free(job);
    return fail("bounce", EINVAL);
  }
  snprintf(job->tag, sizeof job->tag, "%s", tag);
  job->dst = *dst;
  int rc = start_job(bounce_coordinator, job);
  if (rc != 0) {
    free(job);
    return fail("bounce", rc);
  }
  say("ok bounce");
}

/* ---- synchronous commands ---- */

static void cmd_uffd(char **save) {
  uint64_t features;
  if (parse_u64(save, &features) != 0) return fail("uffd", EINVAL);
  if (uffd >= 0) return fail("uffd", EBUSY);
  int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return fail("uffd", errno);
  struct uffd_api_arg api = {.api = UFFD_API, .features = features};
  if (ioctl(fd, UFFDIO_API_REQ, &api) != 0) {
    int err = errno;
    close(fd);
    return fail("uffd", err);
  }
  uffd = fd;
  say("ok uffd %d", fd);
}

static void cmd_close_uffd(void) {
  if (uffd < 0) return fail("close-uffd", EBADF);
  close(uffd);
  uffd = -1;
  say("ok close-uffd");
}

static size_t huge_page_size(void) {
  FILE *f = fopen("/proc/meminfo", "r");
  char line[128];
  size_t kb = 0;
  while (f != NULL && fgets(line, sizeof line, f) != NULL)
    if (sscanf(line, "Hugepagesize: %zu kB", &kb) == 1) break;
  if (f != NULL) fclose(f);
  return kb * 1024;
}

static void cmd_map(char **save) {
  size_t id, pages;
  char *kind;
  if (parse_size(save, &id) != 0 || id >= MAX_MAPS || maps[id].used || (kind = next_token(save)) == NULL ||
      parse_size(save, &pages) != 0 || pages == 0)
    return fail("map", EINVAL);
  int anon = strcmp(kind, "anon") == 0;
  int hugetlb = strncmp(kind, "hugetlb", 7) == 0;
  int private_ = strstr(kind, "private") != NULL;
  if (!anon && strcmp(kind, "shmem") != 0 && strcmp(kind, "shmem-private") != 0 && strcmp(kind, "hugetlb") != 0 &&
      strcmp(kind, "hugetlb-private") != 0)
    return fail("map", EINVAL);
  size_t page_size = hugetlb ? huge_page_size() : (size_t)sysconf(_SC_PAGESIZE);
  if (page_size == 0) return fail("map", EOPNOTSUPP);
  size_t len = pages * page_size;
  int fd = -1;
  void *addr;
  if (anon) {
    addr = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  } else {
    fd = memfd_create(kind, MFD_CLOEXEC | (hugetlb ? MFD_HUGETLB : 0));
    if (fd < 0) return fail("map", errno);
    if (ftruncate(fd, (off_t)len) != 0) {
      int err = errno;
      close(fd);
      return fail("map", err);
    }
    addr = mmap(NULL, len, PROT_READ | PROT_WRITE, private_ ? MAP_PRIVATE : MAP_SHARED, fd, 0);
  }
  if (addr == MAP_FAILED) {
    int err = errno;
    if (fd >= 0) close(fd);
    return fail("map", err);
  }
  maps[id] = (struct map){1, (uintptr_t)addr, pages, page_size, fd, !anon && !private_};
  say("ok map %zu %p %zu %d", id, addr, page_size, fd);
}

static void cmd_register(char **save, int on) {
  const char *name = on ? "register" : "unregister";
  struct map *m = parse_map(save);
  uint64_t mode = 0;
  if (m == NULL || (on && parse_u64(save, &mode) != 0)) return fail(name, EINVAL);
  if (uffd < 0) return fail(name, EBADF);
  struct uffd_register_arg reg = {.range = {m->addr, m->pages * m->page_size}, .mode = mode};
  int rc = on ? ioctl(uffd, UFFDIO_REGISTER_REQ, &reg) : ioctl(uffd, UFFDIO_UNREGISTER_REQ, &reg.range);
  if (rc != 0) return fail(name, errno);
  if (on)
    say("ok register 0x%llx", (unsigned long long)reg.ioctls);
  else
    say("ok unregister");
}

static void cmd_signal(char **save) {
  uint64_t tid;
  if (parse_u64(save, &tid) != 0) return fail("signal", EINVAL);
  /* By tid rather than pthread_t: a thread that has already exited gives ESRCH instead of undefined behaviour. */
  if (syscall(SYS_tgkill, getpid(), (pid_t)tid, SIGUSR1) != 0) return fail("signal", errno);
  say("ok signal");
}

static void install_handlers(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_sigbus;
  sa.sa_flags = SA_SIGINFO | SA_NODEFER; /* NODEFER: the thread leaves by siglongjmp, never by returning */
  sigemptyset(&sa.sa_mask);
  sigaction(SIGBUS, &sa, NULL);
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sigusr1;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGUSR1, &sa, NULL);
}

int main(void) {
  prctl(PR_SET_PDEATHSIG, SIGKILL); /* the test process died: so do we, with our blocked threads */
  install_handlers();
  say("ready %d", getpid());
  char line[1024];
  while (fgets(line, sizeof line, stdin) != NULL) {
    char *save = NULL;
    char *cmd = strtok_r(line, " \t\r\n", &save);
    if (cmd == NULL) continue;
    if (strcmp(cmd, "uffd") == 0) cmd_uffd(&save);
    else if (strcmp(cmd, "close-uffd") == 0) cmd_close_uffd();
    else if (strcmp(cmd, "map") == 0) cmd_map(&save);
    else if (strcmp(cmd, "register") == 0) cmd_register(&save, 1);
    else if (strcmp(cmd, "unregister") == 0) cmd_register(&save, 0);
    else if (strcmp(cmd, "touch") == 0) cmd_touch(&save);
    else if (strcmp(cmd, "madvise") == 0) cmd_mm("madvise", OP_MADVISE, &save);
    else if (strcmp(cmd, "munmap") == 0) cmd_mm("munmap", OP_MUNMAP, &save);
    else if (strcmp(cmd, "mremap") == 0) cmd_mm("mremap", OP_MREMAP, &save);
    else if (strcmp(cmd, "fork") == 0) cmd_mm("fork", OP_FORK, &save);
    else if (strcmp(cmd, "bounce-init") == 0) cmd_bounce_init(&save);
    else if (strcmp(cmd, "bounce") == 0) cmd_bounce(&save);
    else if (strcmp(cmd, "bounce-swap") == 0) cmd_bounce_swap(&save);
    else if (strcmp(cmd, "signal") == 0) cmd_signal(&save);
    else if (strcmp(cmd, "exit") == 0) {
      uint64_t code = 0;
      parse_u64(&save, &code);
      _exit((int)code); /* exit_group: threads blocked in faults or events die with us */
    } else fail(cmd, ENOSYS);
  }
  return 0; /* stdin closed: the test is done with us */
}
