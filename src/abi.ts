// Every constant of the userfaultfd uapi, carried here because the build machine's <linux/userfaultfd.h>
// is older than the kernels we run on (Debian 12 ships 6.1's: no MOVE, POISON, WP_ASYNC...).
// Values: include/uapi/linux/userfaultfd.h, checked on 6.18 (see test/abi.test.ts).

/** One past the largest u64: addresses, lengths and masks stay below it. */
export const U64_END = 1n << 64n;
export const UFFD_API = 0xaa;
export const UFFD_USER_MODE_ONLY = 1;
export const O_NONBLOCK = 0o4000;
export const O_CLOEXEC = 0o2000000;
export const FD_CLOEXEC = 1;
export const DEVICE_PATH = '/dev/userfaultfd';
/** The bit the kernel sets in ctx->features once UFFDIO_API succeeded; only visible in fdinfo. */
export const FEATURE_INITIALIZED_BIT = 31;

export type FeatureName =
  | 'PAGEFAULT_FLAG_WP' | 'EVENT_FORK' | 'EVENT_REMAP' | 'EVENT_REMOVE' | 'MISSING_HUGETLBFS'
  | 'MISSING_SHMEM' | 'EVENT_UNMAP' | 'SIGBUS' | 'THREAD_ID' | 'MINOR_HUGETLBFS' | 'MINOR_SHMEM'
  | 'EXACT_ADDRESS' | 'WP_HUGETLBFS_SHMEM' | 'WP_UNPOPULATED' | 'POISON' | 'WP_ASYNC' | 'MOVE';

export interface FeatureInfo {
  readonly name: FeatureName;
  readonly bit: number;
  /** The first mainline kernel that has it. */
  readonly since: string;
  /** True when requesting the bit changes what the kernel does; false when it only reports support. */
  readonly behavioural: boolean;
  readonly summary: string;
}

export const FEATURES: readonly FeatureInfo[] = Object.freeze([
  { name: 'PAGEFAULT_FLAG_WP', bit: 0, since: '5.7', behavioural: false, summary: 'write-protect faults on anonymous memory (WP registration works without requesting it)' },
  { name: 'EVENT_FORK', bit: 1, since: '4.11', behavioural: true, summary: 'fork() delivers a FORK event with a uffd for the child (needs CAP_SYS_PTRACE)' },
  { name: 'EVENT_REMAP', bit: 2, since: '4.11', behavioural: true, summary: 'mremap() of a registered range delivers a REMAP event' },
  { name: 'EVENT_REMOVE', bit: 3, since: '4.11', behavioural: true, summary: 'madvise(DONTNEED/REMOVE) delivers a REMOVE event' },
  { name: 'MISSING_HUGETLBFS', bit: 4, since: '4.11', behavioural: false, summary: 'missing faults on hugetlbfs' },
  { name: 'MISSING_SHMEM', bit: 5, since: '4.11', behavioural: false, summary: 'missing faults on shmem' },
  { name: 'EVENT_UNMAP', bit: 6, since: '4.11', behavioural: true, summary: 'munmap() of a registered range delivers an UNMAP event' },
  { name: 'SIGBUS', bit: 7, since: '4.14', behavioural: true, summary: 'faults raise SIGBUS in the faulting thread instead of queueing a message' },
  { name: 'THREAD_ID', bit: 8, since: '4.14', behavioural: true, summary: 'fault messages carry the faulting thread id' },
  { name: 'MINOR_HUGETLBFS', bit: 9, since: '5.13', behavioural: false, summary: 'minor faults (page in cache, not mapped) on hugetlbfs, resolved by CONTINUE' },
  { name: 'MINOR_SHMEM', bit: 10, since: '5.14', behavioural: false, summary: 'minor faults on shmem, resolved by CONTINUE' },
  { name: 'EXACT_ADDRESS', bit: 11, since: '5.18', behavioural: true, summary: 'fault messages carry the exact faulting address, not the page' },
  { name: 'WP_HUGETLBFS_SHMEM', bit: 12, since: '5.19', behavioural: false, summary: 'write-protect faults on hugetlbfs and shmem' },
  { name: 'WP_UNPOPULATED', bit: 13, since: '6.4', behavioural: true, summary: 'write-protecting anonymous memory also protects pages not yet populated' },
  { name: 'POISON', bit: 14, since: '6.6', behavioural: false, summary: 'UFFDIO_POISON: resolve a fault with a poisoned page (SIGBUS on access)' },
  { name: 'WP_ASYNC', bit: 15, since: '6.7', behavioural: true, summary: 'write-protect faults are resolved by the kernel, no message (dirty tracking with PAGEMAP_SCAN)' },
  { name: 'MOVE', bit: 16, since: '6.8', behavioural: false, summary: 'UFFDIO_MOVE: resolve a fault by moving pages instead of copying' },
] satisfies FeatureInfo[]);

export type IoctlName =
  | 'REGISTER' | 'UNREGISTER' | 'WAKE' | 'COPY' | 'ZEROPAGE' | 'MOVE' | 'WRITEPROTECT' | 'CONTINUE'
  | 'POISON' | 'API';

export interface IoctlInfo {
  readonly name: IoctlName;
  /** _UFFDIO_* bit number: the ioctl's nr, and its bit in the masks UFFDIO_API and UFFDIO_REGISTER return. */
  readonly bit: number;
  readonly since: string;
  readonly request: number;
  readonly structSize: number;
}

// _IOC(dir, type, nr, size) for x86_64/arm64: dir<<30 | size<<16 | type<<8 | nr.
const IOC_READ_WRITE = 3;
const IOC_READ = 2;
function ioc(dir: number, nr: number, size: number): number {
  return (dir * 2 ** 30 + size * 2 ** 16 + UFFD_API * 2 ** 8 + nr) >>> 0;
}

/** Struct sizes and field offsets, as the kernel lays them out (all fields u64 / s64, little-endian). */
export const STRUCTS = Object.freeze({
  uffdio_api: { size: 24, api: 0, features: 8, ioctls: 16 },
  uffdio_range: { size: 16, start: 0, len: 8 },
  uffdio_register: { size: 32, start: 0, len: 8, mode: 16, ioctls: 24 },
  uffdio_copy: { size: 40, dst: 0, src: 8, len: 16, mode: 24, copy: 32 },
  uffdio_zeropage: { size: 32, start: 0, len: 8, mode: 16, zeropage: 24 },
  uffdio_writeprotect: { size: 24, start: 0, len: 8, mode: 16 },
  uffdio_continue: { size: 32, start: 0, len: 8, mode: 16, mapped: 24 },
  uffdio_poison: { size: 32, start: 0, len: 8, mode: 16, updated: 24 },
  uffdio_move: { size: 40, dst: 0, src: 8, len: 16, mode: 24, move: 32 },
  uffd_msg: { size: 32, event: 0, arg: 8 },
} as const);

export const IOCTLS: readonly IoctlInfo[] = Object.freeze([
  { name: 'REGISTER', bit: 0x00, since: '4.3', request: ioc(IOC_READ_WRITE, 0x00, STRUCTS.uffdio_register.size), structSize: STRUCTS.uffdio_register.size },
  // UNREGISTER and WAKE are _IOR although the kernel reads them: a historical misnomer kept for the ABI.
  { name: 'UNREGISTER', bit: 0x01, since: '4.3', request: ioc(IOC_READ, 0x01, STRUCTS.uffdio_range.size), structSize: STRUCTS.uffdio_range.size },
  { name: 'WAKE', bit: 0x02, since: '4.3', request: ioc(IOC_READ, 0x02, STRUCTS.uffdio_range.size), structSize: STRUCTS.uffdio_range.size },
  { name: 'COPY', bit: 0x03, since: '4.3', request: ioc(IOC_READ_WRITE, 0x03, STRUCTS.uffdio_copy.size), structSize: STRUCTS.uffdio_copy.size },
  { name: 'ZEROPAGE', bit: 0x04, since: '4.3', request: ioc(IOC_READ_WRITE, 0x04, STRUCTS.uffdio_zeropage.size), structSize: STRUCTS.uffdio_zeropage.size },
  { name: 'MOVE', bit: 0x05, since: '6.8', request: ioc(IOC_READ_WRITE, 0x05, STRUCTS.uffdio_move.size), structSize: STRUCTS.uffdio_move.size },
  { name: 'WRITEPROTECT', bit: 0x06, since: '5.7', request: ioc(IOC_READ_WRITE, 0x06, STRUCTS.uffdio_writeprotect.size), structSize: STRUCTS.uffdio_writeprotect.size },
  { name: 'CONTINUE', bit: 0x07, since: '5.13', request: ioc(IOC_READ_WRITE, 0x07, STRUCTS.uffdio_continue.size), structSize: STRUCTS.uffdio_continue.size },
  { name: 'POISON', bit: 0x08, since: '6.6', request: ioc(IOC_READ_WRITE, 0x08, STRUCTS.uffdio_poison.size), structSize: STRUCTS.uffdio_poison.size },
  { name: 'API', bit: 0x3f, since: '4.3', request: ioc(IOC_READ_WRITE, 0x3f, STRUCTS.uffdio_api.size), structSize: STRUCTS.uffdio_api.size },
] satisfies IoctlInfo[]);

export function ioctlInfo(name: IoctlName): IoctlInfo {
  const info = IOCTLS.find((i) => i.name === name);
  if (info === undefined) throw new TypeError(`unknown ioctl ${name}`);
  return info;
}

export const REGISTER_MODE = Object.freeze({ MISSING: 1n, WP: 2n, MINOR: 4n });
export const COPY_MODE = Object.freeze({ DONTWAKE: 1n, WP: 2n });
export const ZEROPAGE_MODE = Object.freeze({ DONTWAKE: 1n });
export const WRITEPROTECT_MODE = Object.freeze({ WP: 1n, DONTWAKE: 2n });
export const CONTINUE_MODE = Object.freeze({ DONTWAKE: 1n, WP: 2n });
export const POISON_MODE = Object.freeze({ DONTWAKE: 1n });
export const MOVE_MODE = Object.freeze({ DONTWAKE: 1n, ALLOW_SRC_HOLES: 2n });

/** uffd_msg.event values. They start at 0x12 so that a zeroed buffer never reads as an event. */
export const EVENT = Object.freeze({ PAGEFAULT: 0x12, FORK: 0x13, REMAP: 0x14, REMOVE: 0x15, UNMAP: 0x16 });
export const PAGEFAULT_FLAG = Object.freeze({ WRITE: 1n, WP: 2n, MINOR: 4n });

/** A uffd_msg decoded field by field, before any interpretation. */
export type RawMessage =
  | { event: typeof EVENT.PAGEFAULT; flags: bigint; address: bigint; ptid: number }
  | { event: typeof EVENT.FORK; ufd: number }
  | { event: typeof EVENT.REMAP; from: bigint; to: bigint; len: bigint }
  | { event: typeof EVENT.REMOVE | typeof EVENT.UNMAP; start: bigint; end: bigint }
  | { event: number; raw: Uint8Array };

/** Decodes the 32-byte uffd_msg at `offset` (packed: u8 event, 7 reserved bytes, 24-byte union). */
export function decodeMessage(view: DataView, offset: number): RawMessage {
  const event = view.getUint8(offset);
  const arg = offset + STRUCTS.uffd_msg.arg;
  switch (event) {
    case EVENT.PAGEFAULT:
      return { event, flags: view.getBigUint64(arg, true), address: view.getBigUint64(arg + 8, true), ptid: view.getUint32(arg + 16, true) };
    case EVENT.FORK:
      return { event, ufd: view.getUint32(arg, true) };
    case EVENT.REMAP:
      return { event, from: view.getBigUint64(arg, true), to: view.getBigUint64(arg + 8, true), len: view.getBigUint64(arg + 16, true) };
    case EVENT.REMOVE:
    case EVENT.UNMAP:
      return { event, start: view.getBigUint64(arg, true), end: view.getBigUint64(arg + 8, true) };
    default:
      return { event, raw: new Uint8Array(view.buffer.slice(view.byteOffset + offset, view.byteOffset + offset + STRUCTS.uffd_msg.size)) };
  }
}

// madvise(2) advices Linux defines (include/uapi/asm-generic/mman-common.h), with the kernel that added each.
export type MadviseName =
  | 'NORMAL' | 'RANDOM' | 'SEQUENTIAL' | 'WILLNEED' | 'DONTNEED' | 'FREE' | 'REMOVE' | 'DONTFORK' | 'DOFORK'
  | 'MERGEABLE' | 'UNMERGEABLE' | 'HUGEPAGE' | 'NOHUGEPAGE' | 'DONTDUMP' | 'DODUMP' | 'WIPEONFORK'
  | 'KEEPONFORK' | 'COLD' | 'PAGEOUT' | 'POPULATE_READ' | 'POPULATE_WRITE' | 'DONTNEED_LOCKED' | 'COLLAPSE'
  | 'HWPOISON' | 'SOFT_OFFLINE' | 'GUARD_INSTALL' | 'GUARD_REMOVE';

export interface MadviseInfo {
  readonly name: MadviseName;
  readonly value: number;
  readonly since: string;
  /** False for advices that must never be given a length: as root they retire a physical page for good. */
  readonly safe: boolean;
}

export const MADVISE: readonly MadviseInfo[] = Object.freeze([
  { name: 'NORMAL', value: 0, since: '2.4', safe: true },
  { name: 'RANDOM', value: 1, since: '2.4', safe: true },
  { name: 'SEQUENTIAL', value: 2, since: '2.4', safe: true },
  { name: 'WILLNEED', value: 3, since: '2.4', safe: true },
  { name: 'DONTNEED', value: 4, since: '2.4', safe: true },
  { name: 'FREE', value: 8, since: '4.5', safe: true },
  { name: 'REMOVE', value: 9, since: '2.6.16', safe: true },
  { name: 'DONTFORK', value: 10, since: '2.6.16', safe: true },
  { name: 'DOFORK', value: 11, since: '2.6.16', safe: true },
  { name: 'MERGEABLE', value: 12, since: '2.6.32', safe: true },
  { name: 'UNMERGEABLE', value: 13, since: '2.6.32', safe: true },
  { name: 'HUGEPAGE', value: 14, since: '2.6.38', safe: true },
  { name: 'NOHUGEPAGE', value: 15, since: '2.6.38', safe: true },
  { name: 'DONTDUMP', value: 16, since: '3.4', safe: true },
  { name: 'DODUMP', value: 17, since: '3.4', safe: true },
  { name: 'WIPEONFORK', value: 18, since: '4.14', safe: true },
  { name: 'KEEPONFORK', value: 19, since: '4.14', safe: true },
  { name: 'COLD', value: 20, since: '5.4', safe: true },
  { name: 'PAGEOUT', value: 21, since: '5.4', safe: true },
  { name: 'POPULATE_READ', value: 22, since: '5.14', safe: true },
  { name: 'POPULATE_WRITE', value: 23, since: '5.14', safe: true },
  { name: 'DONTNEED_LOCKED', value: 24, since: '5.18', safe: true },
  { name: 'COLLAPSE', value: 25, since: '6.1', safe: true },
  { name: 'HWPOISON', value: 100, since: '2.6.32', safe: false },
  { name: 'SOFT_OFFLINE', value: 101, since: '2.6.33', safe: false },
  { name: 'GUARD_INSTALL', value: 102, since: '6.13', safe: true },
  { name: 'GUARD_REMOVE', value: 103, since: '6.13', safe: true },
] satisfies MadviseInfo[]);

// mmap(2) and memfd_create(2) flags used by Mapping and the probes.
export const PROT = Object.freeze({ NONE: 0, READ: 1, WRITE: 2 });
export const MAP = Object.freeze({ SHARED: 0x01, PRIVATE: 0x02, ANONYMOUS: 0x20, NORESERVE: 0x4000, POPULATE: 0x8000, HUGETLB: 0x40000 });
export const MFD = Object.freeze({ CLOEXEC: 1, HUGETLB: 4 });

// PAGEMAP_SCAN (Linux 6.7, include/uapi/linux/fs.h): an ioctl on /proc/<pid>/pagemap that reports page
// categories by range and can write-protect what it matched in the same walk (the read side of WP_ASYNC).
export const PAGEMAP_SCAN = Object.freeze({
  /** _IOWR('f', 16, struct pm_scan_arg) */
  request: 0xc0606610,
  /** struct pm_scan_arg: 12 u64 fields. `vec` is a user pointer to `vec_len` page_region entries. */
  arg: {
    size: 96, sizeField: 0, flags: 8, start: 16, end: 24, walkEnd: 32, vec: 40, vecLen: 48, maxPages: 56,
    categoryInverted: 64, categoryMask: 72, categoryAnyofMask: 80, returnMask: 88,
  },
  /** struct page_region { u64 start, end, categories } */
  region: { size: 24, start: 0, end: 8, categories: 16 },
} as const);
export const PM_SCAN = Object.freeze({ WP_MATCHING: 1n, CHECK_WPASYNC: 2n });
export const PAGE_IS = Object.freeze({
  WPALLOWED: 1n, WRITTEN: 2n, FILE: 4n, PRESENT: 8n, SWAPPED: 16n, PFNZERO: 32n, HUGE: 64n, SOFT_DIRTY: 128n,
});
