// Ports of the kernel selftests on write-protect state as pagemap shows it (PM_UFFD_WP, bit 57):
// uffd-unit-tests "wp-unpopulated" (anon markers), "wp-fork" and "wp-fork-with-event" (the bit dropped or
// kept in a forked child, per memory type), uffd-wp-mremap (the bit cleared by mremap without EVENT_REMAP),
// and pagemap_ioctl's CHECK_WPASYNC refusal and bounded result vector. Each asserts what upstream asserts.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, openSync, readSync } from 'node:fs';
import { release } from 'node:os';
import { PAGE_IS, PAGEMAP_SCAN, PM_SCAN } from '../src/abi.js';
import { native } from '../src/binding.js';
import { PagemapScanner } from '../src/core/pagemap-scan.js';
import { Mapping, Userfaultfd } from '../src/index.js';
import type { FeatureName } from '../src/index.js';
import { hugePagesFor, nextEvents, skipUnless, withHelper } from './support/helper.js';
import type { MapKind } from './support/helper.js';
import { needs } from './support/memory-types.js';

const PM_UFFD_WP = 1n << 57n;

function kernelBefore(major: number, minor: number): boolean {
  const [a = 0, b = 0] = release().split('.').map((n) => Number.parseInt(n, 10));
  return a < major || (a === major && b < minor);
}
const KINDS: MapKind[] = ['anon', 'shmem', 'shmem-private', 'hugetlb', 'hugetlb-private'];

/** The pagemap entry of the 4 KiB page at `address` of process `pid`. */
function pagemapEntry(address: bigint, pid: number | 'self' = 'self'): bigint {
  const entry = Buffer.alloc(8);
  const fd = openSync(`/proc/${String(pid)}/pagemap`, 'r');
  try {
    readSync(fd, entry, 0, 8, Number(address / 4096n) * 8);
  } finally {
    closeSync(fd);
  }
  return entry.readBigUInt64LE(0);
}

const wpBit = (address: bigint, pid: number | 'self' = 'self'): boolean => (pagemapEntry(address, pid) & PM_UFFD_WP) !== 0n;

function wpFeature(kind: MapKind): FeatureName {
  return kind === 'anon' ? 'PAGEFAULT_FLAG_WP' : 'WP_HUGETLBFS_SHMEM';
}

test('wp-unpopulated (anon): markers on empty PTEs, cleared by unprotect and by DONTNEED, kept by a read', { skip: needs('WP_UNPOPULATED') }, () => {
  using mapping = Mapping.anonymous(4096);
  using uffd = Userfaultfd.open({ require: ['WP_UNPOPULATED'] });
  uffd.register(mapping, { wp: true });
  const bytes = new Uint8Array(mapping.buffer);
  // Explicit WP on an empty PTE installs a marker.
  uffd.writeProtect(mapping, true);
  assert.equal(wpBit(mapping.address), true, 'marker after WP of pte_none');
  // Unprotect removes it.
  uffd.writeProtect(mapping, false);
  assert.equal(wpBit(mapping.address), false, 'unprotect on the marker');
  // DONTNEED zaps it.
  uffd.writeProtect(mapping, true);
  assert.equal(wpBit(mapping.address), true);
  mapping.madvise('DONTNEED');
  assert.equal(wpBit(mapping.address), false, 'zap on the marker');
  // A write after the marker is gone faults in normally, unprotected.
  bytes[0] = 1;
  assert.equal(wpBit(mapping.address), false, 'fault in after the marker was removed');
  // A read upon a marker maps the zero page and keeps the protection.
  mapping.madvise('DONTNEED');
  uffd.writeProtect(mapping, true);
  assert.equal(bytes[0], 0);
  assert.equal(wpBit(mapping.address), true, 'read of the zero page upon a marker');
});

for (const kind of KINDS) {
  for (const withEvent of [false, true]) {
    const name = withEvent ? 'wp-fork-with-event' : 'wp-fork';
    const features: FeatureName[] = withEvent ? ['EVENT_FORK'] : [];
    // Seen in the 6.1 guest: a private hugetlb child forked without EVENT_FORK keeps the bit there; dropping it
    // is asserted where it was seen dropped (6.18), the kernels between are not claimed either way.
    const oldHugetlbFork = kind === 'hugetlb-private' && !withEvent && kernelBefore(6, 18)
      ? 'before 6.18 a private hugetlb child forked without EVENT_FORK may keep the WP bit (6.1 does)' : false;
    const skip = oldHugetlbFork || skipUnless({ features: [wpFeature(kind), ...features], hugePages: hugePagesFor(kind, 1) });
    test(`${name} (${kind}): the child ${withEvent ? 'keeps' : 'drops'} the WP bit; a shared page's marker survives DONTNEED`, { skip }, async () => {
      await withHelper(async (helper) => {
        await helper.createUffd(features);
        const map = await helper.map(1, kind, 1);
        await helper.touch('w', map, { write: 1 });
        await helper.touched('w');
        const uffd = await helper.takeUffd();
        try {
          uffd.register(map.range(), { wp: true });
          uffd.writeProtect(map.range(), true);
          assert.equal(wpBit(map.address, helper.pid), true, 'parent: protected');
          const forkChild = async (tag: string): Promise<boolean> => {
            await helper.command(`fork ${tag} 1 0`);
            let child: Userfaultfd | undefined;
            if (withEvent) {
              const [event] = await nextEvents(uffd, 1); // the fork waits until the monitor reads it
              assert.equal(event?.type, 'fork');
              if (event?.type === 'fork') child = event.uffd;
            }
            try {
              const [, , , , entry] = await helper.expect(new RegExp(`^child ${tag} `));
              await helper.expect(new RegExp(`^done ${tag} `));
              return (BigInt(entry!) & PM_UFFD_WP) !== 0n;
            } finally {
              // Only now: closing the child's uffd (its last descriptor) unregisters the child's memory.
              child?.close();
            }
          };
          assert.equal(await forkChild('f1'), withEvent, 'child after fork');
          if (kind === 'shmem' || kind === 'hugetlb') {
            // Shared memory: DONTNEED leaves a marker that keeps the protection, in the parent and across fork.
            await helper.command('madvise d 1 0 1 dontneed');
            await helper.expect(/^done d /);
            assert.equal(wpBit(map.address, helper.pid), true, 'parent: marker after DONTNEED');
            assert.equal(await forkChild('f2'), withEvent, 'child after fork of a marker');
          }
          // (Private memory: upstream pages the page out with MADV_PAGEOUT and checks the swap entry keeps the
          // bit; this machine has no swap, so that half is not run.)
          uffd.writeProtect(map.range(), false);
          assert.equal(wpBit(map.address, helper.pid), false, 'parent: unprotected');
          await helper.touch('w2', map, { write: 2 });
          await helper.touched('w2');
          assert.equal(wpBit(map.address, helper.pid), false, 'parent: faulted back in, unprotected');
        } finally {
          uffd.close();
        }
      });
    });
  }
}

describe('uffd-wp-mremap: mremap without EVENT_REMAP clears the WP bit on every PTE of the folio', () => {
  for (const kind of ['anon', 'shmem', 'shmem-private', 'hugetlb', 'hugetlb-private'] as MapKind[]) {
    const skip = skipUnless({ features: [wpFeature(kind)], hugePages: hugePagesFor(kind, 1) });
    test(`${kind.startsWith('hugetlb') ? 'hugetlb' : 'base page'} ${kind.endsWith('private') || kind === 'anon' ? 'private' : 'shared'} (${kind})`, { skip }, async (t) => {
      await withHelper(async (helper) => {
        await helper.createUffd([]);
        const map = await helper.map(1, kind, 1);
        await helper.touch('w', map, { write: 1, pages: 1 });
        await helper.touched('w');
        const uffd = await helper.takeUffd();
        try {
          uffd.register(map.range(), { wp: true });
          uffd.writeProtect(map.range(), true);
          const small = map.pageSize / 4096;
          for (let i = 0; i < small; i++) assert.equal(wpBit(map.address + BigInt(i * 4096), helper.pid), true, `before: PTE ${String(i)}`);
          await helper.command('mremap m 1');
          const [, , result, to] = await helper.expect(/^done m /);
          if (kind.startsWith('hugetlb') && result === '-22') {
            t.skip('this kernel refuses to mremap the hugetlb mapping (EINVAL; 6.1 does, 6.18 moves it)');
            return;
          }
          assert.equal(result, '0', 'mremap succeeded');
          const moved = BigInt(to!);
          for (let i = 0; i < small; i++) assert.equal(wpBit(moved + BigInt(i * 4096), helper.pid), false, `after: PTE ${String(i)}`);
        } finally {
          uffd.close();
        }
      });
    });
  }
});

describe('pagemap_ioctl: PAGEMAP_SCAN argument checks', { skip: needs('WP_ASYNC') }, () => {
  const scan = (mapping: Mapping, patch: (view: DataView) => void): number => {
    const arg = new Uint8Array(PAGEMAP_SCAN.arg.size);
    const view = new DataView(arg.buffer);
    const vec = new BigUint64Array(3 * 16);
    const A = PAGEMAP_SCAN.arg;
    view.setBigUint64(A.sizeField, BigInt(A.size), true);
    view.setBigUint64(A.start, mapping.address, true);
    view.setBigUint64(A.end, mapping.address + BigInt(mapping.length), true);
    view.setBigUint64(A.vec, native.addressOf(vec), true);
    view.setBigUint64(A.vecLen, 16n, true);
    view.setBigUint64(A.categoryMask, PAGE_IS.WRITTEN, true);
    view.setBigUint64(A.returnMask, PAGE_IS.WRITTEN, true);
    patch(view);
    const fd = openSync('/proc/self/pagemap', 'r');
    try {
      return native.ioctl(fd, PAGEMAP_SCAN.request, arg);
    } finally {
      closeSync(fd);
    }
  };
  test('CHECK_WPASYNC on memory not registered with WP_ASYNC is EPERM', () => {
    using mapping = Mapping.anonymous(4 * 4096);
    mapping.madvise('POPULATE_WRITE');
    assert.equal(scan(mapping, (v) => { v.setBigUint64(PAGEMAP_SCAN.arg.flags, PM_SCAN.CHECK_WPASYNC, true); }), -1 /* EPERM */);
  });
  test('the result vector bounds a scan: walk_end stops where it filled, and the walk resumes from there', () => {
    using mapping = Mapping.anonymous(8 * 4096);
    using uffd = Userfaultfd.open({ require: ['WP_ASYNC'] });
    uffd.register(mapping, { wp: true });
    uffd.writeProtect(mapping, true);
    const bytes = new Uint8Array(mapping.buffer);
    for (const page of [0, 2, 4, 6]) bytes[page * 4096] = 1; // four separate regions
    const scanner = new PagemapScanner('self', 2);
    try {
      const end = mapping.address + BigInt(mapping.length);
      const first = scanner.scan({ start: mapping.address, end, flags: PM_SCAN.WP_MATCHING | PM_SCAN.CHECK_WPASYNC, categoryMask: PAGE_IS.WRITTEN, returnMask: PAGE_IS.WRITTEN });
      assert.equal(first.count, 2);
      assert.equal(first.walkEnd, mapping.address + 4n * 4096n, 'stopped at the region that did not fit');
      const second = scanner.scan({ start: first.walkEnd, end, flags: PM_SCAN.WP_MATCHING | PM_SCAN.CHECK_WPASYNC, categoryMask: PAGE_IS.WRITTEN, returnMask: PAGE_IS.WRITTEN });
      assert.equal(second.count, 2);
      assert.deepEqual(scanner.region(1), { start: mapping.address + 6n * 4096n, end: mapping.address + 7n * 4096n, categories: PAGE_IS.WRITTEN });
    } finally {
      scanner.close();
    }
  });
});

