// What a fault message says, with the faults raised by threads of the native helper: the thread id
// (THREAD_ID), the address (page-masked, or exact with EXACT_ADDRESS; huge-page-masked on hugetlb), the
// write flag, and the duplicate message a signal produces.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { IoctlSet } from '../src/index.js';
import type { MapKind } from './support/helper.js';
import { asFault, byteSum, hugePagesFor, nextEvents, skipUnless, withHelper } from './support/helper.js';

test('THREAD_ID: each fault carries the tid of the helper thread that raised it', { skip: skipUnless({ features: ['THREAD_ID'] }) }, async () => {
  await withHelper(async (helper) => {
    await helper.createUffd(['THREAD_ID']);
    const threads = 3;
    const map = await helper.map(0, 'anon', threads);
    // Registered by the owner before it hands the uffd over, as a VMM does.
    const [ioctls] = await helper.command('register 0 1');
    assert.ok(IoctlSet.fromMask(BigInt(ioctls!)).has('ZEROPAGE'));
    using uffd = await helper.takeUffd();
    await helper.touch('t', map, { threads }); // thread i faults on page i
    const tids = await Promise.all(Array.from({ length: threads }, (_, i) => helper.tid('t', i)));
    assert.equal(new Set(tids).size, threads);
    const faults = (await nextEvents(uffd, threads)).map(asFault);
    for (const fault of faults) {
      const page = Number((fault.address - map.address) / BigInt(map.pageSize));
      assert.equal(fault.threadId, tids[page], `page ${String(page)}`);
      uffd.zeropage(map.range(page, 1));
    }
    assert.deepEqual(await helper.touched('t'), { sum: 0n, sigbuses: 0 });
  });
});

const CASES: { kind: MapKind; offset: number }[] = [
  { kind: 'anon', offset: 0x123 },
  { kind: 'shmem', offset: 0xff8 },
  { kind: 'hugetlb', offset: 0x12345 },
];

for (const { kind, offset } of CASES) {
  for (const exact of [false, true]) {
    const name = exact ? 'EXACT_ADDRESS: the byte touched' : 'by default: the page (huge page on hugetlb), masked';
    const skip = skipUnless({ features: exact ? ['EXACT_ADDRESS'] : [], hugePages: hugePagesFor(kind, 2) });
    test(`fault address ${name}; write flag; no thread id without THREAD_ID (${kind})`, { skip }, async () => {
      await withHelper(async (helper) => {
        await helper.createUffd(exact ? ['EXACT_ADDRESS'] : []);
        const map = await helper.map(0, kind, 2);
        using uffd = await helper.takeUffd();
        uffd.register(map.range(), { missing: true });

        await helper.touch('r', map, { page: 1, offset });
        const read = asFault((await nextEvents(uffd, 1))[0]);
        assert.equal(read.address, map.page(1) + (exact ? BigInt(offset) : 0n));
        assert.equal(read.write, false);
        assert.equal(read.kind, 'missing');
        assert.equal(read.threadId, 0);
        // An exact address must be masked before resolving: the ioctls need a page-aligned destination.
        const data = new Uint8Array(map.pageSize).fill(1);
        uffd.copy(read.address - (read.address % BigInt(map.pageSize)), data);
        assert.deepEqual(await helper.touched('r'), { sum: byteSum(data), sigbuses: 0 });

        await helper.touch('w', map, { page: 0, offset, write: 7 });
        const write = asFault((await nextEvents(uffd, 1))[0]);
        assert.equal(write.address, map.page(0) + (exact ? BigInt(offset) : 0n));
        assert.equal(write.write, true);
        uffd.copy(map.page(0), new Uint8Array(map.pageSize)); // not ZEROPAGE: hugetlb has none
        assert.deepEqual(await helper.touched('w'), { sum: 7n, sigbuses: 0 });
      });
    });
  }
}

test('a signal to a thread blocked in a fault gives a second message for the same address; COPY, then EEXIST + WAKE', { skip: skipUnless() }, async () => {
  await withHelper(async (helper) => {
    await helper.createUffd([]);
    const map = await helper.map(0, 'anon', 1);
    using uffd = await helper.takeUffd();
    uffd.register(map.range(), { missing: true });

    await helper.touch('s', map, { offset: 16 });
    const tid = await helper.tid('s');
    const first = asFault((await nextEvents(uffd, 1))[0]);
    // The handler runs, the access is retried, and the fault is reported again.
    await helper.command(`signal ${String(tid)}`);
    const second = asFault((await nextEvents(uffd, 1))[0]);
    assert.equal(second.address, first.address);
    assert.equal(helper.seen(/^done s /), false);

    const data = new Uint8Array(map.pageSize).fill(0x77);
    assert.equal(uffd.copy(first.address, data), map.pageSize);
    // The resolver serving the duplicate finds the page present; WAKE makes sure nobody sleeps on it.
    assert.throws(() => uffd.copy(second.address, data), { name: 'UffdError', code: 'EEXIST', bytes: 0 });
    uffd.wake({ address: second.address, length: map.pageSize });
    assert.deepEqual(await helper.touched('s'), { sum: byteSum(data), sigbuses: 0 });
    assert.deepEqual(uffd.read(), []);
  });
});
