// `uffd pack` and pack sources: the layout (zero chunks omitted, checksums), restores from nginx through
// the fault proxy (flipped bytes in a stored chunk are caught by its checksum and fetched again; a chunk
// that never arrives intact fails naming it), LazyMemory hashing the whole object and the fake VMM checking
// every page, compressed and not; both zstd codecs decode what either wrote.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import zlib from 'node:zlib';
import { httpSource, LazyMemory, PageServer, RemoteSourceError } from '../src/index.js';
import { openSource } from '../src/sources/source.js';
import type { RemotePageSource } from '../src/sources/chunked-source.js';
import { parsePackIndex } from '../src/sources/pack-format.js';
import type { PackIndex } from '../src/sources/pack-format.js';
import { loadZstd } from '../src/sources/zstd.js';
import { FaultProxy, PASS } from './support/fault-proxy.js';
import { Nginx, nginxMissing } from './support/nginx.js';
import { FAKE_VMM, runFakeVmm } from './support/fake-vmm-run.js';
import { CLI } from './support/support.js';

const CHUNK = 64 * 1024;
const LENGTH = 40 * CHUNK + 4321;
const sha = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');
/** Memory-like: compressible text, random-looking stretches, and whole chunks of zeros (2, 3, 17). */
const object = Uint8Array.from({ length: LENGTH }, (_, i) => {
  const chunk = Math.floor(i / CHUNK);
  if (chunk === 2 || chunk === 3 || chunk === 17) return 0;
  return chunk % 2 === 0 ? 'page text '.charCodeAt(i % 10) : (Math.imul(i, 2654435761) >>> 24) & 0xff;
});
const scratch = mkdtempSync(join(tmpdir(), 'uffd-pack-'));
process.on('exit', () => { rmSync(scratch, { recursive: true, force: true }); });
const FILE = join(scratch, 'memory.bin');
writeFileSync(FILE, object);

function pack(out: string, ...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, 'pack', FILE, '--out', out, '--chunk', '64K', ...args], { encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

const indexOf = (dir: string): PackIndex => parsePackIndex(readFileSync(join(dir, 'index.json'), 'utf8'), dir);

describe('uffd pack', () => {
  test('writes an index with zero chunks omitted and checksums; zstd stores less', () => {
    const plain = join(scratch, 'plain');
    const packed = join(scratch, 'zstd');
    assert.equal(pack(plain, '--compress', 'none').status, 0);
    const r = pack(packed, '--compress', 'zstd', '--json');
    assert.equal(r.status, 0, r.stderr);
    const summary = JSON.parse(r.stdout) as { chunks: number; zeroChunks: number; storedBytes: number };
    assert.equal(summary.chunks, 41);
    assert.equal(summary.zeroChunks, 3);
    for (const dir of [plain, packed]) {
      const index = indexOf(dir);
      assert.equal(index.length, LENGTH);
      assert.deepEqual(index.chunks.flatMap((c, i) => (c === null ? [i] : [])), [2, 3, 17]);
    }
    assert.equal(indexOf(plain).dataLength, LENGTH - 3 * CHUNK);
    assert.ok(summary.storedBytes < (LENGTH - 3 * CHUNK) * 0.7, `zstd stored ${String(summary.storedBytes)} bytes`);
  });

  test('bad command lines are usage errors (exit 2)', () => {
    assert.equal(pack(join(scratch, 'x'), '--compress', 'lz4').status, 2);
    assert.equal(spawnSync(process.execPath, [CLI, 'pack', FILE, '--out', join(scratch, 'y'), '--chunk', '1000'], { encoding: 'utf8' }).status, 2);
    assert.equal(spawnSync(process.execPath, [CLI, 'pack', FILE], { encoding: 'utf8' }).status, 2);
    assert.equal(spawnSync(process.execPath, [CLI, 'pack', join(scratch, 'missing.bin'), '--out', join(scratch, 'z')], { encoding: 'utf8' }).status, 1);
  });

  test('an index that lies is refused entry by entry', () => {
    const good = JSON.stringify({ format: 'uffd-pack', version: 1, length: 10, chunkSize: 8, compression: 'none', dataLength: 10, chunks: [[0, 8, 1, 1], [8, 2, 1, 1]] });
    assert.equal(parsePackIndex(good, 'x').chunks.length, 2);
    const variants: [string, RegExp][] = [
      [good.replace('"version":1', '"version":2'), /version 2/],
      [good.replace('[8,2,1,1]', '[8,3,1,1]'), /chunk 1 lies past the end|stored length differs/],
      [good.replace(',[8,2,1,1]', ''), /one entry per chunk/],
      [good.replace('"none"', '"lz4"'), /compression "lz4"/],
      ['{', /not JSON/],
    ];
    for (const [text, why] of variants) assert.throws(() => parsePackIndex(text, 'x'), why);
  });

  test('zstd: the built-in codec (where Node has one) and the WebAssembly one decode each other', async () => {
    const zstd = await loadZstd();
    const chunk = object.subarray(0, CHUNK);
    const viaDefault = zstd.compress(chunk, 3);
    assert.equal(sha(zstd.decompress(viaDefault, CHUNK)), sha(chunk));
    const wasm = (await import('@foxglove/wasm-zstd')) as unknown as { isLoaded: Promise<boolean>; compress(b: Uint8Array, l: number): Uint8Array; decompress(b: Uint8Array, n: number): Uint8Array };
    await wasm.isLoaded;
    assert.equal(sha(wasm.decompress(viaDefault, CHUNK)), sha(chunk));
    assert.equal(sha(zstd.decompress(wasm.compress(chunk, 3), CHUNK)), sha(chunk));
    assert.throws(() => zstd.decompress(viaDefault, CHUNK - 1));
    const builtIn = typeof (zlib as unknown as { zstdDecompressSync?: unknown }).zstdDecompressSync === 'function';
    assert.equal(zstd.name, builtIn ? 'node:zlib' : '@foxglove/wasm-zstd');
  });
});

describe('pack sources against nginx', { skip: nginxMissing ?? false }, () => {
  let nginx: Nginx;
  let proxy: FaultProxy;
  before(async () => {
    nginx = await Nginx.start();
    for (const kind of ['plain', 'zstd']) if (!existsSync(join(scratch, kind, 'index.json'))) assert.equal(pack(join(scratch, kind), '--compress', kind === 'plain' ? 'none' : 'zstd').status, 0);
    cpSync(join(scratch, 'plain'), join(nginx.root, 'plain'), { recursive: true });
    cpSync(join(scratch, 'zstd'), join(nginx.root, 'zstd'), { recursive: true });
    proxy = await FaultProxy.start(`http://127.0.0.1:${String(nginx.httpPort)}`);
  });
  after(async () => {
    await proxy.close();
    await nginx.stop();
  });

  for (const kind of ['plain', 'zstd']) {
    test(`LazyMemory from a ${kind} pack: every byte; zero chunks never requested`, async () => {
      const lazy = await LazyMemory.open({ source: httpSource(nginx.url(`${kind}/`)), readahead: 16 });
      try {
        assert.equal(lazy.sourceLength, LENGTH);
        assert.equal(sha(new Uint8Array(lazy.buffer, 0, LENGTH)), sha(object));
      } finally {
        await lazy.close();
      }
      const index = indexOf(join(scratch, kind));
      const ranges = nginx.access().filter((e) => e.path === `/${kind}/chunks.bin`).map((e) => e.range).filter((r) => r !== 'bytes=0-0');
      const stored = index.chunks.filter((c) => c !== null).map((c) => `bytes=${String(c[0])}-${String(c[0] + c[1] - 1)}`);
      assert.deepEqual(new Set(ranges), new Set(stored));
      assert.equal(ranges.length, stored.length, 'each stored chunk fetched once');
    });

    test(`${kind} pack: flipped bytes in a stored chunk are caught by its checksum and fetched again`, async () => {
      await proxy.plan([PASS, PASS, PASS, { kind: 'flip' }, PASS, { kind: 'flip', at: 7 }, PASS, PASS], 'repeat');
      const source = (await openSource(httpSource(proxy.url(`${kind}/`), { concurrency: 2 }))) as RemotePageSource;
      try {
        const out = new Uint8Array(LENGTH);
        assert.equal(await source.read(0, out), LENGTH);
        assert.equal(sha(out), sha(object));
        assert.ok((source.stats().checksumErrors ?? 0) >= 1);
      } finally {
        source.close?.();
      }
    });
  }

  test('a chunk that never arrives intact fails naming the chunk and the checksum', async () => {
    await proxy.plan([PASS, PASS], { kind: 'flip' });
    const source = (await openSource(httpSource(proxy.url('zstd/'), { retries: 2 }))) as RemotePageSource;
    try {
      await assert.rejects(async () => source.read(5 * CHUNK, new Uint8Array(4096)), (err: unknown) => err instanceof RemoteSourceError && /^chunk 5, bytes \d+-\d+: the stored bytes fail their checksum/.test(err.message));
    } finally {
      source.close?.();
    }
  });

  test('the fake VMM restores from a zstd pack through resets and flipped bytes, every page checked', { skip: existsSync(FAKE_VMM) ? false : 'fake-vmm is not built' }, async () => {
    await proxy.plan([PASS, PASS, PASS, { kind: 'reset' }, PASS, { kind: 'flip' }, PASS, { kind: 'truncate' }], 'repeat');
    const local = join(scratch, 'vmm.bin');
    const memoryBytes = Math.floor(LENGTH / 4096) * 4096; // the fake VMM wants whole pages
    writeFileSync(local, object.subarray(0, memoryBytes));
    const socket = join(scratch, 'vmm.sock');
    const server = await PageServer.listen({ socket, memory: httpSource(proxy.url('zstd/'), { timeoutMs: 500 }), readahead: 4 });
    try {
      const out = await runFakeVmm(['--socket', socket, '--memory', local, '--timeout', '60000', '--threads', '2', '--random']);
      assert.equal(out.mismatches, 0);
      assert.equal(out.touched, memoryBytes / 4096);
    } finally {
      await server.close();
    }
  });
});
