// Whether a set of regions can be served from a memory file: one supported page size, everything aligned
// to it, nothing overlapping in either the VMM's address space or the file, nothing past the file's end.
// Serving overlapping regions would answer one fault from two places in the file; serving past the end
// would read what is not there. A memory file larger than the regions is allowed (only the bounds matter).
import { HandshakeError } from './errors.js';
import { U64_END } from '../../abi.js';
import type { GuestRegion } from '../region.js';
import { checkInteger } from '../../validate.js';

export const PAGE_SIZES: readonly number[] = [4096, 2 * 1024 * 1024];
export const DEFAULT_MAX_REGIONS = 1024;


export interface ValidateOptions {
  /** Bytes in the memory file the regions are served from. */
  memoryFileSize: number;
  maxRegions?: number;
}

export function checkRegionCount(count: number, maxRegions = DEFAULT_MAX_REGIONS): void {
  checkInteger(maxRegions, 'maxRegions', { min: 1 });
  if (count === 0) throw new HandshakeError('invalid-layout', 'the handshake has no regions');
  if (count > maxRegions) {
    throw new HandshakeError('invalid-layout', `the handshake has ${count} regions, more than the limit of ${maxRegions}`);
  }
}

/** Throws HandshakeError ('invalid-layout') naming the first region that breaks a rule. */
export function validateRegions(regions: readonly GuestRegion[], options: ValidateOptions): void {
  const { memoryFileSize } = options;
  checkInteger(memoryFileSize, 'memoryFileSize', { min: 0 });
  checkRegionCount(regions.length, options.maxRegions);
  const first = regions[0];
  if (first === undefined) return;
  regions.forEach((region, index) => {
    checkRegion(region, `regions[${index}]`, first.pageSize, memoryFileSize);
  });
  checkDisjoint(regions, (r) => r.baseHostVirtAddr, 'the VMM\'s address space');
  checkDisjoint(regions, (r) => BigInt(r.offset), 'the memory file');
}

function fail(message: string): never {
  throw new HandshakeError('invalid-layout', message);
}

function checkRegion(region: GuestRegion, where: string, pageSize: number, memoryFileSize: number): void {
  const { baseHostVirtAddr, size, offset } = region;
  if (!PAGE_SIZES.includes(region.pageSize)) {
    fail(`${where} has the page size ${region.pageSize}, neither 4096 (4 KiB) nor 2097152 (2 MiB)`);
  }
  if (region.pageSize !== pageSize) {
    fail(`${where} has the page size ${region.pageSize}, regions[0] ${pageSize}: one VM has one page size`);
  }
  if (size === 0) fail(`${where} has size 0`);
  if (baseHostVirtAddr % BigInt(pageSize) !== 0n) {
    fail(`${where}.base_host_virt_addr ${hex(baseHostVirtAddr)} is not a multiple of the page size ${pageSize}`);
  }
  if (size % pageSize !== 0) fail(`${where}.size ${size} is not a multiple of the page size ${pageSize}`);
  if (offset % pageSize !== 0) fail(`${where}.offset ${offset} is not a multiple of the page size ${pageSize}`);
  if (baseHostVirtAddr + BigInt(size) > U64_END) {
    fail(`${where} runs past the end of the 64-bit address space: ${hex(baseHostVirtAddr)} + ${size}`);
  }
  const end = BigInt(offset) + BigInt(size);
  if (end > BigInt(memoryFileSize)) {
    fail(`${where} reaches past the end of the memory file: offset ${offset} + size ${size} = ${end} > ${memoryFileSize} bytes`);
  }
}

function checkDisjoint(regions: readonly GuestRegion[], start: (region: GuestRegion) => bigint, space: string): void {
  const order = regions.map((region, index) => ({ index, start: start(region), end: start(region) + BigInt(region.size) }));
  order.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : a.index - b.index));
  // Sizes are positive, so if any two ranges overlap, two neighbours in start order do.
  for (let i = 1; i < order.length; i++) {
    const a = order[i - 1];
    const b = order[i];
    if (a === undefined || b === undefined || a.end <= b.start) continue;
    const [x, y] = a.index < b.index ? [a, b] : [b, a];
    fail(`regions[${x.index}] and regions[${y.index}] overlap in ${space}: [${hex(x.start)}, ${hex(x.end)}) and [${hex(y.start)}, ${hex(y.end)})`);
  }
}

function hex(value: bigint): string {
  return `0x${value.toString(16)}`;
}
