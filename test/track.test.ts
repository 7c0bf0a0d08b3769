// DirtyTracker on this process's memory, per method and memory type: the JS thread writes (in 'sync' the
// faults go to the tracker's worker thread), reads are not writes, reset re-arms, close unprotects.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { DirtyTracker, Mapping, probe, UnsupportedFeatureError } from '../src/index.js';
import { MEMORY_TYPES, needs } from './support/memory-types.js';

const METHODS = ['async', 'sync'] as const;

for (const method of METHODS) {
  for (const type of MEMORY_TYPES) {
    const skip = type.skip || (method === 'async' ? needs('WP_ASYNC') : needs(type.name === 'anon' ? 'PAGEFAULT_FLAG_WP' : 'WP_HUGETLBFS_SHMEM'));
    describe(`DirtyTracker ${method} (${type.name})`, { skip }, () => {
      const pages = type.hugetlb ? 6 : 64;

      test('reports exactly the written pages, as merged runs; reads are not writes; reset re-arms', () => {
        const mem = type.make(pages);
        try {
          using tracker = DirtyTracker.open(mem.mapping, { method });
          assert.equal(tracker.method, method);
          assert.deepEqual(tracker.collect(), { ranges: [], pages: 0 });
          const bytes = new Uint8Array(mem.mapping.buffer);
          const ps = type.pageSize;
          bytes[1 * ps] = 1;
          bytes[2 * ps + 100] = 2;
          bytes[(pages - 1) * ps + ps - 1] = 3;
          assert.equal(bytes[0] ?? 0, 0); // a read of a never-touched page
          assert.deepEqual(tracker.collect({ reset: false }), { ranges: [{ offset: ps, length: 2 * ps }, { offset: (pages - 1) * ps, length: ps }], pages: 3 });
          assert.deepEqual(tracker.collect(), { ranges: [{ offset: ps, length: 2 * ps }, { offset: (pages - 1) * ps, length: ps }], pages: 3 });
          assert.deepEqual(tracker.collect(), { ranges: [], pages: 0 }, 'reset re-protected them');
          bytes[2 * ps] = 4;
          assert.deepEqual(tracker.collect(), { ranges: [{ offset: 2 * ps, length: ps }], pages: 1 });
          assert.deepEqual([bytes[ps], bytes[2 * ps + 100], bytes[2 * ps], bytes[(pages - 1) * ps + ps - 1]], [1, 2, 4, 3], 'every write landed');
        } finally {
          mem.close();
        }
      });

      test('memory written before open() is not dirty; close() unprotects (later writes proceed) and collect() then throws', () => {
        const mem = type.make(pages);
        try {
          const bytes = new Uint8Array(mem.mapping.buffer);
          bytes.fill(7, 0, type.pageSize * 2);
          const tracker = DirtyTracker.open(mem.mapping, { method });
          assert.equal(tracker.collect().pages, 0);
          tracker.close();
          tracker.close(); // idempotent
          bytes.fill(8); // would hang in 'sync' if a page stayed protected with nobody resolving
          assert.throws(() => tracker.collect(), { code: 'ERR_UFFD_CLOSED' });
          assert.equal(bytes[bytes.length - 1], 8);
        } finally {
          mem.close();
        }
      });

      test('a second tracker on the same memory is EBUSY (one uffd per range)', () => {
        const mem = type.make(pages);
        try {
          using first = DirtyTracker.open(mem.mapping, { method });
          assert.throws(() => DirtyTracker.open(mem.mapping, { method }), { code: 'EBUSY' });
          assert.equal(first.collect().pages, 0);
        } finally {
          mem.close();
        }
      });
    });
  }
}

test("method 'auto' is 'async' exactly where the kernel offers WP_ASYNC", { skip: needs('PAGEFAULT_FLAG_WP') }, () => {
  using mapping = Mapping.anonymous(4 * 4096);
  using tracker = DirtyTracker.open(mapping);
  assert.equal(tracker.method, probe().features.has('WP_ASYNC') ? 'async' : 'sync');
});

test("method 'async' without WP_ASYNC fails at open with the feature and its kernel", { skip: probe().features.has('WP_ASYNC') ? 'this kernel offers WP_ASYNC' : false }, () => {
  using mapping = Mapping.anonymous(4096);
  assert.throws(() => DirtyTracker.open(mapping, { method: 'async' }), (err: unknown) => err instanceof UnsupportedFeatureError && err.missing.includes('WP_ASYNC') && /6\.7/.test(err.message));
});

test('sync on anonymous memory: never-touched pages are tracked (WP_UNPOPULATED, or populated at open)', { skip: needs('PAGEFAULT_FLAG_WP') }, () => {
  using mapping = Mapping.anonymous(16 * 4096);
  using tracker = DirtyTracker.open(mapping, { method: 'sync' });
  new Uint8Array(mapping.buffer)[5 * 4096] = 1;
  assert.deepEqual(tracker.collect(), { ranges: [{ offset: 5 * 4096, length: 4096 }], pages: 1 });
});

test('bad arguments throw before any syscall', () => {
  using mapping = Mapping.anonymous(4096);
  assert.throws(() => DirtyTracker.open(mapping, { method: 'fast' as 'sync' }), TypeError);
  assert.throws(() => DirtyTracker.open(mapping, { methd: 'sync' } as never), /unknown option "methd"/);
  assert.throws(() => DirtyTracker.open({ address: 4097n, length: 4096 }), RangeError);
  assert.throws(() => DirtyTracker.open(mapping, { process: { pid: 1 } as never }), /process must be/);
  assert.throws(() => DirtyTracker.open(mapping, { process: { uffd: 1, pid: 1 } as never }), /process must be/);
  const closed = Mapping.anonymous(4096);
  closed.close();
  assert.throws(() => DirtyTracker.open(closed), { code: 'ERR_UFFD_CLOSED' });
  using tracker = DirtyTracker.open(mapping);
  assert.throws(() => tracker.collect({ reset: 1 as unknown as boolean }), TypeError);
});
