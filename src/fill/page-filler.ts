// Serving missing-page faults of one registered range from a page source, shared by lazy memory (in its
// resolver worker) and the page server (one per client region): read-ahead around each fault, present pages
// never re-copied (EEXIST + wake), removed pages (balloon) answered with zeros, source failures retried and
// then poisoned or zero-filled. EAGAIN (an unread event) and ESRCH (the target exited) are thrown to the
// caller, which reads events or drops the client; a retried fault finds its pages present and just wakes.
//
// Everything runs synchronously while the source answers synchronously (files, buffers: the common case),
// so a fault costs no promise turns; a source that returns a promise, or a failure that needs a backoff,
// switches that fault to the asynchronous path, and later work queues behind it.
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ReadaheadPolicy } from '../policy/readahead.js';
import type { PageSource } from '../sources/source.js';
import { isEexist, UffdError } from '../errors.js';
import type { Userfaultfd } from '../core/uffd.js';
import { copyUnchecked, wakeUnchecked } from '../core/uffd.js';
import type { FillStats } from './stats.js';
import { PAGE_SIZE } from '../validate.js';

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
  stats: FillStats;
  /** Told about each page given up on (zero policy): the program hears of it as an 'error' event. */
  reportSourceError: (page: number, error: unknown) => void;
}

/** A result now, or later. */
export type Maybe<T> = T | Promise<T>;

type Read = { ok: true; bytes: Uint8Array } | { ok: false; error: unknown };
interface Run {
  start: number;
  end: number;
  demand: boolean;
}

const MISSING = 0;
const PRESENT = 1;
const REMOVED = 2;

/** Bytes copied per UFFDIO_COPY at most: bounds the scratch buffer and the time a demand fault waits. */
const MAX_RUN_BYTES = 1 << 20;

const noop = (): void => undefined;

export class PageFiller {
  readonly #o: FillerOptions;
  /** Per page: PRESENT (filled by us or found present), REMOVED (zeros on the next fault), or MISSING. */
  readonly #served: Uint8Array;
  readonly #scratch: Uint8Array;
  readonly #maxRun: number;
  #prefetchCursor = 0;
  /** The asynchronous fill in progress, if any: fills share the scratch buffer, so they never overlap. */
  #inflight: Promise<void> | undefined;
  #zeroPage: Uint8Array | undefined;

  constructor(options: FillerOptions) {
    this.#o = options;
    this.#served = new Uint8Array(options.pages);
    this.#maxRun = Math.max(1, Math.floor(MAX_RUN_BYTES / options.pageSize));
    this.#scratch = new Uint8Array(this.#maxRun * options.pageSize);
  }

  /** Serves a fault at `address`: the faulting page always, then as much read-ahead as is missing. */
  fault(address: bigint): Maybe<void> {
    return this.#exclusive(() => this.#fault(address));
  }

  /** Fills one page in the background (working-set prefetch) unless it is already there. */
  prefetchPage(page: number): Maybe<void> {
    return this.#exclusive(() => {
      if (page < 0 || page >= this.#o.pages || this.#served[page] !== MISSING) return;
      return this.#then(this.#fillRun({ start: page, end: page + 1, demand: false }), (filled) => { this.#o.stats.add('prefetchPages', filled); });
    });
  }

  /** Fills one background chunk of pages nobody has asked for yet; false when everything is served. */
  prefetchChunk(): Maybe<boolean> {
    return this.#exclusive(() => {
      const { pages } = this.#o;
      while (this.#prefetchCursor < pages && this.#served[this.#prefetchCursor] !== MISSING) this.#prefetchCursor++;
      if (this.#prefetchCursor >= pages) return false;
      const start = this.#prefetchCursor;
      let end = start + 1;
      while (end < pages && this.#served[end] === MISSING && end - start < this.#maxRun) end++;
      return this.#then(this.#fillRun({ start, end, demand: false }), (filled) => {
        this.#o.stats.add('prefetchPages', filled);
        this.#prefetchCursor = Math.max(this.#prefetchCursor, start + Math.max(filled, 1));
        return true;
      });
    });
  }

  /** Pages [start, end) were removed (MADV_DONTNEED/REMOVE): they read as zeros from now on. */
  removed(start: number, end: number): void {
    this.#served.fill(REMOVED, Math.max(0, start), Math.min(this.#o.pages, end));
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

  #fault(address: bigint): Maybe<void> {
    const { pageSize, pages, stats } = this.#o;
    const started = performance.now();
    const page = Number((address - this.#o.base) / BigInt(pageSize));
    if (page < 0 || page >= pages) return; // not ours (cannot happen for a range we registered)
    stats.add('faults');
    if (this.#served[page] === REMOVED) {
      this.#zeroFill(page);
      this.#finishFault(page, 1, started);
      return;
    }
    const end = Math.min(pages, page + Math.max(1, this.#o.policy.next(page)));
    // The faulting page is served even if marked present: a MADV_DONTNEED by the program can empty it again.
    let demandEnd = page + 1;
    while (demandEnd < end && this.#served[demandEnd] === MISSING && demandEnd - page < this.#maxRun) demandEnd++;
    // Straight-line while everything is synchronous: no closure per fault on the hot path.
    const served = this.#fillRun({ start: page, end: demandEnd, demand: true });
    if (served instanceof Promise) return served.then((n) => this.#afterDemand(page, n, end, started));
    return this.#afterDemand(page, served, end, started);
  }

  #afterDemand(page: number, served: number, end: number, started: number): Maybe<void> {
    this.#o.stats.add('readaheadPages', served - 1);
    const rest = this.#readahead(page + served, end);
    if (rest instanceof Promise) return rest.then(() => { this.#finishFault(page, end - page, started); });
    this.#finishFault(page, end - page, started);
  }

  /** Fills the missing runs of [next, end), skipping pages already there. */
  #readahead(next: number, end: number): Maybe<void> {
    while (next < end) {
      if (this.#served[next] !== MISSING) {
        next++;
        continue;
      }
      let runEnd = next + 1;
      while (runEnd < end && this.#served[runEnd] === MISSING && runEnd - next < this.#maxRun) runEnd++;
      const filled = this.#fillRun({ start: next, end: runEnd, demand: false });
      const resume = runEnd;
      if (filled instanceof Promise) {
        return filled.then((n) => {
          this.#o.stats.add('readaheadPages', n);
          return this.#readahead(resume, end);
        });
      }
      this.#o.stats.add('readaheadPages', filled);
      next = runEnd;
    }
  }

  #finishFault(page: number, count: number, started: number): void {
    // One WAKE for the whole window: the runs were copied with DONTWAKE.
    this.#o.uffd[wakeUnchecked](this.#address(page), count * this.#o.pageSize);
    this.#o.stats.recordService((performance.now() - started) * 1000);
  }

  /**
   * Copies the pages of `run` from the source without waking anyone. Returns pages handled. A page found
   * present (EEXIST) is marked and skipped, never overwritten. A source failure on the faulting page applies
   * the error policy; on read-ahead pages it just leaves them missing (their own fault will come).
   */
  #fillRun(run: Run): Maybe<number> {
    const read = this.#readSource(run);
    return read instanceof Promise ? read.then((r) => this.#afterRead(run, r)) : this.#afterRead(run, read);
  }

  #afterRead(run: Run, read: Read): number {
    if (!read.ok) {
      if (!run.demand) return 0;
      this.#giveUp(run.start, read.error);
      return 1;
    }
    this.#copyRun(run, read.bytes);
    return run.end - run.start;
  }

  #copyRun(run: Run, bytes: Uint8Array): void {
    const { pageSize, uffd } = this.#o;
    let page = run.start;
    while (page < run.end) {
      const src = bytes.subarray((page - run.start) * pageSize, (run.end - run.start) * pageSize);
      try {
        uffd[copyUnchecked](this.#address(page), src, false);
        this.#markServed(page, run.end);
        return;
      } catch (err) {
        if (!isEexist(err)) throw err;
        const done = Math.floor((err.bytes ?? 0) / pageSize);
        this.#markServed(page, page + done);
        this.#served[page + done] = PRESENT; // someone else filled it; never overwritten
        page += done + 1;
      }
    }
  }

  /** The bytes of `run`: straight from the source's memory if it offers them, else read into the scratch. */
  #readSource(run: Run): Maybe<Read> {
    const { source, pageSize, stats } = this.#o;
    const offset = this.#o.sourceOffset + run.start * pageSize;
    const length = (run.end - run.start) * pageSize;
    try {
      const direct = source.view?.(offset, length);
      if (direct !== undefined) return { ok: true, bytes: direct };
    } catch {
      stats.add('sourceErrors'); // a broken zero-copy path: the copying read below may still work
    }
    const target = this.#scratch.subarray(0, length);
    const expected = Math.max(0, Math.min(length, source.length - offset));
    const check = (n: number): Read => {
      if (n !== expected) throw new Error(`source returned ${String(n)} bytes at offset ${String(offset)}, expected ${String(expected)} (shorter than its length ${String(source.length)})`);
      target.fill(0, expected); // past the end of the source: the tail of the last page reads as zeros
      return { ok: true, bytes: target };
    };
    // Demand reads are retried with exponential backoff; read-ahead is tried once (its fault will come).
    const attempts = run.demand ? this.#o.retries + 1 : 1;
    const attempt = (tried: number, lastError: unknown): Maybe<Read> => {
      if (tried === attempts) return { ok: false, error: lastError };
      const failed = (err: unknown): Maybe<Read> => {
        stats.add('sourceErrors');
        if (tried + 1 === attempts) return { ok: false, error: err };
        return sleep(this.#o.retryDelayMs * 2 ** tried).then(() => attempt(tried + 1, err));
      };
      try {
        const n = source.read(offset, target);
        if (!(n instanceof Promise)) return check(n);
        return n.then(check).catch(failed);
      } catch (err) {
        return failed(err);
      }
    };
    return attempt(0, undefined);
  }

  #giveUp(page: number, error: unknown): void {
    const { uffd, pageSize, stats, onSourceError } = this.#o;
    try {
      if (onSourceError === 'poison') {
        // Fail-stop: the toucher gets SIGBUS (SIGSEGV with PROT_NONE before 6.6), never wrong data.
        if (this.#o.canPoison) uffd.poison({ address: this.#address(page), length: pageSize, pageSize }, { wake: false });
        else if (this.#o.protect !== undefined) this.#o.protect(this.#address(page), pageSize);
        else throw new UffdError(-95 /* EOPNOTSUPP */, 'ioctl(UFFDIO_POISON)', { hint: `the source failed for page ${String(page)} and this kernel cannot poison it (Linux 6.6+)` });
        stats.add('poisoned');
      } else {
        this.#zeroFill(page);
        this.#o.reportSourceError(page, error);
      }
    } catch (err) {
      if (!isEexist(err)) throw err;
    }
    this.#served[page] = PRESENT;
  }

  /** Fills one page with zeros without waking: ZEROPAGE, or a copy of zeros on hugetlb (no ZEROPAGE there). */
  #zeroFill(page: number): void {
    const { uffd, pageSize, stats } = this.#o;
    try {
      if (pageSize === PAGE_SIZE) uffd.zeropage({ address: this.#address(page), length: pageSize }, { wake: false });
      else uffd.copy(this.#address(page), (this.#zeroPage ??= new Uint8Array(pageSize)), { wake: false });
    } catch (err) {
      if (!isEexist(err)) throw err;
    }
    this.#served[page] = PRESENT;
    stats.add('zeroFilled');
  }

  #markServed(start: number, end: number): void {
    this.#served.fill(PRESENT, start, end);
    this.#o.stats.add('pagesServed', end - start);
    this.#o.stats.add('bytesServed', (end - start) * this.#o.pageSize);
  }

  #address(page: number): bigint {
    return this.#o.base + BigInt(page * this.#o.pageSize);
  }
}
