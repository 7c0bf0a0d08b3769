// Preparing memory for write protection: registration with a reason when the kernel refuses the memory type,
// and the pages write protection would silently skip (never-touched anonymous memory without WP_UNPOPULATED).
import { readFileSync } from 'node:fs';
import { Mapping } from '../core/mapping.js';
import type { Userfaultfd } from '../core/uffd.js';
import { UffdError, UnsupportedFeatureError } from '../errors.js';
import { presentPages } from '../system.js';
import type { Range } from '../validate.js';
import type { Target } from './target.js';

const MADV_POPULATE_WRITE = 'POPULATE_WRITE';

/**
 * Without WP_UNPOPULATED (before 6.4) write protection skips never-touched anonymous pages: their first write
 * would go unseen. A Mapping of this process is populated (populateUntouched, after registration and before
 * protection, so that populating is not a write anyone sees); a range with untouched pages, which cannot be
 * populated from here, is refused at open rather than have writes missed.
 */
export function refuseUntouched(memory: Mapping | Range, target: Target): void {
  if (memory instanceof Mapping) return;
  const present = presentPages(target.address, target.pages, target.pageSize, target.pid);
  const missing = present.reduce((n, p) => n + (p === 0 ? 1 : 0), 0);
  if (missing === 0) return;
  if (target.pid === 'self') {
    throw new UnsupportedFeatureError(['WP_UNPOPULATED'], `${String(missing)} never-touched anonymous pages of the range cannot be write-protected; pass the Mapping (populated for you) or touch them first`);
  }
  throw new UnsupportedFeatureError(['WP_UNPOPULATED'], `${String(missing)} never-touched anonymous pages of process ${String(target.pid)} cannot be write-protected; the process must touch them first`);
}

export function populateUntouched(memory: Mapping | Range): void {
  if (memory instanceof Mapping) memory.madvise(MADV_POPULATE_WRITE);
}

/**
 * Registers the memory for WP faults. Registering replaces a range's modes, so modes the range already has
 * on this uffd (MISSING or MINOR, registered by the process that created it, e.g. a VMM whose page server
 * holds the uffd) are kept. With 'sync' their messages would reach the tracker's reader too and starve
 * whoever serves them: refused.
 */
export function registerWp(uffd: Userfaultfd, target: Target, method: 'async' | 'sync'): void {
  const existing = checkServed(target, method);
  try {
    uffd.register(target, { ...existing, wp: true });
  } catch (err) {
    if (err instanceof UffdError && err.code === 'EINVAL') {
      const hint = method === 'async'
        ? 'this memory type cannot be write-protected'
        : 'write protection works on anonymous memory (5.7), shmem and hugetlb (5.19 WP_HUGETLBFS_SHMEM); other file mappings need WP_ASYNC (6.7, method async)';
      throw new UffdError(err.errno, 'ioctl(UFFDIO_REGISTER)', { hint });
    }
    throw err;
  }
}

/** The modes the range has already; refuses 'sync' where another resolver reads this uffd's messages. */
export function checkServed(target: Target, method: 'async' | 'sync'): { missing: boolean; minor: boolean } {
  const existing = registeredModes(target);
  if (method === 'sync' && (existing.missing || existing.minor)) {
    throw new TypeError("the memory is registered for missing or minor faults on this uffd: method 'sync' would read the messages meant for the resolver that serves them");
  }
  return existing;
}

/** The userfaultfd modes of the mapping at the range's start, from VmFlags in /proc/<pid>/smaps (um, ui). */
function registeredModes(target: Target): { missing: boolean; minor: boolean } {
  const smaps = readFileSync(`/proc/${String(target.pid)}/smaps`, 'latin1');
  let inside = false;
  for (const line of smaps.split('\n')) {
    const head = /^([0-9a-f]+)-([0-9a-f]+) /.exec(line);
    if (head?.[1] !== undefined && head[2] !== undefined) {
      inside = BigInt(`0x${head[1]}`) <= target.address && target.address < BigInt(`0x${head[2]}`);
    } else if (inside && line.startsWith('VmFlags:')) {
      const flags = line.slice(8).trim().split(' ');
      return { missing: flags.includes('um'), minor: flags.includes('ui') };
    }
  }
  return { missing: false, minor: false };
}
