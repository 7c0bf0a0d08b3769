// Restores through a fault-injecting proxy in front of nginx: resets mid-body, 503 bursts, stalls past the
// timeout, bodies cut short under a correct Content-Length, the object replaced between two ranges. Every
// restore is byte-exact (LazyMemory hashing the whole object; the fake VMM checking every page) or fails
// naming the chunk, the URL and the server's answer: a faulting thread never sees wrong data.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { httpSource, LazyMemory, PageServer, RemoteSourceError } from '../src/index.js';
import type { HttpSourceOptions } from '../src/index.js';
import { openSource } from '../src/sources/source.js';
import type { RemotePageSource } from '../src/sources/chunked-source.js';
import { FaultProxy } from './support/fault-proxy.js';
import { PASS } from './support/fault-proxy.js';
import type { Fault } from './support/fault-proxy.js';
import { Nginx, nginxMissing } from './support/nginx.js';
import { FAKE_VMM, runFakeVmm } from './support/fake-vmm-run.js';

const LENGTH = 2 * 1024 * 1024 + 777;
const CHUNK = 128 * 1024;
const sha = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');
const object = Uint8Array.from({ length: LENGTH }, (_, i) => ((i >>> 12) * 29 + i * 11 + 5) & 0xff);
const scratch = mkdtempSync(join(tmpdir(), 'uffd-faults-'));
process.on('exit', () => { rmSync(scratch, { recursive: true, force: true }); });

let nginx: Nginx;
let proxy: FaultProxy;
const FAST: HttpSourceOptions = { chunkSize: CHUNK, concurrency: 4, timeoutMs: 300, retries: 6 };

const RESET: Fault = { kind: 'reset' };
const STALL: Fault = { kind: 'stall', ms: 3000 };
const TRUNCATE: Fault = { kind: 'truncate' };
const status = (code: number): Fault => ({ kind: 'status', status: code });
/** Every third request after the open (request 0) gets `fault`. */
const everyThird = (fault: Fault): [Fault[], 'repeat'] => [[PASS, fault, PASS], 'repeat'];

const faults: [string, [Fault[], Fault | 'repeat']][] = [
  ['a connection reset mid-body', everyThird(RESET)],
  ['503 bursts (three in a row)', [[PASS, PASS, status(503), status(503), status(503), PASS, PASS, PASS, PASS, status(503), status(503), status(503)], PASS]],
  ['a stall longer than the timeout', everyThird(STALL)],
  ['a body cut short under a correct Content-Length', everyThird(TRUNCATE)],
  ['all of them mixed', [[PASS, RESET, PASS, status(502), PASS, TRUNCATE, PASS, STALL], 'repeat']],
];
const REPLACED: Fault = { kind: 'replace', etag: '"another-version"' };

describe('remote restores through injected faults', { skip: nginxMissing ?? false }, () => {
  before(async () => {
    nginx = await Nginx.start();
    writeFileSync(join(nginx.root, 'memory.bin'), object);
    proxy = await FaultProxy.start(`http://127.0.0.1:${String(nginx.httpPort)}`);
  });
  after(async () => {
    await proxy.close();
    await nginx.stop();
  });

  for (const [name, plan] of faults) {
    test(`LazyMemory, byte-exact through ${name}`, async () => {
      await proxy.plan(...plan);
      const lazy = await LazyMemory.open({ source: httpSource(proxy.url('memory.bin'), FAST), readahead: 8 });
      try {
        assert.equal(sha(new Uint8Array(lazy.buffer, 0, LENGTH)), sha(object));
      } finally {
        await lazy.close();
      }
      assert.ok((await proxy.seen()).some((s) => s.fault !== 'pass'), 'faults were injected');
    });
  }

  test('the source counts its retries; every range it asked for is chunk-aligned', async () => {
    await proxy.plan(...everyThird(RESET));
    const source = (await openSource(httpSource(proxy.url('memory.bin'), FAST))) as RemotePageSource;
    try {
      const out = new Uint8Array(LENGTH);
      assert.equal(await source.read(0, out), LENGTH);
      assert.equal(sha(out), sha(object));
      assert.ok((source.stats().retries ?? 0) > 0);
    } finally {
      source.close?.();
    }
  });

  test('the object replaced between two ranges: the read fails naming chunk, URL and answer; zero policy reports it', async () => {
    await proxy.plan([PASS], REPLACED);
    const source = (await openSource(httpSource(proxy.url('memory.bin'), { ...FAST, concurrency: 1 }))) as RemotePageSource;
    try {
      await assert.rejects(async () => source.read(3 * CHUNK, new Uint8Array(4096)), (err: unknown) => {
        assert.ok(err instanceof RemoteSourceError);
        assert.match(err.message, /^chunk 3, bytes 393216-524287: the object changed since it was opened \(ETag "another-version", was "[^"]+"\) \(http:\/\/127\.0\.0\.1:\d+\/memory\.bin\)$/);
        return true;
      });
    } finally {
      source.close?.();
    }
    await proxy.plan([PASS], REPLACED);
    const lazy = await LazyMemory.open({ source: httpSource(proxy.url('memory.bin'), { ...FAST, chunkSize: 64 * 1024 }), readahead: 1, onSourceError: 'zero', retries: 0 });
    try {
      const errors: Error[] = [];
      lazy.on('error', (e: Error) => errors.push(e));
      const bytes = new Uint8Array(lazy.buffer);
      assert.equal(bytes[0], object[0]); // the chunk fetched at open
      assert.equal(bytes[LENGTH - 1], 0); // given up on: zeros and an error event, never the other version's bytes
      // The event crosses from the resolver thread: wait for it (a loaded machine may take a while).
      for (let waited = 0; !errors.some((e) => /chunk 32, /.test(e.message)) && waited < 10_000; waited += 20) await new Promise((r) => setTimeout(r, 20));
      assert.ok(errors.some((e) => /chunk 32, .*the object changed/.test(e.message)), errors.map((e) => e.message).join('\n'));
    } finally {
      await lazy.close();
    }
  });

  test('a server answering 503 for good: the open fails after its retries, with the answer', async () => {
    await proxy.plan([], status(503));
    await assert.rejects(openSource(httpSource(proxy.url('memory.bin'), { ...FAST, retries: 2 })), (err: unknown) => err instanceof RemoteSourceError && err.status === 503 && /answered 503 .*after 3 attempts/.test(err.message));
  });

  test('the fake VMM restores through mixed faults, every page checked', { skip: existsSync(FAKE_VMM) ? false : 'fake-vmm is not built' }, async () => {
    const memoryBytes = 4 << 20;
    const memory = Uint8Array.from({ length: memoryBytes }, (_, i) => ((i >>> 12) * 7 + i * 13) & 0xff);
    const local = join(scratch, 'vmm.bin');
    writeFileSync(local, memory);
    writeFileSync(join(nginx.root, 'vmm.bin'), memory);
    await proxy.plan([PASS, RESET, PASS, status(503), PASS, TRUNCATE, PASS, STALL], 'repeat');
    const socket = join(scratch, 'vmm.sock');
    const server = await PageServer.listen({ socket, memory: httpSource(proxy.url('vmm.bin'), FAST), readahead: 8 });
    try {
      const out = await runFakeVmm(['--socket', socket, '--memory', local, '--timeout', '60000', '--regions', '2', '--threads', '2', '--random']);
      assert.equal(out.mismatches, 0);
      assert.equal(out.touched, memoryBytes / 4096);
    } finally {
      await server.close();
    }
    assert.ok((await proxy.seen()).filter((s) => s.path === '/vmm.bin' && s.fault !== 'pass').length >= 3);
  });
});
