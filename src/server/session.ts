// Serving one client's guest memory after its handshake: the event loop of a production page server.
// Events are drained in batches with non-fault events first (a REMOVE the kernel queued behind faults is
// applied before they are served); EAGAIN means an event is pending, so the fault is deferred and retried
// after the events are read (no new message will come for it); ESRCH means the client's memory is gone.
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { isEagain, messageOf, UffdError } from '../errors.js';
import { PageFiller } from '../fill/page-filler.js';
import type { Maybe } from '../fill/page-filler.js';
import { FAULT_DEFERRED, FAULT_FAILED, FAULT_GONE, FillMetrics, PAGES_REMOVED, QUEUE_DEPTH } from '../metrics/fill-metrics.js';
import type { FillMetricsSnapshot } from '../metrics/fill-metrics.js';
import type { HistogramSnapshot } from '../metrics/log2-histogram.js';
import { fixedReadahead } from '../policy/readahead.js';
import type { PageSource } from '../sources/source.js';
import type { Userfaultfd, UffdEventOf } from '../core/uffd.js';
import { FdWatcher } from '../core/watch.js';
import { MessageBatch } from '../fill/message-batch.js';
import type { GuestRegion } from './region.js';

export interface SessionSummary {
  faults: number;
  pagesCopied: number;
  zeroPages: number;
  removes: number;
  prefetched: number;
  serviceMicros: HistogramSnapshot;
}

type Outcome = 'done' | 'deferred' | 'gone';

const READ_BATCH = 128;
/** Prefetched pages between two turns of the event loop. */
const PREFETCH_BATCH = 64;

interface RegionState {
  region: GuestRegion;
  filler: PageFiller;
  /** The region's address range as Numbers (user-space addresses are below 2^53). */
  start: number;
  end: number;
}

export class ClientSession {
  readonly #uffd: Userfaultfd;
  readonly #regions: RegionState[];
  readonly #stats = new FillMetrics();
  readonly #onGone: (reason: string) => void;
  readonly #record: ((offset: number) => void) | undefined;
  readonly #recorded = new Set<number>();
  #watcher: FdWatcher | undefined;
  readonly #batch = new MessageBatch(READ_BATCH);
  #deferred: number[] = [];
  #busy = false;
  #again = false;
  #removes = 0;
  #closed = false;

  constructor(options: {
    uffd: Userfaultfd;
    regions: GuestRegion[];
    source: PageSource;
    readahead: number;
    /** UFFDIO_POISON works on the client's memory (6.6+): else a page the memory file cannot give drops the client. */
    canPoison: boolean;
    onGone: (reason: string) => void;
    /** Told the memory-file offset of each page the first time it is faulted (working-set recording). */
    record?: (offset: number) => void;
  }) {
    this.#uffd = options.uffd;
    this.#onGone = options.onGone;
    this.#record = options.record;
    this.#regions = options.regions.map((region) => ({
      region,
      start: Number(region.baseHostVirtAddr),
      end: Number(region.baseHostVirtAddr) + region.size,
      filler: new PageFiller({
        uffd: options.uffd, source: options.source, base: region.baseHostVirtAddr, pageSize: region.pageSize,
        pages: region.size / region.pageSize, sourceOffset: region.offset, policy: fixedReadahead(options.readahead),
        onSourceError: 'poison', canPoison: options.canPoison, retries: 2, retryDelayMs: 5, stats: this.#stats, reportSourceError: () => undefined,
      }),
    }));
  }

  /** Starts serving: faults already queued are drained at once. */
  start(): void {
    this.#watcher = new FdWatcher(this.#uffd.fd, () => { this.#kick(); }, (err) => { this.#gone(`poll failed: ${err.message}`); });
    this.#kick();
  }

  /**
   * Pages in memory-file offsets, filled in the background in this order; demand faults come first.
   * True when every listed page of the client's regions is there, false when the session ended first.
   */
  async prefetch(offsets: number[]): Promise<boolean> {
    let batched = 0;
    for (const offset of offsets) {
      const state = this.#regions.find((r) => offset >= r.region.offset && offset < r.region.offset + r.region.size);
      if (state === undefined) continue;
      for (;;) {
        if (this.#closed) return false;
        try {
          const filled = state.filler.prefetchPage(Math.floor((offset - state.region.offset) / state.region.pageSize));
          if (filled instanceof Promise) await filled;
          break;
        } catch (err) {
          // EAGAIN: an event (a balloon REMOVE) is pending; the drain loop reads it, then this page is retried.
          if (!isEagain(err)) {
            this.#handleError(err);
            return false;
          }
          this.#kick();
          await yieldToLoop();
        }
      }
      // Demand faults get in between batches: a batch is short (64 pages), and the prefetch keeps running
      // ahead of the guest instead of paying a turn of the event loop per page.
      if (++batched === PREFETCH_BATCH) {
        batched = 0;
        await yieldToLoop();
      }
    }
    return !this.#closed;
  }

  metrics(): FillMetricsSnapshot {
    return this.#stats.read();
  }

  summary(): SessionSummary {
    const s = this.#stats.read();
    return {
      faults: s.faults, pagesCopied: s.pagesServed, zeroPages: s.zeroFilled, removes: this.#removes, prefetched: s.prefetchPages,
      serviceMicros: s.serviceMicros,
    };
  }

  get pagesTotal(): number {
    return this.#regions.reduce((n, r) => n + r.region.size / r.region.pageSize, 0);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#watcher?.stop();
    this.#uffd.close();
  }

  /** Drains the uffd unless a drain is already running (which then goes round once more). */
  #kick(): void {
    this.#again = true;
    if (this.#busy) return;
    this.#busy = true;
    this.#pump();
  }

  /**
   * Reads and serves until nothing is pending. Synchronous while faults are served synchronously (a file
   * source), which keeps a fault to one poll callback; a fault that goes asynchronous pauses the watcher
   * (level-triggered: it would fire on every loop turn meanwhile) and the pump resumes when it is done.
   */
  #pump(): void {
    while (this.#again || this.#deferred.length > 0) {
      if (this.#closed) break;
      this.#again = false;
      const batch = this.#batch;
      let read: number;
      try {
        read = batch.read(this.#uffd);
      } catch (err) {
        this.#handleError(err);
        break;
      }
      // Read until EAGAIN: a vCPU woken by the last resolve has often faulted again by now, and a read(2) is
      // cheaper than a turn of the event loop.
      if (read > 0) this.#again = true;
      // Events first: the kernel hands out queued faults before queued events, so a REMOVE that happened
      // before a fault of this batch is applied before that fault is served.
      for (let i = 0; i < read; i++) if (!batch.isFault(i)) this.#apply(batch.event(this.#uffd, i));
      if (this.#closed) break;
      const faults = this.#deferred; // faults deferred earlier go first
      this.#deferred = [];
      for (let i = 0; i < read; i++) if (batch.isFault(i)) faults.push(batch.address(i));
      this.#stats.set(QUEUE_DEPTH, faults.length);
      for (let i = 0; i < faults.length; i++) {
        const outcome = this.#serve(faults[i] ?? 0);
        if (outcome instanceof Promise) {
          this.#watcher?.pause();
          void outcome.then((o) => {
            if (o === 'done') this.#deferred.unshift(...faults.slice(i + 1));
            else this.#settle(o, faults, i);
            if (this.#closed) return;
            this.#watcher?.resume();
            this.#pump();
          });
          return; // still busy
        }
        if (!this.#settle(outcome, faults, i)) break;
      }
      if (this.#deferred.length > 0 && read === 0) {
        // EAGAIN although the event was read: the kernel lowers its "memory changing" count only when the
        // mutating thread runs again. Retry on the next loop turn rather than spin here.
        setImmediate(() => { this.#pump(); });
        return;
      }
    }
    this.#busy = false;
    this.#stats.set(QUEUE_DEPTH, 0);
  }

  /** Records the outcome of serving faults[i]; false when the rest of the batch must wait. */
  #settle(outcome: Outcome, faults: number[], i: number): boolean {
    if (outcome === 'done') return true;
    if (outcome === 'deferred') {
      // An event is pending: read it first, then retry this fault and the rest.
      this.#deferred.push(...faults.slice(i));
      this.#again = true;
    }
    return false;
  }

  #apply(event: UffdEventOf): void {
    switch (event.type) {
      case 'remove':
      case 'unmap':
        // Balloon (MADV_DONTNEED/REMOVE) or unmapped: those pages read as zeros if touched again.
        this.#removes++;
        for (const r of this.#regions) {
          const start = event.start > r.region.baseHostVirtAddr ? event.start : r.region.baseHostVirtAddr;
          const regionEnd = r.region.baseHostVirtAddr + BigInt(r.region.size);
          const end = event.end < regionEnd ? event.end : regionEnd;
          if (start >= end) continue;
          const size = BigInt(r.region.pageSize);
          const first = Number((start - r.region.baseHostVirtAddr) / size);
          const last = Number((end - r.region.baseHostVirtAddr + size - 1n) / size);
          r.filler.removed(first, last);
          this.#stats.add(PAGES_REMOVED, last - first);
        }
        return;
      case 'fork':
        event.uffd.close(); // a VMM does not fork with EVENT_FORK; nothing to serve there
        return;
      case 'remap':
        // Guest memory does not move in a VMM; the handshake's regions no longer describe the client.
        this.#gone(`its memory was remapped (0x${event.from.toString(16)} -> 0x${event.to.toString(16)}), which a page server cannot follow`);
        return;
      default:
        return;
    }
  }

  #serve(address: number): Maybe<Outcome> {
    let state: RegionState | undefined;
    for (const r of this.#regions) {
      if (address >= r.start && address < r.end) {
        state = r;
        break;
      }
    }
    if (state === undefined) {
      // Registered but not described in the handshake: nobody could serve it, and the faulter would wait forever.
      this.#gone(`a fault at 0x${address.toString(16)} lies outside every region of its handshake`);
      return 'gone';
    }
    try {
      if (this.#record !== undefined) this.#noteFirstFault(state, address);
      const served = state.filler.fault(address);
      return served instanceof Promise ? served.then(() => 'done' as const, (err: unknown) => this.#classify(err)) : 'done';
    } catch (err) {
      return this.#classify(err);
    }
  }

  #classify(err: unknown): Outcome {
    if (isEagain(err)) {
      this.#stats.add(FAULT_DEFERRED, 1);
      return 'deferred';
    }
    this.#stats.add(err instanceof UffdError && err.code === 'ESRCH' ? FAULT_GONE : FAULT_FAILED, 1);
    this.#handleError(err);
    return 'gone';
  }

  #noteFirstFault(state: RegionState, address: number): void {
    const size = state.region.pageSize;
    const offset = state.region.offset + Math.floor((address - state.start) / size) * size;
    if (this.#recorded.has(offset)) return;
    this.#recorded.add(offset);
    this.#record?.(offset);
  }

  /** ESRCH (the client's memory is gone) and everything unexpected end the session. */
  #handleError(err: unknown): void {
    if (err instanceof UffdError && err.code === 'ESRCH') this.#gone('its memory is gone (ESRCH)');
    else this.#gone(`serving failed: ${messageOf(err)}`);
  }

  #gone(reason: string): void {
    if (this.#closed) return;
    this.close();
    this.#onGone(reason);
  }
}
