// Fault-serving statistics. Kept in shared memory so that lazy memory's resolver worker (the writer) and
// the main thread (the reader) need no messages, and stats() is synchronous; the page server uses the same
// counters in-thread.

/** What a PageFiller records. */
export interface FillStats {
  add(counter: Counter, n?: number): void;
  recordService(micros: number): void;
}

const COUNTERS = ['faults', 'pagesServed', 'bytesServed', 'readaheadPages', 'prefetchPages', 'sourceErrors', 'zeroFilled', 'poisoned'] as const;
export type Counter = (typeof COUNTERS)[number];
const INDEX = Object.fromEntries(COUNTERS.map((c, i) => [c, i])) as Record<Counter, number>;
/** Service time histogram: 1 µs buckets up to this, then one overflow bucket. */
const BUCKETS = 10_000;

export interface FillStatsSnapshot {
  faults: number;
  pagesServed: number;
  bytesServed: number;
  readaheadPages: number;
  prefetchPages: number;
  sourceErrors: number;
  zeroFilled: number;
  poisoned: number;
  /** Time from reading a fault message to waking the faulter, in µs (1 µs resolution; 10 ms = overflow). */
  serviceMicros: { p50: number; p99: number };
}

export class SharedStats implements FillStats {
  readonly buffer: SharedArrayBuffer;
  readonly #counters: Float64Array;
  readonly #histogram: Uint32Array;

  constructor(buffer?: SharedArrayBuffer) {
    this.buffer = buffer ?? new SharedArrayBuffer(COUNTERS.length * 8 + (BUCKETS + 1) * 4);
    this.#counters = new Float64Array(this.buffer, 0, COUNTERS.length);
    this.#histogram = new Uint32Array(this.buffer, COUNTERS.length * 8, BUCKETS + 1);
  }

  add(counter: Counter, n = 1): void {
    const i = INDEX[counter];
    this.#counters[i] = (this.#counters[i] ?? 0) + n;
  }

  recordService(micros: number): void {
    Atomics.add(this.#histogram, Math.min(BUCKETS, Math.max(0, Math.round(micros))), 1);
  }

  read(): FillStatsSnapshot {
    const get = (c: Counter): number => this.#counters[INDEX[c]] ?? 0;
    return {
      faults: get('faults'), pagesServed: get('pagesServed'), bytesServed: get('bytesServed'),
      readaheadPages: get('readaheadPages'), prefetchPages: get('prefetchPages'), sourceErrors: get('sourceErrors'),
      zeroFilled: get('zeroFilled'), poisoned: get('poisoned'),
      serviceMicros: { p50: this.#percentile(0.5), p99: this.#percentile(0.99) },
    };
  }

  #percentile(q: number): number {
    let total = 0;
    for (const n of this.#histogram) total += n;
    if (total === 0) return 0;
    const rank = Math.ceil(q * total);
    let seen = 0;
    for (let i = 0; i <= BUCKETS; i++) {
      seen += this.#histogram[i] ?? 0;
      if (seen >= rank) return i;
    }
    return BUCKETS;
  }
}
