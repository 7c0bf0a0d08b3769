// Starting the library's own worker threads (resolvers must not run on the thread that touches the memory).
import { Worker } from 'node:worker_threads';

/**
 * The worker inherits the process's flags (loaders a module source may need). --input-type is the exception:
 * it applies only to an --eval string and makes a worker started from one fail to load its file; removing it
 * means passing execArgv explicitly, which Node refuses when it holds per-process (V8) flags: then none.
 */
export function startWorker(url: URL, workerData: unknown): Worker {
  if (!process.execArgv.some((flag) => flag.startsWith('--input-type'))) return new Worker(url, { workerData });
  try {
    return new Worker(url, { workerData, execArgv: process.execArgv.filter((flag) => !flag.startsWith('--input-type')) });
  } catch (err) {
    if ((err as { code?: string }).code !== 'ERR_WORKER_INVALID_EXEC_ARGV') throw err;
    return new Worker(url, { workerData, execArgv: [] });
  }
}
