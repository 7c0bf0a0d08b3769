// Attacks on `uffd serve` and PageServer as a hostile or careless peer would make them: running out of
// descriptors, a memory file that shrinks while it is served, clients that trickle or send junk. The server
// must keep running (never exit silently, never die of a signal), say what happened, and serve the others.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { HandshakeError, parseHandshake } from '../src/index.js';
import { CLI } from './support/support.js';

const NODE_VMM = fileURLToPath(new URL('./fixtures/node-vmm.js', import.meta.url));

const dir = mkdtempSync(join(tmpdir(), 'uffd-hardening-server-'));
process.on('exit', () => { rmSync(dir, { recursive: true, force: true }); });
const MEMORY = join(dir, 'memory.bin');
writeFileSync(MEMORY, Buffer.alloc(1 << 20, 3));
const PRLIMIT = ['/usr/bin/prlimit', '/bin/prlimit'].find((p) => existsSync(p));

/** A `uffd serve --json` child and the JSON lines it has printed so far. */
class ServeProcess {
  readonly child: ChildProcess;
  readonly lines: Record<string, unknown>[] = [];
  readonly exited: Promise<[number | null, NodeJS.Signals | null]>;

  constructor(command: string[]) {
    const [file, ...args] = command;
    this.child = spawn(file ?? process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let buffered = '';
    this.child.stdout?.on('data', (d: Buffer) => {
      buffered += d.toString();
      const parts = buffered.split('\n');
      buffered = parts.pop() ?? '';
      for (const line of parts) if (line.trim() !== '') this.lines.push(JSON.parse(line) as Record<string, unknown>);
    });
    this.child.stderr?.resume();
    this.exited = once(this.child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
  }

  async waitFor(predicate: (line: Record<string, unknown>) => boolean, ms = 10_000): Promise<Record<string, unknown> | undefined> {
    const deadline = Date.now() + ms;
    while (Date.now() < deadline && this.child.exitCode === null && this.child.signalCode === null) {
      const found = this.lines.find(predicate);
      if (found !== undefined) return found;
      await new Promise((r) => setTimeout(r, 20));
    }
    return this.lines.find(predicate);
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }
}

async function connect(path: string): Promise<Socket> {
  const socket = createConnection(path);
  await once(socket, 'connect');
  return socket;
}

test('uffd serve out of descriptors (EMFILE on accept) keeps running, says so, and accepts again when they free up', { skip: PRLIMIT === undefined ? 'prlimit (util-linux) is not installed' : false }, async () => {
  const socket = join(dir, 'emfile.sock');
  const serve = new ServeProcess([PRLIMIT ?? '', '--nofile=64:64', process.execPath, CLI, 'serve', '--socket', socket, '--memory', MEMORY, '--json', '--handshake-timeout', '60']);
  try {
    assert.ok(await serve.waitFor((l) => l.event === 'listening'), 'the server did not start');
    const idle: Socket[] = [];
    for (let i = 0; i < 60; i++) idle.push(await connect(socket));
    const full = await serve.waitFor((l) => l.event === 'error' && /accept failed/.test(String(l.message)));
    assert.ok(full, `no accept error logged: ${JSON.stringify(serve.lines)}`);
    await new Promise((r) => setTimeout(r, 500));
    assert.ok(serve.running, 'the server exited while out of descriptors');
    for (const s of idle) s.destroy();
    // A junk handshake from a new client must be read and refused: the server accepts again.
    const late = await connect(socket);
    late.write('this is not a Firecracker handshake');
    const again = await serve.waitFor((l) => l.event === 'error' && l.message === 'accepting connections again', 15_000);
    assert.ok(again, JSON.stringify(serve.lines.slice(-5)));
    const after = serve.lines.indexOf(again);
    const refused = await serve.waitFor((l) => l.event === 'refused' && serve.lines.indexOf(l) > after && !/closed|EOF|hung up/i.test(String(l.reason)), 15_000);
    late.destroy();
    assert.ok(refused, `the late client was not read: ${JSON.stringify(serve.lines.slice(after))}`);
    assert.ok(serve.running, 'the server exited');
  } finally {
    serve.child.kill('SIGTERM');
    const [code, signal] = await serve.exited;
    assert.equal(signal, null);
    assert.equal(code, 0);
    assert.ok(!existsSync(socket), 'the socket file is removed on exit');
  }
});

/** A node-vmm client: its exit, and its result line if it got that far. */
function runVmm(socket: string, memory: string, args: string[] = []): { done: Promise<{ code: number | null; signal: NodeJS.Signals | null; out: string }>; child: ChildProcess } {
  const child = spawn(process.execPath, [NODE_VMM, socket, memory, '--regions', '1', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout?.on('data', (d: Buffer) => { out += d.toString(); });
  child.stderr?.resume();
  const done = (once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>).then(([code, signal]) => ({ code, signal, out }));
  return { done, child };
}

test('the memory file shrinks while it is served: the client that needs the lost pages is dropped with the reason, the server serves the next one', async () => {
  const memory = join(dir, 'shrinking.bin');
  const original = join(dir, 'original.bin');
  const firstHalf = join(dir, 'first-half.bin');
  const pattern = Buffer.from(Uint8Array.from({ length: 8 << 20 }, (_, i) => ((i >>> 12) * 7 + i * 13) & 0xff));
  writeFileSync(memory, pattern);
  writeFileSync(original, pattern);
  writeFileSync(firstHalf, pattern.subarray(0, 4 << 20));
  const socket = join(dir, 'shrink.sock');
  const serve = new ServeProcess([process.execPath, CLI, 'serve', '--socket', socket, '--memory', memory, '--json', '--readahead', '16']);
  try {
    assert.ok(await serve.waitFor((l) => l.event === 'listening'), 'the server did not start');
    truncateSync(memory, 4 << 20);
    // This client describes (and touches) all 8 MiB: the second half is no longer in the file.
    const greedy = runVmm(socket, original);
    const gone = await serve.waitFor((l) => l.event === 'gone', 20_000);
    greedy.child.kill('SIGKILL'); // it waits on a page nobody can give it
    await greedy.done;
    assert.ok(serve.running, `the server died: ${String(serve.child.signalCode)} ${JSON.stringify(serve.lines.slice(-3))}`);
    assert.ok(gone, `no 'gone' for the client: ${JSON.stringify(serve.lines.slice(-3))}`);
    assert.match(String(gone.reason), /EFAULT|shr|truncat|memory file/i);
    // The next client needs only what is still there, and is served every byte.
    const modest = runVmm(socket, firstHalf);
    const result = await modest.done;
    assert.equal(result.code, 0, result.out);
    assert.deepEqual(JSON.parse(result.out.trim().split('\n').at(-1) ?? '{}'), { bad: 0, touched: 1024 });
    assert.ok(serve.running, 'the server died');
  } finally {
    serve.child.kill('SIGTERM');
    const [code, signal] = await serve.exited;
    assert.equal(signal, null);
    assert.equal(code, 0);
  }
});

test('a refused client is told why before its socket closes, and its control characters never reach the text log', async () => {
  const socket = join(dir, 'refuse.sock');
  const serve = new ServeProcess([process.execPath, CLI, 'serve', '--socket', socket, '--memory', MEMORY]);
  let text = '';
  serve.child.stdout?.removeAllListeners('data');
  serve.child.stdout?.on('data', (d: Buffer) => { text += d.toString('latin1'); });
  try {
    const deadline = Date.now() + 10_000;
    while (!text.includes('listening') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    const client = await connect(socket);
    let answer = '';
    client.on('data', (d: Buffer) => { answer += d.toString(); });
    const closed = once(client, 'close');
    client.write('[{"base_host_virt_addr\x1b[2J\x07\r": 1}]');
    await closed;
    assert.match(answer, /^uffd serve: refused: .+\n$/s, 'the client heard nothing');
    while (!text.includes('refused client') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.match(text, /refused client/);
    assert.doesNotMatch(text, /[\x00-\x09\x0b-\x1f\x7f]/, `control characters in the log: ${JSON.stringify(text)}`);
  } finally {
    serve.child.kill('SIGTERM');
    await serve.exited;
  }
});

test('a payload of a million tiny elements is refused while parsing, at the first value past what maxRegions regions can hold', () => {
  const payload = `[${'1,'.repeat(500_000)}1]`;
  let error: unknown;
  try {
    parseHandshake(payload, { memoryFileSize: 1 << 20, maxRegions: 16, maxBytes: 2 << 20 });
  } catch (err) {
    error = err;
  }
  assert.ok(error instanceof HandshakeError, String(error));
  assert.match(error.message, /more than \d+ values/);
  assert.ok((error.position ?? Infinity) < 64 * 16 * 2 + 16, `parsing went on to position ${String(error.position)} of ${String(payload.length)}`);
});
