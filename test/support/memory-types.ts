// The memory types the kernel selftests run on, made with the library's own Mapping.
import { freeHugePages, hugePageSize } from '../../src/system.js';
import type { FeatureName } from '../../src/index.js';
import { Mapping, probe } from '../../src/index.js';

export interface MemoryType {
  name: 'anon' | 'shmem' | 'shmem-private' | 'hugetlb' | 'hugetlb-private';
  hugetlb: boolean;
  shmem: boolean;
  /** Why this type cannot run here, or false. */
  skip: string | false;
  pageSize: number;
  /** A mapping of `pages` pages, and for memfd types a second mapping of the same pages. */
  make(pages: number): { mapping: Mapping; alias?: Mapping; close(): void };
}

const HUGE = hugePageSize();

function hugeSkip(pages: number): string | false {
  if (HUGE === 0) return 'no hugetlb support in this kernel';
  const free = freeHugePages();
  return free < pages ? `needs ${String(pages)} free huge pages, ${String(free)} free (sysctl vm.nr_hugepages)` : false;
}

function memfdType(name: MemoryType['name'], hugetlb: boolean, isPrivate: boolean): MemoryType {
  return {
    name, hugetlb, shmem: !hugetlb, skip: hugetlb ? hugeSkip(8) : false, pageSize: hugetlb ? HUGE : 4096,
    make(pages) {
      const mapping = Mapping.memfd(pages * (hugetlb ? HUGE : 4096), { name, hugetlb, private: isPrivate });
      const alias = mapping.alias();
      return { mapping, alias, close: () => { alias.close(); mapping.close(); } };
    },
  };
}

export const MEMORY_TYPES: readonly MemoryType[] = [
  {
    name: 'anon', hugetlb: false, shmem: false, skip: false, pageSize: 4096,
    make(pages) {
      const mapping = Mapping.anonymous(pages * 4096);
      return { mapping, close: () => { mapping.close(); } };
    },
  },
  memfdType('shmem', false, false),
  memfdType('shmem-private', false, true),
  memfdType('hugetlb', true, false),
  memfdType('hugetlb-private', true, true),
];

/** Skip reason when the kernel does not offer a feature (tests decide from the probe, not the version). */
export function needs(...features: FeatureName[]): string | false {
  const missing = features.filter((f) => !probe().features.has(f));
  return missing.length === 0 ? false : `this kernel does not offer ${missing.join(', ')}`;
}
