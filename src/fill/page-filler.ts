// Serving missing-page faults of one registered range from a page source, shared by lazy memory (in its
// resolver worker) and the page server (one per client region): read-ahead around each fault, present pages
// never re-copied (EEXIST + wake), removed pages (balloon) answered with zeros, source failures retried and
// then poisoned or zero-filled. EAGAIN (an unread event) and ESRCH (the target exited) are thrown to the
// caller, which reads events or drops the client; a retried fault finds its pages present and just wakes.
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ReadaheadPolicy } from '../policy/readahead.js';
import type { PageSource } from '../sources/source.js';
import { UffdError } from '../errors.js';
import type { Userfaultfd } from '../uffd.js';
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
  retries: number;
  retryDelayMs: number;
  stats: FillStats;
  /** Told about each page given up on (zero policy): the program hears of it as an 'error' event. */
  reportSourceError: (page: number, error: unknown) => void;
}

const MISSING = 0;
const PRESENT = 1;
const REMOVED = 2;

/** Bytes copied per UFFDIO_COPY at most: bounds the scratch buffer and the time a demand fault waits. */
const MAX_RUN_BYTES = 1 << 20;

export class PageFiller {
  readonly #o: FillerOptions;
  /** Per page: 1 filled by us or found present; 2 removed (zeros on the next fault); 0 missing. */
  readonly #served: Uint8Array;
  readonly #scratch: Uint8Array;
  readonly #maxRun: number;
  #prefetchCursor = 0;

  constructor(options: FillerOptions) {
    this.#o = options;
    this.#served = new Uint8Array(options.pages);
    this.#maxRun = Math.max(1, Math.floor(MAX_RUN_BYTES / options.pageSize));
    this.#scratch = new Uint8Array(this.#maxRun * options.pageSize);
  }

  /** Serves a fault at `address`: the faulting page always, then as much read-ahead as is missing. */
  fault(address: bigint): Promise<void> {
    return this.#exclusive(() => this.#fault(address));
  }

  /** Fills one page in the background (working-set prefetch) unless it is already there. */
  prefetchPage(page: number): Promise<void> {
    return this.#exclusive(async () => {
      if (page < 0 || page >= this.#o.pages || this.#served[page] !== MISSING) return;
      const filled = await this.#fillRun(page, page + 1, false);
      this.#o.stats.add('prefetchPages', filled);
    });
  }

  /** Fills one background chunk of pages nobody has asked for yet; false when everything is served. */
  prefetchChunk(): Promise<boolean> {
    return this.#exclusive(() => this.#prefetchChunk());
  }

  /**
   * One fill at a time: fills share the scratch buffer, and an async source could otherwise have one fill's
   * bytes overwritten by another's before they are copied in (wrong data, marked present for good).
   */
  #exclusive<T>(task: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(task);
    this.#queue = run.then(() => undefined, () => undefined);
    return run;
  }

  #queue: Promise<void> = Promise.resolve();

  async #fault(address: bigint): Promise<void> {
    const { pageSize, pages, stats } = this.#o;
    const started = performance.now();
    const page = Number((address - this.#o.base) / BigInt(pageSize));
    if (page < 0 || page >= pages) return; // not ours (cannot happen for a range we registered)
    stats.add('faults');
    if (this.#served[page] === REMOVED) {
      this.#zeroFill(page);
      this.#wake(page, 1);
      stats.recordService((performance.now() - started) * 1000);
      return;
    }
    const end = Math.min(pages, page + Math.max(1, this.#o.policy.next(page)));
    // The faulting page is served even if marked: a MADV_DONTNEED by the program can empty it again.
    let demandEnd = page + 1;
    while (demandEnd < end && this.#served[demandEnd] === MISSING && demandEnd - page < this.#maxRun) demandEnd++;
    const served = await this.#fillRun(page, demandEnd, true);
    stats.add('readaheadPages', served - 1);
    let next = page + served;
    while (next < end) {
      if (this.#served[next] !== MISSING) {
        next++;
        continue;
      }
      let runEnd = next + 1;
      while (runEnd < end && this.#served[runEnd] === MISSING && runEnd - next < this.#maxRun) runEnd++;
      const filled = await this.#fillRun(next, runEnd, false);
      stats.add('readaheadPages', filled);
      next = runEnd;
    }
    this.#wake(page, end - page);
    stats.recordService((performance.now() - started) * 1000);
  }

  async #prefetchChunk(): Promise<boolean> {
    const { pages } = this.#o;
    while (this.#prefetchCursor < pages && this.#served[this.#prefetchCursor] !== MISSING) this.#prefetchCursor++;
    if (this.#prefetchCursor >= pages) return false;
    const start = this.#prefetchCursor;
    let end = start + 1;
    while (end < pages && this.#served[end] === MISSING && end - start < this.#maxRun) end++;
    const filled = await this.#fillRun(start, end, false);
    this.#o.stats.add('prefetchPages', filled);
    this.#prefetchCursor = Math.max(this.#prefetchCursor, start + Math.max(filled, 1));
    return true;
  }

  /**
   * Copies pages [start, end) from the source without waking anyone (one WAKE follows per fault). Returns
   * pages handled. A page found present (EEXIST) is marked and skipped, never overwritten. A source failure
   * on the faulting page applies the error policy; on read-ahead pages it just leaves them missing.
   */
  async #fillRun(start: number, end: number, demand: boolean): Promise<number> {
    const { pageSize, uffd } = this.#o;
    const read = await this.#readSource(start, end, demand);
    if (!read.ok) {
      if (!demand) return 0;
      this.#giveUp(start, read.error);
      return 1;
    }
    const bytes = read.bytes;
    let page = start;
    while (page < end) {
      const src = bytes.subarray((page - start) * pageSize, (end - start) * pageSize);
      try {
        uffd.copy(this.#address(page), src, { wake: false });
        this.#markServed(page, end);
        return end - start;
      } catch (err) {
        if (!(err instanceof UffdError) || err.code !== 'EEXIST') throw err;
        const done = Math.floor((err.bytes ?? 0) / pageSize);
        this.#markServed(page, page + done);
        this.#served[page + done] = PRESENT; // someone else filled it; never overwritten
        page += done + 1;
      }
    }
    return end - start;
  }

  async #readSource(start: number, end: number, demand: boolean): Promise<{ ok: true; bytes: Uint8Array } | { ok: false; error: unknown }> {
    const { source, pageSize, stats } = this.#o;
    const offset = this.#o.sourceOffset + start * pageSize;
    const length = (end - start) * pageSize;
    try {
      const direct = source.view?.(offset, length);
      if (direct !== undefined) return { ok: true, bytes: direct };
    } catch {
      stats.add('sourceErrors'); // a broken zero-copy path: the copying read below may still work
    }
    const target = this.#scratch.subarray(0, length);
    const expected = Math.max(0, Math.min(length, source.length - offset));
    // Demand reads are retried with exponential backoff; read-ahead is tried once (its fault will come).
    const attempts = demand ? this.#o.retries + 1 : 1;
    let error: unknown;
    for (let attempt = 0; attempt < attempts; attempt++) {
      if (attempt > 0) await sleep(this.#o.retryDelayMs * 2 ** (attempt - 1));
      try {
        const n = await source.read(offset, target);
        if (n !== expected) throw new Error(`source returned ${String(n)} bytes at offset ${String(offset)}, expected ${String(expected)} (shorter than its length ${String(source.length)})`);
        target.fill(0, expected); // past the end of the source: the tail of the last page reads as zeros
        return { ok: true, bytes: target };
      } catch (err) {
        stats.add('sourceErrors');
        error = err;
      }
    }
    return { ok: false, error };
  }

  #giveUp(page: number, error: unknown): void {
    const { uffd, pageSize, stats, onSourceError } = this.#o;
    const range = { address: this.#address(page), length: pageSize, pageSize };
    try {
      if (onSourceError === 'poison') {
        uffd.poison(range, { wake: false }); // fail-stop: the toucher dies with SIGBUS, never sees wrong data
        stats.add('poisoned');
      } else {
        this.#zeroFill(page);
        this.#o.reportSourceError(page, error);
      }
    } catch (err) {
      if (!(err instanceof UffdError) || err.code !== 'EEXIST') throw err;
    }
    this.#served[page] = PRESENT;
  }

  /** Pages [start, end) were removed (MADV_DONTNEED/REMOVE): they read as zeros from now on. */
  removed(start: number, end: number): void {
    this.#served.fill(REMOVED, Math.max(0, start), Math.min(this.#o.pages, end));
  }

  /** Fills one page with zeros without waking: ZEROPAGE, or a copy of zeros on hugetlb (no ZEROPAGE there). */
  #zeroFill(page: number): void {
    const { uffd, pageSize, stats } = this.#o;
    try {
      if (pageSize === PAGE_SIZE) uffd.zeropage({ address: this.#address(page), length: pageSize }, { wake: false });
      else uffd.copy(this.#address(page), this.#zeros(), { wake: false });
    } catch (err) {
      if (!(err instanceof UffdError) || err.code !== 'EEXIST') throw err;
    }
    this.#served[page] = PRESENT;
    stats.add('zeroFilled');
  }

  #zeros(): Uint8Array {
    this.#zeroPage ??= new Uint8Array(this.#o.pageSize);
    return this.#zeroPage;
  }

  #zeroPage: Uint8Array | undefined;

  #markServed(start: number, end: number): void {
    this.#served.fill(PRESENT, start, end);
    this.#o.stats.add('pagesServed', end - start);
    this.#o.stats.add('bytesServed', (end - start) * this.#o.pageSize);
  }

  #wake(page: number, count: number): void {
    const { pageSize } = this.#o;
    this.#o.uffd.wake({ address: this.#address(page), length: count * pageSize, pageSize });
  }

  #address(page: number): bigint {
    return this.#o.base + BigInt(page) * BigInt(this.#o.pageSize);
  }
}
