// npm run bench:lazy: a file read through LazyMemory (bench/js/lazy.ts) next to
//   - a C program with the same handler logic, the same source (a read-only mmap of the file) and the same
//     read-ahead (bench/c/lazy.c handler);
//   - the kernel's own mmap of the file, touched the same way (bench/c/lazy.c mmap, and Node's Mapping.file);
//   - fs.readFileSync of the file, then the same touch loop.
// Every side reads one 8-byte word per 4 KiB page, in sequential and in random (fixed-seed shuffle) page
// order, checks it against the file's known pattern and prints an order-dependent checksum, which the runner
// compares with the one it computes itself. Each run is its own process; the cases run interleaved (every case
// once, then again), first all pinned with `taskset -c 0`, then all unpinned; the median of the runs is
// reported, and JS/C as the median of the ratios of runs made back to back. Pinned runs are judged (target:
// LazyMemory at least 0.8x the C handler's MiB/s); unpinned ones are reported only. Never a pass/fail gate:
// exit 0 either way.
//
// The first eighth of the pages in touch order (BENCH_LAZY_WARMUP_MIB) is touched untimed in every run: the
// JIT, the resolver's first faults. The whole run from the first touch is reported too ('first');
// LazyMemory.open() is in neither.
// The page cache is checked before every run (fincore) and filled again when it lost part of the file.
//
// Knobs: BENCH_LAZY_MIB (file size, default 1024, at most 2047 so that readFileSync can read it),
// BENCH_RUNS (pinned runs per case, default 5), BENCH_UNPINNED_RUNS (default 3: with one fault per page, an
// unpinned run pays a cross-CPU round trip per fault and takes ~10 s), BENCH_LAZY_READAHEAD (default
// '1,16,auto'), BENCH_LAZY_WARMUP_MIB (default an eighth of the file).
import { execFileSync } from 'node:child_process';
import { closeSync, fsyncSync, mkdirSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, writeSync } from 'node:fs';
import { availableParallelism, loadavg, release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Order, SideResult } from './js/lazy-common.js';
import { expectedChecksum, fillPattern, PAGE, pageOrder } from './js/lazy-common.js';
import { envCount } from './env.js';

type Placement = 'pinned' | 'unpinned';

interface Case {
  key: string;
  label: string;
  side: 'js' | 'c';
  mode: SideResult['mode'];
  readahead: string;
  /** LazyMemory's file source: fileSource(path) as a user writes it, or with another access. */
  access?: Access;
}

type Access = 'default' | 'pread' | 'populate';
const TARGET = 1.0;
const root = fileURLToPath(new URL('../../', import.meta.url)); // this file runs as dist/bench/lazy.js
const cSource = `${root}bench/c/lazy.c`;
const cBinary = `${root}bench/bin/lazy`;
const jsSide = fileURLToPath(new URL('./js/lazy.js', import.meta.url));


function envReadahead(): string[] {
  const raw = process.env.BENCH_LAZY_READAHEAD ?? '';
  const list = (raw === '' ? '1,16,auto' : raw).split(',').map((s) => s.trim());
  for (const r of list) {
    const n = Number(r);
    if (r !== 'auto' && !(Number.isSafeInteger(n) && n >= 1 && n <= 65536)) {
      throw new RangeError(`BENCH_LAZY_READAHEAD must list page counts in [1, 65536] or 'auto', got '${raw}'`);
    }
  }
  return list;
}

function envAccess(): Access[] {
  const raw = process.env.BENCH_LAZY_ACCESS ?? '';
  const list = (raw === '' ? 'default,pread' : raw).split(',').map((s) => s.trim());
  if (!list.includes('default') || list.some((a) => a !== 'default' && a !== 'pread' && a !== 'populate')) {
    throw new RangeError(`BENCH_LAZY_ACCESS must list default (always) and any of pread, populate, got '${raw}'`);
  }
  return list as Access[];
}

// readFileSync refuses files of 2 GiB and more (kIoMaxLength).
const mib = envCount('BENCH_LAZY_MIB', 1024, 2047);
const runsFor: Record<Placement, number> = { pinned: envCount('BENCH_RUNS', 5), unpinned: envCount('BENCH_UNPINNED_RUNS', 3) };
const readaheads = envReadahead();
const accesses = envAccess();
const bytes = mib * 1024 * 1024;
const pages = bytes / PAGE;
const warmupMib = process.env.BENCH_LAZY_WARMUP_MIB === '0' ? 0 : envCount('BENCH_LAZY_WARMUP_MIB', Math.floor(mib / 8), mib - 1);
const warmupPages = warmupMib * 256;
const orders: Order[] = ['seq', 'rand'];
const placements: Placement[] = ['pinned', 'unpinned'];

const cases: Case[] = [
  ...readaheads.flatMap((r): Case[] => [
    { key: `c-${r}`, label: `C handler   readahead ${r}`, side: 'c', mode: 'handler', readahead: r },
    ...accesses.map((access): Case => ({
      key: access === 'default' ? `js-${r}` : `js-${access}-${r}`,
      label: access === 'default' ? `LazyMemory  readahead ${r}` : `  ${access.padEnd(10)}readahead ${r}`,
      side: 'js', mode: 'lazy', readahead: r, access,
    })),
  ]),
  { key: 'mmap-c', label: 'kernel mmap (C)', side: 'c', mode: 'mmap', readahead: '-' },
  { key: 'mmap-js', label: 'kernel mmap (Mapping.file)', side: 'js', mode: 'mmap', readahead: '-' },
  { key: 'readfile', label: 'fs.readFileSync', side: 'js', mode: 'readfile', readahead: '-' },
];

function buildC(): void {
  mkdirSync(`${root}bench/bin`, { recursive: true });
  execFileSync('gcc', ['-O2', '-Wall', '-Wextra', '-Werror', '-pthread', '-o', cBinary, cSource], { stdio: 'inherit' });
}

function requireTaskset(): void {
  try {
    execFileSync('taskset', ['-c', '0', 'true'], { stdio: 'ignore' });
  } catch {
    throw new Error('taskset (util-linux) is needed for the pinned runs, and CPU 0 must be usable');
  }
}

/** Writes the file with the pattern every side checks, and makes it durable so writeback stays out of the runs. */
function createFile(path: string): void {
  const chunk = new Uint32Array((8 << 20) / 4);
  const fd = openSync(path, 'w');
  try {
    for (let offset = 0; offset < bytes; offset += chunk.byteLength) {
      const part = chunk.subarray(0, Math.min(chunk.byteLength, bytes - offset) / 4);
      fillPattern(part, offset / 8);
      writeSync(fd, part);
    }
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Reads the whole file (into the page cache); returns the time it took, ms. */
function readWhole(path: string): number {
  const start = process.hrtime.bigint();
  const buffer = Buffer.allocUnsafe(8 << 20);
  const fd = openSync(path, 'r');
  try {
    let offset = 0;
    for (let n = 1; n > 0; offset += n) n = readSync(fd, buffer, 0, buffer.length, offset);
  } finally {
    closeSync(fd);
  }
  return Number(process.hrtime.bigint() - start) / 1e6;
}

/** Bytes of the file in the page cache (fincore, util-linux), or undefined without fincore. */
function residentBytes(path: string): number | undefined {
  try {
    return Number(execFileSync('fincore', ['--bytes', '--noheadings', '--output', 'RES', path], { encoding: 'utf8' }).trim());
  } catch {
    return undefined;
  }
}

function parseResult(stdout: string, c: Case, order: Order, checksums: Map<Order, number>): SideResult {
  const line = stdout.trim().split('\n').at(-1) ?? '';
  const r = JSON.parse(line) as Partial<SideResult>;
  const numbers = [r.bytes, r.warmupPages, r.warmupNs, r.touchNs, r.timedBytes, r.cpuNs, r.checksum, r.mismatches, r.faults, r.pagesCopied];
  if (r.side !== c.side || r.mode !== c.mode || r.order !== order || numbers.some((n) => typeof n !== 'number') || typeof r.allowedCpus !== 'string') {
    throw new Error(`unexpected output from ${c.label}: ${line}`);
  }
  const result = r as SideResult;
  // A wrong page or a wrong order would make the timing meaningless.
  if (result.mismatches !== 0) throw new Error(`${c.label} (${order}): ${String(result.mismatches)} pages did not hold the file's words`);
  if (result.checksum !== checksums.get(order)) throw new Error(`${c.label} (${order}): checksum ${String(result.checksum)}, expected ${String(checksums.get(order))}`);
  if (result.bytes !== bytes) throw new Error(`${c.label}: read ${String(result.bytes)} bytes, expected ${String(bytes)}`);
  if ((c.mode === 'lazy' || c.mode === 'handler') && result.pagesCopied !== pages) {
    throw new Error(`${c.label} (${order}): ${String(result.pagesCopied)} pages copied, expected each of the ${String(pages)} pages once`);
  }
  return result;
}

function runOnce(c: Case, order: Order, placement: Placement, path: string, checksums: Map<Order, number>): SideResult {
  const command = c.side === 'c' ? [cBinary] : [process.execPath, jsSide];
  const argv = [...command, c.mode, path, order, String(warmupPages), ...(c.readahead === '-' ? [] : [c.readahead]), ...(c.access === undefined ? [] : [c.access])];
  const [file = '', ...args] = placement === 'pinned' ? ['taskset', '-c', '0', ...argv] : argv;
  // Generous: 1 ms per page is 20x the slowest cross-CPU fault round trip; a hang (a lost wake-up) gets killed.
  const timeout = 60_000 + pages;
  const stdout = execFileSync(file, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], timeout, maxBuffer: 1 << 20 });
  return parseResult(stdout, c, order, checksums);
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid] ?? NaN : ((sorted[mid - 1] ?? NaN) + (sorted[mid] ?? NaN)) / 2;
}

const MIB = 1024 * 1024;
/** The judged figure: the timed part (after the warm-up). */
const mibPerSecond = (r: SideResult): number => r.timedBytes / MIB / (r.touchNs / 1e9);
/** The timed part per second of CPU time of the whole process (all threads): blind to other load on the CPU. */
const mibPerCpuSecond = (r: SideResult): number => r.timedBytes / MIB / (r.cpuNs / 1e9);
/** The whole file from the first touch, warm-up included (LazyMemory.open() is not). */
const firstTouch = (r: SideResult): number => r.bytes / MIB / ((r.warmupNs + r.touchNs) / 1e9);

function modelName(): string {
  return /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'latin1'))?.[1] ?? 'unknown';
}

function row(cells: string[]): string {
  const widths = [15, 6, 27, 6, 8, 8, 8, 9, 8, 10];
  return cells.map((c, i) => (i < 4 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join('').trimEnd();
}

// ---- the run ----

buildC();
requireTaskset();
const dir = mkdtempSync(join(tmpdir(), 'uffd-bench-lazy-'));
const path = join(dir, 'data.bin');
process.on('exit', () => { rmSync(dir, { recursive: true, force: true }); });
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => { process.exit(130); });

console.error(`writing a ${String(mib)} MiB file in ${dir}...`);
createFile(path);
const warmMs = readWhole(path);
const hasFincore = residentBytes(path) !== undefined;
console.error(`page cache warmed: the file read once in ${warmMs.toFixed(0)} ms`);
const checksums = new Map<Order, number>(orders.map((o) => [o, expectedChecksum(pageOrder(pages, o))]));

// Other work on the machine shows up in every figure: the header gives the load before, during and after.
const loadBefore = loadavg()[0] ?? NaN;
const loads: number[] = [];
let rewarms = 0;
const results = new Map<string, SideResult[]>(); // placement/order/case key -> runs
const keyOf = (p: Placement, o: Order, key: string): string => `${p}/${o}/${key}`;

// One untimed round first: it gets past the first touch of fresh guest memory and checks every side once.
const rounds: { placement: Placement; run: number }[] = [
  { placement: 'pinned', run: 0 },
  ...placements.flatMap((placement) => Array.from({ length: runsFor[placement] }, (_, i) => ({ placement, run: i + 1 }))),
];
for (const { placement, run } of rounds) {
  const started = process.hrtime.bigint();
  const figures: string[] = [];
  for (const order of orders) {
    for (const c of cases) {
      // Page cache pages nobody maps can be reclaimed between runs (this VM's host pages out cold file pages).
      if (hasFincore && residentBytes(path) !== bytes) {
        readWhole(path);
        rewarms++;
      }
      const r = runOnce(c, order, placement, path, checksums);
      figures.push(`${c.key} ${mibPerSecond(r).toFixed(0)}`);
      if (run === 0) continue;
      const key = keyOf(placement, order, c.key);
      results.set(key, [...(results.get(key) ?? []), r]);
    }
  }
  loads.push(loadavg()[0] ?? NaN);
  const seconds = (Number(process.hrtime.bigint() - started) / 1e9).toFixed(1);
  const name = run === 0 ? 'warm-up round' : `${placement} run ${String(run)}/${String(runsFor[placement])}`;
  console.error(`${name} (${seconds} s), MiB/s seq then rand: ${figures.join(', ')}`);
}

const cached = [...results.values()].flat().flatMap((r) => (r.cachedPages === undefined ? [] : [r.cachedPages]));
const fixed0 = (n: number): string => n.toFixed(0);
const lines = [
  '',
  `Lazy file memory: a ${String(mib)} MiB file, one 8-byte word read (and checked against the file's pattern) per 4 KiB page,`,
  'in sequential and in random page order (a fixed-seed shuffle, the same for every side).',
  '  LazyMemory   LazyMemory.open({ source: fileSource(file), readahead }), touched from the main thread; the default',
  '               source maps the file; the rows below it read with pread (access: \'pread\') or map it populated',
  '  C handler    a pthread with the same logic as the resolver (poll + read; UFFDIO_COPY DONTWAKE of the missing runs',
  '               of the read-ahead window from a read-only mmap of the file, EEXIST skipped; one UFFDIO_WAKE), same read-ahead',
  '  kernel mmap  a read-only private mmap of the file (C, and Node\'s Mapping.file); fs.readFileSync: read + touch, both timed',
  `machine: ${modelName()}, nproc ${execFileSync('nproc', { encoding: 'utf8' }).trim()}, kernel ${release()}, node ${process.version}`,
  `load average (1 min): ${loadBefore.toFixed(2)} before the runs, ${Math.min(...loads).toFixed(2)}-${Math.max(...loads).toFixed(2)} during, ${(loadavg()[0] ?? NaN).toFixed(2)} after (2 vCPUs: above ~1, other work shared the CPUs)`,
  `page cache: warmed first (the file read once, ${warmMs.toFixed(0)} ms), ${hasFincore ? `checked before every run with fincore and read again ${String(rewarms)} times` : 'not checked between runs (no fincore)'};`,
  `  the C runs found ${(100 * Math.min(...cached) / pages).toFixed(1)}% or more of the file cached (mincore)`,
  `runs: ${String(runsFor.pinned)} pinned and ${String(runsFor.unpinned)} unpinned per case after one untimed warm-up round; each run its own process;`,
  '  the cases interleaved (each case once, then again); every figure is the median of the runs.',
  `MiB/s: the pages after a ${String(warmupMib)} MiB untimed warm-up (the first pages in touch order), over the touch loop's time.`,
  'first: MiB/s over the whole file from the first touch (warm-up included; LazyMemory.open() is not).',
  'CPU ms: CPU time of the whole process, all threads, over the timed part. faults: uffd faults served in the timed',
  '  part (LazyMemory, C handler), minor page faults in it (mmap, readFileSync).',
  'JS/C: LazyMemory MiB/s over the C handler\'s, per pair of runs (back to back in one round), median of the pairs;',
  '  CPU JS/C: the same per CPU-second (what the two cost, whatever else runs on the CPU).',
  '',
  row(['placement', 'order', 'case', 'CPUs', 'MiB/s', 'first', 'CPU ms', 'faults', 'JS/C', 'CPU JS/C']),
];
const verdicts: string[] = [];
const perRun: string[] = [];
for (const placement of placements) {
  let first = true;
  for (const order of orders) {
    let firstOfOrder = true;
    for (const c of cases) {
      const rs = results.get(keyOf(placement, order, c.key)) ?? [];
      const speed = median(rs.map(mibPerSecond));
      let ratio = '', cpuRatio = '';
      if (c.mode === 'lazy') {
        // Paired: run i of each side ran back to back in the same round, under the same load; the median of the
        // pairs' ratios is steadier than the ratio of the medians on a busy machine.
        const cRuns = results.get(keyOf(placement, order, `c-${c.readahead}`)) ?? [];
        const r = median(rs.map((js, i) => mibPerSecond(js) / mibPerSecond(cRuns[i] ?? js)));
        const rc = median(rs.map((js, i) => mibPerCpuSecond(js) / mibPerCpuSecond(cRuns[i] ?? js)));
        ratio = `${r.toFixed(2)}x`;
        cpuRatio = `${rc.toFixed(2)}x`;
        if (placement === 'pinned' && c.access === 'default') verdicts.push(`${order} readahead ${c.readahead}: ${ratio}${r >= TARGET ? '' : ' (below)'}`);
      }
      lines.push(row([
        first ? (placement === 'pinned' ? 'pinned (cpu 0)' : 'unpinned') : '', firstOfOrder ? order : '', c.label,
        [...new Set(rs.map((r) => r.allowedCpus))].join(' '), fixed0(speed), fixed0(median(rs.map(firstTouch))),
        fixed0(median(rs.map((r) => r.cpuNs / 1e6))), fixed0(median(rs.map((r) => r.faults))), ratio, cpuRatio,
      ]));
      perRun.push(`  ${placement.padEnd(9)}${order.padEnd(5)}${c.label.padEnd(27)}${rs.map((r) => fixed0(mibPerSecond(r)).padStart(8)).join('')}`);
      first = false;
      firstOfOrder = false;
    }
  }
}
const allMet = verdicts.every((v) => !v.endsWith('(below)'));
const openMs = [...results.values()].flat().flatMap((r) => (r.openMs === undefined ? [] : [r.openMs]));
lines.push(
  '',
  `Target: LazyMemory at least ${String(TARGET)}x the C handler's MiB/s, pinned: ${allMet ? 'MET' : 'NOT MET'} (${verdicts.join(', ')}).`,
  ...(Math.max(...loads) > 1.5
    ? [`The machine was busy (load average up to ${Math.max(...loads).toFixed(2)} on ${String(availableParallelism())} CPUs): other work took CPU 0 from some runs, so the MiB/s ratios are noisy; CPU JS/C much less so.`]
    : []),
  'Unpinned figures are reported, not judged: there a cross-CPU wake-up per fault dominates.',
  `LazyMemory.open() (worker start, source open, register), in no figure above: median ${median(openMs).toFixed(1)} ms.`,
  '',
  'MiB/s of each run, in run order:',
  ...perRun,
);
console.log(lines.join('\n'));
