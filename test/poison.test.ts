// UFFDIO_POISON (selftest "poison"), with the faulting threads in the native helper: a poisoned fault wakes
// its thread into SIGBUS; a poison marker is "present" for POISON (EEXIST) but a COPY replaces it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { MapKind } from './support/helper.js';
import { asFault, byteSum, hugePagesFor, nextEvents, skipUnless, withHelper } from './support/helper.js';

const KINDS: MapKind[] = ['anon', 'shmem', 'shmem-private', 'hugetlb', 'hugetlb-private'];
const PAGES = 4;

for (const kind of KINDS) {
  const skip = skipUnless({ features: ['POISON'], hugePages: hugePagesFor(kind, PAGES) });
  test(`POISON (${kind}): even pages poisoned -> SIGBUS at the address, odd pages copied; COPY over the marker works`, { skip }, async () => {
    await withHelper(async (helper) => {
      await helper.createUffd([]);
      const map = await helper.map(0, kind, PAGES);
      using uffd = await helper.takeUffd();
      const ioctls = uffd.register(map.range(), { missing: true });
      assert.ok(ioctls.has('POISON') && ioctls.has('COPY'), `register reports POISON and COPY: ${ioctls.toJSON().join(' ')}`);

      const offset = 0x40;
      await helper.touch('t', map, { pages: 1, threads: PAGES, offset }); // thread i faults on page i
      const faults = (await nextEvents(uffd, PAGES)).map(asFault);
      assert.deepEqual(faults.map((f) => f.address).sort(), Array.from({ length: PAGES }, (_, i) => map.page(i)));

      const data = new Uint8Array(map.pageSize).fill(0x3c);
      for (let i = 0; i < PAGES; i++) {
        if (i % 2 === 0) assert.equal(uffd.poison(map.range(i, 1)), map.pageSize);
        else assert.equal(uffd.copy(map.page(i), data), map.pageSize);
      }
      const sigbus = [await helper.expect(/^sigbus t /), await helper.expect(/^sigbus t /)];
      assert.deepEqual(
        sigbus.map(([, , thread, address]) => [Number(thread), BigInt(address!)]).sort((a, b) => Number(a[0]) - Number(b[0])),
        [[0, map.page(0) + BigInt(offset)], [2, map.page(2) + BigInt(offset)]],
        'exactly the poisoned pages raise SIGBUS, at the byte touched',
      );
      assert.deepEqual(await helper.touched('t'), { sum: 2n * byteSum(data), sigbuses: 2 });

      // The marker counts as present for POISON, and a second touch still gets SIGBUS (it stays).
      assert.throws(() => uffd.poison(map.range(0, 1)), { name: 'UffdError', code: 'EEXIST' });
      await helper.touch('still', map, { page: 0 });
      assert.deepEqual(await helper.touched('still'), { sum: 0n, sigbuses: 1 });
      // ...but COPY replaces it.
      for (const i of [0, 2]) assert.equal(uffd.copy(map.page(i), data), map.pageSize);
      await helper.touch('after', map, { pages: PAGES });
      assert.deepEqual(await helper.touched('after'), { sum: BigInt(PAGES) * byteSum(data), sigbuses: 0 });
      assert.deepEqual(uffd.read(), [], 'no fault left over');
    });
  });
}
