// `uffd serve --json --log-file`: every line is one JSON object of the documented schema, and SIGHUP
// reopens the file by name (logrotate moves it away; the next lines start the new one, none are lost).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI, ROOT } from './support/support.js';

const dir = mkdtempSync(join(tmpdir(), 'uffd-log-'));
process.on('exit', () => { rmSync(dir, { recursive: true, force: true }); });
const FAKE_VMM = join(ROOT, 'test', 'native', 'bin', 'fake-vmm');

interface Line { schema: number; time: string; level: string; event: string; [field: string]: unknown }

function lines(path: string): Line[] {
  if (!existsSync(path)) return [];
  const text = readFileSync(path, 'utf8');
  return text.split('\n').filter((l) => l !== '').map((l) => {
    const line = JSON.parse(l) as Line;
    assert.equal(line.schema, 1);
    assert.ok(!Number.isNaN(Date.parse(line.time)) && line.time.endsWith('Z'), `an ISO time: ${line.time}`);
    assert.match(line.level, /^(info|warn|error)$/);
    assert.equal(typeof line.event, 'string');
    return line;
  });
}

async function until(what: string, predicate: () => boolean): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

test('--json lines in a --log-file; SIGHUP after a rename starts the new file', { skip: existsSync(FAKE_VMM) ? false : `${FAKE_VMM} is not built` }, async () => {
  const memory = join(dir, 'memory.bin');
  writeFileSync(memory, new Uint8Array(1 << 20).fill(7));
  const log = join(dir, 'serve.log');
  const socket = join(dir, 'serve.sock');
  const serve = spawn(process.execPath, [CLI, 'serve', '--socket', socket, '--memory', memory, '--json', '--log-file', log], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  serve.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
  serve.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  try {
    await until('listening', () => lines(log).some((l) => l.event === 'listening'));
    const rotated = `${log}.1`;
    renameSync(log, rotated);
    serve.kill('SIGHUP');
    await until('the new file', () => lines(log).some((l) => l.event === 'log reopened'));
    const vmm = spawn(FAKE_VMM, ['--socket', socket, '--memory', memory, '--timeout', '60000'], { stdio: 'ignore' });
    const [code] = (await once(vmm, 'close')) as [number | null];
    assert.equal(code, 0);
    await until('the client gone', () => lines(log).some((l) => l.event === 'gone'));
    assert.deepEqual(lines(rotated).map((l) => l.event), ['listening']);
    assert.deepEqual(lines(log).map((l) => l.event), ['log reopened', 'client', 'gone']);
    const gone = lines(log).find((l) => l.event === 'gone');
    assert.equal((gone?.summary as { pagesCopied: number }).pagesCopied, 256);
  } finally {
    serve.kill('SIGTERM');
    const [code] = (await once(serve, 'close')) as [number | null];
    assert.equal(code, 0, stderr);
  }
  assert.equal(stdout, '', 'nothing on stdout with --log-file');
  assert.equal(lines(log).at(-1)?.event, 'closed');
});
