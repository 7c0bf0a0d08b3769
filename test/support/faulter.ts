// In-process faults without breaking the threading rule: a libuv threadpool thread reads a file into (or
// writes a file from) registered memory, so the faults are the kernel's, taken on a pool thread, while the
// main thread's event loop resolves them. The main thread itself never touches registered memory.
import { closeSync, mkdtempSync, openSync, read, rmSync, write, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Userfaultfd, UffdEventOf } from '../../src/index.js';

export class ScratchFile {
  readonly dir = mkdtempSync(join(tmpdir(), 'uffd-test-'));
  readonly path = join(this.dir, 'data');
  readonly fd: number;

  constructor(contents: Uint8Array) {
    writeFileSync(this.path, contents);
    this.fd = openSync(this.path, 'r+');
  }

  /** read(2) from the file into `target` on a pool thread: kernel-mode WRITE faults on `target`. */
  readInto(target: Uint8Array, position = 0): Promise<number> {
    return new Promise((resolve, reject) => {
      read(this.fd, target, 0, target.length, position, (err, n) => { if (err) reject(err); else resolve(n); });
    });
  }

  /** write(2) of `source` into the file on a pool thread: kernel-mode READ faults on `source`. */
  writeFrom(source: Uint8Array, position = 0): Promise<number> {
    return new Promise((resolve, reject) => {
      write(this.fd, source, 0, source.length, position, (err, n) => { if (err) reject(err); else resolve(n); });
    });
  }

  [Symbol.dispose](): void {
    closeSync(this.fd);
    rmSync(this.dir, { recursive: true });
  }
}

/** Runs `handle` for every event until the returned stop() is called; resolves to the events seen. */
export function serve(uffd: Userfaultfd, handle: (event: UffdEventOf) => void): { stop(): Promise<UffdEventOf[]> } {
  const abort = new AbortController();
  const seen: UffdEventOf[] = [];
  const loop = (async () => {
    try {
      for await (const event of uffd.events({ signal: abort.signal })) {
        seen.push(event);
        handle(event);
      }
    } catch (err) {
      // A failing handler must not leave a pool thread asleep in its fault (the test file would never end):
      // closing the uffd wakes it.
      uffd.close();
      throw err;
    }
    return seen;
  })();
  return {
    stop: () => {
      abort.abort();
      return loop;
    },
  };
}

/** Lets the event loop turn until `predicate` holds (a pending fault has been queued, say), or fails. */
export async function until(predicate: () => boolean, what: string, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}
