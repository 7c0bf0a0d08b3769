// Latency histograms with log2 buckets, as QEMU's post-copy reports them: bucket 0 holds values under 1 µs,
// bucket i (i >= 1) holds [2^(i-1), 2^i) µs. There is no ceiling: the last bucket is past anything a fault
// can take (2^46 µs is two years). Each histogram lives in a Float64Array window (shared memory, one writer):
// BUCKETS counts, then count, sum and max, so recording is a few stores and no allocation.

/** Buckets per histogram. */
export const BUCKETS = 48;
/** Float64 slots a histogram occupies: the buckets, count, sum, max. */
export const HISTOGRAM_SLOTS = BUCKETS + 3;
const COUNT = BUCKETS;
const SUM = BUCKETS + 1;
const MAX = BUCKETS + 2;
const TWO_32 = 4294967296;

/** The bucket of a value in µs. */
export function bucketOf(micros: number): number {
  if (!(micros >= 1)) return 0; // also NaN and negatives (a clock that stepped back)
  if (micros < TWO_32) return 32 - Math.clz32(micros);
  return Math.min(BUCKETS - 1, Math.floor(Math.log2(micros)) + 1);
}

/** The exclusive upper bound of a bucket in µs (Infinity for the last one). */
export function bucketUpperMicros(bucket: number): number {
  return bucket >= BUCKETS - 1 ? Infinity : 2 ** bucket;
}

/** Adds one sample to the histogram stored at `slots[at ...]`. */
export function record(slots: Float64Array, at: number, micros: number): void {
  const b = at + bucketOf(micros);
  slots[b] = (slots[b] ?? 0) + 1;
  slots[at + COUNT] = (slots[at + COUNT] ?? 0) + 1;
  slots[at + SUM] = (slots[at + SUM] ?? 0) + micros;
  if (micros > (slots[at + MAX] ?? 0)) slots[at + MAX] = micros;
}

export interface HistogramSnapshot {
  count: number;
  /** µs; 0 without samples. */
  mean: number;
  max: number;
  /** Upper bound (µs) of the bucket holding the median / the 99th percentile sample. */
  p50: number;
  p99: number;
  /** Non-empty buckets only, in order: samples in [lowMicros, highMicros) (high Infinity for the last bucket). */
  buckets: { lowMicros: number; highMicros: number; count: number }[];
  sum: number;
}

export function readHistogram(slots: Float64Array, at: number): HistogramSnapshot {
  const counts: number[] = [];
  for (let b = 0; b < BUCKETS; b++) counts.push(slots[at + b] ?? 0);
  return fromCounts(counts, slots[at + SUM] ?? 0, slots[at + MAX] ?? 0);
}

/** A snapshot from raw bucket counts (BUCKETS of them) with the sum and max of the samples. */
export function fromCounts(counts: readonly number[], sum: number, max: number): HistogramSnapshot {
  let count = 0;
  for (const n of counts) count += n;
  const buckets: HistogramSnapshot['buckets'] = [];
  counts.forEach((n, b) => {
    if (n > 0) buckets.push({ lowMicros: b === 0 ? 0 : 2 ** (b - 1), highMicros: bucketUpperMicros(b), count: n });
  });
  const quantile = (q: number): number => {
    if (count === 0) return 0;
    const rank = Math.ceil(q * count);
    let seen = 0;
    for (const bucket of buckets) {
      seen += bucket.count;
      // The last bucket has no upper bound: the largest sample is the honest answer there.
      if (seen >= rank) return Math.min(bucket.highMicros, max);
    }
    return max;
  };
  return { count, mean: count === 0 ? 0 : sum / count, max, p50: quantile(0.5), p99: quantile(0.99), buckets, sum };
}

/** Per-bucket counts of a snapshot again (BUCKETS long), e.g. to add snapshots up. */
export function countsOf(snapshot: HistogramSnapshot): number[] {
  const counts = new Array<number>(BUCKETS).fill(0);
  for (const b of snapshot.buckets) {
    const index = b.lowMicros === 0 ? 0 : Math.round(Math.log2(b.lowMicros)) + 1;
    counts[index] = (counts[index] ?? 0) + b.count;
  }
  return counts;
}

/** The histogram of all the samples of several. */
export function mergeHistograms(snapshots: readonly HistogramSnapshot[]): HistogramSnapshot {
  const counts = new Array<number>(BUCKETS).fill(0);
  let sum = 0;
  let max = 0;
  for (const s of snapshots) {
    countsOf(s).forEach((n, b) => { counts[b] = (counts[b] ?? 0) + n; });
    sum += s.sum;
    max = Math.max(max, s.max);
  }
  return fromCounts(counts, sum, max);
}
