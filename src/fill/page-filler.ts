// Serving missing-page faults of one registered range from a page source, shared by lazy memory (in its
// resolver worker) and the page server (one per client region): read-ahead around each fault, present pages
// never re-copied (EEXIST + wake), removed pages (balloon) answered with zeros, source failures retried and
// then poisoned or zero-filled. EAGAIN (an unread event) and ESRCH (the target exited) are thrown to the
// caller, which reads events or drops the client; a retried fault finds its pages present and just wakes.
//
// Everything runs synchronously while the source answers synchronously (files, buffers: the common case),
// so a fault costs no promise turns; a source that returns a promise, or a failure that needs a backoff,
// switches that fault to the asynchronous path, and later work queues behind it. Addresses are Numbers and
// the ioctls report errno as a value (core/fill-ioctls.ts): a fault costs no BigInt, no object and no
// exception. A window that one run covers is copied with wake (one ioctl per fault); only a window with
// holes is copied without waking and woken once.
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ReadaheadPolicy } from '../policy/readahead.js';
import type { PageSource } from '../sources/source.js';
import { sourceMemory } from '../sources/source.js';
import { ERRNO, UffdError } from '../errors.js';
import type { Userfaultfd } from '../core/uffd.js';
import { addressOfBytes, byteLengthOfBytes, FillIoctls } from '../core/fill-ioctls.js';
import type { FillStats } from '../metrics/fill-metrics.js';
import { BYTES, DEMAND_PAGES, FAULT_FAILED, FAULT_PRESENT, FAULTS, POISONED, PREFETCH_PAGES, READAHEAD_PAGES, REMOVED_PAGES, SOURCE_ERRORS, ZERO_PAGES } from '../metrics/fill-metrics.js';
import { PAGE_SIZE } from '../system.js';

export type SourceErrorPolicy = 'poison' | 'zero';

export interface FillerOptions {
  uffd: Userfaultfd;
  source: PageSource;
  /** The range served: `pages` pages of `pageSize` from `base`, backed by the source from `sourceOffset`. */
  base: bigint;
  pageSize: number;
  pages: number;
  sourceOffset: number;
  policy: ReadaheadPolicy;
  onSourceError: SourceErrorPolicy;
  /** UFFDIO_POISON works on this range (Linux 6.6+). */
  canPoison: boolean;
  /** Without POISON: the in-process fail-stop (PROT_NONE over the page). Absent for another process's memory. */
  protect?: (address: bigint, length: number) => void;
  retries: number;
  retryDelayMs: number;
  /** An asynchronous read that has not answered in this long fails (then the retries and the error policy). */
  readTimeoutMs?: number;
  /** Aborted when the filler's owner stops: reads still waiting fail at once instead of holding the stop. */
  signal?: AbortSignal;
  stats: FillStats;
  /** Told about each page given up on, before it is poisoned or zero-filled (the poisoned toucher dies of it). */
  reportSourceError: (page: number, error: unknown, outcome: 'poisoned' | 'zero-filled') => void;
}

/** A result now, or later. */
export type Maybe<T> = T | Promise<T>;

/** The bytes of a run: at an address of this process, or the reason the source could not give them. */
type Read = { ok: true; address: number } | { ok: false; error: unknown };

/** A source read that never answers must not hold a faulter (or close()) forever. */
export const DEFAULT_READ_TIMEOUT_MS = 30_000;

const MISSING = 0;
const PRESENT = 1;
const REMOVED = 2;

const EEXIST = -17;
const ENOMEM = -12;
const EAGAIN = -11;

/** Bytes copied per UFFDIO_COPY at most: bounds the scratch buffer and the time a demand fault waits. */
const MAX_RUN_BYTES = 1 << 20;
/**
 * EEXIST answers to faults on one page in a row before it counts as "not there at all": hugetlb reports an
 * empty huge page pool as EEXIST, and trusting it would wake the faulter into the same fault forever. A
 * real duplicate (a signal during the fault) repeats a message once or twice.
 */
const EEXIST_LIMIT = 16;

const noop = (): void => undefined;

export class PageFiller {
  readonly #o: FillerOptions;
  readonly #ioctls: FillIoctls;
  readonly #base: number;
  readonly #pageSize: number;
  readonly #pages: number;
  /** The source's bytes in memory, if it has them: [memoryStart, memoryEnd) in this process. */
  readonly #memoryAddress: number;
  readonly #memoryLength: number;
  /** Per page: PRESENT (filled by us or found present), REMOVED (zeros on the next fault), or MISSING. */
  readonly #served: Uint8Array;
  /** Replaced when a read is abandoned (timeout, stop): the late answer may still write into the old one. */
  #scratch: Uint8Array;
  #scratchAddress: number;
  readonly #maxRun: number;
  /** EEXIST answers in a row per faulting page (kept only while a page keeps answering EEXIST). */
  readonly #eexists = new Map<number, number>();
  #prefetchCursor = 0;
  /** The asynchronous fill in progress, if any: fills share the scratch buffer, so they never overlap. */
  #inflight: Promise<void> | undefined;
  #zeroPage: Uint8Array | undefined;
  /** The faulting page was filled (or found present) and woken by the ioctl itself: no WAKE needed. */
  #woken = false;

  constructor(options: FillerOptions) {
    this.#o = options;
    this.#ioctls = new FillIoctls(options.uffd);
    this.#base = Number(options.base);
    this.#pageSize = options.pageSize;
    this.#pages = options.pages;
    if (this.#base + options.pages * options.pageSize > Number.MAX_SAFE_INTEGER) {
      throw new RangeError(`the range at 0x${options.base.toString(16)} ends beyond 2^53, where no user-space memory lies`);
    }
    const memory = options.source[sourceMemory];
    this.#memoryAddress = memory?.address ?? 0;
    this.#memoryLength = memory?.length ?? 0;
    this.#served = new Uint8Array(options.pages);
    this.#maxRun = Math.max(1, Math.floor(MAX_RUN_BYTES / options.pageSize));
    this.#scratch = new Uint8Array(this.#maxRun * options.pageSize);
    this.#scratchAddress = addressOfBytes(this.#scratch);
  }

  /** Serves a fault at `address` (a Number): the faulting page always, then as much read-ahead as is missing. */
  fault(address: number): Maybe<void> {
    if (this.#inflight === undefined) {
      const result = this.#fault(address);
      if (result instanceof Promise) this.#track(result);
      return result;
    }
    return this.#exclusive(() => this.#fault(address));
  }

  /** Fills one page in the background (working-set prefetch) unless it is already there. */
  prefetchPage(page: number): Maybe<void> {
    return this.#exclusive(() => {
      if (page < 0 || page >= this.#pages || this.#served[page] !== MISSING) return;
      return this.#then(this.#fillRun(page, page + 1, PREFETCH_PAGES, true), noop);
    });
  }

  /** Fills one background chunk of pages nobody has asked for yet; false when everything is served. */
  prefetchChunk(): Maybe<boolean> {
    return this.#exclusive(() => {
      const pages = this.#pages;
      while (this.#prefetchCursor < pages && this.#served[this.#prefetchCursor] !== MISSING) this.#prefetchCursor++;
      if (this.#prefetchCursor >= pages) return false;
      const start = this.#prefetchCursor;
      let end = start + 1;
      while (end < pages && this.#served[end] === MISSING && end - start < this.#maxRun) end++;
      return this.#then(this.#fillRun(start, end, PREFETCH_PAGES, true), (filled) => {
        this.#prefetchCursor = Math.max(this.#prefetchCursor, start + Math.max(filled, 1));
        return true;
      });
    });
  }

  /** Pages [start, end) were removed (MADV_DONTNEED/REMOVE): they read as zeros from now on. */
  removed(start: number, end: number): void {
    this.#served.fill(REMOVED, Math.max(0, start), Math.min(this.#pages, end));
  }

  /** Runs now when nothing asynchronous is in flight; otherwise after it (one fill at a time). */
  #exclusive<T>(task: () => Maybe<T>): Maybe<T> {
    if (this.#inflight === undefined) {
      const result = task();
      if (result instanceof Promise) this.#track(result);
      return result;
    }
    const queued = this.#inflight.then(task);
    this.#track(queued);
    return queued;
  }

  #track(work: Promise<unknown>): void {
    const settled = work.then(noop, noop);
    this.#inflight = settled;
    void settled.then(() => { if (this.#inflight === settled) this.#inflight = undefined; });
  }

  /** `next(value)` now if `value` is here, else when it arrives. */
  #then<T, U>(value: Maybe<T>, next: (v: T) => Maybe<U>): Maybe<U> {
    return value instanceof Promise ? value.then(next) : next(value);
  }

  #fault(address: number): Maybe<void> {
    const pageSize = this.#pageSize;
    const pages = this.#pages;
    const stats = this.#o.stats;
    const started = performance.now();
    const page = Math.floor((address - this.#base) / pageSize);
    if (page < 0 || page >= pages) return; // not ours (cannot happen for a range we registered)
    stats.add(FAULTS, 1);
    this.#woken = false;
    if (this.#served[page] === REMOVED) {
      this.#zeroFill(page, true, REMOVED_PAGES);
      this.#finishFault(page, 1, started);
      return;
    }
    const end = Math.min(pages, page + Math.max(1, this.#o.policy.next(page)));
    // The faulting page is served even if marked present: a MADV_DONTNEED by the program can empty it again.
    let demandEnd = page + 1;
    while (demandEnd < end && this.#served[demandEnd] === MISSING && demandEnd - page < this.#maxRun) demandEnd++;
    // One run covers the window: copied with wake, the faulter needs no separate WAKE.
    const served = this.#fillRun(page, demandEnd, DEMAND_PAGES, demandEnd === end);
    if (served instanceof Promise) return served.then((n) => this.#afterDemand(page, n, demandEnd, end, started));
    return this.#afterDemand(page, served, demandEnd, end, started);
  }

  #afterDemand(page: number, served: number, demandEnd: number, end: number, started: number): Maybe<void> {
    // A demand run cut short (the source failed, the range ends) ends the read-ahead there too.
    if (page + served === demandEnd && demandEnd < end) {
      const rest = this.#readahead(page + served, end);
      if (rest instanceof Promise) return rest.then(() => { this.#finishFault(page, end - page, started); });
    }
    this.#finishFault(page, end - page, started);
  }

  /** Fills the missing runs of [next, end) without waking, skipping pages already there; stops at a failure. */
  #readahead(next: number, end: number): Maybe<void> {
    while (next < end) {
      if (this.#served[next] !== MISSING) {
        next++;
        continue;
      }
      let runEnd = next + 1;
      while (runEnd < end && this.#served[runEnd] === MISSING && runEnd - next < this.#maxRun) runEnd++;
      const filled = this.#fillRun(next, runEnd, READAHEAD_PAGES, false);
      const resume = runEnd;
      if (filled instanceof Promise) return filled.then((n) => (n < resume - next ? undefined : this.#readahead(resume, end)));
      if (filled < runEnd - next) return; // the source or the range ends here: the rest waits for its own fault
      next = runEnd;
    }
  }

  #finishFault(page: number, count: number, started: number): void {
    if (!this.#woken) {
      // The window was copied without waking (it had holes, or the faulting page was already there).
      const errno = this.#ioctls.wake(this.#address(page), count * this.#pageSize);
      if (errno !== 0) throw new UffdError(errno, 'ioctl(UFFDIO_WAKE)');
    }
    this.#o.stats.served(started, performance.now());
  }

  /**
   * Copies pages [start, end) from the source, waking their waiters if `wake`. Returns the pages handled
   * from `start` on: all of them, or fewer when the run met the end of what can be filled (read-ahead
   * stops there). A page found present (EEXIST) is marked and skipped, never overwritten. A source failure
   * on the faulting page (a DEMAND_PAGES run) applies the error policy; on read-ahead pages it just stops
   * there. `kind` is where the pages are counted: the first page of a demand run is the demand page, the
   * rest of it read-ahead.
   */
  #fillRun(start: number, end: number, kind: number, wake: boolean): Maybe<number> {
    const read = this.#readSource(start, end, kind === DEMAND_PAGES);
    return read instanceof Promise ? read.then((r) => this.#afterRead(start, end, kind, wake, r)) : this.#afterRead(start, end, kind, wake, read);
  }

  #afterRead(start: number, end: number, kind: number, wake: boolean, read: Read): number {
    if (!read.ok) {
      if (kind !== DEMAND_PAGES) return 0;
      this.#giveUp(start, read.error);
      return 1;
    }
    return this.#copyRun(start, end, read.address, kind, wake);
  }

  #copyRun(start: number, end: number, src: number, kind: number, wake: boolean): number {
    const pageSize = this.#pageSize;
    const ioctls = this.#ioctls;
    const demand = kind === DEMAND_PAGES;
    let page = start;
    // Counted before the copy wakes anyone, so that stats read right after a touch include it.
    this.#countServed(kind, start, start, end, 1);
    while (page < end) {
      const errno = ioctls.copy(this.#address(page), src + (page - start) * pageSize, (end - page) * pageSize, wake);
      const done = Math.floor(ioctls.done / pageSize);
      if (done > 0) {
        this.#served.fill(PRESENT, page, page + done);
        if (demand && page === start) {
          this.#woken = wake;
          this.#eexists.delete(start);
        }
      }
      if (errno === 0) return end - start;
      page += done;
      if (errno === EEXIST) {
        // Someone else filled it (or a duplicate message for a page we filled): never overwritten.
        this.#countServed(kind, start, page, page + 1, -1);
        if (demand && page === start) this.#demandFoundPresent(start);
        this.#served[page] = PRESENT;
        page++;
        continue;
      }
      this.#countServed(kind, start, page, end, -1);
      if (errno === EAGAIN || errno === -3 /* ESRCH */) throw new UffdError(errno, 'ioctl(UFFDIO_COPY)', { bytes: (page - start) * pageSize });
      if (!demand || page > start) return page - start; // read-ahead stops at the failure
      // A larger run failed at the faulting page (it crosses the end of a mapping, a hole in the
      // registration): the faulting page is served on its own; read-ahead stops here.
      if (end - start > 1) return this.#copyRun(start, start + 1, src, DEMAND_PAGES, wake);
      if (errno === ENOMEM && pageSize !== PAGE_SIZE) this.#exhausted(page, errno);
      throw new UffdError(errno, 'ioctl(UFFDIO_COPY)', { bytes: 0 });
    }
    return end - start;
  }

  /**
   * EEXIST for the faulting page itself: it is there, so waking the faulter is all it needs. Unless it keeps
   * coming back: then nothing is there at all (an empty huge page pool answers EEXIST on hugetlb).
   */
  #demandFoundPresent(page: number): void {
    this.#o.stats.add(FAULT_PRESENT, 1);
    const seen = (this.#eexists.get(page) ?? 0) + 1;
    if (seen >= EEXIST_LIMIT) this.#exhausted(page, EEXIST);
    this.#eexists.set(page, seen);
  }

  /**
   * No memory for the page (the huge page pool is empty): fail-stop. The page is poisoned where that works
   * (the faulter gets SIGBUS instead of waiting forever) and the fault fails with ENOMEM for the caller.
   */
  #exhausted(page: number, errno: number): never {
    const { uffd, canPoison } = this.#o;
    const cause = errno === EEXIST ? `${String(EEXIST_LIMIT)} answers of EEXIST in a row for a page that is not there` : 'ENOMEM';
    if (canPoison) {
      try {
        uffd.poison({ address: this.#o.base + BigInt(page * this.#pageSize), length: this.#pageSize, pageSize: this.#pageSize });
        this.#o.stats.add(POISONED, 1);
      } catch {
        // Best effort: the caller's own fail-stop (poisoning every missing page, dropping the client) follows.
      }
    }
    this.#eexists.delete(page);
    throw new UffdError(ENOMEM, 'ioctl(UFFDIO_COPY)', { hint: `no memory for the ${String(this.#pageSize >> 10)} KiB page at 0x${this.#address(page).toString(16)}: the huge page pool is exhausted (${cause})` });
  }

  /**
   * The address of the bytes of [start, end): in the source's memory if it has them, else read into the
   * scratch (or offered by the source's view()). A view of the wrong length is a source error.
   */
  #readSource(start: number, end: number, demand: boolean): Maybe<Read> {
    const { source, stats } = this.#o;
    const offset = this.#o.sourceOffset + start * this.#pageSize;
    const length = (end - start) * this.#pageSize;
    if (offset + length <= this.#memoryLength) return { ok: true, address: this.#memoryAddress + offset };
    if (source.view !== undefined) {
      let direct: unknown;
      try {
        direct = source.view(offset, length);
      } catch {
        stats.add(SOURCE_ERRORS, 1); // a broken zero-copy path: the copying read below may still work
      }
      if (direct !== undefined) {
        if (direct instanceof Uint8Array && byteLengthOfBytes(direct) === length) return { ok: true, address: addressOfBytes(direct) };
        stats.add(SOURCE_ERRORS, 1);
        const got = direct instanceof Uint8Array ? `${String(byteLengthOfBytes(direct))} bytes` : 'not a Uint8Array';
        return { ok: false, error: new Error(`source view(${String(offset)}, ${String(length)}) returned ${got}, expected exactly ${String(length)} bytes`) };
      }
    }
    let target = this.#scratch.subarray(0, length);
    const expected = Math.max(0, Math.min(length, source.length - offset));
    const check = (n: number): Read => {
      if (n !== expected) throw new Error(`source returned ${String(n)} bytes at offset ${String(offset)}, expected ${String(expected)} (shorter than its length ${String(source.length)})`);
      target.fill(0, expected); // past the end of the source: the tail of the last page reads as zeros
      return { ok: true, address: this.#scratchAddress };
    };
    // Demand reads are retried with exponential backoff; read-ahead is tried once (its fault will come).
    const attempts = demand ? this.#o.retries + 1 : 1;
    const attempt = (tried: number, lastError: unknown): Maybe<Read> => {
      if (tried === attempts) return { ok: false, error: lastError };
      const failed = (err: unknown): Maybe<Read> => {
        stats.add(SOURCE_ERRORS, 1);
        if (tried + 1 === attempts) return { ok: false, error: err };
        return sleep(this.#o.retryDelayMs * 2 ** tried).then(() => attempt(tried + 1, err));
      };
      try {
        target = this.#scratch.subarray(0, length);
        const readAt = performance.now();
        const n = source.read(offset, target);
        if (!(n instanceof Promise)) {
          stats.sourceRead((performance.now() - readAt) * 1000);
          return check(n);
        }
        return this.#answerWithin(n, offset).then((m) => {
          stats.sourceRead((performance.now() - readAt) * 1000);
          return check(m);
        }).catch(failed);
      } catch (err) {
        return failed(err);
      }
    };
    return attempt(0, undefined);
  }

  /** `read`, or a rejection once it has not answered within the read timeout or the owner stops. */
  #answerWithin(read: Promise<number>, offset: number): Promise<number> {
    const ms = this.#o.readTimeoutMs ?? DEFAULT_READ_TIMEOUT_MS;
    const { signal } = this.#o;
    let timer: NodeJS.Timeout | undefined;
    let onAbort: (() => void) | undefined;
    const abandoned = new Promise<never>((_, reject) => {
      const abandon = (why: string, code: string): void => {
        this.#scratch = new Uint8Array(this.#scratch.length); // a late answer lands in the abandoned buffer
        this.#scratchAddress = addressOfBytes(this.#scratch);
        reject(Object.assign(new Error(`source read at offset ${String(offset)} ${why}`), { code }));
      };
      timer = setTimeout(() => { abandon(`did not answer within ${String(ms)} ms`, 'ETIMEDOUT'); }, ms);
      onAbort = () => { abandon('abandoned: the resolver is stopping', 'ABORT_ERR'); };
      if (signal?.aborted === true) onAbort();
      else signal?.addEventListener('abort', onAbort, { once: true });
    });
    return Promise.race([read, abandoned]).finally(() => {
      clearTimeout(timer);
      if (onAbort !== undefined) signal?.removeEventListener('abort', onAbort);
    });
  }

  #giveUp(page: number, error: unknown): void {
    const { uffd, pageSize, stats, onSourceError } = this.#o;
    stats.add(FAULT_FAILED, 1);
    if (onSourceError === 'poison') {
      this.#o.reportSourceError(page, error, 'poisoned');
      // Fail-stop: the toucher gets SIGBUS (SIGSEGV with PROT_NONE before 6.6), never wrong data.
      const address = this.#o.base + BigInt(page * pageSize);
      try {
        if (this.#o.canPoison) uffd.poison({ address, length: pageSize, pageSize }, { wake: false });
        else if (this.#o.protect !== undefined) this.#o.protect(address, pageSize);
        else throw new UffdError(ERRNO.ENOTSUP, 'ioctl(UFFDIO_POISON)', { hint: `the source failed for page ${String(page)} and this kernel cannot poison it (Linux 6.6+)` });
        stats.add(POISONED, 1);
      } catch (err) {
        if (!(err instanceof UffdError && err.code === 'EEXIST')) throw err;
      }
      this.#served[page] = PRESENT;
    } else {
      this.#zeroFill(page, false, ZERO_PAGES);
      this.#o.reportSourceError(page, error, 'zero-filled');
    }
  }

  /** Fills one page with zeros: ZEROPAGE, or a copy of zeros on hugetlb (no ZEROPAGE there). Counted as `kind`. */
  #zeroFill(page: number, wake: boolean, kind: number): void {
    const pageSize = this.#pageSize;
    const dst = this.#address(page);
    const stats = this.#o.stats;
    // Counted before the ioctl wakes anyone; taken back if the page was there already.
    stats.add(kind, 1);
    stats.add(BYTES, pageSize);
    const errno = pageSize === PAGE_SIZE
      ? this.#ioctls.zeropage(dst, pageSize, wake)
      : this.#ioctls.copy(dst, addressOfBytes((this.#zeroPage ??= new Uint8Array(pageSize))), pageSize, wake);
    if (errno === 0) this.#woken = wake;
    else if (errno !== EEXIST) throw new UffdError(errno, pageSize === PAGE_SIZE ? 'ioctl(UFFDIO_ZEROPAGE)' : 'ioctl(UFFDIO_COPY)');
    else {
      stats.add(kind, -1);
      stats.add(BYTES, -pageSize);
      if (kind === REMOVED_PAGES) stats.add(FAULT_PRESENT, 1);
    }
    this.#served[page] = PRESENT;
  }

  /**
   * Counts pages [from, to) of a run of `kind` that starts at `start` (sign -1 takes them back): in a demand
   * run the first page is the demand page and the others are read-ahead.
   */
  #countServed(kind: number, start: number, from: number, to: number, sign: 1 | -1): void {
    const stats = this.#o.stats;
    if (to <= from) return;
    if (kind === DEMAND_PAGES && from === start) {
      stats.add(DEMAND_PAGES, sign);
      if (to - from > 1) stats.add(READAHEAD_PAGES, sign * (to - from - 1));
    } else {
      stats.add(kind === DEMAND_PAGES ? READAHEAD_PAGES : kind, sign * (to - from));
    }
    stats.add(BYTES, sign * (to - from) * this.#pageSize);
  }

  #address(page: number): number {
    return this.#base + page * this.#pageSize;
  }
}
