// Attacks on memory handed to JavaScript and to the kernel: none may crash the process natively or put bytes
// into memory that the caller did not pass. Each runs in a child Node, so a SIGSEGV/SIGBUS is seen as a failure.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { hugePageSize } from '../src/system.js';
import { Mapping, probe, Userfaultfd } from '../src/index.js';
import { describeExit, runAttack } from './support/attack.js';

const hasTransfer = typeof (ArrayBuffer.prototype as { transfer?: unknown }).transfer === 'function';

test('mapping.buffer and views cannot be transferred: touching one after close() is never SIGSEGV', { skip: hasTransfer ? false : `ArrayBuffer.prototype.transfer does not exist on Node ${process.version} (it came in Node 21): nothing can move the memory` }, () => {
  const r = runAttack(`
    const m = uffd.Mapping.anonymous(65536);
    const escaped = [];
    for (const make of [() => m.buffer, () => m.view(4096, 4096)]) {
      for (const method of ['transfer', 'transferToFixedLength']) {
        const b = make();
        try { escaped.push(b[method]()); } catch (err) { if (!(err instanceof TypeError)) throw err; }
        try { escaped.push(ArrayBuffer.prototype[method].call(b, 8192)); } catch (err) { if (!(err instanceof TypeError)) throw err; }
      }
    }
    m.close();
    for (const b of escaped) new Uint8Array(b)[0] = 1; // after close: the range is PROT_NONE
    console.log('escaped', escaped.length);
  `);
  assert.equal(r.signal, null, describeExit(r));
  assert.equal(r.status, 0, describeExit(r));
  assert.match(r.stdout, /escaped 0/);
});

test('other ArrayBuffers still transfer', { skip: hasTransfer ? false : `no ArrayBuffer.prototype.transfer on Node ${process.version}` }, () => {
  const plain = new ArrayBuffer(16);
  new Uint8Array(plain)[3] = 9;
  const moved = (plain as unknown as { transfer(n?: number): ArrayBuffer }).transfer(32);
  assert.equal(moved.byteLength, 32);
  assert.equal(new Uint8Array(moved)[3], 9);
  assert.equal(plain.byteLength, 0);
});

test('copy() takes the source length from the engine, not from a byteLength property user code redefined', { skip: probe().available ? false : 'no userfaultfd here' }, () => {
  const r = runAttack(`
    const m = uffd.Mapping.anonymous(16 * 4096);
    const u = uffd.Userfaultfd.open({ userModeOnly: true });
    u.register(m, { missing: true });
    const src = new Uint8Array(4096).fill(0xab);
    Object.defineProperty(src, 'byteLength', { value: 16 * 4096 });
    let copied;
    try { copied = u.copy(m.address, src); } catch (err) { copied = err.code ?? err.name; }
    // Only the 4096 bytes the view really holds may have been copied; the page after it must still be missing.
    const fs = await import('node:fs');
    const pagemap = Buffer.alloc(16 * 8);
    const fd = fs.openSync('/proc/self/pagemap', 'r');
    fs.readSync(fd, pagemap, 0, pagemap.length, Number(m.address / 4096n) * 8);
    fs.closeSync(fd);
    const present = [];
    for (let i = 0; i < 16; i++) present.push((pagemap.readBigUInt64LE(i * 8) >> 63n) & 1n);
    console.log(JSON.stringify({ copied, present: present.map(Number) }));
  `);
  assert.equal(r.signal, null, describeExit(r));
  assert.equal(r.status, 0, describeExit(r));
  const out = JSON.parse(r.stdout) as { copied: unknown; present: number[] };
  assert.equal(out.copied, 4096);
  assert.deepEqual(out.present, [1, ...Array<number>(15).fill(0)], 'nothing beyond the view reached the destination');
});

test("madvise('GUARD_INSTALL') is refused: a guard region makes the next touch SIGSEGV", () => {
  const r = runAttack(`
    const m = uffd.Mapping.anonymous(4 * 4096);
    try { m.madvise('GUARD_INSTALL', 4096, 4096); } catch (err) { console.log('refused', err.name); }
    new Uint8Array(m.buffer)[4096] = 1;
    m.madvise('GUARD_REMOVE');
    console.log('touched');
  `);
  assert.equal(r.signal, null, describeExit(r));
  assert.equal(r.status, 0, describeExit(r));
  assert.match(r.stdout, /refused RangeError\ntouched/);
});

test('Mapping.file() refuses a length past the end of the file (a touch there is SIGBUS); up to the last page is fine', () => {
  const dir = mkdtempSync(join(tmpdir(), 'uffd-hardening-'));
  try {
    const path = join(dir, 'short');
    writeFileSync(path, Buffer.alloc(4096 + 100, 7));
    const r = runAttack(`
      const path = ${JSON.stringify(path)};
      const ok = uffd.Mapping.file(path, { length: 2 * 4096 });
      const bytes = new Uint8Array(ok.buffer);
      console.log('last page', bytes[4096 + 99], bytes[4096 + 100]);
      for (const options of [{ length: 3 * 4096 }, { offset: 8192, length: 4096 }, { offset: 4096, length: 8192 }]) {
        try { const m = uffd.Mapping.file(path, options); new Uint8Array(m.buffer)[m.length - 1]; console.log('mapped', JSON.stringify(options)); }
        catch (err) { console.log('refused', err.name); }
      }
    `);
    assert.equal(r.signal, null, describeExit(r));
    assert.equal(r.status, 0, describeExit(r));
    assert.equal(r.stdout, 'last page 7 0\nrefused RangeError\nrefused RangeError\nrefused RangeError\n');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** Free huge pages not promised to a mapping yet (HugePages_Free counts the reserved ones too). */
function unreservedHugePages(): number {
  const meminfo = readFileSync('/proc/meminfo', 'latin1');
  const field = (name: string): number => Number(new RegExp(`^${name}:\\s+(\\d+)$`, 'm').exec(meminfo)?.[1] ?? 0);
  return field('HugePages_Free') - field('HugePages_Rsvd');
}

const hugeSize = hugePageSize();
test('hugetlb mappings the pool cannot hold fail with ENOMEM at creation instead of SIGBUS on a touch', { skip: hugeSize === 0 ? 'no hugetlb on this kernel' : false }, () => {
  // More pages than are free and unreserved: the kernel must refuse the reservation. (The pool is shared with
  // other tests, so the attack never takes pages: it asks for one more than exist.)
  const pages = unreservedHugePages() + 1;
  for (const make of ['Mapping.anonymous', 'Mapping.memfd']) {
    const r = runAttack(`
      let m;
      try { m = uffd.${make}(${String(pages * hugeSize)}, { hugetlb: true }); }
      catch (err) { console.log('refused', err.code); process.exit(0); }
      const bytes = new Uint8Array(m.buffer);
      for (let i = 0; i < ${String(pages)}; i++) bytes[i * ${String(hugeSize)}] = 1;
      console.log('touched all');
    `);
    assert.equal(r.signal, null, `${make}: ${describeExit(r)}`);
    assert.equal(r.stdout, 'refused ENOMEM\n', `${make}: ${describeExit(r)}`);
  }
  if (unreservedHugePages() >= 2) {
    using held = Mapping.anonymous(2 * hugeSize, { hugetlb: true });
    const bytes = new Uint8Array(held.buffer);
    bytes[0] = 1;
    bytes[hugeSize] = 2;
    assert.deepEqual([bytes[0], bytes[hugeSize]], [1, 2]);
  }
});

test('fromFd refuses a descriptor an open Userfaultfd already owns (a stale owner would close a reused number); a dup() is adopted', { skip: probe().available ? false : 'no userfaultfd here' }, () => {
  using owner = Userfaultfd.open({ userModeOnly: true });
  assert.throws(() => Userfaultfd.fromFd(owner.fd), { name: 'TypeError', message: /already owned/ });
  using second = Userfaultfd.fromFd(owner.dup());
  assert.notEqual(second.fd, owner.fd);
});
