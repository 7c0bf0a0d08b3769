// DirtyTracker: which pages of some memory were written since open() or the last collect({ reset: true }).
// Two methods: 'async' (WP_ASYNC + PAGEMAP_SCAN, Linux 6.7+: the kernel resolves the write faults and keeps
// the record in the page tables) and 'sync' (WP faults resolved by a worker thread that records them).
import type { Mapping } from '../core/mapping.js';
import { Userfaultfd } from '../core/uffd.js';
import { UffdError, UnsupportedFeatureError, withCode } from '../errors.js';
import { probe } from '../probe/probe.js';
import type { Range } from '../validate.js';
import { checkBoolean, checkOptionsObject, describe } from '../validate.js';
import { AsyncMethod } from './async-method.js';
import type { ByteRange } from './page-runs.js';
import { checkServed, populateUntouched, refuseUntouched, registerWp } from './protectable.js';
import { WpEngine } from './wp-engine.js';
import type { ProcessOption, Target } from './target.js';
import { resolveTarget } from './target.js';

export type TrackMethod = 'async' | 'sync';

const engineKey = Symbol('engine');

export interface DirtyTrackerOptions {
  /** 'auto' (default): 'async' where WP_ASYNC is available, else 'sync'. */
  method?: 'auto' | TrackMethod;
  /**
   * Memory of another process: the uffd it created (taken with pidfd_getfd or received over a socket) and
   * its pid. The memory argument is then a { address, length } range in that process.
   */
  process?: ProcessOption;
}

export interface CollectResult {
  /** Runs of written pages, as offsets from the start of the tracked memory. */
  ranges: ByteRange[];
  pages: number;
}

// process.exit() joins the libuv threadpool after worker threads are gone: a pool thread blocked in a WP fault
// of a 'sync' tracker would hang it. Closing every open tracker first unprotects and wakes such writers.
const live = new Set<WeakRef<DirtyTracker>>();
const forgotten = new FinalizationRegistry<WeakRef<DirtyTracker>>((ref) => { live.delete(ref); });
process.prependListener('exit', () => {
  for (const ref of live) ref.deref()?.close();
});

export class DirtyTracker {
  readonly method: TrackMethod;
  /** The tracked memory's start and size. */
  readonly address: bigint;
  readonly length: number;
  readonly pageSize: number;
  readonly #target: Target;
  readonly #uffd: Userfaultfd;
  readonly #ownsUffd: boolean;
  readonly #impl: AsyncMethod | WpEngine;
  #closed = false;

  private constructor(target: Target, method: TrackMethod, uffd: Userfaultfd, ownsUffd: boolean, impl: AsyncMethod | WpEngine) {
    this.#target = target;
    this.method = method;
    this.#uffd = uffd;
    this.#ownsUffd = ownsUffd;
    this.#impl = impl;
    this.address = target.address;
    this.length = target.length;
    this.pageSize = target.pageSize;
    this.#ref = new WeakRef(this);
    live.add(this.#ref);
    forgotten.register(this, this.#ref, this.#ref);
  }

  readonly #ref: WeakRef<DirtyTracker>;

  static open(memory: Mapping | Range, options?: DirtyTrackerOptions): DirtyTracker {
    const o = checkOptionsObject(options, 'DirtyTracker.open options', ['method', 'process']);
    const requested = o.method ?? 'auto';
    if (requested !== 'auto' && requested !== 'async' && requested !== 'sync') throw new TypeError(`method must be 'auto', 'async' or 'sync', got ${describe(requested)}`);
    const target = resolveTarget(memory, o.process, 'memory');
    const method = chooseMethod(requested, target);
    const ownsUffd = target.uffd === undefined;
    const uffd = target.uffd ?? Userfaultfd.open(method === 'async' ? { require: ['WP_ASYNC'] } : { request: ['WP_UNPOPULATED'] });
    try {
      checkServed(target, method);
      const untouched = method === 'sync' && target.anonymous && !uffd.features.has('WP_UNPOPULATED');
      if (untouched) refuseUntouched(memory, target);
      registerWp(uffd, target, method); // before populating: a tracker already there fails it with EBUSY
      if (untouched) populateUntouched(memory);
      const impl = method === 'async' ? new AsyncMethod(target, uffd) : syncEngine(target, uffd);
      return new DirtyTracker(target, method, uffd, ownsUffd, impl);
    } catch (err) {
      if (ownsUffd) uffd.close();
      throw err;
    }
  }

  /**
   * Resolves once writes are served: at once for 'async'; for 'sync' when the resolver thread runs (until
   * then a write to the memory waits for it, tens of milliseconds).
   */
  get ready(): Promise<void> {
    return this.#impl instanceof WpEngine ? this.#impl.ready : Promise.resolve();
  }

  /** Pages written since open() or the last reset; `reset` (default true) re-protects them in the same step. */
  collect(options?: { reset?: boolean }): CollectResult {
    const o = checkOptionsObject(options, 'collect options', ['reset']);
    const reset = checkBoolean(o.reset, 'reset') ?? true;
    if (this.#closed) throw withCode(new TypeError('the tracker is closed'), 'ERR_UFFD_CLOSED');
    const runs = this.#impl.collect(reset);
    return { ranges: runs.ranges, pages: runs.pages };
  }

  /** Ends tracking: the memory is unprotected and every blocked writer woken. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    live.delete(this.#ref);
    forgotten.unregister(this.#ref);
    this.#impl.close();
    if (this.#uffd.closed) return;
    try {
      this.#uffd.writeProtect(this.#target, false);
      this.#uffd.unregister(this.#target);
    } catch (err) {
      // The other process exited (ESRCH) or unmapped the memory: nothing is left to unprotect.
      if (!(err instanceof UffdError) || !['ESRCH', 'ENOENT', 'EINVAL', 'ENOMEM'].includes(err.code)) throw err;
    } finally {
      if (this.#ownsUffd) this.#uffd.close();
    }
  }

  [Symbol.dispose](): void {
    this.close();
  }

  /** Internal: the sync engine (snapshot.ts), undefined for 'async'. */
  get [engineKey](): WpEngine | undefined {
    if (this.#closed) throw Object.assign(new TypeError('the tracker is closed'), { code: 'ERR_UFFD_CLOSED' });
    return this.#impl instanceof WpEngine ? this.#impl : undefined;
  }
}

/** The engine of a 'sync' tracker, for snapshots taken through it. */
export function engineOf(tracker: DirtyTracker): WpEngine {
  const engine = tracker[engineKey];
  if (engine === undefined) throw new TypeError("snapshots through a tracker need method 'sync' (copy-before-write needs the write faults, which WP_ASYNC resolves in the kernel)");
  return engine;
}

function syncEngine(target: Target, uffd: Userfaultfd): WpEngine {
  const engine = new WpEngine(target, uffd, { trackDirty: true });
  try {
    engine.protectAll();
  } catch (err) {
    engine.close();
    throw err;
  }
  return engine;
}

function chooseMethod(requested: 'auto' | TrackMethod, target: Target): TrackMethod {
  const asyncAvailable = target.uffd === undefined ? probe().features.has('WP_ASYNC') : target.uffd.features.has('WP_ASYNC');
  if (requested === 'async' && !asyncAvailable) {
    if (target.uffd !== undefined) throw new TypeError("method 'async' needs a uffd with WP_ASYNC enabled (its creator requests it at UFFDIO_API)");
    throw new UnsupportedFeatureError(['WP_ASYNC'], "method 'async' reads written pages with PAGEMAP_SCAN; use method 'sync'");
  }
  if (requested === 'sync' && target.uffd !== undefined && target.uffd.features.has('WP_ASYNC')) {
    throw new TypeError("method 'sync' needs write faults delivered as messages: this uffd has WP_ASYNC, whose faults the kernel resolves itself");
  }
  if (requested !== 'auto') return requested;
  return asyncAvailable ? 'async' : 'sync';
}
