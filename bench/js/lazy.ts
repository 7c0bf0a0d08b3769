// Lazy file memory in JS: the same touch loop as bench/c/lazy.c over
//   lazy      LazyMemory.open({ source: fileSource(FILE), readahead }): the main thread touches, the library's
//             resolver worker copies from a read-only mapping of the file (pread: from pread(2) into a buffer;
//             populate: from a mapping made with MAP_POPULATE);
//   mmap      Mapping.file(FILE): the kernel's own mapping of the file;
//   readfile  fs.readFileSync(FILE), then the touch loop over the Buffer (both timed; no warm-up).
// The first WARMUP pages in touch order are touched untimed; the rest is timed. Prints one line of JSON
// (SideResult in ./lazy-common.ts).
//
// usage: node dist/bench/js/lazy.js lazy FILE seq|rand WARMUP READAHEAD(pages|auto) [default|pread|populate]
//        node dist/bench/js/lazy.js mmap|readfile FILE seq|rand WARMUP
import { readFileSync, statSync } from 'node:fs';
import { LazyMemory, Mapping, fileSource } from '../../src/index.js';
import type { SourceSpec } from '../../src/index.js';
import type { Order, SideResult } from './lazy-common.js';
import { allowedCpus, CHECKSUM_START, pageOrder, PAGE, touch } from './lazy-common.js';

function usage(): never {
  console.error('usage: lazy.js lazy FILE seq|rand WARMUP READAHEAD(pages|auto) [default|pread|populate]\n       lazy.js mmap|readfile FILE seq|rand WARMUP');
  process.exit(2);
}

function parseReadahead(raw: string | undefined): number | 'auto' {
  if (raw === 'auto') return raw;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < 1 || n > 65536) usage();
  return n;
}

const [mode, path, orderArg, warmupArg, readaheadArg, accessArg = 'default', ...extra] = process.argv.slice(2);
if ((mode !== 'lazy' && mode !== 'mmap' && mode !== 'readfile') || path === undefined || (orderArg !== 'seq' && orderArg !== 'rand')) usage();
if (extra.length > 0 || (mode === 'lazy' ? readaheadArg === undefined : readaheadArg !== undefined)) usage();
if (accessArg !== 'default' && accessArg !== 'pread' && accessArg !== 'populate') usage();
const order: Order = orderArg;
const bytes = statSync(path).size;
if (bytes <= 0 || bytes % PAGE !== 0) {
  console.error(`lazy.js: ${path} must be a positive multiple of ${PAGE} bytes`);
  process.exit(2);
}
const pages = bytes / PAGE;
const warmupPages = mode === 'readfile' ? 0 : Number(warmupArg);
if (!Number.isSafeInteger(warmupPages) || warmupPages < 0 || warmupPages >= pages) usage();
const pageIndices = pageOrder(pages, order);

const minorFaults = (): number => process.resourceUsage().minorPageFault;
/** CPU time of the whole process (every thread: main, resolver worker, V8's helpers), ns. */
const cpuNs = (): number => {
  const u = process.cpuUsage();
  return (u.user + u.system) * 1000;
};
const now = (): number => Number(process.hrtime.bigint());

interface Timed { warmupNs: number; touchNs: number; cpuNs: number; minorFaults: number; checksum: number; mismatches: number }

/** The untimed warm-up over the first pages in touch order, then the timed rest. */
function warmThenTime(words: Uint32Array, afterWarmup?: () => void): Timed {
  const warming = now();
  const warm = touch(words, pageIndices, 0, warmupPages, CHECKSUM_START);
  const warmupNs = now() - warming;
  afterWarmup?.();
  const faults = minorFaults();
  const cpu = cpuNs();
  const start = now();
  const rest = touch(words, pageIndices, warmupPages, pages, warm.checksum);
  const touchNs = now() - start;
  return { warmupNs, touchNs, cpuNs: cpuNs() - cpu, minorFaults: minorFaults() - faults, checksum: rest.checksum, mismatches: warm.mismatches + rest.mismatches };
}

let timed: Timed;
let extraFields: { faults?: number; pagesCopied?: number; openMs?: number; readahead?: string } = {};
if (mode === 'lazy') {
  const readahead = parseReadahead(readaheadArg);
  const opening = now();
  // populate has no public option: the spec fileSource() would make, with the page server's MAP_POPULATE.
  const source: SourceSpec = accessArg === 'default' ? fileSource(path) : accessArg === 'pread' ? fileSource(path, { access: 'pread' }) : { kind: 'file', path, access: 'mmap', populate: true };
  const lazy = await LazyMemory.open({ source, readahead });
  const openMs = (now() - opening) / 1e6;
  let warmFaults = 0;
  timed = warmThenTime(new Uint32Array(lazy.buffer), () => { warmFaults = lazy.stats().faults; });
  const stats = lazy.stats();
  await lazy.close();
  // faults: those of the timed part, as for the other modes; pagesCopied: the whole run (each page once).
  extraFields = { faults: stats.faults - warmFaults, pagesCopied: stats.pagesServed, openMs, readahead: String(readahead) };
} else if (mode === 'mmap') {
  using mapping = Mapping.file(path);
  timed = warmThenTime(new Uint32Array(mapping.buffer));
} else {
  const faults = minorFaults();
  const cpu = cpuNs();
  const start = now();
  const data = readFileSync(path);
  const all = touch(new Uint32Array(data.buffer, data.byteOffset, data.byteLength / 4), pageIndices, 0, pages, CHECKSUM_START);
  const touchNs = now() - start;
  timed = { warmupNs: 0, touchNs, cpuNs: cpuNs() - cpu, minorFaults: minorFaults() - faults, ...all };
}
const { minorFaults: minor, ...rest } = timed;
const line: SideResult = {
  side: 'js', mode, order, readahead: '-', bytes, warmupPages, timedBytes: (pages - warmupPages) * PAGE,
  faults: minor, pagesCopied: 0, ...rest, ...extraFields, allowedCpus: allowedCpus(),
};
console.log(JSON.stringify(line));
