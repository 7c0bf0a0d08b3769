// `uffd serve --metrics`: a Prometheus scrape during a fake-VMM restore is well-formed text exposition format
// and its counters match what the VMM itself counted; the format's grammar and histogram rules on their own.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { parseListenAddress } from '../src/metrics/endpoint.js';
import { renderPrometheus } from '../src/metrics/prometheus.js';
import { FillMetrics, DEMAND_PAGES, FAULTS } from '../src/metrics/fill-metrics.js';
import { CLI, ROOT } from './support/support.js';

const dir = mkdtempSync(join(tmpdir(), 'uffd-prom-'));
process.on('exit', () => { rmSync(dir, { recursive: true, force: true }); });
const MEMORY = join(dir, 'memory.bin');
const MEMORY_BYTES = 8 << 20;
const PAGES = MEMORY_BYTES / 4096;
writeFileSync(MEMORY, Uint8Array.from({ length: MEMORY_BYTES }, (_, i) => ((i >>> 12) * 11 + i) & 0xff));
const FAKE_VMM = join(ROOT, 'test', 'native', 'bin', 'fake-vmm');

interface Sample { name: string; labels: Record<string, string>; value: number }

/** Parses the text format strictly: every line a HELP, a TYPE or a sample of a family declared before it. */
function parse(text: string): { samples: Sample[]; types: Map<string, string> } {
  assert.ok(text.endsWith('\n'), 'ends with a newline');
  const types = new Map<string, string>();
  const samples: Sample[] = [];
  for (const line of text.slice(0, -1).split('\n')) {
    const meta = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.+)$/.exec(line);
    if (meta !== null) {
      if (meta[1] === 'TYPE') {
        assert.match(meta[3] ?? '', /^(counter|gauge|histogram)$/);
        assert.ok(!types.has(meta[2] ?? ''), `${meta[2] ?? ''} declared once`);
        types.set(meta[2] ?? '', meta[3] ?? '');
      }
      continue;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*",?)*)\})? (\S+)$/.exec(line);
    assert.ok(m !== null, `a well-formed sample line: ${JSON.stringify(line)}`);
    const name = m[1] ?? '';
    const family = types.has(name) ? name : name.replace(/_(bucket|sum|count)$/, '');
    assert.ok(types.has(family), `${name} belongs to a declared family`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1] ?? ''] = l[2] ?? '';
    const value = m[3] === '+Inf' ? Infinity : Number(m[3]);
    assert.ok(!Number.isNaN(value), `a number: ${line}`);
    samples.push({ name, labels, value });
  }
  // Histograms: cumulative buckets, ending in +Inf equal to _count.
  for (const [family, type] of types) {
    if (type !== 'histogram') continue;
    const buckets = samples.filter((s) => s.name === `${family}_bucket`);
    const les = buckets.map((b) => Number(b.labels.le === '+Inf' ? Infinity : b.labels.le));
    assert.deepEqual([...les].sort((a, b) => a - b), les, `${family}: buckets in order`);
    for (let i = 1; i < buckets.length; i++) assert.ok((buckets[i]?.value ?? 0) >= (buckets[i - 1]?.value ?? 0), `${family}: cumulative`);
    assert.equal(buckets.at(-1)?.labels.le, '+Inf');
    assert.equal(buckets.at(-1)?.value, samples.find((s) => s.name === `${family}_count`)?.value);
  }
  return { samples, types };
}

const value = (samples: Sample[], name: string, labels: Record<string, string> = {}): number => {
  const hit = samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  assert.equal(hit.length, 1, `one ${name} ${JSON.stringify(labels)}`);
  return hit[0]?.value ?? NaN;
};

describe('the text format', () => {
  test('a snapshot renders to the exposition grammar, histograms in seconds with cumulative buckets', () => {
    const m = new FillMetrics();
    m.add(FAULTS, 3);
    m.add(DEMAND_PAGES, 3);
    m.served(0, 0.0002);
    m.served(0, 0.15);
    m.served(0, 30_000); // 30 s: no ceiling
    const text = renderPrometheus({
      clients: { served: 1, pending: 0, accepted: 1, refused: 2, gone: 0 },
      total: m.read(), perClient: [{ id: 1, pid: 42, pagesTotal: 10, metrics: m.read() }],
    });
    const { samples } = parse(text);
    assert.equal(value(samples, 'uffd_faults_total', { result: 'installed' }), 3);
    assert.equal(value(samples, 'uffd_pages_installed_total', { class: 'demand' }), 3);
    assert.equal(value(samples, 'uffd_fault_service_seconds_count'), 3);
    assert.equal(value(samples, 'uffd_fault_service_seconds_bucket', { le: '0.000001' }), 1); // 0.2 µs
    assert.equal(value(samples, 'uffd_fault_service_seconds_bucket', { le: '0.000256' }), 2); // 150 µs
    assert.equal(value(samples, 'uffd_fault_service_max_seconds'), 30);
    assert.equal(value(samples, 'uffd_clients_total', { outcome: 'refused' }), 2);
    assert.equal(value(samples, 'uffd_client_pages', { client: '1', pid: '42' }), 10);
  });

  test('listen addresses: loopback by default', () => {
    assert.deepEqual(parseListenAddress('9464'), { host: '127.0.0.1', port: 9464 });
    assert.deepEqual(parseListenAddress(':0'), { host: '127.0.0.1', port: 0 });
    assert.deepEqual(parseListenAddress('0.0.0.0:9464'), { host: '0.0.0.0', port: 9464 });
    assert.deepEqual(parseListenAddress('[::1]:9464'), { host: '::1', port: 9464 });
    for (const bad of ['', 'x', '1:2:3', '70000', 'host:']) assert.throws(() => parseListenAddress(bad), RangeError);
  });
});

/** Lines of a child's stdout as they come. */
function lines(child: { stdout: Readable }): () => Promise<string> {
  const queue: string[] = [];
  const waiting: ((line: string) => void)[] = [];
  createInterface({ input: child.stdout }).on('line', (line) => {
    const w = waiting.shift();
    if (w === undefined) queue.push(line);
    else w(line);
  });
  return () => {
    const line = queue.shift();
    return line !== undefined ? Promise.resolve(line) : new Promise((resolve) => waiting.push(resolve));
  };
}

async function scrape(url: string): Promise<{ status: number; type: string | null; samples: Sample[] }> {
  const res = await fetch(url);
  const text = await res.text();
  return { status: res.status, type: res.headers.get('content-type'), samples: parse(text).samples };
}

describe('uffd serve --metrics', { skip: existsSync(FAKE_VMM) ? false : `${FAKE_VMM} is not built (npm run build:helpers)` }, () => {
  test('a scrape during a fake-VMM restore matches the VMM\'s own counts', async () => {
    const socket = join(dir, 'serve.sock');
    const serve = spawn(process.execPath, [CLI, 'serve', '--socket', socket, '--memory', MEMORY, '--readahead', '4', '--metrics', '127.0.0.1:0', '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    serve.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    try {
      const next = lines(serve);
      let url: string | undefined;
      let listening = false;
      while (url === undefined || !listening) {
        const entry = JSON.parse(await next()) as { event: string; url?: string };
        if (entry.event === 'metrics') url = entry.url;
        if (entry.event === 'listening') listening = true;
      }
      assert.match(url, /^http:\/\/127\.0\.0\.1:\d+\/metrics$/);
      const idle = await scrape(url);
      assert.equal(idle.status, 200);
      assert.equal(idle.type, 'text/plain; version=0.0.4; charset=utf-8');
      assert.equal(value(idle.samples, 'uffd_clients', { state: 'served' }), 0);
      assert.equal((await fetch(url.replace('/metrics', '/other'))).status, 404);

      const vmm = spawn(FAKE_VMM, ['--socket', socket, '--memory', MEMORY, '--random', '--threads', '2', '--linger', '5000', '--timeout', '60000'], { stdio: ['ignore', 'pipe', 'pipe'] });
      const vmmLine = lines(vmm)();
      // Scrapes while the guest faults: always well-formed, never more pages than the guest has.
      let during = await scrape(url);
      while (value(during.samples, 'uffd_clients', { state: 'served' }) === 0) during = await scrape(url);
      assert.ok(value(during.samples, 'uffd_bytes_installed_total') <= MEMORY_BYTES);
      const own = JSON.parse(await vmmLine) as { touched: number; mismatches: number; pid: number };
      assert.equal(own.mismatches, 0);
      assert.equal(own.touched, PAGES);

      // The restore is done and the VMM still runs (--linger): the counters must equal its counts.
      const done = (await scrape(url)).samples;
      assert.equal(value(done, 'uffd_clients', { state: 'served' }), 1);
      const demand = value(done, 'uffd_pages_installed_total', { class: 'demand' });
      const readahead = value(done, 'uffd_pages_installed_total', { class: 'readahead' });
      assert.equal(demand + readahead, own.touched, 'every page the VMM touched was installed once');
      assert.equal(value(done, 'uffd_bytes_installed_total'), own.touched * 4096);
      assert.equal(value(done, 'uffd_faults_total', { result: 'installed' }), demand);
      const faults = ['installed', 'present', 'deferred', 'gone', 'failed'].reduce((n, result) => n + value(done, 'uffd_faults_total', { result }), 0);
      assert.equal(value(done, 'uffd_fault_service_seconds_count'), faults - value(done, 'uffd_faults_total', { result: 'deferred' }));
      assert.ok(faults >= own.touched / 4 && faults <= own.touched, `read-ahead 4: between ${String(own.touched / 4)} and ${String(own.touched)} faults, got ${String(faults)}`);
      assert.equal(value(done, 'uffd_client_pages_installed', { client: '1', pid: String(own.pid) }), own.touched);
      assert.equal(value(done, 'uffd_client_pages', { client: '1' }), PAGES);

      const [code] = (await once(vmm, 'exit')) as [number | null];
      assert.equal(code, 0);
      let after = (await scrape(url)).samples;
      while (value(after, 'uffd_clients_total', { outcome: 'gone' }) === 0) after = (await scrape(url)).samples;
      assert.equal(value(after, 'uffd_clients', { state: 'served' }), 0);
      assert.equal(value(after, 'uffd_clients_total', { outcome: 'accepted' }), 1);
      assert.equal(value(after, 'uffd_pages_installed_total', { class: 'demand' }), demand, 'a gone client\'s counts stay in the total');
    } finally {
      serve.kill('SIGTERM');
      const [code] = (await once(serve, 'exit')) as [number | null];
      assert.equal(code, 0, stderr);
    }
  });
});
