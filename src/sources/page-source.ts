// What a page source is, below everything that opens or implements one (source.ts opens the built-in and
// remote kinds; chunked-source.ts implements one).

/** A source of bytes, read a page-aligned range at a time. */
export interface PageSource {
  /** Bytes in the source; the memory is this rounded up to whole pages (the tail reads as zeros). */
  readonly length: number;
  /**
   * Fills `target` with the bytes at [offset, offset + target.length), clipped to `length`, and returns how
   * many it wrote. Fewer than asked (within `length`) means the source is shorter than it claimed: an error.
   * May return a promise; it must not use the libuv threadpool.
   */
  read(offset: number, target: Uint8Array): number | Promise<number>;
  /** Called once when the memory is closed. */
  close?(): void | Promise<void>;
  /**
   * Optional zero-copy path: the source's bytes already in this process's memory (a read-only mapping),
   * for UFFDIO_COPY to read directly. The view must be exactly [offset, offset + length): any other length
   * is a source error (handled by the error policy, like a failed read); undefined means "use read()".
   */
  view?(offset: number, length: number): Uint8Array | undefined;
  /** Built-in sources only: the source's bytes at a fixed address of this process, copied from directly. */
  readonly [sourceMemory]?: SourceMemory;
  /** Optional, for remote sources: start fetching these bytes in the background (working-set prefetch). */
  prefetch?(offset: number, length: number): void;
  /** Optional counters for summaries (a remote source: bytes fetched, requests, retries, cache hits). */
  stats?(): Record<string, number>;
}

/** The key of a built-in source's memory (not exported from the package: user sources use view()). */
export const sourceMemory = Symbol('sourceMemory');

/** Bytes [0, length) of a source at `address` in this process, alive until the source is closed. */
export interface SourceMemory {
  readonly address: number;
  readonly length: number;
}
