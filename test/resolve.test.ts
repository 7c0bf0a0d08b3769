// The resolve ioctls and their conventions (kernel.md §1.7): partial progress, EEXIST, ENOENT, EFAULT,
// result fields the kernel leaves unwritten, DONTWAKE + WAKE, and the selftests "zeropage" and "move".
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, openSync, readSync } from 'node:fs';
import { ioctlInfo, STRUCTS } from '../src/abi.js';
import { native } from '../src/binding.js';
import { readFdInfo } from '../src/core/uffdio-api.js';
import { Mapping, Userfaultfd } from '../src/index.js';
import { MEMORY_TYPES, needs } from './support/memory-types.js';
import { ScratchFile, serve, until } from './support/faulter.js';
import { anonHugeBytes } from './support/smaps.js';
import { PAGE, pattern } from './support/support.js';


for (const type of MEMORY_TYPES) {
  test(`zeropage (${type.name})`, { skip: type.skip }, () => {
    const mem = type.make(2);
    try {
      using uffd = Userfaultfd.open();
      const reported = uffd.register(mem.mapping, { missing: true });
      const page = { address: mem.mapping.address, length: type.pageSize, pageSize: type.pageSize };
      if (!reported.has('ZEROPAGE')) {
        assert.ok(type.hugetlb, 'only hugetlb lacks ZEROPAGE');
        assert.throws(() => uffd.zeropage(page), { code: 'EINVAL' });
        return;
      }
      assert.equal(uffd.zeropage(page), type.pageSize);
      const bytes = new Uint8Array(mem.mapping.view(0, type.pageSize));
      assert.ok(bytes.every((b) => b === 0));
      bytes.fill(0x77); // present now: no fault
      assert.throws(() => uffd.zeropage(page), { code: 'EEXIST' }, 'a second ZEROPAGE finds the page present');
      assert.ok(bytes.every((b) => b === 0x77), 'and leaves it alone (a ZEROPAGE that went through would have zeroed it)');
    } finally {
      mem.close();
    }
  });

  test(`copy then EEXIST, and the data lands (${type.name})`, { skip: type.skip }, () => {
    const mem = type.make(2);
    try {
      using uffd = Userfaultfd.open();
      uffd.register(mem.mapping, { missing: true });
      const data = pattern(7, type.pageSize);
      assert.equal(uffd.copy(mem.mapping.address + BigInt(type.pageSize), data), type.pageSize);
      assert.deepEqual(new Uint8Array(mem.mapping.view(type.pageSize, type.pageSize)), data);
      if (mem.alias !== undefined && type.name !== 'shmem-private' && type.name !== 'hugetlb-private') {
        assert.deepEqual(new Uint8Array(mem.alias.view(type.pageSize, type.pageSize)), data, 'shared: visible through the alias');
      }
      assert.throws(() => uffd.copy(mem.mapping.address + BigInt(type.pageSize), pattern(8, type.pageSize)), { code: 'EEXIST' });
      assert.deepEqual(new Uint8Array(mem.mapping.view(type.pageSize, type.pageSize)), data, 'the present page is never overwritten');
    } finally {
      mem.close();
    }
  });
}

test('copy: partial progress is continued, the real error is thrown with .bytes (8 pages, page 5 present)', () => {
  using mapping = Mapping.anonymous(8 * PAGE);
  using uffd = Userfaultfd.open();
  uffd.register(mapping, { missing: true });
  uffd.copy(mapping.address + 5n * BigInt(PAGE), pattern(5));
  const data = pattern(1, 8 * PAGE);
  assert.throws(() => uffd.copy(mapping.address, data), (err: { code?: string; bytes?: number; syscall?: string }) => {
    assert.equal(err.code, 'EEXIST'); // the kernel said EAGAIN with copy=20480; the retry at page 5 says why
    assert.equal(err.bytes, 20480);
    assert.equal(err.syscall, 'ioctl(UFFDIO_COPY)');
    return true;
  });
  assert.deepEqual(new Uint8Array(mapping.view(0, 5 * PAGE)), data.subarray(0, 5 * PAGE));
  assert.deepEqual(new Uint8Array(mapping.view(5 * PAGE, PAGE)), pattern(5), 'the present page was not overwritten');
  // Continuing after the present page is the caller's choice; the rest resolves.
  assert.equal(uffd.copy(mapping.address + 6n * BigInt(PAGE), data.subarray(6 * PAGE)), 2 * PAGE);
});

test('the kernel leaves the result field unwritten on early errors: raw ioctl keeps the sentinel', () => {
  using mapping = Mapping.anonymous(2 * PAGE);
  using uffd = Userfaultfd.open();
  uffd.register(mapping, { missing: true });
  const struct = new Uint8Array(STRUCTS.uffdio_copy.size);
  const view = new DataView(struct.buffer);
  const source = new Uint8Array(PAGE);
  view.setBigUint64(STRUCTS.uffdio_copy.dst, mapping.address + 1n, true); // unaligned dst
  view.setBigUint64(STRUCTS.uffdio_copy.src, native.addressOf(source), true);
  view.setBigUint64(STRUCTS.uffdio_copy.len, BigInt(PAGE), true);
  view.setBigInt64(STRUCTS.uffdio_copy.copy, 12345n, true);
  assert.equal(native.ioctl(uffd.fd, ioctlInfo('COPY').request, struct), -22);
  assert.equal(view.getBigInt64(STRUCTS.uffdio_copy.copy, true), 12345n, 'untouched: errno is the truth');
});

test('copy into an unregistered range is ENOENT with .bytes 0', () => {
  using mapping = Mapping.anonymous(PAGE);
  using uffd = Userfaultfd.open();
  assert.throws(() => uffd.copy(mapping.address, pattern(1)), { code: 'ENOENT', bytes: 0 });
});

test('continue with no page in the page cache is EFAULT', { skip: needs('MINOR_SHMEM') }, () => {
  using mapping = Mapping.memfd(2 * PAGE);
  using uffd = Userfaultfd.open();
  uffd.register(mapping, { minor: true });
  assert.throws(() => uffd.continue({ address: mapping.address, length: PAGE }), { code: 'EFAULT' });
});

describe('poison (ioctl level; the SIGBUS on access is tested in a helper process)', { skip: needs('POISON') }, () => {
  test('POISON resolves, a second POISON or a ZEROPAGE is EEXIST, a COPY over the marker succeeds', () => {
    using mapping = Mapping.anonymous(2 * PAGE);
    using uffd = Userfaultfd.open();
    uffd.register(mapping, { missing: true });
    const page = { address: mapping.address, length: PAGE };
    assert.equal(uffd.poison(page), PAGE);
    assert.throws(() => uffd.poison(page), { code: 'EEXIST' });
    assert.throws(() => uffd.zeropage(page), { code: 'EEXIST' });
    assert.equal(uffd.copy(mapping.address, pattern(3)), PAGE);
    assert.deepEqual(new Uint8Array(mapping.view(0, PAGE)), pattern(3));
  });
});

describe('move (anon, same process)', { skip: needs('MOVE') }, () => {
  test('pages move: dst has the data, src reads as zero afterwards', () => {
    using dst = Mapping.anonymous(4 * PAGE);
    using src = Mapping.anonymous(4 * PAGE);
    src.madvise('DONTFORK');
    src.madvise('NOHUGEPAGE');
    const data = pattern(9, 4 * PAGE);
    new Uint8Array(src.buffer).set(data);
    using uffd = Userfaultfd.open();
    uffd.register(dst, { missing: true });
    for (let i = 0n; i < 4n; i++) assert.equal(uffd.move(dst.address + i * BigInt(PAGE), src.address + i * BigInt(PAGE), PAGE), PAGE);
    assert.deepEqual(new Uint8Array(dst.buffer), data);
    assert.ok(new Uint8Array(src.buffer).every((b) => b === 0));
  });

  test('a hole in src is ENOENT, or counts as moved with allowSrcHoles; a populated dst is EEXIST', () => {
    using dst = Mapping.anonymous(4 * PAGE);
    using src = Mapping.anonymous(4 * PAGE);
    using uffd = Userfaultfd.open();
    uffd.register(dst, { missing: true });
    assert.throws(() => uffd.move(dst.address, src.address, PAGE), { code: 'ENOENT' });
    assert.equal(uffd.move(dst.address, src.address, PAGE, { allowSrcHoles: true }), PAGE);
    uffd.copy(dst.address + BigInt(PAGE), pattern(1));
    new Uint8Array(src.view(PAGE, PAGE)).fill(1);
    assert.throws(() => uffd.move(dst.address + BigInt(PAGE), src.address + BigInt(PAGE), PAGE), { code: 'EEXIST' });
  });

  test('move-pmd: a 2 MiB-aligned THP moves whole, as one PMD (dst is a huge page afterwards)', (t) => {
    const HUGE = 2 << 20;
    using dstArea = Mapping.anonymous(2 * HUGE);
    using srcArea = Mapping.anonymous(2 * HUGE);
    const align = (m: Mapping): number => Number((BigInt(HUGE) - (m.address % BigInt(HUGE))) % BigInt(HUGE));
    const dstOffset = align(dstArea);
    const srcOffset = align(srcArea);
    srcArea.madvise('HUGEPAGE', srcOffset, HUGE);
    dstArea.madvise('HUGEPAGE', dstOffset, HUGE);
    const data = pattern(4, HUGE);
    new Uint8Array(srcArea.view(srcOffset, HUGE)).set(data);
    const srcAddress = srcArea.address + BigInt(srcOffset);
    if ((anonHugeBytes(srcAddress) ?? 0) < HUGE) {
      t.skip('the kernel did not back the source with a transparent huge page (THP disabled or no free 2 MiB block): no PMD to move');
      return;
    }
    using uffd = Userfaultfd.open();
    const dst = { address: dstArea.address + BigInt(dstOffset), length: HUGE };
    uffd.register(dst, { missing: true });
    assert.equal(uffd.move(dst.address, srcAddress, HUGE), HUGE);
    assert.deepEqual(new Uint8Array(dstArea.view(dstOffset, HUGE)), data);
    // 512 PTE moves would leave dst in 4 KiB pages; the PMD path moves the huge page itself.
    assert.ok((anonHugeBytes(dst.address) ?? 0) >= HUGE, `dst is not a huge page after the move: AnonHugePages ${String(anonHugeBytes(dst.address))}`);
    assert.equal(anonHugeBytes(srcAddress) ?? 0, 0, 'the huge page left src');
  });

  test('move-pmd-split: a THP source moved into a NOHUGEPAGE destination is split, every byte lands', (t) => {
    const HUGE = 2 << 20;
    using dstArea = Mapping.anonymous(2 * HUGE);
    using srcArea = Mapping.anonymous(2 * HUGE);
    const align = (m: Mapping): number => Number((BigInt(HUGE) - (m.address % BigInt(HUGE))) % BigInt(HUGE));
    const dstOffset = align(dstArea);
    const srcOffset = align(srcArea);
    srcArea.madvise('HUGEPAGE', srcOffset, HUGE);
    dstArea.madvise('NOHUGEPAGE', dstOffset, HUGE);
    const data = pattern(5, HUGE);
    new Uint8Array(srcArea.view(srcOffset, HUGE)).set(data);
    const srcAddress = srcArea.address + BigInt(srcOffset);
    if ((anonHugeBytes(srcAddress) ?? 0) < HUGE) {
      t.skip('the kernel did not back the source with a transparent huge page: nothing to split');
      return;
    }
    using uffd = Userfaultfd.open();
    const dst = { address: dstArea.address + BigInt(dstOffset), length: HUGE };
    uffd.register(dst, { missing: true });
    // In page-sized steps, as upstream's split case: each move of part of the PMD splits it first.
    for (let off = 0; off < HUGE; off += 64 * PAGE) assert.equal(uffd.move(dst.address + BigInt(off), srcAddress + BigInt(off), 64 * PAGE), 64 * PAGE);
    assert.deepEqual(new Uint8Array(dstArea.view(dstOffset, HUGE)), data);
    assert.equal(anonHugeBytes(dst.address) ?? 0, 0, 'a NOHUGEPAGE destination holds no huge page');
    assert.ok(new Uint8Array(srcArea.view(srcOffset, HUGE)).every((b) => b === 0), 'src reads as zeros afterwards');
  });
});

describe('faults taken by a threadpool thread, resolved on the event loop', () => {
  test('copy with wake: false leaves the faulter asleep until wake()', async () => {
    using file = new ScratchFile(pattern(2));
    using mapping = Mapping.anonymous(PAGE);
    using uffd = Userfaultfd.open();
    uffd.register(mapping, { missing: true });
    let done = false;
    const reading = file.readInto(new Uint8Array(mapping.buffer)).then((n) => { done = true; return n; });
    const server = serve(uffd, (event) => {
      if (event.type === 'pagefault') uffd.copy(mapping.address, new Uint8Array(PAGE), { wake: false });
    });
    await until(() => readFdInfo(uffd.fd)?.pending === 0 && readFdInfo(uffd.fd)?.total === 1 && mappingPresent(mapping), 'the DONTWAKE copy');
    assert.equal(done, false, 'still asleep: nobody woke it');
    uffd.wake(mapping);
    assert.equal(await reading, PAGE);
    await server.stop();
    assert.deepEqual(new Uint8Array(mapping.buffer), pattern(2));
  });

  test('unregister wakes a blocked MISSING faulter (it then faults normally)', async () => {
    using file = new ScratchFile(pattern(3));
    using mapping = Mapping.anonymous(PAGE);
    using uffd = Userfaultfd.open();
    uffd.register(mapping, { missing: true });
    const reading = file.readInto(new Uint8Array(mapping.buffer));
    await until(() => readFdInfo(uffd.fd)?.total === 1, 'the fault');
    uffd.unregister(mapping);
    assert.equal(await reading, PAGE);
    assert.deepEqual(new Uint8Array(mapping.buffer), pattern(3));
  });

  test('closing the last descriptor wakes a blocked faulter', async () => {
    using file = new ScratchFile(pattern(4));
    using mapping = Mapping.anonymous(PAGE);
    const uffd = Userfaultfd.open();
    uffd.register(mapping, { missing: true });
    const reading = file.readInto(new Uint8Array(mapping.buffer));
    await until(() => readFdInfo(uffd.fd)?.total === 1, 'the fault');
    uffd.close();
    assert.equal(await reading, PAGE);
    assert.deepEqual(new Uint8Array(mapping.buffer), pattern(4));
  });

  test('userModeOnly: a kernel-mode fault is EFAULT instead of a message', async () => {
    using file = new ScratchFile(pattern(5));
    using mapping = Mapping.anonymous(PAGE);
    using uffd = Userfaultfd.open({ userModeOnly: true });
    uffd.register(mapping, { missing: true });
    await assert.rejects(file.readInto(new Uint8Array(mapping.buffer)), { code: 'EFAULT' });
    assert.deepEqual(uffd.read(), [], 'nothing was queued');
  });

  for (const exact of [false, true]) {
    test(`fault address ${exact ? 'exact with EXACT_ADDRESS' : 'page-masked by default'}; threadId only with THREAD_ID`, { skip: exact ? needs('EXACT_ADDRESS', 'THREAD_ID') : false }, async () => {
      using file = new ScratchFile(pattern(6, 100));
      using mapping = Mapping.anonymous(2 * PAGE);
      using uffd = Userfaultfd.open({ request: exact ? ['EXACT_ADDRESS', 'THREAD_ID'] : [] });
      uffd.register(mapping, { missing: true });
      const reading = file.readInto(new Uint8Array(mapping.buffer, PAGE + 123, 100));
      const server = serve(uffd, (event) => {
        if (event.type === 'pagefault') uffd.copy(mapping.address + BigInt(PAGE), new Uint8Array(PAGE));
      });
      assert.equal(await reading, 100);
      const [event] = await server.stop();
      assert.ok(event?.type === 'pagefault');
      assert.equal(event.address, mapping.address + BigInt(PAGE) + (exact ? 123n : 0n));
      assert.equal(event.kind, 'missing');
      assert.equal(event.write, true);
      if (exact) assert.ok(event.threadId > 0 && event.threadId !== process.pid, 'the pool thread\'s tid');
      else assert.equal(event.threadId, 0);
    });
  }
});

/** Whether the first page of `mapping` is populated, from /proc/self/pagemap (bit 63: present). */
function mappingPresent(mapping: Mapping): boolean {
  const pagemap = Buffer.alloc(8);
  const fd = openSync('/proc/self/pagemap', 'r');
  try {
    readSync(fd, pagemap, 0, 8, Number(mapping.address / BigInt(PAGE)) * 8);
  } finally {
    closeSync(fd);
  }
  return (pagemap.readBigUInt64LE(0) >> 63n) === 1n;
}
