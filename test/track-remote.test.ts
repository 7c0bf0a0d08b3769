// Write protection of another process's memory through a uffd its creator registered (the page-server
// case: a VMM registers its memory MISSING and hands the uffd over). The holder may add WP mode to those
// ranges itself: UFFDIO_REGISTER acts on the uffd's mm, and registering a range again on the same uffd may
// add modes. Then WP faults reach the holder, and a WP_ASYNC uffd can be dirty-tracked while its missing
// faults are still served.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { DirtyTracker } from '../src/index.js';
import { asFault, hugePagesFor, nextEvents, skipUnless, withHelper } from './support/helper.js';
import type { MapKind } from './support/helper.js';

const KINDS: MapKind[] = ['anon', 'shmem', 'hugetlb'];

function vmFlags(pid: number, address: bigint): string[] {
  const smaps = readFileSync(`/proc/${String(pid)}/smaps`, 'latin1');
  const at = smaps.search(new RegExp(`^${address.toString(16)}-`, 'm'));
  return /VmFlags:(.*)/.exec(smaps.slice(at))?.[1]?.trim().split(' ') ?? [];
}

for (const kind of KINDS) {
  const wp = kind === 'anon' ? 'PAGEFAULT_FLAG_WP' : 'WP_HUGETLBFS_SHMEM';
  test(`the holder of a creator's uffd adds WP mode to a range the creator registered MISSING (${kind})`, { skip: skipUnless({ features: [wp], hugePages: hugePagesFor(kind, 2) }) }, async () => {
    await withHelper(async (helper) => {
      await helper.createUffd([]);
      const map = await helper.map(1, kind, 2);
      await helper.touch('w', map, { write: 1 });
      await helper.touched('w');
      await helper.command('register 1 1'); // MISSING, by the creator
      using uffd = await helper.takeUffd();
      assert.throws(() => { uffd.writeProtect(map.range(), true); }, { code: 'ENOENT' }, 'not WP-registered yet');
      const ioctls = uffd.register(map.range(), { missing: true, wp: true });
      assert.ok(ioctls.has('WRITEPROTECT'));
      assert.ok(vmFlags(helper.pid, map.address).includes('um') && vmFlags(helper.pid, map.address).includes('uw'));
      uffd.writeProtect(map.range(0, 1), true);
      await helper.touch('t', map, { write: 2 });
      const fault = asFault((await nextEvents(uffd, 1))[0]);
      assert.deepEqual([fault.kind, fault.write, fault.address], ['wp', true, map.address]);
      uffd.writeProtect(map.range(0, 1), false);
      await helper.touched('t');
      // The missing half still works: the untouched page faults as MISSING.
      await helper.touch('m', map, { page: 1 });
      const missing = asFault((await nextEvents(uffd, 1))[0]);
      assert.deepEqual([missing.kind, missing.address], ['missing', map.page(1)]);
      uffd.copy(map.page(1), new Uint8Array(map.pageSize));
      await helper.touched('m');
    });
  });
}

test('an async DirtyTracker on a WP_ASYNC uffd whose range its creator registered MISSING keeps MISSING, and missing faults are still served', { skip: skipUnless({ features: ['WP_ASYNC'] }) }, async () => {
  await withHelper(async (helper) => {
    await helper.createUffd(['WP_ASYNC']);
    const map = await helper.map(1, 'anon', 4);
    await helper.touch('w', map, { pages: 2, write: 1 }); // pages 0 and 1 populated, 2 and 3 untouched
    await helper.touched('w');
    await helper.command('register 1 1');
    using uffd = await helper.takeUffd();
    using tracker = DirtyTracker.open(map.range(), { process: { uffd, pid: helper.pid } });
    assert.equal(tracker.method, 'async');
    assert.ok(vmFlags(helper.pid, map.address).includes('um'), 'MISSING kept');
    await helper.touch('t', map, { page: 1, write: 2 });
    await helper.touched('t');
    await helper.touch('m', map, { page: 3, write: 3 });
    const missing = asFault((await nextEvents(uffd, 1))[0]);
    assert.deepEqual([missing.kind, missing.address], ['missing', map.page(3)]);
    uffd.copy(map.page(3), new Uint8Array(4096));
    await helper.touched('m');
    // Page 1 was written; page 3 was filled by the holder and then written by the program.
    assert.deepEqual(tracker.collect().ranges.map((r) => r.offset / 4096), [1, 3]);
  });
});

test("a 'sync' tracker refuses a range registered MISSING on its uffd (it would take the messages meant for the resolver)", { skip: skipUnless({ features: ['PAGEFAULT_FLAG_WP'] }) }, async () => {
  await withHelper(async (helper) => {
    await helper.createUffd([]);
    const map = await helper.map(1, 'anon', 2);
    await helper.command('register 1 1');
    using uffd = await helper.takeUffd();
    assert.throws(() => DirtyTracker.open(map.range(), { method: 'sync', process: { uffd, pid: helper.pid } }), /missing or minor faults/);
  });
});
