// The ABI the library speaks, checked against the values in the project's kernel reference (kernel.md
// §1.2-1.3, printed from the 6.18 uapi header with offsetof/sizeof), not against the build machine's older
// header. A wrong request number or offset here would corrupt memory, so every one is listed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { COPY_MODE, CONTINUE_MODE, decodeMessage, EVENT, FEATURES, IOCTLS, MADVISE, MOVE_MODE, PAGEFAULT_FLAG, POISON_MODE, REGISTER_MODE, STRUCTS, WRITEPROTECT_MODE, ZEROPAGE_MODE } from '../src/abi.js';

test('ioctl request numbers match kernel.md §1.2', () => {
  const expected: Record<string, number> = {
    REGISTER: 0xc020aa00, UNREGISTER: 0x8010aa01, WAKE: 0x8010aa02, COPY: 0xc028aa03, ZEROPAGE: 0xc020aa04,
    MOVE: 0xc028aa05, WRITEPROTECT: 0xc018aa06, CONTINUE: 0xc020aa07, POISON: 0xc020aa08, API: 0xc018aa3f,
  };
  assert.equal(IOCTLS.length, Object.keys(expected).length);
  for (const info of IOCTLS) {
    assert.equal(info.request, expected[info.name], `${info.name}: 0x${info.request.toString(16)}`);
    assert.equal((info.request >>> 16) & 0x3fff, info.structSize, `${info.name} size bits`);
    assert.equal(info.request & 0xff, info.bit, `${info.name} nr is its mask bit`);
  }
});

test('struct sizes and offsets match kernel.md §1.3', () => {
  assert.deepEqual(STRUCTS, {
    uffdio_api: { size: 24, api: 0, features: 8, ioctls: 16 },
    uffdio_range: { size: 16, start: 0, len: 8 },
    uffdio_register: { size: 32, start: 0, len: 8, mode: 16, ioctls: 24 },
    uffdio_copy: { size: 40, dst: 0, src: 8, len: 16, mode: 24, copy: 32 },
    uffdio_zeropage: { size: 32, start: 0, len: 8, mode: 16, zeropage: 24 },
    uffdio_writeprotect: { size: 24, start: 0, len: 8, mode: 16 },
    uffdio_continue: { size: 32, start: 0, len: 8, mode: 16, mapped: 24 },
    uffdio_poison: { size: 32, start: 0, len: 8, mode: 16, updated: 24 },
    uffdio_move: { size: 40, dst: 0, src: 8, len: 16, mode: 24, move: 32 },
    uffd_msg: { size: 32, event: 0, arg: 8 },
  });
});

test('modes, events and fault flags match the uapi', () => {
  assert.deepEqual({ ...REGISTER_MODE }, { MISSING: 1n, WP: 2n, MINOR: 4n });
  assert.deepEqual({ ...COPY_MODE }, { DONTWAKE: 1n, WP: 2n });
  assert.deepEqual({ ...ZEROPAGE_MODE }, { DONTWAKE: 1n });
  assert.deepEqual({ ...WRITEPROTECT_MODE }, { WP: 1n, DONTWAKE: 2n });
  assert.deepEqual({ ...CONTINUE_MODE }, { DONTWAKE: 1n, WP: 2n });
  assert.deepEqual({ ...POISON_MODE }, { DONTWAKE: 1n });
  assert.deepEqual({ ...MOVE_MODE }, { DONTWAKE: 1n, ALLOW_SRC_HOLES: 2n });
  assert.deepEqual({ ...EVENT }, { PAGEFAULT: 0x12, FORK: 0x13, REMAP: 0x14, REMOVE: 0x15, UNMAP: 0x16 });
  assert.deepEqual({ ...PAGEFAULT_FLAG }, { WRITE: 1n, WP: 2n, MINOR: 4n });
});

test('17 feature bits, 0..16, each with the kernel that brought it (kernel.md §1.5)', () => {
  const since = ['5.7', '4.11', '4.11', '4.11', '4.11', '4.11', '4.11', '4.14', '4.14', '5.13', '5.14', '5.18', '5.19', '6.4', '6.6', '6.7', '6.8'];
  const behavioural = [1, 2, 3, 6, 7, 8, 11, 13, 15];
  assert.equal(FEATURES.length, 17);
  FEATURES.forEach((f, i) => {
    assert.equal(f.bit, i);
    assert.equal(f.since, since[i], f.name);
    assert.equal(f.behavioural, behavioural.includes(i), f.name);
  });
});

test('madvise values: HWPOISON and SOFT_OFFLINE are marked unsafe, nothing else', () => {
  assert.deepEqual(MADVISE.filter((a) => !a.safe).map((a) => [a.name, a.value]), [['HWPOISON', 100], ['SOFT_OFFLINE', 101]]);
  assert.equal(new Set(MADVISE.map((a) => a.value)).size, MADVISE.length);
});

function message(event: number, words: bigint[]): DataView {
  const view = new DataView(new ArrayBuffer(32));
  view.setUint8(0, event);
  words.forEach((w, i) => { view.setBigUint64(8 + i * 8, w, true); });
  return view;
}

test('decodeMessage reads each union member at its offset', () => {
  const fault = message(EVENT.PAGEFAULT, [3n, 0x7f0000001000n, 4242n]);
  assert.deepEqual(decodeMessage(fault, 0), { event: EVENT.PAGEFAULT, flags: 3n, address: 0x7f0000001000n, ptid: 4242 });
  assert.deepEqual(decodeMessage(message(EVENT.FORK, [17n]), 0), { event: EVENT.FORK, ufd: 17 });
  assert.deepEqual(decodeMessage(message(EVENT.REMAP, [0x1000n, 0x9000n, 0x8000n]), 0), { event: EVENT.REMAP, from: 0x1000n, to: 0x9000n, len: 0x8000n });
  assert.deepEqual(decodeMessage(message(EVENT.REMOVE, [0x1000n, 0x2000n]), 0), { event: EVENT.REMOVE, start: 0x1000n, end: 0x2000n });
  assert.deepEqual(decodeMessage(message(EVENT.UNMAP, [0x3000n, 0x4000n]), 0), { event: EVENT.UNMAP, start: 0x3000n, end: 0x4000n });
});

test('decodeMessage keeps an unknown event whole instead of dropping it', () => {
  const raw = message(0x42, [1n, 2n, 3n]);
  const decoded = decodeMessage(raw, 0);
  assert.ok('raw' in decoded);
  assert.equal(decoded.event, 0x42);
  assert.deepEqual(decoded.raw, new Uint8Array(raw.buffer));
});

test('decodeMessage reads the message at a non-zero offset of a batch', () => {
  const batch = new DataView(new ArrayBuffer(64));
  batch.setUint8(32, EVENT.REMOVE);
  batch.setBigUint64(40, 5n * 4096n, true);
  batch.setBigUint64(48, 6n * 4096n, true);
  assert.deepEqual(decodeMessage(batch, 32), { event: EVENT.REMOVE, start: 5n * 4096n, end: 6n * 4096n });
});
