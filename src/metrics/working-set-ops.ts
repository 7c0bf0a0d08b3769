// What `uffd ws` computes over working-set records: their size and timing, how two compare, and one
// record that holds across several runs (for a prefetch list that suits every clone).
import { WORKING_SET_FORMAT, WORKING_SET_VERSION, WorkingSetError } from './working-set.js';
import type { WorkingSetRecord } from './working-set.js';

export interface WorkingSetStats {
  pages: number;
  bytes: number;
  pageSize: number;
  /** From the lowest page's offset to the end of the highest page. */
  spanBytes: number;
  /** µs from the first fault to the first fault of the last page (the time to the whole working set). */
  settleMicros: number;
  /** µs by which half, 90% and 99% of the pages had faulted. */
  p50Micros: number;
  p90Micros: number;
  p99Micros: number;
  ended: WorkingSetRecord['ended'];
}

export function workingSetStats(r: WorkingSetRecord): WorkingSetStats {
  const n = r.offsets.length;
  const times = r.ended === 'merged' ? [...r.micros].sort((x, y) => x - y) : r.micros; // merged: not in time order
  const at = (q: number): number => (n === 0 ? 0 : times[Math.min(n - 1, Math.ceil(q * n) - 1)] ?? 0);
  let low = Infinity;
  let high = -Infinity;
  for (const o of r.offsets) {
    if (o < low) low = o;
    if (o > high) high = o;
  }
  return {
    pages: n, bytes: n * r.pageSize, pageSize: r.pageSize, spanBytes: n === 0 ? 0 : high - low + r.pageSize,
    settleMicros: times[n - 1] ?? 0, p50Micros: at(0.5), p90Micros: at(0.9), p99Micros: at(0.99), ended: r.ended,
  };
}

export interface WorkingSetDiff {
  /** |A ∩ B| / |A ∪ B| (1 for two empty records). */
  jaccard: number;
  both: number;
  onlyA: number;
  onlyB: number;
  sameSnapshot: boolean;
}

function samePageSize(records: readonly WorkingSetRecord[], names: readonly string[]): void {
  const first = records[0];
  records.forEach((r, i) => {
    if (first !== undefined && r.pageSize !== first.pageSize) throw new WorkingSetError(names[i] ?? '?', `page size ${String(r.pageSize)} differs from ${String(first.pageSize)} of ${names[0] ?? '?'}`);
  });
}

export function diffWorkingSets(a: WorkingSetRecord, b: WorkingSetRecord, names: [string, string] = ['A', 'B']): WorkingSetDiff {
  samePageSize([a, b], names);
  const inA = new Set(a.offsets);
  let both = 0;
  for (const o of b.offsets) if (inA.has(o)) both++;
  const union = a.offsets.length + b.offsets.length - both;
  return {
    jaccard: union === 0 ? 1 : both / union, both, onlyA: a.offsets.length - both, onlyB: b.offsets.length - both,
    sameSnapshot: a.snapshot.size === b.snapshot.size && a.snapshot.fingerprint === b.snapshot.fingerprint,
  };
}

/**
 * One record from several runs of the same snapshot: the pages that appear in at least `minRuns` of them
 * (1: the union, records.length: the intersection). Pages more runs share come first (a prefetch racing a
 * new clone's faults spends itself on what that clone most likely needs), and among those the earlier
 * median first-fault time across the runs that have them (that time becomes the page's time).
 */
export function mergeWorkingSets(records: readonly WorkingSetRecord[], minRuns: number, names: readonly string[]): WorkingSetRecord {
  const first = records[0];
  if (first === undefined) throw new RangeError('merge needs at least one record');
  if (!Number.isSafeInteger(minRuns) || minRuns < 1 || minRuns > records.length) throw new RangeError(`minRuns must be in [1, ${String(records.length)}], got ${String(minRuns)}`);
  samePageSize(records, names);
  records.forEach((r, i) => {
    if (r.snapshot.size !== first.snapshot.size || r.snapshot.fingerprint !== first.snapshot.fingerprint) {
      throw new WorkingSetError(names[i] ?? '?', `recorded from another snapshot than ${names[0] ?? '?'}`);
    }
  });
  const times = new Map<number, number[]>();
  for (const r of records) {
    r.offsets.forEach((o, i) => {
      const list = times.get(o);
      const t = r.micros[i] ?? 0;
      if (list === undefined) times.set(o, [t]);
      else list.push(t);
    });
  }
  const median = (xs: number[]): number => {
    const s = [...xs].sort((x, y) => x - y);
    const mid = s.length >> 1;
    return s.length % 2 === 1 ? (s[mid] ?? 0) : ((s[mid - 1] ?? 0) + (s[mid] ?? 0)) / 2;
  };
  const pages = [...times].filter(([, ts]) => ts.length >= minRuns).map(([offset, ts]) => ({ offset, runs: ts.length, time: median(ts) }));
  pages.sort((x, y) => y.runs - x.runs || x.time - y.time || x.offset - y.offset);
  const earliest = records.map((r) => r.recordedAt).sort()[0] ?? first.recordedAt;
  return {
    format: WORKING_SET_FORMAT, version: WORKING_SET_VERSION, pageSize: first.pageSize, snapshot: first.snapshot,
    recordedAt: earliest, ended: 'merged', offsets: pages.map((p) => p.offset), micros: pages.map((p) => p.time),
  };
}
