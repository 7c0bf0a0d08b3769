// Facts about the machine that the kernel tells every process without the addon: the base page size (the
// AT_PAGESZ entry of the auxiliary vector: 4 KiB on x86_64, 4/16/64 KiB on arm64), the default huge page
// size and the free huge pages (/proc/meminfo), and which pages of a range are present (/proc/PID/pagemap).
import { closeSync, openSync, readFileSync, readSync } from 'node:fs';

const AT_NULL = 0n;
const AT_PAGESZ = 6n;

function auxvPageSize(): number {
  // The auxiliary vector is (type, value) pairs of native words, little-endian u64 on the 64-bit Linux we run on.
  const auxv = readFileSync('/proc/self/auxv');
  for (let at = 0; at + 16 <= auxv.length; at += 16) {
    const type = auxv.readBigUInt64LE(at);
    if (type === AT_NULL) break;
    if (type === AT_PAGESZ) return Number(auxv.readBigUInt64LE(at + 8));
  }
  throw new Error('userfaultfd: /proc/self/auxv has no AT_PAGESZ entry');
}

/** The base page size of this machine in bytes. */
export const PAGE_SIZE = auxvPageSize();

/** The default huge page size (the one MAP_HUGETLB and MFD_HUGETLB use) in bytes; 0 without hugetlb. */
export function hugePageSize(): number {
  const match = /^Hugepagesize:\s+(\d+) kB$/m.exec(readMeminfo());
  return match?.[1] === undefined ? 0 : Number(match[1]) * 1024;
}

/** Huge pages of the default size free in the pool (vm.nr_hugepages minus those in use). */
export function freeHugePages(): number {
  const match = /^HugePages_Free:\s+(\d+)$/m.exec(readMeminfo());
  return match?.[1] === undefined ? 0 : Number(match[1]);
}

/** Free huge pages not yet promised to a mapping (HugePages_Free counts the reserved ones too). */
export function unreservedHugePages(): number {
  const reserved = /^HugePages_Rsvd:\s+(\d+)$/m.exec(readMeminfo());
  return freeHugePages() - (reserved?.[1] === undefined ? 0 : Number(reserved[1]));
}

function readMeminfo(): string {
  return readFileSync('/proc/meminfo', 'latin1');
}

/**
 * 1 for each present page of the `pages` pages of `pageSize` bytes at `address`, else 0: bit 63 of each
 * 8-byte pagemap entry, one entry per base page (readable without privileges, which only hide the frames);
 * in this process, or in process `pid` (which needs ptrace read access to it).
 */
export function presentPages(address: bigint, pages: number, pageSize: number, pid: number | 'self' = 'self'): Uint8Array {
  const present = new Uint8Array(pages);
  const step = pageSize / PAGE_SIZE;
  const first = Number(address / BigInt(PAGE_SIZE));
  const CHUNK = 4096; // pages per read
  const entries = Buffer.alloc(CHUNK * step * 8);
  const fd = openSync(`/proc/${String(pid)}/pagemap`, 'r');
  try {
    for (let base = 0; base < pages; base += CHUNK) {
      const n = Math.min(CHUNK, pages - base);
      readSync(fd, entries, 0, n * step * 8, (first + base * step) * 8);
      for (let i = 0; i < n; i++) present[base + i] = entries.readBigUInt64LE(i * step * 8) >> 63n === 1n ? 1 : 0;
    }
  } finally {
    closeSync(fd);
  }
  return present;
}
