// npm run bench:metrics: what counting costs the fault path. The same resolver (the library's PageFiller in a
// worker, one page per fault from a populated mapping; bench/js/metrics-cost.ts) serves a full touch of
// BENCH_METRICS_MIB of memory with the real FillMetrics ('on') and with do-nothing hooks ('off'). Runs are
// their own processes, interleaved (off, on, off, on...) after one untimed pair, pinned with `taskset -c 0`
// (handler and faulter on one CPU); the median MiB/s of each and the median of the back-to-back on/off ratios
// are reported (target: the cost under 2%, i.e. on/off >= 0.98). The hooks alone are timed too, in a loop, per
// fault as the filler calls them. Never a pass/fail gate: exit 0 either way.
//
// Knobs: BENCH_METRICS_MIB (default 256), BENCH_RUNS (pairs, default 5).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BYTES, DEMAND_PAGES, FAULTS, FillMetrics, READAHEAD_PAGES } from '../src/metrics/fill-metrics.js';
import { envCount } from './env.js';

const mib = envCount('BENCH_METRICS_MIB', 256, 4096);
const runs = envCount('BENCH_RUNS', 5);
const side = fileURLToPath(new URL('./js/metrics-cost.js', import.meta.url));
const cpu = /model name\s*:\s*(.*)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? 'unknown CPU';
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? (s[m] ?? NaN) : ((s[m - 1] ?? NaN) + (s[m] ?? NaN)) / 2;
};

/** The hooks one fault costs in the filler (one page, no read-ahead), in ns, in a tight loop. */
function hookNs(): number {
  const m = new FillMetrics();
  const n = 5_000_000;
  let t = 0;
  const start = process.hrtime.bigint();
  for (let i = 0; i < n; i++) {
    m.add(FAULTS, 1);
    m.add(DEMAND_PAGES, 1);
    m.add(READAHEAD_PAGES, 0);
    m.add(BYTES, 4096);
    m.served(t, t + 0.004);
    t += 0.005;
  }
  return Number(process.hrtime.bigint() - start) / n;
}

const dir = mkdtempSync(join(tmpdir(), 'uffd-bench-metrics-'));
try {
  const file = join(dir, 'data.bin');
  const bytes = Buffer.alloc(mib << 20);
  for (let i = 0; i < bytes.length; i += 4096) bytes.writeUInt32LE(i / 4096, i);
  writeFileSync(file, bytes);
  const run = (mode: 'on' | 'off'): number => {
    const out = execFileSync('taskset', ['-c', '0', process.execPath, side, mode, file], { encoding: 'utf8' });
    const r = JSON.parse(out.trim().split('\n').at(-1) ?? '{}') as { touchNs: number; pages: number; faults: number };
    if (r.faults !== r.pages) throw new Error(`${mode}: ${String(r.faults)} faults for ${String(r.pages)} pages`);
    return mib / (r.touchNs / 1e9);
  };
  const loadBefore = loadavg()[0] ?? NaN;
  run('off');
  run('on');
  const off: number[] = [];
  const on: number[] = [];
  const ratios: number[] = [];
  for (let i = 0; i < runs; i++) {
    const a = run('off');
    const b = run('on');
    off.push(a);
    on.push(b);
    ratios.push(b / a);
  }
  const perFault = hookNs();
  const faultNs = 1e9 / ((median(on) * (1 << 20)) / 4096);
  console.log(`metrics cost, ${cpu}, Linux ${release()}, node ${process.version}, pinned to CPU 0, ${String(mib)} MiB, one page per fault, ${String(runs)} pairs`);
  console.log(`load average (1 min): ${loadBefore.toFixed(2)} before, ${(loadavg()[0] ?? NaN).toFixed(2)} after (2 vCPUs: above ~1, other work shared the CPUs)`);
  console.log(`  metrics off: ${median(off).toFixed(0)} MiB/s (runs ${off.map((x) => x.toFixed(0)).join(', ')})`);
  console.log(`  metrics on:  ${median(on).toFixed(0)} MiB/s (runs ${on.map((x) => x.toFixed(0)).join(', ')})`);
  console.log(`  on/off: ${median(ratios).toFixed(3)} (median of back-to-back ratios ${ratios.map((x) => x.toFixed(3)).join(', ')}; target >= 0.98)`);
  console.log(`  the hooks alone: ${perFault.toFixed(1)} ns per fault = ${((perFault / faultNs) * 100).toFixed(2)}% of a ${(faultNs / 1000).toFixed(2)} µs fault`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
