// Working-set records: the format's checks, atomic writes that never replace or leave partial files (also on
// a full disk), one record per client from concurrent fake-VMM restores, the settle detector, --prefetch
// refusing bad or foreign records, and `uffd ws stats|diff|merge` on real records.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PageServer } from '../src/index.js';
import type { ServerLog } from '../src/index.js';
import { parseWorkingSet, readWorkingSet, snapshotIdentity, WorkingSetError, writeWorkingSet } from '../src/metrics/working-set.js';
import type { WorkingSetRecord } from '../src/metrics/working-set.js';
import { diffWorkingSets, mergeWorkingSets, workingSetStats } from '../src/metrics/working-set-ops.js';
import { CLI, isRoot, ROOT } from './support/support.js';

const dir = mkdtempSync(join(tmpdir(), 'uffd-ws-'));
process.on('exit', () => { rmSync(dir, { recursive: true, force: true }); });
const MEMORY = join(dir, 'memory.bin');
const MEMORY_BYTES = 2 << 20;
const PAGES = MEMORY_BYTES / 4096;
writeFileSync(MEMORY, Uint8Array.from({ length: MEMORY_BYTES }, (_, i) => ((i >>> 12) * 5 + i * 3) & 0xff));
const FAKE_VMM = join(ROOT, 'test', 'native', 'bin', 'fake-vmm');
const vmmSkip = existsSync(FAKE_VMM) ? false : `${FAKE_VMM} is not built (npm run build:helpers)`;

function record(offsets: number[], extra: Partial<WorkingSetRecord> = {}): WorkingSetRecord {
  return {
    format: 'uffd-working-set', version: 1, pageSize: 4096, snapshot: snapshotIdentity(MEMORY), recordedAt: '2026-12-01T00:00:00.000Z',
    ended: 'client gone', offsets, micros: offsets.map((_, i) => i * 10), ...extra,
  };
}

describe('the record format', () => {
  const good = record([0, 8192, 4096]);
  const text = JSON.stringify(good);

  test('a record round-trips; stats say what it holds', () => {
    assert.deepEqual(parseWorkingSet(text, 'x'), good);
    const s = workingSetStats(good);
    assert.equal(s.pages, 3);
    assert.equal(s.bytes, 3 * 4096);
    assert.equal(s.spanBytes, 3 * 4096);
    assert.equal(s.settleMicros, 20);
    assert.equal(s.p50Micros, 10);
  });

  for (const [what, bad, reason] of [
    ['cut short (a full disk)', text.slice(0, text.length - 7), /not JSON, or cut short/],
    ['the old one-offset-per-line list', '0\n4096\n', /older uffd/],
    ['another format', JSON.stringify({ ...good, format: 'x' }), /format/],
    ['a future version', JSON.stringify({ ...good, version: 2 }), /version 2/],
    ['a page size that is not a power of two', JSON.stringify({ ...good, pageSize: 5000 }), /pageSize/],
    ['an offset twice', JSON.stringify({ ...good, offsets: [0, 0, 4096] }), /appears twice/],
    ['an unaligned offset', JSON.stringify({ ...good, offsets: [0, 100, 4096] }), /not a page offset/],
    ['an offset past the snapshot', JSON.stringify({ ...good, offsets: [0, MEMORY_BYTES, 4096] }), /not a page offset/],
    ['times going back', JSON.stringify({ ...good, micros: [0, 20, 10] }), /micros\[2\]/],
    ['fewer times than offsets', JSON.stringify({ ...good, micros: [0, 1] }), /3 offsets but 2 times/],
    ['no snapshot identity', JSON.stringify({ ...good, snapshot: undefined }), /snapshot/],
  ] as [string, string, RegExp][]) {
    test(`refused: ${what}`, () => {
      assert.throws(() => parseWorkingSet(bad, 'f.json'), (err: unknown) => err instanceof WorkingSetError && reason.test(err.message) && err.message.startsWith('f.json'));
    });
  }

  test('written atomically: never over an existing file, no temporary file left', () => {
    const sub = mkdtempSync(join(dir, 'atomic-'));
    const path = join(sub, 'a.json');
    writeWorkingSet(path, good);
    assert.throws(() => { writeWorkingSet(path, record([4096])); }, { code: 'EEXIST' });
    assert.deepEqual(readWorkingSet(path), good);
    assert.deepEqual(readdirSync(sub), ['a.json']);
  });

  test('a full disk leaves the previous record whole and nothing else behind', (t) => {
    if (!isRoot) {
      t.skip('mounting a small tmpfs needs root');
      return;
    }
    const small = mkdtempSync(join(dir, 'full-'));
    const mount = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', small]);
    if (mount.status !== 0) {
      t.skip(`cannot mount a tmpfs here: ${mount.stderr.toString().trim()}`);
      return;
    }
    try {
      const path = join(small, 'ws.json');
      writeWorkingSet(path, good);
      // About 300 KiB of JSON: more than the 64 KiB the file system holds.
      const pages = 30_000;
      const bigger = record([], { snapshot: { size: pages * 4096, fingerprint: 'x' }, offsets: Array.from({ length: pages }, (_, i) => i * 4096), micros: Array.from({ length: pages }, (_, i) => i) });
      assert.throws(() => { writeWorkingSet(join(small, 'ws2.json'), bigger); }, { code: 'ENOSPC' });
      assert.deepEqual(readWorkingSet(path), good);
      assert.deepEqual(readdirSync(small), ['ws.json'], 'no partial or temporary file');
    } finally {
      spawnSync('umount', [small]);
    }
  });

  test('diff and merge', () => {
    const a = record([0, 4096, 8192]);
    const b = record([8192, 12288]);
    assert.deepEqual(diffWorkingSets(a, a), { jaccard: 1, both: 3, onlyA: 0, onlyB: 0, sameSnapshot: true });
    assert.deepEqual(diffWorkingSets(a, b), { jaccard: 0.25, both: 1, onlyA: 2, onlyB: 1, sameSnapshot: true });
    const union = mergeWorkingSets([a, b], 1, ['a', 'b']);
    assert.equal(union.ended, 'merged');
    assert.deepEqual(mergeWorkingSets([a, b], 2, ['a', 'b']).offsets, [8192]);
    // Pages both runs have first, then by median first-fault time (ties by offset): 8192 (in both, at 20 µs
    // in a and 0 µs in b: 10 µs), then 0 (0 µs), 4096 and 12288 (10 µs each).
    assert.deepEqual(union.offsets, [8192, 0, 4096, 12288]);
    assert.deepEqual(union.micros, [10, 0, 10, 10]);
    assert.throws(() => mergeWorkingSets([a, record([0], { snapshot: { size: 1, fingerprint: 'y' } })], 1, ['a', 'other']), /another snapshot/);
  });
});

interface Vmm { code: number | null; stderr: string; out: { touched: number; mismatches: number } }

function startVmm(socket: string, args: string[]): Promise<Vmm> {
  const child = spawn(FAKE_VMM, ['--socket', socket, '--memory', MEMORY, '--timeout', '60000', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  return once(child, 'close').then(([code, signal]) => {
    const line = stdout.trim().split('\n').at(-1) ?? '';
    assert.ok(line !== '', `the fake VMM printed no result: exit ${String(code)}, signal ${String(signal)}, stderr: ${stderr}`);
    return { code: code as number | null, stderr, out: JSON.parse(line) as Vmm['out'] };
  });
}

async function until(logs: ServerLog[], predicate: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(logs)}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const uffd = (...args: string[]): { status: number | null; stdout: string; stderr: string } => {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
};

describe('records of real restores', { skip: vmmSkip }, () => {
  let sockets = 0;
  async function restore(options: { record?: string; recordSettleMs?: number; prefetch?: string }, runs: string[][]): Promise<{ vmms: Vmm[]; logs: ServerLog[] }> {
    const socket = join(dir, `w${String(sockets++)}.sock`);
    const server = await PageServer.listen({ socket, memory: MEMORY, readahead: 1, ...options });
    const logs: ServerLog[] = [];
    server.on('log', (e) => logs.push(e));
    try {
      const vmms = await Promise.all(runs.map((args) => startVmm(socket, args)));
      for (const v of vmms) {
        assert.equal(v.code, 0, v.stderr);
        assert.equal(v.out.mismatches, 0);
      }
      await until(logs, () => logs.filter((e) => e.event === 'gone').length === runs.length, 'every client gone');
      return { vmms, logs };
    } finally {
      await server.close();
    }
  }
  const recorded = (logs: ServerLog[]): Extract<ServerLog, { event: 'recorded' }>[] => logs.filter((e): e is Extract<ServerLog, { event: 'recorded' }> => e.event === 'recorded');

  test('two clients at once: two records, each whole and never overwritten; the same seeded workload diffs to Jaccard 1', async () => {
    const out = join(dir, 'two');
    const { logs } = await restore({ record: out }, [['--random', '--seed', '7'], ['--random', '--seed', '7', '--threads', '2']]);
    const recs = recorded(logs);
    assert.equal(recs.length, 2);
    assert.notEqual(recs[0]?.path, recs[1]?.path);
    assert.deepEqual(readdirSync(out).sort(), recs.map((r) => r.path.slice(out.length + 1)).sort());
    for (const r of recs) {
      const ws = readWorkingSet(r.path);
      assert.equal(ws.offsets.length, PAGES, 'readahead 1: every page faulted');
      assert.equal(ws.ended, 'client gone');
      assert.deepEqual(ws.snapshot, snapshotIdentity(MEMORY));
      assert.ok((ws.serviceMicros?.count ?? 0) >= PAGES);
    }
    const diff = uffd('ws', 'diff', recs[0]?.path ?? '', recs[1]?.path ?? '', '--json');
    assert.equal(diff.status, 0, diff.stderr);
    assert.equal((JSON.parse(diff.stdout) as { jaccard: number }).jaccard, 1);
    const stats = uffd('ws', 'stats', recs[0]?.path ?? '');
    assert.equal(stats.status, 0, stats.stderr);
    assert.match(stats.stdout, new RegExp(`${String(PAGES)} pages of 4 KiB \\(2\\.0 MiB\\)`));
  });

  test('disjoint halves diff to Jaccard 0; their merge prefetches the whole memory for the next client', async () => {
    const out = join(dir, 'halves');
    const half = String(MEMORY_BYTES / 2);
    const { logs } = await restore({ record: out }, [['--size', half], ['--file-offset', half]]);
    const [a, b] = recorded(logs).map((r) => r.path);
    assert.ok(a !== undefined && b !== undefined);
    const diff = uffd('ws', 'diff', a, b, '--json');
    assert.equal(diff.status, 0, diff.stderr);
    assert.deepEqual(JSON.parse(diff.stdout), { jaccard: 0, both: 0, onlyA: PAGES / 2, onlyB: PAGES / 2, sameSnapshot: true });
    const merged = join(dir, 'merged.json');
    const merge = uffd('ws', 'merge', a, b, '--out', merged);
    assert.equal(merge.status, 0, merge.stderr);
    assert.equal(readWorkingSet(merged).offsets.length, PAGES);
    assert.equal(uffd('ws', 'merge', a, b, '--out', merged).status, 1, 'an existing output is never replaced');
    // Lingering: the prefetch walks the whole record in the background, racing the guest's own faults.
    const { logs: next } = await restore({ prefetch: merged }, [['--random', '--linger', '2000']]);
    const prefetched = next.find((e) => e.event === 'prefetched');
    assert.ok(prefetched?.event === 'prefetched', JSON.stringify(next));
    assert.equal(prefetched.pages, PAGES);
  });

  test('the settle detector ends a record while its client still runs', async () => {
    const out = join(dir, 'settle');
    const { logs } = await restore({ record: out, recordSettleMs: 100 }, [['--linger', '1500']]);
    const rec = recorded(logs)[0];
    assert.equal(rec?.ended, 'settled');
    assert.ok(logs.findIndex((e) => e.event === 'recorded') < logs.findIndex((e) => e.event === 'gone'), 'written before the client went');
    assert.equal(readWorkingSet(rec.path).offsets.length, PAGES);
    assert.equal(readdirSync(out).length, 1, 'one record only: nothing again when the client goes');
  });

  test('--prefetch refuses a cut-short record, an old list and another snapshot\'s record', async () => {
    const sub = join(dir, 'bad');
    mkdirSync(sub);
    const good = join(sub, 'good.json');
    writeWorkingSet(good, record([0, 4096]));
    const cut = join(sub, 'cut.json');
    writeFileSync(cut, readFileSync(good, 'utf8').slice(0, 40));
    const old = join(sub, 'old.txt');
    writeFileSync(old, '0\n4096\n');
    const foreign = join(sub, 'foreign.json');
    writeWorkingSet(foreign, record([0], { snapshot: { size: MEMORY_BYTES, fingerprint: 'sha256-sampled:00' } }));
    for (const [path, reason] of [[cut, /cut short/], [old, /older uffd/], [foreign, /another snapshot/]] as [string, RegExp][]) {
      await assert.rejects(PageServer.listen({ socket: join(dir, `w${String(sockets++)}.sock`), memory: MEMORY, prefetch: path }), (err: unknown) => err instanceof WorkingSetError && reason.test(err.message));
      const cli = uffd('serve', '--socket', join(dir, `w${String(sockets++)}.sock`), '--memory', MEMORY, '--prefetch', path);
      assert.equal(cli.status, 1);
      assert.match(cli.stderr, reason);
    }
  });
});
