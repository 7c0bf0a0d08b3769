// The three images a lazy-pages daemon reads, decoded and checked: pstree.img (the processes), mm-<pid>.img
// (each one's memory areas) and pagemap-<pid>.img (where each run of pages is: lazy, present, in a parent
// image). Pages a present entry covers are stored back to back, in pagemap order, in pages-<id>.img: an
// entry's offset there is the sum of the sizes of the present entries before it.
import { CriuImageError } from './errors.js';
import { MAGIC, readRecords } from './image-file.js';
import { decodeMessage, messages, repeatedU32, requiredVarint, u32Field, varintField } from './protobuf.js';

/** CRIU images are written with 4 KiB pages on x86-64 (the only page size of the areas it serves lazily). */
export const CRIU_PAGE_SIZE = 4096;

export const PE_PARENT = 1;
export const PE_LAZY = 2;
export const PE_PRESENT = 4;

export interface PagemapEntry {
  vaddr: bigint;
  pages: number;
  flags: number;
  /** Byte offset of the entry's first page in the pages file (entries without PE_PRESENT: where the next would go). */
  fileOffset: number;
}

export interface Pagemap {
  pagesId: number;
  entries: PagemapEntry[];
  /** Bytes of the pages file the present entries need. */
  pagesBytes: number;
}

export interface MemoryArea {
  start: bigint;
  end: bigint;
  /** mmap flags (MAP_PRIVATE, MAP_ANONYMOUS, ...). */
  flags: number;
  /** CRIU's VMA_AREA_* bits. */
  status: number;
}

export interface PstreeEntry {
  pid: number;
  ppid: number;
  threads: number[];
}

const U64_END = 1n << 64n;
const PAGE = BigInt(CRIU_PAGE_SIZE);
/** More pages than this in one entry would make byte offsets inexact as doubles. */
const MAX_ENTRY_PAGES = 2 ** 40;

export function parsePagemap(bytes: Uint8Array, file: string): Pagemap {
  const records = readRecords(bytes, file, MAGIC.pagemap);
  const head = records[0];
  if (head === undefined) throw new CriuImageError('truncated', `${file}: no pagemap_head record`);
  const headFields = decodeMessage(head, `${file}: pagemap_head`);
  const pagesId = u32Field(headFields, 1, `${file}: pagemap_head`, 'pages_id');
  if (pagesId === undefined) throw new CriuImageError('malformed', `${file}: pagemap_head has no pages_id`);
  const entries: PagemapEntry[] = [];
  let fileOffset = 0;
  let previousEnd = 0n;
  for (let i = 1; i < records.length; i++) {
    const where = `${file}: entry ${String(i - 1)}`;
    const fields = decodeMessage(records[i] ?? new Uint8Array(0), where);
    const vaddr = requiredVarint(fields, 1, where, 'vaddr');
    // nr_pages (field 5, u64) since CRIU 4.0; compat_nr_pages (field 2, u32) before. Field 5 wins.
    const wide = varintField(fields, 5, where, 'nr_pages');
    const compat = u32Field(fields, 2, where, 'compat_nr_pages');
    const count = wide ?? (compat === undefined ? undefined : BigInt(compat));
    if (count === undefined) throw new CriuImageError('malformed', `${where}: neither nr_pages nor compat_nr_pages is set`);
    const inParent = varintField(fields, 3, where, 'in_parent');
    // Images older than the flags field: in_parent, else present.
    const flags = u32Field(fields, 4, where, 'flags') ?? (inParent !== undefined && inParent !== 0n ? PE_PARENT : PE_PRESENT);
    const at = `${where} (vaddr 0x${vaddr.toString(16)})`;
    if (vaddr % PAGE !== 0n) throw new CriuImageError('invalid-layout', `${at} is not page-aligned`);
    if (count === 0n || count > BigInt(MAX_ENTRY_PAGES)) throw new CriuImageError('invalid-layout', `${at} has ${count.toString()} pages`);
    const end = vaddr + count * PAGE;
    if (end > U64_END) throw new CriuImageError('invalid-layout', `${at} runs past the end of the 64-bit address space`);
    if (vaddr < previousEnd) throw new CriuImageError('invalid-layout', `${at} overlaps or precedes the entry before it (which ends at 0x${previousEnd.toString(16)})`);
    if ((flags & PE_PARENT) !== 0) {
      throw new CriuImageError('parent-pages', `${at} keeps its pages in a parent image (a pre-dump chain, PE_PARENT), which criu-lazy-pages does not follow: dump without --prev-images-dir`);
    }
    if ((flags & PE_LAZY) !== 0 && (flags & PE_PRESENT) === 0) throw new CriuImageError('invalid-layout', `${at} is lazy but has no pages in the pages file (PE_LAZY without PE_PRESENT)`);
    const pages = Number(count);
    entries.push({ vaddr, pages, flags, fileOffset });
    if ((flags & PE_PRESENT) !== 0) fileOffset += pages * CRIU_PAGE_SIZE;
    if (!Number.isSafeInteger(fileOffset)) throw new CriuImageError('invalid-layout', `${at}: the pages file would be larger than 2^53 bytes`);
    previousEnd = end;
  }
  return { pagesId, entries, pagesBytes: fileOffset };
}

export function parseMm(bytes: Uint8Array, file: string): MemoryArea[] {
  const records = readRecords(bytes, file, MAGIC.mm);
  if (records.length !== 1) throw new CriuImageError(records.length === 0 ? 'truncated' : 'malformed', `${file}: ${String(records.length)} mm_entry records, expected 1`);
  const fields = decodeMessage(records[0] ?? new Uint8Array(0), `${file}: mm_entry`);
  const areas: MemoryArea[] = [];
  let previousEnd = 0n;
  for (const [i, vma] of messages(fields, 14, `${file}: mm_entry`, 'vmas').entries()) {
    const where = `${file}: vmas[${String(i)}]`;
    const f = decodeMessage(vma, where);
    const start = requiredVarint(f, 1, where, 'start');
    const end = requiredVarint(f, 2, where, 'end');
    const flags = u32Field(f, 6, where, 'flags') ?? 0;
    const status = u32Field(f, 7, where, 'status') ?? 0;
    const at = `${where} [0x${start.toString(16)}, 0x${end.toString(16)})`;
    if (start % PAGE !== 0n || end % PAGE !== 0n || start >= end) throw new CriuImageError('invalid-layout', `${at} is empty or not page-aligned`);
    if (start < previousEnd) throw new CriuImageError('invalid-layout', `${at} overlaps or precedes the area before it`);
    areas.push({ start, end, flags, status });
    previousEnd = end;
  }
  return areas;
}

export function parsePstree(bytes: Uint8Array, file: string): PstreeEntry[] {
  const records = readRecords(bytes, file, MAGIC.pstree);
  if (records.length === 0) throw new CriuImageError('truncated', `${file}: no pstree_entry records`);
  const seen = new Set<number>();
  return records.map((record, i) => {
    const where = `${file}: entry ${String(i)}`;
    const f = decodeMessage(record, where);
    const pid = u32Field(f, 1, where, 'pid');
    const ppid = u32Field(f, 2, where, 'ppid');
    if (pid === undefined || ppid === undefined) throw new CriuImageError('malformed', `${where}: pid or ppid is missing`);
    if (pid === 0 || pid > 0x3fffffff) throw new CriuImageError('malformed', `${where}: pid ${String(pid)} is out of range`);
    if (seen.has(pid)) throw new CriuImageError('malformed', `${where}: pid ${String(pid)} occurs twice`);
    seen.add(pid);
    return { pid, ppid, threads: repeatedU32(f, 5, where, 'threads') };
  });
}
