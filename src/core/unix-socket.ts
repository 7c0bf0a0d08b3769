// Unix stream sockets with descriptor passing (SCM_RIGHTS), outside libuv: a libuv-owned socket drops the
// descriptors that arrive with a message. Non-blocking; readiness through FdWatcher.
import { lstatSync, unlinkSync } from 'node:fs';
import { native } from '../binding.js';
import { check, EAGAIN, ERRNO, errnoName, UffdError, withCode } from '../errors.js';
import { describe } from '../validate.js';
import { FdWatcher } from './watch.js';

export interface PeerCredentials {
  pid: number;
  uid: number;
  gid: number;
}

export type Received =
  | { kind: 'data'; data: Uint8Array; fds: number[] }
  | { kind: 'again' }
  | { kind: 'eof'; fds: number[] };

/** One connected Unix stream socket. */
export class UnixConnection {
  #fd: number;

  constructor(fd: number) {
    this.#fd = fd;
  }

  /** Connects to a listening socket. */
  static connect(path: string): UnixConnection {
    checkSocketPath(path);
    return new UnixConnection(check(native.unixConnect(path), `connect(${path})`));
  }

  /** Two connected sockets (socketpair). */
  static pair(): [UnixConnection, UnixConnection] {
    const fds = native.socketPair();
    if (typeof fds === 'number') throw new UffdError(fds, 'socketpair');
    return [new UnixConnection(fds[0]), new UnixConnection(fds[1])];
  }

  get fd(): number {
    return this.#fd;
  }

  /** SO_PEERCRED: who is on the other end (as of connect). */
  peer(): PeerCredentials {
    const cred = native.peerCredentials(this.#open());
    if (typeof cred === 'number') throw new UffdError(cred, 'getsockopt(SO_PEERCRED)');
    return cred;
  }

  /**
   * A pidfd of the peer: SO_PEERPIDFD (Linux 6.5; immune to pid reuse), else pidfd_open of the SO_PEERCRED
   * pid. The caller owns (closes) it.
   */
  peerPidfd(): number {
    const fd = native.peerPidfd(this.#open());
    if (fd >= 0) return fd;
    return check(native.pidfdOpen(this.peer().pid), 'pidfd_open');
  }

  /**
   * One recvmsg into `buffer`. Received descriptors are close-on-exec and owned by the caller. A message whose
   * descriptors the kernel truncated (MSG_CTRUNC) is refused: the ones that arrived are closed.
   */
  receive(buffer: Uint8Array): Received {
    const r = native.recvWithFds(this.#open(), buffer);
    if (r === EAGAIN) return { kind: 'again' };
    if (typeof r === 'number') throw new UffdError(r, 'recvmsg');
    if (r.truncated) {
      for (const fd of r.fds) native.close(fd);
      throw new UffdError(ERRNO.ENOBUFS, 'recvmsg', { hint: 'too many descriptors in one message (MSG_CTRUNC)' });
    }
    if (r.bytes === 0) return { kind: 'eof', fds: r.fds };
    return { kind: 'data', data: buffer.subarray(0, r.bytes), fds: r.fds };
  }

  /**
   * Waits (on the event loop) until a message or the end of the stream arrives, then receives it:
   * `await conn.receiveAsync()` instead of polling receive() on a timer. `buffer` defaults to a new 64 KiB one.
   */
  async receiveAsync(options?: { buffer?: Uint8Array; signal?: AbortSignal }): Promise<Exclude<Received, { kind: 'again' }>> {
    const buffer = options?.buffer ?? new Uint8Array(64 * 1024);
    const signal = options?.signal;
    for (;;) {
      signal?.throwIfAborted();
      const r = this.receive(buffer);
      if (r.kind !== 'again') return r;
      await new Promise<void>((resolve, reject) => {
        const done = (err?: Error): void => {
          watcher.stop();
          signal?.removeEventListener('abort', onAbort);
          if (err === undefined) resolve();
          else reject(err);
        };
        const onAbort = (): void => { done(signal?.reason instanceof Error ? signal.reason : new Error('the wait was aborted')); };
        const watcher = new FdWatcher(this.#open(), () => { done(); }, (err) => { done(err); });
        signal?.addEventListener('abort', onAbort, { once: true });
      });
    }
  }

  /** One sendmsg of `data` with `fds` attached; returns bytes sent (EAGAIN throws). */
  send(data: Uint8Array, fds: number[] = []): number {
    return check(native.sendWithFds(this.#open(), data, fds), 'sendmsg');
  }

  close(): void {
    if (this.#fd < 0) return;
    native.close(this.#fd);
    this.#fd = -1;
  }

  #open(): number {
    if (this.#fd < 0) throw withCode(new TypeError('the socket is closed'), 'ERR_UFFD_CLOSED');
    return this.#fd;
  }
}

/** A listening Unix stream socket, created with `mode` (0600 by default) before anyone can connect. */
export class UnixListener {
  #fd: number;
  readonly path: string;

  private constructor(fd: number, path: string) {
    this.#fd = fd;
    this.path = path;
  }

  /**
   * Listens on `path`. A socket file left by a dead server (nobody accepts on it) is replaced; a live one
   * is an EADDRINUSE error; any other file at the path is never touched.
   */
  static listen(path: string, options?: { mode?: number; backlog?: number }): UnixListener {
    checkSocketPath(path);
    const mode = options?.mode ?? 0o600;
    const backlog = options?.backlog ?? 128;
    let fd = native.unixListen(path, backlog, mode);
    if (errnoName(fd) === 'EADDRINUSE' && isStaleSocket(path)) {
      unlinkSync(path);
      fd = native.unixListen(path, backlog, mode);
    }
    if (fd < 0) throw new UffdError(fd, `listen(${path})`, errnoName(fd) === 'EADDRINUSE' ? { hint: 'another server is listening there, or a file that is not a socket is in the way' } : undefined);
    return new UnixListener(fd, path);
  }

  get fd(): number {
    return this.#fd;
  }

  /** The next pending connection, or undefined when none is waiting. */
  accept(): UnixConnection | undefined {
    const fd = native.accept(this.#fd);
    if (fd === EAGAIN) return undefined;
    return new UnixConnection(check(fd, 'accept4'));
  }

  /** Stops listening and removes the socket file. */
  close(): void {
    if (this.#fd < 0) return;
    native.close(this.#fd);
    this.#fd = -1;
    try {
      unlinkSync(this.path);
    } catch {
      // already gone
    }
  }
}

/** The kernel's sun_path holds 108 bytes with the NUL. */
const MAX_SOCKET_PATH_BYTES = 107;

/**
 * A path the kernel will use whole: a longer one would be cut to a prefix naming another socket, and one
 * with a NUL would bind or reach the part before it.
 */
function checkSocketPath(path: unknown): asserts path is string {
  if (typeof path !== 'string' || path.length === 0 || path.includes('\0') || Buffer.byteLength(path) > MAX_SOCKET_PATH_BYTES) {
    throw new TypeError(`socket path must be a non-empty string of at most ${String(MAX_SOCKET_PATH_BYTES)} bytes without NUL, got ${describe(path)}`);
  }
}

function isStaleSocket(path: string): boolean {
  if (!lstatSync(path, { throwIfNoEntry: false })?.isSocket()) return false;
  const probe = native.unixConnect(path);
  if (probe >= 0) {
    native.close(probe);
    return false;
  }
  return errnoName(probe) === 'ECONNREFUSED';
}
