// httpSource against nginx on loopback (plain and TLS): byte-exact LazyMemory restores hashing the whole
// object, the page server restoring a Firecracker-exact peer from a URL, the chunk cache (one request per
// chunk for concurrent readers, disk copies surviving a restart, corrupt and torn files dropped), redirects,
// a server down at open, an object replaced mid-restore, and arguments refused before any request.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readdirSync, rmSync, truncateSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { httpSource, LazyMemory, PageServer, RemoteSourceError } from '../src/index.js';
import type { HttpSourceOptions, ServerLog } from '../src/index.js';
import { openSource } from '../src/sources/source.js';
import type { RemotePageSource } from '../src/sources/chunked-source.js';
import { Nginx, nginxMissing } from './support/nginx.js';
import { runFakeVmm } from './support/fake-vmm-run.js';
import { CLI, ROOT } from './support/support.js';

const LENGTH = 3 * 1024 * 1024 + 1234; // not a whole number of pages or chunks
const CHUNK = 256 * 1024;
const sha = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');
const object = Uint8Array.from({ length: LENGTH }, (_, i) => ((i >>> 12) * 31 + i * 7 + 3) & 0xff);
const scratch = mkdtempSync(join(tmpdir(), 'uffd-http-'));
process.on('exit', () => { rmSync(scratch, { recursive: true, force: true }); });
let dirs = 0;
const freshDir = (): string => join(scratch, `cache${String(dirs++)}`);

let nginx: Nginx;

async function openRemote(url: string, options?: HttpSourceOptions): Promise<RemotePageSource> {
  return (await openSource(httpSource(url, options))) as RemotePageSource;
}

async function readAll(source: RemotePageSource): Promise<Uint8Array> {
  const out = new Uint8Array(source.length);
  for (let at = 0; at < source.length; at += 64 * 1024) {
    const n = await source.read(at, out.subarray(at, Math.min(source.length, at + 64 * 1024)));
    assert.equal(n, Math.min(64 * 1024, source.length - at));
  }
  return out;
}

const rangesOf = (path: string): string[] => nginx.access().filter((e) => e.path === `/${path}`).map((e) => e.range);

describe('httpSource against nginx', { skip: nginxMissing ?? false }, () => {
  before(async () => {
    nginx = await Nginx.start();
    writeFileSync(join(nginx.root, 'memory.bin'), object);
  });
  after(async () => { await nginx.stop(); });

  for (const tls of [false, true]) {
    test(`LazyMemory over ${tls ? 'HTTPS (self-signed certificate)' : 'HTTP'}: every byte, random order`, async () => {
      const lazy = await LazyMemory.open({ source: httpSource(nginx.url('memory.bin', tls), { chunkSize: CHUNK, ...(tls ? { ca: nginx.cert } : {}) }), readahead: 4 });
      try {
        assert.equal(lazy.sourceLength, LENGTH);
        const bytes = new Uint8Array(lazy.buffer, 0, LENGTH);
        // Random page order first (faults far apart), then the whole object hashed.
        const pages = Math.ceil(LENGTH / 4096);
        let seed = 7;
        for (let i = 0; i < pages; i++) {
          seed = (seed * 1103515245 + 12345) >>> 0;
          const p = seed % pages;
          assert.equal(bytes[p * 4096], object[p * 4096]);
        }
        assert.equal(sha(bytes), sha(object));
        assert.ok(new Uint8Array(lazy.buffer, LENGTH).every((b) => b === 0), 'the tail of the last page reads as zeros');
      } finally {
        await lazy.close();
      }
    });
  }

  for (const tls of [false, true]) {
    test(`no threadpool in the network path: a restore by host name (${tls ? 'HTTPS' : 'HTTP'}) while the only pool thread is stuck`, async () => {
      const fifo = join(scratch, `fifo${String(dirs++)}`);
      assert.equal(spawnSync('mkfifo', [fifo]).status, 0);
      const caFile = join(nginx.dir, 'cert.pem');
      const url = (tls ? nginx.url('memory.bin', true) : nginx.url('memory.bin')).replace('127.0.0.1', 'localhost');
      const child = spawn(process.execPath, [join(ROOT, 'dist', 'test', 'fixtures', 'blocked-pool-restore.js'), url, fifo, freshDir(), ...(tls ? [caFile] : [])], {
        env: { ...process.env, UV_THREADPOOL_SIZE: '1' }, stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
      child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
      const timer = setTimeout(() => { child.kill('SIGKILL'); }, 30_000);
      const [code, signal] = (await once(child, 'exit')) as [number | null, string | null];
      clearTimeout(timer);
      assert.equal(signal, null, `the restore hung (killed after 30 s): something waited on the threadpool. ${stderr}`);
      assert.equal(code, 0, stderr);
      assert.deepEqual(JSON.parse(stdout), { hash: sha(object), length: LENGTH });
    });
  }

  test('HTTPS with a certificate nobody vouches for fails the open with the reason', async () => {
    await assert.rejects(openRemote(nginx.url('memory.bin', true), { retries: 0 }), (err: unknown) => err instanceof RemoteSourceError && /self[- ]signed|certificate/i.test(err.message));
  });

  test('concurrent readers of one chunk: one request for it; ranges chunk-aligned', async () => {
    writeFileSync(join(nginx.root, 'dedup.bin'), object);
    const source = await openRemote(nginx.url('dedup.bin'), { chunkSize: CHUNK, concurrency: 4 });
    try {
      const targets = Array.from({ length: 8 }, () => new Uint8Array(4096));
      await Promise.all(targets.map(async (t, i) => source.read(CHUNK + i * 4096, t)));
      targets.forEach((t, i) => { assert.deepEqual(t, object.subarray(CHUNK + i * 4096, CHUNK + (i + 1) * 4096)); });
      assert.deepEqual(await readAll(source), object);
      const ranges = rangesOf('dedup.bin');
      const chunks = Math.ceil(LENGTH / CHUNK);
      assert.equal(ranges.length, chunks, ranges.join(' '));
      assert.deepEqual(new Set(ranges), new Set(Array.from({ length: chunks }, (_, i) => `bytes=${String(i * CHUNK)}-${String(Math.min(LENGTH, (i + 1) * CHUNK) - 1)}`)));
      assert.equal(source.stats().retries, 0);
    } finally {
      source.close?.();
    }
  });

  test('disk cache: a restart reads every chunk from disk; corrupt and torn files are dropped and fetched again', async () => {
    writeFileSync(join(nginx.root, 'cached.bin'), object);
    const dir = freshDir();
    const first = await openRemote(nginx.url('cached.bin'), { chunkSize: CHUNK, cache: { dir } });
    assert.deepEqual(await readAll(first), object);
    first.close?.();
    const fetchedOnce = rangesOf('cached.bin').length;
    // The restarted reader: only the one-byte probe of the object's version goes to the network.
    const second = await openRemote(nginx.url('cached.bin'), { chunkSize: CHUNK, cache: { dir } });
    assert.deepEqual(await readAll(second), object);
    assert.equal(second.stats().diskHits, Math.ceil(LENGTH / CHUNK));
    second.close?.();
    assert.deepEqual(rangesOf('cached.bin').slice(fetchedOnce), ['bytes=0-0']);
    // A flipped byte in one chunk file, a torn (truncated) one, a leftover temporary file.
    const [objectDir] = readdirSync(dir);
    assert.ok(objectDir !== undefined);
    const chunkFile = (i: number): string => join(dir, objectDir, String(i));
    const corrupt = Buffer.from(object.subarray(CHUNK, 2 * CHUNK));
    corrupt[100] = (corrupt[100] ?? 0) ^ 0xff;
    const { readFileSync } = await import('node:fs');
    const original = readFileSync(chunkFile(1));
    writeFileSync(chunkFile(1), Buffer.concat([corrupt, original.subarray(CHUNK)]));
    truncateSync(chunkFile(2), 1000);
    writeFileSync(`${chunkFile(3)}.tmp123-abc`, 'half');
    const third = await openRemote(nginx.url('cached.bin'), { chunkSize: CHUNK, cache: { dir } });
    assert.deepEqual(await readAll(third), object);
    assert.equal(third.stats().corrupt, 2);
    third.close?.();
    assert.deepEqual(rangesOf('cached.bin').slice(fetchedOnce + 1), ['bytes=0-0', `bytes=${String(CHUNK)}-${String(2 * CHUNK - 1)}`, `bytes=${String(2 * CHUNK)}-${String(3 * CHUNK - 1)}`]);
    assert.ok(!existsSync(`${chunkFile(3)}.tmp123-abc`), 'leftovers of interrupted writes are removed on open');
  });

  test('disk cache bounded by maxBytes: least recently used chunks go first', async () => {
    writeFileSync(join(nginx.root, 'lru.bin'), object);
    const dir = freshDir();
    const source = await openRemote(nginx.url('lru.bin'), { chunkSize: CHUNK, cache: { dir, maxBytes: 4 * (CHUNK + 16) }, memoryBytes: 0 });
    assert.deepEqual(await readAll(source), object);
    source.close?.();
    const files = readdirSync(join(dir, readdirSync(dir)[0] ?? '')).map(Number).sort((a, b) => a - b);
    const chunks = Math.ceil(LENGTH / CHUNK);
    assert.deepEqual(files, [chunks - 4, chunks - 3, chunks - 2, chunks - 1]);
  });

  test('a redirect is followed', async () => {
    writeFileSync(join(nginx.root, 'target.bin'), object);
    const source = await openRemote(nginx.url('moved/target.bin'), { chunkSize: CHUNK });
    try {
      assert.deepEqual(await readAll(source), object);
    } finally {
      source.close?.();
    }
  });

  test('the object replaced between two ranges is an error naming the change, never mixed data', async () => {
    const path = join(nginx.root, 'replaced.bin');
    writeFileSync(path, object);
    utimesSync(path, new Date(1_000_000_000_000), new Date(1_000_000_000_000));
    const source = await openRemote(nginx.url('replaced.bin'), { chunkSize: CHUNK, concurrency: 1, retries: 1 });
    try {
      const target = new Uint8Array(4096);
      await source.read(0, target);
      const replaced = Uint8Array.from(object, (b) => b ^ 0x5a); // same size, new content and mtime: new ETag
      writeFileSync(path, replaced);
      await assert.rejects(async () => source.read(5 * CHUNK, target), (err: unknown) => err instanceof RemoteSourceError && /changed/.test(err.message) && err.status === 412);
    } finally {
      source.close?.();
    }
  });

  test('a missing object and a server that is down fail the open with the reason', async () => {
    await assert.rejects(openRemote(nginx.url('nothing-here.bin'), { retries: 0 }), (err: unknown) => err instanceof RemoteSourceError && err.status === 404 && /404/.test(err.message));
    await assert.rejects(openRemote('http://127.0.0.1:1/memory.bin', { retries: 1 }), (err: unknown) => err instanceof RemoteSourceError && /ECONNREFUSED/.test(err.message));
  });

  test('credentials in the URL or headers never appear in errors', async () => {
    await assert.rejects(openRemote(`http://user:secret-pw@127.0.0.1:${String(nginx.httpPort)}/nothing.bin?X-Amz-Signature=secret-sig`, { retries: 0, headers: { authorization: 'Bearer secret-token' } }), (err: unknown) => {
      assert.ok(err instanceof RemoteSourceError);
      assert.doesNotMatch(`${err.message} ${err.url} ${String(err.stack)}`, /secret/);
      return true;
    });
  });

  test('the page server restores a Firecracker-exact peer from a URL, every page checked', { skip: existsSync(join(ROOT, 'test', 'native', 'bin', 'fake-vmm')) ? false : 'fake-vmm is not built' }, async () => {
    const memoryBytes = 8 << 20;
    const memory = Uint8Array.from({ length: memoryBytes }, (_, i) => ((i >>> 12) * 7 + i * 13) & 0xff);
    const local = join(scratch, 'vmm-memory.bin');
    writeFileSync(local, memory);
    writeFileSync(join(nginx.root, 'vmm-memory.bin'), memory);
    const socket = join(scratch, 'vmm.sock');
    const server = await PageServer.listen({ socket, memory: httpSource(nginx.url('vmm-memory.bin'), { chunkSize: CHUNK }), readahead: 8 });
    const logs: ServerLog[] = [];
    server.on('log', (e) => logs.push(e));
    try {
      const out = await runFakeVmm(['--socket', socket, '--memory', local, '--timeout', '60000', '--regions', '3', '--threads', '2', '--random']);
      assert.equal(out.mismatches, 0);
      assert.equal(out.touched, memoryBytes / 4096);
      const listening = logs.find((e) => e.event === 'listening');
      assert.ok(listening?.event === 'listening' && listening.memory.startsWith('http://127.0.0.1'));
    } finally {
      await server.close();
    }
    const ranges = rangesOf('vmm-memory.bin');
    assert.equal(new Set(ranges).size, ranges.length, 'each chunk fetched once');
  });
  test('uffd serve --memory URL: eight fake VMMs at once, each chunk fetched once (nginx\'s log), a summary at exit', { skip: existsSync(join(ROOT, 'test', 'native', 'bin', 'fake-vmm')) ? false : 'fake-vmm is not built' }, async () => {
    const memoryBytes = 4 << 20;
    const memory = Uint8Array.from({ length: memoryBytes }, (_, i) => ((i >>> 12) * 7 + i * 13) & 0xff);
    const local = join(scratch, 'eight.bin');
    writeFileSync(local, memory);
    writeFileSync(join(nginx.root, 'eight.bin'), memory);
    const socket = join(scratch, 'eight.sock');
    const server = spawn(process.execPath, [CLI, 'serve', '--socket', socket, '--memory', nginx.url('eight.bin'), '--readahead', '16'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    server.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    server.stderr.on('data', (d: Buffer) => { out += d.toString(); });
    try {
      while (!out.includes('listening on')) {
        if (server.exitCode !== null) assert.fail(out);
        await new Promise((r) => setTimeout(r, 20));
      }
      const vmms = Array.from({ length: 8 }, () => {
        const child = spawn(join(ROOT, 'test', 'native', 'bin', 'fake-vmm'), ['--socket', socket, '--memory', local, '--timeout', '60000', '--random'], { stdio: ['ignore', 'pipe', 'pipe'] });
        let stdout = '';
        child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
        return once(child, 'exit').then(([code]) => ({ code: code as number | null, out: JSON.parse(stdout.trim().split('\n').at(-1) ?? '{}') as { touched?: number; mismatches?: number } }));
      });
      for (const r of await Promise.all(vmms)) {
        assert.equal(r.code, 0);
        assert.equal(r.out.mismatches, 0);
        assert.equal(r.out.touched, memoryBytes / 4096);
      }
    } finally {
      server.kill('SIGTERM');
      await once(server, 'exit');
    }
    const ranges = rangesOf('eight.bin');
    assert.equal(ranges.length, memoryBytes / (2 << 20), ranges.join(' ')); // default 2 MiB chunks, once each
    assert.match(out, /server closed; fetched 4\.0 MiB in 2 requests \(0 retries\)/);
  });
});

describe('httpSource arguments', () => {
  test('refused before any request', () => {
    assert.throws(() => httpSource('ftp://example.com/x'), TypeError);
    assert.throws(() => httpSource('not a url'), TypeError);
    assert.throws(() => httpSource('http://h/x#frag'), TypeError);
    assert.throws(() => httpSource('http://h/x', { chunkSize: 4096 * 3 + 1 }), /multiple of the/);
    assert.throws(() => httpSource('http://h/x', { concurrency: 0 }), RangeError);
    assert.throws(() => httpSource('http://h/x', { cache: { dir: '' } }), TypeError);
    assert.throws(() => httpSource('http://h/x', { headers: { a: 1 as unknown as string } }), TypeError);
    assert.throws(() => httpSource('http://h/x', { bogus: 1 } as HttpSourceOptions), /unknown option "bogus"/);
    assert.equal(httpSource('http://h/snap/').pack, true);
  });
});
