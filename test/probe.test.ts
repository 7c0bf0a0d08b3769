// probe(), probeMemory() and probeMadvise() against what the kernel itself answers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { release } from 'node:os';
import { O_CLOEXEC, O_NONBLOCK } from '../src/abi.js';
import { native } from '../src/binding.js';
import { uffdioApi } from '../src/core/uffdio-api.js';
import { freeHugePages } from '../src/system.js';
import type { ModeProbe } from '../src/index.js';
import { IoctlSet, probe, probeMadvise, probeMemory } from '../src/index.js';
import { isRoot, sysctl } from './support/support.js';

test('probe() matches a UFFDIO_API(features=0) done here on a throwaway fd', () => {
  const caps = probe();
  assert.equal(caps.available, true);
  assert.equal(caps.api, 0xaa);
  assert.equal(caps.kernel, release());
  const fd = native.userfaultfd(O_CLOEXEC | O_NONBLOCK);
  assert.ok(fd >= 0);
  try {
    const r = uffdioApi(fd, 0n);
    assert.equal(r.errno, 0);
    assert.equal(caps.features.mask, r.features);
    assert.equal(caps.ioctls.mask, r.ioctls);
    assert.deepEqual(caps.features.unknownBits, [], 'every bit this kernel offers has a name (else it is shown as bit N)');
  } finally {
    native.close(fd);
  }
});

test('probe() is cached; { fresh: true } asks the kernel again', () => {
  const a = probe();
  assert.equal(probe(), a);
  const b = probe({ fresh: true });
  assert.notEqual(b, a);
  assert.equal(b.features.mask, a.features.mask);
  assert.equal(probe(), b);
});

test('probe() leaves no fd behind', () => {
  const before = new Set(readFds());
  probe({ fresh: true });
  assert.deepEqual(readFds().filter((fd) => !before.has(fd)), []);
});

test('access as root: every path works', { skip: isRoot ? false : 'not root' }, () => {
  const { access } = probe();
  assert.deepEqual(access.syscall, { ok: true });
  assert.deepEqual(access.userModeOnly, { ok: true });
  const device = sysctl('vm.unprivileged_userfaultfd') === undefined ? undefined : access.device;
  if (device !== undefined && !device.ok) assert.equal(device.code, 'ENOENT', 'root can open the device when it exists');
});

test('probeMemory(): anon/shmem masks as UFFDIO_REGISTER reports them, with what really works', () => {
  const caps = probe();
  const memory = probeMemory();
  // WAKE COPY ZEROPAGE, plus MOVE and POISON where the kernel has them (6.1's anon MISSING mask is 0x1c).
  const optional = (caps.features.has('MOVE') ? 1n << 5n : 0n) | (caps.features.has('POISON') ? 1n << 8n : 0n);
  const base = (1n << 2n) | (1n << 3n) | (1n << 4n) | optional;
  const anon = memory.anon;
  assert.ok(anon.skipped === undefined);
  const missing = anon.modes.missing;
  assert.ok(missing.ok);
  assert.equal(missing.reported.mask, base);
  assert.equal(missing.works.mask, base, 'every ioctl reported for anon MISSING works');
  const wp = anon.modes.wp;
  assert.ok(wp.ok);
  assert.equal(wp.reported.mask, base | (1n << 6n));
  assert.deepEqual(anon.modes.minor, { ok: false, code: 'EINVAL' });

  const shmem = memory.shmem;
  assert.ok(shmem.skipped === undefined);
  const minor = shmem.modes.minor;
  assert.ok(minor.ok);
  assert.ok(minor.reported.has('CONTINUE'));
  assert.ok(minor.works.has('CONTINUE'), 'CONTINUE maps the page filled through the alias');
  if (minor.reported.has('MOVE')) {
    assert.equal(minor.failed.MOVE, 'EINVAL', 'the mask over-reports MOVE on shmem');
    assert.ok(!minor.works.has('MOVE'));
  }
});

test('probeMemory(): hugetlb never reports ZEROPAGE or MOVE', { skip: freeHugePages() >= 3 ? false : 'fewer than 3 free huge pages (vm.nr_hugepages)' }, () => {
  const hugetlb = probeMemory().hugetlb;
  assert.ok(hugetlb.skipped === undefined, hugetlb.skipped);
  assert.equal(hugetlb.pageSize, 2 << 20);
  for (const mode of ['missing', 'wp', 'minor'] as const) {
    const m: ModeProbe = hugetlb.modes[mode];
    assert.ok(m.ok, mode);
    assert.ok(!m.reported.has('ZEROPAGE') && !m.reported.has('MOVE'), `${mode}: ${m.reported.toString()}`);
    assert.deepEqual(m.works.names, m.reported.names, `${mode}: every reported ioctl works`);
  }
});

test('probeMemory() gives huge pages back to the pool', { skip: freeHugePages() >= 3 ? false : 'no huge pages reserved' }, () => {
  const before = freeHugePages();
  probeMemory();
  assert.equal(freeHugePages(), before);
});

test('probeMadvise(): length-0 answers, and per-memory-type results', () => {
  const advices = new Map(probeMadvise().map((a) => [a.name, a]));
  const dontneed = advices.get('DONTNEED');
  assert.equal(dontneed?.known, true);
  assert.equal(dontneed.memory.anon, 'ok');
  const remove = advices.get('REMOVE');
  assert.equal(remove?.known, true);
  assert.equal(remove.memory.anon, 'EINVAL', 'REMOVE is not for private anon: known, not unknown');
  assert.equal(remove.memory.shmem, 'ok');
  for (const name of ['HWPOISON', 'SOFT_OFFLINE'] as const) {
    const a = advices.get(name);
    assert.ok(a !== undefined);
    assert.ok(Object.values(a.memory).every((r) => r === 'unknown' || r === 'unsafe, not tried'), `${name} was never given a length`);
  }
});

test('an advice value no kernel defines is EINVAL with length 0 (the probe can tell known from unknown)', () => {
  assert.equal(native.madvise(0n, 0, 99), -22);
  assert.equal(native.madvise(0n, 0, 4 /* DONTNEED */), 0);
});

test('IoctlSet from a register mask names each ioctl', () => {
  assert.deepEqual(IoctlSet.fromMask(0x13cn).toJSON(), ['WAKE', 'COPY', 'ZEROPAGE', 'MOVE', 'POISON']);
});

function readFds(): string[] {
  return readdirSync('/proc/self/fd');
}
