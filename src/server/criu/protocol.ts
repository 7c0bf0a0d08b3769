// The wire protocol between `criu restore --lazy-pages` and a lazy-pages daemon (unchanged since 2017, native
// byte order): per restored process an int32 pid, then a 1-byte message carrying that process's uffd by
// SCM_RIGHTS; a negative pid is a zombie (nothing follows); then the u32 end marker 0x52535446. The reader
// says exactly how many bytes to read next, so a read never runs into the message that carries a descriptor.
import { CriuProtocolError } from './errors.js';

/** "ReSTore Finished". */
export const RESTORE_FINISHED = 0x52535446;
/** The kernel's limit on pid_max (PID_MAX_LIMIT on 64-bit): a larger word cannot be a pid. */
export const PID_MAX_LIMIT = 4 * 1024 * 1024;

export type RestoreMessage =
  | { kind: 'process'; pid: number; fd: number }
  | { kind: 'zombie'; pid: number }
  | { kind: 'finished' };

export class RestoreProtocolReader {
  readonly #word = new Uint8Array(4);
  readonly #view = new DataView(this.#word.buffer);
  #have = 0;
  /** The pid whose descriptor message comes next. */
  #pid: number | undefined;
  #finished = false;
  #processes = 0;

  /** Bytes to read next, exactly: the rest of a 4-byte word, or 1 (the message with the fd); 0 after the end marker. */
  wanted(): number {
    if (this.#finished) return 0;
    return this.#pid === undefined ? 4 - this.#have : 1;
  }

  get finished(): boolean {
    return this.#finished;
  }

  /** Processes announced so far (zombies not counted). */
  get processes(): number {
    return this.#processes;
  }

  /**
   * Takes one read's bytes (at most wanted()) and the descriptors that came with it. Returns the message they
   * complete, if any; a 'process' message hands its fd to the caller. Throws a CriuProtocolError on bad
   * input; the descriptors of the failed read stay the caller's to close.
   */
  push(data: Uint8Array, fds: readonly number[]): RestoreMessage | undefined {
    if (this.#finished) throw new CriuProtocolError('garbage', `${String(data.length)} byte(s) after the end marker`);
    if (data.length === 0 || data.length > this.wanted()) throw new RangeError(`push takes 1 to ${String(this.wanted())} bytes, got ${String(data.length)}`);
    if (this.#pid !== undefined) {
      const pid = this.#pid;
      if (fds.length === 0) throw new CriuProtocolError('missing-fd', `pid ${String(pid)}: the message after it carried no descriptor (byte 0x${(data[0] ?? 0).toString(16).padStart(2, '0')})`);
      if (fds.length > 1) throw new CriuProtocolError('unexpected-fd', `pid ${String(pid)}: ${String(fds.length)} descriptors came with its message, expected one uffd`);
      this.#pid = undefined;
      this.#processes++;
      return { kind: 'process', pid, fd: fds[0] ?? -1 };
    }
    if (fds.length > 0) throw new CriuProtocolError('unexpected-fd', `${String(fds.length)} descriptor(s) came with the bytes of a pid or end marker`);
    this.#word.set(data, this.#have);
    this.#have += data.length;
    if (this.#have < 4) return undefined;
    this.#have = 0;
    if (this.#view.getUint32(0, true) === RESTORE_FINISHED) {
      this.#finished = true;
      return { kind: 'finished' };
    }
    const value = this.#view.getInt32(0, true);
    if (value > 0 && value <= PID_MAX_LIMIT) {
      this.#pid = value;
      return undefined;
    }
    if (value < 0 && value >= -PID_MAX_LIMIT) return { kind: 'zombie', pid: -value };
    throw new CriuProtocolError('garbage', `word 0x${this.#view.getUint32(0, true).toString(16).padStart(8, '0')} is neither a pid, a zombie's negative pid, nor the end marker 0x${RESTORE_FINISHED.toString(16)}`);
  }

  /** Why the stream may not end here; undefined when it may (after the end marker). */
  endError(): CriuProtocolError | undefined {
    if (this.#finished) return undefined;
    const where = this.#pid !== undefined ? `pid ${String(this.#pid)} was announced but its descriptor never came` : this.#have > 0 ? `${String(this.#have)} of the 4 bytes of a word had arrived` : `between messages`;
    return new CriuProtocolError('eof', `the restore connection closed before the end marker (${String(this.#processes)} process(es) received; ${where}): the restore failed`);
  }
}
