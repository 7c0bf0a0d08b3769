// What a tracker or snapshot works on: a page-aligned range of this process's memory, or of another process
// whose uffd the caller holds (the uffd acts on its creator's address space; the process is named by pid for
// /proc/<pid>/pagemap).
import { readFileSync } from 'node:fs';
import { Mapping } from '../core/mapping.js';
import { Userfaultfd } from '../core/uffd.js';
import { checkRange, describe } from '../validate.js';

export interface Target {
  readonly address: bigint;
  readonly length: number;
  readonly pageSize: number;
  readonly pages: number;
  /** 'self', or the pid of the process that created `uffd`. */
  readonly pid: number | 'self';
  /** The caller's uffd for another process's memory; undefined when the tracker creates its own. */
  readonly uffd: Userfaultfd | undefined;
  /** Private anonymous memory: the only kind whose never-touched pages need WP_UNPOPULATED to be protected. */
  readonly anonymous: boolean;
}

/** Options naming another process's memory: its uffd (registered or not) and its pid. */
export interface ProcessOption {
  uffd: Userfaultfd;
  pid: number;
}

export function resolveTarget(memory: unknown, processOption: unknown, name: string): Target {
  const range = memory instanceof Mapping ? memory : checkRange(memory, name);
  const { address, length } = range;
  const pageSize = range.pageSize ?? 4096;
  if (memory instanceof Mapping && memory.closed) throw Object.assign(new TypeError(`${name} is closed`), { code: 'ERR_UFFD_CLOSED' });
  let pid: number | 'self' = 'self';
  let uffd: Userfaultfd | undefined;
  if (processOption !== undefined) {
    const p = processOption as Partial<ProcessOption>;
    if (p === null || typeof p !== 'object' || !(p.uffd instanceof Userfaultfd)) {
      throw new TypeError(`process must be { uffd: Userfaultfd, pid: number }, got ${describe(processOption)}`);
    }
    if (!Number.isSafeInteger(p.pid) || (p.pid as number) <= 0) throw new TypeError(`process.pid must be a positive integer, got ${describe(p.pid)}`);
    if (p.uffd.closed) throw Object.assign(new TypeError('process.uffd is closed'), { code: 'ERR_UFFD_CLOSED' });
    if (memory instanceof Mapping) throw new TypeError('a Mapping is memory of this process: pass a { address, length } range of the other process');
    pid = p.pid as number;
    uffd = p.uffd;
  }
  return { address, length, pageSize, pages: length / pageSize, pid, uffd, anonymous: isPrivateAnonymous(pid, address, length) };
}

/** Whether any mapping overlapping the range is private anonymous memory (inode 0 in /proc/<pid>/maps). */
function isPrivateAnonymous(pid: number | 'self', address: bigint, length: number): boolean {
  const end = address + BigInt(length);
  for (const line of readFileSync(`/proc/${String(pid)}/maps`, 'latin1').split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ (\d+)/.exec(line);
    if (m?.[1] === undefined || m[2] === undefined) continue;
    if (BigInt(`0x${m[2]}`) > address && BigInt(`0x${m[1]}`) < end && m[3] === '0') return true;
  }
  return false;
}
