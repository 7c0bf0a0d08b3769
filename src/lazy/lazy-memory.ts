// LazyMemory: memory whose pages are filled on first touch from a page source. The JS thread only touches
// the memory; a worker thread resolves the faults (a thread cannot serve its own faults).
import { EventEmitter, once } from 'node:events';
import type { Worker } from 'node:worker_threads';
import type { SourceSpec } from '../sources/source.js';
import { Mapping } from '../core/mapping.js';
import { startWorker } from '../core/worker-thread.js';
import { openPreferringFull, Userfaultfd } from '../core/uffd.js';
import type { UffdMode } from '../core/uffd.js';
import type { UffdError } from '../errors.js';
import { failMissingPages } from '../fill/fail-missing.js';
import { checkBoolean, checkInteger, checkOneOf, checkOptionsObject, describe } from '../validate.js';
import type { SourceErrorPolicy } from '../fill/page-filler.js';
import { DEFAULT_READ_TIMEOUT_MS } from '../fill/page-filler.js';
import type { FillMetricsSnapshot } from '../metrics/fill-metrics.js';
import { FillMetrics } from '../metrics/fill-metrics.js';
import { describeSource, rebuildError, SourceReadError } from '../sources/source-error.js';
import type { FromWorker, ToWorker, WorkerInput } from './worker.js';

export type LazyStats = FillMetricsSnapshot;

export interface LazyMemoryOptions {
  source: SourceSpec;
  /** Pages filled per fault beyond the faulting one: a count (1 = none), or 'auto' (grows on sequential faults). */
  readahead?: number | 'auto';
  /** Huge pages (hugetlb) instead of 4 KiB pages. */
  hugetlb?: boolean;
  /** Fill the rest in the background after open; demand faults are served first. */
  prefetch?: boolean;
  /** When the source keeps failing for a faulting page: 'poison' (default, SIGBUS for the toucher) or 'zero'. */
  onSourceError?: SourceErrorPolicy;
  /** Retries of a failing demand read (with exponential backoff from retryDelayMs). */
  retries?: number;
  retryDelayMs?: number;
  /** A source read (a promise) that has not answered in this long fails like any source error (default 30000). */
  readTimeoutMs?: number;
  /** 'auto' (default): a full uffd when allowed, else user-mode-only (kernel-mode access then gets EFAULT). */
  userModeOnly?: boolean | 'auto';
}

const SOURCE_ERROR_POLICIES = ['poison', 'zero'] as const satisfies readonly SourceErrorPolicy[];
const USER_MODE_CHOICES = ['auto', true, false] as const;
const OPTIONS = ['source', 'readahead', 'hugetlb', 'prefetch', 'onSourceError', 'retries', 'retryDelayMs', 'readTimeoutMs', 'userModeOnly'];

/**
 * LazyMemory's events. 'error': a SourceReadError for a page the source could not deliver (zero-filled, or
 * poisoned), or an Error with code ERR_UFFD_RESOLVER when the resolver thread failed or exited (its unfilled
 * pages are then poisoned). An unhandled 'error' event throws, as for any EventEmitter. 'prefetched': the
 * background fill (prefetch: true) has filled every page; the stats then.
 */
export interface LazyMemoryEvents {
  error: [SourceReadError | (Error & { code: string })];
  prefetched: [LazyStats];
}

export class LazyMemory extends EventEmitter<LazyMemoryEvents> {
  readonly #mapping: Mapping;
  readonly #uffd: Userfaultfd;
  readonly #worker: Worker;
  readonly #stats: FillMetrics;
  readonly #onExit: () => void;
  /** The source's length in bytes (the memory is this rounded up to whole pages). */
  readonly sourceLength: number;
  /**
   * 'full': every fault is served, the kernel's own accesses (a read(2) into this memory, fs.writeFile of a
   * view) included. 'user-mode-only' (no privilege for a full uffd): faults the kernel takes on the program's
   * behalf fail with EFAULT instead; touch such pages from JavaScript first.
   */
  readonly mode: UffdMode;
  #closing: Promise<void> | undefined;
  readonly #canPoison: boolean;
  readonly #workerExited: Promise<void>;
  #failed = false;

  private constructor(parts: { mapping: Mapping; uffd: Userfaultfd; mode: UffdMode; canPoison: boolean; worker: Worker; stats: FillMetrics; sourceLength: number; source: string; prefetch: boolean }) {
    super();
    this.mode = parts.mode;
    this.#prefetch = parts.prefetch ? 'running' : 'off';
    this.#mapping = parts.mapping;
    this.#uffd = parts.uffd;
    this.#worker = parts.worker;
    this.#stats = parts.stats;
    this.sourceLength = parts.sourceLength;
    this.#worker.on('message', (m: FromWorker) => {
      if (m.type === 'sourceError') this.emit('error', new SourceReadError({ page: m.page, offset: m.offset, source: parts.source, outcome: m.outcome }, m.error));
      if (m.type === 'failed') this.#fail(new Error(`the resolver failed and poisoned the pages it had not filled: ${m.message}`));
      if (m.type === 'prefetched') this.#prefetchSettled(undefined);
    });
    // After the listener: adding a 'message' listener refs the worker's port again.
    this.#worker.unref();
    // Not events.once(): that rejects on the worker's 'error' event (an uncaught exception in the resolver),
    // and nobody would handle the rejection.
    this.#workerExited = new Promise<void>((resolve) => { this.#worker.once('exit', () => { resolve(); }); }).then(() => {
      if (this.#closing === undefined) this.#fail(new Error('the resolver worker exited unexpectedly; the pages it had not filled are poisoned'));
    });
    this.#worker.on('error', (err) => { this.#fail(err); });
    // Process exit joins the libuv threadpool: a pool thread asleep in a fault on this memory would hang it.
    // Closing this descriptor does not wake it (the worker's dup keeps the uffd alive, and its watcher must
    // not see that fd vanish), so the pages nobody filled are poisoned: a waiting faulter wakes and gets
    // EFAULT (kernel-mode) instead of data, never zeros that an in-flight write could persist.
    // Prepended: it must run before the library's own exit listener closes this uffd.
    this.#canPoison = parts.canPoison;
    this.#onExit = () => {
      failMissingPages(this.#uffd, this.#mapping, this.#canPoison);
      this.#uffd.close();
    };
    process.prependListener('exit', this.#onExit);
  }

  /** The background fill (prefetch: true): running, done, or ended early by this error. */
  #prefetch: 'off' | 'running' | 'done' | Error;
  readonly #prefetchWaiters: { resolve: (stats: LazyStats) => void; reject: (err: Error) => void }[] = [];

  /**
   * Resolves with the stats once the background fill (`prefetch: true`) has filled every page, and emits
   * 'prefetched' then; rejects when prefetch is off, or when the memory is closed or fails before.
   */
  prefetched(): Promise<LazyStats> {
    const state = this.#prefetch;
    if (state === 'off') return Promise.reject(new TypeError('prefetched(): this LazyMemory was opened without prefetch: true'));
    if (state === 'done') return Promise.resolve(this.stats());
    if (state instanceof Error) return Promise.reject(state);
    // The worker is unreferenced while it serves; someone awaiting the fill must keep the process alive.
    this.#worker.ref();
    return new Promise((resolve, reject) => { this.#prefetchWaiters.push({ resolve, reject }); });
  }

  #prefetchSettled(error: Error | undefined): void {
    if (this.#prefetch !== 'running') return;
    this.#prefetch = error ?? 'done';
    const stats = this.stats();
    if (this.#prefetchWaiters.length > 0) this.#worker.unref();
    for (const w of this.#prefetchWaiters.splice(0)) {
      if (error === undefined) w.resolve(stats);
      else w.reject(error);
    }
    if (error === undefined) this.emit('prefetched', stats);
  }

  /**
   * The resolver is gone: nobody will fill the remaining pages, so they are poisoned (fail-stop, as with
   * onSourceError 'poison'), and the program hears of it as an 'error' event.
   */
  #fail(error: Error): void {
    if (this.#failed) return;
    this.#failed = true;
    this.#prefetchSettled(new Error(`the background fill ended early: ${error.message}`));
    if (!this.#uffd.closed) failMissingPages(this.#uffd, this.#mapping, this.#canPoison);
    const code = (error as { code?: unknown }).code;
    this.emit('error', Object.assign(error, { code: typeof code === 'string' ? code : 'ERR_UFFD_RESOLVER' }));
  }

  static async open(options: LazyMemoryOptions): Promise<LazyMemory> {
    const o = checkOptionsObject(options, 'LazyMemory.open options', OPTIONS);
    const source = o.source as SourceSpec | undefined;
    if (source === undefined || source === null || typeof source !== 'object' || !['file', 'buffer', 'zero', 'module', 'remote'].includes((source as { kind?: unknown }).kind as string)) {
      throw new TypeError(`source must come from fileSource(), bufferSource(), zeroSource(), moduleSource() or httpSource(), got ${describe(source)}`);
    }
    const readahead = o.readahead ?? 'auto';
    if (readahead !== 'auto') checkInteger(readahead, "readahead ('auto' or a page count)", { min: 1, max: 65536 });
    const hugetlb = checkBoolean(o.hugetlb, 'hugetlb') ?? false;
    const prefetch = checkBoolean(o.prefetch, 'prefetch') ?? false;
    const onSourceError = o.onSourceError ?? 'poison';
    checkOneOf(onSourceError, 'onSourceError', SOURCE_ERROR_POLICIES);
    const retries = o.retries ?? 3;
    checkInteger(retries, 'retries', { min: 0, max: 20 });
    const retryDelayMs = o.retryDelayMs ?? 10;
    if (typeof retryDelayMs !== 'number' || !(retryDelayMs >= 0) || retryDelayMs > 60_000) throw new RangeError(`retryDelayMs must be in [0, 60000], got ${describe(retryDelayMs)}`);
    const readTimeoutMs = o.readTimeoutMs ?? DEFAULT_READ_TIMEOUT_MS;
    if (typeof readTimeoutMs !== 'number' || !Number.isSafeInteger(readTimeoutMs) || readTimeoutMs < 1 || readTimeoutMs > 3_600_000) throw new RangeError(`readTimeoutMs must be an integer in [1, 3600000], got ${describe(readTimeoutMs)}`);
    const userModeOnly = o.userModeOnly ?? 'auto';
    checkOneOf(userModeOnly, 'userModeOnly', USER_MODE_CHOICES);

    const stats = new FillMetrics();
    const input: WorkerInput = {
      source, readahead, prefetch, onSourceError, retries, retryDelayMs, readTimeoutMs,
      stats: stats.buffer,
    };
    // Referenced while opening and closing (the caller awaits it), unreferenced while it serves.
    const worker = startWorker(new URL('./worker.js', import.meta.url), input);
    let mapping: Mapping | undefined;
    let uffd: Userfaultfd | undefined;
    try {
      const first = await nextMessage(worker);
      if (first.type !== 'source') throw rebuildError('LazyMemory: the source could not be opened', first.type === 'failed' ? first.error ?? { message: first.message } : { message: first.type }, 'ERR_UFFD_SOURCE');
      mapping = Mapping.anonymous(first.length, { hugetlb });
      let mode: UffdMode = userModeOnly === true ? 'user-mode-only' : 'full';
      if (userModeOnly === 'auto') {
        const opened = openPreferringFull();
        ({ uffd, mode } = opened);
        if (opened.refused !== undefined) warnUserModeOnly(opened.refused);
      } else {
        uffd = Userfaultfd.open({ userModeOnly });
      }
      const ioctls = uffd.register(mapping, { missing: true });
      const serve: ToWorker = { type: 'serve', fd: uffd.dup(), base: mapping.address, pageSize: mapping.pageSize, pages: mapping.length / mapping.pageSize, canPoison: ioctls.has('POISON') };
      worker.postMessage(serve);
      const ready = await nextMessage(worker);
      if (ready.type !== 'ready') throw new Error(`LazyMemory: the resolver failed to start: ${ready.type === 'failed' ? ready.message : ready.type}`);
      return new LazyMemory({ mapping, uffd, mode, canPoison: ioctls.has('POISON'), worker, stats, sourceLength: first.length, source: describeSource(source), prefetch });
    } catch (err) {
      await worker.terminate();
      uffd?.close();
      mapping?.close();
      throw err;
    }
  }

  get address(): bigint {
    return this.#mapping.address;
  }

  get length(): number {
    return this.#mapping.length;
  }

  get pageSize(): number {
    return this.#mapping.pageSize;
  }

  /** The lazy memory itself (up to this Node's ArrayBuffer limit; view() beyond). Touch it from this thread only. */
  get buffer(): ArrayBuffer {
    return this.#mapping.buffer;
  }

  view(offset: number, length: number): ArrayBuffer {
    return this.#mapping.view(offset, length);
  }

  stats(): LazyStats {
    return this.#stats.read();
  }

  /** Stops the resolver, closes every descriptor of the uffd (waking any faulter), detaches and unmaps. */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /**
   * Bounded whatever the source does: the resolver gets STOP_GRACE_MS to finish the fill in progress, then is
   * terminated; a thread stuck in a blocking call even then is left behind (it holds only its uffd dup).
   * Pages nobody filled are poisoned before the uffd goes, so an access still in flight (a threadpool read of
   * this memory) fails with EFAULT instead of reading the zeros of an unregistered range.
   */
  async #close(): Promise<void> {
    this.#prefetchSettled(new Error('closed before the background fill was done'));
    try {
      this.#worker.ref();
      this.#worker.postMessage({ type: 'stop' } satisfies ToWorker);
      if (!(await settlesWithin(this.#workerExited, STOP_GRACE_MS))) {
        await settlesWithin(this.#worker.terminate(), STOP_GRACE_MS);
      }
    } finally {
      process.off('exit', this.#onExit);
      try {
        if (!this.#failed) failMissingPages(this.#uffd, this.#mapping, this.#canPoison);
      } finally {
        this.#uffd.close(); // the last descriptor once the worker closed its own: wakes any faulter
        this.#mapping.close();
        this.#worker.unref();
      }
    }
  }
}

/** How long close() waits for the resolver to stop, and then for its termination. */
const STOP_GRACE_MS = 2000;

/** True when `promise` settles within `ms` (its outcome is not needed, only that it ended). */
async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => { timer = setTimeout(() => { resolve(false); }, ms); });
  try {
    return await Promise.race([promise.then(() => true, () => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

let warnedUserModeOnly = false;

/** Once per process: the silent alternative was an EFAULT much later, far from its cause. */
function warnUserModeOnly(refused: UffdError): void {
  if (warnedUserModeOnly) return;
  warnedUserModeOnly = true;
  process.emitWarning(
    `LazyMemory is user-mode-only here (a full userfaultfd was refused: ${refused.message}): kernel-mode access to pages not yet touched, `
      + '(a read(2) into the memory, fs.writeFile of a view) fails with EFAULT instead of being served. Touch them from JavaScript first, '
      + 'or run with the privilege; pass userModeOnly: true to choose this mode without the warning (lazy.mode tells which mode is in effect).',
    { code: 'UFFD_USER_MODE_ONLY' },
  );
}

async function nextMessage(worker: Worker): Promise<FromWorker> {
  const done = new AbortController();
  try {
    const [message] = (await Promise.race([
      once(worker, 'message', { signal: done.signal }),
      once(worker, 'exit', { signal: done.signal }).then(([code]) => {
        throw new Error(`LazyMemory: the resolver worker exited (code ${String(code)}) before it was ready`);
      }),
    ])) as [FromWorker];
    return message;
  } finally {
    done.abort(); // detaches the listener that lost the race
  }
}

