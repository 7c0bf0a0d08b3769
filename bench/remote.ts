// npm run bench:remote: restoring lazy memory from the network on loopback, next to the same restore from
// the local file (LazyMemory over fileSource, the page cache warm).
//   - sequential: every page of a BENCH_REMOTE_MIB (default 1024) MiB file, from nginx (range GETs, 2 MiB
//     chunks, 8 in flight) and from a zstd pack of it on nginx; target >= 0.8x and >= 0.6x of the local file;
//   - working set: 10% of the pages (runs of 64 pages at fixed-seed places, in that order) through a proxy
//     adding 2 ms per request, the working set handed to httpSource as `workingSet` (fetched ahead); target:
//     within 1.5x of the local file's time for the same pages.
// Each run is its own process pinned with taskset -c 0 (nginx and the proxy run elsewhere), the cases
// interleaved, median of BENCH_RUNS (default 5). CPU model and load are printed; never a pass/fail gate.
import { execFileSync, spawnSync } from 'node:child_process';
import { closeSync, cpSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { envCount } from './env.js';
import { FaultProxy } from '../test/support/fault-proxy.js';
import { Nginx } from '../test/support/nginx.js';

const MIB = 1 << 20;
const size = envCount('BENCH_REMOTE_MIB', 1024, 16384) * MIB;
const runs = envCount('BENCH_RUNS', 5, 99);
const side = fileURLToPath(new URL('./js/remote-side.js', import.meta.url));
const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'uffd-bench-remote-'));
const file = join(dir, 'memory.bin');
const cpu = /model name\s*:\s*(.*)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? 'unknown CPU';
const load = (): string => loadavg().map((l) => l.toFixed(2)).join(' ');

// Each page's first word is its number times a constant (the side checks it); the rest is text, so zstd has
// something to do that resembles memory rather than noise.
const fd = openSync(file, 'w');
const block = Buffer.alloc(4 * MIB);
for (let at = 0; at < size; at += block.length) {
  for (let p = 0; p < block.length / 4096; p++) {
    const page = at / 4096 + p;
    block.write(`guest page ${String(page).padStart(10, '0')} `.repeat(170), p * 4096);
    block.writeBigUInt64LE(BigInt(page) * 0x9e3779b97f4a7c15n % (1n << 64n), p * 4096);
  }
  writeSync(fd, block, 0, Math.min(block.length, size - at));
}
closeSync(fd);
readFileSync(file); // warm the page cache for the local side and for nginx

const nginx = await Nginx.start();
const proxy = await FaultProxy.start(`http://127.0.0.1:${String(nginx.httpPort)}`);
await proxy.latency(2);
try {
  cpSync(file, join(nginx.root, 'memory.bin'));
  execFileSync(process.execPath, [cli, 'pack', file, '--out', join(nginx.root, 'pack'), '--compress', 'zstd'], { stdio: 'ignore' });
  const pages = size / 4096;
  const ws: number[] = [];
  let seed = 0x5eed;
  while (ws.length < pages / 10) {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    const start = Math.floor((seed / 2 ** 32) * (pages / 64)) * 64;
    for (let p = start; p < start + 64 && ws.length < pages / 10; p++) if (!ws.includes(p)) ws.push(p);
  }
  const wsFile = join(dir, 'ws.json');
  writeFileSync(wsFile, JSON.stringify(ws));
  const cases: [string, string[]][] = [
    ['local file, every page', ['file', file]],
    ['nginx, every page', ['http', nginx.url('memory.bin')]],
    ['zstd pack on nginx, every page', ['http', nginx.url('pack/')]],
    ['local file, working set', ['file', file, wsFile]],
    ['nginx +2 ms/request, working set prefetched', ['prefetch', proxy.url('memory.bin'), wsFile]],
  ];
  console.log(`bench/remote: ${String(size / MIB)} MiB, ${String(runs)} runs per case, pinned (taskset -c 0), ${cpu}, load before ${load()}`);
  const times = new Map<string, number[]>(cases.map(([name]) => [name, []]));
  for (let r = 0; r < runs; r++) {
    for (const [name, args] of cases) {
      const out = spawnSync('taskset', ['-c', '0', process.execPath, side, ...args], { encoding: 'utf8' });
      if (out.status !== 0) throw new Error(`${name}: ${out.stderr}`);
      const result = JSON.parse(out.stdout.trim().split('\n').at(-1) ?? '{}') as { touchMs: number; mismatches: number };
      if (result.mismatches !== 0) throw new Error(`${name}: ${String(result.mismatches)} pages with wrong data`);
      times.get(name)?.push(result.touchMs);
    }
  }
  const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
  const m = (name: string): number => median(times.get(name) ?? []);
  const row = (name: string, base: string, bytes: number, target: string): void => {
    const ms = m(name);
    const ratio = base === name ? 1 : m(base) / ms;
    console.log(`  ${name.padEnd(46)} ${ms.toFixed(0).padStart(7)} ms  ${(bytes / MIB / (ms / 1000)).toFixed(0).padStart(6)} MiB/s  ${base === name ? '' : `${ratio.toFixed(2)}x of the local file (target ${target})`}`);
  };
  row('local file, every page', 'local file, every page', size, '');
  row('nginx, every page', 'local file, every page', size, '>= 0.80x');
  row('zstd pack on nginx, every page', 'local file, every page', size, '>= 0.60x');
  row('local file, working set', 'local file, working set', ws.length * 4096, '');
  const wsRatio = m('nginx +2 ms/request, working set prefetched') / m('local file, working set');
  console.log(`  ${'nginx +2 ms/request, working set prefetched'.padEnd(46)} ${m('nginx +2 ms/request, working set prefetched').toFixed(0).padStart(7)} ms  ${wsRatio.toFixed(2)}x the local file's time (target <= 1.5x)`);
  console.log(`load after ${load()}`);
} finally {
  await proxy.close();
  await nginx.stop();
  rmSync(dir, { recursive: true, force: true });
}
