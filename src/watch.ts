// A readiness watcher on a descriptor of this thread's event loop (uv_poll): the uffd, a socket, a pidfd.
import type { Watcher } from './binding.js';
import { native } from './binding.js';
import { UffdError } from './errors.js';

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

  /** Whether the watcher alone keeps the event loop alive. */
  ref(keepsLoopAlive: boolean): void {
    if (this.#watcher !== undefined) native.pollRef(this.#watcher, keepsLoopAlive);
  }

  /** Stops watching; call before the descriptor is closed. Idempotent. */
  stop(): void {
    if (this.#watcher !== undefined) native.pollStop(this.#watcher);
    this.#watcher = undefined;
  }
}
