// FeatureSet and IoctlSet: a kernel bitmask with names. Bits the library does not know (a newer kernel's)
// are kept and shown as `bit N`: dropping them would hide what the kernel offers, and rejecting them is
// the bug that made the Rust crate fail on every 6.6 kernel.
import type { FeatureName, IoctlName } from '../abi.js';
import { FEATURES, IOCTLS, U64_END } from '../abi.js';
import { describe } from '../validate.js';

class BitSet<Name extends string> implements Iterable<Name> {
  readonly mask: bigint;
  /** Known names, in bit order. */
  readonly names: readonly Name[];
  /** Set bits the library has no name for. */
  readonly unknownBits: readonly number[];

  protected constructor(mask: bigint, table: readonly { name: Name; bit: number }[]) {
    if (typeof mask !== 'bigint') throw new TypeError(`mask must be a bigint, got ${describe(mask)}`);
    if (mask < 0n || mask >= U64_END) throw new RangeError(`mask must be a u64, got ${String(mask)}`);
    this.mask = mask;
    const byBit = [...table].sort((a, b) => a.bit - b.bit);
    this.names = Object.freeze(byBit.filter((e) => (mask >> BigInt(e.bit)) & 1n).map((e) => e.name));
    const known = new Set(table.map((e) => e.bit));
    const unknown: number[] = [];
    for (let bit = 0; bit < 64; bit++) {
      if ((mask >> BigInt(bit)) & 1n && !known.has(bit)) unknown.push(bit);
    }
    this.unknownBits = Object.freeze(unknown);
  }

  has(name: Name): boolean {
    return this.names.includes(name);
  }

  get size(): number {
    return this.names.length + this.unknownBits.length;
  }

  [Symbol.iterator](): Iterator<Name> {
    return this.names[Symbol.iterator]();
  }

  /** Names, then `bit N` for each unknown bit: never dropped. */
  toJSON(): string[] {
    return [...this.names, ...this.unknownBits.map((bit) => `bit ${String(bit)}`)];
  }

  toString(): string {
    return this.toJSON().join(' ');
  }
}

export class FeatureSet extends BitSet<FeatureName> {
  static fromMask(mask: bigint): FeatureSet {
    return new FeatureSet(mask, FEATURES);
  }

  static fromNames(names: Iterable<FeatureName>): FeatureSet {
    return new FeatureSet(namesToMask(names, FEATURES, 'feature'), FEATURES);
  }

  static readonly EMPTY = new FeatureSet(0n, FEATURES);
}

export class IoctlSet extends BitSet<IoctlName> {
  static fromMask(mask: bigint): IoctlSet {
    return new IoctlSet(mask, IOCTLS);
  }

  static fromNames(names: Iterable<IoctlName>): IoctlSet {
    return new IoctlSet(namesToMask(names, IOCTLS, 'ioctl'), IOCTLS);
  }
}

function namesToMask<Name extends string>(names: Iterable<Name>, table: readonly { name: Name; bit: number }[], what: string): bigint {
  let mask = 0n;
  for (const name of names) {
    const entry = table.find((e) => e.name === name);
    if (entry === undefined) {
      throw new TypeError(`unknown userfaultfd ${what} ${JSON.stringify(name)}; known: ${table.map((e) => e.name).join(', ')}`);
    }
    mask |= 1n << BigInt(entry.bit);
  }
  return mask;
}
