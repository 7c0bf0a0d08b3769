// A user-defined page source, as a module the resolver imports: bytes computed from their offset, with
// optional misbehaviour for the tests (failing reads, a length it cannot deliver, an async read).
import type { PageSource } from '../../src/index.js';

export interface PatternOptions {
  length: number;
  /** Reads covering this byte offset throw, the first `failTimes` times (Infinity: always). */
  failAt?: number;
  failTimes?: number;
  /** Claims `length` but holds only this many bytes. */
  realLength?: number;
  /** Answer through a promise resolved by a timer (no threadpool). */
  async?: boolean;
  /** The timer's delay for async reads (default 1 ms). */
  delayMs?: number;
  /** A read covering this offset ends the resolver thread abruptly (process.exit inside the worker). */
  exitAt?: number;
}

export const patternByte = (offset: number): number => (offset * 131 + (offset >>> 11)) & 0xff;

export default function createPatternSource(options: PatternOptions): PageSource {
  let failures = 0;
  const read = (offset: number, target: Uint8Array): number => {
    const { failAt, exitAt } = options;
    if (exitAt !== undefined && exitAt >= offset && exitAt < offset + target.length) process.exit(0);
    if (failAt !== undefined && failAt >= offset && failAt < offset + target.length && failures < (options.failTimes ?? Infinity)) {
      failures++;
      throw new Error(`pattern source: injected failure at ${String(failAt)}`);
    }
    const end = Math.min(offset + target.length, options.realLength ?? options.length, options.length);
    for (let i = offset; i < end; i++) target[i - offset] = patternByte(i);
    return Math.max(0, end - offset);
  };
  return {
    length: options.length,
    read: options.async === true
      ? (offset, target) => new Promise((resolve, reject) => {
          setTimeout(() => { try { resolve(read(offset, target)); } catch (err) { reject(err instanceof Error ? err : new Error(String(err))); } }, options.delayMs ?? 1);
        })
      : read,
  };
}
