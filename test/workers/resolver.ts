// Worker: resolves the main thread's faults on a dup of its uffd, filling page i with the byte (i + 1).
// The main thread only touches memory; this thread never does (the threading rule).
import { parentPort, workerData } from 'node:worker_threads';
import { Userfaultfd } from '../../src/index.js';

const { fd, base, pageSize } = workerData as { fd: number; base: bigint; pageSize: number };
const uffd = Userfaultfd.fromFd(fd); // adopts the dup: closing it is this thread's job
const page = new Uint8Array(pageSize);
let served = 0;
const stop = new AbortController();
parentPort?.once('message', () => { stop.abort(); });
parentPort?.postMessage({ ready: true });
for await (const event of uffd.events({ signal: stop.signal })) {
  if (event.type !== 'pagefault') continue;
  page.fill(Number((event.address - base) / BigInt(pageSize)) + 1);
  try {
    uffd.copy(event.address, page);
  } catch (err) {
    // Two faults on one page give two messages: the second copy finds the page present.
    if ((err as { code?: string }).code !== 'EEXIST') throw err;
    uffd.wake({ address: event.address, length: pageSize });
  }
  served++;
}
uffd.close();
parentPort?.postMessage({ served });
