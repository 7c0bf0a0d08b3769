// The 'sync' method: ordinary (synchronous) write protection, whose faults a worker thread records and
// resolves (sync-worker.ts). For kernels without WP_ASYNC (before 6.7) and uffds created without it.
import type { Worker } from 'node:worker_threads';
import type { Userfaultfd } from '../core/uffd.js';
import { startWorker } from '../core/worker-thread.js';
import { PageRuns } from './page-runs.js';
import type { FromSyncWorker, SyncWorkerInput } from './sync-worker.js';
import type { Target } from './target.js';

export class SyncMethod {
  readonly #target: Target;
  readonly #uffd: Userfaultfd;
  readonly #bits: Int32Array;
  readonly #counters: Float64Array;
  readonly #worker: Worker;
  #failure: string | undefined;
  #closed = false;

  constructor(target: Target, uffd: Userfaultfd) {
    this.#target = target;
    this.#uffd = uffd;
    const bits = new SharedArrayBuffer(Math.ceil(target.pages / 32) * 4);
    const counters = new SharedArrayBuffer(8);
    this.#bits = new Int32Array(bits);
    this.#counters = new Float64Array(counters);
    const input: SyncWorkerInput = { fd: uffd.dup(), base: target.address, pageSize: target.pageSize, pages: target.pages, bits, counters };
    // Started before anything is protected: a write that faults while the worker boots waits for it.
    this.#worker = startWorker(new URL('./sync-worker.js', import.meta.url), input);
    this.#worker.on('message', (m: FromSyncWorker) => { if (m.type === 'failed') this.#failure = m.message; });
    this.#worker.on('error', (err) => { this.#failure = err.message; });
    this.#worker.on('exit', () => {
      if (this.#closed) return;
      // Nobody resolves WP faults any more: unprotect and wake, and say so on the next collect().
      this.#failure ??= 'the resolver worker exited';
      if (!uffd.closed) uffd.writeProtect(target, false);
    });
    this.#worker.unref();
    uffd.writeProtect(target, true);
  }

  /** WP faults the worker has resolved. */
  get faults(): number {
    return this.#counters[0] ?? 0;
  }

  collect(reset: boolean): PageRuns {
    if (this.#failure !== undefined) throw Object.assign(new Error(`the dirty-tracking resolver failed (tracking stopped, memory unprotected): ${this.#failure}`), { code: 'ERR_UFFD_RESOLVER' });
    const { address, pageSize, pages } = this.#target;
    const runs = new PageRuns(pageSize);
    const bits = this.#bits;
    let runStart = -1;
    for (let w = 0; w < bits.length; w++) {
      const word = reset ? Atomics.exchange(bits, w, 0) : Atomics.load(bits, w);
      for (let b = 0; b < 32; b++) {
        const page = w * 32 + b;
        const dirty = (word & (1 << b)) !== 0 && page < pages;
        if (dirty && runStart < 0) runStart = page;
        if (!dirty && runStart >= 0) {
          runs.add(runStart, page - runStart);
          runStart = -1;
        }
      }
    }
    if (runStart >= 0) runs.add(runStart, pages - runStart);
    // Bits first, protection after: see sync-worker.ts for why no write can be lost in between.
    if (reset) {
      for (const run of runs.ranges) this.#uffd.writeProtect({ address: address + BigInt(run.offset), length: run.length, pageSize }, true);
    }
    return runs;
  }

  close(): void {
    this.#closed = true;
    this.#worker.postMessage('stop');
  }
}
