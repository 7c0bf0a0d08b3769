// The resolver thread of a 'sync' DirtyTracker. A write to a protected page raises a WP fault; this thread
// records the page, unprotects it and wakes the writer. It never touches the tracked memory (the threading
// rule: the thread that resolves faults must not be one that writes).
//
// Order matters for never losing a write: unprotect without waking, then set the page's bit, then wake.
// collect() on the main thread clears bits first and re-protects those pages after, so a page is writable
// only while its bit is set (or about to be, by this thread); a write that lands after collect() cleared the
// bit either faults again (re-protected) or finds the bit set again for the next collect().
import { parentPort, workerData } from 'node:worker_threads';
import { Userfaultfd } from '../core/uffd.js';

export interface SyncWorkerInput {
  fd: number;
  base: bigint;
  pageSize: number;
  pages: number;
  /** One bit per page, Int32 words. */
  bits: SharedArrayBuffer;
  /** [0] WP faults handled. */
  counters: SharedArrayBuffer;
}

export type FromSyncWorker = { type: 'ready' } | { type: 'failed'; message: string };

if (parentPort === null) throw new Error('track/sync-worker.js runs only as a worker thread');
const port = parentPort;
const input = workerData as SyncWorkerInput;
const bits = new Int32Array(input.bits);
const counters = new Float64Array(input.counters);
const stop = new AbortController();
port.on('message', (m: unknown) => { if (m === 'stop') stop.abort(); });

const uffd = Userfaultfd.fromFd(input.fd);
const size = BigInt(input.pageSize);
const end = input.base + BigInt(input.pages) * size;
try {
  port.postMessage({ type: 'ready' } satisfies FromSyncWorker);
  for await (const event of uffd.events({ signal: stop.signal })) {
    if (event.type !== 'pagefault' || event.kind !== 'wp' || event.address < input.base || event.address >= end) continue;
    const page = Number((event.address - input.base) / size);
    const range = { address: input.base + BigInt(page) * size, length: input.pageSize, pageSize: input.pageSize };
    uffd.writeProtect(range, false, { wake: false });
    Atomics.or(bits, page >>> 5, 1 << (page & 31));
    counters[0] = (counters[0] ?? 0) + 1;
    uffd.wake(range);
  }
} catch (err) {
  // After close() unregistered the range, an in-flight unprotect fails: nobody is left to wake.
  if (!stop.signal.aborted) {
    // Fail open, never hang: unprotect and wake everything; the tracker reports the failure on collect().
    try {
      uffd.writeProtect({ address: input.base, length: input.pages * input.pageSize, pageSize: input.pageSize }, false);
    } finally {
      port.postMessage({ type: 'failed', message: err instanceof Error ? err.message : String(err) } satisfies FromSyncWorker);
    }
  }
} finally {
  uffd.close();
  port.close();
}
