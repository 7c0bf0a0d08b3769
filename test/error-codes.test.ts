// One table of error codes, named errnos, and the shared argument checks.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { ERRNO, ERROR_CODES, errnoName, isEagain, isEexist, messageOf, UffdError, withCode } from '../src/errors.js';
import { checkInteger, checkOneOf } from '../src/validate.js';
import { ROOT } from './support/support.js';

function codesUsedIn(dir: string, ext: RegExp): Map<string, string> {
  const used = new Map<string, string>();
  for (const e of readdirSync(join(ROOT, dir), { withFileTypes: true, recursive: true })) {
    if (!e.isFile() || !ext.test(e.name)) continue;
    const file = join(e.parentPath, e.name);
    for (const [code] of readFileSync(file, 'utf8').matchAll(/ERR_UFFD_[A-Z][A-Z_]*/g)) used.set(code, file);
  }
  return used;
}

test('every ERR_UFFD_ code in src/ and native/ is in the one table of errors.ts, and every entry is used', () => {
  const used = new Map([...codesUsedIn('src', /\.ts$/), ...codesUsedIn('native', /\.[ch]$/)]);
  const table = new Set(Object.keys(ERROR_CODES));
  for (const [code, file] of used) {
    assert.ok(table.has(code), `${code} (in ${file}) is not in ERROR_CODES of src/errors.ts: add it there with what it means`);
  }
  for (const code of table) assert.ok(used.has(code), `${code} is in the table but nothing raises it`);
  assert.ok(used.size >= 8, `found only ${String(used.size)} codes`);
});

test('withCode sets a code from the table and keeps the error class and extra fields', () => {
  const err = withCode(new TypeError('the mapping is closed'), 'ERR_UFFD_CLOSED', { page: 3 });
  assert.ok(err instanceof TypeError);
  assert.equal(err.code, 'ERR_UFFD_CLOSED');
  assert.equal(err.page, 3);
});

test('named errnos are the negative values Node and the kernel use', () => {
  for (const [name, value] of Object.entries(ERRNO)) {
    assert.ok(value < 0, name);
    assert.equal(errnoName(value), name);
  }
  assert.equal(ERRNO.EBADF, -9);
  assert.equal(ERRNO.EINVAL, -22);
  assert.equal(ERRNO.ENOTSUP, -95);
  assert.equal(ERRNO.ENOBUFS, -105);
});

test('isEagain and isEexist recognise only UffdErrors of that code; messageOf reads anything thrown', () => {
  assert.equal(isEagain(new UffdError(ERRNO.EAGAIN, 'ioctl(UFFDIO_COPY)')), true);
  assert.equal(isEagain(new UffdError(-17, 'ioctl(UFFDIO_COPY)')), false);
  assert.equal(isEagain(Object.assign(new Error('x'), { code: 'EAGAIN' })), false);
  assert.equal(isEexist(new UffdError(-17, 'ioctl(UFFDIO_COPY)')), true);
  assert.equal(messageOf(new RangeError('out')), 'out');
  assert.equal(messageOf('plain'), 'plain');
  assert.equal(messageOf(42), '42');
});

test('checkInteger refuses non-integers and values outside its bounds, naming the value', () => {
  const ok: unknown = 5;
  checkInteger(ok, 'n', { min: 1, max: 5 });
  assert.throws(() => { checkInteger(6, 'n', { min: 1, max: 5 }); }, { name: 'RangeError', message: 'n must be an integer in [1, 5], got 6' });
  assert.throws(() => { checkInteger(1.5, 'n'); }, { name: 'RangeError', message: /got 1\.5/ });
  assert.throws(() => { checkInteger('3', 'n', { min: 0 }); }, { name: 'RangeError', message: 'n must be a non-negative integer, got "3"' });
  assert.throws(() => { checkInteger(0, 'n', { min: 1 }); }, { message: 'n must be a positive integer, got 0' });
  assert.throws(() => { checkInteger(2 ** 53, 'n'); }, RangeError);
});

test('checkOneOf refuses anything not in its list, listing the choices', () => {
  checkOneOf('zero', 'policy', ['poison', 'zero']);
  assert.throws(() => { checkOneOf('none', 'policy', ['poison', 'zero']); }, { name: 'TypeError', message: `policy must be 'poison' or 'zero', got "none"` });
  assert.throws(() => { checkOneOf(1, 'mode', ['auto', true, false]); }, { message: `mode must be 'auto', true or false, got 1` });
});
