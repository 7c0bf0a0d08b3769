// Writes a pack (pack-format.ts) of a local file: read and written synchronously, chunk by chunk, so a
// file larger than memory packs in constant space. The index is written last, to a temporary name and
// renamed: a directory with an index is a complete pack.
import { closeSync, fstatSync, mkdirSync, openSync, readSync, renameSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { PACK_DATA, PACK_FORMAT, PACK_INDEX, PACK_VERSION } from './pack-format.js';
import type { PackCompression, PackEntry, PackIndex } from './pack-format.js';
import { loadZstd } from './zstd.js';

export interface PackSummary {
  length: number;
  chunks: number;
  zeroChunks: number;
  storedBytes: number;
  compression: PackCompression;
  codec: string | undefined;
}

export async function writePack(file: string, outDir: string, options: { chunkSize: number; compression: PackCompression; level?: number }): Promise<PackSummary> {
  const zstd = options.compression === 'zstd' ? await loadZstd() : undefined;
  const input = openSync(file, 'r');
  try {
    const length = fstatSync(input).size;
    if (length === 0) throw new Error(`${file} is empty: nothing to pack`);
    mkdirSync(outDir, { recursive: true });
    const output = openSync(join(outDir, PACK_DATA), 'w');
    const chunks: (PackEntry | null)[] = [];
    let offset = 0;
    let zeroChunks = 0;
    try {
      const buffer = Buffer.allocUnsafe(options.chunkSize);
      const zeros = Buffer.alloc(options.chunkSize);
      for (let at = 0; at < length; at += options.chunkSize) {
        const size = Math.min(options.chunkSize, length - at);
        const chunk = buffer.subarray(0, size);
        for (let done = 0; done < size;) {
          const n = readSync(input, chunk, done, size - done, at + done);
          if (n === 0) throw new Error(`${file} shrank while it was packed`);
          done += n;
        }
        if (chunk.equals(zeros.subarray(0, size))) {
          chunks.push(null);
          zeroChunks++;
          continue;
        }
        const stored = zstd === undefined ? chunk : zstd.compress(chunk, options.level ?? 3);
        for (let done = 0; done < stored.length;) done += writeSync(output, stored, done, stored.length - done);
        chunks.push([offset, stored.length, crc32(stored), crc32(chunk)]);
        offset += stored.length;
      }
    } finally {
      closeSync(output);
    }
    const index: PackIndex = { format: PACK_FORMAT, version: PACK_VERSION, length, chunkSize: options.chunkSize, compression: options.compression, dataLength: offset, chunks };
    const temp = join(outDir, `${PACK_INDEX}.tmp${String(process.pid)}`);
    writeFileSync(temp, `${JSON.stringify(index)}\n`);
    renameSync(temp, join(outDir, PACK_INDEX));
    return { length, chunks: chunks.length, zeroChunks, storedBytes: offset, compression: options.compression, codec: zstd?.name };
  } finally {
    closeSync(input);
  }
}
