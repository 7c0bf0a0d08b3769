// The SIGBUS feature (selftest "sigbus"): a fault on a registered missing page raises SIGBUS in the faulting
// thread, at the exact address, and queues nothing. The faulting thread is in the native helper: a Node
// thread cannot take SIGBUS.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { MapKind } from './support/helper.js';
import { byteSum, hugePagesFor, skipUnless, withHelper } from './support/helper.js';

const KINDS: MapKind[] = ['anon', 'shmem', 'shmem-private', 'hugetlb', 'hugetlb-private'];

for (const kind of KINDS) {
  const skip = skipUnless({ features: ['SIGBUS'], hugePages: hugePagesFor(kind, 2) });
  test(`SIGBUS feature (${kind}): the toucher gets SIGBUS at the exact address, nothing is queued; after COPY the page reads`, { skip }, async () => {
    await withHelper(async (helper) => {
      await helper.createUffd(['SIGBUS']);
      const map = await helper.map(0, kind, 2);
      using uffd = await helper.takeUffd();
      assert.ok(uffd.features.has('SIGBUS'), 'fdinfo says SIGBUS is enabled on the copied fd');
      uffd.register(map.range(), { missing: true });

      const offset = 0x123;
      await helper.touch('first', map, { page: 1, offset });
      const [, , , address] = await helper.expect(/^sigbus first 0 /);
      assert.equal(BigInt(address!), map.page(1) + BigInt(offset), 'si_addr is the byte touched, not the page');
      assert.deepEqual(await helper.touched('first'), { sum: 0n, sigbuses: 1 });
      // The touch is over, so any message it raised would already be queued.
      assert.deepEqual(uffd.read(), []);

      const data = new Uint8Array(map.pageSize).fill(0x5a);
      assert.equal(uffd.copy(map.page(1), data), map.pageSize);
      await helper.touch('again', map, { page: 1, offset });
      assert.deepEqual(await helper.touched('again'), { sum: byteSum(data), sigbuses: 0 });
      // A write to another missing page: SIGBUS too (a write fault is no different).
      await helper.touch('write', map, { page: 0, write: 9 });
      assert.deepEqual(await helper.touched('write'), { sum: 0n, sigbuses: 1 });
      assert.deepEqual(uffd.read(), []);
    });
  });
}
