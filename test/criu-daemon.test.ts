// `uffd criu-lazy-pages` without CRIU: this test process plays the restored task (its own mapping, registered
// with a uffd it hands over the way criu restore does) and the restore connection, so the daemon's life cycle,
// serving, prefetch and every refusal run on any kernel. Real CRIU restores are in criu-restore.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { Mapping } from '../src/core/mapping.js';
import { presentPages } from '../src/system.js';
import { Userfaultfd } from '../src/core/uffd.js';
import { UnixConnection } from '../src/core/unix-socket.js';
import { MAGIC } from '../src/server/criu/image-file.js';
import { PE_LAZY, PE_PARENT, PE_PRESENT } from '../src/server/criu/images.js';
import { RESTORE_FINISHED } from '../src/server/criu/protocol.js';
import { imageFile, message, mmEntry, pagemapEntry, vma } from './support/criu-images.js';
import { CLI } from './support/support.js';

const P = 4096;
const PID = 4242;
const PAGES = 64;
const LAZY = 48; // the last 16 pages are described by no lazy entry: zeros

function pageByte(page: number): number {
  return (page * 37 + 11) & 0xff;
}

interface Setup { dir: string; mapping: Mapping; uffd: Userfaultfd }

/** Images describing `mapping` as process PID: two areas, one lazy entry over the first LAZY pages. */
function setup(variant: 'good' | 'parent' | 'past-pages' | 'malformed' = 'good'): Setup {
  const dir = mkdtempSync(join(tmpdir(), 'uffd-criu-daemon-'));
  const mapping = Mapping.anonymous(PAGES * P);
  const a = mapping.address;
  const half = a + BigInt(PAGES / 2 * P);
  writeFileSync(join(dir, 'pstree.img'), imageFile(MAGIC.pstree, [message([[1, PID], [2, 0], [3, PID], [4, PID], [5, [PID]]])]));
  writeFileSync(join(dir, `mm-${String(PID)}.img`), imageFile(MAGIC.mm, [mmEntry([vma(a, half), vma(half, a + BigInt(PAGES * P))])]));
  const flags = variant === 'parent' ? PE_PARENT | PE_LAZY : PE_LAZY | PE_PRESENT;
  const pagemap = imageFile(MAGIC.pagemap, [message([[1, 1]]), pagemapEntry({ vaddr: a, pages: LAZY, flags })]);
  writeFileSync(join(dir, `pagemap-${String(PID)}.img`), variant === 'malformed' ? pagemap.subarray(0, pagemap.length - 3) : pagemap);
  const pages = new Uint8Array((variant === 'past-pages' ? LAZY - 1 : LAZY) * P);
  for (let p = 0; p < pages.length / P; p++) pages.fill(pageByte(p), p * P, (p + 1) * P);
  writeFileSync(join(dir, 'pages-1.img'), pages);
  const uffd = Userfaultfd.open({ request: ['EVENT_REMAP', 'EVENT_REMOVE', 'EVENT_UNMAP'] });
  uffd.register({ address: a, length: PAGES * P }, { missing: true });
  return { dir, mapping, uffd };
}

interface Daemon { child: ChildProcess; ready: boolean; exited: Promise<number | null>; log: () => string; stderr: () => string }

async function start(dir: string, extra: string[] = []): Promise<Daemon> {
  const child = spawn(process.execPath, [CLI, 'criu-lazy-pages', '--images-dir', dir, '--log-file=lazy.log', '-v4', '--status-fd', '3', ...extra], { stdio: ['ignore', 'ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => { stderr += d.toString(); });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => { resolve(code); }));
  const status = child.stdio[3] as Readable;
  const byte = await new Promise<number | undefined>((resolve) => {
    status.once('data', (d: Buffer) => { resolve(d[0]); });
    status.once('end', () => { resolve(undefined); });
  });
  status.destroy();
  const log = (): string => { try { return readFileSync(join(dir, 'lazy.log'), 'utf8'); } catch { return ''; } };
  return { child, ready: byte === 0, exited, log, stderr: () => stderr };
}

function word(v: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, v >>> 0, true);
  return b;
}

/** The uffd handed over as criu does it: the pid, then a 1-byte message carrying the descriptor. */
function handOver(conn: UnixConnection, pid: number, fd: number): void {
  conn.send(word(pid));
  conn.send(Uint8Array.of(0), [fd]);
}

function checkMemory(s: Setup): void {
  const bytes = new Uint8Array(s.mapping.view(0, PAGES * P));
  for (let p = 0; p < PAGES; p++) {
    const want = p < LAZY ? pageByte(p) : 0;
    for (const at of [0, P / 2, P - 1]) assert.equal(bytes[p * P + at], want, `page ${String(p)} byte ${String(at)}`);
  }
}

function cleanup(s: Setup): void {
  if (!s.uffd.closed) s.uffd.close();
  s.mapping.close();
  rmSync(s.dir, { recursive: true, force: true });
}

test('demand faults served from the images, zeros where no lazy entry covers; prefetch completes and the daemon exits 0', async () => {
  const s = setup();
  const d = await start(s.dir);
  assert.ok(d.ready, d.stderr());
  const conn = UnixConnection.connect(join(s.dir, 'lazy-pages.socket'));
  handOver(conn, PID, s.uffd.fd);
  // Only the daemon holds the uffd now: if it died, the pages would read as zeros, never hang this test.
  s.uffd.close();
  // Faults before the end marker are served at once.
  assert.equal(new Uint8Array(s.mapping.view(5 * P, P))[100], pageByte(5));
  conn.send(word(-77)); // a zombie: nothing follows
  conn.send(word(RESTORE_FINISHED));
  conn.close();
  assert.equal(await d.exited, 0, d.log());
  checkMemory(s);
  const log = d.log();
  assert.match(log, /pid 4242: uffd received; 2 lazy run\(s\), 48 page\(s\) in 2 area\(s\)/);
  assert.match(log, /pid 77: a zombie/);
  assert.match(log, /restore finished: 1 process\(es\); prefetching/);
  assert.match(log, /pid 4242: complete, every lazy page is in; faults [1-9]/);
  assert.match(log, /done: every process is complete or has exited/);
  cleanup(s);
});

test('--no-prefetch serves demand faults only, until SIGTERM ends it (exit 1, logged)', async () => {
  const s = setup();
  const d = await start(s.dir, ['--no-prefetch', '--readahead', '1']);
  const conn = UnixConnection.connect(join(s.dir, 'lazy-pages.socket'));
  handOver(conn, PID, s.uffd.fd);
  s.uffd.close();
  conn.send(word(RESTORE_FINISHED));
  conn.close();
  checkMemory(s);
  d.child.kill('SIGTERM');
  assert.equal(await d.exited, 1);
  assert.match(d.log(), /pid 4242: .*faults 64, pages copied 48 \(prefetched 0\), zero pages 16/);
  assert.match(d.log(), /error: terminated by SIGTERM/);
  cleanup(s);
});

const REFUSALS: { name: string; variant?: Parameters<typeof setup>[0]; send: (c: UnixConnection, s: Setup) => void; log: RegExp }[] = [
  { name: 'a pid without its fd', send: (c) => { c.send(word(PID)); c.send(Uint8Array.of(0)); }, log: /error: pid 4242: the message after it carried no descriptor/ },
  { name: 'two fds', send: (c, s) => { c.send(word(PID)); c.send(Uint8Array.of(0), [s.uffd.fd, s.uffd.fd]); }, log: /error: pid 4242: 2 descriptors came with its message/ },
  { name: 'an fd with the pid bytes', send: (c, s) => { c.send(word(PID), [s.uffd.fd]); }, log: /error: 1 descriptor\(s\) came with the bytes of a pid/ },
  { name: 'an fd that is not a uffd', send: (c) => { const fd = openSync('/dev/null', 'r'); handOver(c, PID, fd); closeSync(fd); }, log: /error: pid 4242: fd \d+ is not a userfaultfd \(it is \/dev\/null\)/ },
  { name: 'garbage instead of FIN', send: (c, s) => { handOver(c, PID, s.uffd.fd); c.send(Uint8Array.from([0x47, 0x45, 0x54, 0x20])); }, log: /error: word 0x20544547 is neither a pid/ },
  { name: 'EOF before FIN', send: (c, s) => { handOver(c, PID, s.uffd.fd); }, log: /error: the restore connection closed before the end marker \(1 process\(es\) received; between messages\)/ },
  { name: 'a pid not in pstree.img', send: (c, s) => { handOver(c, 999, s.uffd.fd); }, log: /error: pid 999 is not in pstree\.img/ },
  { name: 'the same pid twice', send: (c, s) => { handOver(c, PID, s.uffd.fd); handOver(c, PID, s.uffd.fd); }, log: /error: pid 4242 was announced twice/ },
  { name: 'a truncated pagemap', variant: 'malformed', send: (c, s) => { handOver(c, PID, s.uffd.fd); }, log: /error: pid 4242: pagemap-4242\.img: entry 0: a varint runs past|error: pid 4242: pagemap-4242\.img: record 1 .* claims/ },
  { name: 'a pagemap past its pages file', variant: 'past-pages', send: (c, s) => { handOver(c, PID, s.uffd.fd); }, log: /error: pid 4242: pagemap-4242\.img points past its pages file: its present entries need 196608 bytes, pages-1\.img has 192512/ },
  { name: 'pages in a parent image', variant: 'parent', send: (c, s) => { handOver(c, PID, s.uffd.fd); }, log: /error: pid 4242: pagemap-4242\.img: entry 0 .* PE_PARENT/ },
];

for (const r of REFUSALS) {
  test(`refused with a log line naming it, exit 1: ${r.name}`, async () => {
    const s = setup(r.variant);
    const d = await start(s.dir);
    const conn = UnixConnection.connect(join(s.dir, 'lazy-pages.socket'));
    r.send(conn, s);
    conn.close();
    const code = await d.exited;
    assert.equal(code, 1, d.log());
    assert.match(d.log(), r.log);
    // No page was served: the first page is still missing here (our own uffd still holds the range).
    s.uffd.close();
    cleanup(s);
  });
}

test('startup failures: no pstree.img (status fd closed without the byte), bad options', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'uffd-criu-daemon-'));
  const d = await start(dir);
  assert.equal(d.ready, false);
  assert.equal(await d.exited, 1);
  assert.match(d.stderr(), /pstree\.img cannot be read/);
  const bad = spawn(process.execPath, [CLI, 'criu-lazy-pages', '--bogus'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  bad.stderr.on('data', (b: Buffer) => { err += b.toString(); });
  assert.equal(await new Promise((resolve) => bad.on('exit', resolve)), 2);
  assert.match(err, /unknown option "--bogus"/);
  rmSync(dir, { recursive: true, force: true });
});

test('--daemon detaches once listening, writes --pidfile, and the detached daemon serves and ends on SIGTERM', async () => {
  const s = setup();
  const pidfile = join(s.dir, 'daemon.pid');
  const starter = spawn(process.execPath, [CLI, 'criu-lazy-pages', '-D', s.dir, '-o', 'lazy.log', '-d', '--pidfile', pidfile], { stdio: 'ignore' });
  assert.equal(await new Promise((resolve) => starter.on('exit', resolve)), 0);
  const pid = Number(readFileSync(pidfile, 'utf8'));
  assert.ok(Number.isSafeInteger(pid) && pid > 0);
  const conn = UnixConnection.connect(join(s.dir, 'lazy-pages.socket'));
  handOver(conn, PID, s.uffd.fd);
  s.uffd.close();
  conn.send(word(RESTORE_FINISHED));
  conn.close();
  checkMemory(s);
  process.kill(pid, 'SIGTERM');
  const until = Date.now() + 10_000;
  while (existsSync(`/proc/${String(pid)}`) && !/done:|error:/.test(readFileSync(join(s.dir, 'lazy.log'), 'utf8'))) {
    assert.ok(Date.now() < until, 'the detached daemon did not end');
    await new Promise((r) => setTimeout(r, 20));
  }
  cleanup(s);
});

test('--record writes the first-fault order; --prefetch fills those pages first on the next restore', async () => {
  const order = [9, 3, 40, 3, 20];
  const record = join(tmpdir(), `uffd-criu-ws-${String(process.pid)}-${String(Date.now())}`);
  const first = setup();
  const d1 = await start(first.dir, ['--no-prefetch', '--readahead', '1', '--record', record]);
  const c1 = UnixConnection.connect(join(first.dir, 'lazy-pages.socket'));
  handOver(c1, PID, first.uffd.fd);
  first.uffd.close();
  c1.send(word(RESTORE_FINISHED));
  c1.close();
  const bytes = new Uint8Array(first.mapping.view(0, PAGES * P));
  for (const p of order) assert.equal(bytes[p * P], pageByte(p));
  d1.child.kill('SIGTERM');
  await d1.exited;
  const a = first.mapping.address;
  assert.equal(readFileSync(record, 'utf8'), [9, 3, 40, 20].map((p) => `${String(PID)} 0x${(a + BigInt(p * P)).toString(16)}\n`).join(''));
  cleanup(first);

  // The second restore: its memory is at another address, so the record is rewritten for it.
  const second = setup();
  const b = second.mapping.address;
  writeFileSync(record, [9, 3, 40, 20].map((p) => `${String(PID)} 0x${(b + BigInt(p * P)).toString(16)}\n`).join(''));
  const d2 = await start(second.dir, ['--no-prefetch', '--prefetch', record]);
  const c2 = UnixConnection.connect(join(second.dir, 'lazy-pages.socket'));
  handOver(c2, PID, second.uffd.fd);
  second.uffd.close();
  // Filled without a fault: the pages are present before anything touches them.
  const until = Date.now() + 10_000;
  while (!/filling its working set first \(4 page\(s\)\)/.test(d2.log())) {
    assert.ok(Date.now() < until, d2.log());
    await new Promise((r) => setTimeout(r, 10));
  }
  const present = (): number[] => [...presentPages(b, PAGES, P)].flatMap((v, i) => (v !== 0 ? [i] : []));
  while (present().length < 4 && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(present(), [3, 9, 20, 40]);
  c2.send(word(RESTORE_FINISHED));
  c2.close();
  d2.child.kill('SIGTERM');
  await d2.exited;
  rmSync(record, { force: true });
  cleanup(second);
});
