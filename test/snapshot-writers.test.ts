// A live snapshot of 64 MiB (UFFD_SNAPSHOT_MIB; the 256 is `UFFD_SNAPSHOT_MIB=256`) while three writer threads of another process keep writing sequence numbers
// (test/native/wp-writers.c), on every memory type, 20 times. Each thread's writes go to pages the test can
// replay (a known xorshift sequence), each leaving the thread's write count in the thread's slot of the page.
// The file must hold exactly the memory of one instant: for every thread, every page holds the thread's last
// write up to some count N, the same N for all pages (no later write, no missing earlier one). A page copied
// after a write reached it, or a write let through before its page was copied, breaks that.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { probe, Snapshot } from '../src/index.js';
import type { FeatureName } from '../src/index.js';
import { hugePagesFor, skipUnless } from './support/helper.js';
import type { MapKind } from './support/helper.js';
import { Writers } from './support/wp-writers.js';

const SCALE = Number(process.env.UFFD_TEST_SCALE ?? '1');
const MIB = 1 << 20;
const BYTES = Math.max(8, Math.round(Number(process.env.UFFD_SNAPSHOT_MIB ?? '64') * SCALE / 2) * 2) * MIB;
const REPEAT = Math.max(2, Math.round(20 * SCALE));
const THREADS = 3;
const KINDS: MapKind[] = ['anon', 'shmem', 'shmem-private', 'hugetlb', 'hugetlb-private'];
const HUGE = 2 * MIB;

for (const kind of KINDS) {
  const pages = kind.startsWith('hugetlb') ? BYTES / HUGE : BYTES / 4096;
  const wp: FeatureName = kind === 'anon' ? 'PAGEFAULT_FLAG_WP' : 'WP_HUGETLBFS_SHMEM';
  const skip = skipUnless({ features: [wp], hugePages: hugePagesFor(kind, pages) });
  test(`snapshot (${kind}, ${String(BYTES / MIB)} MiB, ${String(THREADS)} writers) equals the memory of one instant, ${String(REPEAT)} times`, { skip }, async () => {
    const unpopulated = probe().features.has('WP_UNPOPULATED');
    const writers = await Writers.start(kind, pages, unpopulated ? ['WP_UNPOPULATED'] : [], { touch: !unpopulated });
    // tmpfs where there is one: the test is about consistency, not about the disk's write speed.
    const dir = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'uffd-snapshot-'));
    try {
      await writers.startWriting(THREADS);
      let faults = 0;
      for (let round = 0; round < REPEAT; round++) {
        const path = join(dir, `image-${String(round)}`);
        const snapshot = await Snapshot.start(writers.range, { path, process: { uffd: writers.uffd, pid: writers.pid } });
        const stats = await snapshot.done;
        assert.equal(stats.bytes, BYTES);
        faults += stats.writerFaults;
        const image = readFileSync(path);
        assert.equal(image.length, BYTES);
        for (let t = 0; t < THREADS; t++) checkThread(image, t, `round ${String(round)}`);
        rmSync(path);
      }
      await writers.stopWriting();
      assert.ok(faults > 0, 'the writers wrote during the snapshots (some writes faulted)');
    } finally {
      rmSync(dir, { recursive: true, force: true });
      await writers.close();
    }
  });
}

/** Thread `t`'s slots in `image` are its memory after its N-th write for one N (replayed from its seed). */
function checkThread(image: Buffer, t: number, where: string): void {
  const smallPages = image.length / 4096;
  const seen = new Float64Array(smallPages);
  let n = 0;
  for (let p = 0; p < smallPages; p++) {
    const value = image.readBigUInt64LE(p * 4096 + 8 * t);
    if (value === 0n) continue;
    assert.equal(Number(value & 0xffn), t, `${where}: page ${String(p)} slot ${String(t)} holds another thread's value`);
    seen[p] = Number(value >> 8n);
    n = Math.max(n, seen[p] ?? 0);
  }
  // Replay writes 1..n: the page each one hit, and so each page's last write up to n.
  const expected = new Float64Array(smallPages);
  let x = Math.imul(t + 1, 0x9e3779b9) >>> 0;
  for (let i = 1; i <= n; i++) {
    x = (x ^ (x << 13)) >>> 0;
    x = (x ^ (x >>> 17)) >>> 0;
    x = (x ^ (x << 5)) >>> 0;
    expected[x % smallPages] = i;
  }
  for (let p = 0; p < smallPages; p++) {
    if (seen[p] !== expected[p]) {
      assert.fail(`${where}: thread ${String(t)} is at write ${String(n)} in the file, but page ${String(p)} holds its write ${String(seen[p])} instead of ${String(expected[p])}: not one instant`);
    }
  }
}
