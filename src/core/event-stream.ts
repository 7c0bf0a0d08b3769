// events(): a uffd's messages as an async iterator driven by the event loop. One FdWatcher per stream; the
// stream reads until EAGAIN before it waits, and pauses the (level-triggered) poll while its consumer is
// busy elsewhere, so a pending message does not call back on every loop turn.
import type { UffdError } from '../errors.js';
import { checkOptionsObject, describe } from '../validate.js';
import { FdWatcher } from './watch.js';
import { withCode } from '../errors.js';

/** A running stream, as its uffd sees it: close() stops it before the descriptor goes. */
export interface RunningStream {
  stop(): void;
}

/** What a stream needs of its uffd. */
export interface StreamSource<E> {
  /** The descriptor; throws (ERR_UFFD_CLOSED) once closed. */
  open(): number;
  isOpen(): boolean;
  /**
   * The next event without blocking, undefined when none is pending. Events are taken off the uffd's backlog
   * only as they are handed out: a consumer that stops early leaves the rest of a batch (a fork event's uffd
   * among them) for the next read() or events().
   */
  next(): E | undefined;
  /** The streams running on this uffd (at most one: libuv allows one poll handle per descriptor). */
  readonly streams: Set<RunningStream>;
}

export async function* streamEvents<E>(source: StreamSource<E>, options: unknown): AsyncGenerator<E, void, undefined> {
  const o = checkOptionsObject(options, 'events options', ['signal']);
  const signal = o.signal;
  if (signal !== undefined && !(signal instanceof AbortSignal)) throw new TypeError(`signal must be an AbortSignal, got ${describe(signal)}`);
  const fd = source.open();
  if (source.streams.size > 0) {
    // A second poll handle on the descriptor would fail with a confusing EEXIST.
    throw withCode(new Error('events() is already running on this userfaultfd; end it (break, abort) before starting another'), 'ERR_UFFD_EVENTS_ACTIVE');
  }
  let wakeUp: (() => void) | undefined;
  let failure: UffdError | undefined;
  let paused = false;
  const notify = (): void => {
    const resume = wakeUp;
    wakeUp = undefined;
    resume?.();
  };
  const watcher: FdWatcher = new FdWatcher(fd, () => {
    if (wakeUp === undefined) {
      // Readable while the consumer awaits its own work: paused until the stream waits again.
      watcher.pause();
      paused = true;
      return;
    }
    notify();
  }, (err) => {
    failure = err;
    notify();
  });
  const running: RunningStream = { stop: () => { watcher.stop(); notify(); } };
  source.streams.add(running);
  signal?.addEventListener('abort', notify);
  try {
    while (source.isOpen() && signal?.aborted !== true) {
      if (failure !== undefined) throw failure;
      // Read until EAGAIN before waiting: a faulter woken by the last resolve has often faulted again by
      // now, and a read(2) is cheaper than a turn of the event loop (measured: bench/roundtrip).
      const event = source.next();
      if (event !== undefined) {
        yield event;
        continue;
      }
      if (paused) {
        paused = false;
        watcher.resume();
      }
      await new Promise<void>((resolve) => { wakeUp = resolve; });
    }
  } finally {
    signal?.removeEventListener('abort', notify);
    source.streams.delete(running);
    watcher.stop();
  }
}
