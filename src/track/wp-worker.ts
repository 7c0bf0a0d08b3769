// The resolver thread of write-protect tracking and live snapshots. A write to a protected page raises a WP
// fault; this thread copies the page to the snapshot file first if a snapshot still needs it
// (copy-before-write), records the page as dirty, unprotects it and wakes the writer. Between faults it copies
// the pages a snapshot still needs in large runs. It never writes the tracked memory (the threading rule) and
// reads it only through /proc/<pid>/mem, with synchronous I/O (never the libuv threadpool).
//
// Order matters for never losing a write: unprotect without waking, then set the page's dirty bit, then wake.
// collect() on the main thread clears bits first and re-protects those pages after, so a page is writable
// only while its bit is set (or about to be, by this thread); a write that lands after collect() cleared the
// bit either faults again (re-protected) or finds the bit set again for the next collect().
//
// A snapshot's start marks pages pending and protects them while this thread holds off (the HOLD/BUSY
// handshake in wp-shared.ts): no fault is served until every page is protected, so a writer that blocks on
// one page cannot go on to write another page before that one is protected too. Every thread's writes are
// then in the file up to the first one it made after the snapshot began, and none after it.
import { closeSync, openSync, readSync, writeSync } from 'node:fs';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { parentPort, workerData } from 'node:worker_threads';
import { Userfaultfd } from '../core/uffd.js';
import type { UffdEventOf } from '../core/uffd.js';
import { CONTROL, enterService, leaveService, NO_SLOT, STAT } from './wp-shared.js';
import type { WpWorkerInput, FromWpWorker, ToWpWorker } from './wp-shared.js';

if (parentPort === null) throw new Error('track/wp-worker.js runs only as a worker thread');
const port = parentPort;
const input = workerData as WpWorkerInput;
const control = new Int32Array(input.control);
const dirty = new Int32Array(input.dirty);
const pending = new Int32Array(input.pending);
const slots = new Int32Array(input.slots);
const stats = new Float64Array(input.stats);
const size = BigInt(input.pageSize);
const pageSize = input.pageSize;
const end = input.base + BigInt(input.pages) * size;
const whole = { address: input.base, length: input.pages * pageSize, pageSize };
/** Bytes copied per background run. */
const RUN_BYTES = Math.max(pageSize, 256 << 10);
const buffer = Buffer.allocUnsafe(RUN_BYTES);
/** Pages a copy-before-write takes along: the 64 KiB block around the faulting page (huge pages: just it). */
const BLOCK_PAGES = Math.max(1, (64 << 10) / pageSize);

const uffd = Userfaultfd.fromFd(input.fd);
const mem = openSync(input.memPath, 'r');
let stop = new AbortController();
let stopping = false;
let job: { cursor: number; lastPoll: number } | undefined;
/** Why the running copy failed inside a fault's service (runJob reports it). */
let failure: string | undefined;

port.on('message', (m: ToWpWorker) => {
  if (m.type === 'stop') stopping = true;
  if (m.type === 'copy') job = { cursor: 0, lastPoll: performance.now() };
  stop.abort(); // out of the event wait, to look at what changed
});

try {
  port.postMessage({ type: 'ready' } satisfies FromWpWorker);
  while (!stopping) {
    if (job !== undefined) {
      await runJob(job);
      continue;
    }
    stop = new AbortController();
    for await (const event of uffd.events({ signal: stop.signal })) serveBatch([event]);
  }
} catch (err) {
  fail(err);
} finally {
  closeSync(mem);
  uffd.close();
  port.close();
}

/**
 * Copies the pending pages in runs, serving faults between runs, until none is left or the ABORT flag is up.
 * It yields to the event loop now and then so that messages (stop) get through. The main thread closes the
 * file only after this answers: copied, failed or aborted.
 */
async function runJob(current: { cursor: number; lastPoll: number }): Promise<void> {
  let outcome: FromWpWorker = { type: 'copied' };
  try {
    for (let runs = 1; Atomics.load(control, CONTROL.PENDING) > 0; runs++) {
      if (Atomics.load(control, CONTROL.ABORT) === 1) {
        outcome = failure === undefined ? { type: 'aborted' } : { type: 'failed', message: failure };
        break;
      }
      serveWaitingFaults(current);
      enterService(control);
      try {
        copyNextRun(current);
      } finally {
        leaveService(control);
      }
      if (runs % 64 === 0) await yieldToLoop();
    }
  } catch (err) {
    outcome = { type: 'failed', message: err instanceof Error ? err.message : String(err) };
  }
  if (outcome.type !== 'copied') abandonJob();
  job = undefined;
  failure = undefined;
  port.postMessage(outcome);
}

function serveBatch(events: UffdEventOf[]): void {
  enterService(control);
  try {
    for (const event of events) serve(event);
  } finally {
    leaveService(control);
  }
}

function serveWaitingFaults(current: { lastPoll: number }): void {
  for (;;) {
    const events = uffd.read(64);
    const now = performance.now();
    if (events.length === 0) {
      current.lastPoll = now;
      return;
    }
    serveBatch(events);
    // A fault in this batch waited at most since the previous empty poll.
    stats[STAT.MAX_STALL_MICROS] = Math.max(stats[STAT.MAX_STALL_MICROS] ?? 0, (performance.now() - current.lastPoll) * 1000);
    current.lastPoll = performance.now();
  }
}

function serve(event: UffdEventOf): void {
  if (event.type !== 'pagefault' || event.kind !== 'wp' || event.address < input.base || event.address >= end) return;
  const page = Number((event.address - input.base) / size);
  const range = { address: input.base + BigInt(page) * size, length: pageSize, pageSize };
  if (isSet(pending, page) && Atomics.load(control, CONTROL.ABORT) === 0) {
    try {
      copyBlockAround(page);
      stats[STAT.COPY_BEFORE_WRITE] = (stats[STAT.COPY_BEFORE_WRITE] ?? 0) + 1;
    } catch (err) {
      // The snapshot fails (disk full, I/O error); the writer goes on, and so does dirty tracking.
      // runJob sees the flag and answers with the failure.
      failure = err instanceof Error ? err.message : String(err);
      Atomics.store(control, CONTROL.ABORT, 1);
    }
  }
  uffd.writeProtect(range, false, { wake: false });
  if (input.trackDirty) Atomics.or(dirty, page >>> 5, 1 << (page & 31));
  stats[STAT.FAULTS] = (stats[STAT.FAULTS] ?? 0) + 1;
  uffd.wake(range);
}

/**
 * Copy-before-write of `page` and of the pending pages next to it in its aligned block: a writer that moves
 * on to the neighbouring pages then finds them copied (and, without dirty tracking, writable), and one copy
 * of 64 KiB costs little more than one of 4 KiB.
 */
function copyBlockAround(page: number): void {
  const first = page - (page % BLOCK_PAGES);
  const limit = Math.min(input.pages, first + BLOCK_PAGES);
  let start = page;
  while (start > first && isSet(pending, start - 1) && contiguousSlot(start - 1, 1)) start--;
  let count = page - start + 1;
  while (start + count < limit && isSet(pending, start + count) && contiguousSlot(start, count)) count++;
  copyPages(start, count);
  if (!input.trackDirty && count > 1) {
    // The faulting page is unprotected (and its writer woken) by the caller; the others here.
    if (start < page) uffd.writeProtect({ address: input.base + BigInt(start) * size, length: (page - start) * pageSize, pageSize }, false);
    if (start + count > page + 1) uffd.writeProtect({ address: input.base + BigInt(page + 1) * size, length: (start + count - page - 1) * pageSize, pageSize }, false);
  }
}

/** The next run of pending pages from the job's cursor: copied, and unprotected unless dirty tracking keeps it. */
function copyNextRun(current: { cursor: number }): void {
  let page = current.cursor;
  while (page < input.pages && !isSet(pending, page)) page++;
  if (page >= input.pages) {
    // Pages before the cursor may have become pending again only through a new job: a full pass is done.
    if (Atomics.load(control, CONTROL.PENDING) > 0) current.cursor = 0;
    return;
  }
  let count = 1;
  const limit = RUN_BYTES / pageSize;
  while (count < limit && page + count < input.pages && isSet(pending, page + count) && contiguousSlot(page, count)) count++;
  copyPages(page, count);
  if (!input.trackDirty) uffd.writeProtect({ address: input.base + BigInt(page) * size, length: count * pageSize, pageSize }, false);
  current.cursor = page + count;
}

/** Whether page + count lands right after page + count - 1 in the file (always so in a full image). */
function contiguousSlot(page: number, count: number): boolean {
  const a = slots[page + count - 1] ?? NO_SLOT;
  const b = slots[page + count] ?? NO_SLOT;
  return a === NO_SLOT ? b === NO_SLOT : b === a + 1;
}

/** Reads pages [page, page + count) from the memory and writes them at their place in the snapshot file. */
function copyPages(page: number, count: number): void {
  const fd = Atomics.load(control, CONTROL.JOB_FD);
  if (fd < 0) throw new Error('a page is pending for a snapshot but no snapshot file was given');
  const length = count * pageSize;
  const from = Number(input.base) + page * pageSize;
  for (let done = 0; done < length;) {
    const n = readSync(mem, buffer, done, length - done, from + done);
    if (n <= 0) throw new Error(`short read of the memory at 0x${(from + done).toString(16)}`);
    done += n;
  }
  const slot = slots[page] ?? NO_SLOT;
  const at = (slot === NO_SLOT ? page : slot) * pageSize;
  for (let done = 0; done < length;) done += writeSync(fd, buffer, done, length - done, at + done);
  for (let i = page; i < page + count; i++) Atomics.and(pending, i >>> 5, ~(1 << (i & 31)));
  Atomics.sub(control, CONTROL.PENDING, count);
  stats[STAT.PAGES_COPIED] = (stats[STAT.PAGES_COPIED] ?? 0) + count;
}

function isSet(bits: Int32Array, page: number): boolean {
  return ((Atomics.load(bits, page >>> 5) >>> (page & 31)) & 1) === 1;
}

/**
 * Drops the pending pages: a snapshot-only engine unprotects everything (writers run free again); a tracking
 * engine keeps them protected and goes on recording writes.
 */
function abandonJob(): void {
  enterService(control);
  try {
    dropPending();
  } finally {
    leaveService(control);
    job = undefined;
  }
}

/** Inside service: no page is pending any more. */
function dropPending(): void {
  pending.fill(0);
  Atomics.store(control, CONTROL.PENDING, 0);
  if (!input.trackDirty) uffd.writeProtect(whole, false);
}

function fail(err: unknown): void {
  // Fail open, never hang: unprotect and wake everything; the main thread reports the failure.
  try {
    uffd.writeProtect(whole, false);
  } catch {
    // the memory is gone (process exited, range unregistered): nobody is left to wake
  }
  port.postMessage({ type: 'failed', message: err instanceof Error ? err.message : String(err) } satisfies FromWpWorker);
}
