// What every side of the lazy-memory benchmark shares (bench/c/lazy.c has the same in C): the file's
// contents, the page order, the touch loop and the result line.
import { readFileSync } from 'node:fs';

export const PAGE = 4096;
const WORDS_PER_PAGE = PAGE / 8;
/** Seeds the random page order; the same in bench/c/lazy.c. */
const SEED = 0x5eed1a2f;

export type Order = 'seq' | 'rand';
/** The checksum's starting value (FNV-1a's offset basis). */
export const CHECKSUM_START = 2166136261;

/** One line of JSON that each side prints. */
export interface SideResult {
  side: 'js' | 'c';
  mode: 'lazy' | 'handler' | 'mmap' | 'readfile';
  order: Order;
  readahead: string;
  bytes: number;
  /** Pages touched first, untimed (a warm-up: JIT, the resolver's first faults, fresh memory). */
  warmupPages: number;
  /** The untimed warm-up part, ns. */
  warmupNs: number;
  /** The timed part: the touch loop over the pages after the warm-up (readfile: readFileSync and the whole loop). */
  touchNs: number;
  /** Bytes of the timed part. */
  timedBytes: number;
  /** CPU time of the whole process (all threads, user + system) over the timed part. */
  cpuNs: number;
  checksum: number;
  mismatches: number;
  /** uffd faults served (lazy, handler); minor page faults during the timed part (mmap, readfile). */
  faults: number;
  pagesCopied: number;
  allowedCpus: string;
  /** Only from C: the file's pages in the page cache at the start of the run (mincore). */
  cachedPages?: number;
  /** Only from the JS lazy side: LazyMemory.open() (worker start, source open, register), ms. */
  openMs?: number;
}

/**
 * The u64 word at byte offset 8w of the file, as two u32 halves (little-endian): low = w, high = a hash of w.
 * Every word differs, so a page served from the wrong offset fails the check.
 */
export function patternHigh(w: number): number {
  return (Math.imul(w, 0x9e3779b1) ^ 0x5a5a5a5a) >>> 0;
}

/** Fills `target` with the file's words starting at word `firstWord`. */
export function fillPattern(target: Uint32Array, firstWord: number): void {
  for (let i = 0; i < target.length >> 1; i++) {
    const w = firstWord + i;
    target[2 * i] = w;
    target[2 * i + 1] = patternHigh(w);
  }
}

/** mulberry32, the same 32-bit generator as the C side. */
function random32(seed: number): () => number {
  let state = seed | 0;
  return () => {
    state = (state + 0x6d2b79f5) | 0;
    let t = Math.imul(state ^ (state >>> 15), state | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

/** Page indices in touch order: 0, 1, 2... or a Fisher-Yates shuffle with the fixed seed. */
export function pageOrder(pages: number, order: Order): Uint32Array {
  const out = new Uint32Array(pages);
  for (let i = 0; i < pages; i++) out[i] = i;
  if (order === 'seq') return out;
  const next = random32(SEED);
  for (let i = pages - 1; i > 0; i--) {
    const j = next() % (i + 1);
    const t = out[i]!;
    out[i] = out[j]!;
    out[j] = t;
  }
  return out;
}

/**
 * Reads one 8-byte word per page for the pages order[from..to) (word p mod 512 of page p, so the offset moves
 * around the page), checks it against the pattern and folds it into an order-dependent checksum (FNV-1a
 * steps over its two halves), continuing from `checksum`. JS has no u64 load that does not allocate a
 * BigInt: the word is read as its two u32 halves.
 */
export function touch(words: Uint32Array, order: Uint32Array, from: number, to: number, checksum: number): { checksum: number; mismatches: number } {
  let mismatches = 0;
  for (let i = from; i < to; i++) {
    const p = order[i]!;
    const w = p * WORDS_PER_PAGE + (p & (WORDS_PER_PAGE - 1));
    const lo = words[2 * w]!;
    const hi = words[2 * w + 1]!;
    if (lo !== w || hi !== patternHigh(w)) mismatches++;
    checksum = Math.imul(checksum ^ lo, 16777619);
    checksum = Math.imul(checksum ^ hi, 16777619);
  }
  return { checksum: checksum >>> 0, mismatches };
}

export function allowedCpus(): string {
  return /^Cpus_allowed_list:\s*(\S+)$/m.exec(readFileSync('/proc/self/status', 'latin1'))?.[1] ?? '?';
}

/** What touch() returns for a file with the pattern: the checksum every side must print. */
export function expectedChecksum(order: Uint32Array): number {
  let checksum = CHECKSUM_START;
  for (let i = 0; i < order.length; i++) {
    const p = order[i]!;
    const w = p * WORDS_PER_PAGE + (p & (WORDS_PER_PAGE - 1));
    checksum = Math.imul(checksum ^ w, 16777619);
    checksum = Math.imul(checksum ^ patternHigh(w), 16777619);
  }
  return checksum >>> 0;
}
