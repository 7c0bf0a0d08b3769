// A readiness watcher on a descriptor of this thread's event loop (uv_poll): the uffd, a socket, a pidfd.
import type { Watcher } from '../binding.js';
import { native } from '../binding.js';
import { UffdError } from '../errors.js';

export class FdWatcher {
  #watcher: Watcher | undefined;

  /** Calls `onReadable` whenever `fd` is readable; `onError` with a UffdError if polling fails. */
  constructor(fd: number, onReadable: () => void, onError: (err: UffdError) => void) {
    const started = native.pollStart(fd, native.pollEvents.READABLE, (status) => {
      if (status < 0) onError(new UffdError(status, 'poll'));
      else onReadable();
    });
    if (typeof started === 'number') throw new UffdError(started, 'uv_poll_start');
    this.#watcher = started;
  }

  /**
   * Stops and restarts polling without closing: the poll is level-triggered, so a consumer that leaves data
   * pending while it awaits something else would otherwise be called on every loop turn (a busy loop).
   */
  pause(): void {
    if (this.#watcher !== undefined) native.pollPause(this.#watcher);
  }

  resume(): void {
    if (this.#watcher === undefined) return;
    const rc = native.pollResume(this.#watcher);
    if (rc < 0) throw new UffdError(rc, 'uv_poll_start');
  }

  /** Stops watching; call before the descriptor is closed. Idempotent. */
  stop(): void {
    if (this.#watcher !== undefined) native.pollStop(this.#watcher);
    this.#watcher = undefined;
  }
}
