// Selftest "mmap-changing": while a non-cooperative event is unread, every resolve ioctl fails with EAGAIN
// and the count field -EAGAIN. The library must throw code 'EAGAIN' at once (looping would spin forever: only
// reading the event clears it). The event comes from a helper thread blocked in madvise(MADV_REMOVE).
// UFFDIO_MOVE is left out: it only works from a thread of the process that owns the memory.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { probe } from '../src/index.js';
import { writeSync } from 'node:fs';
import { UffdError } from '../src/index.js';
import { byteSum, readable, skipUnless, threadState, withHelper } from './support/helper.js';

const skip = skipUnless({ features: ['EVENT_REMOVE', 'MISSING_SHMEM', 'MINOR_SHMEM', 'WP_HUGETLBFS_SHMEM'] });
// UFFDIO_POISON (6.6) is checked where the kernel has it; the other ioctls everywhere.
const hasPoison = probe().features.has('POISON');

test('mmap-changing (shmem): every resolve ioctl throws EAGAIN while a REMOVE is unread, and works once it is', { skip }, async () => {
  await withHelper(async (helper) => {
    await helper.createUffd(['EVENT_REMOVE']);
    const map = await helper.map(0, 'shmem', 6);
    using uffd = await helper.takeUffd();
    uffd.register(map.range(), { missing: true, wp: true, minor: true });
    // CONTINUE needs page 3 in the page cache: write it through the memfd, which maps nothing.
    const cached = new Uint8Array(map.pageSize).fill(0x44);
    assert.equal(writeSync(helper.takeFd(map.memfd), cached, 0, cached.length, 3 * map.pageSize), cached.length);

    const data = new Uint8Array(map.pageSize).fill(0x55);
    const page = (n: number) => map.range(n, 1);
    const ops: [string, () => unknown][] = [
      ['copy', () => uffd.copy(map.page(1), data)],
      ['zeropage', () => uffd.zeropage(page(2))],
      ['continue', () => uffd.continue(page(3))],
      ...(hasPoison ? [['poison', () => uffd.poison(page(4))] as [string, () => unknown]] : []),
      ['writeProtect', () => { uffd.writeProtect(page(5), true); }],
    ];

    await helper.command('madvise m 0 0 1 remove');
    const tid = await helper.tid('m');
    await readable(uffd.fd);
    assert.equal(threadState(helper.pid, tid), 'D');
    for (const [name, op] of ops) {
      assert.throws(op, (err: unknown) => {
        assert.ok(err instanceof UffdError, `${name}: ${String(err)}`);
        assert.equal(err.code, 'EAGAIN', `${name}: ${err.message}`);
        assert.equal(err.errno, -11);
        if (name !== 'writeProtect') assert.equal(err.bytes, 0, `${name}: nothing was resolved`);
        return true;
      });
    }
    assert.equal(helper.seen(/^done m /), false);

    assert.deepEqual(uffd.read(), [{ type: 'remove', start: map.page(0), end: map.page(1) }]);
    // The kernel lowers its "mm is changing" count in the madvise thread once it wakes, not in read(): an
    // ioctl right after read() can still see EAGAIN. Once madvise has returned it cannot.
    assert.deepEqual(await helper.expect(/^done m /), ['done', 'm', '0']);
    for (const [name, op] of ops) assert.doesNotThrow(op, name);

    await helper.touch('check', map, { page: 1, pages: hasPoison ? 4 : 3 });
    // copy: data; zeropage: zeros; continue: the page-cache page; poison: SIGBUS.
    assert.deepEqual(await helper.touched('check'), { sum: byteSum(data) + byteSum(cached), sigbuses: hasPoison ? 1 : 0 });
    assert.deepEqual(uffd.read(), []);
  });
});
