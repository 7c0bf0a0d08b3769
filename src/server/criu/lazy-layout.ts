// What a restored process's uffd must be served from: the lazy pagemap entries of its images, cut at the
// edges of its memory areas (one UFFDIO_COPY cannot span two areas), each with its offset in the pages file.
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { CriuImageError } from './errors.js';
import type { MemoryArea, Pagemap, PstreeEntry } from './images.js';
import { CRIU_PAGE_SIZE, PE_LAZY, parseMm, parsePagemap, parsePstree } from './images.js';

/** Pages [start, start + pages * 4096) are served from the pages file at `fileOffset`. */
export interface LazyRun {
  start: bigint;
  pages: number;
  fileOffset: number;
}

export interface ProcessImages {
  pid: number;
  areas: MemoryArea[];
  runs: LazyRun[];
  pagesFile: string;
  pagesFileBytes: number;
}

const PAGE = BigInt(CRIU_PAGE_SIZE);

/** Lazy entries cut at area edges; a lazy page outside every area, or past the pages file, is refused. */
export function lazyRuns(pagemap: Pagemap, areas: MemoryArea[], pagesFileBytes: number, file: string): LazyRun[] {
  if (pagemap.pagesBytes > pagesFileBytes) {
    throw new CriuImageError('invalid-layout', `${file} points past its pages file: its present entries need ${String(pagemap.pagesBytes)} bytes, pages-${String(pagemap.pagesId)}.img has ${String(pagesFileBytes)}`);
  }
  const runs: LazyRun[] = [];
  let a = 0;
  for (const entry of pagemap.entries) {
    if ((entry.flags & PE_LAZY) === 0) continue;
    let at = entry.vaddr;
    const end = entry.vaddr + BigInt(entry.pages) * PAGE;
    while (at < end) {
      while (a < areas.length && (areas[a]?.end ?? 0n) <= at) a++;
      const area = areas[a];
      if (area === undefined || area.start > at) {
        throw new CriuImageError('invalid-layout', `${file}: lazy page 0x${at.toString(16)} lies outside every area of the process's mm image`);
      }
      const cut = end < area.end ? end : area.end;
      runs.push({ start: at, pages: Number((cut - at) / PAGE), fileOffset: entry.fileOffset + Number(at - entry.vaddr) });
      at = cut;
    }
  }
  return runs;
}

export function readPstree(imagesDir: string): PstreeEntry[] {
  return parsePstree(readImage(imagesDir, 'pstree.img'), 'pstree.img');
}

/** Reads and checks one process's mm, pagemap and pages file size. */
export function readProcessImages(imagesDir: string, pid: number): ProcessImages {
  const mmFile = `mm-${String(pid)}.img`;
  const pagemapFile = `pagemap-${String(pid)}.img`;
  const areas = parseMm(readImage(imagesDir, mmFile), mmFile);
  const pagemap = parsePagemap(readImage(imagesDir, pagemapFile), pagemapFile);
  const pagesFile = join(imagesDir, `pages-${String(pagemap.pagesId)}.img`);
  let pagesFileBytes: number;
  try {
    pagesFileBytes = statSync(pagesFile).size;
  } catch (err) {
    throw new CriuImageError('missing', `pages-${String(pagemap.pagesId)}.img (named by ${pagemapFile}) cannot be read: ${err instanceof Error ? err.message : String(err)}`);
  }
  return { pid, areas, runs: lazyRuns(pagemap, areas, pagesFileBytes, pagemapFile), pagesFile, pagesFileBytes };
}

function readImage(dir: string, name: string): Uint8Array {
  try {
    return readFileSync(join(dir, name));
  } catch (err) {
    throw new CriuImageError('missing', `${name} cannot be read: ${err instanceof Error ? err.message : String(err)}`);
  }
}
