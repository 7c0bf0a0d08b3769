// Errors: UffdError in Node's SystemError style, and argument errors thrown before any syscall.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, openSync, readdirSync } from 'node:fs';
import { UffdError } from '../src/errors.js';
import { Mapping, probe, Userfaultfd } from '../src/index.js';
import { fdinfoApi } from './support/support.js';

test('UffdError looks like Node core\'s own system errors', () => {
  let nodeError: NodeJS.ErrnoException | undefined;
  try {
    closeSync(openSync('/', 'wx')); // EEXIST from Node core, for comparison
  } catch (err) {
    nodeError = err as NodeJS.ErrnoException;
  }
  assert.equal(nodeError?.code, 'EEXIST');
  const err = new UffdError(-17, 'ioctl(UFFDIO_COPY)', { bytes: 20480 });
  assert.equal(err.code, 'EEXIST');
  assert.equal(err.errno, nodeError.errno);
  assert.equal(err.errno, -17);
  assert.equal(err.syscall, 'ioctl(UFFDIO_COPY)');
  assert.equal(err.bytes, 20480);
  assert.equal(err.message, 'EEXIST: file already exists, ioctl(UFFDIO_COPY)');
  assert.ok(nodeError.message.startsWith('EEXIST: file already exists, open'));
  assert.ok(err instanceof Error);
  assert.equal(new UffdError(17, 'x').errno, -17, 'a positive errno is normalised');
});

test('errnos libuv does not know still get a name', () => {
  assert.equal(new UffdError(-133, 'ioctl(UFFDIO_COPY)').code, 'EHWPOISON');
});

test('a kernel error comes back as UffdError with the ioctl named', () => {
  using uffd = Userfaultfd.open();
  using mapping = Mapping.anonymous(4096);
  // MINOR on anonymous memory: only the kernel knows, so the kernel says EINVAL.
  assert.throws(() => uffd.register(mapping, { minor: true }), {
    name: 'UffdError', code: 'EINVAL', errno: -22, syscall: 'ioctl(UFFDIO_REGISTER)',
    message: 'EINVAL: invalid argument, ioctl(UFFDIO_REGISTER)',
  });
});

test('open(): wrong options are TypeErrors naming the value, before any fd is created', () => {
  const before = openFds();
  assert.throws(() => Userfaultfd.open({ require: ['NOPE' as never] }), { name: 'TypeError', message: /unknown userfaultfd feature "NOPE"/ });
  assert.throws(() => Userfaultfd.open({ request: 'MOVE' as never }), { name: 'TypeError', message: /request must be an array/ });
  assert.throws(() => Userfaultfd.open({ nonBlocking: 1 as never }), { name: 'TypeError', message: /nonBlocking must be a boolean, got 1/ });
  assert.throws(() => Userfaultfd.open({ via: 'ioctl' as never }), { name: 'TypeError', message: /via must be .* got "ioctl"/ });
  assert.throws(() => Userfaultfd.open({ userModeOnly: 'yes' as never }), TypeError);
  assert.throws(() => Userfaultfd.open({ features: [] } as never), { name: 'TypeError', message: /unknown option "features"/ });
  assert.throws(() => Userfaultfd.open(null as never), TypeError);
  assert.throws(() => probe({ fresh: 'yes' as never }), TypeError);
  assert.equal(openFds(), before, 'no fd was created or leaked');
});

test('operations on a closed uffd throw ERR_UFFD_CLOSED', () => {
  const uffd = Userfaultfd.open();
  uffd.close();
  assert.throws(() => uffd.dup(), { name: 'TypeError', code: 'ERR_UFFD_CLOSED' });
  assert.throws(() => uffd.read(), { code: 'ERR_UFFD_CLOSED' });
  assert.throws(() => { uffd.wake({ address: 0x10000n, length: 4096 }); }, { code: 'ERR_UFFD_CLOSED' });
});

test('range and address arguments: RangeError/TypeError with the value, no syscall', () => {
  using uffd = Userfaultfd.open();
  assert.throws(() => uffd.register({ address: 0x1001n, length: 4096 }, { missing: true }), { name: 'RangeError', message: /0x1001 is not aligned/ });
  assert.throws(() => uffd.register({ address: 0x1000n, length: 100 }, { missing: true }), { name: 'RangeError', message: /100 is not a multiple/ });
  assert.throws(() => uffd.register({ address: 4096, length: 4096 } as never, { missing: true }), { name: 'TypeError', message: /bigint address, got 4096/ });
  assert.throws(() => uffd.register({ address: 0x1000n, length: 4096 }, {}), { name: 'TypeError', message: /at least one/ });
  assert.throws(() => uffd.register({ address: 0x1000n, length: 4096 }, { missed: true } as never), { name: 'TypeError', message: /unknown option "missed"/ });
  assert.throws(() => uffd.register({ address: 0x200000n, length: 4096, pageSize: 2 << 20 }, { missing: true }), { name: 'RangeError', message: /2097152/ });
  assert.throws(() => uffd.copy(0x1000n, new Uint8Array(10)), { name: 'RangeError', message: /src.byteLength 10/ });
  assert.throws(() => uffd.copy(0x1000n, 'page' as never), TypeError);
  assert.throws(() => { uffd.writeProtect({ address: 0x1000n, length: 4096 }, true, { wake: false }); }, { name: 'TypeError', message: /WP\|DONTWAKE/ });
  assert.throws(() => uffd.read(0), RangeError);
  assert.equal(fdinfoApi(uffd.fd)?.features, 1n << 31n, 'the uffd is untouched');
});

function openFds(): number {
  return readdirSync('/proc/self/fd').length;
}
