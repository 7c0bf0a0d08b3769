// The selftests "minor" and "minor-wp": the page is already in the page cache (filled through an alias
// mapping), the registered mapping faults on it, and CONTINUE maps it. The faulting access is a threadpool
// write(2) from the registered memory, resolved on the event loop.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { probe, Userfaultfd } from '../src/index.js';
import { ScratchFile, serve } from './support/faulter.js';
import { MEMORY_TYPES, needs } from './support/memory-types.js';
import { pattern } from './support/support.js';


// UFFDIO_CONTINUE_MODE_WP came in 6.4 without a feature bit of its own (before it, the mode is EINVAL).
// WP_UNPOPULATED came in the same release: the kernel selftest uses it as the stand-in, and so do we.
const continueWp = probe().features.has('WP_UNPOPULATED');
const continueWpSkip = continueWp ? false : 'CONTINUE_MODE_WP needs 6.4 (no feature bit; WP_UNPOPULATED, also 6.4, is not offered)';

for (const type of MEMORY_TYPES.filter((t) => t.name === 'shmem' || t.name === 'hugetlb')) {
  const minorFeature = type.hugetlb ? 'MINOR_HUGETLBFS' : 'MINOR_SHMEM';
  test(`minor: fill through the alias, CONTINUE, a second CONTINUE is EEXIST (${type.name})`, { skip: type.skip || needs(minorFeature) }, async () => {
    const mem = type.make(2);
    try {
      using uffd = Userfaultfd.open();
      assert.ok(uffd.register(mem.mapping, { minor: true }).has('CONTINUE'));
      const data = pattern(9, 2 * type.pageSize);
      new Uint8Array(mem.alias!.buffer).set(data); // page cache filled; the registered mapping has no PTEs
      using file = new ScratchFile(new Uint8Array(0));
      const server = serve(uffd, (event) => {
        if (event.type !== 'pagefault') return;
        assert.equal(event.kind, 'minor');
        const page = { address: event.address, length: type.pageSize, pageSize: type.pageSize };
        uffd.continue(page);
        assert.throws(() => uffd.continue(page), { code: 'EEXIST' });
      });
      assert.equal(await file.writeFrom(new Uint8Array(mem.mapping.buffer)), data.length);
      const events = await server.stop();
      assert.deepEqual(events.map((e) => e.type === 'pagefault' && [e.kind, e.write]), [['minor', false], ['minor', false]]);
      assert.deepEqual(new Uint8Array(readFileSync(file.path)), data);
    } finally {
      mem.close();
    }
  });

  const wpFeature = 'WP_HUGETLBFS_SHMEM';
  test(`minor-wp: CONTINUE with wp maps the page protected; the write then faults WP (${type.name})`, { skip: type.skip || needs(minorFeature, wpFeature) || continueWpSkip }, async () => {
    const mem = type.make(1);
    try {
      using uffd = Userfaultfd.open();
      uffd.register(mem.mapping, { minor: true, wp: true });
      new Uint8Array(mem.alias!.buffer).fill(0x11);
      const page = { address: mem.mapping.address, length: type.pageSize, pageSize: type.pageSize };
      using file = new ScratchFile(pattern(3, type.pageSize));
      const server = serve(uffd, (event) => {
        if (event.type !== 'pagefault') return;
        if (event.kind === 'minor') uffd.continue(page, { wp: true });
        else uffd.writeProtect(page, false);
      });
      assert.equal(await file.readInto(new Uint8Array(mem.mapping.buffer)), type.pageSize);
      const events = await server.stop();
      assert.deepEqual(events.map((e) => e.type === 'pagefault' && e.kind), ['minor', 'wp']);
      assert.deepEqual(new Uint8Array(mem.alias!.buffer), pattern(3, type.pageSize), 'written through to the shared page');
    } finally {
      mem.close();
    }
  });

  test(`before 6.4, CONTINUE with wp is EINVAL; without it the page maps (${type.name})`, { skip: type.skip || needs(minorFeature, wpFeature) || (continueWp ? 'this kernel has CONTINUE_MODE_WP' : false) }, () => {
    const mem = type.make(1);
    try {
      using uffd = Userfaultfd.open();
      uffd.register(mem.mapping, { minor: true, wp: true });
      new Uint8Array(mem.alias!.buffer).fill(0x22); // in the page cache: CONTINUE needs no pending fault
      const page = { address: mem.mapping.address, length: type.pageSize, pageSize: type.pageSize };
      assert.throws(() => uffd.continue(page, { wp: true }), { name: 'UffdError', code: 'EINVAL', syscall: 'ioctl(UFFDIO_CONTINUE)' });
      assert.equal(uffd.continue(page), type.pageSize);
    } finally {
      mem.close();
    }
  });
}
