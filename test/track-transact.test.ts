// The pagemap_ioctl "transact" test, for both tracking methods and every memory type: writer threads of
// another process keep writing while the tracker collects and resets; every collected page is copied into a
// replica. No dirty page may be lost: once the writers stop and a last collect is copied, the replica equals
// the memory byte for byte. A write that lands unreported (a page left writable without being marked, a
// reset that re-protects after a write it did not report) leaves the replica stale and fails the test.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { DirtyTracker, probe } from '../src/index.js';
import type { FeatureName } from '../src/index.js';
import { hugePagesFor, skipUnless } from './support/helper.js';
import type { MapKind } from './support/helper.js';
import { Writers } from './support/wp-writers.js';

// 100 on the host; fewer where UFFD_TEST_SCALE slows down (the kernel matrix runs in an emulated guest).
const ROUNDS = Math.max(20, Math.round(100 * Number(process.env.UFFD_TEST_SCALE ?? '1')));
const THREADS = 3;
const KINDS: { kind: MapKind; pages: number }[] = [
  { kind: 'anon', pages: 256 }, { kind: 'shmem', pages: 256 }, { kind: 'shmem-private', pages: 256 },
  { kind: 'hugetlb', pages: 4 }, { kind: 'hugetlb-private', pages: 4 },
];

for (const method of ['async', 'sync'] as const) {
  for (const { kind, pages } of KINDS) {
    const features: FeatureName[] = method === 'async' ? ['WP_ASYNC'] : probe().features.has('WP_UNPOPULATED') ? ['WP_UNPOPULATED'] : [];
    const wpFeature: FeatureName = kind === 'anon' ? 'PAGEFAULT_FLAG_WP' : 'WP_HUGETLBFS_SHMEM';
    const skip = skipUnless({ features: method === 'async' ? ['WP_ASYNC'] : [wpFeature], hugePages: hugePagesFor(kind, pages) });
    test(`transact (${method}, ${kind}): writers and resets racing for ${String(ROUNDS)} rounds lose no dirty page`, { skip }, async () => {
      // Without WP_UNPOPULATED never-touched anonymous pages cannot be protected: the writer populates first.
      const writers = await Writers.start(kind, pages, features, { touch: !features.includes('WP_UNPOPULATED') && method === 'sync' });
      try {
        using tracker = DirtyTracker.open(writers.range, { method, process: { uffd: writers.uffd, pid: writers.pid } });
        assert.equal(tracker.method, method);
        const replica = writers.read(0, writers.length);
        await writers.startWriting(THREADS);
        // The rounds race the writers only once writes flow ('sync': once the resolver thread has started).
        await tracker.ready;
        while (tracker.collect({ reset: false }).pages === 0) await sleep(1);
        let collected = 0;
        for (let round = 0; round < ROUNDS; round++) {
          await sleep(round % 3);
          const { ranges, pages: dirty } = tracker.collect();
          for (const r of ranges) writers.read(r.offset, r.length, replica.subarray(r.offset, r.offset + r.length));
          collected += dirty;
        }
        const writes = await writers.stopWriting();
        for (const r of tracker.collect().ranges) writers.read(r.offset, r.length, replica.subarray(r.offset, r.offset + r.length));
        assert.ok(writes > 0 && collected > 0, `the writers wrote (${String(writes)} writes) and the tracker saw it (${String(collected)} pages)`);
        const memory = writers.read(0, writers.length);
        const stale = firstDifference(replica, memory);
        assert.equal(stale, -1, `replica stale at byte ${String(stale)} (page ${String(Math.floor(stale / writers.pageSize))}): a write was lost`);
      } finally {
        await writers.close();
      }
    });
  }
}

function firstDifference(a: Uint8Array, b: Uint8Array): number {
  if (Buffer.compare(a, b) === 0) return -1;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return a.length;
}
