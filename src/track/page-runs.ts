// Dirty pages as runs of consecutive pages, in offsets from the start of the tracked memory.
export interface ByteRange {
  offset: number;
  length: number;
}

export class PageRuns {
  readonly ranges: ByteRange[] = [];
  pages = 0;
  readonly #pageSize: number;

  constructor(pageSize: number) {
    this.#pageSize = pageSize;
  }

  /** Adds pages [first, first + count), merging with the last run when they touch. */
  add(first: number, count: number): void {
    const offset = first * this.#pageSize;
    const length = count * this.#pageSize;
    const last = this.ranges.at(-1);
    if (last !== undefined && last.offset + last.length === offset) last.length += length;
    else this.ranges.push({ offset, length });
    this.pages += count;
  }
}
