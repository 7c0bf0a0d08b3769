// The metrics of several fill paths as one: a server's total over its clients, present and past.
import type { FillMetricsSnapshot } from './fill-metrics.js';
import { mergeHistograms } from './log2-histogram.js';

type Counts = Record<string, number>;

function sumRecords<T extends Counts>(parts: readonly T[], zero: T): T {
  const out: Counts = { ...zero };
  for (const p of parts) for (const key of Object.keys(out)) out[key] = (out[key] ?? 0) + (p[key] ?? 0);
  return out as T;
}

export function sumFillMetrics(parts: readonly FillMetricsSnapshot[]): FillMetricsSnapshot {
  const add = (pick: (s: FillMetricsSnapshot) => number): number => parts.reduce((n, s) => n + pick(s), 0);
  const firsts = parts.map((s) => s.firstFaultAt).filter((t) => t > 0);
  const ends = parts.filter((s) => s.firstFaultAt > 0).map((s) => s.firstFaultAt + s.workingSetMs);
  const firstFaultAt = firsts.length === 0 ? 0 : Math.min(...firsts);
  return {
    faults: add((s) => s.faults),
    pages: sumRecords(parts.map((s) => s.pages), { demand: 0, readahead: 0, prefetch: 0, zero: 0, removed: 0 }),
    results: sumRecords(parts.map((s) => s.results), { installed: 0, present: 0, deferred: 0, gone: 0, failed: 0 }),
    pagesServed: add((s) => s.pagesServed),
    bytesServed: add((s) => s.bytesServed),
    readaheadPages: add((s) => s.readaheadPages),
    prefetchPages: add((s) => s.prefetchPages),
    zeroFilled: add((s) => s.zeroFilled),
    sourceErrors: add((s) => s.sourceErrors),
    poisoned: add((s) => s.poisoned),
    pagesRemoved: add((s) => s.pagesRemoved),
    queueDepth: add((s) => s.queueDepth),
    queueDepthMax: Math.max(0, ...parts.map((s) => s.queueDepthMax)),
    firstFaultAt,
    workingSetMs: firstFaultAt === 0 ? 0 : Math.max(...ends) - firstFaultAt,
    serviceMicros: mergeHistograms(parts.map((s) => s.serviceMicros)),
    sourceMicros: mergeHistograms(parts.map((s) => s.sourceMicros)),
  };
}
