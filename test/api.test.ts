// A port of the kernel selftest "UFFDIO_API" cases (uffd-unit-tests.c), on both creation paths, plus the
// handshake facts the library is built on (kernel.md §1.4). Raw calls: no library policy in between.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { O_CLOEXEC, O_NONBLOCK, STRUCTS } from '../src/abi.js';
import { native } from '../src/binding.js';
import { createRaw } from '../src/core/create.js';
import { errnoName } from '../src/errors.js';
import { uffdioApi } from '../src/core/uffdio-api.js';
import { probe } from '../src/index.js';
import { fdinfoApi, INITIALIZED } from './support/support.js';

const BITS = O_CLOEXEC | O_NONBLOCK;
const caps = probe();

for (const path of ['syscall', 'device'] as const) {
  const access = path === 'syscall' ? caps.access.syscall : caps.access.device;
  const skip = access.ok ? false : `cannot create a uffd via ${path} here: ${access.code}`;

  describe(`UFFDIO_API (with ${path})`, { skip }, () => {
    const fresh = (): number => {
      const fd = createRaw(path, BITS);
      assert.ok(fd >= 0, `create via ${path}: ${errnoName(fd)}`);
      return fd;
    };

    test('api 0xab is EINVAL and zeroes the whole struct', () => {
      const fd = fresh();
      try {
        const r = uffdioApi(fd, 0n, 0xabn);
        assert.equal(errnoName(r.errno), 'EINVAL');
        assert.deepEqual([r.api, r.features, r.ioctls], [0n, 0n, 0n]);
      } finally {
        native.close(fd);
      }
    });

    test('feature bit 63 is EINVAL and zeroes the whole struct', () => {
      const fd = fresh();
      try {
        const r = uffdioApi(fd, 1n << 63n);
        assert.equal(errnoName(r.errno), 'EINVAL');
        assert.deepEqual([r.api, r.features, r.ioctls], [0n, 0n, 0n]);
      } finally {
        native.close(fd);
      }
    });

    test('features=0 succeeds and reports what is offered, not what is enabled', () => {
      const fd = fresh();
      try {
        const r = uffdioApi(fd, 0n);
        assert.equal(r.errno, 0);
        assert.equal(r.api, 0xaan);
        assert.equal(r.features, caps.features.mask);
        assert.ok(r.features !== 0n, 'a kernel with userfaultfd offers features');
        assert.equal(r.ioctls, caps.ioctls.mask);
        assert.equal(r.ioctls & ((1n << 63n) | 3n), (1n << 63n) | 3n, 'REGISTER, UNREGISTER, API');
        assert.equal(fdinfoApi(fd)?.features, INITIALIZED, 'enabled: nothing but the initialized bit');
      } finally {
        native.close(fd);
      }
    });

    test('a second UFFDIO_API on the same fd is EINVAL with the struct zeroed', () => {
      const fd = fresh();
      try {
        assert.equal(uffdioApi(fd, 0n).errno, 0);
        const second = uffdioApi(fd, 1n); // the selftest asks for bit 0 the second time
        assert.equal(errnoName(second.errno), 'EINVAL');
        assert.deepEqual([second.api, second.features, second.ioctls], [0n, 0n, 0n]);
        assert.equal(errnoName(uffdioApi(fd, 0n).errno), 'EINVAL', 'features=0 is no pure query either');
      } finally {
        native.close(fd);
      }
    });

    test('a failed call leaves the fd uninitialized: a retry on the same fd succeeds', () => {
      const fd = fresh();
      try {
        assert.equal(errnoName(uffdioApi(fd, 1n << 63n).errno), 'EINVAL');
        assert.equal(fdinfoApi(fd)?.features, 0n);
        const retry = uffdioApi(fd, 0n);
        assert.equal(retry.errno, 0);
        assert.equal(retry.features, caps.features.mask);
      } finally {
        native.close(fd);
      }
    });

    test('every other ioctl and read() before UFFDIO_API are EINVAL', () => {
      const fd = fresh();
      try {
        const range = new Uint8Array(STRUCTS.uffdio_register.size);
        assert.equal(errnoName(native.ioctl(fd, 0xc020aa00, range)), 'EINVAL');
        assert.equal(errnoName(native.read(fd, new Uint8Array(64))), 'EINVAL');
      } finally {
        native.close(fd);
      }
    });
  });
}

test('the binding refuses an ioctl buffer smaller than the request encodes', () => {
  assert.throws(() => native.ioctl(0, 0xc018aa3f, new Uint8Array(8)), /smaller than the request's size/);
});

test('creation flags outside CLOEXEC|NONBLOCK|USER_MODE_ONLY are EINVAL', () => {
  const fd = createRaw('syscall', BITS | 0x2);
  if (fd >= 0) native.close(fd);
  assert.equal(errnoName(fd), 'EINVAL');
});
