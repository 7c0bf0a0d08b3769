// The example program of userfaultfd(2), in TypeScript: a resolver thread serves the missing-page faults of
// a region the main thread reads every 1024 bytes, filling each page with a letter that changes per fault.
import { once } from 'node:events';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { Mapping, Userfaultfd, isEexist } from 'userfaultfd';

const pages = Number(process.argv[2] ?? '3');
if (isMainThread) {
  using uffd = Userfaultfd.open({ userModeOnly: true });
  using region = Mapping.anonymous(pages * 4096);
  console.log(`Address returned by mmap() = 0x${region.address.toString(16)}`);
  uffd.register(region, { missing: true });
  const handler = new Worker(new URL(import.meta.url), { workerData: { fd: uffd.dup() }, argv: process.argv.slice(2) });
  handler.on('message', (line: string) => { console.log(line); });
  await once(handler, 'online');
  const bytes = new Uint8Array(region.buffer);
  for (let offset = 0; offset < region.length; offset += 1024) {
    const c = String.fromCharCode(bytes[offset] ?? 0);   // the first read of a page waits for the handler
    console.log(`Read address 0x${(region.address + BigInt(offset)).toString(16)} in main(): ${c}`);
  }
  handler.postMessage('done');
  await once(handler, 'exit');
} else {
  const uffd = Userfaultfd.fromFd((workerData as { fd: number }).fd);
  const page = new Uint8Array(4096);
  const stop = new AbortController();
  parentPort?.once('message', () => { stop.abort(); });
  let faults = 0;
  for await (const event of uffd.events({ signal: stop.signal })) {
    if (event.type !== 'pagefault') continue;
    parentPort?.postMessage(`    UFFD_EVENT_PAGEFAULT event: write = ${String(event.write)}; address = 0x${event.address.toString(16)}`);
    page.fill(0x41 + (faults++ % 20));   // 'A', 'B', ...
    const address = event.address & ~4095n;
    try {
      uffd.copy(address, page);
    } catch (err) {
      if (!isEexist(err)) throw err;
      uffd.wake({ address, length: 4096 });
    }
    parentPort?.postMessage(`        (uffdio_copy.copy returned ${String(page.length)})`);
  }
  uffd.close();
}
