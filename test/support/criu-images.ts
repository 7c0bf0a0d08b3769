// Writes CRIU image files the way CRIU does (both magics, u32-length records, protobuf messages), for the
// image reader's tests: hand-made layouts and the malformed variants real CRIU never writes.
import { IMG_COMMON_MAGIC } from '../../src/server/criu/image-file.js';

export type ProtoValue = bigint | number | Uint8Array | ProtoValue[];

function varint(value: bigint): number[] {
  const out: number[] = [];
  let v = value;
  do {
    let byte = Number(v & 0x7fn);
    v >>= 7n;
    if (v !== 0n) byte |= 0x80;
    out.push(byte);
  } while (v !== 0n);
  return out;
}

/** A protobuf message: numbers and bigints as varints, bytes (embedded messages) length-delimited; arrays repeat. */
export function message(fields: [number, ProtoValue][]): Uint8Array {
  const out: number[] = [];
  const put = (number: number, value: ProtoValue): void => {
    if (Array.isArray(value)) {
      for (const v of value) put(number, v);
    } else if (value instanceof Uint8Array) {
      out.push(...varint(BigInt((number << 3) | 2)), ...varint(BigInt(value.length)), ...value);
    } else {
      out.push(...varint(BigInt(number << 3)), ...varint(BigInt(value)));
    }
  };
  for (const [number, value] of fields) put(number, value);
  return Uint8Array.from(out);
}

export function imageFile(magic: number, records: Uint8Array[]): Uint8Array {
  const length = 8 + records.reduce((n, r) => n + 4 + r.length, 0);
  const bytes = new Uint8Array(length);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, IMG_COMMON_MAGIC, true);
  view.setUint32(4, magic, true);
  let at = 8;
  for (const r of records) {
    view.setUint32(at, r.length, true);
    bytes.set(r, at + 4);
    at += 4 + r.length;
  }
  return bytes;
}

export interface EntrySpec { vaddr: bigint; pages: number; flags: number; field?: 'compat' | 'wide' | 'both' }

export function pagemapEntry(e: EntrySpec): Uint8Array {
  const field = e.field ?? 'compat';
  const fields: [number, ProtoValue][] = [[1, e.vaddr]];
  if (field === 'compat' || field === 'both') fields.push([2, field === 'both' ? 1 : e.pages]);
  fields.push([4, e.flags]);
  if (field === 'wide' || field === 'both') fields.push([5, e.pages]);
  return message(fields);
}

export function vma(start: bigint, end: bigint, flags = 0x22 /* MAP_PRIVATE | MAP_ANONYMOUS */): Uint8Array {
  return message([[1, start], [2, end], [3, 0], [5, 3], [6, flags], [7, 0x201]]);
}

export function mmEntry(vmas: Uint8Array[]): Uint8Array {
  return message([[1, 0x400000n], [2, 0x401000n], [14, vmas]]);
}
