// One restored process (one mm, one uffd) served from its images: demand faults from the lazy segments, a
// zero page where no lazy entry covers, events applied before the faults read with them, EAGAIN retried
// after the events, ESRCH/ENOSPC taken as the process's exit. Background prefetch fills the segments in
// large runs between demand faults. A FORK event makes a child LazyProcess with its own uffd and a copy of
// the ranges that remain.
import { isEexist, UffdError } from '../../errors.js';
import { PageFiller } from '../../fill/page-filler.js';
import type { FillStats } from '../../metrics/fill-metrics.js';
import { BYTES, FAULTS, FillMetrics, ZERO_PAGES } from '../../metrics/fill-metrics.js';
import { fixedReadahead } from '../../policy/readahead.js';
import type { PageSource } from '../../sources/source.js';
import type { Userfaultfd, UffdEventOf } from '../../core/uffd.js';
import { Mapping, protectNone } from '../../core/mapping.js';
import { FdWatcher } from '../../core/watch.js';
import { CRIU_PAGE_SIZE } from './images.js';
import type { LazyRun } from './lazy-layout.js';
import { SegmentMap } from './segments.js';

const PAGE = BigInt(CRIU_PAGE_SIZE);
const READ_BATCH = 128;
/** Any page-aligned user address: the liveness probe never gets as far as touching it. */
const PROBE_ADDRESS = 0x40000000n;

export interface LazyProcessSummary {
  faults: number;
  pagesCopied: number;
  zeroPages: number;
  prefetched: number;
  events: { fork: number; remap: number; unmap: number; remove: number };
  serviceMicros: { p50: number; p99: number };
}

export interface LazyProcessOptions {
  label: string;
  uffd: Userfaultfd;
  segments: SegmentMap<PageFiller> | readonly LazyRun[];
  source: PageSource;
  readahead: number;
  canPoison: boolean;
  /** The process is done: `exited` (its memory is gone) or `complete` (every lazy page is in). */
  done: (process: LazyProcess, how: 'exited' | 'complete' | 'failed', reason: string) => void;
  forked: (child: LazyProcess) => void;
  log: (line: string) => void;
  /** Keep the order in which pages were first faulted (working-set recording). */
  record?: boolean;
  /** Pages to fill first, in this order, before the rest (a recorded working set). */
  workingSet?: readonly bigint[];
}

export class LazyProcess {
  readonly label: string;
  readonly #o: LazyProcessOptions;
  readonly #uffd: Userfaultfd;
  readonly #map: SegmentMap<PageFiller>;
  readonly #stats = new FillMetrics();
  readonly #events = { fork: 0, remap: 0, unmap: 0, remove: 0 };
  #watcher: FdWatcher | undefined;
  #deferred: bigint[] = [];
  #busy = false;
  #again = false;
  #closed = false;
  #forks = 0;
  #prefetchIndex = 0;
  #retryScheduled = false;
  readonly #recorded: bigint[] = [];
  readonly #seen = new Set<bigint>();
  #hotIndex = 0;

  constructor(options: LazyProcessOptions) {
    this.label = options.label;
    this.#o = options;
    this.#uffd = options.uffd;
    const make = (start: bigint, pages: number, fileOffset: number): PageFiller => fillerFor(options, this.#stats, start, pages, fileOffset);
    this.#map = options.segments instanceof SegmentMap ? options.segments.clone(make) : SegmentMap.fromRuns(options.segments, make);
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Lazy pages still described (an upper bound on what remains to copy). */
  get lazyPages(): number {
    return this.#map.pages;
  }

  start(): void {
    this.#watcher = new FdWatcher(this.#uffd.fd, () => { this.#kick(); }, (err) => { this.#finish('failed', `poll failed: ${err.message}`); });
    this.#kick();
  }

  summary(): LazyProcessSummary {
    const s = this.#stats.read();
    return { faults: s.faults, pagesCopied: s.pagesServed, zeroPages: s.zeroFilled, prefetched: s.prefetchPages, events: { ...this.#events }, serviceMicros: s.serviceMicros };
  }

  /** Pages in the order they were first faulted (with `record`). */
  get recorded(): readonly bigint[] {
    return this.#recorded;
  }

  /**
   * Copies one background run: the next pages of the working set first (up to 64 a step), then, with
   * `all`, up to 1 MiB of what remains. Returns false when there is nothing more to do now; with `all`,
   * that means every segment is filled, and then the process is complete: its uffd is closed (pages
   * nobody described read as zeros without us).
   */
  prefetchStep(all: boolean): boolean {
    if (this.#closed) return false;
    const hot = this.#o.workingSet ?? [];
    if (this.#hotIndex < hot.length) {
      try {
        for (let n = 0; n < 64 && this.#hotIndex < hot.length; n++) {
          const address = hot[this.#hotIndex] ?? 0n;
          const segment = this.#map.find(address);
          if (segment !== undefined) {
            const step = segment.filler.prefetchPage(Number((address - segment.start) / PAGE));
            if (step instanceof Promise) {
              this.#settleLater(step, undefined);
              this.#hotIndex++;
              return true;
            }
          }
          this.#hotIndex++;
        }
      } catch (err) {
        if (err instanceof UffdError && err.code === 'EAGAIN') {
          this.#kick();
          return true;
        }
        this.#fail(err);
        return false;
      }
      return true;
    }
    if (!all) return false;
    for (;;) {
      const segments = this.#map.segments;
      const segment = segments[this.#prefetchIndex];
      if (segment === undefined) {
        if (this.#deferred.length > 0 || this.#busy) return true; // demand work first
        this.#finish('complete', 'every lazy page is in');
        return false;
      }
      let more: boolean;
      try {
        const step = segment.filler.prefetchChunk();
        if (step instanceof Promise) {
          // Not with the mapped pages file; a source that answers later is waited for on a later turn.
          this.#settleLater(step, undefined);
          return true;
        }
        more = step;
      } catch (err) {
        if (err instanceof UffdError && err.code === 'EAGAIN') {
          this.#kick(); // an event is pending: read it, the map may change under us
          return true;
        }
        this.#fail(err);
        return false;
      }
      if (more) return true;
      this.#prefetchIndex++;
    }
  }

  /** Whether the process's memory still exists; closes the process (exited) when it does not. */
  probe(): boolean {
    if (this.#closed) return false;
    try {
      // A copy from an unreadable page: the kernel checks that the mm lives (ESRCH) before it reads the
      // source, then fails with EFAULT (or ENOENT, EEXIST, EAGAIN) without touching the target.
      this.#uffd.copy(PROBE_ADDRESS, unreadablePage(), { wake: false });
    } catch (err) {
      if (isGone(err)) {
        this.#finish('exited', `its memory is gone (${(err as UffdError).code})`);
        return false;
      }
    }
    return true;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#watcher?.stop();
    this.#uffd.close();
  }

  #kick(): void {
    this.#again = true;
    if (this.#busy) return;
    this.#busy = true;
    this.#pump();
  }

  #pump(): void {
    while (this.#again || this.#deferred.length > 0) {
      if (this.#closed) break;
      this.#again = false;
      let events: UffdEventOf[];
      try {
        events = this.#uffd.read(READ_BATCH);
      } catch (err) {
        this.#fail(err);
        break;
      }
      if (events.length > 0) this.#again = true;
      for (const event of events) {
        if (event.type === 'pagefault') this.#deferred.push(event.address);
        else this.#apply(event);
        if (this.#closed) return;
      }
      const faults = this.#deferred;
      this.#deferred = [];
      for (let i = 0; i < faults.length; i++) {
        const outcome = this.#serve(faults[i] ?? 0n);
        if (outcome === 'gone') return;
        if (outcome === 'deferred') {
          // An event is pending (EAGAIN): read it first, then retry this fault and the rest; the kernel
          // does not send the fault again.
          this.#deferred.push(...faults.slice(i));
          this.#again = true;
          break;
        }
      }
      if (this.#deferred.length > 0 && events.length === 0) {
        // EAGAIN although no event was there to read: the kernel lowers its "memory changing" count only
        // when the thread changing the memory runs again. Retry on the next loop turn rather than spin.
        if (!this.#retryScheduled) {
          this.#retryScheduled = true;
          setImmediate(() => {
            this.#retryScheduled = false;
            this.#busy = false;
            this.#kick();
          });
        }
        return;
      }
    }
    this.#busy = false;
  }

  #serve(address: bigint): 'done' | 'deferred' | 'gone' {
    const page = address - (address % PAGE);
    if (this.#o.record === true && !this.#seen.has(page)) {
      this.#seen.add(page);
      this.#recorded.push(page);
    }
    try {
      const segment = this.#map.find(page);
      if (segment !== undefined) {
        const served = segment.filler.fault(Number(page));
        if (served instanceof Promise) this.#settleLater(served, page);
      } else {
        // Registered (the kernel asked) but no lazy entry covers it: zeros, like a fresh anonymous page.
        this.#stats.add(FAULTS, 1);
        try {
          this.#uffd.zeropage({ address: page, length: CRIU_PAGE_SIZE });
          this.#stats.add(ZERO_PAGES, 1);
          this.#stats.add(BYTES, CRIU_PAGE_SIZE);
        } catch (err) {
          if (!isEexist(err)) throw err;
          this.#uffd.wake({ address: page, length: CRIU_PAGE_SIZE });
        }
      }
      return 'done';
    } catch (err) {
      if (err instanceof UffdError && err.code === 'EAGAIN') return 'deferred';
      this.#fail(err);
      return 'gone';
    }
  }

  /** A fill that went asynchronous: EAGAIN puts its fault back in the queue, other errors end the process. */
  #settleLater(work: Promise<unknown>, page: bigint | undefined): void {
    work.then(undefined, (err: unknown) => {
      if (err instanceof UffdError && err.code === 'EAGAIN') {
        if (page !== undefined) this.#deferred.push(page);
        this.#kick();
      } else {
        this.#fail(err);
      }
    });
  }

  #apply(event: UffdEventOf): void {
    switch (event.type) {
      case 'fork': {
        this.#events.fork++;
        this.#forks++;
        const child = new LazyProcess({ ...this.#o, label: `${this.label}/fork${String(this.#forks)}`, uffd: event.uffd, segments: this.#map, record: false, workingSet: [] });
        this.#o.forked(child);
        return;
      }
      case 'remap':
        this.#events.remap++;
        this.#map.move(event.from, event.to, event.length);
        this.#prefetchIndex = 0;
        return;
      case 'remove':
      case 'unmap':
        this.#events[event.type]++;
        this.#map.drop(event.start - (event.start % PAGE), event.end + ((PAGE - (event.end % PAGE)) % PAGE));
        this.#prefetchIndex = 0;
        return;
      case 'unknown':
        this.#o.log(`${this.label}: unknown uffd event ${String(event.code)} ignored`);
        return;
      default:
        return;
    }
  }

  #fail(err: unknown): void {
    if (isGone(err)) this.#finish('exited', `its memory is gone (${(err as UffdError).code})`);
    else this.#finish('failed', `serving failed: ${err instanceof Error ? err.message : String(err)}`);
  }

  #finish(how: 'exited' | 'complete' | 'failed', reason: string): void {
    if (this.#closed) return;
    this.close();
    this.#o.done(this, how, reason);
  }
}

function fillerFor(o: LazyProcessOptions, stats: FillStats, start: bigint, pages: number, fileOffset: number): PageFiller {
  return new PageFiller({
    uffd: o.uffd, source: o.source, base: start, pageSize: CRIU_PAGE_SIZE, pages, sourceOffset: fileOffset,
    policy: fixedReadahead(o.readahead), onSourceError: 'poison', canPoison: o.canPoison, retries: 0, retryDelayMs: 0,
    stats, reportSourceError: () => undefined,
  });
}

/** ESRCH: the mm is gone; ENOSPC: older kernels' answer once the mm has been torn down. */
function isGone(err: unknown): boolean {
  return err instanceof UffdError && (err.code === 'ESRCH' || err.code === 'ENOSPC');
}

/** Kept for the life of the process: once unmapped, its address could hold readable memory again. */
let unreadable: { mapping: Mapping; view: Uint8Array } | undefined;

function unreadablePage(): Uint8Array {
  if (unreadable === undefined) {
    const mapping = Mapping.anonymous(CRIU_PAGE_SIZE);
    const view = new Uint8Array(mapping.view(0, CRIU_PAGE_SIZE));
    protectNone(mapping.address, CRIU_PAGE_SIZE);
    // Never read by JavaScript: only the kernel's copy_from_user sees it, and fails.
    unreadable = { mapping, view };
  }
  return unreadable.view;
}
