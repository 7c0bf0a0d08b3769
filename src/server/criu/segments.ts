// A restored process's lazy memory as the kernel's events reshape it: sorted, disjoint segments, each a run
// of pages served from the pages file by its own PageFiller (so no copy ever spans two memory areas).
// UNMAP and REMOVE cut pages out (they read as zeros from then on), REMAP moves them, FORK clones them.
import type { LazyRun } from './lazy-layout.js';
import { CRIU_PAGE_SIZE } from './images.js';

const PAGE = BigInt(CRIU_PAGE_SIZE);

export interface Segment<F> {
  start: bigint;
  end: bigint;
  fileOffset: number;
  filler: F;
}

/** Makes the filler of a (new or reshaped) segment. */
export type MakeFiller<F> = (start: bigint, pages: number, fileOffset: number) => F;

export class SegmentMap<F> {
  #segments: Segment<F>[];
  readonly #make: MakeFiller<F>;

  constructor(runs: readonly { start: bigint; end: bigint; fileOffset: number }[], make: MakeFiller<F>) {
    this.#make = make;
    this.#segments = runs.map((r) => this.#segment(r.start, r.end, r.fileOffset));
  }

  static fromRuns<F>(runs: readonly LazyRun[], make: MakeFiller<F>): SegmentMap<F> {
    return new SegmentMap(runs.map((r) => ({ start: r.start, end: r.start + BigInt(r.pages) * PAGE, fileOffset: r.fileOffset })), make);
  }

  get segments(): readonly Segment<F>[] {
    return this.#segments;
  }

  get pages(): number {
    return this.#segments.reduce((n, s) => n + Number((s.end - s.start) / PAGE), 0);
  }

  /** The segment holding `address`, by binary search. */
  find(address: bigint): Segment<F> | undefined {
    let lo = 0;
    let hi = this.#segments.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const s = this.#segments[mid];
      if (s === undefined) break;
      if (address < s.start) hi = mid - 1;
      else if (address >= s.end) lo = mid + 1;
      else return s;
    }
    return undefined;
  }

  /** [start, end) is gone or zeroed (UNMAP, REMOVE): no page of it is served from the image any more. */
  drop(start: bigint, end: bigint): void {
    this.#cut(start, end);
  }

  /** [from, from + length) moved to `to` (REMAP): whatever was at the destination is gone. */
  move(from: bigint, to: bigint, length: number): void {
    const end = from + BigInt(length);
    const moved = this.#cut(from, end);
    this.#cut(to, to + BigInt(length));
    const shift = to - from;
    for (const s of moved) this.#segments.push(this.#segment(s.start + shift, s.end + shift, s.fileOffset));
    this.#segments.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  }

  /** The same ranges with new fillers (a forked child's copy, served through its own uffd). */
  clone<G>(make: MakeFiller<G>): SegmentMap<G> {
    return new SegmentMap(this.#segments, make);
  }

  /**
   * Removes [start, end) from the map and returns the pieces that were inside it (without fillers, for
   * move). Segments cut partly are replaced by new ones: their fillers' progress is forgotten, which is
   * safe because a page that is already present is never overwritten (UFFDIO_COPY answers EEXIST).
   */
  #cut(start: bigint, end: bigint): { start: bigint; end: bigint; fileOffset: number }[] {
    const inside: { start: bigint; end: bigint; fileOffset: number }[] = [];
    if (start >= end) return inside;
    const kept: Segment<F>[] = [];
    for (const s of this.#segments) {
      if (s.end <= start || s.start >= end) {
        kept.push(s);
        continue;
      }
      const lo = s.start > start ? s.start : start;
      const hi = s.end < end ? s.end : end;
      inside.push({ start: lo, end: hi, fileOffset: s.fileOffset + Number(lo - s.start) });
      if (s.start < lo) kept.push(this.#segment(s.start, lo, s.fileOffset));
      if (hi < s.end) kept.push(this.#segment(hi, s.end, s.fileOffset + Number(hi - s.start)));
    }
    this.#segments = kept.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
    return inside;
  }

  #segment(start: bigint, end: bigint, fileOffset: number): Segment<F> {
    return { start, end, fileOffset, filler: this.#make(start, Number((end - start) / PAGE), fileOffset) };
  }
}
