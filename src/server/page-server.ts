// PageServer: serves the guest memory of other processes (microVMs restoring a snapshot) from a memory
// file. Speaks the Firecracker UFFD handshake in all its versions: a JSON array of regions plus one uffd
// over a Unix socket. Every client gets its own uffd, regions and statistics; a bad or dead client is
// dropped and the others are served on. Runs on the event loop: the faults come from other processes.
import { EventEmitter } from 'node:events';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { openSource } from '../sources/source.js';
import type { PageSource } from '../sources/source.js';
import { memorySource } from '../sources/memory-location.js';
import type { MemoryLocation } from '../sources/memory-location.js';
import { Userfaultfd } from '../core/uffd.js';
import { probe } from '../probe/probe.js';
import { checkInteger, checkOptionsObject, describe } from '../validate.js';
import { closeDescriptor } from '../core/descriptor.js';
import { FdWatcher } from '../core/watch.js';
import { HandshakeReader } from './firecracker/handshake.js';
import { PendingClient } from './pending-client.js';
import { ClientSession } from './session.js';
import type { GuestRegion } from './region.js';
import type { SessionSummary } from './session.js';
import { UnixListener } from '../core/unix-socket.js';
import type { UnixConnection } from '../core/unix-socket.js';
import { messageOf } from '../errors.js';
import type { FillMetricsSnapshot } from '../metrics/fill-metrics.js';
import { sumFillMetrics } from '../metrics/sum.js';
import { checkSnapshot, readWorkingSet, sourceIdentity, WORKING_SET_FORMAT, WORKING_SET_VERSION, writeWorkingSet } from '../metrics/working-set.js';
import type { SnapshotIdentity, WorkingSetRecord } from '../metrics/working-set.js';

export interface PageServerOptions {
  /** The Unix socket to listen on (created 0600; a stale socket file left by a dead server is replaced). */
  socket: string;
  /** The snapshot's memory: a file, an http(s) URL or httpSource(...), the regions back to back. Only read within its bounds. */
  memory: MemoryLocation;
  /** Pages filled per fault, the faulting one included (default 1). */
  readahead?: number;
  handshakeTimeoutMs?: number;
  maxClients?: number;
  maxPayloadBytes?: number;
  maxRegions?: number;
  /** Only peers with these uids are served (default: anyone who can connect to the 0600 socket). */
  allowUids?: number[];
  /**
   * A directory (created if missing): each client's working set is written there as its own record
   * (docs/working-sets.md), never replacing another, when the client goes away or its faults settle.
   */
  record?: string;
  /** Settle detector: a client's record is complete once no new page has faulted for this long (ms). */
  recordSettleMs?: number;
  /** A record written by `record` (or `uffd ws merge`), checked against the memory file: those pages are filled first, in the background, for every client. */
  prefetch?: string;
}

export type ServerLog =
  | { event: 'listening'; socket: string; memory: string; memoryBytes: number }
  | { event: 'client'; id: number; pid: number; uid: number; version: string; pageSize: number; regions: { base: string; size: number; offset: number }[] }
  | { event: 'refused'; id: number; pid?: number; reason: string }
  | { event: 'gone'; id: number; pid: number; reason: string; summary: SessionSummary; pagesTotal: number }
  | { event: 'prefetched'; id: number; pid: number; pages: number; ms: number }
  | { event: 'recorded'; id: number; pid: number; path: string; pages: number; ended: 'settled' | 'client gone' }
  | { event: 'error'; message: string }
  | { event: 'closed'; source?: Record<string, number> };

export interface ClientProgress {
  id: number;
  pid: number;
  pagesServed: number;
  pagesTotal: number;
}

export interface ServerMetrics {
  clients: {
    /** Being served now, and connected but still in their handshake. */
    served: number;
    pending: number;
    /** Since listen(): handshakes accepted, connections refused, served clients gone. */
    accepted: number;
    refused: number;
    gone: number;
  };
  /** Every client's fill metrics added up, present and past ones. */
  total: FillMetricsSnapshot;
  /** The clients being served now. */
  perClient: { id: number; pid: number; pagesTotal: number; metrics: FillMetricsSnapshot }[];
}

const ACCEPT_RETRY_MS = 100;

const OPTIONS = ['socket', 'memory', 'readahead', 'handshakeTimeoutMs', 'maxClients', 'maxPayloadBytes', 'maxRegions', 'allowUids', 'record', 'recordSettleMs', 'prefetch'];

function positiveInt(value: unknown, name: string, fallback: number, max: number): number {
  if (value === undefined) return fallback;
  checkInteger(value, name, { min: 1, max });
  return value;
}

type ResolvedOptions = PageServerOptions & Required<Pick<PageServerOptions, 'readahead' | 'handshakeTimeoutMs' | 'maxClients' | 'maxPayloadBytes' | 'maxRegions'>>;

/** One client's working set while it is recorded. */
interface Recording {
  pageSize: number;
  /** performance.now() and Date.now() at the first fault. */
  startedAt: number;
  startedWall: number;
  lastNewAt: number;
  offsets: number[];
  micros: number[];
  /** Written (settled): later faults are not recorded. */
  done: boolean;
  settleTimer: NodeJS.Timeout | undefined;
}

interface Served {
  id: number;
  pid: number;
  session: ClientSession;
  pidfd: number;
  pidWatch: FdWatcher;
  conn: UnixConnection;
  recording: Recording | undefined;
}

export class PageServer extends EventEmitter<{ log: [ServerLog] }> {
  readonly #listener: UnixListener;
  #watcher: FdWatcher;
  readonly #source: PageSource;
  readonly #o: ResolvedOptions;
  readonly #pending = new Map<number, PendingClient>();
  readonly #served = new Map<number, Served>();
  readonly #prefetch: WorkingSetRecord | undefined;
  readonly #identity: SnapshotIdentity | undefined;
  #nextId = 1;
  #closed = false;
  /** Set while accepting is paused after a failed accept (out of descriptors). */
  #acceptRetry: NodeJS.Timeout | undefined;
  /** Accepting has failed since the last success: logged once, not every retry. */
  #acceptFailing = false;
  /** The sum of the metrics of clients that are gone. */
  #retired: FillMetricsSnapshot = sumFillMetrics([]);
  readonly #counts = { accepted: 0, refused: 0, gone: 0 };

  private constructor(listener: UnixListener, source: PageSource, options: ResolvedOptions, prefetch: WorkingSetRecord | undefined, identity: SnapshotIdentity | undefined) {
    super();
    this.#listener = listener;
    this.#source = source;
    this.#o = options;
    this.#prefetch = prefetch;
    this.#identity = identity;
    this.#watcher = this.#watchListener();
  }

  static async listen(options: PageServerOptions): Promise<PageServer> {
    const o = checkOptionsObject(options, 'PageServer.listen options', OPTIONS) as unknown as PageServerOptions;
    const memory = memorySource(o.memory);
    const resolved = {
      ...o,
      readahead: positiveInt(o.readahead, 'readahead', 1, 65536),
      handshakeTimeoutMs: positiveInt(o.handshakeTimeoutMs, 'handshakeTimeoutMs', 10_000, 3_600_000),
      maxClients: positiveInt(o.maxClients, 'maxClients', 64, 100_000),
      maxPayloadBytes: positiveInt(o.maxPayloadBytes, 'maxPayloadBytes', 1 << 20, 64 << 20),
      maxRegions: positiveInt(o.maxRegions, 'maxRegions', 1024, 1 << 20),
    };
    if (o.allowUids !== undefined && (!Array.isArray(o.allowUids) || !o.allowUids.every((u) => Number.isSafeInteger(u) && u >= 0))) {
      throw new TypeError(`allowUids must be an array of uids, got ${describe(o.allowUids)}`);
    }
    if (o.recordSettleMs !== undefined && !(typeof o.recordSettleMs === 'number' && o.recordSettleMs >= 1 && o.recordSettleMs <= 86_400_000)) {
      throw new RangeError(`recordSettleMs must be a number of ms in [1, 86400000], got ${describe(o.recordSettleMs)}`);
    }
    if (o.recordSettleMs !== undefined && o.record === undefined) throw new TypeError('recordSettleMs needs record');
    if (o.record !== undefined && (typeof o.record !== 'string' || o.record === '')) throw new TypeError(`record must be a directory path, got ${describe(o.record)}`);
    const prefetchRecord = o.prefetch === undefined ? undefined : readWorkingSet(o.prefetch);
    if (o.record !== undefined) mkdirSync(o.record, { recursive: true, mode: 0o700 });
    const source = await openSource(memory.spec);
    let identity: SnapshotIdentity | undefined;
    try {
      // What records are tied to; cheap (sampled), and only when records are written or read.
      identity = o.record !== undefined || prefetchRecord !== undefined ? await sourceIdentity(source) : undefined;
      if (prefetchRecord !== undefined && identity !== undefined && o.prefetch !== undefined) checkSnapshot(prefetchRecord, identity, o.prefetch);
    } catch (err) {
      await source.close?.();
      throw err;
    }
    const prefetch = prefetchRecord;
    // A remote source starts fetching the recorded working set now, behind any demand fault.
    for (const offset of prefetch?.offsets ?? []) source.prefetch?.(offset, 1);
    let listener: UnixListener;
    try {
      listener = UnixListener.listen(o.socket);
    } catch (err) {
      await source.close?.();
      throw err;
    }
    const server = new PageServer(listener, source, resolved, prefetch, identity);
    setImmediate(() => { server.#log({ event: 'listening', socket: listener.path, memory: memory.label, memoryBytes: source.length }); });
    return server;
  }

  get socket(): string {
    return this.#listener.path;
  }

  progress(): ClientProgress[] {
    return [...this.#served.values()].map((c) => ({ id: c.id, pid: c.pid, pagesServed: c.session.summary().pagesCopied, pagesTotal: c.session.pagesTotal }));
  }

  /** The source's counters (a remote source: bytes fetched, requests, retries, cache hits), if it keeps any. */
  sourceStats(): Record<string, number> | undefined {
    return this.#source.stats?.();
  }

  /** Counters, histograms and gauges of everything served since listen(). */
  metrics(): ServerMetrics {
    const perClient = [...this.#served.values()].map((c) => ({ id: c.id, pid: c.pid, pagesTotal: c.session.pagesTotal, metrics: c.session.metrics() }));
    return {
      clients: { served: this.#served.size, pending: this.#pending.size, ...this.#counts },
      total: sumFillMetrics([this.#retired, ...perClient.map((c) => c.metrics)]),
      perClient,
    };
  }

  /** Stops listening and drops every client (their uffds are closed). */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#watcher.stop();
    clearTimeout(this.#acceptRetry);
    this.#listener.close();
    for (const pending of this.#pending.values()) pending.cancel();
    for (const client of this.#served.values()) this.#drop(client, 'server closing');
    await this.#source.close?.();
    const stats = this.#source.stats?.();
    this.#log({ event: 'closed', ...(stats === undefined ? {} : { source: stats }) });
  }

  #log(entry: ServerLog): void {
    this.emit('log', entry);
  }

  #watchListener(): FdWatcher {
    return new FdWatcher(this.#listener.fd, () => { this.#acceptAll(); }, (err) => { this.#log({ event: 'error', message: `listening socket: ${err.message}` }); });
  }

  #acceptAll(): void {
    for (;;) {
      let conn: UnixConnection | undefined;
      try {
        conn = this.#listener.accept();
      } catch (err) {
        // Out of descriptors (EMFILE/ENFILE) or memory: the connection stays queued, and a level-triggered
        // watcher would fire again at once. Pause accepting and retry shortly. The timer keeps the loop alive:
        // while paused it is the only handle of the server, and a server must not exit because it is full.
        if (!this.#acceptFailing) this.#log({ event: 'error', message: `accept failed: ${messageOf(err)}; retrying every ${String(ACCEPT_RETRY_MS)} ms` });
        this.#acceptFailing = true;
        this.#watcher.stop();
        this.#acceptRetry = setTimeout(() => {
          this.#acceptRetry = undefined;
          if (!this.#closed) this.#watcher = this.#watchListener();
        }, ACCEPT_RETRY_MS);
        return;
      }
      if (conn === undefined) return;
      if (this.#acceptFailing) {
        this.#acceptFailing = false;
        this.#log({ event: 'error', message: 'accepting connections again' });
      }
      this.#admit(conn);
    }
  }

  #admit(conn: UnixConnection): void {
    const id = this.#nextId++;
    let pid: number | undefined;
    const refuse = (reason: string): void => {
      this.#counts.refused++;
      // Told before the socket closes, for a client that reads (Firecracker only sees the close).
      try {
        conn.send(Buffer.from(`uffd serve: refused: ${reason}\n`));
      } catch {
        // the peer is gone or not reading: the close below says the rest
      }
      conn.close();
      this.#log({ event: 'refused', id, ...(pid === undefined ? {} : { pid }), reason });
    };
    let peer;
    try {
      peer = conn.peer();
      pid = peer.pid;
    } catch (err) {
      refuse(`cannot read the peer's credentials: ${String(err)}`);
      return;
    }
    if (this.#o.allowUids !== undefined && !this.#o.allowUids.includes(peer.uid)) {
      refuse(`uid ${String(peer.uid)} is not allowed`);
      return;
    }
    if (this.#pending.size + this.#served.size >= this.#o.maxClients) {
      refuse(`too many clients (maxClients ${String(this.#o.maxClients)})`);
      return;
    }
    const reader = new HandshakeReader({ maxBytes: this.#o.maxPayloadBytes, maxRegions: this.#o.maxRegions, memoryFileSize: this.#source.length });
    const uid = peer.uid;
    this.#pending.set(id, new PendingClient({
      conn, parser: reader, timeoutMs: this.#o.handshakeTimeoutMs, readSize: 64 * 1024,
      done: (outcome) => {
        this.#pending.delete(id);
        if (!outcome.ok) {
          refuse(outcome.reason);
          return;
        }
        this.#start(id, pid ?? 0, uid, conn, reader, outcome.fds, refuse);
      },
    }));
  }

  #start(id: number, pid: number, uid: number, conn: UnixConnection, reader: HandshakeReader, fds: number[], refuse: (reason: string) => void): void {
    if (fds.length !== 1) {
      for (const fd of fds) closeDescriptor(fd);
      refuse(`expected exactly one descriptor (the uffd) with the handshake, got ${String(fds.length)}`);
      return;
    }
    const fd = fds[0] ?? -1;
    let uffd: Userfaultfd;
    try {
      uffd = Userfaultfd.fromFd(fd);
    } catch (err) {
      closeDescriptor(fd);
      refuse(`the descriptor sent is not a usable userfaultfd: ${messageOf(err)}`);
      return;
    }
    let pidfd: number;
    try {
      pidfd = conn.peerPidfd();
    } catch (err) {
      uffd.close();
      refuse(`cannot watch the peer process: ${String(err)}`);
      return;
    }
    const { regions, version } = reader.handshake();
    const recording = this.#o.record === undefined ? undefined : this.#startRecording(id, regions[0]?.pageSize ?? 4096);
    let session: ClientSession;
    try {
      session = new ClientSession({
        uffd, regions, source: this.#source, readahead: this.#o.readahead, canPoison: probe().features.has('POISON'),
        onGone: (reason) => { const c = this.#served.get(id); if (c !== undefined) this.#drop(c, reason); },
        ...(recording === undefined ? {} : { record: (offset: number) => { noteFirstFault(recording, offset); } }),
      });
    } catch (err) {
      // Regions no process could have (beyond 2^53): nothing to serve.
      clearInterval(recording?.settleTimer);
      uffd.close();
      closeDescriptor(pidfd);
      refuse(`its regions cannot be served: ${messageOf(err)}`);
      return;
    }
    // The client's liveness is its process, not the socket: Firecracker before 1.12 closes the socket
    // right after the handshake. A pidfd becomes readable when the process exits.
    const client: Served = {
      id, pid, session, pidfd, conn, recording,
      pidWatch: new FdWatcher(pidfd, () => { const c = this.#served.get(id); if (c !== undefined) this.#drop(c, 'the process exited'); }, (err) => {
        const c = this.#served.get(id);
        if (c !== undefined) this.#drop(c, `cannot watch the process: ${err.message}`);
      }),
    };
    this.#served.set(id, client);
    this.#counts.accepted++;
    this.#log({
      event: 'client', id, pid, uid, version, pageSize: regions[0]?.pageSize ?? 0,
      regions: regions.map((r: GuestRegion) => ({ base: `0x${r.baseHostVirtAddr.toString(16)}`, size: r.size, offset: r.offset })),
    });
    // The prefetch starts at the handshake, before the faults already queued are served: its first batch
    // (the start of the working set, which those faults mostly want too) goes in ahead of the guest.
    const prefetch = this.#prefetch;
    if (prefetch !== undefined && prefetch.offsets.length > 0) {
      if (regions.some((r) => r.pageSize !== prefetch.pageSize)) {
        this.#log({ event: 'error', message: `client ${String(id)}: not prefetched: its page size differs from the record's ${String(prefetch.pageSize)}` });
      } else {
        const started = performance.now();
        void session.prefetch(prefetch.offsets).then((complete) => {
          if (complete) this.#log({ event: 'prefetched', id, pid, pages: prefetch.offsets.length, ms: performance.now() - started });
        });
      }
    }
    session.start();
  }

  #startRecording(id: number, pageSize: number): Recording {
    const recording: Recording = { pageSize, startedAt: 0, startedWall: 0, lastNewAt: 0, offsets: [], micros: [], done: false, settleTimer: undefined };
    const settleMs = this.#o.recordSettleMs;
    if (settleMs !== undefined) {
      // Checked on a timer, not per fault: the fault path only appends.
      recording.settleTimer = setInterval(() => {
        if (recording.offsets.length === 0 || performance.now() - recording.lastNewAt < settleMs) return;
        clearInterval(recording.settleTimer);
        const c = this.#served.get(id);
        if (c !== undefined) this.#writeRecord(c, 'settled');
      }, Math.max(10, Math.min(1000, settleMs / 4)));
      recording.settleTimer.unref();
    }
    return recording;
  }

  /** Writes a client's record under a name no other client uses; a failure is logged, never fatal. */
  #writeRecord(client: Served, ended: 'settled' | 'client gone'): void {
    const r = client.recording;
    if (r === undefined || r.done || r.offsets.length === 0 || this.#o.record === undefined || this.#identity === undefined) return;
    r.done = true;
    const record: WorkingSetRecord = {
      format: WORKING_SET_FORMAT, version: WORKING_SET_VERSION, pageSize: r.pageSize, snapshot: this.#identity,
      recordedAt: new Date(r.startedWall).toISOString(), client: { pid: client.pid, id: client.id }, ended,
      offsets: r.offsets, micros: r.micros, serviceMicros: client.session.metrics().serviceMicros,
    };
    const stamp = record.recordedAt.replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
    const base = join(this.#o.record, `ws-${stamp}-pid${String(client.pid)}-c${String(client.id)}`);
    for (let attempt = 0; ; attempt++) {
      const path = `${base}${attempt === 0 ? '' : `-${String(attempt)}`}.json`;
      try {
        writeWorkingSet(path, record);
        this.#log({ event: 'recorded', id: client.id, pid: client.pid, path, pages: r.offsets.length, ended });
        return;
      } catch (err) {
        if ((err as { code?: unknown }).code === 'EEXIST' && attempt < 100) continue;
        this.#log({ event: 'error', message: `cannot write the working set of client ${String(client.id)} to ${path}: ${err instanceof Error ? err.message : String(err)}` });
        return;
      }
    }
  }

  #drop(client: Served, reason: string): void {
    if (!this.#served.delete(client.id)) return;
    const summary = client.session.summary();
    this.#retired = sumFillMetrics([this.#retired, client.session.metrics()]);
    this.#counts.gone++;
    client.session.close();
    client.pidWatch.stop();
    closeDescriptor(client.pidfd);
    client.conn.close();
    if (client.recording !== undefined) {
      clearInterval(client.recording.settleTimer);
      if (!client.recording.done) this.#writeRecord(client, 'client gone');
    }
    this.#log({ event: 'gone', id: client.id, pid: client.pid, reason, summary, pagesTotal: client.session.pagesTotal });
  }
}

function noteFirstFault(r: Recording, offset: number): void {
  if (r.done) return;
  const now = performance.now();
  if (r.offsets.length === 0) {
    r.startedAt = now;
    r.startedWall = Date.now();
  }
  r.lastNewAt = now;
  r.offsets.push(offset);
  r.micros.push(Math.round((now - r.startedAt) * 1000));
}
