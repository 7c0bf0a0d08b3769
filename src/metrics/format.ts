// Metrics for people to read.
import type { HistogramSnapshot } from './log2-histogram.js';

/** A latency histogram in one line: p50/p99 are bucket bounds (a power of two); max and mean are exact. */
export function micros(h: HistogramSnapshot): string {
  const us = (n: number): string => (n >= 10_000 ? `${(n / 1000).toFixed(1)} ms` : `${n.toFixed(0)} µs`);
  return `p50 <${us(h.p50)} p99 <${us(h.p99)} max ${us(h.max)} mean ${us(h.mean)}`;
}
