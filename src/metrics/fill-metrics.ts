// What serving one client's (or one LazyMemory's) faults did: counters by page class and fault result, and
// log2 histograms of service and source time. Kept in shared memory so lazy memory's resolver worker (the
// one writer) and the main thread (the reader) need no messages and stats() is synchronous; the page server
// uses the same layout in-thread. Recording is a store or two into a Float64Array: no allocation, no clock
// of its own (the fill path passes the times it already has).
import { performance } from 'node:perf_hooks';
import { HISTOGRAM_SLOTS, readHistogram, record } from './log2-histogram.js';
import type { HistogramSnapshot } from './log2-histogram.js';

/** Counter slots. Page classes first: a fill run's kind is the slot its installed pages are counted in. */
export const DEMAND_PAGES = 0;
export const READAHEAD_PAGES = 1;
export const PREFETCH_PAGES = 2;
/** Zero-filled in place of source data the source could not give (onSourceError 'zero'). */
export const ZERO_PAGES = 3;
/** Zero-filled because the program removed them (MADV_DONTNEED/REMOVE, a balloon) and touched them again. */
export const REMOVED_PAGES = 4;
/** Fault messages handled (a fault retried after EAGAIN counts again). */
export const FAULTS = 5;
/** Fault results other than installed (installed is what remains). */
export const FAULT_PRESENT = 6;
export const FAULT_DEFERRED = 7;
export const FAULT_GONE = 8;
export const FAULT_FAILED = 9;
export const BYTES = 10;
export const SOURCE_ERRORS = 11;
export const POISONED = 12;
/** Pages the program removed (REMOVE/UNMAP events): they read as zeros when touched again. */
export const PAGES_REMOVED = 13;
export const QUEUE_DEPTH = 14;
export const QUEUE_DEPTH_MAX = 15;
const FIRST_FAULT = 16;
const LAST_FAULT = 17;
const COUNTERS = 18;
const SERVICE = COUNTERS;
const SOURCE = SERVICE + HISTOGRAM_SLOTS;
const SLOTS = SOURCE + HISTOGRAM_SLOTS;

/** This thread's performance.now() origin, read once: the getter costs more than the rest of a fault's counting. */
const TIME_ORIGIN = performance.timeOrigin;

/** What a PageFiller (and the loop around it) records. Counter ids are the constants above. */
export interface FillStats {
  add(counter: number, n: number): void;
  /** A demand fault served: performance.now() when its message was taken up, and just before its faulter is woken. */
  served(startedMs: number, finishedMs: number): void;
  /** One read from a source that copies (a zero-copy view is not timed), in µs. */
  sourceRead(micros: number): void;
}

export interface FillMetricsSnapshot {
  /** Fault messages handled. */
  faults: number;
  /** Installed pages by why they were installed. */
  pages: { demand: number; readahead: number; prefetch: number; zero: number; removed: number };
  /** How each fault ended: installed (its page filled now), present (already there: EEXIST), deferred (EAGAIN,
   *  an event pending: retried), gone (ESRCH: the memory's owner exited), failed (the source gave up on it). */
  results: { installed: number; present: number; deferred: number; gone: number; failed: number };
  /** Pages copied from the source (demand + read-ahead + prefetch) and their bytes. */
  pagesServed: number;
  bytesServed: number;
  readaheadPages: number;
  prefetchPages: number;
  /** Pages zero-filled (zero + removed). */
  zeroFilled: number;
  sourceErrors: number;
  poisoned: number;
  /** Pages the program removed (REMOVE/UNMAP events). */
  pagesRemoved: number;
  /** Faults waiting in the batch being served, and the most ever (page server; 0 for LazyMemory). */
  queueDepth: number;
  queueDepthMax: number;
  /** Wall-clock ms (epoch) of the first fault, and ms from it to the last demand fault served (0 before any). */
  firstFaultAt: number;
  workingSetMs: number;
  /** From taking up a fault message to waking its faulter. */
  serviceMicros: HistogramSnapshot;
  /** One copying read from the source. */
  sourceMicros: HistogramSnapshot;
}

export class FillMetrics implements FillStats {
  readonly buffer: SharedArrayBuffer;
  readonly #slots: Float64Array;

  /** A new set of metrics, or a view of one created elsewhere (the resolver worker gets the buffer). */
  constructor(buffer?: SharedArrayBuffer) {
    this.buffer = buffer ?? new SharedArrayBuffer(SLOTS * 8);
    this.#slots = new Float64Array(this.buffer);
  }

  add(counter: number, n: number): void {
    this.#slots[counter] = (this.#slots[counter] ?? 0) + n;
  }

  set(counter: number, value: number): void {
    this.#slots[counter] = value;
    if (counter === QUEUE_DEPTH && value > (this.#slots[QUEUE_DEPTH_MAX] ?? 0)) this.#slots[QUEUE_DEPTH_MAX] = value;
  }

  served(startedMs: number, finishedMs: number): void {
    const s = this.#slots;
    // Stored as epoch ms: the reader may be another thread, with another time origin.
    if (s[FIRST_FAULT] === 0) s[FIRST_FAULT] = TIME_ORIGIN + startedMs;
    s[LAST_FAULT] = TIME_ORIGIN + finishedMs;
    record(s, SERVICE, (finishedMs - startedMs) * 1000);
  }

  sourceRead(micros: number): void {
    record(this.#slots, SOURCE, micros);
  }

  read(): FillMetricsSnapshot {
    const s = this.#slots;
    const get = (i: number): number => s[i] ?? 0;
    const faults = get(FAULTS);
    const results = { present: get(FAULT_PRESENT), deferred: get(FAULT_DEFERRED), gone: get(FAULT_GONE), failed: get(FAULT_FAILED) };
    const pages = { demand: get(DEMAND_PAGES), readahead: get(READAHEAD_PAGES), prefetch: get(PREFETCH_PAGES), zero: get(ZERO_PAGES), removed: get(REMOVED_PAGES) };
    const first = get(FIRST_FAULT);
    return {
      faults,
      pages,
      results: { installed: Math.max(0, faults - results.present - results.deferred - results.gone - results.failed), ...results },
      pagesServed: pages.demand + pages.readahead + pages.prefetch,
      bytesServed: get(BYTES),
      readaheadPages: pages.readahead,
      prefetchPages: pages.prefetch,
      zeroFilled: pages.zero + pages.removed,
      sourceErrors: get(SOURCE_ERRORS),
      poisoned: get(POISONED),
      pagesRemoved: get(PAGES_REMOVED),
      queueDepth: get(QUEUE_DEPTH),
      queueDepthMax: get(QUEUE_DEPTH_MAX),
      firstFaultAt: first,
      workingSetMs: first === 0 ? 0 : get(LAST_FAULT) - first,
      serviceMicros: readHistogram(s, SERVICE),
      sourceMicros: readHistogram(s, SOURCE),
    };
  }
}
