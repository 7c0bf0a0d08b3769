// npm run bench:track: write-protect tracking and live snapshots. Each measurement is its own process,
// pinned to CPU 0 (taskset -c 0), the C reference and the JS sides interleaved, median of BENCH_RUNS (5):
//   1. the cost per tracked write (the first write to each page after a reset), async and sync, against a
//      C tracker doing the classic mprotect(PROT_READ) + SIGSEGV handler (bench/c/wp-track.c);
//   2. collect() of BENCH_COLLECT_MIB (1024) MiB with 1% of the pages written, async and sync;
//   3. a live snapshot of BENCH_SNAPSHOT_MIB (1024) MiB while the JS thread writes, against writing the same
//      memory to a file in one go (stop-the-world: the writers would stall for all of it), and the longest
//      single write the writer saw.
// Files go to /dev/shm: the figures are about the copy, not the disk. Never a pass/fail gate.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { loadavg, release } from 'node:os';
import { fileURLToPath } from 'node:url';
import { envCount } from './env.js';

const root = fileURLToPath(new URL('../../', import.meta.url)); // this file runs as dist/bench/track.js
const cBinary = `${root}bench/bin/wp-track`;
const jsSide = fileURLToPath(new URL('./js/track.js', import.meta.url));
const runs = envCount('BENCH_RUNS', 5);
const writePages = envCount('BENCH_WRITE_PAGES', 16384);
const collectPages = envCount('BENCH_COLLECT_MIB', 1024) * 256;
const snapshotPages = envCount('BENCH_SNAPSHOT_MIB', 1024) * 256;

type Result = Record<string, number | string>;

function pinned(argv: string[]): Result {
  const out = execFileSync('taskset', ['-c', '0', ...argv], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], timeout: 600_000 });
  return JSON.parse(out.trim().split('\n').at(-1) ?? '{}') as Result;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid] ?? NaN : ((sorted[mid - 1] ?? NaN) + (sorted[mid] ?? NaN)) / 2;
}

const num = (r: Result, key: string): number => Number(r[key]);
const node = (...args: string[]): string[] => [process.execPath, jsSide, ...args];

mkdirSync(`${root}bench/bin`, { recursive: true });
execFileSync('gcc', ['-O2', '-Wall', '-Wextra', '-Werror', '-o', cBinary, `${root}bench/c/wp-track.c`], { stdio: 'inherit' });
const model = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'latin1'))?.[1] ?? 'unknown';
const loadBefore = loadavg()[0] ?? NaN;

const writes: Record<string, Result[]> = { c: [], async: [], sync: [] };
const collects: Record<string, Result[]> = { async: [], sync: [] };
const snapshots: Result[] = [];
for (let run = 1; run <= runs; run++) {
  writes.c?.push(pinned([cBinary, String(writePages), '3']));
  writes.async?.push(pinned(node('writes', String(writePages), '3', 'async')));
  writes.sync?.push(pinned(node('writes', String(writePages), '3', 'sync')));
  collects.async?.push(pinned(node('collect', String(collectPages), '3', 'async')));
  collects.sync?.push(pinned(node('collect', String(collectPages), '3', 'sync')));
  snapshots.push(pinned(node('snapshot', String(snapshotPages), '1')));
  console.error(`run ${String(run)}/${String(runs)} done`);
}

const fixed = (n: number, digits = 2): string => n.toFixed(digits);
const overhead = (rs: Result[]): number => median(rs.map((r) => num(r, 'trackedNsPerPage') - num(r, 'plainNsPerPage')));
const c = overhead(writes.c ?? []);
const lines = [
  '',
  `machine: ${model}, kernel ${release()}, node ${process.version}; pinned to CPU 0; median of ${String(runs)} interleaved runs`,
  `load average (1 min): ${fixed(loadBefore)} before, ${fixed(loadavg()[0] ?? NaN)} after`,
  '',
  `1. tracked write, first write to each of ${String(writePages)} populated pages after a reset (ns per page, over a plain write):`,
  `   C mprotect + SIGSEGV  ${fixed(c, 0)} ns`,
];
for (const method of ['async', 'sync']) {
  const o = overhead(writes[method] ?? []);
  lines.push(`   JS ${method.padEnd(18)} ${fixed(o, 0)} ns  (${fixed(o / c)}x of C)`);
}
lines.push('', `2. collect() of ${String(collectPages / 256)} MiB with 1% of the pages written (ms):`);
for (const method of ['async', 'sync']) lines.push(`   ${method.padEnd(6)} ${fixed(median((collects[method] ?? []).map((r) => num(r, 'collectMs'))))} ms`);
lines.push(
  '', `3. snapshot of ${String(snapshotPages / 256)} MiB while the JS thread writes, to /dev/shm:`,
  `   live snapshot      ${fixed(median(snapshots.map((r) => num(r, 'liveMiBps'))), 0)} MiB/s; writer's longest write ${fixed(median(snapshots.map((r) => num(r, 'maxWriteMicros'))), 0)} µs (resolver's estimate ${fixed(median(snapshots.map((r) => num(r, 'resolverStallMicros'))), 0)} µs)`,
  `   stop-the-world     ${fixed(median(snapshots.map((r) => num(r, 'stopTheWorldMiBps'))), 0)} MiB/s; writers stall for the whole copy: ${fixed(median(snapshots.map((r) => num(r, 'stopTheWorldStallMs'))), 0)} ms`,
);
console.log(lines.join('\n'));
