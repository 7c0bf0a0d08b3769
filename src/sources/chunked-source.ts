// A page source over an object read in fixed-size chunks through a ChunkCache: reads that find their
// chunks in memory or on disk answer synchronously (no promise turn per fault); the others wait for the
// chunks' fetches, started together. Sequential reads fetch the next chunks ahead, up to the connection
// limit, so a streaming restore keeps the network busy while faults are served.
import type { PageSource } from './page-source.js';
import { ChunkCache } from './chunk-cache.js';
import type { ChunkCacheStats } from './chunk-cache.js';

export interface ChunkedObject {
  length: number;
  chunkSize: number;
  /** Chunk `index`'s bytes (chunkSize of them, fewer for the last chunk), verified; `urgent` for demand reads. */
  fetch(index: number, urgent: boolean): Promise<Uint8Array>;
  /** A demand read now waits for chunk `index`, whose fetch may have been queued in the background. */
  promote(index: number): void;
  /** True when chunk `index` is known to be all zeros without fetching it (omitted from a pack). */
  isZero?(index: number): boolean;
  /** Chunks fetched ahead of a sequential reader. */
  ahead: number;
  close(): void;
  /** Counters of the transport (requests, retries, bytes) for summaries. */
  transportStats(): Record<string, number>;
}

export interface RemoteSourceStats extends ChunkCacheStats {
  [name: string]: number;
}

export interface RemotePageSource extends PageSource {
  stats(): RemoteSourceStats;
  /** Starts fetching the chunks under [offset, offset + length) in the background (working-set prefetch). */
  prefetch(offset: number, length: number): void;
}

export function chunkedSource(object: ChunkedObject, cache: ChunkCache): RemotePageSource {
  const { length, chunkSize } = object;
  const chunks = Math.ceil(length / chunkSize);
  let lastChunk = -2;
  const noteFailure = (): void => undefined;

  const load = (index: number, urgent: boolean): Uint8Array | Promise<Uint8Array> | undefined => {
    if (object.isZero?.(index) === true) return undefined;
    const got = cache.obtain(index, () => object.fetch(index, urgent));
    if (urgent && got instanceof Promise) object.promote(index);
    return got;
  };
  const startAhead = (from: number): void => {
    for (let i = from; i < Math.min(chunks, from + object.ahead); i++) {
      if (cache.pending(i) || object.isZero?.(i) === true) continue;
      const got = load(i, false);
      if (got instanceof Promise) got.catch(noteFailure); // a failed read-ahead is retried by its own read
    }
  };
  const copy = (offset: number, target: Uint8Array, n: number, parts: (Uint8Array | undefined)[], first: number): number => {
    for (let done = 0; done < n;) {
      const at = offset + done;
      const index = Math.floor(at / chunkSize);
      const from = at - index * chunkSize;
      const size = Math.min(n - done, chunkSize - from);
      const part = parts[index - first];
      if (part === undefined) target.fill(0, done, done + size);
      else {
        if (part.length < from + size) throw new Error(`chunk ${String(index)} holds ${String(part.length)} bytes, fewer than the ${String(from + size)} needed`);
        target.set(part.subarray(from, from + size), done);
      }
      done += size;
    }
    return n;
  };

  return {
    length,
    read(offset, target) {
      const n = Math.max(0, Math.min(target.length, length - offset));
      if (n === 0) return 0;
      const first = Math.floor(offset / chunkSize);
      const last = Math.floor((offset + n - 1) / chunkSize);
      const sequential = first === lastChunk || first === lastChunk + 1;
      lastChunk = last;
      const parts: (Uint8Array | Promise<Uint8Array> | undefined)[] = [];
      let waiting = false;
      for (let i = first; i <= last; i++) {
        const part = load(i, true);
        if (part instanceof Promise) waiting = true;
        parts.push(part);
      }
      if (sequential) startAhead(last + 1);
      if (!waiting) return copy(offset, target, n, parts as (Uint8Array | undefined)[], first);
      return Promise.all(parts.map(async (part) => part)).then((ready) => copy(offset, target, n, ready, first));
    },
    prefetch(offset, bytes) {
      const first = Math.floor(Math.max(0, offset) / chunkSize);
      const last = Math.min(chunks - 1, Math.floor((offset + Math.max(1, bytes) - 1) / chunkSize));
      for (let i = first; i <= last; i++) {
        if (cache.pending(i)) continue;
        const got = load(i, false);
        if (got instanceof Promise) got.catch(noteFailure);
      }
    },
    stats: () => ({ ...cache.stats, ...object.transportStats() }),
    close: () => {
      object.close();
      cache.close();
    },
  };
}
