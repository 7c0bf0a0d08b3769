// A connected client before its handshake is complete: reads the JSON body and the descriptor(s) that come
// with it, possibly split across reads, within a time and size limit. Everything it was sent is closed if
// the handshake fails; on success the caller owns the uffd descriptor.
import { closeDescriptor } from '../core/descriptor.js';
import { FdWatcher } from '../core/watch.js';
import type { UnixConnection } from '../core/unix-socket.js';
import { messageOf } from '../errors.js';

export interface HandshakeParser {
  /** 'complete' once the body is whole; throws (a HandshakeError) on bad input. */
  push(chunk: Uint8Array): 'incomplete' | 'complete';
}

export type HandshakeOutcome = { ok: true; fds: number[] } | { ok: false; reason: string };

export class PendingClient {
  readonly #conn: UnixConnection;
  readonly #parser: HandshakeParser;
  readonly #done: (outcome: HandshakeOutcome) => void;
  readonly #buffer: Uint8Array;
  readonly #fds: number[] = [];
  readonly #watcher: FdWatcher;
  readonly #timer: NodeJS.Timeout;
  #finished = false;

  constructor(options: { conn: UnixConnection; parser: HandshakeParser; timeoutMs: number; readSize: number; done: (outcome: HandshakeOutcome) => void }) {
    this.#conn = options.conn;
    this.#parser = options.parser;
    this.#done = options.done;
    this.#buffer = new Uint8Array(options.readSize);
    this.#timer = setTimeout(() => { this.#fail(`no complete handshake within ${String(options.timeoutMs)} ms`); }, options.timeoutMs);
    this.#watcher = new FdWatcher(this.#conn.fd, () => { this.#readable(); }, (err) => { this.#fail(err.message); });
  }

  /** Gives up on the client (server shutting down). */
  cancel(): void {
    this.#fail('server closing');
  }

  #readable(): void {
    try {
      for (;;) {
        const r = this.#conn.receive(this.#buffer);
        if (r.kind === 'again') return;
        this.#fds.push(...r.fds);
        if (this.#fds.length > 1) {
          // Refused at once: a peer must not make the server hold descriptors it sends chunk after chunk.
          this.#fail(`expected exactly one descriptor (the uffd) with the handshake, got ${String(this.#fds.length)}`);
          return;
        }
        if (r.kind === 'eof') {
          this.#fail('connection closed before the handshake was complete');
          return;
        }
        if (this.#parser.push(r.data) === 'complete') {
          this.#succeed();
          return;
        }
      }
    } catch (err) {
      this.#fail(messageOf(err));
    }
  }

  #succeed(): void {
    // Trailing bytes already in the socket belong to this message: one more non-blocking read refuses them.
    try {
      const r = this.#conn.receive(this.#buffer);
      if (r.kind !== 'again') {
        this.#fds.push(...r.fds);
        if (r.kind === 'data') this.#parser.push(r.data);
      }
    } catch (err) {
      this.#fail(messageOf(err));
      return;
    }
    this.#finish({ ok: true, fds: [...this.#fds] });
  }

  #fail(reason: string): void {
    for (const fd of this.#fds) closeDescriptor(fd);
    this.#fds.length = 0;
    this.#finish({ ok: false, reason });
  }

  #finish(outcome: HandshakeOutcome): void {
    if (this.#finished) return;
    this.#finished = true;
    clearTimeout(this.#timer);
    this.#watcher.stop();
    this.#done(outcome);
  }
}
