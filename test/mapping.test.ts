// Mapping: the buffer is the memory itself, windows of it, aliases, files, and close(): buffers detached,
// PROT_NONE over the range, and the one munmap only when the last buffer is collected.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { MessageChannel } from 'node:worker_threads';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Mapping, MAX_BUFFER_LENGTH } from '../src/index.js';
import { ScratchFile } from './support/faulter.js';
import { ROOT } from './support/support.js';

function mapsLine(address: bigint): string | undefined {
  const hex = address.toString(16);
  return readFileSync('/proc/self/maps', 'latin1').split('\n').find((line) => line.startsWith(`${hex}-`));
}

test('anonymous: buffer and views are the same memory, no copy', () => {
  using mapping = Mapping.anonymous(3 * 4096);
  assert.equal(mapping.length, 3 * 4096);
  assert.equal(mapping.pageSize, 4096);
  assert.equal(mapping.address % 4096n, 0n);
  const whole = new Uint8Array(mapping.buffer);
  assert.equal(mapping.buffer, mapping.buffer, 'one buffer object');
  const window = new Uint8Array(mapping.view(4096, 4096));
  window[10] = 42;
  assert.equal(whole[4096 + 10], 42);
  assert.throws(() => mapping.view(2 * 4096, 2 * 4096), RangeError);
  assert.throws(() => mapping.view(-1, 1), RangeError);
});

test('lengths are rounded up to whole pages', () => {
  using mapping = Mapping.anonymous(100);
  assert.equal(mapping.length, 4096);
  assert.throws(() => Mapping.anonymous(0), RangeError);
  assert.throws(() => Mapping.anonymous(1.5), RangeError);
  assert.throws(() => Mapping.anonymous(4096, { hugetlb: 'yes' as never }), TypeError);
});

test('memfd: alias() maps the same pages; private mappings copy on write', () => {
  using shared = Mapping.memfd(2 * 4096, { name: 'test' });
  using alias = shared.alias();
  assert.notEqual(alias.address, shared.address);
  new Uint8Array(shared.buffer)[5] = 7;
  assert.equal(new Uint8Array(alias.buffer)[5], 7);
  using priv = Mapping.memfd(4096, { private: true });
  using privAlias = priv.alias();
  new Uint8Array(privAlias.buffer)[0] = 9;
  assert.equal(new Uint8Array(priv.buffer)[0], 9, 'an unwritten private page reads the page cache');
  new Uint8Array(priv.buffer)[0] = 1;
  assert.equal(new Uint8Array(privAlias.buffer)[0], 9, 'a written private page is a private copy');
  assert.throws(() => Mapping.anonymous(4096).alias(), TypeError);
});

test('an alias keeps its own descriptor: it outlives the original, and aliases of it map the same pages', () => {
  const original = Mapping.memfd(4096);
  const alias = original.alias();
  new Uint8Array(original.buffer)[1] = 11;
  original.close();
  assert.notEqual(alias.fd, original.fd);
  using second = alias.alias();
  assert.equal(new Uint8Array(second.buffer)[1], 11);
  alias.close();
});

test('file: the file contents, read-only unless asked', () => {
  using file = new ScratchFile(Uint8Array.from({ length: 5000 }, (_, i) => i & 0xff));
  using mapping = Mapping.file(file.path);
  assert.equal(mapping.length, 8192);
  const bytes = new Uint8Array(mapping.buffer);
  assert.equal(bytes[4999], 4999 & 0xff);
  assert.equal(bytes[5000], 0, 'past the end of the file, within the last page: zeros');
  using window = Mapping.file(file.path, { offset: 4096, length: 100 });
  assert.equal(new Uint8Array(window.buffer)[0], 4096 & 0xff);
  assert.throws(() => Mapping.file(file.path, { offset: 100 }), RangeError);
  assert.match(mapsLine(mapping.address) ?? '', / r--p /);
});

test('madvise: DONTNEED zeroes private anon pages; unsafe advices are refused', () => {
  using mapping = Mapping.anonymous(2 * 4096);
  new Uint8Array(mapping.buffer).fill(3);
  mapping.madvise('DONTNEED', 4096, 4096);
  const bytes = new Uint8Array(mapping.buffer);
  assert.equal(bytes[0], 3);
  assert.equal(bytes[4096], 0);
  assert.throws(() => { mapping.madvise('REMOVE'); }, { code: 'EINVAL', syscall: 'madvise(MADV_REMOVE)' });
  assert.throws(() => { mapping.madvise('HWPOISON'); }, RangeError);
  assert.throws(() => { mapping.madvise('NOPE' as never); }, TypeError);
  assert.throws(() => { mapping.madvise('DONTNEED', 100); }, RangeError);
});

test('close(): every buffer detached, PROT_NONE over the range, the address still reserved', () => {
  const mapping = Mapping.anonymous(2 * 4096);
  const whole = new Uint8Array(mapping.buffer);
  const window = mapping.view(4096, 4096);
  mapping.close();
  mapping.close();
  assert.equal(whole.length, 0);
  assert.equal(window.byteLength, 0);
  assert.throws(() => mapping.buffer, { code: 'ERR_UFFD_CLOSED' });
  assert.match(mapsLine(mapping.address) ?? '', / ---p /, 'PROT_NONE until the finalizer unmaps');
});

test('the one munmap happens when the mapping and its buffers are collected', () => {
  const script = `
    import { Mapping } from ${JSON.stringify(pathToFileURL(join(ROOT, 'dist', 'src', 'index.js')).href)};
    import { readFileSync } from 'node:fs';
    const has = (a) => readFileSync('/proc/self/maps', 'latin1').includes(a.toString(16) + '-');
    let m = Mapping.anonymous(4 * 4096);
    const address = m.address;
    let view = new Uint8Array(m.buffer);
    view[0] = 1;
    m.close();
    const afterClose = has(address);
    m = undefined; view = undefined;
    for (let i = 0; i < 20 && has(address); i++) { globalThis.gc(); await new Promise((r) => setTimeout(r, 5)); }
    console.log(JSON.stringify({ afterClose, afterGc: has(address) }));
  `;
  const r = spawnSync(process.execPath, ['--expose-gc', '--input-type=module', '-e', script], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), { afterClose: true, afterGc: false });
});

const FIVE_GIB = 5 * 2 ** 30;
test('a mapping larger than 4 GiB: view() windows on Node 20, the whole buffer where Node allows it', () => {
  using mapping = Mapping.anonymous(FIVE_GIB); // MAP_NORESERVE: nothing is committed until touched
  if (MAX_BUFFER_LENGTH < FIVE_GIB) {
    assert.throws(() => mapping.buffer, { name: 'RangeError', message: /use view\(offset, length\)/ });
  } else {
    assert.equal(mapping.buffer.byteLength, FIVE_GIB);
  }
  const tail = new Uint8Array(mapping.view(mapping.length - 4096, 4096));
  tail[4095] = 5;
  assert.equal(tail[4095], 5);
});

test('the mapped memory never moves to another thread: transferring its buffer copies (Node 20) or throws DataCloneError (22+)', async () => {
  using mapping = Mapping.anonymous(4096);
  const bytes = new Uint8Array(mapping.buffer);
  bytes[0] = 7;
  const { port1, port2 } = new MessageChannel();
  try {
    const received = new Promise<ArrayBuffer>((resolve) => port2.once('message', resolve));
    const major = Number(process.versions.node.split('.')[0]);
    if (major >= 22) {
      assert.throws(() => { port1.postMessage(mapping.buffer, [mapping.buffer]); }, { name: 'DataCloneError' });
      port1.postMessage(mapping.buffer); // cloning still works: a copy
    } else {
      port1.postMessage(mapping.buffer, [mapping.buffer]); // Node 20 copies silently instead of transferring
    }
    const copy = new Uint8Array(await received);
    assert.equal(copy[0], 7);
    copy[0] = 8;
    assert.equal(bytes[0], 7, 'the receiver has a copy, not the mapping');
    assert.equal(mapping.buffer.byteLength, 4096, 'the mapping\'s buffer is still attached');
  } finally {
    port1.close();
  }
});
