// The main-thread side of synchronous write protection: a worker (wp-worker.ts) resolves the WP faults; this
// side reads and resets the dirty bits, and starts snapshot copies (the pages to copy, protected at one
// point in time while the worker holds off).
import type { Worker } from 'node:worker_threads';
import type { Userfaultfd } from '../core/uffd.js';
import { startWorker } from '../core/worker-thread.js';
import { PageRuns } from './page-runs.js';
import type { Target } from './target.js';
import type { FromWpWorker, ToWpWorker, WpWorkerInput } from './wp-shared.js';
import { CONTROL, hold, NO_SLOT, release, STAT } from './wp-shared.js';

export interface CopyJob {
  /** The runs the job copies (every page for a full image). */
  runs: PageRuns;
  /** Settles when every page is in the file (or the copy failed or was aborted). */
  done: Promise<void>;
}

export class WpEngine {
  readonly #target: Target;
  readonly #uffd: Userfaultfd;
  readonly #trackDirty: boolean;
  readonly #control: Int32Array;
  readonly #dirty: Int32Array;
  readonly #pending: Int32Array;
  readonly #slots: Int32Array;
  readonly #stats: Float64Array;
  readonly #worker: Worker;
  #failure: string | undefined;
  #closed = false;
  #job: { resolve: () => void; reject: (err: Error) => void } | undefined;
  #onReady: (() => void) | undefined;
  /** Resolves once the worker serves faults (a snapshot protects only then: writers never wait for its boot). */
  readonly ready: Promise<void>;

  constructor(target: Target, uffd: Userfaultfd, options: { trackDirty: boolean }) {
    this.#target = target;
    this.#uffd = uffd;
    this.#trackDirty = options.trackDirty;
    const words = Math.ceil(target.pages / 32) * 4;
    const input: WpWorkerInput = {
      fd: uffd.dup(), memPath: `/proc/${String(target.pid)}/mem`, base: target.address, pageSize: target.pageSize,
      pages: target.pages, trackDirty: options.trackDirty,
      control: new SharedArrayBuffer(CONTROL.SIZE * 4), dirty: new SharedArrayBuffer(words),
      pending: new SharedArrayBuffer(words), slots: new SharedArrayBuffer(target.pages * 4),
      stats: new SharedArrayBuffer(STAT.SIZE * 8),
    };
    this.#control = new Int32Array(input.control);
    this.#dirty = new Int32Array(input.dirty);
    this.#pending = new Int32Array(input.pending);
    this.#slots = new Int32Array(input.slots).fill(NO_SLOT);
    this.#stats = new Float64Array(input.stats);
    this.ready = new Promise((resolve) => { this.#onReady = resolve; });
    Atomics.store(this.#control, CONTROL.JOB_FD, -1);
    // Started before anything is protected: a write that faults while the worker boots waits for it.
    this.#worker = startWorker(new URL('./wp-worker.js', import.meta.url), input);
    this.#worker.on('message', (m: FromWpWorker) => { this.#onMessage(m); });
    this.#worker.on('error', (err) => { this.#fail(err.message); });
    this.#worker.on('exit', () => {
      this.#settle(Object.assign(new Error('the snapshot was aborted: its write protection was closed'), { name: 'AbortError', code: 'ABORT_ERR' }));
      if (this.#closed) return;
      // Nobody resolves WP faults any more: unprotect and wake, and say so.
      this.#fail('the resolver worker exited');
      if (!uffd.closed) uffd.writeProtect(target, false);
    });
    // Referenced until it is ready (someone may await that), then only while a copy runs.
    void this.ready.then(() => { if (this.#job === undefined) this.#worker.unref(); });
  }

  get pageSize(): number {
    return this.#target.pageSize;
  }

  get length(): number {
    return this.#target.length;
  }

  get failure(): string | undefined {
    return this.#failure;
  }

  stats(): { faults: number; copyBeforeWrite: number; maxStallMicros: number; pagesCopied: number } {
    const s = this.#stats;
    return { faults: s[STAT.FAULTS] ?? 0, copyBeforeWrite: s[STAT.COPY_BEFORE_WRITE] ?? 0, maxStallMicros: s[STAT.MAX_STALL_MICROS] ?? 0, pagesCopied: s[STAT.PAGES_COPIED] ?? 0 };
  }

  get pendingPages(): number {
    return Atomics.load(this.#control, CONTROL.PENDING);
  }

  /** Write-protects the whole memory (a tracker's start). */
  protectAll(): void {
    this.#uffd.writeProtect(this.#target, true);
  }

  collect(reset: boolean): PageRuns {
    this.#checkHealthy();
    const runs = this.#readDirty(reset);
    // Bits first, protection after: see wp-worker.ts for why no write can be lost in between.
    if (reset) this.#protect(runs);
    return runs;
  }

  /**
   * Starts copying to `fd`: every page (`incremental` false, at its own offset), or the pages written since
   * the last reset (`incremental`, packed from file page `firstSlot` on, in address order). The pages are
   * marked pending and protected while the worker holds off: that is the snapshot's instant. With dirty
   * tracking the dirty bits restart at the same instant.
   */
  startCopy(fd: number, options: { incremental: boolean; firstSlot?: number }): CopyJob {
    this.#checkHealthy();
    if (this.#job !== undefined) throw Object.assign(new Error('a snapshot of this memory is already running'), { code: 'ERR_UFFD_SNAPSHOT_ACTIVE' });
    const { pages, pageSize } = this.#target;
    hold(this.#control);
    let runs: PageRuns;
    try {
      if (options.incremental) {
        runs = this.#readDirty(true);
        this.#slots.fill(NO_SLOT);
        let slot = options.firstSlot ?? 0;
        for (const run of runs.ranges) {
          const first = run.offset / pageSize;
          for (let p = first; p < first + run.length / pageSize; p++) {
            this.#slots[p] = slot++;
            Atomics.or(this.#pending, p >>> 5, 1 << (p & 31));
          }
        }
        this.#protect(runs);
      } else {
        if (this.#trackDirty) this.#readDirty(true);
        runs = new PageRuns(pageSize);
        runs.add(0, pages);
        this.#slots.fill(NO_SLOT);
        for (let w = 0; w < this.#pending.length; w++) {
          const left = pages - w * 32;
          Atomics.store(this.#pending, w, left >= 32 ? -1 : (1 << left) - 1);
        }
        this.protectAll();
      }
      Atomics.store(this.#control, CONTROL.ABORT, 0);
      Atomics.store(this.#control, CONTROL.PENDING, runs.pages);
      Atomics.store(this.#control, CONTROL.JOB_FD, fd);
    } finally {
      release(this.#control);
    }
    const done = new Promise<void>((resolve, reject) => { this.#job = { resolve, reject }; });
    this.#worker.ref(); // a running copy keeps the process alive
    this.#post({ type: 'copy' });
    return { runs, done };
  }

  /** Stops a running copy: its pending pages are dropped (a snapshot-only engine unprotects everything). */
  abortCopy(): void {
    if (this.#job === undefined) return;
    Atomics.store(this.#control, CONTROL.ABORT, 1);
    this.#post({ type: 'abort' });
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    // A running copy ends with the worker's answer (or its exit): the file stays open until then.
    Atomics.store(this.#control, CONTROL.ABORT, 1);
    this.#post({ type: 'stop' });
  }

  #readDirty(reset: boolean): PageRuns {
    const { pageSize, pages } = this.#target;
    const runs = new PageRuns(pageSize);
    const bits = this.#dirty;
    let runStart = -1;
    for (let w = 0; w < bits.length; w++) {
      const word = reset ? Atomics.exchange(bits, w, 0) : Atomics.load(bits, w);
      if (word === 0 && runStart < 0) continue;
      for (let b = 0; b < 32; b++) {
        const page = w * 32 + b;
        const isDirty = (word & (1 << b)) !== 0 && page < pages;
        if (isDirty && runStart < 0) runStart = page;
        if (!isDirty && runStart >= 0) {
          runs.add(runStart, page - runStart);
          runStart = -1;
        }
      }
    }
    if (runStart >= 0) runs.add(runStart, pages - runStart);
    return runs;
  }

  #protect(runs: PageRuns): void {
    const { address, pageSize } = this.#target;
    for (const run of runs.ranges) this.#uffd.writeProtect({ address: address + BigInt(run.offset), length: run.length, pageSize }, true);
  }

  #onMessage(m: FromWpWorker): void {
    if (m.type === 'ready') this.#onReady?.();
    else if (m.type === 'copied') this.#settle();
    else if (m.type === 'aborted') this.#settle(Object.assign(new Error('the snapshot was aborted'), { name: 'AbortError', code: 'ABORT_ERR' }));
    else if (m.type === 'failed') {
      if (this.#job !== undefined) this.#settle(Object.assign(new Error(`the snapshot failed: ${m.message}`), { code: 'ERR_UFFD_SNAPSHOT' }));
      else this.#fail(m.message);
    }
  }

  #settle(error?: Error): void {
    const job = this.#job;
    if (job === undefined) return;
    this.#job = undefined;
    Atomics.store(this.#control, CONTROL.JOB_FD, -1);
    if (!this.#closed) this.#worker.unref();
    if (error === undefined) job.resolve();
    else job.reject(error);
  }

  #fail(message: string): void {
    this.#failure ??= message;
    this.#onReady?.();
    this.#settle(new Error(`the write-protect resolver failed: ${message}`));
  }

  #checkHealthy(): void {
    if (this.#failure !== undefined) throw Object.assign(new Error(`the write-protect resolver failed (tracking stopped, memory unprotected): ${this.#failure}`), { code: 'ERR_UFFD_RESOLVER' });
  }

  #post(message: ToWpWorker): void {
    this.#worker.postMessage(message);
  }
}
