// Reading /proc/self/smaps: whether a range is backed by transparent huge pages (a PMD mapping).
import { readFileSync } from 'node:fs';

/** AnonHugePages (bytes) of the mapping that contains `address`, or undefined when no mapping does. */
export function anonHugeBytes(address: bigint): number | undefined {
  let inside = false;
  for (const line of readFileSync('/proc/self/smaps', 'latin1').split('\n')) {
    const range = /^([0-9a-f]+)-([0-9a-f]+) /.exec(line);
    if (range?.[1] !== undefined && range[2] !== undefined) {
      inside = BigInt(`0x${range[1]}`) <= address && address < BigInt(`0x${range[2]}`);
      continue;
    }
    const huge = /^AnonHugePages:\s+(\d+) kB$/.exec(line);
    if (inside && huge?.[1] !== undefined) return Number(huge[1]) * 1024;
  }
  return undefined;
}
