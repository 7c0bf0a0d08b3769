// probeMadvise(): which madvise advices this kernel knows, and which work on each memory type.
// madvise(addr, 0, advice) validates the advice and returns 0 without doing anything (EINVAL for an advice
// the kernel does not know), so every advice can be asked safely that way, even HWPOISON and SOFT_OFFLINE.
// Those two are never given a length: as root they take a physical page out of service for good.
import type { MadviseName } from '../abi.js';
import { MADVISE } from '../abi.js';
import { native } from '../binding.js';
import { errnoName } from '../errors.js';
import { Mapping } from '../core/mapping.js';
import { freeHugePages, hugePageSize, PAGE_SIZE } from '../system.js';
import type { MemoryType } from './memory.js';

export interface MadviseProbe {
  name: MadviseName;
  value: number;
  since: string;
  /** The kernel accepts the advice (length-0 call returned 0). */
  known: boolean;
  /** Tried on a scratch mapping per memory type: 'ok', the errno code, 'unknown', or 'unsafe, not tried'. */
  memory: Record<MemoryType, string>;
}

export function probeMadvise(): MadviseProbe[] {
  const probeMap = Mapping.anonymous(PAGE_SIZE);
  try {
    return MADVISE.map((advice) => {
      const known = native.madvise(probeMap.address, 0, advice.value) === 0;
      const memory = {} as Record<MemoryType, string>;
      for (const type of ['anon', 'shmem', 'hugetlb'] as const) {
        memory[type] = !known ? 'unknown' : advice.safe ? tryOn(type, advice.value) : 'unsafe, not tried';
      }
      return { name: advice.name, value: advice.value, since: advice.since, known, memory };
    });
  } finally {
    probeMap.close();
  }
}

function tryOn(type: MemoryType, advice: number): string {
  if (type === 'hugetlb' && (hugePageSize() === 0 || freeHugePages() < 2)) return 'no huge pages';
  const mapping = type === 'anon'
    ? Mapping.anonymous(2 * PAGE_SIZE)
    : Mapping.memfd(type === 'hugetlb' ? hugePageSize() : 2 * PAGE_SIZE, { name: 'uffd-probe', hugetlb: type === 'hugetlb' });
  try {
    new Uint8Array(mapping.buffer).fill(1); // populated pages: DONTNEED, PAGEOUT and friends have work to do
    const rc = native.madvise(mapping.address, mapping.length, advice);
    return rc === 0 ? 'ok' : errnoName(rc);
  } finally {
    mapping.close();
  }
}
