// The resolver thread of a LazyMemory. It owns a dup of the uffd and never touches the lazy memory itself;
// the main thread only touches memory (the threading rule). It never uses the libuv threadpool: sources
// read synchronously (pread, a mapping) or over sockets.
import { parentPort, workerData } from 'node:worker_threads';
import type { MessagePort } from 'node:worker_threads';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { autoReadahead, fixedReadahead } from '../policy/readahead.js';
import { openSource } from '../sources/source.js';
import type { PageSource, SourceSpec } from '../sources/source.js';
import { Userfaultfd } from '../core/uffd.js';
import { closeSync, writeSync } from 'node:fs';
import { inspect } from 'node:util';
import { failMissingPages } from '../fill/fail-missing.js';
import { protectNone } from '../core/mapping.js';
import { PageFiller } from '../fill/page-filler.js';
import { MessageBatch } from '../fill/message-batch.js';
import { FdWatcher } from '../core/watch.js';
import type { SourceErrorPolicy } from '../fill/page-filler.js';
import { FillMetrics } from '../metrics/fill-metrics.js';
import { describeSource, errorFields, SourceReadError } from '../sources/source-error.js';
import type { ErrorFields } from '../sources/source-error.js';
import { messageOf } from '../errors.js';

export interface WorkerInput {
  source: SourceSpec;
  readahead: number | 'auto';
  prefetch: boolean;
  onSourceError: SourceErrorPolicy;
  retries: number;
  retryDelayMs: number;
  readTimeoutMs: number;
  stats: SharedArrayBuffer;
}

export type ToWorker = { type: 'serve'; fd: number; base: bigint; pageSize: number; pages: number; canPoison: boolean } | { type: 'stop' };
export type FromWorker =
  | { type: 'source'; length: number }
  | { type: 'ready' }
  | { type: 'sourceError'; page: number; offset: number; outcome: 'poisoned' | 'zero-filled'; error: ErrorFields }
  | { type: 'prefetched' }
  | { type: 'failed'; message: string; error?: ErrorFields }
  | { type: 'stopped' };

if (parentPort === null) throw new Error('lazy/worker.js runs only as a worker thread');
const port: MessagePort = parentPort;
const input = workerData as WorkerInput;
const send = (message: FromWorker): void => { port.postMessage(message); };

const stop = new AbortController();
let source: PageSource;
try {
  source = await openSource(input.source);
  send({ type: 'source', length: source.length });
  const serve = await new Promise<Extract<ToWorker, { type: 'serve' }> | undefined>((resolve) => {
    port.once('message', (m: ToWorker) => { resolve(m.type === 'serve' ? m : undefined); });
  });
  if (serve !== undefined) await run(serve);
  await source.close?.();
  send({ type: 'stopped' });
} catch (err) {
  // Reported as a message, not rethrown: the thread ends normally, and the main thread has one way to hear.
  send({ type: 'failed', message: err instanceof Error ? err.message : inspect(err), error: errorFields(err) });
}
port.close();

/** Serves faults until told to stop; on any failure the pages not yet filled are poisoned (fail-stop). */
async function run(serve: Extract<ToWorker, { type: 'serve' }>): Promise<void> {
  let uffd: Userfaultfd;
  try {
    uffd = Userfaultfd.fromFd(serve.fd); // from here on this thread owns (closes) the descriptor
  } catch (err) {
    closeSync(serve.fd);
    send({ type: 'failed', message: messageOf(err) });
    return;
  }
  const range = { address: serve.base, length: serve.pages * serve.pageSize, pageSize: serve.pageSize };
  let failure: unknown;
  // process.exit() inside a source (or anything else that ends this thread abruptly) skips the finally below.
  // Prepended: it must run before the library's own exit listener closes the uffd.
  const onAbruptExit = (): void => { failMissingPages(uffd, range, serve.canPoison); };
  process.prependListener('exit', onAbruptExit);
  try {
    const resolver = new PageFiller({
      uffd, source, base: serve.base, pageSize: serve.pageSize, pages: serve.pages, sourceOffset: 0,
      policy: input.readahead === 'auto' ? autoReadahead() : fixedReadahead(input.readahead),
      onSourceError: input.onSourceError, retries: input.retries, retryDelayMs: input.retryDelayMs, readTimeoutMs: input.readTimeoutMs, signal: stop.signal,
      canPoison: serve.canPoison, protect: protectNone,
      stats: new FillMetrics(input.stats),
      reportSourceError: (page, error, outcome) => {
        const offset = page * serve.pageSize;
        // Written synchronously before the page is poisoned: the toucher dies of SIGBUS at once, and no
        // event it could have listened for would ever run.
        if (outcome === 'poisoned') writeSync(2, `userfaultfd: ${new SourceReadError({ page, offset, source: describeSource(input.source), outcome }, errorFields(error)).message}; the thread that touches it gets SIGBUS (fail-stop; onSourceError: 'zero' fills zeros instead)\n`);
        send({ type: 'sourceError', page, offset, outcome, error: errorFields(error) });
      },
    });
    port.on('message', (m: ToWorker) => { if (m.type === 'stop') stop.abort(); });
    send({ type: 'ready' });
    // Background fill runs between events, one chunk at a time, so a demand fault waits at most one chunk.
    const prefetching = (async () => {
      if (!input.prefetch) return;
      while (!stop.signal.aborted && (await resolver.prefetchChunk())) await yieldToLoop();
      if (!stop.signal.aborted) send({ type: 'prefetched' });
    })().catch((err: unknown) => {
      failure ??= err;
      stop.abort();
    });
    await serveFaults(uffd, resolver, stop.signal);
    await prefetching;
  } catch (err) {
    failure ??= err;
  } finally {
    if (failure !== undefined) {
      // Nobody may be left waiting on pages this resolver will never fill: not the main thread, not a pool thread.
      try {
        failMissingPages(uffd, range, serve.canPoison);
      } finally {
        send({ type: 'failed', message: failure instanceof Error ? failure.message : inspect(failure) });
      }
    }
    process.off('exit', onAbruptExit);
    uffd.close();
  }
}

/**
 * Serves fault messages until `signal` aborts or serving fails. A wake-up reads and serves until nothing is
 * pending: a faulter woken by the last copy has often faulted again by then, and a read(2) costs less than
 * a turn of the event loop. Synchronous while the filler is; a fault that goes asynchronous pauses the
 * watcher (level-triggered: it would fire on every loop turn meanwhile) and the batch resumes after it.
 */
function serveFaults(uffd: Userfaultfd, resolver: PageFiller, signal: AbortSignal): Promise<void> {
  const batch = new MessageBatch(64);
  return new Promise<void>((resolve, reject) => {
    let done = false;
    const finish = (err?: unknown): void => {
      if (done) return;
      done = true;
      watcher.stop();
      signal.removeEventListener('abort', onAbort);
      if (err === undefined) resolve();
      else reject(err instanceof Error ? err : new Error(inspect(err)));
    };
    const onAbort = (): void => { finish(); };
    /** Serves the batch from message `next` on, then reads more; false once it waits on a promise. */
    const pump = (next: number): void => {
      try {
        for (;;) {
          for (let i = next; i < batch.count; i++) {
            if (done) return;
            // LazyMemory enables no events: anything but a fault is nothing to act on.
            if (!batch.isFault(i)) continue;
            const served = resolver.fault(batch.address(i));
            if (served instanceof Promise) {
              watcher.pause();
              served.then(() => {
                if (done) return;
                watcher.resume();
                pump(i + 1);
              }, finish);
              return;
            }
          }
          next = 0;
          if (done || batch.read(uffd) === 0) return;
        }
      } catch (err) {
        finish(err);
      }
    };
    const watcher = new FdWatcher(uffd.fd, () => { pump(batch.count); }, finish);
    if (signal.aborted) finish();
    else signal.addEventListener('abort', onAbort);
    pump(batch.count);
  });
}
