// One run of the remote-source benchmark (bench/remote.ts starts it, pinned): LazyMemory over the source the
// runner names, every page (or the working set's pages) touched in order, one word each, checked against
// the file's pattern. Prints one JSON line: the touch time (open excluded) and the mismatches.
import { readFileSync } from 'node:fs';
import { fileSource, httpSource, LazyMemory } from '../../src/index.js';
import type { SourceSpec } from '../../src/index.js';

const [kind = '', where = '', pagesFile = ''] = process.argv.slice(2);
const pages = pagesFile === '' ? undefined : (JSON.parse(readFileSync(pagesFile, 'utf8')) as number[]);
const spec: SourceSpec = kind === 'file'
  ? fileSource(where)
  : httpSource(where, { chunkSize: pages === undefined ? 2 << 20 : 256 << 10, concurrency: 8, memoryBytes: 2 ** 31, ...(kind === 'prefetch' && pages !== undefined ? { workingSet: pages.map((p) => p * 4096) } : {}) });
const opened = performance.now();
const lazy = await LazyMemory.open({ source: spec, readahead: pages === undefined ? 'auto' : 1 });
const openMs = performance.now() - opened;
const words = new BigUint64Array(lazy.buffer, 0, Math.floor(lazy.sourceLength / 8));
let mismatches = 0;
const check = (page: number): void => {
  const w = words[page * 512] ?? 0n;
  if (w !== BigInt(page) * 0x9e3779b97f4a7c15n % (1n << 64n)) mismatches++;
};
const started = performance.now();
if (pages === undefined) for (let p = 0; p < lazy.sourceLength / 4096; p++) check(p);
else for (const p of pages) check(p);
const touchMs = performance.now() - started;
await lazy.close();
process.stdout.write(`${JSON.stringify({ kind, openMs, touchMs, mismatches, pages: pages?.length ?? lazy.sourceLength / 4096 })}\n`);
