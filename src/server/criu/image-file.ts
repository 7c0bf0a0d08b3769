// CRIU's image file framing: `u32 IMG_COMMON_MAGIC`, the image's own `u32` magic, then records of
// `u32 length` + one protobuf message, all little-endian on the machines CRIU runs on here (x86-64).
import { CriuImageError } from './errors.js';

export const IMG_COMMON_MAGIC = 0x54564319;
export const MAGIC = { pagemap: 0x56084025, mm: 0x57492820, pstree: 0x50273030 } as const;

/** A record longer than this is refused: CRIU's largest (an mm with thousands of areas) is far smaller. */
const MAX_RECORD_BYTES = 64 << 20;

/** The records of an image file, after checking both magics. */
export function readRecords(bytes: Uint8Array, file: string, magic: number): Uint8Array[] {
  if (bytes.length < 8) throw new CriuImageError('truncated', `${file}: ${String(bytes.length)} bytes, shorter than the two magic numbers`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const common = view.getUint32(0, true);
  const own = view.getUint32(4, true);
  if (common !== IMG_COMMON_MAGIC || own !== magic) {
    throw new CriuImageError('bad-magic', `${file}: magic 0x${hex(common)} 0x${hex(own)}, expected 0x${hex(IMG_COMMON_MAGIC)} 0x${hex(magic)}`);
  }
  const records: Uint8Array[] = [];
  let offset = 8;
  while (offset < bytes.length) {
    if (offset + 4 > bytes.length) throw new CriuImageError('truncated', `${file}: record ${String(records.length)} at byte ${String(offset)}: its length is cut off`);
    const length = view.getUint32(offset, true);
    if (length > MAX_RECORD_BYTES) throw new CriuImageError('malformed', `${file}: record ${String(records.length)} claims ${String(length)} bytes`);
    if (offset + 4 + length > bytes.length) {
      throw new CriuImageError('truncated', `${file}: record ${String(records.length)} at byte ${String(offset)} claims ${String(length)} bytes, ${String(bytes.length - offset - 4)} remain`);
    }
    records.push(bytes.subarray(offset + 4, offset + 4 + length));
    offset += 4 + length;
  }
  return records;
}

function hex(n: number): string {
  return n.toString(16).padStart(8, '0');
}
