// The life of a uffd owned by another process: after the owner exits, ioctls give ESRCH (REGISTER ENOMEM)
// and the uffd itself never says so (no POLLHUP, no EOF: read is EAGAIN), so a monitor watches a pidfd.
// Closing the last descriptor, or unregistering, wakes threads blocked in MISSING faults.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { probe } from '../src/index.js';
import { native } from '../src/binding.js';
import type { MapKind } from './support/helper.js';
import { asFault, hugePagesFor, nextEvents, skipUnless, threadState, withHelper } from './support/helper.js';

const EAGAIN = -11;

test('after the owner exits: resolve ioctls ESRCH, register ENOMEM, read EAGAIN (no EOF); the pidfd tells', { skip: skipUnless() }, async () => {
  await withHelper(async (helper) => {
    await helper.createUffd([]);
    const anon = await helper.map(0, 'anon', 2);
    const shmem = await helper.map(1, 'shmem', 2);
    using uffd = await helper.takeUffd();
    uffd.register(anon.range(), { missing: true, wp: true });
    uffd.register(shmem.range(), { missing: true, minor: true });

    helper.send('exit 0');
    await helper.exitedByPidfd(); // the pidfd is readable once the process has exited (its mm is gone)

    const page = new Uint8Array(anon.pageSize);
    const esrch = { name: 'UffdError', code: 'ESRCH' };
    assert.throws(() => uffd.copy(anon.page(0), page), esrch);
    assert.throws(() => uffd.zeropage(anon.range(0, 1)), esrch);
    if (probe().features.has('POISON')) assert.throws(() => uffd.poison(anon.range(0, 1)), esrch); // 6.6+
    assert.throws(() => { uffd.writeProtect(anon.range(0, 1), true); }, esrch);
    assert.throws(() => uffd.continue(shmem.range(0, 1)), esrch);
    assert.throws(() => uffd.register(anon.range(), { missing: true }), { name: 'UffdError', code: 'ENOMEM' });
    // Not EOF (0) and not an error: the fd looks idle forever.
    assert.equal(native.read(uffd.fd, new Uint8Array(32)), EAGAIN);
    assert.deepEqual(uffd.read(), []);
  });
});

const KINDS: MapKind[] = ['anon', 'shmem', 'hugetlb'];
const THREADS = 3;

for (const kind of KINDS) {
  const skip = skipUnless({ hugePages: hugePagesFor(kind, 2 * THREADS) });

  test(`closing the last uffd descriptor wakes blocked faulters, which then read zero pages (${kind})`, { skip }, async () => {
    await withHelper(async (helper) => {
      await helper.createUffd([]);
      const map = await helper.map(0, kind, THREADS);
      const uffd = await helper.takeUffd(); // the helper closed its copy: this is the last descriptor
      try {
        uffd.register(map.range(), { missing: true });
        await helper.touch('c', map, { threads: THREADS, offset: 8 });
        const tids = await Promise.all(Array.from({ length: THREADS }, (_, i) => helper.tid('c', i)));
        const faults = (await nextEvents(uffd, THREADS)).map(asFault);
        assert.deepEqual(faults.map((f) => f.address).sort(), Array.from({ length: THREADS }, (_, i) => map.page(i)));
        for (const tid of tids) assert.equal(threadState(helper.pid, tid), 'S', 'the faulter sleeps interruptibly');
        assert.equal(helper.seen(/^done c /), false);
      } finally {
        uffd.close();
      }
      assert.deepEqual(await helper.touched('c'), { sum: 0n, sigbuses: 0 });
    });
  });

  test(`UFFDIO_UNREGISTER wakes blocked MISSING faulters (${kind})`, { skip }, async () => {
    await withHelper(async (helper) => {
      await helper.createUffd([]);
      const map = await helper.map(0, kind, 2 * THREADS);
      using uffd = await helper.takeUffd();
      uffd.register(map.range(), { missing: true });
      await helper.touch('u', map, { threads: THREADS, pages: 2 }); // thread i: pages 2i, 2i+1
      const faults = (await nextEvents(uffd, THREADS)).map(asFault);
      assert.deepEqual(faults.map((f) => f.address).sort(), Array.from({ length: THREADS }, (_, i) => map.page(2 * i)));
      assert.equal(helper.seen(/^done u /), false);
      uffd.unregister(map.range());
      // Woken, they fault again on an ordinary mapping: every page reads zeros and nothing more is queued.
      assert.deepEqual(await helper.touched('u'), { sum: 0n, sigbuses: 0 });
      assert.deepEqual(uffd.read(), []);
    });
  });
}
