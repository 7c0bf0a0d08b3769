// npm run bench:criu: a process with BENCH_CRIU_MIB (default 1024) of private anonymous memory is dumped once
// by CRIU, then restored lazily again and again, interleaved: through `uffd criu-lazy-pages` with prefetch,
// through `criu lazy-pages` (which always prefetches), and through `uffd criu-lazy-pages --no-prefetch`. The
// daemons are pinned to CPU 0 (`taskset -c 0`); the restored process runs where the kernel puts it. Right
// after the restore the process touches its pages in a scattered order (test/native/criu-target.c, mode
// touch), timing its first 2048 touches one by one (demand faults), and checks every page.
//   complete: from starting `criu restore` to the moment every page is in (prefetch: the daemon exits,
//             having copied everything; demand-only: the process has touched every page)
//   p50 fault: the median of those first touches, as the process sees them (fault, daemon, copy, wake)
// Median of BENCH_RUNS (default 5) per side, after one untimed round. Reported, never a gate; exit 1 only if
// a page was wrong or a restore failed.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, release } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Readable } from 'node:stream';
import { envCount } from './env.js';
import { dumpTarget, findCriu } from '../test/support/criu.js';
import type { Criu, Dump } from '../test/support/criu.js';
import { CLI } from '../test/support/support.js';

type Side = 'uffd prefetch' | 'criu lazy-pages' | 'uffd --no-prefetch';
const SIDES: Side[] = ['uffd prefetch', 'criu lazy-pages', 'uffd --no-prefetch'];

interface Run { completeMs: number; p50us: number; touchMs: number }

const MIB = envCount('BENCH_CRIU_MIB', 1024, 16384);
const RUNS = envCount('BENCH_RUNS', 5, 100);

function exited(child: ReturnType<typeof spawn>): Promise<number | null> {
  return new Promise((resolve) => child.on('exit', (code) => { resolve(code); }));
}

async function waitFile(path: string, ms: number): Promise<void> {
  const until = Date.now() + ms;
  while (!existsSync(path)) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${path}`);
    await sleep(2);
  }
}

async function runOnce(criu: Criu, dump: Dump, side: Side): Promise<Run> {
  for (const f of ['go', 'stop', 'result-root']) rmSync(join(dump.dir, f), { force: true });
  const args = ['-D', dump.dir, '-o', 'lazy.log', '--status-fd', '3'];
  const daemon = side === 'criu lazy-pages'
    ? spawn('taskset', ['-c', '0', criu.path, 'lazy-pages', ...args], { cwd: dump.dir, stdio: ['ignore', 'ignore', 'inherit', 'pipe'] })
    : spawn('taskset', ['-c', '0', process.execPath, CLI, 'criu-lazy-pages', ...args, ...(side === 'uffd --no-prefetch' ? ['--no-prefetch'] : [])], { stdio: ['ignore', 'ignore', 'inherit', 'pipe'] });
  const daemonExit = exited(daemon);
  const status = daemon.stdio[3] as Readable;
  const byte = await new Promise<number | undefined>((resolve) => { status.once('data', (d: Buffer) => { resolve(d[0]); }); status.once('end', () => { resolve(undefined); }); });
  status.destroy();
  if (byte !== 0) throw new Error(`${side}: the daemon did not start`);
  writeFileSync(join(dump.dir, 'go'), '1\n');
  const started = performance.now();
  const restore = spawn('unshare', ['-p', '-f', '--mount-proc', criu.path, 'restore', '-D', dump.dir, '--lazy-pages', '-o', 'restore.log'], { cwd: dump.dir, stdio: 'ignore' });
  const restoreExit = exited(restore);
  let completeMs: number;
  if (side === 'uffd --no-prefetch') {
    await waitFile(join(dump.dir, 'result-root'), 600_000);
    completeMs = performance.now() - started;
  } else {
    const code = await daemonExit;
    completeMs = performance.now() - started;
    if (code !== 0) throw new Error(`${side}: the daemon exited ${String(code)}`);
    await waitFile(join(dump.dir, 'result-root'), 600_000);
  }
  const result = readFileSync(join(dump.dir, 'result-root'), 'utf8').trim();
  writeFileSync(join(dump.dir, 'stop'), '1\n');
  await Promise.all([restoreExit, daemonExit]);
  const m = /^ok touch_ns=(\d+) p50_ns=(\d+) pages=(\d+)$/.exec(result);
  if (m === null) throw new Error(`${side}: the restored process reported ${result}`);
  return { completeMs, p50us: Number(m[2]) / 1000, touchMs: Number(m[1]) / 1e6 };
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? NaN;
}

const found = findCriu();
if (typeof found === 'string') {
  console.log(`bench:criu: skipped: ${found}`);
  process.exit(0);
}
const model = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'latin1'))?.[1] ?? 'unknown';
const loadBefore = loadavg()[0] ?? NaN;
console.log(`bench:criu: ${String(MIB)} MiB, ${String(RUNS)} runs per side, CRIU ${found.version}`);
const dump = await dumpTarget(found, 'touch', MIB);
const runs = new Map<Side, Run[]>(SIDES.map((s) => [s, []]));
let failed = false;
for (let round = 0; round <= RUNS; round++) {
  for (const side of SIDES) {
    try {
      const r = await runOnce(found, dump, side);
      if (round > 0) runs.get(side)?.push(r);
    } catch (err) {
      console.log(`${side}: ${err instanceof Error ? err.message : String(err)}`);
      failed = true;
    }
  }
}
rmSync(dump.dir, { recursive: true, force: true });
console.log(`machine: ${model}, nproc ${execFileSync('nproc', { encoding: 'utf8' }).trim()}, kernel ${release()}, node ${process.version}`);
console.log(`load average (1 min): ${loadBefore.toFixed(2)} before the runs, ${(loadavg()[0] ?? NaN).toFixed(2)} after`);
console.log('side                 complete (s)   MiB/s   p50 fault (us)   touch all (s)');
const criuRuns = runs.get('criu lazy-pages') ?? [];
for (const side of SIDES) {
  const r = runs.get(side) ?? [];
  if (r.length === 0) continue;
  const complete = median(r.map((x) => x.completeMs)) / 1000;
  console.log(`${side.padEnd(20)} ${complete.toFixed(3).padStart(12)} ${(MIB / complete).toFixed(0).padStart(7)} ${median(r.map((x) => x.p50us)).toFixed(1).padStart(16)} ${(median(r.map((x) => x.touchMs)) / 1000).toFixed(3).padStart(15)}`);
}
const ours = runs.get('uffd prefetch') ?? [];
if (ours.length > 0 && criuRuns.length > 0) {
  const ratio = median(criuRuns.map((x) => x.completeMs)) / median(ours.map((x) => x.completeMs));
  const fault = median(criuRuns.map((x) => x.p50us)) / median(ours.map((x) => x.p50us));
  console.log(`uffd / criu: ${ratio.toFixed(2)}x the throughput with prefetch (target >= 1.0), demand faults ${fault.toFixed(2)}x as fast (target >= 1.0)`);
}
process.exit(failed ? 1 : 0);
