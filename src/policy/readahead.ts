// Read-ahead: how many pages to fill on a fault, a pure function of the fault history.

export interface ReadaheadPolicy {
  /** Pages to fill starting at the faulting page (at least 1). */
  next(page: number): number;
}

export function fixedReadahead(pages: number): ReadaheadPolicy {
  return { next: () => pages };
}

/**
 * Like the kernel's own read-ahead: a fault right where the last window ended is sequential, and the window
 * doubles (up to `max`); any other fault is random, and the window halves (down to 1), so random access
 * stops paying for pages it never reads.
 */
export function autoReadahead(options?: { initial?: number; max?: number }): ReadaheadPolicy {
  const max = options?.max ?? 256;
  let window = Math.min(options?.initial ?? 4, max);
  let expected = -1;
  let lastStart = -1;
  return {
    next(page) {
      const sequential = page === expected || (page > lastStart && page < expected);
      window = sequential ? Math.min(window * 2, max) : Math.max(1, window >> 1);
      lastStart = page;
      expected = page + window;
      return window;
    },
  };
}
