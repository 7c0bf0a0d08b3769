// A lazy-pages daemon for `criu restore --lazy-pages`: listens on the restore's socket, takes its one
// connection, serves each restored process's uffd from the images the moment it arrives, and after the
// "restore finished" marker prefetches everything that remains (or, demand-only, serves until every process
// has exited). Ends by itself: `done` settles with exit code 0 when every process is complete or gone,
// 1 when the restore failed (the connection ended early or sent something wrong) or the daemon was closed.
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { Userfaultfd } from '../../core/uffd.js';
import { UnixListener } from '../../core/unix-socket.js';
import { FdWatcher } from '../../core/watch.js';
import { closeDescriptor } from '../../core/descriptor.js';
import { probe } from '../../probe/probe.js';
import { openSource } from '../../sources/source.js';
import type { PageSource } from '../../sources/source.js';
import { checkOptionsObject, describe } from '../../validate.js';
import { CriuProtocolError } from './errors.js';
import { readProcessImages, readPstree } from './lazy-layout.js';
import { LazyProcess } from './lazy-process.js';
import type { RestoreMessage } from './protocol.js';
import { RestoreConnection } from './restore-connection.js';

export interface LazyPagesDaemonOptions {
  /** The dump's images directory (pstree.img, mm-*.img, pagemap-*.img, pages-*.img). */
  imagesDir: string;
  /** The socket `criu restore` connects to: `lazy-pages.socket` in its work directory. */
  socket: string;
  /** Fill every lazy page in the background after the restore finished (default true). */
  prefetch?: boolean;
  /** Pages filled per demand fault, the faulting one included (default 1, as for the page server). */
  readahead?: number;
  /** How often each process is checked for having exited, in ms (default 100). */
  probeIntervalMs?: number;
  /** Each log line (no newline). */
  log?: (line: string) => void;
  /** Write each restored process's working set here when the daemon ends: `<pid> 0x<address>` lines, in first-fault order. */
  record?: string;
  /** A working set written by `record`: each process's pages are filled first, as soon as its uffd arrives. */
  workingSet?: string;
}

export interface DaemonResult {
  code: 0 | 1;
  reason: string;
}

const PREFETCH_SLICE_MS = 0.5;

const OPTIONS = ['imagesDir', 'socket', 'prefetch', 'readahead', 'probeIntervalMs', 'log', 'record', 'workingSet'];

/** `<pid> 0x<address>` lines: the pages each process faulted first, in order. */
export function readWorkingSet(path: string): Map<number, bigint[]> {
  const sets = new Map<number, bigint[]>();
  for (const [i, line] of readFileSync(path, 'utf8').split('\n').entries()) {
    if (line.trim() === '') continue;
    const m = /^(\d+) 0x([0-9a-f]{1,16})$/.exec(line.trim());
    if (m?.[1] === undefined || m[2] === undefined || BigInt(`0x${m[2]}`) % 4096n !== 0n) throw new TypeError(`${path}:${String(i + 1)}: expected "<pid> 0x<page address>", got ${JSON.stringify(line.slice(0, 80))}`);
    const pid = Number(m[1]);
    let set = sets.get(pid);
    if (set === undefined) sets.set(pid, (set = []));
    set.push(BigInt(`0x${m[2]}`));
  }
  return sets;
}

export class CriuLazyPagesDaemon {
  readonly #o: Required<Omit<LazyPagesDaemonOptions, 'record' | 'workingSet'>> & { record: string | undefined };
  readonly #workingSet: Map<number, bigint[]>;
  /** The restored processes (not their forks), for the working-set record. */
  readonly #roots = new Map<number, LazyProcess>();
  readonly #pids: Set<number>;
  readonly #listener: UnixListener;
  readonly #listenWatch: FdWatcher;
  readonly #active = new Set<LazyProcess>();
  readonly #announced = new Set<number>();
  readonly #sources = new Map<string, Promise<PageSource>>();
  readonly #canPoison = probe().features.has('POISON');
  readonly #probeTimer: NodeJS.Timeout;
  readonly done: Promise<DaemonResult>;
  #resolve!: (result: DaemonResult) => void;
  #connection: RestoreConnection | undefined;
  /** Messages are handled in order, each after the one before (opening a pages file is asynchronous). */
  #queue: Promise<void> = Promise.resolve();
  #finished = false;
  #prefetching = false;
  #prefetchScheduled = false;
  #closed = false;

  private constructor(o: Required<Omit<LazyPagesDaemonOptions, 'record' | 'workingSet'>> & { record: string | undefined }, pids: Set<number>, listener: UnixListener, workingSet: Map<number, bigint[]>) {
    this.#o = o;
    this.#workingSet = workingSet;
    this.#pids = pids;
    this.#listener = listener;
    this.done = new Promise((resolve) => { this.#resolve = resolve; });
    this.#listenWatch = new FdWatcher(listener.fd, () => { this.#accept(); }, (err) => { this.#end(1, `listening failed: ${err.message}`); });
    this.#probeTimer = setInterval(() => { this.#probeAll(); }, o.probeIntervalMs);
  }

  /** Reads pstree.img and listens; throws (CriuImageError, UffdError) when either fails. */
  static listen(options: LazyPagesDaemonOptions): CriuLazyPagesDaemon {
    const o = checkOptionsObject(options, 'CriuLazyPagesDaemon options', OPTIONS) as unknown as LazyPagesDaemonOptions;
    for (const key of ['imagesDir', 'socket'] as const) {
      if (typeof o[key] !== 'string' || o[key].length === 0) throw new TypeError(`${key} must be a non-empty string, got ${describe(o[key])}`);
    }
    const readahead = o.readahead ?? 1;
    if (!Number.isSafeInteger(readahead) || readahead < 1 || readahead > 256) throw new RangeError(`readahead must be an integer in [1, 256], got ${describe(o.readahead)}`);
    const probeIntervalMs = o.probeIntervalMs ?? 100;
    if (!Number.isSafeInteger(probeIntervalMs) || probeIntervalMs < 1) throw new RangeError(`probeIntervalMs must be a positive integer, got ${describe(o.probeIntervalMs)}`);
    if (o.prefetch !== undefined && typeof o.prefetch !== 'boolean') throw new TypeError(`prefetch must be a boolean, got ${describe(o.prefetch)}`);
    for (const key of ['record', 'workingSet'] as const) {
      if (o[key] !== undefined && (typeof o[key] !== 'string' || o[key].length === 0)) throw new TypeError(`${key} must be a file path, got ${describe(o[key])}`);
    }
    const workingSet = o.workingSet === undefined ? new Map<number, bigint[]>() : readWorkingSet(o.workingSet);
    const pids = new Set(readPstree(o.imagesDir).map((e) => e.pid));
    const listener = UnixListener.listen(o.socket, { backlog: 10 });
    return new CriuLazyPagesDaemon({ imagesDir: o.imagesDir, socket: o.socket, prefetch: o.prefetch ?? true, readahead, probeIntervalMs, log: o.log ?? (() => undefined), record: o.record }, pids, listener, workingSet);
  }

  /** Processes being served now (restored ones and their forked children). */
  get processes(): number {
    return this.#active.size;
  }

  /** Stops at once: every uffd is closed (a restored process's missing pages then read as zeros). */
  close(reason = 'closed'): void {
    this.#end(1, reason);
  }

  #accept(): void {
    let conn;
    try {
      conn = this.#listener.accept();
    } catch (err) {
      this.#end(1, `accept failed: ${err instanceof Error ? err.message : String(err)}`);
      return;
    }
    if (conn === undefined) return;
    // One restore per daemon, like criu's own: no further connections are taken.
    this.#listenWatch.stop();
    this.#listener.close();
    this.#log('restore connected');
    this.#connection = new RestoreConnection(conn, {
      message: (m) => { this.#queue = this.#queue.then(() => this.#handle(m)); },
      failed: (err) => { this.#queue = this.#queue.then(() => { this.#end(1, err.message); }); },
      ended: (trailing) => { if (trailing !== undefined) this.#log(`restore connection: ${trailing}`); },
    });
  }

  async #handle(m: RestoreMessage): Promise<void> {
    if (this.#closed) {
      if (m.kind === 'process') closeDescriptor(m.fd);
      return;
    }
    switch (m.kind) {
      case 'zombie':
        this.#log(`pid ${String(m.pid)}: a zombie, nothing to serve`);
        return;
      case 'finished':
        this.#finished = true;
        this.#log(`restore finished: ${String(this.#announced.size)} process(es); ${this.#o.prefetch ? 'prefetching what remains' : 'demand-only until every process exits'}`);
        if (this.#o.prefetch) this.#startPrefetch();
        this.#checkDone();
        return;
      case 'process':
        await this.#adopt(m.pid, m.fd);
        return;
    }
  }

  async #adopt(pid: number, fd: number): Promise<void> {
    if (!this.#pids.has(pid) || this.#announced.has(pid)) {
      closeDescriptor(fd);
      const why = this.#announced.has(pid) ? 'was announced twice' : 'is not in pstree.img';
      this.#end(1, new CriuProtocolError('unknown-pid', `pid ${String(pid)} ${why}`).message);
      return;
    }
    this.#announced.add(pid);
    let uffd: Userfaultfd;
    try {
      uffd = Userfaultfd.fromFd(fd);
    } catch (err) {
      closeDescriptor(fd);
      this.#end(1, new CriuProtocolError('not-uffd', `pid ${String(pid)}: ${err instanceof Error ? err.message : String(err)}`).message);
      return;
    }
    try {
      const images = readProcessImages(this.#o.imagesDir, pid);
      const source = await this.#source(images.pagesFile);
      if (this.#closed) {
        uffd.close();
        return;
      }
      const lazy = images.runs.reduce((n, r) => n + r.pages, 0);
      this.#log(`pid ${String(pid)}: uffd received; ${String(images.runs.length)} lazy run(s), ${String(lazy)} page(s) in ${String(images.areas.length)} area(s)`);
      const workingSet = this.#workingSet.get(pid) ?? [];
      const process = new LazyProcess({
        label: `pid ${String(pid)}`, uffd, segments: images.runs, source, readahead: this.#o.readahead, canPoison: this.#canPoison,
        done: (p, how, reason) => { this.#processDone(p, how, reason); },
        forked: (child) => { this.#log(`${child.label}: forked; ${String(child.lazyPages)} lazy page(s) cloned`); this.#serve(child); },
        log: (line) => { this.#log(line); },
        record: this.#o.record !== undefined, workingSet,
      });
      this.#roots.set(pid, process);
      this.#serve(process);
      if (workingSet.length > 0) {
        this.#log(`pid ${String(pid)}: filling its working set first (${String(workingSet.length)} page(s))`);
        this.#startPrefetch();
      }
    } catch (err) {
      uffd.close();
      this.#end(1, `pid ${String(pid)}: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  #serve(p: LazyProcess): void {
    this.#active.add(p);
    p.start();
    if (this.#prefetching) this.#startPrefetch();
  }

  /** Everything is prefetched once the restore has finished (unless demand-only); before, working sets only. */
  get #prefetchAll(): boolean {
    return this.#finished && this.#o.prefetch;
  }

  #source(path: string): Promise<PageSource> {
    let source = this.#sources.get(path);
    if (source === undefined) {
      // Mapped and populated once: every copy then reads the page cache in place, with no fault of its own.
      source = openSource({ kind: 'file', path, access: 'mmap', populate: true });
      this.#sources.set(path, source);
    }
    return source;
  }

  #processDone(p: LazyProcess, how: string, reason: string): void {
    this.#active.delete(p);
    this.#logSummary(p, how, reason);
    if (how === 'failed') {
      this.#end(1, `${p.label}: ${reason}`);
      return;
    }
    this.#checkDone();
  }

  #logSummary(p: LazyProcess, how: string, reason: string): void {
    const s = p.summary();
    this.#log(`${p.label}: ${how}, ${reason}; faults ${String(s.faults)}, pages copied ${String(s.pagesCopied)} (prefetched ${String(s.prefetched)}), zero pages ${String(s.zeroPages)}, events fork ${String(s.events.fork)} remap ${String(s.events.remap)} unmap ${String(s.events.unmap)} remove ${String(s.events.remove)}, service p50 ${String(s.serviceMicros.p50)} us p99 ${String(s.serviceMicros.p99)} us`);
  }

  /** Round-robin, one run per process per loop turn: demand faults (poll phase) always come in between. */
  #startPrefetch(): void {
    this.#prefetching = true;
    if (this.#prefetchScheduled) return;
    this.#prefetchScheduled = true;
    setImmediate(() => { this.#prefetchTurn(); });
  }

  #prefetchTurn(): void {
    this.#prefetchScheduled = false;
    if (this.#closed) return;
    // Runs of up to 1 MiB, round-robin, for at most PREFETCH_SLICE_MS per turn: a demand fault waits at
    // most about that long, and the loop's own cost per turn is spread over several runs.
    const until = performance.now() + PREFETCH_SLICE_MS;
    let more = true;
    while (more && performance.now() < until) {
      more = false;
      const all = this.#prefetchAll;
      for (const p of [...this.#active]) {
        if (p.prefetchStep(all)) more = true;
      }
    }
    if (more) {
      this.#prefetchScheduled = true;
      setImmediate(() => { this.#prefetchTurn(); });
    }
  }

  #probeAll(): void {
    for (const p of [...this.#active]) p.probe();
  }

  #checkDone(): void {
    if (this.#finished && this.#active.size === 0) this.#end(0, 'every process is complete or has exited');
  }

  #end(code: 0 | 1, reason: string): void {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#probeTimer);
    this.#listenWatch.stop();
    this.#listener.close();
    this.#connection?.close();
    for (const p of this.#active) {
      p.close();
      this.#logSummary(p, 'stopped', 'the daemon is ending');
    }
    this.#active.clear();
    this.#writeRecord();
    this.#log(code === 0 ? `done: ${reason}` : `error: ${reason}`);
    void Promise.all([...this.#sources.values()].map((s) => s.then((src) => src.close?.(), () => undefined))).then(() => { this.#resolve({ code, reason }); });
  }

  #writeRecord(): void {
    if (this.#o.record === undefined) return;
    const lines: string[] = [];
    for (const [pid, p] of this.#roots) for (const a of p.recorded) lines.push(`${String(pid)} 0x${a.toString(16)}`);
    try {
      // Whole or not at all: a reader never sees half a working set.
      writeFileSync(`${this.#o.record}.tmp`, lines.length === 0 ? '' : `${lines.join('\n')}\n`);
      renameSync(`${this.#o.record}.tmp`, this.#o.record);
      this.#log(`working set written to ${this.#o.record}: ${String(lines.length)} page(s)`);
    } catch (err) {
      this.#log(`error: the working set could not be written to ${this.#o.record}: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  #log(line: string): void {
    this.#o.log(line);
  }
}
