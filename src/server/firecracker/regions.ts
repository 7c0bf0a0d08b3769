// The handshake body as Firecracker's `Vec<GuestRegionUffdMapping>` serialises it, in each version's shape
// (page-servers.md §1.3): one object per guest memory region, all objects with the same keys.
import { HandshakeError } from './errors.js';
import type { JsonObject, JsonValue } from './strict-json.js';
import { JsonNumber, quote } from './strict-json.js';
import { U64_END } from '../../abi.js';
import type { GuestRegion } from '../region.js';
import { checkRegionCount } from './validate-regions.js';

/**
 * The oldest Firecracker release that sends a shape: '1.1' has base_host_virt_addr, size and offset;
 * '1.7' adds page_size_kib (which holds bytes despite its name); '1.12' adds page_size and keeps page_size_kib.
 */
export type HandshakeVersion = '1.1' | '1.7' | '1.12';

export interface DecodeOptions {
  /**
   * Keys no Firecracker release sends. 'refuse' (the default): a fork that adds fields may change what
   * the regions mean (a memfd sent as a second fd, say), and serving it as if it were upstream could hand
   * the guest wrong pages. 'ignore' accepts such forks at the caller's own judgement.
   */
  unknownKeys?: 'refuse' | 'ignore';
  maxRegions?: number;
}

/** Before 1.7 only 4 KiB pages could be restored from a UFFD backend. */
const PRE_1_7_PAGE_SIZE = 4096;
const SAFE_END = 1n << 53n;
const KNOWN_KEYS = new Set(['base_host_virt_addr', 'size', 'offset', 'page_size_kib', 'page_size']);
const REQUIRED_KEYS = ['base_host_virt_addr', 'size', 'offset'] as const;

/** Turns the parsed body into regions; checks each element on its own (validateRegions checks the set). */
export function decodeRegions(
  body: JsonValue,
  options?: DecodeOptions,
): { version: HandshakeVersion; regions: GuestRegion[] } {
  if (!Array.isArray(body)) {
    throw new HandshakeError('malformed', `the handshake is ${kindOf(body)}, expected an array of regions`);
  }
  checkRegionCount(body.length, options?.maxRegions);
  let version: HandshakeVersion | undefined;
  const regions = body.map((element, index) => {
    const where = `regions[${index}]`;
    if (!(element instanceof Map)) {
      throw new HandshakeError('invalid-region', `${where} is ${kindOf(element)}, expected an object`);
    }
    const decoded = decodeRegion(element, where, options?.unknownKeys ?? 'refuse');
    version ??= decoded.version;
    if (decoded.version !== version) {
      throw new HandshakeError('invalid-region',
        `${where} has the keys of Firecracker ${decoded.version}, regions[0] those of ${version}`);
    }
    return decoded.region;
  });
  if (version === undefined) throw new Error('unreachable: checkRegionCount refuses an empty array');
  return { version, regions };
}

function decodeRegion(
  object: JsonObject,
  where: string,
  unknownKeys: 'refuse' | 'ignore',
): { version: HandshakeVersion; region: GuestRegion } {
  if (unknownKeys === 'refuse') {
    for (const key of object.keys()) {
      if (!KNOWN_KEYS.has(key)) {
        throw new HandshakeError('invalid-region',
          `${where} has the key ${quote(key)}, which no Firecracker release sends (a fork's extension?)`);
      }
    }
  }
  for (const key of REQUIRED_KEYS) {
    if (!object.has(key)) throw new HandshakeError('invalid-region', `${where} lacks the key "${key}"`);
  }
  const baseHostVirtAddr = integer(object, 'base_host_virt_addr', where, U64_END);
  const size = Number(integer(object, 'size', where, SAFE_END));
  const offset = Number(integer(object, 'offset', where, SAFE_END));
  const hasKib = object.has('page_size_kib');
  const hasBytes = object.has('page_size');
  if (hasBytes && !hasKib) {
    // Announced for 2.0, which is not out: until it is, this shape is no Firecracker's and refused.
    throw new HandshakeError('invalid-region',
      `${where} has "page_size" without "page_size_kib" (Firecracker 1.12 and later send both)`);
  }
  if (!hasKib) {
    return { version: '1.1', region: { baseHostVirtAddr, size, offset, pageSize: PRE_1_7_PAGE_SIZE } };
  }
  const kib = Number(integer(object, 'page_size_kib', where, SAFE_END));
  if (!hasBytes) return { version: '1.7', region: { baseHostVirtAddr, size, offset, pageSize: kib } };
  const bytes = Number(integer(object, 'page_size', where, SAFE_END));
  if (bytes !== kib) {
    throw new HandshakeError('invalid-region',
      `${where} has page_size ${bytes} and page_size_kib ${kib}, which disagree (page_size_kib holds bytes too, despite its name)`);
  }
  return { version: '1.12', region: { baseHostVirtAddr, size, offset, pageSize: bytes } };
}

/** A non-negative integer in plain notation, below `end`; every refusal says which rule it broke. */
function integer(object: JsonObject, key: string, where: string, end: bigint): bigint {
  const value = object.get(key);
  const field = `${where}.${key}`;
  if (!(value instanceof JsonNumber)) {
    throw new HandshakeError('invalid-region', `${field} is ${kindOf(value)}, expected a non-negative integer`);
  }
  const shown = value.text.length > 40 ? `${value.text.slice(0, 40)}…` : value.text;
  if (value.negative) throw new HandshakeError('invalid-region', `${field} is negative: ${shown}`);
  const exact = value.toBigInt();
  if (exact === undefined) {
    const why = value.hasFraction ? 'has a fraction' : 'uses exponent notation';
    throw new HandshakeError('invalid-region', `${field} ${why}: ${shown} (expected a plain integer)`);
  }
  if (exact >= end) {
    const limit = end === SAFE_END ? '2^53 or more, beyond exact doubles' : 'beyond 64 bits';
    throw new HandshakeError('invalid-region', `${field} is ${limit}: ${shown}`);
  }
  return exact;
}

function kindOf(value: JsonValue | undefined): string {
  if (value === null) return 'null';
  if (value === undefined) return 'missing';
  if (Array.isArray(value)) return 'an array';
  if (value instanceof Map) return 'an object';
  if (value instanceof JsonNumber) return `the number ${value.text.length > 40 ? `${value.text.slice(0, 40)}…` : value.text}`;
  if (typeof value === 'string') return `the string ${quote(value)}`;
  return `the boolean ${String(value)}`;
}
