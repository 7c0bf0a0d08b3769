// Snapshot of this process's memory while the JS thread writes into it (the faults go to the snapshot's
// worker): the file is the memory as it was when start() resolved, on every memory type; incremental
// snapshots through a 'sync' tracker applied onto their base give the memory at the last one; abort, a full
// disk and process.exit() leave the writers running and no file posing as a snapshot.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { applyIncremental, DirtyTracker, Mapping, readDeltaIndex, Snapshot } from '../src/index.js';
import { MEMORY_TYPES, needs } from './support/memory-types.js';
import { isRoot, ROOT } from './support/support.js';

function scratchDir(): { dir: string; [Symbol.dispose](): void } {
  const dir = mkdtempSync(join(tmpdir(), 'uffd-snapshot-'));
  return { dir, [Symbol.dispose]: () => { rmSync(dir, { recursive: true, force: true }); } };
}

function scribble(bytes: Uint8Array, pageSize: number, seed: number, count: number): void {
  for (let i = 0; i < count; i++) {
    const page = (seed * 7919 + i * 104729) % (bytes.length / pageSize);
    bytes[page * pageSize + ((seed + i) % pageSize)] = (seed + i) & 0xff || 1;
  }
}

for (const type of MEMORY_TYPES) {
  const skip = type.skip || needs(type.name === 'anon' ? 'PAGEFAULT_FLAG_WP' : 'WP_HUGETLBFS_SHMEM');
  describe(`Snapshot (${type.name})`, { skip }, () => {
    const pages = type.hugetlb ? 6 : 512;

    test('the file is the memory as it was when start() resolved, while the JS thread writes', async () => {
      const mem = type.make(pages);
      using scratch = scratchDir();
      try {
        const bytes = new Uint8Array(mem.mapping.buffer);
        scribble(bytes, type.pageSize, 1, 300);
        const before = Buffer.from(bytes);
        const path = join(scratch.dir, 'image');
        const snapshot = await Snapshot.start(mem.mapping, { path });
        scribble(bytes, type.pageSize, 2, 300); // each first write to a page not yet copied waits for its copy
        const stats = await snapshot.done;
        assert.deepEqual(snapshot.progress(), { pagesCopied: pages, pagesTotal: pages });
        assert.equal(stats.pagesCopied, pages);
        assert.equal(stats.bytes, mem.mapping.length);
        assert.ok(stats.writerFaults > 0, 'the writes faulted');
        assert.ok(Buffer.from(readFileSync(path)).equals(before), 'file == memory at the snapshot instant');
        assert.ok(!Buffer.from(bytes).equals(before), 'the writes landed in memory');
        assert.deepEqual(readdirSync(scratch.dir), ['image'], 'no temporary file left');
        bytes.fill(9); // unprotected afterwards: nothing waits for a resolver
      } finally {
        mem.close();
      }
    });

    test("incremental snapshots through a 'sync' tracker, applied onto the base, give the memory at the last one", async () => {
      const mem = type.make(pages);
      using scratch = scratchDir();
      try {
        const bytes = new Uint8Array(mem.mapping.buffer);
        scribble(bytes, type.pageSize, 3, 50);
        using tracker = DirtyTracker.open(mem.mapping, { method: 'sync' });
        const base = join(scratch.dir, 'base');
        const full = await Snapshot.start(mem.mapping, { path: base, tracker });
        scribble(bytes, type.pageSize, 4, type.hugetlb ? 2 : 20);
        await full.done;
        let expected = Buffer.from(bytes);
        for (let round = 0; round < 3; round++) {
          const delta = join(scratch.dir, `delta-${String(round)}`);
          expected = Buffer.from(bytes);
          const snapshot = await Snapshot.start(mem.mapping, { path: delta, incremental: tracker });
          scribble(bytes, type.pageSize, 5 + round, type.hugetlb ? 2 : 20);
          const stats = await snapshot.done;
          const index = readDeltaIndex(delta);
          assert.equal(index.pageSize, type.pageSize);
          assert.equal(index.length, mem.mapping.length);
          assert.equal(index.dataBytes, stats.bytes);
          assert.ok(stats.pagesCopied > 0 && stats.pagesCopied < pages, `only the written pages (${String(stats.pagesCopied)} of ${String(pages)})`);
          assert.deepEqual(applyIncremental(base, delta), { bytes: stats.bytes, ranges: index.ranges.length });
        }
        assert.ok(Buffer.from(readFileSync(base)).equals(expected), 'base + increments == memory at the last increment');
        // The tracker went on tracking: what the last round wrote is dirty.
        assert.ok(tracker.collect().pages > 0);
      } finally {
        mem.close();
      }
    });
  });
}

describe('Snapshot failures', { skip: needs('PAGEFAULT_FLAG_WP') }, () => {
  test('abort(): done rejects, no file, the writers run on', async () => {
    using mapping = Mapping.anonymous(4096 * 4096);
    using scratch = scratchDir();
    const bytes = new Uint8Array(mapping.buffer);
    bytes.fill(1);
    const path = join(scratch.dir, 'image');
    const snapshot = await Snapshot.start(mapping, { path });
    snapshot.abort();
    await assert.rejects(snapshot.done, { name: 'AbortError' });
    bytes.fill(2); // would hang if a page stayed protected
    assert.deepEqual(readdirSync(scratch.dir), []);
  });

  test('a full disk fails the snapshot: no file, the writers run on, memory intact', { skip: isRoot ? false : 'mounting a small tmpfs needs root' }, async () => {
    using scratch = scratchDir();
    const disk = join(scratch.dir, 'small');
    mkdirSync(disk);
    const mount = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', disk]);
    if (mount.status !== 0) return assert.fail(`mount -t tmpfs failed: ${mount.stderr.toString()}`);
    try {
      using mapping = Mapping.anonymous(1 << 20);
      const bytes = new Uint8Array(mapping.buffer);
      bytes.fill(3);
      const snapshot = await Snapshot.start(mapping, { path: join(disk, 'image') });
      bytes.fill(4, 0, 1 << 19); // copy-before-write, some of it failing on the full disk
      await assert.rejects(snapshot.done, /ENOSPC/);
      bytes.fill(5);
      assert.equal(bytes[(1 << 20) - 1], 5);
      assert.deepEqual(readdirSync(disk), []);
    } finally {
      spawnSync('umount', [disk]);
    }
  });

  test('process.exit() during a snapshot does not hang and leaves no temporary file', () => {
    using scratch = scratchDir();
    const r = spawnSync(process.execPath, [join(ROOT, 'dist', 'test', 'fixtures', 'snapshot-exit.js'), scratch.dir], { timeout: 60_000 });
    assert.equal(r.status, 0, `exit ${String(r.status)} ${String(r.signal)}: ${r.stderr.toString()}`);
    assert.deepEqual(readdirSync(scratch.dir), []);
  });

  test("an incremental snapshot needs a 'sync' tracker; bad options throw before any syscall", async () => {
    using mapping = Mapping.anonymous(4 * 4096);
    using scratch = scratchDir();
    const path = join(scratch.dir, 'x');
    await assert.rejects(Snapshot.start(mapping, { path: '' }), TypeError);
    await assert.rejects(Snapshot.start(mapping, { path, increment: 1 } as never), /unknown option/);
    await assert.rejects(Snapshot.start(mapping, { path, incremental: {} as never }), /DirtyTracker/);
    if (needs('WP_ASYNC') === false) {
      using tracker = DirtyTracker.open(mapping, { method: 'async' });
      await assert.rejects(Snapshot.start(mapping, { path, incremental: tracker }), /method 'sync'/);
    }
    await assert.rejects(Snapshot.start(mapping, { path: join(scratch.dir, 'no-such-dir', 'x') }), { code: 'ENOENT' });
    assert.equal(existsSync(path), false);
  });
});
