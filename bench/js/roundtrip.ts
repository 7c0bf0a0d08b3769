// Fault round trip in JS: the main thread reads one u32 per 4 KiB page of a MISSING-registered anonymous
// mapping, timing every read, while a worker thread resolves each fault (./resolver.ts) — the lazy-memory
// pattern. Same job and same one-line JSON output as bench/c/roundtrip.c.
//
// usage: node dist/bench/js/roundtrip.js FAULTS WARMUP
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { Mapping, Userfaultfd } from '../../src/index.js';

const PAGE = 4096;
const WORDS_PER_PAGE = PAGE / Uint32Array.BYTES_PER_ELEMENT;

function countArg(value: string | undefined): number {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n <= 0) {
    console.error(`usage: roundtrip.js FAULTS WARMUP (positive integers), got ${String(value)}`);
    process.exit(2);
  }
  return n;
}

// One read per page, each timed; returns how many pages did not hold their index. The same function runs the
// warm-up and the measured pages, so the measured loop runs optimized code.
function touch(words: Uint32Array, first: number, count: number, samples: Float64Array): number {
  let mismatches = 0;
  for (let page = first; page < first + count; page++) {
    const t0 = process.hrtime.bigint();
    const word = words[page * WORDS_PER_PAGE];
    const t1 = process.hrtime.bigint();
    samples[page] = Number(t1 - t0);
    if (word !== page) mismatches++;
  }
  return mismatches;
}

// Nearest rank, the same formula as the C side.
function percentile(sorted: Float64Array, q: number): number {
  return sorted[Math.ceil(q * sorted.length) - 1] ?? NaN;
}

function allowedCpus(): string {
  return /^Cpus_allowed_list:\s*(\S+)$/m.exec(readFileSync('/proc/self/status', 'latin1'))?.[1] ?? '?';
}

const faults = countArg(process.argv[2]);
const warmup = countArg(process.argv[3]);
const pages = warmup + faults;

using mapping = Mapping.anonymous(pages * PAGE);
using uffd = Userfaultfd.open();
uffd.register(mapping, { missing: true });
const worker = new Worker(new URL('./resolver.js', import.meta.url), { workerData: { fd: uffd.dup(), base: mapping.address } });
await once(worker, 'message'); // ready: faults raised from now on are read at once

const words = new Uint32Array(mapping.buffer);
// Written now so that the sample array's own page faults stay out of the timed loop.
const samples = new Float64Array(pages).fill(-1);
let mismatches = touch(words, 0, warmup, samples);
const start = process.hrtime.bigint();
mismatches += touch(words, warmup, faults, samples);
const totalNs = Number(process.hrtime.bigint() - start);

const exited = once(worker, 'exit');
worker.postMessage('stop');
const [{ served }] = (await once(worker, 'message')) as [{ served: number }];
await exited;

const measured = samples.subarray(warmup).sort();
console.log(JSON.stringify({
  side: 'js', faults, warmup, totalNs, p50Ns: percentile(measured, 0.5), p99Ns: percentile(measured, 0.99),
  mismatches, served, allowedCpus: allowedCpus(),
}));
