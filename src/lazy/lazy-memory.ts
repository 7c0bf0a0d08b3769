// LazyMemory: memory whose pages are filled on first touch from a page source. The JS thread only touches
// the memory; a worker thread resolves the faults (a thread cannot serve its own faults).
import { EventEmitter, once } from 'node:events';
import { Worker } from 'node:worker_threads';
import type { SourceSpec } from '../sources/source.js';
import { Mapping } from '../mapping.js';
import { Userfaultfd } from '../uffd.js';
import { UffdError } from '../errors.js';
import type { IoctlSet } from '../sets.js';
import { closeSync, openSync, readSync } from 'node:fs';
import { checkBoolean, checkOptionsObject, describe } from '../validate.js';
import type { SourceErrorPolicy } from '../fill/page-filler.js';
import type { FillStatsSnapshot } from '../fill/stats.js';
import { SharedStats } from '../fill/stats.js';

export type LazyStats = FillStatsSnapshot;
import type { FromWorker, ToWorker, WorkerInput } from './worker.js';

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
  /** 'auto' (default): a full uffd when allowed, else user-mode-only (kernel-mode access then gets EFAULT). */
  userModeOnly?: boolean | 'auto';
}

const OPTIONS = ['source', 'readahead', 'hugetlb', 'prefetch', 'onSourceError', 'retries', 'retryDelayMs', 'userModeOnly'];

function openUffd(userModeOnly: boolean | 'auto'): Userfaultfd {
  if (userModeOnly !== 'auto') return Userfaultfd.open({ userModeOnly });
  try {
    return Userfaultfd.open();
  } catch (err) {
    if (err instanceof UffdError && err.code === 'EPERM') return Userfaultfd.open({ userModeOnly: true });
    throw err;
  }
}

export class LazyMemory extends EventEmitter {
  readonly #mapping: Mapping;
  readonly #uffd: Userfaultfd;
  readonly #worker: Worker;
  readonly #stats: SharedStats;
  readonly #onExit: () => void;
  /** The source's length in bytes (the memory is this rounded up to whole pages). */
  readonly sourceLength: number;
  #closing: Promise<void> | undefined;

  private constructor(parts: { mapping: Mapping; uffd: Userfaultfd; ioctls: IoctlSet; worker: Worker; stats: SharedStats; sourceLength: number }) {
    super();
    this.#mapping = parts.mapping;
    this.#uffd = parts.uffd;
    this.#worker = parts.worker;
    this.#stats = parts.stats;
    this.sourceLength = parts.sourceLength;
    this.#worker.on('message', (m: FromWorker) => {
      if (m.type === 'sourceError') this.emit('error', Object.assign(new Error(`page ${String(m.page)} zero-filled: the source failed: ${m.message}`), { code: 'ERR_UFFD_SOURCE', page: m.page }));
    });
    // After the listener: adding a 'message' listener refs the worker's port again.
    this.#worker.unref();
    this.#worker.on('error', (err) => { this.emit('error', err); });
    // Process exit joins the libuv threadpool: a pool thread asleep in a fault on this memory would hang it.
    // Closing this descriptor does not wake it (the worker's dup keeps the uffd alive, and its watcher must
    // not see that fd vanish), so the pages nobody filled are poisoned: a waiting faulter wakes and gets
    // EFAULT (kernel-mode) instead of data, never zeros that an in-flight write could persist.
    // Prepended: it must run before the library's own exit listener closes this uffd.
    this.#onExit = () => {
      failMissingPages(this.#uffd, this.#mapping, parts.ioctls);
      this.#uffd.close();
    };
    process.prependListener('exit', this.#onExit);
  }

  static async open(options: LazyMemoryOptions): Promise<LazyMemory> {
    const o = checkOptionsObject(options, 'LazyMemory.open options', OPTIONS);
    const source = o.source as SourceSpec | undefined;
    if (source === undefined || typeof source !== 'object' || !['file', 'buffer', 'zero', 'module'].includes((source as { kind?: unknown }).kind as string)) {
      throw new TypeError(`source must come from fileSource(), bufferSource(), zeroSource() or moduleSource(), got ${describe(source)}`);
    }
    const readahead = o.readahead ?? 'auto';
    if (readahead !== 'auto' && !(Number.isSafeInteger(readahead) && (readahead as number) >= 1 && (readahead as number) <= 65536)) {
      throw new RangeError(`readahead must be 'auto' or a page count in [1, 65536], got ${describe(readahead)}`);
    }
    const hugetlb = checkBoolean(o.hugetlb, 'hugetlb') ?? false;
    const prefetch = checkBoolean(o.prefetch, 'prefetch') ?? false;
    const onSourceError = o.onSourceError ?? 'poison';
    if (onSourceError !== 'poison' && onSourceError !== 'zero') throw new TypeError(`onSourceError must be 'poison' or 'zero', got ${describe(onSourceError)}`);
    const retries = o.retries ?? 3;
    if (!Number.isSafeInteger(retries) || (retries as number) < 0 || (retries as number) > 20) throw new RangeError(`retries must be an integer in [0, 20], got ${describe(retries)}`);
    const retryDelayMs = o.retryDelayMs ?? 10;
    if (typeof retryDelayMs !== 'number' || !(retryDelayMs >= 0) || retryDelayMs > 60_000) throw new RangeError(`retryDelayMs must be in [0, 60000], got ${describe(retryDelayMs)}`);
    const userModeOnly = o.userModeOnly ?? 'auto';
    if (userModeOnly !== 'auto' && typeof userModeOnly !== 'boolean') throw new TypeError(`userModeOnly must be a boolean or 'auto', got ${describe(userModeOnly)}`);

    const stats = new SharedStats();
    const input: WorkerInput = {
      source, readahead: readahead as number | 'auto', prefetch, onSourceError, retries: retries as number, retryDelayMs,
      stats: stats.buffer,
    };
    // Referenced while opening and closing (the caller awaits it), unreferenced while it serves.
    // The worker inherits the process's flags (loaders a module source may need), except --input-type, which
    // applies only to an --eval string and makes a worker started from one fail to load its file.
    const execArgv = process.execArgv.filter((flag) => !flag.startsWith('--input-type'));
    const worker = new Worker(new URL('./worker.js', import.meta.url), { workerData: input, execArgv });
    let mapping: Mapping | undefined;
    let uffd: Userfaultfd | undefined;
    try {
      const first = await nextMessage(worker);
      if (first.type !== 'source') throw new Error(`LazyMemory: the source could not be opened: ${first.type === 'failed' ? first.message : first.type}`);
      mapping = Mapping.anonymous(first.length, { hugetlb });
      uffd = openUffd(userModeOnly);
      const ioctls = uffd.register(mapping, { missing: true });
      const serve: ToWorker = { type: 'serve', fd: uffd.dup(), base: mapping.address, pageSize: mapping.pageSize, pages: mapping.length / mapping.pageSize };
      worker.postMessage(serve);
      const ready = await nextMessage(worker);
      if (ready.type !== 'ready') throw new Error(`LazyMemory: the resolver failed to start: ${ready.type === 'failed' ? ready.message : ready.type}`);
      return new LazyMemory({ mapping, uffd, ioctls, worker, stats, sourceLength: first.length });
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

  async #close(): Promise<void> {
    const stopped = once(this.#worker, 'exit');
    this.#worker.ref();
    this.#worker.postMessage({ type: 'stop' } satisfies ToWorker);
    await stopped;
    process.off('exit', this.#onExit);
    this.#uffd.close(); // the worker closed its descriptor: this is the last one, and wakes any faulter
    this.#mapping.close();
  }
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

/**
 * At process exit: poisons every page of `mapping` that is not present (from /proc/self/pagemap), waking
 * whoever waits on them. Without UFFDIO_POISON (before 6.6) the range is unregistered instead: faulters
 * then see zero pages.
 */
function failMissingPages(uffd: Userfaultfd, mapping: Mapping, ioctls: IoctlSet): void {
  if (!ioctls.has('POISON')) {
    uffd.unregister(mapping);
    return;
  }
  const { pageSize } = mapping;
  const pages = mapping.length / pageSize;
  const step = pageSize / 4096; // pagemap has one 8-byte entry per base page
  const firstEntry = Number(mapping.address / 4096n);
  const CHUNK = 4096; // pages per pagemap read
  const entries = Buffer.alloc(CHUNK * step * 8);
  const fd = openSync('/proc/self/pagemap', 'r');
  try {
    let runStart = -1;
    for (let base = 0; base < pages; base += CHUNK) {
      const n = Math.min(CHUNK, pages - base);
      readSync(fd, entries, 0, n * step * 8, (firstEntry + base * step) * 8);
      for (let i = 0; i < n; i++) {
        const present = entries.readBigUInt64LE(i * step * 8) >> 63n === 1n;
        if (!present && runStart < 0) runStart = base + i;
        if (present && runStart >= 0) {
          poisonRun(uffd, mapping.address + BigInt(runStart * pageSize), (base + i - runStart) * pageSize, pageSize);
          runStart = -1;
        }
      }
    }
    if (runStart >= 0) poisonRun(uffd, mapping.address + BigInt(runStart * pageSize), (pages - runStart) * pageSize, pageSize);
  } finally {
    closeSync(fd);
  }
}

function poisonRun(uffd: Userfaultfd, address: bigint, length: number, pageSize: number): void {
  let done = 0;
  while (done < length) {
    try {
      done += uffd.poison({ address: address + BigInt(done), length: length - done, pageSize });
    } catch (err) {
      // A page the resolver filled meanwhile: skip it.
      if (!(err instanceof UffdError) || err.code !== 'EEXIST') throw err;
      done += (err.bytes ?? 0) + pageSize;
    }
  }
}
