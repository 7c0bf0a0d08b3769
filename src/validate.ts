// Argument checks shared by the public API. They run before any syscall and name the wrong value. Pure:
// they never load the addon.
import { U64_END } from './abi.js';
import { PAGE_SIZE } from './system.js';

const PAGE_SIZE_BIG = BigInt(PAGE_SIZE);

export function describe(value: unknown): string {
  if (typeof value === 'bigint') return `${String(value)}n`;
  if (typeof value === 'string') return JSON.stringify(value);
  if (value === null || typeof value !== 'object') return String(value);
  return Object.prototype.toString.call(value);
}

export function isPositiveInt(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value > 0;
}

export function checkBoolean(value: unknown, name: string): boolean | undefined {
  if (value !== undefined && typeof value !== 'boolean') {
    throw new TypeError(`${name} must be a boolean, got ${describe(value)}`);
  }
  return value;
}

export function checkOptionsObject(value: unknown, name: string, known: readonly string[]): Record<string, unknown> {
  if (value === undefined) return {};
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new TypeError(`${name} must be an object, got ${describe(value)}`);
  }
  for (const key of Object.keys(value)) {
    if (!known.includes(key)) throw new TypeError(`${name}: unknown option ${JSON.stringify(key)}; known: ${known.join(', ')}`);
  }
  return value as Record<string, unknown>;
}

export function checkAddress(value: unknown, name: string, alignment: number): bigint {
  if (typeof value !== 'bigint') throw new TypeError(`${name} must be a bigint address, got ${describe(value)}`);
  if (value < 0n || value >= U64_END) throw new RangeError(`${name} ${describe(value)} is outside the u64 range`);
  if (value % (alignment === PAGE_SIZE ? PAGE_SIZE_BIG : BigInt(alignment)) !== 0n) {
    throw new RangeError(`${name} 0x${value.toString(16)} is not aligned to the ${String(alignment)}-byte page size`);
  }
  return value;
}

export function checkLength(value: unknown, name: string, alignment: number): number {
  if (!isPositiveInt(value)) throw new RangeError(`${name} must be a positive integer, got ${describe(value)}`);
  if (value % alignment !== 0) {
    throw new RangeError(`${name} ${String(value)} is not a multiple of the ${String(alignment)}-byte page size`);
  }
  return value;
}

/** A range of memory: a Mapping is one. `pageSize` (hugetlb mappings) raises the alignment required. */
export interface Range {
  readonly address: bigint;
  readonly length: number;
  readonly pageSize?: number;
}

export function checkRange(range: unknown, name = 'range'): { address: bigint; length: number; pageSize: number } {
  if (range === null || typeof range !== 'object') throw new TypeError(`${name} must be { address, length }, got ${describe(range)}`);
  const r = range as Partial<Range>;
  const pageSize = r.pageSize === undefined ? PAGE_SIZE : r.pageSize;
  if (!isPositiveInt(pageSize) || pageSize % PAGE_SIZE !== 0) throw new RangeError(`${name}.pageSize ${describe(pageSize)} is not a page size`);
  const address = checkAddress(r.address, `${name}.address`, pageSize);
  const length = checkLength(r.length, `${name}.length`, pageSize);
  if (address + BigInt(length) > U64_END) throw new RangeError(`${name} ends past the u64 range`);
  return { address, length, pageSize };
}

/**
 * Asserts `value` is a safe integer in [min, max] (both default to the safe-integer range). A RangeError
 * otherwise, or `error` where the API has always said TypeError (a descriptor that is not one).
 */
export function checkInteger(value: unknown, name: string, bounds: { min?: number; max?: number; error?: typeof RangeError | typeof TypeError } = {}): asserts value is number {
  const min = bounds.min ?? Number.MIN_SAFE_INTEGER;
  const max = bounds.max ?? Number.MAX_SAFE_INTEGER;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) {
    const range = max === Number.MAX_SAFE_INTEGER
      ? (min === 0 ? 'a non-negative integer' : min === 1 ? 'a positive integer' : `an integer of at least ${String(min)}`)
      : `an integer in [${String(min)}, ${String(max)}]`;
    throw new (bounds.error ?? RangeError)(`${name} must be ${range}, got ${describe(value)}`);
  }
}

/** Asserts `value` is one of `values` (compared with ===). */
export function checkOneOf<const T extends readonly unknown[]>(value: unknown, name: string, values: T): asserts value is T[number] {
  if (!values.includes(value)) {
    throw new TypeError(`${name} must be ${values.map(describeChoice).join(', ').replace(/, ([^,]*)$/, ' or $1')}, got ${describe(value)}`);
  }
}

function describeChoice(value: unknown): string {
  return typeof value === 'string' ? `'${value}'` : describe(value);
}
