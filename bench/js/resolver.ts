// The benchmark's worker: resolves the main thread's faults on a dup of its uffd, through the public API
// only (fromFd, events, copy). Page i gets the same contents as in bench/c/roundtrip.c: 0x5a everywhere,
// the page index as a native-endian u32 in the first 4 bytes.
import { parentPort, workerData } from 'node:worker_threads';
import { Userfaultfd } from '../../src/index.js';

const PAGE = 4096;
const { fd, base } = workerData as { fd: number; base: bigint };
if (parentPort === null) throw new Error('resolver.js runs as a worker thread');
const port = parentPort;

const uffd = Userfaultfd.fromFd(fd); // adopts the dup: closing it is this thread's job
const page = new Uint8Array(PAGE).fill(0x5a);
const index = new Uint32Array(page.buffer, 0, 1);
const stop = new AbortController();
port.once('message', () => { stop.abort(); });
port.postMessage('ready');

let served = 0;
for await (const event of uffd.events({ signal: stop.signal })) {
  if (event.type !== 'pagefault') continue;
  index[0] = Number((event.address - base) / BigInt(PAGE));
  try {
    uffd.copy(event.address, page);
  } catch (err) {
    // Two messages for one page (a signal during the fault) find it present: wake the faulter instead.
    if ((err as { code?: string }).code !== 'EEXIST') throw err;
    uffd.wake({ address: event.address, length: PAGE });
  }
  served++;
}
uffd.close();
port.postMessage({ served });
