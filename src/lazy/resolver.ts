// The fault-handling policy of lazy memory, run in the resolver worker: read-ahead around each fault,
// present pages never re-copied (EEXIST + wake), source failures retried and then poisoned or zero-filled.
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ReadaheadPolicy } from '../policy/readahead.js';
import type { PageSource } from '../sources/source.js';
import { UffdError } from '../errors.js';
import type { Userfaultfd } from '../uffd.js';
import type { SharedStats } from './stats.js';

export type SourceErrorPolicy = 'poison' | 'zero';

export interface ResolverOptions {
  uffd: Userfaultfd;
  source: PageSource;
  base: bigint;
  pageSize: number;
  /** Pages in the mapping (the source length rounded up). */
  pages: number;
  policy: ReadaheadPolicy;
  onSourceError: SourceErrorPolicy;
  retries: number;
  retryDelayMs: number;
  stats: SharedStats;
  /** Told about each page given up on (zero policy): the program hears of it as an 'error' event. */
  reportSourceError: (page: number, error: unknown) => void;
}

/** Bytes copied per UFFDIO_COPY at most: bounds the scratch buffer and the time a demand fault waits. */
const MAX_RUN_BYTES = 1 << 20;

export class LazyResolver {
  readonly #o: ResolverOptions;
  readonly #served: Uint8Array;
  readonly #scratch: Uint8Array;
  readonly #maxRun: number;
  #prefetchCursor = 0;

  constructor(options: ResolverOptions) {
    this.#o = options;
    this.#served = new Uint8Array(options.pages);
    this.#maxRun = Math.max(1, Math.floor(MAX_RUN_BYTES / options.pageSize));
    this.#scratch = new Uint8Array(this.#maxRun * options.pageSize);
  }

  /** Serves a fault at `address`: the faulting page always, then as much read-ahead as is missing. */
  async fault(address: bigint): Promise<void> {
    const { pageSize, pages, stats } = this.#o;
    const started = performance.now();
    const page = Number((address - this.#o.base) / BigInt(pageSize));
    if (page < 0 || page >= pages) return; // not ours (cannot happen for a range we registered)
    stats.add('faults');
    const end = Math.min(pages, page + Math.max(1, this.#o.policy.next(page)));
    // The faulting page is served even if marked: a MADV_DONTNEED by the program can empty it again.
    const served = await this.#fillRun(page, Math.min(end, page + this.#maxRun), true);
    stats.add('readaheadPages', served - 1);
    let next = page + served;
    while (next < end) {
      if (this.#served[next] === 1) {
        next++;
        continue;
      }
      let runEnd = next + 1;
      while (runEnd < end && this.#served[runEnd] === 0 && runEnd - next < this.#maxRun) runEnd++;
      const filled = await this.#fillRun(next, runEnd, false);
      stats.add('readaheadPages', filled);
      next = runEnd;
    }
    this.#wake(page, end - page);
    stats.recordService((performance.now() - started) * 1000);
  }

  /** Fills one background chunk of pages nobody has asked for yet; false when everything is served. */
  async prefetchChunk(): Promise<boolean> {
    const { pages } = this.#o;
    while (this.#prefetchCursor < pages && this.#served[this.#prefetchCursor] === 1) this.#prefetchCursor++;
    if (this.#prefetchCursor >= pages) return false;
    const start = this.#prefetchCursor;
    let end = start + 1;
    while (end < pages && this.#served[end] === 0 && end - start < this.#maxRun) end++;
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
        this.#served[page + done] = 1; // already present: someone else filled it; never overwritten
        page += done + 1;
      }
    }
    return end - start;
  }

  async #readSource(start: number, end: number, demand: boolean): Promise<{ ok: true; bytes: Uint8Array } | { ok: false; error: unknown }> {
    const { source, pageSize, stats } = this.#o;
    const offset = start * pageSize;
    const length = (end - start) * pageSize;
    const direct = source.view?.(offset, length);
    if (direct !== undefined) return { ok: true, bytes: direct };
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
        if (pageSize === 4096) uffd.zeropage(range, { wake: false });
        else uffd.copy(range.address, this.#scratch.fill(0).subarray(0, pageSize), { wake: false }); // hugetlb: no ZEROPAGE
        stats.add('zeroFilled');
        this.#o.reportSourceError(page, error);
      }
    } catch (err) {
      if (!(err instanceof UffdError) || err.code !== 'EEXIST') throw err;
    }
    this.#served[page] = 1;
  }

  #markServed(start: number, end: number): void {
    this.#served.fill(1, start, end);
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
