// probeMemory(): for each memory type and registration mode, the ioctl mask a real UFFDIO_REGISTER reported
// and which of those ioctls really work on a scratch page. The mask over-reports (MOVE on shmem is EINVAL,
// COPY/ZEROPAGE/POISON are listed for WP-only ranges), so each is tried.
import type { IoctlName } from '../abi.js';
import { ERRNO, UffdError } from '../errors.js';
import { Mapping } from '../core/mapping.js';
import { IoctlSet } from '../core/sets.js';
import { openPreferringFull } from '../core/uffd.js';
import type { Userfaultfd } from '../core/uffd.js';
import { freeHugePages, hugePageSize, PAGE_SIZE } from '../system.js';

export type MemoryType = 'anon' | 'shmem' | 'hugetlb';
export type RegisterMode = 'missing' | 'wp' | 'minor';
export const MEMORY_TYPES: readonly MemoryType[] = ['anon', 'shmem', 'hugetlb'];
export const REGISTER_MODES: readonly RegisterMode[] = ['missing', 'wp', 'minor'];

export type ModeProbe =
  | { ok: true; reported: IoctlSet; works: IoctlSet; failed: Partial<Record<IoctlName, string>> }
  | { ok: false; code: string };

export type MemoryProbe =
  | { pageSize: number; skipped?: undefined; modes: Record<RegisterMode, ModeProbe> }
  | { pageSize: number; skipped: string };

export type MemoryProbes = Record<MemoryType, MemoryProbe>;

// Ioctls tried, each on its own scratch page (index into the scratch mapping).
const TRIALS: readonly IoctlName[] = ['WAKE', 'COPY', 'ZEROPAGE', 'MOVE', 'WRITEPROTECT', 'CONTINUE', 'POISON'];
const HUGE_PAGES_NEEDED = 3; // COPY's page, CONTINUE's page cache page, and one of slack

export function probeMemory(): MemoryProbes {
  const huge = hugePageSize();
  const hugetlb: MemoryProbe = huge === 0
    ? { pageSize: 0, skipped: 'this kernel has no hugetlb support' }
    : freeHugePages() < HUGE_PAGES_NEEDED
      ? { pageSize: huge, skipped: `fewer than ${String(HUGE_PAGES_NEEDED)} free huge pages (reserve some: sysctl vm.nr_hugepages=${String(HUGE_PAGES_NEEDED * 2)})` }
      : probeType('hugetlb', huge);
  return { anon: probeType('anon', PAGE_SIZE), shmem: probeType('shmem', PAGE_SIZE), hugetlb };
}

function probeType(type: MemoryType, pageSize: number): MemoryProbe {
  const modes = {} as Record<RegisterMode, ModeProbe>;
  for (const mode of REGISTER_MODES) modes[mode] = probeMode(type, mode);
  return { pageSize, modes };
}

function scratch(type: MemoryType, length: number): Mapping {
  return type === 'anon' ? Mapping.anonymous(length) : Mapping.memfd(length, { name: 'uffd-probe', hugetlb: type === 'hugetlb' });
}

function probeMode(type: MemoryType, mode: RegisterMode): ModeProbe {
  const opened: { close(): void }[] = [];
  const open = <T extends { close(): void }>(thing: T): T => {
    opened.push(thing);
    return thing;
  };
  try {
    const mapping = open(scratch(type, TRIALS.length * (type === 'hugetlb' ? hugePageSize() : PAGE_SIZE)));
    const page = mapping.pageSize;
    const uffd = open(openPreferringFull({ request: ['WP_UNPOPULATED'] }).uffd);
    const moveSource = open(Mapping.anonymous(page));
    const alias = type === 'anon' ? undefined : open(mapping.alias());
    let reported: IoctlSet;
    try {
      reported = uffd.register(mapping, { [mode]: true });
    } catch (err) {
      if (err instanceof UffdError) return { ok: false, code: err.code };
      throw err;
    }
    const works: IoctlName[] = [];
    const failed: Partial<Record<IoctlName, string>> = {};
    for (const [index, name] of TRIALS.entries()) {
      if (!reported.has(name)) continue;
      const range = { address: mapping.address + BigInt(index * page), length: page, pageSize: page };
      try {
        tryIoctl(name, uffd, range, moveSource, alias, index * page);
        works.push(name);
      } catch (err) {
        if (!(err instanceof UffdError)) throw err;
        failed[name] = err.code;
      }
    }
    return { ok: true, reported, works: IoctlSet.fromNames(works), failed };
  } finally {
    for (const thing of opened.reverse()) thing.close();
  }
}

function tryIoctl(name: IoctlName, uffd: Userfaultfd, range: { address: bigint; length: number; pageSize: number }, moveSource: Mapping, alias: Mapping | undefined, offset: number): void {
  switch (name) {
    case 'WAKE':
      uffd.wake(range);
      return;
    case 'COPY':
      uffd.copy(range.address, new Uint8Array(range.length).fill(0x5a));
      return;
    case 'ZEROPAGE':
      uffd.zeropage(range);
      return;
    case 'MOVE':
      new Uint8Array(moveSource.buffer).fill(0xa5); // populated, exclusive anon pages: MOVE's source
      uffd.move(range.address, moveSource.address, range.length);
      return;
    case 'WRITEPROTECT':
      uffd.writeProtect(range, true);
      uffd.writeProtect(range, false);
      return;
    case 'CONTINUE':
      if (alias === undefined) throw new UffdError(ERRNO.EINVAL, 'ioctl(UFFDIO_CONTINUE)');
      new Uint8Array(alias.view(offset, range.length)).fill(0x3c); // the page cache page CONTINUE maps
      uffd.continue(range);
      return;
    case 'POISON':
      uffd.poison(range);
      return;
    default:
      return;
  }
}
