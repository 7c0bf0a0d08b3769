// npm run bench:ws: does a prefetch list merged from three runs serve a new clone at least as well as the
// record of any single run? Four "clones" of one snapshot touch overlapping windows of it (the fake VMM,
// test/native/fake-vmm.c, --file-offset/--size: three recorded runs at 0, 1/8 and 2/8 of the file, 3/4 of it
// long, and a new clone at 1/16), like guests whose working sets drift between boots. The new clone is then
// restored (one page per fault, so every fault is counted) with --prefetch of each single record, of their
// union (`uffd ws merge`), of the pages in at least two (`--min-runs 2`), and with none; each configuration
// BENCH_RUNS times, interleaved, the whole bench pinned to CPU 0 (`taskset -c 0`, server and VMM on one CPU).
// Each restore runs twice: racing (the guest touches right after the handshake, as Firecracker's vCPUs do, so
// the prefetch competes with demand faults) and with a head start (the guest waits HEAD_START_MS first, so
// what the list covers is in). Reported per configuration, as medians: demand faults (pages the guest had to
// wait for), pages prefetched and the VMM's touch rate. Never a pass/fail gate: exit 0 either way, unless a
// page was wrong.
//
// Knobs: BENCH_WS_MIB (memory file size, default 64), BENCH_RUNS (default 5).
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PageServer } from '../src/server/page-server.js';
import type { ServerLog } from '../src/server/page-server.js';
import { readWorkingSet, writeWorkingSet } from '../src/metrics/working-set.js';
import { diffWorkingSets, mergeWorkingSets } from '../src/metrics/working-set-ops.js';
import { envCount } from './env.js';

const mib = envCount('BENCH_WS_MIB', 64, 4096);
const runs = envCount('BENCH_RUNS', 5);
const root = fileURLToPath(new URL('../../', import.meta.url)); // this file runs as dist/bench/working-sets.js
const fakeVmm = join(root, 'test', 'native', 'bin', 'fake-vmm');
if (!existsSync(fakeVmm)) throw new Error(`${fakeVmm} is missing: npm run build:helpers`);
const bytes = mib << 20;
const eighth = bytes / 8;
const window = (bytes * 3) / 4;
const HEAD_START_MS = 1500;
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? (s[m] ?? NaN) : ((s[m - 1] ?? NaN) + (s[m] ?? NaN)) / 2;
};

const dir = mkdtempSync(join(tmpdir(), 'uffd-bench-ws-'));
let sockets = 0;

/** One restore of a clone touching [offset, offset + window) in random order. */
async function restore(memory: string, offset: number, options: { record?: string; prefetch?: string }, delayMs = 0): Promise<{ demand: number; prefetched: number; mibps: number; recorded?: string }> {
  const server = await PageServer.listen({ socket: join(dir, `b${String(sockets++)}.sock`), memory, readahead: 1, ...options });
  const logs: ServerLog[] = [];
  server.on('log', (e) => logs.push(e));
  try {
    const vmm = spawn(fakeVmm, ['--socket', server.socket, '--memory', memory, '--file-offset', String(offset), '--size', String(window), '--random', '--seed', String(offset + 1), '--timeout', '120000', '--delay-touch', String(delayMs)], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    vmm.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    const [code] = (await once(vmm, 'close')) as [number | null];
    const result = JSON.parse(out.trim().split('\n').at(-1) ?? '{}') as { mismatches: number; mibps: number };
    if (code !== 0 || result.mismatches !== 0) throw new Error(`the fake VMM failed (exit ${String(code)}): ${out}`);
    const deadline = Date.now() + 10_000;
    while (!logs.some((e) => e.event === 'gone') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    const t = server.metrics().total;
    const recorded = logs.find((e) => e.event === 'recorded');
    return { demand: t.pages.demand, prefetched: t.pages.prefetch, mibps: result.mibps, ...(recorded?.event === 'recorded' ? { recorded: recorded.path } : {}) };
  } finally {
    await server.close();
  }
}

try {
  const memory = join(dir, 'memory.bin');
  const data = Buffer.alloc(bytes);
  for (let i = 0; i < bytes; i += 4096) data.writeUInt32LE(i / 4096, i);
  writeFileSync(memory, data);
  const loadBefore = loadavg()[0] ?? NaN;
  // The three recorded runs.
  const records: string[] = [];
  for (const k of [0, 1, 2]) {
    const r = await restore(memory, k * eighth, { record: join(dir, `rec${String(k)}`) });
    if (r.recorded === undefined) throw new Error('no record written');
    records.push(r.recorded);
  }
  const read = records.map((p) => readWorkingSet(p));
  const union = join(dir, 'union.json');
  writeWorkingSet(union, mergeWorkingSets(read, 1, records));
  const majority = join(dir, 'majority.json');
  writeWorkingSet(majority, mergeWorkingSets(read, 2, records));
  // What the new clone touches, recorded once, to say how much of it each list covers.
  const clone = await restore(memory, eighth / 2, { record: join(dir, 'clone') });
  const cloneSet = readWorkingSet(clone.recorded ?? '');
  const configs: { name: string; prefetch?: string }[] = [
    { name: 'none' }, ...records.map((p, k) => ({ name: `single run ${String(k + 1)}`, prefetch: p })),
    { name: 'merge of 3 (union)', prefetch: union }, { name: 'merge of 3 (in >= 2)', prefetch: majority },
  ];
  type Slot = { demand: number[]; prefetched: number[]; mibps: number[]; headStartDemand: number[] };
  const results = new Map<string, Slot>(configs.map((c) => [c.name, { demand: [], prefetched: [], mibps: [], headStartDemand: [] }]));
  for (let round = 0; round < runs; round++) {
    for (const c of configs) {
      const options = c.prefetch === undefined ? {} : { prefetch: c.prefetch };
      const slot = results.get(c.name);
      // Racing: the guest touches at once, as Firecracker's vCPUs resume right after the handshake.
      const r = await restore(memory, eighth / 2, options);
      slot?.demand.push(r.demand);
      slot?.prefetched.push(r.prefetched);
      slot?.mibps.push(r.mibps);
      // With a head start: the guest waits HEAD_START_MS, so the list is (nearly) all in when it touches.
      slot?.headStartDemand.push((await restore(memory, eighth / 2, options, HEAD_START_MS)).demand);
    }
  }
  const cpu = /model name\s*:\s*(.*)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? 'unknown CPU';
  console.log(`working-set prefetch, ${cpu}, Linux ${release()}, node ${process.version}, affinity ${process.env.BENCH_AFFINITY ?? 'as started'}`);
  console.log(`${String(mib)} MiB snapshot; each clone touches 3/4 of it (${String(window / 4096)} pages) in random order, one page per fault; ${String(runs)} runs per row, interleaved`);
  console.log(`load average (1 min): ${loadBefore.toFixed(2)} before, ${(loadavg()[0] ?? NaN).toFixed(2)} after (2 vCPUs: above ~1, other work shared the CPUs)`);
  console.log(`  prefetch list            covers   racing: demand faults, prefetched, touch MiB/s   ${String(HEAD_START_MS)} ms head start: demand faults`);
  for (const c of configs) {
    const r = results.get(c.name);
    if (r === undefined) continue;
    const covers = c.prefetch === undefined ? 0 : diffWorkingSets(readWorkingSet(c.prefetch), cloneSet).both / cloneSet.offsets.length;
    console.log(`  ${c.name.padEnd(24)} ${(covers * 100).toFixed(1).padStart(5)}%   ${String(median(r.demand)).padStart(21)}, ${String(median(r.prefetched)).padStart(10)}, ${median(r.mibps).toFixed(0).padStart(11)}   ${String(median(r.headStartDemand)).padStart(26)}`);
  }
  for (const key of ['demand', 'headStartDemand'] as const) {
    const singles = configs.filter((c) => c.name.startsWith('single')).map((c) => median(results.get(c.name)?.[key] ?? []));
    const merged = median(results.get('merge of 3 (union)')?.[key] ?? []);
    console.log(`  ${key === 'demand' ? 'racing' : 'head start'}: merge of 3 vs the best single record: ${String(merged)} vs ${String(Math.min(...singles))} demand faults (${merged <= Math.min(...singles) ? 'at least as good' : 'worse'})`);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
