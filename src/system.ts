// Which pages of a range are present, from /proc/self/pagemap (bit 63 of each 8-byte entry, one entry per
// base page; readable without privileges, which only hide the frame numbers).
import { closeSync, openSync, readSync } from 'node:fs';
import { PAGE_SIZE } from './validate.js';

/**
 * 1 for each present page of the `pages` pages of `pageSize` bytes at `address`, else 0; in this process, or
 * in process `pid` (which needs ptrace read access to it).
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
