// The part of the protobuf wire format CRIU's images use: varints, fixed 32/64-bit words and length-delimited
// fields, read from one message's bytes. Every read is bounds-checked; anything else is a CriuImageError.
import { CriuImageError } from './errors.js';

export type FieldValue =
  | { wire: 'varint'; value: bigint }
  | { wire: 'fixed64'; value: bigint }
  | { wire: 'fixed32'; value: number }
  | { wire: 'bytes'; value: Uint8Array };

export interface Field {
  number: number;
  value: FieldValue;
}

const MAX_VARINT_BYTES = 10;

/** Reads a varint at `offset`; returns it (as a 64-bit unsigned value) and the offset after it. */
export function readVarint(bytes: Uint8Array, offset: number, where: string): [bigint, number] {
  let result = 0n;
  for (let i = 0; i < MAX_VARINT_BYTES; i++) {
    const byte = bytes[offset + i];
    if (byte === undefined) throw new CriuImageError('truncated', `${where}: a varint runs past the end of the message`);
    result |= BigInt(byte & 0x7f) << BigInt(7 * i);
    if ((byte & 0x80) === 0) {
      if (result >= 1n << 64n) throw new CriuImageError('malformed', `${where}: a varint is larger than 64 bits`);
      return [result, offset + i + 1];
    }
  }
  throw new CriuImageError('malformed', `${where}: a varint is longer than 10 bytes`);
}

/** The fields of one message, in order (repeated fields occur several times). */
export function decodeMessage(bytes: Uint8Array, where: string): Field[] {
  const fields: Field[] = [];
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let offset = 0;
  while (offset < bytes.length) {
    const [key, afterKey] = readVarint(bytes, offset, where);
    const number = Number(key >> 3n);
    const wireType = Number(key & 7n);
    if (number === 0 || key >> 3n > 0x1fffffffn) throw new CriuImageError('malformed', `${where}: field number ${String(key >> 3n)} is out of range`);
    offset = afterKey;
    switch (wireType) {
      case 0: {
        const [value, next] = readVarint(bytes, offset, where);
        fields.push({ number, value: { wire: 'varint', value } });
        offset = next;
        break;
      }
      case 1:
        if (offset + 8 > bytes.length) throw new CriuImageError('truncated', `${where}: field ${String(number)} (64-bit) runs past the end of the message`);
        fields.push({ number, value: { wire: 'fixed64', value: view.getBigUint64(offset, true) } });
        offset += 8;
        break;
      case 2: {
        const [length, next] = readVarint(bytes, offset, where);
        if (length > BigInt(bytes.length - next)) throw new CriuImageError('truncated', `${where}: field ${String(number)} claims ${length.toString()} bytes, ${String(bytes.length - next)} remain`);
        fields.push({ number, value: { wire: 'bytes', value: bytes.subarray(next, next + Number(length)) } });
        offset = next + Number(length);
        break;
      }
      case 5:
        if (offset + 4 > bytes.length) throw new CriuImageError('truncated', `${where}: field ${String(number)} (32-bit) runs past the end of the message`);
        fields.push({ number, value: { wire: 'fixed32', value: view.getUint32(offset, true) } });
        offset += 4;
        break;
      default:
        throw new CriuImageError('malformed', `${where}: field ${String(number)} has wire type ${String(wireType)}, which CRIU images do not use`);
    }
  }
  return fields;
}

/** The last occurrence of a varint field (protobuf's rule for a repeated scalar read as singular). */
export function varintField(fields: Field[], number: number, where: string, name: string): bigint | undefined {
  let found: bigint | undefined;
  for (const f of fields) {
    if (f.number !== number) continue;
    if (f.value.wire !== 'varint') throw new CriuImageError('malformed', `${where}: ${name} (field ${String(number)}) is not a varint`);
    found = f.value.value;
  }
  return found;
}

/** A varint field that must be present. */
export function requiredVarint(fields: Field[], number: number, where: string, name: string): bigint {
  const value = varintField(fields, number, where, name);
  if (value === undefined) throw new CriuImageError('malformed', `${where}: ${name} (field ${String(number)}) is missing`);
  return value;
}

/** A u32 field: present values above 2^32 - 1 are refused. */
export function u32Field(fields: Field[], number: number, where: string, name: string): number | undefined {
  const value = varintField(fields, number, where, name);
  if (value === undefined) return undefined;
  if (value > 0xffffffffn) throw new CriuImageError('malformed', `${where}: ${name} ${value.toString()} does not fit 32 bits`);
  return Number(value);
}

/** Every value of a repeated u32 field, packed or not. */
export function repeatedU32(fields: Field[], number: number, where: string, name: string): number[] {
  const out: number[] = [];
  for (const f of fields) {
    if (f.number !== number) continue;
    if (f.value.wire === 'varint') {
      if (f.value.value > 0xffffffffn) throw new CriuImageError('malformed', `${where}: ${name} ${f.value.value.toString()} does not fit 32 bits`);
      out.push(Number(f.value.value));
    } else if (f.value.wire === 'bytes') {
      const packed = f.value.value;
      let offset = 0;
      while (offset < packed.length) {
        const [v, next] = readVarint(packed, offset, `${where}: ${name}`);
        if (v > 0xffffffffn) throw new CriuImageError('malformed', `${where}: ${name} ${v.toString()} does not fit 32 bits`);
        out.push(Number(v));
        offset = next;
      }
    } else {
      throw new CriuImageError('malformed', `${where}: ${name} (field ${String(number)}) is not a varint`);
    }
  }
  return out;
}

/** Every embedded message of a repeated message field. */
export function messages(fields: Field[], number: number, where: string, name: string): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const f of fields) {
    if (f.number !== number) continue;
    if (f.value.wire !== 'bytes') throw new CriuImageError('malformed', `${where}: ${name} (field ${String(number)}) is not a message`);
    out.push(f.value.value);
  }
  return out;
}
