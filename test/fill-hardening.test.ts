// The fill path under hostile or careless inputs: a source whose view() is the wrong length, read-ahead that
// runs into the end of a mapping (a region spanning a hole), and huge page pool exhaustion.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { PageServer } from '../src/index.js';
import type { ServerLog } from '../src/index.js';
import { patternByte } from './fixtures/pattern-source.js';
import { ROOT } from './support/support.js';

const PATTERN = new URL('./fixtures/pattern-source.js', import.meta.url);
const FAKE_VMM = join(ROOT, 'test', 'native', 'bin', 'fake-vmm');
const dir = mkdtempSync(join(tmpdir(), 'uffd-fill-'));
process.on('exit', () => { rmSync(dir, { recursive: true, force: true }); });

/** Runs `body` in a child Node (a fail-stop there is SIGBUS, which must not take the test runner with it). */
function child(body: string): { status: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string } {
  const script = `
    import { LazyMemory, moduleSource } from ${JSON.stringify(pathToFileURL(join(ROOT, 'dist', 'src', 'index.js')).href)};
    ${body}
  `;
  return spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 30_000 });
}

for (const [what, viewError] of [['longer', 4096], ['shorter', -4096]] as const) {
  test(`a source view() ${what} than asked is a source error: 'zero' gives zeros and an 'error' event, the rest stays right`, () => {
    const r = child(`
      const source = moduleSource(${JSON.stringify(PATTERN.href)}, { length: 16 * 4096, viewError: ${String(viewError)}, viewAt: 5 * 4096 });
      const lazy = await LazyMemory.open({ source, readahead: 1, onSourceError: 'zero', retries: 0 });
      const errors = [];
      lazy.on('error', (err) => errors.push(err.code + ' page ' + err.page));
      const bytes = new Uint8Array(lazy.buffer);
      const out = [bytes[4 * 4096 + 3], bytes.subarray(5 * 4096, 6 * 4096).every((b) => b === 0), bytes[6 * 4096 + 9]];
      await new Promise((resolve) => setTimeout(resolve, 200));
      const s = lazy.stats();
      process.stdout.write(JSON.stringify({ out, errors, zeroFilled: s.zeroFilled, sourceErrors: s.sourceErrors }));
      await lazy.close();
    `);
    assert.equal(r.signal, null, r.stderr);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), {
      out: [patternByte(4 * 4096 + 3), true, patternByte(6 * 4096 + 9)],
      errors: ['ERR_UFFD_SOURCE page 5'], zeroFilled: 1, sourceErrors: 1,
    });
  });
}

test("a source view() of the wrong length with onSourceError 'poison': SIGBUS at that page only, never its bytes", () => {
  const r = child(`
    const source = moduleSource(${JSON.stringify(PATTERN.href)}, { length: 16 * 4096, viewError: 4096, viewAt: 2 * 4096 });
    const lazy = await LazyMemory.open({ source, readahead: 1, retries: 0 });
    const bytes = new Uint8Array(lazy.buffer);
    process.stdout.write('page1 ' + bytes[4096] + '\\n');
    process.stdout.write('page2 ' + bytes[2 * 4096] + '\\n');
  `);
  assert.ok(r.signal === 'SIGBUS' || r.signal === 'SIGSEGV', `status ${String(r.status)} signal ${String(r.signal)}: ${r.stderr}`);
  assert.equal(r.stdout, `page1 ${String(patternByte(4096))}\n`);
});

test('read-ahead into a hole of a region (an unregistered page) serves the faulting page and keeps the session', { skip: existsSync(FAKE_VMM) ? false : `${FAKE_VMM} is not built` }, async () => {
  // The guest's 4 MiB region is followed by a PROT_NONE page; the handshake claims that page for the region
  // (the memory file has it), so read-ahead at the region's end runs into memory that is not registered
  // (COPY: ENOENT for the whole run).
  const memory = join(dir, 'memory.bin');
  const size = 4 << 20;
  writeFileSync(memory, Uint8Array.from({ length: size + 4096 }, (_, i) => ((i >>> 12) * 7 + i * 13) & 0xff));
  const payload = `[{"base_host_virt_addr":@addr0@,"size":${String(size + 4096)},"offset":0,"page_size":4096,"page_size_kib":4096}]`;
  const socket = join(dir, 'edge.sock');
  const server = await PageServer.listen({ socket, memory, readahead: 16 });
  const logs: ServerLog[] = [];
  server.on('log', (e) => logs.push(e));
  try {
    const vmm = spawn(FAKE_VMM, ['--socket', socket, '--memory', memory, '--timeout', '20000', '--size', String(size), '--random', '--payload', payload], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    vmm.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    vmm.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    const [code] = (await once(vmm, 'exit')) as [number | null];
    assert.equal(code, 0, `${stderr} ${JSON.stringify(logs)}`);
    const out = JSON.parse(stdout.trim().split('\n').at(-1) ?? '{}') as { touched?: number; mismatches?: number };
    assert.equal(out.mismatches, 0);
    assert.equal(out.touched, size / 4096);
    const deadline = Date.now() + 10_000;
    while (!logs.some((e) => e.event === 'gone') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    const gone = logs.find((e) => e.event === 'gone');
    assert.ok(gone?.event === 'gone', JSON.stringify(logs));
    assert.equal(gone.reason, 'the process exited', 'the session was not dropped');
  } finally {
    await server.close();
  }
});
