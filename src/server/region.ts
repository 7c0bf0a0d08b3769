// A region of a client's guest memory, as a page server serves it, whatever protocol announced it.

export interface GuestRegion {
  /** Where the region starts in the client's address space (u64; kept exact, addresses need not fit 2^53). */
  baseHostVirtAddr: bigint;
  /** Bytes. */
  size: number;
  /** Where the region's contents start in the memory file. */
  offset: number;
  /** Bytes: the base page size, or the huge page size for hugetlbfs-backed memory. */
  pageSize: number;
}
