// npm run bench:serve: a fake VMM (test/native/fake-vmm.c: Firecracker's restore
// handshake byte for byte, 1.12 shape) touches every 4 KiB page of a memory file and verifies each one, served
//   - by the C reference page server (bench/c/page-server.c): UFFDIO_COPY from a read-only mmap of the file,
//     the same read-ahead window, DONTWAKE runs and one WAKE;
//   - by `uffd serve` (node dist/src/cli/main.js serve), the same read-ahead;
//   - and, for scale, by nobody: the fake VMM maps the file itself (--no-uffd), the kernel's page-cache faults.
//   - and the copy limit: bench/c/copy-limit.c copies the whole file with UFFDIO_COPY in large chunks into
//     fresh registered memory, no faults (what no server can beat on this machine, measured in the same run).
// Sequential and random page order, 1 and 4 VMM threads. Each run is its own processes; the sides run
// interleaved (C, Node, mmap, copy, C, Node...), first all pinned with `taskset -c 0` (server and VMM on one
// CPU), then all unpinned; one untimed round comes first; the median of the runs is reported. Pinned runs are
// judged (target: Node at least 1.0x the C server's MiB/s; on 2 MiB pages at least 0.8x the copy limit);
// unpinned ones are reported only. Never a pass/fail gate: exit 0 either way, unless a page was wrong.
//
// Knobs: BENCH_SERVE_MIB (memory file size, default 1024), BENCH_RUNS (runs per side and row, default 5),
// BENCH_SERVE_READAHEAD (pages, a comma list, default '16'), BENCH_SERVE_THREADS (VMM threads, a comma list,
// default '1,4'), BENCH_SERVE_HUGETLB ('1': 2 MiB guest pages, the read-ahead then counts 2 MiB pages),
// BENCH_SERVE_COPY_CHUNK (bytes per copy of the copy limit, default 2 MiB), BENCH_SERVE_POPULATE ('0': the C
// server maps the file without MAP_POPULATE; default '1', as Firecracker's example handler and uffd serve do).
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { closeSync, existsSync, fsyncSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { loadavg, release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { envCount } from './env.js';

type Side = 'c' | 'node' | 'mmap' | 'copy';
type Placement = 'pinned' | 'unpinned';
type Order = 'sequential' | 'random';

interface Row { order: Order; threads: number }

interface VmmResult {
  mibps: number;
  pages: number;
  touched: number;
  verified: number;
  mismatches: number;
  allowedCpus: string;
}

interface RunResult { vmm: VmmResult; faults: number | undefined }

const TARGET = 1.0;
/** 2 MiB pages: the server against the copy limit. */
const HUGE_TARGET = 0.8;
const root = fileURLToPath(new URL('../../', import.meta.url)); // this file runs as dist/bench/serve.js
const binDir = `${root}bench/bin`;
const cServer = `${binDir}/page-server`;
const fakeVmm = `${binDir}/fake-vmm`;
const copyLimit = `${binDir}/copy-limit`;
const cli = `${root}dist/src/cli/main.js`;


function envReadahead(): number[] {
  const raw = process.env.BENCH_SERVE_READAHEAD ?? '';
  const list = (raw === '' ? '16' : raw).split(',').map((s) => Number(s.trim()));
  if (list.some((n) => !Number.isSafeInteger(n) || n < 1 || n > 65536)) {
    throw new RangeError(`BENCH_SERVE_READAHEAD must list page counts in [1, 65536], got '${raw}'`);
  }
  return list;
}

const mib = envCount('BENCH_SERVE_MIB', 1024);
const runs = envCount('BENCH_RUNS', 5);
const readaheads = envReadahead();
const populate = process.env.BENCH_SERVE_POPULATE !== '0';
const hugetlb = process.env.BENCH_SERVE_HUGETLB === '1';
const copyChunk = envCount('BENCH_SERVE_COPY_CHUNK', 2 << 20);
const threadCounts = (process.env.BENCH_SERVE_THREADS ?? '1,4').split(',').map((t) => {
  const n = Number(t.trim());
  if (!Number.isSafeInteger(n) || n < 1 || n > 64) throw new RangeError(`BENCH_SERVE_THREADS must list thread counts in [1, 64], got '${t}'`);
  return n;
});
const bytes = mib * 1024 * 1024;
const rows: Row[] = (['sequential', 'random'] as const).flatMap((order) => threadCounts.map((threads) => ({ order, threads })));
const placements: Placement[] = ['pinned', 'unpinned'];

function buildC(): void {
  mkdirSync(binDir, { recursive: true });
  const flags = ['-O2', '-Wall', '-Wextra', '-Werror', '-pthread'];
  execFileSync('gcc', [...flags, '-o', cServer, `${root}bench/c/page-server.c`], { stdio: 'inherit' });
  execFileSync('gcc', [...flags, '-o', fakeVmm, `${root}test/native/fake-vmm.c`], { stdio: 'inherit' });
  execFileSync('gcc', [...flags, '-o', copyLimit, `${root}bench/c/copy-limit.c`], { stdio: 'inherit' });
}

function requireTaskset(): void {
  try {
    execFileSync('taskset', ['-c', '0', 'true'], { stdio: 'ignore' });
  } catch {
    throw new Error('taskset (util-linux) is needed for the pinned runs, and CPU 0 must be usable');
  }
}

/** Whether this checkout's CLI has the `serve` command yet (its usage text lists it). */
function nodeServerAvailable(): boolean {
  if (!existsSync(cli)) return false;
  const r = spawnSync(process.execPath, [cli, '--help'], { encoding: 'utf8' });
  return r.status === 0 && /^\s+serve\s/m.test(r.stdout);
}

/** A deterministic pattern, different in every 4-byte word and never zero: a misplaced or zero page shows. */
function createFile(path: string): void {
  const chunk = new Uint32Array((8 << 20) / 4);
  const fd = openSync(path, 'w');
  try {
    for (let offset = 0; offset < bytes; offset += chunk.byteLength) {
      const first = offset / 4;
      const high = Math.imul(Math.floor(first / 2 ** 32), 0x9e3779b1);
      for (let j = 0; j < chunk.length; j++) {
        let x = ((first + j + 1) >>> 0) ^ high;
        x = Math.imul(x ^ (x >>> 16), 0x7feb352d);
        x = Math.imul(x ^ (x >>> 15), 0x846ca68b);
        chunk[j] = (x ^ (x >>> 16)) | 1;
      }
      writeSync(fd, chunk.subarray(0, Math.min(chunk.byteLength, bytes - offset) / 4));
    }
    fsyncSync(fd); // writeback stays out of the runs
  } finally {
    closeSync(fd);
  }
}

// ---- processes ----

interface Started { child: ChildProcess; out: string[]; err: string[]; exited: Promise<void> }

const live = new Set<ChildProcess>();

function start(argv: string[]): Started {
  const [file = '', ...args] = argv;
  const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(child);
  const out: string[] = [], err: string[] = [];
  child.stdout?.setEncoding('utf8').on('data', (s: string) => out.push(s));
  child.stderr?.setEncoding('utf8').on('data', (s: string) => err.push(s));
  const exited = new Promise<void>((resolve) => {
    child.once('close', () => {
      live.delete(child);
      resolve();
    });
  });
  return { child, out, err, exited };
}

async function exitWithin(p: Started, ms: number): Promise<boolean> {
  if (p.child.exitCode !== null || p.child.signalCode !== null) return true;
  return Promise.race([p.exited.then(() => true), sleep(ms).then(() => false)]);
}

async function stop(p: Started): Promise<void> {
  if (await exitWithin(p, 0)) return;
  p.child.kill('SIGTERM');
  if (await exitWithin(p, 10_000)) return;
  p.child.kill('SIGKILL');
  await p.exited;
}

async function waitForSocket(path: string, server: Started): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (!existsSync(path)) {
    if (server.child.exitCode !== null || server.child.signalCode !== null) {
      throw new Error(`the server exited before listening: ${server.err.join('').trim()}`);
    }
    if (Date.now() > deadline) throw new Error(`the server did not create ${path} within 60 s`);
    await sleep(5);
  }
}

function lastJson(lines: string, test: (o: Record<string, unknown>) => boolean): Record<string, unknown> | undefined {
  for (const line of lines.trim().split('\n').reverse()) {
    if (!line.startsWith('{')) continue;
    try {
      const o = JSON.parse(line) as Record<string, unknown>;
      if (test(o)) return o;
    } catch {
      // not ours
    }
  }
  return undefined;
}

function parseVmm(p: Started, what: string): VmmResult {
  const o = lastJson(p.out.join(''), (x) => x.tool === 'fake-vmm');
  const err = p.err.join('').trim();
  if (o === undefined || p.child.exitCode !== 0) {
    throw new Error(`${what}: the fake VMM failed (exit ${String(p.child.exitCode ?? p.child.signalCode)}): ${err}`);
  }
  const r = o as unknown as VmmResult;
  // A wrong page would make the timing meaningless.
  if (r.mismatches !== 0 || r.verified !== r.pages || r.touched !== r.pages) {
    throw new Error(`${what}: ${String(r.mismatches)} wrong pages, ${String(r.verified)} of ${String(r.pages)} verified: ${err}`);
  }
  return r;
}

let socketCount = 0;

async function runOnce(dir: string, memory: string, side: Side, placement: Placement, row: Row, readahead: number): Promise<RunResult> {
  const pin = placement === 'pinned' ? ['taskset', '-c', '0'] : [];
  const what = `${side} ${placement} ${row.order} x${String(row.threads)} readahead ${String(readahead)}`;
  const vmmArgs = ['--memory', memory, '--threads', String(row.threads), ...(row.order === 'random' ? ['--random'] : []), '--timeout', '600000'];
  if (side === 'copy') {
    const copy = start([...pin, copyLimit, '--memory', memory, '--chunk', String(copyChunk), ...(hugetlb ? ['--hugetlb'] : [])]);
    await copy.exited;
    const o = lastJson(copy.out.join(''), (x) => x.tool === 'copy-limit');
    if (o === undefined || copy.child.exitCode !== 0) throw new Error(`${what}: copy-limit failed: ${copy.err.join('').trim()}`);
    const pages = bytes / 4096;
    return { vmm: { mibps: Number(o.mibps), pages, touched: pages, verified: pages, mismatches: 0, allowedCpus: String(o.allowedCpus) }, faults: undefined };
  }
  if (side !== 'mmap' && hugetlb) vmmArgs.push('--hugetlb');
  if (side === 'mmap') {
    const vmm = start([...pin, fakeVmm, '--no-uffd', ...vmmArgs]);
    await vmm.exited;
    return { vmm: parseVmm(vmm, what), faults: undefined };
  }
  const socket = join(dir, `s${String(++socketCount)}.sock`);
  const serverArgv = side === 'c'
    ? [cServer, '--socket', socket, '--memory', memory, '--readahead', String(readahead), ...(populate ? [] : ['--no-populate'])]
    : [process.execPath, cli, 'serve', '--socket', socket, '--memory', memory, '--readahead', String(readahead), '--json'];
  const server = start([...pin, ...serverArgv]);
  try {
    await waitForSocket(socket, server);
    const vmm = start([...pin, fakeVmm, '--socket', socket, ...vmmArgs]);
    await vmm.exited;
    const result = parseVmm(vmm, what);
    // The C server exits when its client does; uffd serve logs the client's summary, then waits for SIGTERM.
    const summary = (): Record<string, unknown> | undefined => side === 'c'
      ? lastJson(server.out.join(''), (o) => o.side === 'c')
      : lastJson(server.out.join(''), (o) => o.event === 'gone');
    const deadline = Date.now() + 5000;
    while (summary() === undefined && Date.now() < deadline && !(await exitWithin(server, 0))) await sleep(10);
    const s = summary();
    const faults = side === 'c' ? s?.faults : (s?.summary as Record<string, unknown> | undefined)?.faults;
    return { vmm: result, faults: typeof faults === 'number' ? faults : undefined };
  } finally {
    await stop(server);
  }
}

// ---- report ----

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid] ?? NaN : ((sorted[mid - 1] ?? NaN) + (sorted[mid] ?? NaN)) / 2;
}

function modelName(): string {
  return /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'latin1'))?.[1] ?? 'unknown';
}

function cells(values: string[]): string {
  const widths = [16, 11, 8, 14, 9, 11, 8, 11, 10, 12, 11, 10];
  return values.map((c, i) => (i < 4 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join('').trimEnd();
}

const key = (ra: number, placement: Placement, row: Row, side: Side): string => `${String(ra)}/${placement}/${row.order}/${String(row.threads)}/${side}`;

async function main(): Promise<void> {
  buildC();
  requireTaskset();
  const withNode = nodeServerAvailable();
  const sides: Side[] = withNode ? ['c', 'node', 'mmap', 'copy'] : ['c', 'mmap', 'copy'];
  if (!withNode) console.error('uffd serve not available yet: running the C server and kernel mmap only');

  const dir = mkdtempSync(join(tmpdir(), 'uffd-bench-serve-'));
  const cleanup = (): void => {
    for (const child of live) child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  };
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      cleanup();
      process.exit(130);
    });
  }
  const results = new Map<string, RunResult[]>();
  const loadBefore = loadavg()[0] ?? NaN;
  try {
    const memory = join(dir, 'memory.bin');
    console.error(`writing ${String(mib)} MiB to ${memory}`);
    createFile(memory);
    for (const ra of readaheads) {
      for (const placement of placements) {
        for (const side of sides) await runOnce(dir, memory, side, placement, rows[0] ?? { order: 'sequential', threads: 1 }, ra); // untimed round
        for (const row of rows) {
          for (let run = 1; run <= runs; run++) {
            const line: string[] = [];
            for (const side of sides) {
              const r = await runOnce(dir, memory, side, placement, row, ra);
              const k = key(ra, placement, row, side);
              results.set(k, [...(results.get(k) ?? []), r]);
              line.push(`${side} ${r.vmm.mibps.toFixed(0)}`);
            }
            console.error(`readahead ${String(ra)} ${placement} ${row.order} x${String(row.threads)} run ${String(run)}/${String(runs)}: ${line.join(', ')} MiB/s`);
          }
        }
      }
    }
  } finally {
    cleanup();
  }

  const fixed = (n: number | undefined): string => (n === undefined || Number.isNaN(n) ? '-' : n.toFixed(0));
  const out = [
    '',
    'Page server: a fake VMM (test/native/fake-vmm.c) restores like Firecracker 1.12 (JSON regions + the uffd over a',
    'Unix socket), touches every 4 KiB page of the memory file and verifies every byte of it. Servers: the C reference',
    `(bench/c/page-server.c, UFFDIO_COPY from a read-only mmap of the file${populate ? ' with MAP_POPULATE' : ''}) and uffd serve (Node),`,
    'the same read-ahead window (pages from the faulting one; C: DONTWAKE runs, one WAKE; Node: one COPY with wake when',
    'one run covers the window); mmap: no server, the VMM maps the file itself (kernel page-cache faults); copy limit:',
    `UFFDIO_COPY of the whole file in ${String(copyChunk >> 10)} KiB chunks into fresh registered memory, no faults.`,
    `guest pages: ${hugetlb ? '2 MiB (hugetlb; the read-ahead counts 2 MiB pages)' : '4 KiB'}`,
    `machine: ${modelName()}, nproc ${execFileSync('nproc', { encoding: 'utf8' }).trim()}, kernel ${release()}, node ${process.version}`,
    `load average (1 min): ${loadBefore.toFixed(2)} before the runs, ${(loadavg()[0] ?? NaN).toFixed(2)} after`,
    `memory file ${String(mib)} MiB in ${tmpdir()}; ${String(runs)} runs per side and row after one untimed round, interleaved; median of the runs`,
    'MiB/s: pages touched / time from the first touch to the last thread done (verification untimed); faults: served',
    'by each server per run (median).',
    withNode ? '' : '\nuffd serve not available yet: the Node column is empty.',
  ];
  const verdicts: string[] = [];
  for (const ra of readaheads) {
    out.push('', `read-ahead ${String(ra)} pages`, cells(['placement', 'order', 'threads', 'CPUs allowed', 'C MiB/s', 'Node MiB/s', 'Node/C', 'mmap MiB/s', 'C faults', 'Node faults', 'copy MiB/s', 'Node/copy']));
    for (const placement of placements) {
      for (const row of rows) {
        const get = (side: Side): RunResult[] => results.get(key(ra, placement, row, side)) ?? [];
        const mibps = (side: Side): number => median(get(side).map((r) => r.vmm.mibps));
        const faults = (side: Side): number | undefined => {
          const f = get(side).map((r) => r.faults).filter((n): n is number => n !== undefined);
          return f.length === 0 ? undefined : median(f);
        };
        const cpus = [...new Set(sides.flatMap((s) => get(s).map((r) => r.vmm.allowedCpus)))].join(' ');
        const c = mibps('c');
        const node = withNode ? mibps('node') : NaN;
        const ratio = withNode ? `${(node / c).toFixed(2)}x` : 'n/a';
        out.push(cells([
          row === rows[0] ? (placement === 'pinned' ? 'pinned (cpu 0)' : 'unpinned') : '', row.order, String(row.threads), cpus,
          fixed(c), withNode ? fixed(node) : 'n/a', ratio, fixed(mibps('mmap')), fixed(faults('c')), withNode ? fixed(faults('node')) : 'n/a',
          fixed(mibps('copy')), withNode ? `${(node / mibps('copy')).toFixed(2)}x` : 'n/a',
        ]));
        if (placement === 'pinned' && withNode) {
          const judged = hugetlb ? node / mibps('copy') : node / c;
          const target = hugetlb ? HUGE_TARGET : TARGET;
          verdicts.push(`${row.order} x${String(row.threads)} ra ${String(ra)}: ${hugetlb ? `${judged.toFixed(2)}x of the copy limit` : ratio}${judged >= target ? '' : ' (below)'}`);
        }
      }
    }
  }
  out.push('');
  if (withNode) {
    const met = verdicts.every((v) => !v.endsWith('(below)'));
    const goal = hugetlb ? `${String(HUGE_TARGET)}x the copy limit` : `${String(TARGET)}x the C server's MiB/s`;
    out.push(`Target: Node at least ${goal} pinned, every row: ${met ? 'MET' : 'NOT MET'} (${verdicts.join('; ')}).`);
  } else {
    out.push('Target: not judged, uffd serve not available yet.');
  }
  out.push('Unpinned figures are reported, not judged: there a cross-CPU wake-up dominates.', '', 'MiB/s of each run, in run order:');
  for (const ra of readaheads) {
    for (const placement of placements) {
      for (const row of rows) {
        for (const side of sides) {
          const list = (results.get(key(ra, placement, row, side)) ?? []).map((r) => r.vmm.mibps.toFixed(0)).join(' ');
          out.push(`  ra ${String(ra).padEnd(4)} ${placement.padEnd(9)} ${row.order.padEnd(10)} x${String(row.threads)} ${side.padEnd(5)} ${list}`);
        }
      }
    }
  }
  console.log(out.join('\n'));
}

await main();
