// The Prometheus text exposition format (version 0.0.4) of a page server's metrics, written directly: the
// counters live in shared memory that the fill path writes with plain stores (a LazyMemory's in its worker
// thread), and a client library's metric objects would have to be fed per fault (observe() with a label
// lookup on the hot path) or copied into on every scrape; its histograms cannot take pre-aggregated log2
// buckets at all. Rendering a snapshot on scrape costs nothing while nobody scrapes.
import type { FillMetricsSnapshot } from './fill-metrics.js';
import { countsOf } from './log2-histogram.js';
import type { HistogramSnapshot } from './log2-histogram.js';

export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

export interface ScrapeInput {
  clients: { served: number; pending: number; accepted: number; refused: number; gone: number };
  total: FillMetricsSnapshot;
  perClient: { id: number; pid: number; pagesTotal: number; metrics: FillMetricsSnapshot }[];
}

type Labels = Record<string, string | number>;

const escape = (v: string): string => v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');

function labels(l: Labels | undefined): string {
  if (l === undefined) return '';
  const parts = Object.entries(l).map(([k, v]) => `${k}="${escape(String(v))}"`);
  return parts.length === 0 ? '' : `{${parts.join(',')}}`;
}

const num = (n: number): string => (Number.isFinite(n) ? String(n) : n > 0 ? '+Inf' : n < 0 ? '-Inf' : 'NaN');

class Writer {
  readonly #lines: string[] = [];

  family(name: string, type: 'counter' | 'gauge' | 'histogram', help: string, samples: [Labels | undefined, number][]): void {
    this.#lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const [l, v] of samples) this.#lines.push(`${name}${labels(l)} ${num(v)}`);
  }

  /** A log2-µs histogram as a Prometheus histogram in seconds: cumulative buckets up to the highest used. */
  histogram(name: string, help: string, h: HistogramSnapshot): void {
    this.#lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} histogram`);
    const counts = countsOf(h);
    let last = 0;
    counts.forEach((n, b) => { if (n > 0) last = b; });
    let cumulative = 0;
    // Bucket b holds [2^(b-1), 2^b) µs: its upper bound is the "le" (a sample of exactly 2^b µs counts one up).
    for (let b = 0; b <= Math.min(last, counts.length - 2); b++) {
      cumulative += counts[b] ?? 0;
      this.#lines.push(`${name}_bucket{le="${String(2 ** b / 1e6)}"} ${String(cumulative)}`);
    }
    this.#lines.push(`${name}_bucket{le="+Inf"} ${String(h.count)}`, `${name}_sum ${num(h.sum / 1e6)}`, `${name}_count ${String(h.count)}`);
  }

  text(): string {
    return `${this.#lines.join('\n')}\n`;
  }
}

export function renderPrometheus(m: ScrapeInput): string {
  const w = new Writer();
  const t = m.total;
  w.family('uffd_faults_total', 'counter', 'Fault messages handled, by how they ended (installed, present: already there, deferred: EAGAIN and retried, gone: the client exited, failed: the source gave up).',
    Object.entries(t.results).map(([result, n]) => [{ result }, n]));
  w.family('uffd_pages_installed_total', 'counter', 'Pages installed, by why: demand (the faulting page), readahead, prefetch, zero (source failed, zero policy), removed (removed by the client and touched again).',
    Object.entries(t.pages).map(([kind, n]) => [{ class: kind }, n]));
  w.family('uffd_bytes_installed_total', 'counter', 'Bytes installed into client memory.', [[undefined, t.bytesServed]]);
  w.family('uffd_source_errors_total', 'counter', 'Failed reads from the memory source.', [[undefined, t.sourceErrors]]);
  w.family('uffd_pages_poisoned_total', 'counter', 'Pages poisoned because the source could not give them (fail-stop).', [[undefined, t.poisoned]]);
  w.family('uffd_pages_removed_total', 'counter', 'Pages the clients removed (REMOVE/UNMAP events, a balloon).', [[undefined, t.pagesRemoved]]);
  w.histogram('uffd_fault_service_seconds', 'From taking up a fault message to waking the faulter.', t.serviceMicros);
  w.family('uffd_fault_service_max_seconds', 'gauge', 'The longest fault service time.', [[undefined, t.serviceMicros.max / 1e6]]);
  w.histogram('uffd_source_read_seconds', 'One copying read from the memory source (zero-copy reads from a mapping are not timed).', t.sourceMicros);
  w.family('uffd_queue_depth', 'gauge', 'Faults waiting in the batches being served now.', [[undefined, t.queueDepth]]);
  w.family('uffd_queue_depth_max', 'gauge', 'The most faults ever waiting in one batch.', [[undefined, t.queueDepthMax]]);
  w.family('uffd_clients', 'gauge', 'Clients connected: served, or still in their handshake (pending).',
    [[{ state: 'served' }, m.clients.served], [{ state: 'pending' }, m.clients.pending]]);
  w.family('uffd_clients_total', 'counter', 'Connections since the server started, by outcome.',
    [[{ outcome: 'accepted' }, m.clients.accepted], [{ outcome: 'refused' }, m.clients.refused], [{ outcome: 'gone' }, m.clients.gone]]);
  w.family('uffd_client_pages_installed', 'gauge', 'Pages installed for each client being served.',
    m.perClient.map((c) => [{ client: c.id, pid: c.pid }, c.metrics.pagesServed + c.metrics.zeroFilled]));
  w.family('uffd_client_pages', 'gauge', 'Pages of guest memory of each client being served.', m.perClient.map((c) => [{ client: c.id, pid: c.pid }, c.pagesTotal]));
  w.family('uffd_client_working_set_seconds', 'gauge', 'From a client\'s first fault to its last demand fault so far.',
    m.perClient.map((c) => [{ client: c.id, pid: c.pid }, c.metrics.workingSetMs / 1000]));
  return w.text();
}
