// PageServer against peers that behave like Firecracker (every protocol version, every page verified) and
// against bad peers: each is refused or dropped with a clear log line while the server serves the others.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Mapping, PageServer, UnixConnection, UnixListener, Userfaultfd } from '../src/index.js';
import type { PageServerOptions, ServerLog } from '../src/index.js';
import { native } from '../src/binding.js';
import { CLI, ROOT } from './support/support.js';

const NODE_VMM = fileURLToPath(new URL('./fixtures/node-vmm.js', import.meta.url));
const FAKE_VMM = join(ROOT, 'test', 'native', 'bin', 'fake-vmm');
const dir = mkdtempSync(join(tmpdir(), 'uffd-server-'));
process.on('exit', () => { rmSync(dir, { recursive: true, force: true }); });
const MEMORY = join(dir, 'memory.bin');
const MEMORY_BYTES = 4 << 20;
writeFileSync(MEMORY, Uint8Array.from({ length: MEMORY_BYTES }, (_, i) => (i * 2654435761) >>> 24));
let sockets = 0;

async function withServer(options: Partial<PageServerOptions>, body: (server: PageServer, logs: ServerLog[]) => Promise<void>): Promise<void> {
  const socket = join(dir, `s${String(sockets++)}.sock`);
  const server = await PageServer.listen({ socket, memory: MEMORY, readahead: 4, ...options });
  const logs: ServerLog[] = [];
  server.on('log', (entry) => logs.push(entry));
  try {
    await body(server, logs);
  } finally {
    await server.close();
  }
}

/** Its result once it has exited and its output is all read ('close': 'exit' can come before the last stdout data). */
function vmm(socket: string, ...args: string[]): { child: ChildProcess; result: Promise<{ code: number | null; signal: string | null; out: { bad: number; touched: number } | undefined; stderr: string }> } {
  const child = spawn(process.execPath, [NODE_VMM, socket, MEMORY, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (d: Buffer) => { stdout += d.toString(); });
  child.stderr?.on('data', (d: Buffer) => { stderr += d.toString(); });
  const result = once(child, 'close').then(([code, signal]) => ({
    code: code as number | null, signal: signal as string | null, stderr,
    out: stdout.trim() === '' ? undefined : JSON.parse(stdout) as { bad: number; touched: number },
  }));
  return { child, result };
}

async function until(logs: ServerLog[], predicate: (entry: ServerLog) => boolean, what: string, ms = 15_000): Promise<ServerLog> {
  const deadline = Date.now() + ms;
  for (;;) {
    const hit = logs.find(predicate);
    if (hit !== undefined) return hit;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; logs: ${JSON.stringify(logs, (_, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

describe('restores through the page server', () => {
  for (const protocol of ['1.1', '1.7', '1.12']) {
    test(`Firecracker protocol ${protocol}: every page verified, then the client's exit is seen`, async () => {
      await withServer({}, async (server, logs) => {
        const peer = vmm(server.socket, '--protocol', protocol);
        const r = await peer.result;
        assert.equal(r.code, 0, r.stderr);
        assert.deepEqual(r.out, { bad: 0, touched: MEMORY_BYTES / 4096 });
        const client = await until(logs, (e) => e.event === 'client', 'the client');
        assert.ok(client.event === 'client');
        assert.equal(client.version, protocol);
        assert.equal(client.pageSize, 4096);
        assert.equal(client.regions.length, 2);
        const gone = await until(logs, (e) => e.event === 'gone', 'the summary');
        assert.ok(gone.event === 'gone');
        assert.equal(gone.reason, 'the process exited');
        assert.equal(gone.summary.pagesCopied, MEMORY_BYTES / 4096);
        assert.ok(gone.summary.faults <= MEMORY_BYTES / 4096 / 4 + 2, `read-ahead 4: ${String(gone.summary.faults)} faults`);
      });
    });
  }

  test('balloon: a removed range reads as zeros afterwards (REMOVE applied, zero pages served)', async () => {
    await withServer({}, async (server, logs) => {
      const r = await vmm(server.socket, '--balloon').result;
      assert.deepEqual(r.out, { bad: 0, touched: MEMORY_BYTES / 4096 });
      const gone = await until(logs, (e) => e.event === 'gone', 'the summary');
      assert.ok(gone.event === 'gone');
      assert.equal(gone.summary.removes, 1);
      assert.equal(gone.summary.zeroPages, 8);
    });
  });

  test('many clients at once, each verified', async () => {
    await withServer({}, async (server, logs) => {
      const results = await Promise.all(Array.from({ length: 6 }, (_, i) => vmm(server.socket, '--protocol', ['1.1', '1.7', '1.12'][i % 3]!).result));
      for (const r of results) assert.deepEqual(r.out, { bad: 0, touched: MEMORY_BYTES / 4096 }, `exit ${String(r.code)}, signal ${String(r.signal)}; stderr: ${r.stderr}`);
      await until(logs, () => logs.filter((e) => e.event === 'gone').length === 6, 'six summaries');
    });
  });

  test('a fault outside every described region drops that client with the reason, logged', async () => {
    await withServer({}, async (server, logs) => {
      const peer = vmm(server.socket, '--undescribed');
      try {
        const gone = await until(logs, (e) => e.event === 'gone', 'the drop');
        assert.ok(gone.event === 'gone');
        assert.match(gone.reason, /outside every region of its handshake/);
      } finally {
        peer.child.kill('SIGKILL'); // its thread waits on a page nobody can serve, as Firecracker's would
      }
      await peer.result;
    });
  });

  test('a client that dies in the middle of its faults is dropped; another is served throughout', async () => {
    await withServer({}, async (server, logs) => {
      const dying = vmm(server.socket, '--die-after', '100');
      const healthy = vmm(server.socket);
      const [d, h] = await Promise.all([dying.result, healthy.result]);
      assert.equal(d.signal, 'SIGKILL');
      assert.deepEqual(h.out, { bad: 0, touched: MEMORY_BYTES / 4096 });
      await until(logs, () => logs.filter((e) => e.event === 'gone').length === 2, 'both clients gone');
    });
  });

  test('--record writes the working set; --prefetch fills it first on the next restore', async () => {
    const records = join(dir, 'records');
    let record = '';
    await withServer({ record: records }, async (server, logs) => {
      const r = await vmm(server.socket, '--touch', '64').result;
      assert.equal(r.out?.bad, 0);
      const written = await until(logs, (e) => e.event === 'recorded', 'the record');
      assert.ok(written.event === 'recorded');
      record = written.path;
      await until(logs, (e) => e.event === 'gone', 'the summary');
    });
    const { offsets } = JSON.parse(readFileSync(record, 'utf8')) as { offsets: number[] };
    assert.ok(offsets.length > 0 && offsets.length <= 64);
    assert.equal(new Set(offsets).size, offsets.length, 'each page once, in first-fault order');
    // The fake VMM waits a second before touching: the prefetch, which otherwise races its faults, gets
    // every page of the record in first.
    await withServer({ prefetch: record, readahead: 1 }, async (server, logs) => {
      const fake = spawn(FAKE_VMM, ['--socket', server.socket, '--memory', MEMORY, '--delay-touch', '1000', '--timeout', '60000'], { stdio: 'ignore' });
      const [code] = (await once(fake, 'close')) as [number | null];
      assert.equal(code, 0, 'every page right');
      const prefetched = await until(logs, (e) => e.event === 'prefetched', 'the prefetch');
      assert.ok(prefetched.event === 'prefetched');
      assert.equal(prefetched.pages, offsets.length);
      const gone = await until(logs, (e) => e.event === 'gone', 'the summary');
      assert.ok(gone.event === 'gone');
      assert.equal(gone.summary.prefetched, offsets.length, 'every page of the working set was prefetched');
      assert.equal(gone.summary.pagesCopied, MEMORY_BYTES / 4096);
    });
  });
});

describe('bad peers are refused and the server keeps serving', () => {
  /** Sends `body` with `fds` from this process, then checks a good client is still served. */
  async function refused(body: string | Uint8Array[], fds: number[], expect: RegExp, options: Partial<PageServerOptions> = {}): Promise<void> {
    await withServer(options, async (server, logs) => {
      const conn = UnixConnection.connect(server.socket);
      try {
        const parts = typeof body === 'string' ? [Buffer.from(body)] : body;
        for (const [i, part] of parts.entries()) conn.send(part, i === 0 ? fds : []);
        const entry = await until(logs, (e) => e.event === 'refused', 'the refusal');
        assert.ok(entry.event === 'refused');
        assert.match(entry.reason, expect);
        assert.equal(entry.pid, process.pid);
      } finally {
        conn.close();
      }
      const r = await vmm(server.socket).result;
      assert.deepEqual(r.out, { bad: 0, touched: MEMORY_BYTES / 4096 }, 'the next client is served');
    });
  }

  const region = (base: bigint, size: number, offset: number, page = 4096): string =>
    `{"base_host_virt_addr":${base.toString()},"size":${String(size)},"offset":${String(offset)},"page_size":${String(page)},"page_size_kib":${String(page)}}`;

  test('malformed JSON', async () => {
    using uffd = Userfaultfd.open();
    await refused('[{"base_host_virt_addr":1,', [uffd.fd], /./, { handshakeTimeoutMs: 300 });
    await refused('[{"base_host_virt_addr":4096 "size":4096}]', [uffd.fd], /JSON|expected|malformed/i);
  });

  test('duplicate keys, fractions, 2^53, disagreeing page sizes', async () => {
    using uffd = Userfaultfd.open();
    await refused('[{"base_host_virt_addr":4096,"size":4096,"size":8192,"offset":0}]', [uffd.fd], /duplicate/i);
    await refused('[{"base_host_virt_addr":4096,"size":4096.5,"offset":0}]', [uffd.fd], /size/);
    await refused('[{"base_host_virt_addr":4096,"size":9007199254740992,"offset":0}]', [uffd.fd], /size 9007199254740992.*2\^53|2\^53/);
    await refused('[{"base_host_virt_addr":4096,"size":4096,"offset":0,"page_size":4096,"page_size_kib":2097152}]', [uffd.fd], /page_size/);
  });

  test('descriptors sent in later chunks count too: a second one is refused at once', async () => {
    using a = Userfaultfd.open();
    using b = Userfaultfd.open();
    await withServer({}, async (server, logs) => {
      const conn = UnixConnection.connect(server.socket);
      try {
        conn.send(Buffer.from('[{"base_host_'), [a.fd]);
        await new Promise((resolve) => setTimeout(resolve, 20));
        conn.send(Buffer.from('virt_addr":'), [b.fd]);
        const entry = await until(logs, (e) => e.event === 'refused', 'the refusal');
        assert.ok(entry.event === 'refused');
        assert.match(entry.reason, /exactly one descriptor.*got 2/);
      } finally {
        conn.close();
      }
    });
  });

  test('no descriptor, two descriptors, a descriptor that is not a userfaultfd', async () => {
    using a = Userfaultfd.open();
    using b = Userfaultfd.open();
    const body = `[${region(0x10000000n, 4096, 0)}]`;
    await refused(body, [], /exactly one descriptor.*got 0/);
    await refused(body, [a.fd, b.fd], /exactly one descriptor.*got 2/);
    await refused(body, [0], /not a usable userfaultfd.*not a userfaultfd/);
  });

  test('overlapping, unaligned, odd page size, past the end of the memory file', async () => {
    using uffd = Userfaultfd.open();
    await refused(`[${region(0x10000000n, 8192, 0)},${region(0x10001000n, 4096, 8192)}]`, [uffd.fd], /overlap/i);
    await refused(`[${region(0x10000800n, 4096, 0)}]`, [uffd.fd], /not a multiple of the page size/);
    await refused(`[${region(0x10000000n, 65536, 0, 65536)}]`, [uffd.fd], /page size/i);
    await refused(`[${region(0x10000000n, MEMORY_BYTES + 4096, 0)}]`, [uffd.fd], /end of the memory file|past|beyond/i);
  });

  test('a body split across reads and larger than one read is accepted', async () => {
    await withServer({}, async (server, logs) => {
      using uffd = Userfaultfd.open();
      using memory = Mapping.anonymous(1024 * 4096);
      const regions = Array.from({ length: 1000 }, (_, i) => region(memory.address + BigInt(i * 4096), 4096, i * 4096));
      const body = Buffer.from(`[${regions.join(',')}]`);
      assert.ok(body.length > 64 * 1024, 'more than the server reads at once');
      const conn = UnixConnection.connect(server.socket);
      try {
        conn.send(body.subarray(0, 100), [uffd.fd]);
        await new Promise((resolve) => setTimeout(resolve, 20));
        for (let off = 100; off < body.length; off += 50_000) conn.send(body.subarray(off, off + 50_000));
        const client = await until(logs, (e) => e.event === 'client' || e.event === 'refused', 'the handshake');
        assert.equal(client.event, 'client', JSON.stringify(client));
        assert.ok(client.event === 'client');
        assert.equal(client.regions.length, 1000);
      } finally {
        conn.close();
      }
    });
  });

  test('a client that connects and never sends times out', async () => {
    await withServer({ handshakeTimeoutMs: 200 }, async (server, logs) => {
      const conn = UnixConnection.connect(server.socket);
      try {
        const entry = await until(logs, (e) => e.event === 'refused', 'the timeout');
        assert.ok(entry.event === 'refused');
        assert.match(entry.reason, /within 200 ms/);
      } finally {
        conn.close();
      }
    });
  });

  test('a connection closed before the handshake is complete', async () => {
    using uffd = Userfaultfd.open();
    await withServer({}, async (server, logs) => {
      const conn = UnixConnection.connect(server.socket);
      conn.send(Buffer.from('[{"base_host_'), [uffd.fd]);
      conn.close();
      const entry = await until(logs, (e) => e.event === 'refused', 'the refusal');
      assert.ok(entry.event === 'refused');
      assert.match(entry.reason, /closed before the handshake/);
    });
  });

  test('limits: clients beyond maxClients and peers of other uids are refused', async () => {
    await withServer({ maxClients: 1, handshakeTimeoutMs: 5000 }, async (server, logs) => {
      const first = UnixConnection.connect(server.socket);
      await new Promise((resolve) => setTimeout(resolve, 20));
      const second = UnixConnection.connect(server.socket);
      try {
        const entry = await until(logs, (e) => e.event === 'refused', 'the refusal');
        assert.ok(entry.event === 'refused');
        assert.match(entry.reason, /too many clients/);
      } finally {
        first.close();
        second.close();
      }
    });
    await withServer({ allowUids: [12345] }, async (server, logs) => {
      const conn = UnixConnection.connect(server.socket);
      try {
        const entry = await until(logs, (e) => e.event === 'refused', 'the refusal');
        assert.ok(entry.event === 'refused');
        assert.match(entry.reason, /uid \d+ is not allowed/);
      } finally {
        conn.close();
      }
    });
  });
});

describe('the socket file', () => {
  test('is created 0600; a stale one is replaced; a live one is EADDRINUSE; other files are left alone', () => {
    const path = join(dir, 'sock-test.sock');
    const first = UnixListener.listen(path);
    assert.equal(statSync(path).mode & 0o777, 0o600);
    assert.throws(() => UnixListener.listen(path), { code: 'EADDRINUSE' });
    first.close();
    // A server that died without unlinking leaves a socket file nobody accepts on.
    const stalePath = join(dir, 'stale.sock');
    native.close(native.unixListen(stalePath, 1, 0o600));
    assert.ok(statSync(stalePath).isSocket());
    const replaced = UnixListener.listen(stalePath);
    const conn = UnixConnection.connect(stalePath);
    assert.ok(replaced.accept() !== undefined, 'the new listener accepts');
    conn.close();
    replaced.close();
    const file = join(dir, 'not-a-socket');
    writeFileSync(file, 'keep me');
    assert.throws(() => UnixListener.listen(file), { code: 'EADDRINUSE' });
    assert.equal(readFileSync(file, 'utf8'), 'keep me');
  });
});

describe('uffd serve', () => {
  test('logs clients and summaries as JSON lines and exits cleanly on SIGTERM', async () => {
    const socket = join(dir, 'cli.sock');
    const server = spawn(process.execPath, [CLI, 'serve', '--socket', socket, '--memory', MEMORY, '--readahead', '8', '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    server.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    const lines = (): { event: string; reason?: string; summary?: { pagesCopied: number } }[] => out.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as { event: string });
    const exited = once(server, 'exit');
    try {
      const deadline = Date.now() + 10_000;
      while (!out.includes('"listening"') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      const r = await vmm(socket, '--protocol', '1.7').result;
      assert.deepEqual(r.out, { bad: 0, touched: MEMORY_BYTES / 4096 });
      while (!out.includes('"gone"') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      const gone = lines().find((l) => l.event === 'gone');
      assert.equal(gone?.summary?.pagesCopied, MEMORY_BYTES / 4096);
      assert.deepEqual(lines().map((l) => l.event), ['listening', 'client', 'gone']);
    } finally {
      server.kill('SIGTERM');
    }
    const [code] = (await exited) as [number];
    assert.equal(code, 0);
    assert.equal(lines().at(-1)?.event, 'closed');
  });
});
