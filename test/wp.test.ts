// Write protection: the selftests "wp" (protect, fault, unprotect) and "wp-unpopulated", COPY_MODE_WP, and
// WP_ASYNC's kernel-resolved faults seen in pagemap. Writes come from a threadpool read(2), resolved on the
// event loop.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, openSync, readSync } from 'node:fs';
import { Mapping, Userfaultfd } from '../src/index.js';
import type { UffdEventOf } from '../src/index.js';
import { ScratchFile, serve } from './support/faulter.js';
import { MEMORY_TYPES, needs } from './support/memory-types.js';
import { pattern } from './support/support.js';


function unprotectOnFault(uffd: Userfaultfd, pageSize: number): (event: UffdEventOf) => void {
  return (event) => {
    if (event.type === 'pagefault' && event.kind === 'wp') uffd.writeProtect({ address: event.address, length: pageSize, pageSize }, false);
  };
}

for (const type of MEMORY_TYPES) {
  const skip = type.skip || needs(type.name === 'anon' ? 'PAGEFAULT_FLAG_WP' : 'WP_HUGETLBFS_SHMEM');
  test(`wp: protect, fault, unprotect (${type.name})`, { skip }, async () => {
    const mem = type.make(1);
    try {
      using uffd = Userfaultfd.open();
      uffd.register(mem.mapping, { missing: true, wp: true });
      uffd.copy(mem.mapping.address, new Uint8Array(type.pageSize)); // populated, then protected
      uffd.writeProtect(mem.mapping, true);
      using file = new ScratchFile(pattern(1, type.pageSize));
      const server = serve(uffd, unprotectOnFault(uffd, type.pageSize));
      assert.equal(await file.readInto(new Uint8Array(mem.mapping.buffer)), type.pageSize);
      const events = await server.stop();
      assert.deepEqual(events.map((e) => e.type === 'pagefault' && [e.kind, e.write]), [['wp', true]]);
      assert.deepEqual(new Uint8Array(mem.mapping.buffer), pattern(1, type.pageSize));
    } finally {
      mem.close();
    }
  });
}

describe('wp-unpopulated (anon)', () => {
  test('with WP_UNPOPULATED, protecting empty pages makes the first write a WP fault', { skip: needs('WP_UNPOPULATED') }, async () => {
    using mapping = Mapping.anonymous(2 * 4096);
    using uffd = Userfaultfd.open({ require: ['WP_UNPOPULATED'] });
    uffd.register(mapping, { wp: true });
    uffd.writeProtect(mapping, true);
    using file = new ScratchFile(pattern(2, 2 * 4096));
    const server = serve(uffd, unprotectOnFault(uffd, 4096));
    assert.equal(await file.readInto(new Uint8Array(mapping.buffer)), 2 * 4096);
    const events = await server.stop();
    assert.deepEqual(events.map((e) => e.type === 'pagefault' && e.kind), ['wp', 'wp']);
    assert.deepEqual(new Uint8Array(mapping.buffer), pattern(2, 2 * 4096));
  });

  test('without it, protecting empty anon pages does nothing: the write proceeds, no message', { skip: needs('PAGEFAULT_FLAG_WP') }, async () => {
    using mapping = Mapping.anonymous(4096);
    using uffd = Userfaultfd.open();
    uffd.register(mapping, { wp: true });
    uffd.writeProtect(mapping, true);
    using file = new ScratchFile(pattern(3, 4096));
    assert.equal(await file.readInto(new Uint8Array(mapping.buffer)), 4096);
    assert.deepEqual(uffd.read(), []);
  });
});

test('copy with wp: true resolves the page write-protected: the next write is a WP fault', { skip: needs('PAGEFAULT_FLAG_WP') }, async () => {
  using mapping = Mapping.anonymous(4096);
  using uffd = Userfaultfd.open();
  uffd.register(mapping, { missing: true, wp: true });
  uffd.copy(mapping.address, pattern(4, 4096), { wp: true });
  using file = new ScratchFile(pattern(5, 4096));
  const server = serve(uffd, unprotectOnFault(uffd, 4096));
  await file.readInto(new Uint8Array(mapping.buffer));
  const events = await server.stop();
  assert.deepEqual(events.map((e) => e.type === 'pagefault' && e.kind), ['wp']);
  assert.deepEqual(new Uint8Array(mapping.buffer), pattern(5, 4096));
});

test('copy with wp: true on a range not registered for WP is EINVAL', () => {
  using mapping = Mapping.anonymous(4096);
  using uffd = Userfaultfd.open();
  uffd.register(mapping, { missing: true });
  assert.throws(() => uffd.copy(mapping.address, new Uint8Array(4096), { wp: true }), { code: 'EINVAL' });
});

test('WP_ASYNC: the kernel resolves write faults itself, pagemap bit 57 goes 1 -> 0, no message', { skip: needs('WP_ASYNC') }, async () => {
  using mapping = Mapping.anonymous(4096);
  using uffd = Userfaultfd.open({ require: ['WP_ASYNC'] });
  uffd.register(mapping, { wp: true });
  uffd.writeProtect(mapping, true);
  assert.equal(uffdWpBit(mapping.address), 1n);
  using file = new ScratchFile(pattern(6, 4096));
  await file.readInto(new Uint8Array(mapping.buffer));
  assert.equal(uffdWpBit(mapping.address), 0n);
  assert.deepEqual(uffd.read(), []);
  assert.deepEqual(new Uint8Array(mapping.buffer), pattern(6, 4096));
});

/** PM_UFFD_WP, bit 57 of the page's /proc/self/pagemap entry. */
function uffdWpBit(address: bigint): bigint {
  const entry = Buffer.alloc(8);
  const fd = openSync('/proc/self/pagemap', 'r');
  try {
    readSync(fd, entry, 0, 8, Number(address / 4096n) * 8);
  } finally {
    closeSync(fd);
  }
  return (entry.readBigUInt64LE(0) >> 57n) & 1n;
}
