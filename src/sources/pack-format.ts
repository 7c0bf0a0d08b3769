// The layout `uffd pack` writes and the pack sources read: DIR/index.json and DIR/chunks.bin. The object
// is cut into chunkSize pieces; each piece that is not all zeros is stored (zstd-compressed or as is) in
// chunks.bin, back to back, and the index gives its offset, stored length and two CRC-32s: of the stored
// bytes (checked before decoding) and of the decoded chunk (checked after). Zero chunks are omitted (null).

export const PACK_FORMAT = 'uffd-pack';
export const PACK_VERSION = 1;
export const PACK_INDEX = 'index.json';
export const PACK_DATA = 'chunks.bin';
export const MAX_INDEX_BYTES = 64 << 20;

export type PackCompression = 'zstd' | 'none';

/** One stored chunk: [offset in chunks.bin, stored length, crc32 of the stored bytes, crc32 of the chunk]. */
export type PackEntry = [number, number, number, number];

export interface PackIndex {
  format: typeof PACK_FORMAT;
  version: typeof PACK_VERSION;
  /** Bytes in the packed object. */
  length: number;
  chunkSize: number;
  compression: PackCompression;
  /** Bytes in chunks.bin. */
  dataLength: number;
  chunks: (PackEntry | null)[];
}

const isUint = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const isU32 = (v: unknown): v is number => isUint(v) && v <= 0xffffffff;

/** The index, checked entry by entry (a pack is input from the network). */
export function parsePackIndex(text: string, where: string): PackIndex {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new Error(`${where} is not JSON: ${(err as Error).message}`);
  }
  const bad = (why: string): never => { throw new Error(`${where} is not a ${PACK_FORMAT} index: ${why}`); };
  if (raw === null || typeof raw !== 'object') return bad('not an object');
  const i = raw as Partial<PackIndex>;
  if (i.format !== PACK_FORMAT) bad(`format ${JSON.stringify(i.format)}`);
  if (i.version !== PACK_VERSION) bad(`version ${JSON.stringify(i.version)} (this reader knows ${String(PACK_VERSION)})`);
  if (!isUint(i.length) || i.length === 0) bad('length');
  if (!isUint(i.chunkSize) || i.chunkSize === 0) bad('chunkSize');
  if (i.compression !== 'zstd' && i.compression !== 'none') bad(`compression ${JSON.stringify(i.compression)}`);
  if (!isUint(i.dataLength)) bad('dataLength');
  const length = i.length ?? 0;
  const chunkSize = i.chunkSize ?? 1;
  if (!Array.isArray(i.chunks) || i.chunks.length !== Math.ceil(length / chunkSize)) bad('chunks: not one entry per chunk');
  for (const [n, e] of (i.chunks ?? []).entries()) {
    if (e === null) continue;
    if (!Array.isArray(e) || e.length !== 4 || !isUint(e[0]) || !isUint(e[1]) || !isU32(e[2]) || !isU32(e[3])) bad(`chunk ${String(n)}: not [offset, length, crc, crc]`);
    if (e[0] + e[1] > (i.dataLength ?? 0)) bad(`chunk ${String(n)} lies past the end of ${PACK_DATA}`);
    if (i.compression === 'none' && e[1] !== Math.min(chunkSize, length - n * chunkSize)) bad(`chunk ${String(n)}: stored length differs from the chunk's`);
  }
  return i as PackIndex;
}
