// The C core refuses what it must not use: a handle of the wrong kind (type tags), strings it would have to
// cut (socket paths, memfd names), and NULs; the TypeScript layer refuses the same before any syscall.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { constants, tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { native } from '../src/binding.js';
import type { Region, Watcher } from '../src/binding.js';
import { UnixConnection, UnixListener } from '../src/core/unix-socket.js';
import { Mapping } from '../src/index.js';
import { ERRNO } from '../src/errors.js';
import { PAGE_SIZE } from '../src/system.js';

const ENAMETOOLONG = -constants.errno.ENAMETOOLONG;

function withDir(body: (dir: string) => void): void {
  const dir = mkdtempSync(join(tmpdir(), 'uffd-native-'));
  try {
    body(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('a watcher handle where a region is expected is a TypeError, and the other way round; no memory is touched', () => {
  const [a, b] = UnixConnection.pair();
  const watcher = native.pollStart(a.fd, native.pollEvents.READABLE, () => undefined);
  assert.ok(typeof watcher !== 'number');
  const region = native.mmap(PAGE_SIZE, 3, 0x22 /* MAP_PRIVATE | MAP_ANONYMOUS */, -1, 0);
  assert.ok(typeof region !== 'number');
  try {
    const asRegion = watcher as unknown as Region;
    assert.throws(() => native.regionAddress(asRegion), { name: 'TypeError', message: /expected a region handle/ });
    assert.throws(() => native.regionSeal(asRegion), { name: 'TypeError', message: /expected a region handle/ });
    assert.throws(() => native.regionBuffer(asRegion, 0, PAGE_SIZE), { name: 'TypeError' });
    const asWatcher = region as unknown as Watcher;
    assert.throws(() => { native.pollStop(asWatcher); }, { name: 'TypeError', message: /expected a watcher handle/ });
    assert.throws(() => { native.pollPause(asWatcher); }, { name: 'TypeError' });
    for (const other of [{}, 1, null, 'x', new Uint8Array(8)]) {
      assert.throws(() => native.regionAddress(other as unknown as Region), TypeError);
      assert.throws(() => { native.pollStop(other as unknown as Watcher); }, TypeError);
    }
    // The right handles still work.
    assert.equal(typeof native.regionAddress(region), 'bigint');
    assert.equal(new Uint8Array(native.regionBuffer(region, 0, PAGE_SIZE))[0], 0);
  } finally {
    native.pollStop(watcher);
    a.close();
    b.close();
  }
});

test('socket paths over 107 bytes or with a NUL are refused by the C core (ENAMETOOLONG, EINVAL), never cut', () => {
  withDir((dir) => {
    const prefix = join(dir, 's');
    const listener = UnixListener.listen(prefix); // a live socket at the prefix a cut path would reach
    try {
      const long = prefix + 'x'.repeat(120 - prefix.length);
      assert.equal(native.unixConnect(long), ENAMETOOLONG);
      assert.equal(native.unixConnect(`${prefix}\0tail`), ERRNO.EINVAL);
      assert.equal(native.unixListen(long, 1, 0o600), ENAMETOOLONG);
      assert.equal(native.unixListen(`${prefix}2\0tail`, 1, 0o600), ERRNO.EINVAL);
      assert.equal(existsSync(`${prefix}2`), false, 'nothing bound at the part before the NUL');
      assert.equal(native.accept(listener.fd), ERRNO.EAGAIN, 'nobody reached the socket at the prefix');
    } finally {
      listener.close();
    }
  });
});

test('UnixConnection.connect and UnixListener.listen refuse such paths with a TypeError before any syscall', () => {
  withDir((dir) => {
    const long = join(dir, 'x'.repeat(110));
    for (const path of [long, join(dir, 'a\0b'), '']) {
      assert.throws(() => UnixConnection.connect(path), { name: 'TypeError', message: /at most 107 bytes without NUL/ });
      assert.throws(() => UnixListener.listen(path), { name: 'TypeError', message: /at most 107 bytes without NUL/ });
    }
    // 107 bytes counted in UTF-8, not in characters: 54 two-byte characters are 108 bytes.
    const wide = join(dir, 'é'.repeat(Math.ceil((108 - dir.length) / 2)));
    assert.ok(wide.length <= 107 && Buffer.byteLength(wide) > 107);
    assert.throws(() => UnixConnection.connect(wide), TypeError);
  });
});

test('memfd names over 249 bytes or with a NUL are refused in C and in TypeScript', () => {
  assert.equal(native.memfdCreate('n'.repeat(250), 0), ENAMETOOLONG);
  assert.equal(native.memfdCreate('a\0b', 0), ERRNO.EINVAL);
  const fd = native.memfdCreate('n'.repeat(249), 0);
  assert.ok(fd >= 0);
  native.close(fd);
  assert.throws(() => Mapping.memfd(PAGE_SIZE, { name: 'é'.repeat(125) }), { name: 'TypeError', message: /249 bytes/ });
  assert.throws(() => Mapping.memfd(PAGE_SIZE, { name: 'a\0b' }), TypeError);
});
