// Where `uffd serve` writes its log lines: stdout, or a file opened for appending that SIGHUP reopens (after
// logrotate has moved it away, the next line starts the new file). Writes are synchronous: a line is whole in
// the file before the next event is handled, and nothing is lost when the process exits.
import { closeSync, openSync, writeSync } from 'node:fs';

export class LogSink {
  readonly #path: string | undefined;
  #fd: number | undefined;

  constructor(path?: string) {
    this.#path = path;
    if (path !== undefined) this.#fd = openSync(path, 'a', 0o640);
  }

  write(line: string): void {
    if (this.#fd === undefined) {
      process.stdout.write(line);
      return;
    }
    const bytes = Buffer.from(line);
    for (let at = 0; at < bytes.length;) at += writeSync(this.#fd, bytes, at);
  }

  /** Opens the file again by its name; false (and the old file kept) when that fails or there is no file. */
  reopen(): boolean {
    if (this.#path === undefined) return false;
    let fd: number;
    try {
      fd = openSync(this.#path, 'a', 0o640);
    } catch {
      return false;
    }
    if (this.#fd !== undefined) closeSync(this.#fd);
    this.#fd = fd;
    return true;
  }

  close(): void {
    if (this.#fd !== undefined) closeSync(this.#fd);
    this.#fd = undefined;
  }
}
