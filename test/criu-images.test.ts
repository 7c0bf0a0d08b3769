// CRIU's images as a lazy-pages daemon reads them: framing, the protobuf fields of pagemap, mm and pstree,
// both page-count fields, page-file offsets, lazy runs cut at area edges, every refusal, and fuzzing in
// which only a result or a CriuImageError may come out.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CriuImageError } from '../src/server/criu/errors.js';
import { MAGIC } from '../src/server/criu/image-file.js';
import { PE_LAZY, PE_PARENT, PE_PRESENT, parseMm, parsePagemap, parsePstree } from '../src/server/criu/images.js';
import { lazyRuns } from '../src/server/criu/lazy-layout.js';
import { decodeMessage } from '../src/server/criu/protobuf.js';
import type { EntrySpec } from './support/criu-images.js';
import { imageFile, message, mmEntry, pagemapEntry, vma } from './support/criu-images.js';

const P = 4096;
const LP = PE_LAZY | PE_PRESENT;
const A = 0x7f0000000000n;

function pagemap(entries: EntrySpec[], pagesId = 1): Uint8Array {
  return imageFile(MAGIC.pagemap, [message([[1, pagesId]]), ...entries.map(pagemapEntry)]);
}

function refused(run: () => unknown, reason: CriuImageError['reason'], pattern: RegExp): void {
  assert.throws(run, (err: unknown) => {
    assert.ok(err instanceof CriuImageError, `expected a CriuImageError, got ${String(err)}`);
    assert.equal(err.code, 'ERR_UFFD_CRIU_IMAGE');
    assert.equal(err.reason, reason, err.message);
    assert.match(err.message, pattern);
    assert.ok(!err.message.includes('\n'));
    return true;
  });
}

test('pagemap: head, entries, flags, and page-file offsets summed over present entries only', () => {
  const map = parsePagemap(pagemap([
    { vaddr: A, pages: 2, flags: PE_PRESENT },
    { vaddr: A + 0x10000n, pages: 3, flags: LP },
    { vaddr: A + 0x20000n, pages: 1, flags: 0 }, // a hole entry (no pages in the file)
    { vaddr: A + 0x30000n, pages: 4, flags: LP, field: 'wide' },
  ], 7), 'pagemap-1.img');
  assert.equal(map.pagesId, 7);
  assert.deepEqual(map.entries.map((e) => [e.pages, e.flags, e.fileOffset]), [[2, PE_PRESENT, 0], [3, LP, 2 * P], [1, 0, 5 * P], [4, LP, 5 * P]]);
  assert.equal(map.pagesBytes, 9 * P);
});

test('pagemap: nr_pages (field 5, CRIU 4.0+) wins over compat_nr_pages (field 2); old images without flags', () => {
  const both = parsePagemap(pagemap([{ vaddr: A, pages: 5, flags: LP, field: 'both' }]), 'p');
  assert.equal(both.entries[0]?.pages, 5);
  // 2^32 pages: only the u64 field can say it.
  const wide = parsePagemap(pagemap([{ vaddr: A, pages: 2 ** 32, flags: LP, field: 'wide' }]), 'p');
  assert.equal(wide.entries[0]?.pages, 2 ** 32);
  const old = parsePagemap(imageFile(MAGIC.pagemap, [message([[1, 1]]), message([[1, A], [2, 3]])]), 'p');
  assert.equal(old.entries[0]?.flags, PE_PRESENT);
  refused(() => parsePagemap(imageFile(MAGIC.pagemap, [message([[1, 1]]), message([[1, A], [2, 3], [3, 1]])]), 'p'), 'parent-pages', /PE_PARENT/);
  refused(() => parsePagemap(imageFile(MAGIC.pagemap, [message([[1, 1]]), message([[1, A]])]), 'p'), 'malformed', /neither nr_pages nor compat_nr_pages/);
});

test('pagemap: PE_PARENT is refused with the reason and what to do', () => {
  refused(() => parsePagemap(pagemap([{ vaddr: A, pages: 1, flags: PE_PARENT | PE_LAZY }]), 'pagemap-9.img'), 'parent-pages',
    /^pagemap-9\.img: entry 0 \(vaddr 0x7f0000000000\) keeps its pages in a parent image \(a pre-dump chain, PE_PARENT\).*--prev-images-dir$/);
});

test('pagemap: layouts that cannot be served are refused', () => {
  refused(() => parsePagemap(pagemap([{ vaddr: A + 1n, pages: 1, flags: LP }]), 'p'), 'invalid-layout', /not page-aligned/);
  refused(() => parsePagemap(pagemap([{ vaddr: A, pages: 0, flags: LP }]), 'p'), 'invalid-layout', /has 0 pages/);
  refused(() => parsePagemap(pagemap([{ vaddr: A, pages: 2, flags: LP }, { vaddr: A + 0x1000n, pages: 1, flags: LP }]), 'p'), 'invalid-layout', /overlaps or precedes/);
  refused(() => parsePagemap(pagemap([{ vaddr: (1n << 64n) - 0x1000n, pages: 2, flags: LP }]), 'p'), 'invalid-layout', /past the end of the 64-bit/);
  refused(() => parsePagemap(pagemap([{ vaddr: A, pages: 1, flags: PE_LAZY }]), 'p'), 'invalid-layout', /PE_LAZY without PE_PRESENT/);
  refused(() => parsePagemap(imageFile(MAGIC.pagemap, []), 'p'), 'truncated', /no pagemap_head/);
  refused(() => parsePagemap(imageFile(MAGIC.mm, [message([[1, 1]])]), 'pagemap-3.img'), 'bad-magic', /^pagemap-3\.img: magic 0x54564319 0x57492820, expected 0x54564319 0x56084025$/);
  refused(() => parsePagemap(imageFile(MAGIC.pagemap, [message([[1, 1n << 33n]])]), 'p'), 'malformed', /pages_id 8589934592 does not fit 32 bits/);
});

test('framing: truncated at every byte is a result (at a record boundary) or a CriuImageError, never more records', () => {
  const bytes = pagemap([{ vaddr: A, pages: 2, flags: LP }, { vaddr: A + 0x4000n, pages: 1, flags: PE_PRESENT }]);
  const boundaries = new Set<number>();
  let at = 8;
  boundaries.add(at);
  while (at < bytes.length) {
    at += 4 + new DataView(bytes.buffer).getUint32(at, true);
    boundaries.add(at);
  }
  for (let n = 0; n < bytes.length; n++) {
    const prefix = bytes.slice(0, n);
    try {
      const map = parsePagemap(prefix, 'p');
      assert.ok(boundaries.has(n), `a prefix of ${String(n)} bytes parsed`);
      assert.ok(map.entries.length < 2);
    } catch (err) {
      assert.ok(err instanceof CriuImageError, `prefix ${String(n)}: ${String(err)}`);
      assert.ok(!boundaries.has(n) || n === 8, `prefix ${String(n)} at a record boundary was refused: ${err.message}`);
    }
  }
});

test('protobuf: varints, wire types and field numbers are checked', () => {
  refused(() => decodeMessage(Uint8Array.from([0x08, 0x80]), 'm'), 'truncated', /varint runs past the end/);
  refused(() => decodeMessage(Uint8Array.from([0x08, ...new Array<number>(10).fill(0xff), 0x01]), 'm'), 'malformed', /longer than 10 bytes/);
  refused(() => decodeMessage(Uint8Array.from([0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]), 'm'), 'malformed', /larger than 64 bits/);
  refused(() => decodeMessage(Uint8Array.from([0x0b]), 'm'), 'malformed', /wire type 3/);
  refused(() => decodeMessage(Uint8Array.from([0x00, 0x01]), 'm'), 'malformed', /field number 0/);
  refused(() => decodeMessage(Uint8Array.from([0x0a, 0x05, 0x01]), 'm'), 'truncated', /claims 5 bytes, 1 remain/);
  refused(() => decodeMessage(Uint8Array.from([0x09, 1, 2, 3]), 'm'), 'truncated', /64-bit/);
  refused(() => decodeMessage(Uint8Array.from([0x0d, 1, 2]), 'm'), 'truncated', /32-bit/);
  assert.deepEqual(decodeMessage(Uint8Array.from([0x0d, 1, 0, 0, 0, 0x11, 2, 0, 0, 0, 0, 0, 0, 0]), 'm').map((f) => f.value.value), [1, 2n]);
  // A field of the wrong wire type where a varint belongs.
  refused(() => parsePagemap(imageFile(MAGIC.pagemap, [message([[1, Uint8Array.from([1])]])]), 'p'), 'malformed', /pages_id \(field 1\) is not a varint/);
});

test('mm: the areas, checked for alignment and order', () => {
  const areas = parseMm(imageFile(MAGIC.mm, [mmEntry([vma(A, A + 0x3000n), vma(A + 0x3000n, A + 0x10000n, 0x21)])]), 'mm-1.img');
  assert.deepEqual(areas, [{ start: A, end: A + 0x3000n, flags: 0x22, status: 0x201 }, { start: A + 0x3000n, end: A + 0x10000n, flags: 0x21, status: 0x201 }]);
  refused(() => parseMm(imageFile(MAGIC.mm, [mmEntry([vma(A, A + 0x10n)])]), 'mm-1.img'), 'invalid-layout', /^mm-1\.img: vmas\[0\] \[0x7f0000000000, 0x7f0000000010\) is empty or not page-aligned$/);
  refused(() => parseMm(imageFile(MAGIC.mm, [mmEntry([vma(A, A + 0x3000n), vma(A + 0x2000n, A + 0x4000n)])]), 'm'), 'invalid-layout', /overlaps/);
  refused(() => parseMm(imageFile(MAGIC.mm, []), 'm'), 'truncated', /0 mm_entry records/);
  refused(() => parseMm(imageFile(MAGIC.mm, [mmEntry([message([[2, A]])])]), 'm'), 'malformed', /start \(field 1\) is missing/);
});

test('pstree: pids, ppids and threads, packed or not; duplicates and zero refused', () => {
  const tree = parsePstree(imageFile(MAGIC.pstree, [
    message([[1, 100], [2, 0], [3, 100], [4, 100], [5, [100, 101, 102]]]),
    message([[1, 103], [2, 100], [3, 100], [4, 100], [5, message([[1, 0]]).subarray(0, 0)]]),
  ]), 'pstree.img');
  assert.deepEqual(tree, [{ pid: 100, ppid: 0, threads: [100, 101, 102] }, { pid: 103, ppid: 100, threads: [] }]);
  const packed = parsePstree(imageFile(MAGIC.pstree, [message([[1, 5], [2, 0], [5, Uint8Array.from([5, 0x80, 0x01])]])]), 'p');
  assert.deepEqual(packed[0]?.threads, [5, 128]);
  refused(() => parsePstree(imageFile(MAGIC.pstree, [message([[1, 5], [2, 0]]), message([[1, 5], [2, 0]])]), 'p'), 'malformed', /pid 5 occurs twice/);
  refused(() => parsePstree(imageFile(MAGIC.pstree, [message([[1, 0], [2, 0]])]), 'p'), 'malformed', /pid 0 is out of range/);
  refused(() => parsePstree(imageFile(MAGIC.pstree, [message([[2, 0]])]), 'p'), 'malformed', /pid or ppid is missing/);
});

test('lazy runs: only lazy entries, cut at area edges, each with its page-file offset', () => {
  const map = parsePagemap(pagemap([
    { vaddr: A, pages: 1, flags: PE_PRESENT },
    { vaddr: A + 0x1000n, pages: 6, flags: LP }, // spans areas [A, A+0x3000) and [A+0x3000, A+0x8000)
    { vaddr: A + 0x9000n, pages: 2, flags: LP },
  ]), 'p');
  const areas = [{ start: A, end: A + 0x3000n, flags: 0x22, status: 0 }, { start: A + 0x3000n, end: A + 0x8000n, flags: 0x22, status: 0 }, { start: A + 0x9000n, end: A + 0xb000n, flags: 0x22, status: 0 }];
  assert.deepEqual(lazyRuns(map, areas, 9 * P, 'p'), [
    { start: A + 0x1000n, pages: 2, fileOffset: P },
    { start: A + 0x3000n, pages: 4, fileOffset: 3 * P },
    { start: A + 0x9000n, pages: 2, fileOffset: 7 * P },
  ]);
  refused(() => lazyRuns(map, areas, 9 * P - 1, 'pagemap-4.img'), 'invalid-layout', /^pagemap-4\.img points past its pages file: its present entries need 36864 bytes, pages-1\.img has 36863$/);
  refused(() => lazyRuns(map, areas.slice(0, 2), 9 * P, 'p'), 'invalid-layout', /lazy page 0x7f0000009000 lies outside every area/);
  refused(() => lazyRuns(map, [{ start: A + 0x2000n, end: A + 0x8000n, flags: 0, status: 0 }], 9 * P, 'p'), 'invalid-layout', /lazy page 0x7f0000001000 lies outside/);
});

/** A deterministic generator (xorshift32) so a failure can be replayed. */
function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13; s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5; s >>>= 0;
    return s / 2 ** 32;
  };
}

test('fuzz: mutated, truncated and random images give a result or a CriuImageError, nothing else', () => {
  const seeds = [
    { parse: (b: Uint8Array) => parsePagemap(b, 'p'), bytes: pagemap([{ vaddr: A, pages: 3, flags: LP }, { vaddr: A + 0x5000n, pages: 2 ** 33, flags: LP, field: 'both' }]) },
    { parse: (b: Uint8Array) => parseMm(b, 'm'), bytes: imageFile(MAGIC.mm, [mmEntry([vma(A, A + 0x3000n), vma(A + 0x4000n, A + 0x9000n)])]) },
    { parse: (b: Uint8Array) => parsePstree(b, 's'), bytes: imageFile(MAGIC.pstree, [message([[1, 100], [2, 0], [5, [100, 101]]]), message([[1, 102], [2, 100]])]) },
  ];
  const random = rng(0x14c0ffee);
  let results = 0;
  let errors = 0;
  for (let round = 0; round < 4000; round++) {
    const seed = seeds[round % seeds.length];
    if (seed === undefined) continue;
    const bytes = seed.bytes.slice();
    const mutations = 1 + Math.floor(random() * 4);
    let input: Uint8Array = bytes;
    for (let m = 0; m < mutations; m++) {
      const kind = random();
      if (kind < 0.5) input[8 + Math.floor(random() * (input.length - 8))] = Math.floor(random() * 256);
      else if (kind < 0.7) input = input.slice(0, Math.floor(random() * input.length));
      else if (kind < 0.85) input = Uint8Array.from([...input, ...Array.from({ length: Math.floor(random() * 16) }, () => Math.floor(random() * 256))]);
      else input = Uint8Array.from({ length: Math.floor(random() * 64) }, () => Math.floor(random() * 256));
    }
    try {
      seed.parse(input);
      results++;
    } catch (err) {
      assert.ok(err instanceof CriuImageError, `round ${String(round)}: ${String(err)}`);
      assert.ok(!err.message.includes('\n'));
      errors++;
    }
  }
  assert.ok(results > 100 && errors > 100, `results ${String(results)}, errors ${String(errors)}`);
});
