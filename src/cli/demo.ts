// `uffd demo`: a newcomer's first look at lazy memory. It writes a sample file, opens it as lazy memory,
// reads parts of it from the JS thread, and shows which pages were paged in as it goes.
import { createHash } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { fileSource } from '../sources/source.js';
import { LazyMemory } from '../lazy/lazy-memory.js';
import { PAGE_SIZE, presentPages } from '../system.js';
import type { Command } from './command.js';
import { EXIT, UsageError } from './failure.js';
import { micros } from '../metrics/format.js';

const MIB = 1 << 20;

/** Where the text goes with --json: nowhere (the JSON document is written to the real stdout). */
const quiet = { isTTY: false, columns: 80, write: () => true } as unknown as NodeJS.WriteStream;

function writeSample(path: string, length: number): void {
  // Each page starts with its own number, so what a read returns can be checked at a glance.
  const fd = openSync(path, 'w');
  const chunk = Buffer.alloc(4 * MIB);
  try {
    for (let offset = 0; offset < length; offset += chunk.length) {
      for (let page = 0; page < chunk.length / PAGE_SIZE; page++) {
        chunk.fill((offset / PAGE_SIZE + page) & 0xff, page * PAGE_SIZE, (page + 1) * PAGE_SIZE);
        chunk.writeUInt32LE(offset / PAGE_SIZE + page, page * PAGE_SIZE);
      }
      writeSync(fd, chunk, 0, Math.min(chunk.length, length - offset));
    }
  } finally {
    closeSync(fd);
  }
}

/** A bar of `width` cells; each shows whether the pages it stands for were paged in. */
function residencyBar(lazy: LazyMemory, resident: Uint8Array, width: number): string {
  const pages = lazy.length / lazy.pageSize;
  let bar = '';
  for (let cell = 0; cell < width; cell++) {
    const from = Math.floor((cell * pages) / width);
    const to = Math.floor(((cell + 1) * pages) / width);
    let hit = 0;
    for (let p = from; p < to; p++) hit += resident[p] ?? 0;
    bar += hit === 0 ? '·' : hit === to - from ? '█' : '▒';
  }
  return bar;
}

const USAGE = `usage: uffd demo [--size MIB] [--json]

  Writes a sample file, opens it as lazy memory (pages filled on first touch by a resolver thread), reads
  its first 8 MiB in order and then 500 distinct random pages, and shows which pages were paged in.

  --size MIB   the sample file's size, in [16, 65536] (default 256)
  --json       no progress, one JSON document with the figures at the end

  Exit code 0 when done, 1 when lazy memory cannot be set up here (the message says why).
`;

export const demoCommand: Command = {
  summary: 'lazy memory in action: a file paged in on first touch, with what was read',
  usage: USAGE,
  async run(args) {
    const { values } = parseArgs({ args, options: { size: { type: 'string' }, json: { type: 'boolean' } }, strict: true });
    const sizeMiB = Number(values.size ?? '256');
    if (!Number.isSafeInteger(sizeMiB) || sizeMiB < 16 || sizeMiB > 65536) {
      throw new UsageError(`--size must be a whole number of MiB in [16, 65536], got ${values.size ?? ''}`);
    }
    return runDemo({ sizeMiB, out: process.stdout, json: values.json === true });
  },
};

/** `count` distinct page numbers below `pages`, the same every run (a 32-bit LCG; its high bits). */
export function randomPages(count: number, pages: number): number[] {
  const chosen = new Set<number>();
  let seed = 42;
  while (chosen.size < Math.min(count, pages)) {
    // Math.imul keeps the product exact: a plain multiply loses the low bits past 2^53.
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    chosen.add(Math.floor((seed / 2 ** 32) * pages));
  }
  return [...chosen];
}

/** `[█████░░░░░]  47%`: a bar of `width` cells. */
export function progressBar(done: number, total: number, width: number): string {
  const share = total === 0 ? 1 : Math.min(1, done / total);
  const full = Math.round(share * width);
  return `[${'█'.repeat(full)}${'░'.repeat(width - full)}] ${String(Math.floor(share * 100)).padStart(3)}%`;
}

/** A second lazy memory over the file, filled in the background (prefetch): its pages arriving, as a bar. */
async function showPrefetch(path: string, out: NodeJS.WriteStream): Promise<void> {
  out.write('\nThe same file opened with prefetch: true, filled in the background while nothing touches it:\n');
  const started = performance.now();
  const lazy = await LazyMemory.open({ source: fileSource(path), prefetch: true });
  try {
    const pages = lazy.length / lazy.pageSize;
    const line = (): string => `${progressBar(lazy.stats().pagesServed, pages, 40)}  ${String(lazy.stats().pagesServed)} / ${String(pages)} pages`;
    const ticker = out.isTTY ? setInterval(() => { out.write(`\r${line()}`); }, 50) : undefined;
    const s = await lazy.prefetched();
    clearInterval(ticker);
    out.write(`${out.isTTY ? '\r' : ''}${line()} in ${(performance.now() - started).toFixed(0)} ms (lazy.prefetched() resolved; ${String(s.faults)} faults)\n`);
  } finally {
    await lazy.close();
  }
}

async function runDemo(options: { sizeMiB: number; out: NodeJS.WriteStream; json: boolean }): Promise<number> {
  const out = options.json ? quiet : options.out;
  const tty = out.isTTY;
  const length = options.sizeMiB * MIB;
  const dir = mkdtempSync(join(tmpdir(), 'uffd-demo-'));
  const path = join(dir, 'sample.bin');
  try {
    out.write(`Writing a ${String(options.sizeMiB)} MiB sample file: ${path}\n`);
    writeSample(path, length);
    const lazy = await LazyMemory.open({ source: fileSource(path), readahead: 'auto' });
    try {
      out.write(`Opened it as lazy memory: ${String(lazy.length / MIB)} MiB at 0x${lazy.address.toString(16)}, nothing read yet.\n`);
      out.write('Each cell below stands for a slice of the file: · not paged in, ▒ partly, █ all.\n\n');
      const bytes = new Uint8Array(lazy.buffer);
      const pages = lazy.length / PAGE_SIZE;
      let resident: Uint8Array = new Uint8Array(pages);
      const width = Math.min(64, tty ? (out.columns || 80) - 16 : 64);
      // On a terminal the line is redrawn as pages come in; elsewhere only each phase's final line is printed.
      const show = (label: string, final = false): void => {
        if (!tty && !final) return;
        const s = lazy.stats();
        const line = `${label.padEnd(34)} ${residencyBar(lazy, resident, width)}  ${String(s.pagesServed)} pages in, ${String(s.faults)} faults`;
        out.write(tty ? `\r${line}${final ? '\n' : ''}` : `${line}\n`);
      };
      const touch = (page: number): void => {
        const first = new DataView(bytes.buffer, page * PAGE_SIZE, 4).getUint32(0, true);
        if (first !== page) throw new Error(`page ${String(page)} starts with ${String(first)}: wrong data`);
      };
      // What the resolver has filled, as the kernel sees it: the pages' present bits.
      const refresh = (): void => { resident = presentPages(lazy.address, pages, lazy.pageSize); };

      const started = performance.now();
      const firstPages = Math.min(pages, (8 * MIB) / PAGE_SIZE);
      for (let p = 0; p < firstPages; p++) {
        touch(p);
        if (p % 256 === 0) { refresh(); show('Reading the first 8 MiB in order'); }
      }
      refresh();
      show('Reading the first 8 MiB in order', true);
      const random = randomPages(500, pages);
      random.forEach((page, i) => {
        touch(page);
        if (i % 25 === 0) { refresh(); show(`Reading ${String(random.length)} random pages`); }
      });
      refresh();
      show(`Reading ${String(random.length)} random pages`, true);
      const hash = createHash('sha256').update(bytes.subarray(0, PAGE_SIZE)).digest('hex').slice(0, 16);
      const s = lazy.stats();
      const ms = performance.now() - started;
      if (options.json) {
        const pagesIn = resident.reduce((n, r) => n + r, 0);
        options.out.write(`${JSON.stringify({ sizeMiB: options.sizeMiB, pages, sequentialPages: firstPages, randomPages: random.length, pagesResident: pagesIn, milliseconds: Math.round(ms), firstPageSha256: hash, stats: s })}\n`);
        return EXIT.ok;
      }
      out.write(`\nPaged in ${String(s.pagesServed)} of ${String(pages)} pages (${(s.bytesServed / MIB).toFixed(1)} MiB of ${String(options.sizeMiB)} MiB) `
        + `in ${String(s.faults)} faults, ${ms.toFixed(0)} ms; read-ahead filled ${String(s.readaheadPages)} of them.\n`);
      out.write(`Fault service time: ${micros(s.serviceMicros)}. First page sha256 ${hash}…\n`);
      out.write('Everything else was never read from the file.\n');
      await showPrefetch(path, out);
      return EXIT.ok;
    } finally {
      await lazy.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
