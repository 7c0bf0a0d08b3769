// The incremental snapshot file: the changed pages packed in address order, then a JSON index of where they
// belong, then a 16-byte trailer (u64 little-endian index length, 8-byte magic). The index at the end lets
// the pages be written while the copy runs, before anyone knows how long the index is... and it is small:
// one entry per run of consecutive changed pages.
import { closeSync, fstatSync, openSync, readSync, writeSync } from 'node:fs';
import type { ByteRange } from './page-runs.js';

const MAGIC = Buffer.from('UFFDDLT1', 'latin1');
const TRAILER = 16;
const FORMAT = 'userfaultfd-incremental/1';

export interface DeltaIndex {
  /** The page size of the memory the pages came from. */
  pageSize: number;
  /** The size of the memory (and of the full image it applies to). */
  length: number;
  /** Where each run of packed pages belongs, in file order. */
  ranges: ByteRange[];
}

/** Writes the index and trailer at `at` (just after the packed pages). */
export function writeDeltaIndex(fd: number, at: number, index: DeltaIndex): void {
  const json = Buffer.from(JSON.stringify({ format: FORMAT, pageSize: index.pageSize, length: index.length, ranges: index.ranges.map((r) => [r.offset, r.length]) }));
  const trailer = Buffer.alloc(TRAILER);
  trailer.writeBigUInt64LE(BigInt(json.length), 0);
  MAGIC.copy(trailer, 8);
  writeAll(fd, json, at);
  writeAll(fd, trailer, at + json.length);
}

/** Reads the index of an incremental snapshot file; throws when the file is not one (or is truncated). */
export function readDeltaIndex(path: string): DeltaIndex & { dataBytes: number } {
  const fd = openSync(path, 'r');
  try {
    const size = fstatSync(fd).size;
    const trailer = Buffer.alloc(TRAILER);
    if (size < TRAILER || readSync(fd, trailer, 0, TRAILER, size - TRAILER) !== TRAILER || !trailer.subarray(8).equals(MAGIC)) {
      throw Object.assign(new Error(`${path} is not an incremental snapshot (no ${MAGIC.toString('latin1')} trailer)`), { code: 'ERR_UFFD_DELTA' });
    }
    const jsonLength = Number(trailer.readBigUInt64LE(0));
    const dataBytes = size - TRAILER - jsonLength;
    if (dataBytes < 0) throw Object.assign(new Error(`${path}: index length ${String(jsonLength)} exceeds the file`), { code: 'ERR_UFFD_DELTA' });
    const json = Buffer.alloc(jsonLength);
    readSync(fd, json, 0, jsonLength, dataBytes);
    const parsed = JSON.parse(json.toString()) as { format?: unknown; pageSize?: unknown; length?: unknown; ranges?: unknown };
    if (parsed.format !== FORMAT || typeof parsed.pageSize !== 'number' || typeof parsed.length !== 'number' || !Array.isArray(parsed.ranges)) {
      throw Object.assign(new Error(`${path}: not a ${FORMAT} index`), { code: 'ERR_UFFD_DELTA' });
    }
    const ranges: ByteRange[] = [];
    let total = 0;
    for (const entry of parsed.ranges as unknown[]) {
      const [offset, length] = Array.isArray(entry) ? (entry as unknown[]) : [];
      if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || (length as number) <= 0 || (offset as number) < 0 || (offset as number) + (length as number) > parsed.length) {
        throw Object.assign(new Error(`${path}: bad index entry ${JSON.stringify(entry)}`), { code: 'ERR_UFFD_DELTA' });
      }
      ranges.push({ offset: offset as number, length: length as number });
      total += length as number;
    }
    if (total !== dataBytes) throw Object.assign(new Error(`${path}: the index covers ${String(total)} bytes, the file holds ${String(dataBytes)}`), { code: 'ERR_UFFD_DELTA' });
    return { pageSize: parsed.pageSize, length: parsed.length, ranges, dataBytes };
  } finally {
    closeSync(fd);
  }
}

/**
 * Writes an incremental snapshot's pages onto its base image (in place). Returns the bytes written. The base
 * must be the full image (or the result of applying the earlier increments) of the same memory.
 */
export function applyIncremental(basePath: string, deltaPath: string): { bytes: number; ranges: number } {
  const index = readDeltaIndex(deltaPath);
  const base = openSync(basePath, 'r+');
  const delta = openSync(deltaPath, 'r');
  try {
    const baseSize = fstatSync(base).size;
    if (baseSize !== index.length) throw Object.assign(new RangeError(`${basePath} holds ${String(baseSize)} bytes; the increment is for ${String(index.length)}`), { code: 'ERR_UFFD_DELTA' });
    const buffer = Buffer.allocUnsafe(1 << 20);
    let from = 0;
    for (const range of index.ranges) {
      for (let done = 0; done < range.length;) {
        const n = readSync(delta, buffer, 0, Math.min(buffer.length, range.length - done), from + done);
        if (n <= 0) throw new Error(`${deltaPath}: short read`);
        writeAll(base, buffer.subarray(0, n), range.offset + done);
        done += n;
      }
      from += range.length;
    }
    return { bytes: from, ranges: index.ranges.length };
  } finally {
    closeSync(delta);
    closeSync(base);
  }
}

function writeAll(fd: number, data: Uint8Array, at: number): void {
  for (let done = 0; done < data.length;) done += writeSync(fd, data, done, data.length - done, at + done);
}
