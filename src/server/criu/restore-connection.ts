// The one connection from `criu restore`, read on the event loop with exact-size reads (RestoreProtocolReader
// says how many bytes). Each message is handed on as soon as it is whole, so a process's uffd is served
// while criu is still restoring the others.
import { closeDescriptor } from '../../core/descriptor.js';
import type { UnixConnection } from '../../core/unix-socket.js';
import { FdWatcher } from '../../core/watch.js';
import { CriuProtocolError } from './errors.js';
import type { RestoreMessage } from './protocol.js';
import { RestoreProtocolReader } from './protocol.js';

export interface RestoreConnectionHandlers {
  message: (message: RestoreMessage) => void;
  /** The connection failed (bad input, EOF before the end marker); it is closed. */
  failed: (error: Error) => void;
  /** EOF after the end marker; `trailing` tells of bytes that came after it (ignored). */
  ended: (trailing: string | undefined) => void;
}

export class RestoreConnection {
  readonly #conn: UnixConnection;
  readonly #reader = new RestoreProtocolReader();
  readonly #buffer = new Uint8Array(4);
  readonly #handlers: RestoreConnectionHandlers;
  readonly #watcher: FdWatcher;
  #trailing: string | undefined;
  #done = false;

  constructor(conn: UnixConnection, handlers: RestoreConnectionHandlers) {
    this.#conn = conn;
    this.#handlers = handlers;
    this.#watcher = new FdWatcher(conn.fd, () => { this.#readable(); }, (err) => { this.#fail(err); });
  }

  get finished(): boolean {
    return this.#reader.finished;
  }

  close(): void {
    if (this.#done) return;
    this.#done = true;
    this.#watcher.stop();
    this.#conn.close();
  }

  #readable(): void {
    while (!this.#done) {
      // After the end marker only EOF is expected; a byte read then is reported and dropped.
      const wanted = this.#reader.finished ? 1 : this.#reader.wanted();
      let r;
      try {
        r = this.#conn.receive(this.#buffer.subarray(0, wanted));
      } catch (err) {
        this.#fail(err instanceof Error ? err : new Error(String(err)));
        return;
      }
      if (r.kind === 'again') return;
      if (r.kind === 'eof') {
        for (const fd of r.fds) closeDescriptor(fd);
        const error = this.#reader.endError();
        if (error !== undefined) this.#fail(error);
        else this.#end();
        return;
      }
      if (this.#reader.finished) {
        for (const fd of r.fds) closeDescriptor(fd);
        this.#trailing ??= `bytes after the end marker (first: 0x${(r.data[0] ?? 0).toString(16).padStart(2, '0')}), ignored`;
        continue;
      }
      let message: RestoreMessage | undefined;
      try {
        message = this.#reader.push(r.data, r.fds);
      } catch (err) {
        for (const fd of r.fds) closeDescriptor(fd);
        this.#fail(err instanceof Error ? err : new Error(String(err)));
        return;
      }
      if (message !== undefined) this.#handlers.message(message);
    }
  }

  #end(): void {
    this.close();
    this.#handlers.ended(this.#trailing);
  }

  #fail(error: Error): void {
    if (this.#done) return;
    this.close();
    this.#handlers.failed(error instanceof CriuProtocolError ? error : new Error(`the restore connection failed: ${error.message}`));
  }
}
