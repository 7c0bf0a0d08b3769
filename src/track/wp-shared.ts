// What the main thread and the write-protect worker (wp-worker.ts) share: the layout of their shared memory,
// their messages, and the handshake that lets the main thread change protection while the worker holds off.
//
// The worker serves faults and copies runs only inside enterService()/leaveService(). hold() on the main
// thread raises HOLD and waits until the worker is outside service; from then until release() the worker
// serves nothing (faulting writers wait). Sequentially consistent Atomics make the two flags a Dekker pair:
// one side always sees the other's store.

export const CONTROL = Object.freeze({ HOLD: 0, BUSY: 1, PENDING: 2, JOB_FD: 3, ABORT: 4, SIZE: 5 });
/** Float64 statistics the worker keeps. */
export const STAT = Object.freeze({ FAULTS: 0, COPY_BEFORE_WRITE: 1, MAX_STALL_MICROS: 2, PAGES_COPIED: 3, SIZE: 4 });
/** A page's slot in the file when the file is a full image (the page's own index). */
export const NO_SLOT = -1;

export interface WpWorkerInput {
  fd: number;
  /** /proc/<pid>/mem of the process that owns the memory. */
  memPath: string;
  base: bigint;
  pageSize: number;
  pages: number;
  /** Record written pages in `dirty` (a tracker); else a snapshot-only engine, which unprotects what it copied. */
  trackDirty: boolean;
  control: SharedArrayBuffer;
  /** One bit per page, Int32 words: written since the last collect. */
  dirty: SharedArrayBuffer;
  /** One bit per page: still to be copied to the snapshot file. */
  pending: SharedArrayBuffer;
  /** Int32 per page: the page's index in a packed (incremental) file, or NO_SLOT. */
  slots: SharedArrayBuffer;
  stats: SharedArrayBuffer;
}

/** An abort is the ABORT flag (seen at once, between runs); the messages only wake the worker's loop. */
export type ToWpWorker = { type: 'copy' } | { type: 'abort' } | { type: 'stop' };
export type FromWpWorker = { type: 'ready' } | { type: 'copied' } | { type: 'aborted' } | { type: 'failed'; message: string };

export function enterService(control: Int32Array): void {
  for (;;) {
    Atomics.store(control, CONTROL.BUSY, 1);
    if (Atomics.load(control, CONTROL.HOLD) === 0) return;
    Atomics.store(control, CONTROL.BUSY, 0);
    Atomics.notify(control, CONTROL.BUSY);
    Atomics.wait(control, CONTROL.HOLD, 1);
  }
}

export function leaveService(control: Int32Array): void {
  Atomics.store(control, CONTROL.BUSY, 0);
  Atomics.notify(control, CONTROL.BUSY);
}

/** Main thread: from return until release(), the worker serves no fault and copies nothing. */
export function hold(control: Int32Array): void {
  Atomics.store(control, CONTROL.HOLD, 1);
  while (Atomics.load(control, CONTROL.BUSY) === 1) Atomics.wait(control, CONTROL.BUSY, 1);
}

export function release(control: Int32Array): void {
  Atomics.store(control, CONTROL.HOLD, 0);
  Atomics.notify(control, CONTROL.HOLD);
}
