// Port of the selftest "register-ioctls" for every memory type, plus UFFDIO_REGISTER/UNREGISTER rules
// (kernel.md §1.6). Expected masks are derived from the probe: older kernels lack MOVE and POISON.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { IoctlName } from '../src/index.js';
import { IoctlSet, Mapping, probe, Userfaultfd } from '../src/index.js';
import { MEMORY_TYPES } from './support/memory-types.js';

const caps = probe();
const bit = (name: IoctlName): bigint => IoctlSet.fromNames([name]).mask;

/** UFFD_API_RANGE_IOCTLS (hugetlb: _BASIC, no ZEROPAGE or MOVE), minus WP/CONTINUE unless registered for them. */
function expectedMask(hugetlb: boolean, wp: boolean, minor: boolean): bigint {
  let mask = bit('WAKE') | bit('COPY') | bit('WRITEPROTECT') | bit('CONTINUE');
  if (!hugetlb) mask |= bit('ZEROPAGE');
  if (!hugetlb && caps.features.has('MOVE')) mask |= bit('MOVE');
  if (caps.features.has('POISON')) mask |= bit('POISON');
  if (!wp) mask &= ~bit('WRITEPROTECT');
  if (!minor) mask &= ~bit('CONTINUE');
  return mask;
}

const combos = [0, 1, 2, 3, 4, 5, 6, 7].map((m) => ({ missing: (m & 1) !== 0, wp: (m & 2) !== 0, minor: (m & 4) !== 0 }));

for (const type of MEMORY_TYPES) {
  describe(`register-ioctls (${type.name})`, { skip: type.skip }, () => {
    for (const modes of combos) {
      const label = Object.entries(modes).filter(([, on]) => on).map(([name]) => name).join('|') || 'none';
      test(label, () => {
        const mem = type.make(2);
        using uffd = Userfaultfd.open();
        try {
          if (!modes.missing && !modes.wp && !modes.minor) {
            assert.throws(() => uffd.register(mem.mapping, modes), TypeError, 'mode 0 is refused before the kernel');
            return;
          }
          const wpUnsupported = modes.wp && (type.name === 'anon' ? !caps.features.has('PAGEFAULT_FLAG_WP') : !caps.features.has('WP_HUGETLBFS_SHMEM'));
          const minorUnsupported = modes.minor && (type.name === 'anon' || !caps.features.has(type.hugetlb ? 'MINOR_HUGETLBFS' : 'MINOR_SHMEM'));
          if (wpUnsupported || minorUnsupported) {
            assert.throws(() => uffd.register(mem.mapping, modes), { name: 'UffdError', code: 'EINVAL' });
            return;
          }
          const ioctls = uffd.register(mem.mapping, modes);
          assert.equal(`0x${ioctls.mask.toString(16)}`, `0x${expectedMask(type.hugetlb, modes.wp, modes.minor).toString(16)}`, ioctls.toString());
          uffd.unregister(mem.mapping);
        } finally {
          mem.close();
        }
      });
    }
  });
}

test('a range already registered with another uffd is EBUSY; the same uffd may re-register and add modes', (t) => {
  using mapping = Mapping.anonymous(4 * 4096);
  using a = Userfaultfd.open();
  using b = Userfaultfd.open();
  a.register(mapping, { missing: true });
  assert.throws(() => b.register(mapping, { missing: true }), { code: 'EBUSY' });
  assert.ok(a.register(mapping, { missing: true, wp: true }).has('WRITEPROTECT'));
  // Unregistering through another uffd is EINVAL on recent kernels (6.18 here). Older ones (Debian's 6.1.192
  // and 6.12.117 among them) let any uffd of the mm unregister the range. No feature bit tells them apart, so
  // both are accepted, each with its consequence checked.
  let refused = false;
  try {
    b.unregister(mapping);
  } catch (err) {
    assert.equal((err as { code?: string }).code, 'EINVAL', 'unregister by another uffd');
    refused = true;
  }
  const page = new Uint8Array(4096);
  if (refused) {
    assert.equal(a.copy(mapping.address, page), 4096, 'still registered with a');
  } else {
    t.diagnostic('this kernel lets another uffd unregister the range (no cross-uffd check in UFFDIO_UNREGISTER)');
    assert.throws(() => a.copy(mapping.address, page), { code: 'ENOENT' }, 'the range is no longer registered with a');
  }
});

test('register with no VMA in the range is EINVAL; unregister of a never-registered anon range is a no-op', () => {
  using uffd = Userfaultfd.open();
  using other = Mapping.anonymous(4096);
  uffd.unregister(other);
  assert.throws(() => uffd.register({ address: 0x1000n, length: 4096 }, { missing: true }), { code: 'EINVAL' });
});

test('partial unregister splits the range: the rest stays registered', () => {
  using mapping = Mapping.anonymous(4 * 4096);
  using uffd = Userfaultfd.open();
  uffd.register(mapping, { missing: true });
  uffd.unregister({ address: mapping.address, length: 4096 });
  const zero = new Uint8Array(4096);
  assert.throws(() => uffd.copy(mapping.address, zero), { code: 'ENOENT' }, 'the first page is no longer registered');
  assert.equal(uffd.copy(mapping.address + 4096n, zero), 4096);
});

test('hugetlb: unaligned ranges are a RangeError in TypeScript, before the kernel', () => {
  const huge = MEMORY_TYPES.find((t) => t.name === 'hugetlb');
  assert.ok(huge !== undefined);
  const pageSize = huge.pageSize || 2 << 20;
  using uffd = Userfaultfd.open();
  assert.throws(() => uffd.register({ address: BigInt(pageSize) + 4096n, length: pageSize, pageSize }, { missing: true }), { name: 'RangeError', message: /not aligned to the 2097152-byte page size/ });
  assert.throws(() => uffd.register({ address: BigInt(pageSize), length: 4096, pageSize }, { missing: true }), { name: 'RangeError', message: /4096 is not a multiple of the 2097152-byte page size/ });
});

test('shmem mapped shared through a read-only descriptor (no VM_MAYWRITE) is EPERM', () => {
  using memfd = Mapping.memfd(4096);
  using readOnly = Mapping.file(`/proc/self/fd/${String(memfd.fd)}`, { shared: true });
  using uffd = Userfaultfd.open();
  assert.throws(() => uffd.register(readOnly, { missing: true }), { code: 'EPERM' });
  assert.ok(uffd.register(memfd, { missing: true }).has('COPY'), 'the writable mapping of the same memfd registers');
});
