// Snapshot: a consistent copy of live memory while its writers keep running. Every page is write-protected
// at one instant; a worker then copies the pages to the file in large runs, and a write to a page not copied
// yet has that page copied first (copy-before-write), then unprotected and woken. The file is written under
// a temporary name and renamed when complete: a failed or aborted snapshot never leaves a file posing as one.
//
// Full snapshots are raw images (byte N of the file is byte N of the memory: what `uffd serve --memory` and
// Firecracker read). Incremental ones (`incremental: tracker`) hold only the pages the tracker saw written
// since its last reset, packed, followed by an index (delta-file.ts); applyIncremental() writes one onto
// its base.
import { closeSync, fsyncSync, ftruncateSync, openSync, renameSync, rmSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type { Mapping } from '../core/mapping.js';
import { Userfaultfd } from '../core/uffd.js';
import type { Range } from '../validate.js';
import { checkOptionsObject, describe } from '../validate.js';
import { writeDeltaIndex } from './delta-file.js';
import { DirtyTracker, engineOf } from './dirty-tracker.js';
import { checkServed, populateUntouched, refuseUntouched, registerWp } from './protectable.js';
import type { ProcessOption, Target } from './target.js';
import { resolveTarget } from './target.js';
import { WpEngine } from './wp-engine.js';

export interface SnapshotOptions {
  /** Where the file goes (written as a temporary file next to it, renamed when complete). */
  path: string;
  /** Only the pages this ('sync') tracker saw written since its last reset, packed, with an index. */
  incremental?: DirtyTracker;
  /** A full image taken through this ('sync') tracker, which restarts at the same instant: the base of a chain. */
  tracker?: DirtyTracker;
  /** Memory of another process: its uffd and pid (see DirtyTracker). */
  process?: ProcessOption;
}

export interface SnapshotStats {
  pagesCopied: number;
  bytes: number;
  /** Writes that faulted during the snapshot (each was woken after its page was copied or found copied). */
  writerFaults: number;
  /** The longest a faulting writer can have waited: the longest gap between fault checks, plus the service. */
  maxWriterStallMicros: number;
  seconds: number;
}

// process.exit() during a snapshot: writers are unprotected and woken, the temporary file removed, at once.
const running = new Set<Snapshot>();
process.prependListener('exit', () => {
  for (const snapshot of running) snapshot[exitNow]();
});
const exitNow = Symbol('exitNow');

export class Snapshot {
  readonly path: string;
  /** Settles with the statistics once the file is complete and renamed into place. */
  readonly done: Promise<SnapshotStats>;
  readonly #engine: WpEngine;
  readonly #pagesTotal: number;
  readonly #copiedBefore: number;
  readonly #onExit: () => void;

  private constructor(path: string, engine: WpEngine, copiedBefore: number, pagesTotal: number, done: () => Promise<SnapshotStats>, onExit: () => void) {
    this.path = path;
    this.#engine = engine;
    this.#pagesTotal = pagesTotal;
    this.#copiedBefore = copiedBefore;
    this.#onExit = onExit;
    running.add(this);
    this.done = done().finally(() => { running.delete(this); });
  }

  static async start(memory: Mapping | Range, options: SnapshotOptions): Promise<Snapshot> {
    const o = checkOptionsObject(options, 'Snapshot.start options', ['path', 'incremental', 'tracker', 'process']);
    if (typeof o.path !== 'string' || o.path === '') throw new TypeError(`path must be a file name, got ${describe(o.path)}`);
    const path = o.path;
    const through = o.incremental ?? o.tracker;
    if (o.incremental !== undefined && o.tracker !== undefined) throw new TypeError('give either incremental or tracker, not both');
    if (through !== undefined && !(through instanceof DirtyTracker)) throw new TypeError(`incremental/tracker must be a DirtyTracker, got ${describe(through)}`);
    const incremental = o.incremental !== undefined;

    let engine: WpEngine;
    let ownEngine: { uffd: Userfaultfd; ownsUffd: boolean; target: Target } | undefined;
    if (through !== undefined) {
      const target = resolveTarget(memory, o.process, 'memory');
      if (target.address !== through.address || target.length !== through.length) throw new RangeError('the memory must be the tracker\'s memory');
      engine = engineOf(through);
    } else {
      const target = resolveTarget(memory, o.process, 'memory');
      const uffd = target.uffd ?? Userfaultfd.open({ request: ['WP_UNPOPULATED'] });
      const ownsUffd = target.uffd === undefined;
      try {
        if (uffd.features.has('WP_ASYNC')) throw new TypeError('a snapshot needs write faults delivered as messages: this uffd has WP_ASYNC, whose faults the kernel resolves itself');
        checkServed(target, 'sync');
        const untouched = target.anonymous && !uffd.features.has('WP_UNPOPULATED');
        if (untouched) refuseUntouched(memory, target);
        registerWp(uffd, target, 'sync'); // before populating: a tracker already there fails it with EBUSY
        if (untouched) populateUntouched(memory);
        engine = new WpEngine(target, uffd, { trackDirty: false });
      } catch (err) {
        if (ownsUffd) uffd.close();
        throw err;
      }
      ownEngine = { uffd, ownsUffd, target };
    }

    const temporary = join(dirname(path), `.${basename(path)}.${String(process.pid)}.${Math.random().toString(36).slice(2)}.tmp`);
    let fd = -1;
    const closeOwn = (): void => {
      if (ownEngine === undefined) return;
      const own = ownEngine;
      ownEngine = undefined;
      engine.close();
      try {
        if (!own.uffd.closed) {
          own.uffd.writeProtect(own.target, false);
          own.uffd.unregister(own.target);
        }
      } catch {
        // the other process is gone: nothing left to unprotect
      } finally {
        if (own.ownsUffd) own.uffd.close();
      }
    };
    const discard = (): void => {
      if (fd >= 0) closeSync(fd);
      fd = -1;
      rmSync(temporary, { force: true });
    };
    try {
      fd = openSync(temporary, 'wx', 0o600);
    } catch (err) {
      closeOwn();
      throw err;
    }
    try {
      await engine.ready;
    } catch (err) {
      discard();
      closeOwn();
      throw err;
    }
    const started = performance.now();
    const { faults: faultsBefore, pagesCopied: copiedBefore } = engine.stats();
    let job: ReturnType<WpEngine['startCopy']>;
    try {
      job = engine.startCopy(fd, { incremental });
    } catch (err) {
      discard();
      closeOwn();
      throw err;
    }
    const pagesTotal = job.runs.pages;
    const pageSize = engine.pageSize;
    const finish = async (): Promise<SnapshotStats> => {
      try {
        // The size first: a raw image of memory never written past its end still has the memory's length.
        ftruncateSync(fd, pagesTotal * pageSize);
        if (incremental) writeDeltaIndex(fd, pagesTotal * pageSize, { pageSize, length: engine.length, ranges: job.runs.ranges });
        await job.done;
        fsyncSync(fd);
        closeSync(fd);
        fd = -1;
        renameSync(temporary, path);
      } catch (err) {
        engine.abortCopy();
        await job.done.catch(() => undefined); // the worker no longer writes to the file
        discard();
        throw err;
      } finally {
        closeOwn();
      }
      const stats = engine.stats();
      return {
        pagesCopied: pagesTotal, bytes: pagesTotal * pageSize, writerFaults: stats.faults - faultsBefore,
        maxWriterStallMicros: stats.maxStallMicros, seconds: (performance.now() - started) / 1000,
      };
    };
    return new Snapshot(path, engine, copiedBefore, pagesTotal, finish, () => {
      engine.abortCopy();
      closeOwn();
      rmSync(temporary, { force: true });
    });
  }

  progress(): { pagesCopied: number; pagesTotal: number } {
    return { pagesCopied: Math.min(this.#pagesTotal, this.#engine.stats().pagesCopied - this.#copiedBefore), pagesTotal: this.#pagesTotal };
  }

  /**
   * Stops the snapshot: `done` rejects with an AbortError once the copy stopped, the temporary file is removed
   * and the writers run unprotected (or, through a tracker, tracked as before).
   */
  abort(): void {
    this.#engine.abortCopy();
  }

  /** Process exit: no time to wait for the worker. */
  [exitNow](): void {
    this.#onExit();
  }
}
