// The JS side of bench/track.ts, one measurement per process (its own argv):
//   writes PAGES ROUNDS async|sync   cost per tracked write (first write to each page) against a plain write
//   collect PAGES ROUNDS async|sync  collect() of PAGES pages with 1% of them written
//   snapshot PAGES ROUNDS            a live snapshot of PAGES pages while this thread writes, against writing
//                                    the same memory to a file in one go (stop-the-world); the writer's
//                                    longest single write during the snapshot
// Prints one JSON line.
import { mkdtempSync, openSync, rmSync, writeSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { DirtyTracker, Mapping, Snapshot } from '../../src/index.js';

const [mode = 'writes', pagesArg = '16384', roundsArg = '5', method = 'async'] = process.argv.slice(2);
const pages = Number(pagesArg);
const rounds = Number(roundsArg);
const PAGE = 4096;
const mapping = Mapping.anonymous(pages * PAGE);
const bytes = new Uint8Array(mapping.buffer);
mapping.madvise('POPULATE_WRITE');

function writeAll(value: number): number {
  const start = process.hrtime.bigint();
  for (let p = 0; p < pages; p++) bytes[p * PAGE] = value;
  return Number(process.hrtime.bigint() - start) / pages;
}

if (mode === 'writes') {
  let plain = Infinity;
  let tracked = Infinity;
  const tracker = DirtyTracker.open(mapping, { method: method as 'async' | 'sync' });
  await tracker.ready;
  for (let r = 0; r < rounds; r++) {
    tracker.collect();
    tracked = Math.min(tracked, writeAll(r + 1));
    const seen = tracker.collect({ reset: false }).pages;
    if (seen !== pages) throw new Error(`tracker saw ${String(seen)} of ${String(pages)} written pages`);
  }
  tracker.close();
  for (let r = 0; r < rounds; r++) plain = Math.min(plain, writeAll(r));
  console.log(JSON.stringify({ side: `js-${tracker.method}`, pages, plainNsPerPage: plain, trackedNsPerPage: tracked }));
} else if (mode === 'collect') {
  const tracker = DirtyTracker.open(mapping, { method: method as 'async' | 'sync' });
  await tracker.ready;
  let best = Infinity;
  for (let r = 0; r < rounds; r++) {
    for (let p = 0; p < pages; p += 100) bytes[p * PAGE] = r;
    const start = process.hrtime.bigint();
    const result = tracker.collect();
    best = Math.min(best, Number(process.hrtime.bigint() - start) / 1e6);
    if (result.pages !== Math.ceil(pages / 100)) throw new Error(`collect saw ${String(result.pages)} pages`);
  }
  tracker.close();
  console.log(JSON.stringify({ side: `js-${tracker.method}`, pages, collectMs: best }));
} else {
  const dir = mkdtempSync(join('/dev/shm', 'uffd-bench-'));
  try {
    let live = Infinity;
    let stw = Infinity;
    let stall = 0;
    let writerMax = 0;
    for (let r = 0; r < rounds; r++) {
      const start = performance.now();
      const snapshot = await Snapshot.start(mapping, { path: join(dir, 'live') });
      let settled = false;
      void snapshot.done.finally(() => { settled = true; });
      let p = 0;
      while (!settled) { // the writer: one page at a time, timing each write, yielding so done can settle
        for (let i = 0; i < 256; i++, p = (p + 7919) % pages) {
          const t = performance.now();
          bytes[p * PAGE] = r;
          writerMax = Math.max(writerMax, performance.now() - t);
        }
        await new Promise((resolve) => setImmediate(resolve));
      }
      const stats = await snapshot.done;
      live = Math.min(live, performance.now() - start);
      stall = Math.max(stall, stats.maxWriterStallMicros);
      const t = performance.now();
      const fd = openSync(join(dir, 'stw'), 'w');
      for (let off = 0; off < bytes.length; off += 1 << 24) writeSync(fd, bytes, off, Math.min(1 << 24, bytes.length - off));
      closeSync(fd);
      stw = Math.min(stw, performance.now() - t);
    }
    const mib = (pages * PAGE) / (1 << 20);
    console.log(JSON.stringify({ side: 'js-snapshot', pages, liveMiBps: mib / (live / 1000), stopTheWorldMiBps: mib / (stw / 1000), stopTheWorldStallMs: stw, maxWriteMicros: writerMax * 1000, resolverStallMicros: stall }));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
mapping.close();
