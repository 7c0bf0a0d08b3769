// The fill path under hostile or careless inputs: a source whose view() is the wrong length, read-ahead that
// runs into the end of a mapping (a region spanning a hole), and huge page pool exhaustion (refused up front
// where the memory is ours, fail-stop where it is a client's).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { hugePageSize } from '../src/system.js';
import { LazyMemory, Mapping, PageServer, UffdError, zeroSource } from '../src/index.js';
import type { ServerLog } from '../src/index.js';
import { patternByte } from './fixtures/pattern-source.js';
import { CLI, ROOT } from './support/support.js';

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

const HUGE = hugePageSize();
const overcommit = Number(readFileSync('/proc/sys/vm/nr_overcommit_hugepages', 'latin1').trim());
const poolSkip = HUGE === 0 ? 'no hugetlb in this kernel' : overcommit !== 0 ? 'vm.nr_overcommit_hugepages is not 0: the pool can grow' : false;
/** More huge pages than the whole pool has: no reservation of them can succeed. */
const beyondPool = (): number => (totalHugePages() + 1) * HUGE;

function totalHugePages(): number {
  return Number(/^HugePages_Total:\s+(\d+)$/m.exec(readFileSync('/proc/meminfo', 'latin1'))?.[1] ?? 0);
}

test('Mapping.anonymous with huge pages refuses up front (ENOMEM) when the pool cannot hold it', { skip: poolSkip }, () => {
  assert.throws(() => Mapping.anonymous(beyondPool(), { hugetlb: true }), (err: unknown) => err instanceof UffdError && err.code === 'ENOMEM' && /huge page pool cannot hold/.test(err.message));
});

test('LazyMemory with huge pages refuses up front (ENOMEM) when the pool cannot hold it', { skip: poolSkip }, async () => {
  await assert.rejects(LazyMemory.open({ source: zeroSource(beyondPool()), hugetlb: true }), (err: unknown) => err instanceof UffdError && err.code === 'ENOMEM');
});

/**
 * A hugetlb cgroup (v1 hierarchy, mounted here if it is not already) that lets its members allocate `pages`
 * huge pages: a pool exhausted for one process without taking huge pages from anyone else on the machine.
 */
function hugetlbCgroup(pages: number): { join(pid: number): void; close(): void } | string {
  const mount = mkdtempSync(join(tmpdir(), 'uffd-hugetlb-cg-'));
  const mounted = spawnSync('mount', ['-t', 'cgroup', '-o', 'hugetlb', 'none', mount], { encoding: 'utf8' });
  if (mounted.status !== 0) {
    rmSync(mount, { recursive: true, force: true });
    return `cannot mount a hugetlb cgroup hierarchy: ${mounted.stderr.trim()}`;
  }
  const group = join(mount, `uffd-test-${String(process.pid)}`);
  mkdirSync(group);
  const limit = join(group, `hugetlb.${String(HUGE >> 20)}MB.limit_in_bytes`);
  writeFileSync(limit, String(pages * HUGE));
  return {
    join: (pid) => { writeFileSync(join(group, 'cgroup.procs'), String(pid)); },
    close: () => {
      for (let tries = 0; tries < 50; tries++) {
        try {
          rmdirSync(group);
          break;
        } catch {
          spawnSync('sleep', ['0.1']); // its last member is still exiting
        }
      }
      spawnSync('umount', [mount]);
      rmSync(mount, { recursive: true, force: true });
    },
  };
}

test('uffd serve on huge pages with the pool exhausted: the guest gets SIGBUS and the client is dropped with the reason, no livelock', { skip: poolSkip || (existsSync(FAKE_VMM) ? false : `${FAKE_VMM} is not built`) }, async (t) => {
  const cgroup = hugetlbCgroup(2);
  if (typeof cgroup === 'string') {
    t.skip(cgroup);
    return;
  }
  const memory = join(dir, 'huge.bin');
  writeFileSync(memory, new Uint8Array(8 * HUGE).fill(0x5a));
  const socket = join(dir, 'huge.sock');
  const server = spawn(process.execPath, [CLI, 'serve', '--socket', socket, '--memory', memory, '--readahead', '1', '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
  try {
    cgroup.join(server.pid ?? 0); // before any client: every huge page it allocates is charged here
    let log = '';
    server.stdout.on('data', (d: Buffer) => { log += d.toString(); });
    const deadline = Date.now() + 10_000;
    while (!log.includes('"listening"') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    const vmm = spawn(FAKE_VMM, ['--socket', socket, '--memory', memory, '--hugetlb', '--timeout', '20000'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    vmm.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    const [code, signal] = (await once(vmm, 'exit')) as [number | null, NodeJS.Signals | null];
    assert.equal(signal, 'SIGBUS', `the guest was not stopped: code ${String(code)} ${stderr}`);
    while (!log.includes('"gone"') && Date.now() < deadline + 10_000) await new Promise((r) => setTimeout(r, 10));
    const gone = log.split('\n').filter((l) => l.includes('"gone"')).map((l) => JSON.parse(l) as { reason: string });
    assert.equal(gone.length, 1, log);
    assert.match(gone[0]?.reason ?? '', /huge page pool is exhausted/);
    assert.equal(server.exitCode, null, 'the server keeps running');
  } finally {
    server.kill('SIGTERM');
    await once(server, 'exit').catch(() => undefined);
    cgroup.close();
  }
});
