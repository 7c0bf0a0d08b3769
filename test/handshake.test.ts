// The Firecracker handshake body: framing over a byte stream split anywhere, the strict JSON parser, the
// three protocol shapes, every refusal with its message, and a fuzz test that only HandshakeError escapes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { GuestRegion, HandshakeOptions } from '../src/server/firecracker/handshake.js';
import { HandshakeError, HandshakeReader, parseHandshake, validateRegions } from '../src/server/firecracker/handshake.js';
import type { JsonValue } from '../src/server/firecracker/strict-json.js';
import { JsonNumber, JsonSyntaxError, parseJson } from '../src/server/firecracker/strict-json.js';

const KIB4 = 4096;
const MIB2 = 2 * 1024 * 1024;
const GIB = 1024 * 1024 * 1024;
const encoder = new TextEncoder();

// x86 guest with an MMIO gap: 3 GiB below it, 1 GiB above, each its own mapping; the file holds both in turn.
const BASE0 = 0x7f8b40000000n;
const BASE1 = 0x7f8c80000000n;
const FILE_SIZE = 4 * GIB;

interface RawRegion { base: bigint; size: number; offset: number }
const TWO_REGIONS: RawRegion[] = [
  { base: BASE0, size: 3 * GIB, offset: 0 },
  { base: BASE1, size: GIB, offset: 3 * GIB },
];

/** The body as each Firecracker version's serde struct writes it: no spaces, fields in declaration order. */
function body(version: '1.1' | '1.7' | '1.12', regions: RawRegion[] = TWO_REGIONS, pageSize = KIB4): string {
  return `[${regions.map((r) => {
    const common = `"base_host_virt_addr":${r.base.toString()},"size":${r.size},"offset":${r.offset}`;
    if (version === '1.1') return `{${common}}`;
    if (version === '1.7') return `{${common},"page_size_kib":${pageSize}}`;
    return `{${common},"page_size":${pageSize},"page_size_kib":${pageSize}}`;
  }).join(',')}]`;
}

/** One region with each field given as raw JSON text, for the refusals. */
function region(fields: Record<string, string | number | bigint>): string {
  return `{${Object.entries(fields).map(([k, v]) => `${JSON.stringify(k)}:${String(v)}`).join(',')}}`;
}

const OK = { base_host_virt_addr: BASE0, size: 2 * MIB2, offset: 0, page_size: KIB4, page_size_kib: KIB4 };

function without<T extends object>(object: T, key: keyof T): Partial<T> {
  return Object.fromEntries(Object.entries(object).filter(([k]) => k !== key)) as Partial<T>;
}

function parse(payload: string | Uint8Array, options?: Partial<HandshakeOptions>) {
  return parseHandshake(payload, { memoryFileSize: FILE_SIZE, ...options });
}

function refused(payload: string | Uint8Array, reason: HandshakeError['reason'], message: RegExp, options?: Partial<HandshakeOptions>): void {
  assert.throws(() => parse(payload, options), (err: unknown) => {
    assert.ok(err instanceof HandshakeError, `expected a HandshakeError, got ${String(err)}`);
    assert.equal(err.code, 'ERR_UFFD_HANDSHAKE');
    assert.equal(err.reason, reason, err.message);
    assert.match(err.message, message);
    assert.ok(!err.message.includes('\n'), 'a log line has no newline');
    return true;
  });
}

const EXPECTED_TWO: GuestRegion[] = [
  { baseHostVirtAddr: BASE0, size: 3 * GIB, offset: 0, pageSize: KIB4 },
  { baseHostVirtAddr: BASE1, size: GIB, offset: 3 * GIB, pageSize: KIB4 },
];

test('every protocol shape is accepted: 1.1, 1.7 (page_size_kib in bytes), 1.12 (page_size too)', () => {
  for (const version of ['1.1', '1.7', '1.12'] as const) {
    const result = parse(body(version));
    assert.equal(result.version, version);
    assert.equal(result.pageSize, KIB4);
    assert.deepEqual(result.regions, EXPECTED_TWO);
  }
});

test('2 MiB hugetlbfs pages in the 1.7 and 1.12 shapes', () => {
  const regions = [{ base: 0x7f0000000000n, size: 512 * MIB2, offset: 0 }, { base: 0x7f4000000000n, size: 64 * MIB2, offset: 512 * MIB2 }];
  for (const version of ['1.7', '1.12'] as const) {
    const result = parse(body(version, regions, MIB2), { memoryFileSize: 576 * MIB2 });
    assert.equal(result.version, version);
    assert.equal(result.pageSize, MIB2);
    assert.deepEqual(result.regions.map((r) => r.pageSize), [MIB2, MIB2]);
  }
});

test('the HEAD example of page-servers.md §1.3 parses; its made-up addresses are refused as unaligned', () => {
  const doc = '[{"base_host_virt_addr":140211000000000,"size":3221225472,"offset":0,"page_size":4096,"page_size_kib":4096},\n'
    + ' {"base_host_virt_addr":140214300000000,"size":1073741824,"offset":3221225472,"page_size":4096,"page_size_kib":4096}]';
  refused(doc, 'invalid-layout', /^regions\[0\]\.base_host_virt_addr 0x7f856ad93e00 is not a multiple of the page size 4096$/);
  const aligned = doc.replace('140211000000000', String(140211000000000 - (140211000000000 % 4096)))
    .replace('140214300000000', String(140214300000000 - (140214300000000 % 4096)));
  assert.equal(parse(aligned).version, '1.12');
});

test('addresses stay exact as bigints, past 2^53 and up to the end of the 64-bit space', () => {
  // JSON.parse would round this one to ...992.
  const base = (1n << 53n) + 4096n;
  assert.equal(parse(`[${region({ ...OK, base_host_virt_addr: base })}]`).regions[0]?.baseHostVirtAddr, base);
  const top = (1n << 64n) - 4096n;
  assert.equal(parse(`[${region({ ...OK, base_host_virt_addr: top, size: 4096 })}]`).regions[0]?.baseHostVirtAddr, top);
  refused(`[${region({ ...OK, base_host_virt_addr: top, size: 8192 })}]`, 'invalid-layout', /^regions\[0\] runs past the end of the 64-bit address space/);
  refused(`[${region({ ...OK, base_host_virt_addr: 1n << 64n })}]`, 'invalid-region', /^regions\[0\]\.base_host_virt_addr is beyond 64 bits: 18446744073709551616$/);
});

test('sizes and offsets up to 2^53 - 1 are exact; 2^53 and above are refused', () => {
  const big = 2 ** 53 - 4096;
  const result = parse(`[${region({ ...OK, size: big })}]`, { memoryFileSize: Number.MAX_SAFE_INTEGER });
  assert.equal(result.regions[0]?.size, big);
  for (const value of ['9007199254740992', '9007199254740993', '18446744073709551616', '1'.repeat(400)]) {
    refused(`[${region({ ...OK, size: value })}]`, 'invalid-region', /^regions\[0\]\.size is 2\^53 or more, beyond exact doubles: \d{1,40}…?$/);
    refused(`[${region({ ...OK, offset: value })}]`, 'invalid-region', /^regions\[0\]\.offset is 2\^53 or more/);
    refused(`[${region({ ...OK, page_size_kib: value })}]`, 'invalid-region', /^regions\[0\]\.page_size_kib is 2\^53 or more/);
  }
});

test('split at every byte position, each shape completes exactly at its closing bracket', () => {
  for (const version of ['1.1', '1.7', '1.12'] as const) {
    const bytes = encoder.encode(body(version));
    for (let at = 0; at <= bytes.length; at++) {
      const reader = new HandshakeReader({ memoryFileSize: FILE_SIZE });
      const first = reader.push(bytes.subarray(0, at));
      assert.equal(first, at === bytes.length ? 'complete' : 'incomplete');
      assert.equal(reader.push(bytes.subarray(at)), 'complete');
      assert.equal(reader.handshake().version, version);
      assert.deepEqual(reader.regions(), EXPECTED_TWO);
    }
    // One byte at a time, into a buffer the caller reuses: the reader must have copied what it kept.
    const reader = new HandshakeReader({ memoryFileSize: FILE_SIZE });
    const scratch = new Uint8Array(1);
    let state = 'incomplete';
    for (const byte of bytes) {
      assert.equal(state, 'incomplete');
      scratch[0] = byte;
      state = reader.push(scratch);
      scratch[0] = 0x7b;
    }
    assert.equal(state, 'complete');
    assert.deepEqual(reader.regions(), EXPECTED_TWO);
  }
});

test('brackets, quotes and escapes inside strings do not fool the framing, split anywhere (also inside UTF-8)', () => {
  const note = 'a]}"[{\\ é → 🐧 \\" ]';
  const text = `[{"base_host_virt_addr":${BASE0.toString()},"size":4096,"offset":0,"x-note":${JSON.stringify(note)},"x-more":["]",{"}":"\\\\"}]}]`;
  const bytes = encoder.encode(text);
  assert.ok(bytes.length > text.length, 'the payload has multi-byte UTF-8 sequences');
  for (let at = 0; at <= bytes.length; at++) {
    for (const second of [at, Math.min(bytes.length, at + 3)]) {
      const reader = new HandshakeReader({ memoryFileSize: FILE_SIZE, unknownKeys: 'ignore' });
      reader.push(bytes.subarray(0, at));
      reader.push(bytes.subarray(at, second));
      assert.equal(reader.push(bytes.subarray(second)), 'complete');
      assert.equal(reader.regions()[0]?.size, 4096);
    }
  }
  refused(text, 'invalid-region', /^regions\[0\] has the key "x-note", which no Firecracker release sends/);
});

test('whitespace may surround the array and follow it in later reads; anything else after it is trailing data', () => {
  const text = body('1.12');
  assert.equal(parse(` \n\t\r${text}\r\n `).version, '1.12');

  const reader = new HandshakeReader({ memoryFileSize: FILE_SIZE });
  assert.equal(reader.push(encoder.encode(`${text}  `)), 'complete');
  assert.equal(reader.push(encoder.encode('\n')), 'complete');
  assert.equal(reader.push(new Uint8Array(0)), 'complete');
  assert.throws(() => reader.push(encoder.encode(' x')), { name: 'HandshakeError', reason: 'trailing-data', message: /^trailing data after the handshake's JSON array \(\d+ bytes\): 'x'$/ });
  assert.throws(() => reader.push(encoder.encode(' ')), { reason: 'trailing-data' }, 'the error sticks');
  assert.throws(() => { reader.end(); }, { reason: 'trailing-data' });

  refused(`${text}${text}`, 'trailing-data', /: '\['$/);
  refused(`${text}\0`, 'trailing-data', /: byte 0x00$/);
  refused(`${text} ,`, 'trailing-data', /: ','$/);
});

test('the end of the stream before the array closes is a truncated handshake', () => {
  const empty = new HandshakeReader({ memoryFileSize: FILE_SIZE });
  assert.throws(() => { empty.end(); }, { reason: 'truncated', message: 'the connection ended before any handshake data' });
  const text = body('1.7');
  const half = new HandshakeReader({ memoryFileSize: FILE_SIZE });
  assert.equal(half.push(encoder.encode(text.slice(0, 10))), 'incomplete');
  assert.throws(() => { half.end(); }, { reason: 'truncated', message: 'the connection ended after 10 bytes, before the JSON array was complete (inside a string)' });
  const done = new HandshakeReader({ memoryFileSize: FILE_SIZE });
  done.push(encoder.encode(text));
  done.end();
  assert.equal(done.handshake().version, '1.7');
  assert.throws(() => new HandshakeReader({ memoryFileSize: FILE_SIZE }).handshake(), /not complete/);
});

test('a payload bigger than maxBytes is refused as soon as it passes the limit, before the array closes', () => {
  const text = body('1.12');
  assert.equal(parse(text, { maxBytes: text.length }).version, '1.12', 'exactly maxBytes is allowed');
  refused(text, 'too-large', /^the handshake is larger than 100 bytes and its JSON array is still open$/, { maxBytes: 100 });
  const reader = new HandshakeReader({ memoryFileSize: FILE_SIZE, maxBytes: 1000 });
  const open = encoder.encode(`[${region(OK)},`);
  let pushed = 0;
  assert.throws(() => {
    for (;;) {
      reader.push(open);
      pushed += open.length;
    }
  }, { reason: 'too-large' });
  assert.ok(pushed <= 1000 && pushed + open.length > 1000, 'refused by the push that crossed the limit');
  assert.throws(() => new HandshakeReader({ memoryFileSize: FILE_SIZE, maxBytes: 0 }), RangeError);
});

test('not an array, an empty array, elements that are not objects', () => {
  refused('{"base_host_virt_addr":0,"size":4096,"offset":0}', 'malformed', /^the handshake starts with a JSON object at position 0, expected a JSON array of regions$/);
  refused('  "regions"', 'malformed', /^the handshake starts with '"' at position 2, expected a JSON array/);
  refused('\u00e9', 'malformed', /starts with byte 0xc3 at position 0/);
  refused('[]', 'invalid-layout', /^the handshake has no regions$/);
  refused(' [ \n ] ', 'invalid-layout', /^the handshake has no regions$/);
  refused(`[${region(OK)},1]`, 'invalid-region', /^regions\[1\] is the number 1, expected an object$/);
  refused('[null]', 'invalid-region', /^regions\[0\] is null, expected an object$/);
  refused('[[]]', 'invalid-region', /^regions\[0\] is an array, expected an object$/);
  refused('["x"]', 'invalid-region', /^regions\[0\] is the string "x", expected an object$/);
  refused('[true]', 'invalid-region', /^regions\[0\] is the boolean true, expected an object$/);
});

test('duplicate keys are refused, wherever they are', () => {
  refused('[{"base_host_virt_addr":0,"size":4096,"size":8192,"offset":0}]', 'malformed', /^the handshake is not valid JSON: duplicate key "size" at position 38$/);
  refused('[{"a":{"b":1,"b":1}}]', 'malformed', /duplicate key "b"/, { unknownKeys: 'ignore' });
  // An escape does not make a different key.
  refused('[{"size":4096,"si\\u007ae":4096}]', 'malformed', /duplicate key "size"/);
});

test('missing keys, unknown keys (refused by default, ignored on request), mixed shapes', () => {
  refused(`[${region(without(OK, 'offset'))}]`, 'invalid-region', /^regions\[0\] lacks the key "offset"$/);
  refused(`[${region(OK)},${region(without(OK, 'base_host_virt_addr'))}]`, 'invalid-region', /^regions\[1\] lacks the key "base_host_virt_addr"$/);
  const withMemfd = `[${region({ ...OK, use_memfd: 'true' })}]`;
  refused(withMemfd, 'invalid-region', /^regions\[0\] has the key "use_memfd", which no Firecracker release sends \(a fork's extension\?\)$/);
  assert.equal(parse(withMemfd, { unknownKeys: 'ignore' }).version, '1.12');
  refused(`[${region({ ...OK, ['x'.repeat(100)]: 1 })}]`, 'invalid-region', /has the key "x{40}…"/);
  refused(`[${region(without(OK, 'page_size_kib'))}]`, 'invalid-region', /^regions\[0\] has "page_size" without "page_size_kib" \(Firecracker 1\.12 and later send both\)$/);
  refused(`[${region(OK)},${region({ ...without(OK, 'page_size'), offset: 2 * MIB2, base_host_virt_addr: BASE1 })}]`, 'invalid-region', /^regions\[1\] has the keys of Firecracker 1\.7, regions\[0\] those of 1\.12$/);
});

test('numbers: strings, fractions, exponents and negatives are refused with the key and the reason', () => {
  const cases: [string, string, RegExp][] = [
    ['size', '"4096"', /^regions\[0\]\.size is the string "4096", expected a non-negative integer$/],
    ['size', 'null', /^regions\[0\]\.size is null, expected a non-negative integer$/],
    ['offset', '{}', /^regions\[0\]\.offset is an object, expected/],
    ['size', '4096.5', /^regions\[0\]\.size has a fraction: 4096\.5 \(expected a plain integer\)$/],
    ['size', '4096.0', /^regions\[0\]\.size has a fraction: 4096\.0/],
    ['offset', '0e0', /^regions\[0\]\.offset uses exponent notation: 0e0/],
    ['size', '4E3', /^regions\[0\]\.size uses exponent notation: 4E3/],
    ['base_host_virt_addr', '1.5e10', /^regions\[0\]\.base_host_virt_addr has a fraction: 1\.5e10/],
    ['offset', '-4096', /^regions\[0\]\.offset is negative: -4096$/],
    ['offset', '-0', /^regions\[0\]\.offset is negative: -0$/],
    ['base_host_virt_addr', '-1', /^regions\[0\]\.base_host_virt_addr is negative: -1$/],
    ['page_size', '-4096', /^regions\[0\]\.page_size is negative/],
  ];
  for (const [key, value, message] of cases) refused(`[${region({ ...OK, [key]: value })}]`, 'invalid-region', message);
});

test('page sizes: page_size and page_size_kib must agree, be 4 KiB or 2 MiB, and be the same for all regions', () => {
  refused(`[${region({ ...OK, page_size_kib: MIB2 })}]`, 'invalid-region', /^regions\[0\] has page_size 4096 and page_size_kib 2097152, which disagree \(page_size_kib holds bytes too, despite its name\)$/);
  refused(`[${region({ ...OK, page_size_kib: 4 })}]`, 'invalid-region', /page_size 4096 and page_size_kib 4, which disagree/);
  for (const size of [0, 4, 2048, 8192, 65536, 1024 * MIB2]) {
    refused(`[${region({ ...OK, page_size: size, page_size_kib: size })}]`, 'invalid-layout', new RegExp(`^regions\\[0\\] has the page size ${size}, neither 4096 \\(4 KiB\\) nor 2097152 \\(2 MiB\\)$`));
  }
  refused(`[${region({ ...without(OK, 'page_size'), page_size_kib: 2048 })}]`, 'invalid-layout', /^regions\[0\] has the page size 2048, neither/);
  const huge = { ...OK, base_host_virt_addr: BASE1, offset: 2 * MIB2, page_size: MIB2, page_size_kib: MIB2 };
  refused(`[${region(OK)},${region(huge)}]`, 'invalid-layout', /^regions\[1\] has the page size 2097152, regions\[0\] 4096: one VM has one page size$/);
});

test('alignment to the page size, size 0', () => {
  const huge = { ...OK, page_size: MIB2, page_size_kib: MIB2 };
  refused(`[${region({ ...OK, base_host_virt_addr: BASE0 + 512n })}]`, 'invalid-layout', /^regions\[0\]\.base_host_virt_addr 0x7f8b40000200 is not a multiple of the page size 4096$/);
  refused(`[${region({ ...OK, size: 4097 })}]`, 'invalid-layout', /^regions\[0\]\.size 4097 is not a multiple of the page size 4096$/);
  refused(`[${region({ ...OK, offset: 100 })}]`, 'invalid-layout', /^regions\[0\]\.offset 100 is not a multiple of the page size 4096$/);
  refused(`[${region({ ...huge, base_host_virt_addr: BASE0 + 4096n })}]`, 'invalid-layout', /base_host_virt_addr 0x7f8b40001000 is not a multiple of the page size 2097152$/);
  refused(`[${region({ ...huge, size: MIB2 + 4096 })}]`, 'invalid-layout', /^regions\[0\]\.size 2101248 is not a multiple of the page size 2097152$/);
  refused(`[${region({ ...huge, offset: 4096 })}]`, 'invalid-layout', /^regions\[0\]\.offset 4096 is not a multiple of the page size 2097152$/);
  refused(`[${region({ ...OK, size: 0 })}]`, 'invalid-layout', /^regions\[0\] has size 0$/);
});

test('overlaps in the address space and in the memory file; neighbours that touch are fine', () => {
  const a = { ...OK, base_host_virt_addr: BASE0, size: 8192, offset: 0 };
  assert.equal(parse(`[${region(a)},${region({ ...a, base_host_virt_addr: BASE0 + 8192n, offset: 8192 })}]`).regions.length, 2);
  refused(`[${region(a)},${region({ ...a, base_host_virt_addr: BASE0 + 4096n, offset: 8192 })}]`, 'invalid-layout',
    /^regions\[0\] and regions\[1\] overlap in the VMM's address space: \[0x7f8b40000000, 0x7f8b40002000\) and \[0x7f8b40001000, 0x7f8b40003000\)$/);
  refused(`[${region(a)},${region({ ...a, base_host_virt_addr: BASE1, offset: 4096 })}]`, 'invalid-layout',
    /^regions\[0\] and regions\[1\] overlap in the memory file: \[0x0, 0x2000\) and \[0x1000, 0x3000\)$/);
  // Out of order, the overlap found among neighbours in sorted order, named by array index.
  const far = { ...a, base_host_virt_addr: BASE1, offset: 65536 };
  refused(`[${region({ ...a, base_host_virt_addr: BASE0 + 65536n, offset: 16384 })},${region(far)},${region({ ...a, size: 69632 })}]`, 'invalid-layout',
    /^regions\[0\] and regions\[2\] overlap in the VMM's address space/);
  refused(`[${region(a)},${region({ ...a, base_host_virt_addr: BASE1 })}]`, 'invalid-layout', /overlap in the memory file: \[0x0, 0x2000\) and \[0x0, 0x2000\)$/);
});

test('regions reaching past the end of the memory file; the count limit', () => {
  const text = body('1.12');
  assert.equal(parse(text, { memoryFileSize: FILE_SIZE }).regions.length, 2, 'ending exactly at the end is fine');
  assert.equal(parse(text, { memoryFileSize: FILE_SIZE * 2 }).regions.length, 2, 'a longer file is fine');
  refused(text, 'invalid-layout', /^regions\[1\] reaches past the end of the memory file: offset 3221225472 \+ size 1073741824 = 4294967296 > 4294963200 bytes$/, { memoryFileSize: FILE_SIZE - 4096 });
  refused(text, 'invalid-layout', /^regions\[0\] reaches past the end of the memory file/, { memoryFileSize: 0 });
  const many = Array.from({ length: 5 }, (_, i) => ({ base: BASE0 + BigInt(i * 8192), size: 4096, offset: i * 4096 }));
  assert.equal(parse(body('1.1', many), { maxRegions: 5 }).regions.length, 5);
  refused(body('1.1', many), 'invalid-layout', /^the handshake has 5 regions, more than the limit of 4$/, { maxRegions: 4 });
  assert.throws(() => parse(text, { memoryFileSize: -1 }), RangeError);
  assert.throws(() => parse(text, { memoryFileSize: 1.5 }), RangeError);
});

test('validateRegions on its own', () => {
  validateRegions(EXPECTED_TWO, { memoryFileSize: FILE_SIZE });
  assert.throws(() => { validateRegions([], { memoryFileSize: FILE_SIZE }); }, { reason: 'invalid-layout', message: 'the handshake has no regions' });
  assert.throws(() => { validateRegions(EXPECTED_TWO, { memoryFileSize: FILE_SIZE, maxRegions: 1 }); }, { reason: 'invalid-layout' });
  assert.throws(() => { validateRegions(EXPECTED_TWO, { memoryFileSize: Number.NaN }); }, RangeError);
});

test('malformed JSON is refused with its position', () => {
  const cases: [string, RegExp][] = [
    ['[{"size":01}]', /malformed number "01" at position 9$/],
    ['[{"size":1.}]', /malformed number "1\." at position 9$/],
    ['[{"size":1e}]', /malformed number "1e" at position 9$/],
    ['[{"size":-}]', /unexpected '-', expected a JSON value at position 9$/],
    ['[{"size":+1}]', /unexpected '\+', expected a JSON value at position 9$/],
    ['[{"size" 1}]', /unexpected '1', expected ':' at position 9$/],
    ['[{"size":1,}]', /unexpected '}', expected a string key at position 11$/],
    ['[{},]', /unexpected '\]', expected a JSON value at position 4$/],
    ['[{} {}]', /unexpected '\{', expected ',' or '\]' at position 4$/],
    ['[{size:1}]', /unexpected 's', expected a string key at position 2$/],
    ['[{"a\tb":1}]', /unescaped control character U\+0009 in a string at position 4$/],
    ['[{"a\\x":1}]', /invalid escape "\\\\x" at position 4$/],
    ['[{"a\\u12g4":1}]', /invalid \\u escape, expected 4 hex digits at position 4$/],
    ['[tru]', /unexpected 't', expected a JSON value at position 1$/],
    ['[NaN]', /unexpected 'N', expected a JSON value at position 1$/],
    ['[}', /unexpected '}', expected a JSON value at position 1$/],
    ['[{]}', /unexpected '\]', expected a string key at position 2$/],
    ['[{"a":1]]', /unexpected '\]', expected ',' or '}' at position 7$/],
    [`${'['.repeat(100)}${']'.repeat(100)}`, /nesting deeper than 16 levels at position 16$/],
  ];
  for (const [text, message] of cases) {
    assert.throws(() => parse(text, { unknownKeys: 'ignore' }), (err: unknown) => {
      assert.ok(err instanceof HandshakeError, String(err));
      assert.equal(err.reason, 'malformed');
      assert.match(err.message, /^the handshake is not valid JSON: /);
      assert.match(err.message, message, text);
      assert.equal(typeof err.position, 'number');
      return true;
    });
  }
  refused(new Uint8Array([0x5b, 0x22, 0xff, 0x22, 0x5d]), 'malformed', /^the handshake is not valid UTF-8$/);
  refused(new Uint8Array([0x5b, 0x22, 0xed, 0xa0, 0x80, 0x22, 0x5d]), 'malformed', /not valid UTF-8/, { unknownKeys: 'ignore' });
});

test('strict-json: values, escapes and keys as JSON.parse reads them, numbers as their text', () => {
  const text = '{"s":"q\\"b\\\\s\\/f\\bf\\fn\\nr\\rt\\tu\\u00e9\\ud83d\\udc27 lone \\udc00","__proto__":[true,false,null,-0.5e-3,0],"":{}}';
  const value = parseJson(text);
  assert.ok(value instanceof Map);
  assert.deepEqual([...value.keys()], ['s', '__proto__', '']);
  assert.equal(value.get('s'), (JSON.parse(text) as { s: string }).s);
  const list = value.get('__proto__');
  assert.ok(Array.isArray(list));
  assert.deepEqual(list.slice(0, 3), [true, false, null]);
  const n = list[3];
  assert.ok(n instanceof JsonNumber);
  assert.deepEqual([n.text, n.position, n.negative, n.hasFraction, n.hasExponent, n.toBigInt()], ['-0.5e-3', text.indexOf('-0.5e-3'), true, true, true, undefined]);
  assert.equal((list[4] as JsonNumber).toBigInt(), 0n);
  assert.equal(parseJson(' 123456789012345678901234567890 ') instanceof JsonNumber, true);
  assert.equal((parseJson('123456789012345678901234567890') as JsonNumber).toBigInt(), 123456789012345678901234567890n);
  assert.throws(() => parseJson('1 2'), { name: 'JsonSyntaxError', position: 2, message: 'unexpected data after the JSON value at position 2' });
  assert.throws(() => parseJson(''), { position: 0, message: 'unexpected end of input, expected a JSON value at position 0' });
  assert.throws(() => parseJson('"abc'), { position: 0, message: 'unterminated string at position 0' });
  assert.throws(() => parseJson('[[1]]', { maxDepth: 1 }), JsonSyntaxError);
  assert.ok(Array.isArray(parseJson('[[1]]', { maxDepth: 2 })));
  assert.throws(() => parseJson('1', { maxDepth: 0 }), RangeError);
  // Deep nesting within the default limit, and far past it, never reaches the stack's end.
  assert.ok(Array.isArray(parseJson(`${'['.repeat(64)}${']'.repeat(64)}`)));
  assert.throws(() => parseJson('['.repeat(100_000)), { message: /nesting deeper than 64 levels/ });
});

// A small deterministic generator (mulberry32): the same cases on every run.
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const INTERESTING = encoder.encode('[]{}",:\\ 0123456789-+.eEtfnu\t\n');

function mutate(source: Uint8Array, rand: () => number): Uint8Array {
  const bytes = [...source];
  const pick = (n: number) => Math.floor(rand() * n);
  const count = rand() < 0.5 ? 1 : 1 + pick(4);
  for (let m = 0; m < count; m++) {
    const at = pick(bytes.length + 1);
    const byte = rand() < 0.7 ? INTERESTING[pick(INTERESTING.length)] ?? 0 : pick(256);
    switch (pick(5)) {
      case 0: bytes[at] = (bytes[at] ?? 0) ^ (1 << pick(8)); break;
      case 1: bytes.splice(at, 0, byte); break;
      case 2: bytes.splice(at, 1 + pick(3)); break;
      case 3: bytes[at] = byte; break;
      default: {
        const from = pick(bytes.length);
        bytes.splice(at, 0, ...bytes.slice(from, from + 1 + pick(12)));
      }
    }
  }
  return Uint8Array.from(bytes.map((b) => b & 0xff));
}

type Outcome = { ok: true; regions: GuestRegion[] } | { ok: false; message: string };

function feed(bytes: Uint8Array, cuts: number[], options: HandshakeOptions): Outcome {
  const reader = new HandshakeReader(options);
  try {
    let from = 0;
    for (const cut of [...cuts, bytes.length]) {
      reader.push(bytes.subarray(from, cut));
      from = cut;
    }
    reader.end();
    return { ok: true, regions: reader.regions() };
  } catch (err) {
    if (err instanceof HandshakeError) return { ok: false, message: err.message };
    throw err;
  }
}

test('fuzz: mutated payloads split at random give the same verdict as whole, and only HandshakeError escapes', { timeout: 20_000 }, () => {
  const seeds = [
    body('1.1'), body('1.7'), body('1.12'),
    body('1.12', [{ base: 0x7f0000000000n, size: 4 * MIB2, offset: 0 }, { base: 0x7f4000000000n, size: 2 * MIB2, offset: 4 * MIB2 }], MIB2),
    `[{"base_host_virt_addr":${BASE0.toString()},"size":4096,"offset":0,"x":"a]}\\"[é","y":[1,{"z":null}]}]`,
  ].map((text) => encoder.encode(text));
  const rand = random(0x5eed);
  const started = performance.now();
  let accepted = 0;
  const cases = 4000;
  for (let i = 0; i < cases; i++) {
    const seed = seeds[i % seeds.length]!;
    const bytes = mutate(seed, rand);
    const options: HandshakeOptions = { memoryFileSize: FILE_SIZE, maxBytes: 1024, unknownKeys: i % 2 === 0 ? 'ignore' : 'refuse' };
    const whole = feed(bytes, [], options);
    const cuts = Array.from({ length: Math.floor(rand() * 5) }, () => Math.floor(rand() * (bytes.length + 1))).sort((a, b) => a - b);
    const split = feed(bytes, cuts, options);
    assert.deepEqual(split, whole, `split at ${cuts.join(',')}: ${new TextDecoder().decode(bytes)}`);
    if (whole.ok) {
      accepted++;
      validateRegions(whole.regions, options);
      // What we accept, JSON.parse accepts too, and it means the same apart from JSON.parse's rounding.
      const plain = JSON.parse(new TextDecoder().decode(bytes)) as { size: number; offset: number }[];
      assert.deepEqual(whole.regions.map((r) => [r.size, r.offset]), plain.map((r) => [r.size, r.offset]));
    }
  }
  const elapsed = performance.now() - started;
  assert.ok(accepted > 0 && accepted < cases, `some mutants survive, most do not (${accepted} of ${cases})`);
  assert.ok(elapsed < 15_000, `${cases} cases took ${elapsed.toFixed(0)} ms`);
});

function plain(value: JsonValue): unknown {
  if (value instanceof JsonNumber) return Number(value.text);
  if (Array.isArray(value)) return value.map(plain);
  if (value instanceof Map) return Object.fromEntries([...value].map(([k, v]) => [k, plain(v)]));
  return value;
}

test('fuzz: strict-json agrees with JSON.parse except where it is stricter on purpose', () => {
  const seeds = [
    '{"a":[1,-2.5e3,0.0,true,false,null],"b":{"c":"d\\n\\u00e9\\"","e":[]},"f":"]}"}',
    body('1.12'),
    '[[[[0]]],{"":{"":""}},"\\\\\\/\\b\\f\\r\\t",1E+2,-0]',
  ].map((text) => encoder.encode(text));
  const rand = random(42);
  const decoder = new TextDecoder();
  let agreedValid = 0;
  for (let i = 0; i < 4000; i++) {
    const text = decoder.decode(mutate(seeds[i % seeds.length]!, rand));
    let expected: unknown;
    let nativeOk = true;
    try {
      expected = JSON.parse(text);
    } catch {
      nativeOk = false;
    }
    let ours: unknown;
    let error: unknown;
    try {
      ours = plain(parseJson(text, { maxDepth: 8 }));
    } catch (err) {
      error = err;
    }
    if (error === undefined) {
      assert.ok(nativeOk, `we accepted what JSON.parse refuses: ${text}`);
      assert.deepEqual(ours, expected, text);
      agreedValid++;
    } else {
      assert.ok(error instanceof JsonSyntaxError, `not a JsonSyntaxError: ${error instanceof Error ? error.stack ?? error.message : typeof error}`);
      if (nativeOk) assert.match(error.message, /^(duplicate key|nesting deeper)/, `we refused what JSON.parse accepts: ${text}`);
    }
  }
  assert.ok(agreedValid > 0);
});
