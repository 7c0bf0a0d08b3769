// Metrics: log2 histograms without a ceiling, counters by page class and fault result as LazyMemory and the
// page server really count them (every page of a file read through each, checked against the page count),
// the prefetched promise and event.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bufferSource, fileSource, LazyMemory, PageServer } from '../src/index.js';
import type { LazyStats } from '../src/index.js';
import { BUCKETS, bucketOf, fromCounts, mergeHistograms, readHistogram, record, HISTOGRAM_SLOTS } from '../src/metrics/log2-histogram.js';
import { ROOT } from './support/support.js';

const dir = mkdtempSync(join(tmpdir(), 'uffd-metrics-'));
process.on('exit', () => { rmSync(dir, { recursive: true, force: true }); });
const PAGES = 256;
const FILE = join(dir, 'data.bin');
const data = Uint8Array.from({ length: PAGES * 4096 }, (_, i) => (i * 31 + (i >>> 12)) & 0xff);
writeFileSync(FILE, data);

describe('log2 histogram', () => {
  test('bucket i holds [2^(i-1), 2^i) µs; under 1 µs is bucket 0; no ceiling', () => {
    assert.equal(bucketOf(0), 0);
    assert.equal(bucketOf(0.99), 0);
    assert.equal(bucketOf(-5), 0);
    assert.equal(bucketOf(Number.NaN), 0);
    assert.equal(bucketOf(1), 1);
    assert.equal(bucketOf(1.9), 1);
    assert.equal(bucketOf(2), 2);
    assert.equal(bucketOf(255), 8);
    assert.equal(bucketOf(256), 9);
    assert.equal(bucketOf(20_000), 15); // 20 ms: far past the old 10 ms ceiling, in [16384, 32768)
    assert.equal(bucketOf(2 ** 32), 33);
    assert.equal(bucketOf(3600e6 * 24 * 365 * 1000), BUCKETS - 1);
  });

  test('count, mean, max and bucket-bound percentiles', () => {
    const slots = new Float64Array(HISTOGRAM_SLOTS + 2);
    for (const us of [150, 200, 180, 12_000, 0.5]) record(slots, 2, us);
    const h = readHistogram(slots, 2);
    assert.equal(h.count, 5);
    assert.equal(h.max, 12_000);
    assert.equal(h.mean, (150 + 200 + 180 + 12_000 + 0.5) / 5);
    assert.equal(h.p50, 256); // 150..200 lie in [128, 256)
    assert.equal(h.p99, 12_000); // the bucket bound (16384) is past the largest sample: the sample wins
    assert.deepEqual(h.buckets, [
      { lowMicros: 0, highMicros: 1, count: 1 },
      { lowMicros: 128, highMicros: 256, count: 3 },
      { lowMicros: 8192, highMicros: 16384, count: 1 },
    ]);
    assert.equal(slots[0], 0, 'nothing written before its window');
    const merged = mergeHistograms([h, h]);
    assert.equal(merged.count, 10);
    assert.equal(merged.max, 12_000);
    assert.equal(merged.mean, h.mean);
    assert.deepEqual(fromCounts(new Array<number>(BUCKETS).fill(0), 0, 0), { count: 0, mean: 0, max: 0, p50: 0, p99: 0, buckets: [], sum: 0 });
  });
});

function readAll(lazy: LazyMemory): void {
  const bytes = new Uint8Array(lazy.buffer);
  for (let p = 0; p < PAGES; p++) assert.equal(bytes[p * 4096 + 7], data[p * 4096 + 7]);
}

/**
 * The stats once the last fault's service time is in: the faulter may resume (woken by the COPY itself)
 * a moment before its resolver records how long the fault took. Everything else is counted before the wake.
 */
async function settled(read: () => LazyStats): Promise<LazyStats> {
  const deadline = Date.now() + 5000;
  for (;;) {
    const s = read();
    if (s.serviceMicros.count === s.faults - s.results.deferred - s.results.gone || Date.now() > deadline) return s;
    await new Promise((r) => setTimeout(r, 2));
  }
}

function checkConsistent(s: LazyStats): void {
  assert.equal(s.pagesServed, s.pages.demand + s.pages.readahead + s.pages.prefetch);
  assert.equal(s.bytesServed, (s.pagesServed + s.zeroFilled) * 4096);
  assert.equal(s.faults, s.results.installed + s.results.present + s.results.deferred + s.results.gone + s.results.failed);
  assert.equal(s.serviceMicros.count, s.faults - s.results.deferred - s.results.gone);
  assert.ok(s.serviceMicros.max >= s.serviceMicros.mean && s.serviceMicros.mean > 0);
  assert.equal(s.serviceMicros.buckets.reduce((n, b) => n + b.count, 0), s.serviceMicros.count);
}

describe('LazyMemory stats', () => {
  test('one page per fault: every fault is a demand page installed, each timed; pread sources are timed too', async () => {
    const lazy = await LazyMemory.open({ source: fileSource(FILE, { access: 'pread' }), readahead: 1 });
    try {
      readAll(lazy);
      const s = await settled(() => lazy.stats());
      assert.equal(s.faults, PAGES);
      assert.deepEqual(s.pages, { demand: PAGES, readahead: 0, prefetch: 0, zero: 0, removed: 0 });
      assert.deepEqual(s.results, { installed: PAGES, present: 0, deferred: 0, gone: 0, failed: 0 });
      assert.equal(s.sourceMicros.count, PAGES, 'one pread per fault');
      assert.ok(s.firstFaultAt > Date.now() - 60_000 && s.firstFaultAt <= Date.now());
      assert.ok(s.workingSetMs > 0);
      checkConsistent(s);
    } finally {
      await lazy.close();
    }
  });

  test('read-ahead: demand + read-ahead pages are the whole file, faults are the demand pages', async () => {
    const lazy = await LazyMemory.open({ source: fileSource(FILE), readahead: 8 });
    try {
      readAll(lazy);
      const s = await settled(() => lazy.stats());
      assert.equal(s.pages.demand, s.faults);
      assert.equal(s.pages.demand + s.pages.readahead, PAGES);
      assert.equal(s.faults, PAGES / 8);
      checkConsistent(s);
    } finally {
      await lazy.close();
    }
  });

  test('prefetched() resolves and "prefetched" is emitted once the background fill is done', async () => {
    const lazy = await LazyMemory.open({ source: bufferSource(data), prefetch: true, readahead: 1 });
    try {
      const event = once(lazy, 'prefetched') as Promise<[LazyStats]>;
      const s = await lazy.prefetched();
      assert.equal(s.pagesServed, PAGES);
      assert.equal(s.pages.prefetch + s.pages.demand, PAGES);
      const [fromEvent] = await event;
      assert.equal(fromEvent.pagesServed, PAGES);
      assert.equal((await lazy.prefetched()).pagesServed, PAGES, 'after the fact it resolves at once');
      readAll(lazy);
      assert.equal(lazy.stats().faults, 0, 'nothing left to fault');
    } finally {
      await lazy.close();
    }
  });

  test('prefetched() rejects without prefetch, and when closed before the fill is done', async () => {
    const plain = await LazyMemory.open({ source: bufferSource(data) });
    await assert.rejects(plain.prefetched(), TypeError);
    await plain.close();
    const big = new Uint8Array(256 << 20);
    const lazy = await LazyMemory.open({ source: bufferSource(big), prefetch: true });
    const waiting = assert.rejects(lazy.prefetched(), /closed before the background fill was done/);
    await lazy.close();
    await waiting;
  });
});

const FAKE_VMM = join(ROOT, 'test', 'native', 'bin', 'fake-vmm');
const vmmSkip = existsSync(FAKE_VMM) ? false : `${FAKE_VMM} is not built (npm run build:helpers)`;

/** Runs the fake VMM against `socket`; resolves with its JSON report. */
async function runFakeVmm(socket: string, memory: string, args: string[]): Promise<{ code: number | null; stderr: string; out: { touched: number; mismatches: number; pages: number } }> {
  const child = spawn(FAKE_VMM, ['--socket', socket, '--memory', memory, '--timeout', '60000', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  const [code] = (await once(child, 'close')) as [number | null];
  return { code, stderr, out: JSON.parse(stdout.trim().split('\n').at(-1) ?? '{}') as { touched: number; mismatches: number; pages: number } };
}

describe('PageServer metrics', { skip: vmmSkip }, () => {
  test('a restore by the fake VMM: pages installed = pages the VMM touched, every fault timed, the client counted', async () => {
    const socket = join(dir, 'server.sock');
    const server = await PageServer.listen({ socket, memory: FILE, readahead: 4 });
    try {
      const vmm = await runFakeVmm(socket, FILE, ['--regions', '2', '--random', '--threads', '2']);
      assert.equal(vmm.code, 0, vmm.stderr);
      assert.equal(vmm.out.mismatches, 0);
      const deadline = Date.now() + 10_000;
      while (server.metrics().clients.gone === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
      const m = server.metrics();
      assert.deepEqual(m.clients, { served: 0, pending: 0, accepted: 1, refused: 0, gone: 1 });
      assert.deepEqual(m.perClient, []);
      const t = m.total;
      assert.equal(t.pagesServed, vmm.out.touched);
      assert.equal(t.pages.demand + t.pages.readahead, PAGES);
      assert.equal(t.pages.demand, t.results.installed);
      checkConsistent(t);
      assert.equal(t.sourceMicros.count, 0, 'served from a mapping: no copying reads');
    } finally {
      await server.close();
    }
  });
});
