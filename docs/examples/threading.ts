import { once } from 'node:events';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { Mapping, Userfaultfd, isEexist } from 'userfaultfd';

const PAGE = 4096;
if (isMainThread) {
  // This thread only touches the memory. Its faults are user-mode faults: userModeOnly needs no privilege.
  using uffd = Userfaultfd.open({ userModeOnly: true });
  using memory = Mapping.anonymous(16 * PAGE);
  uffd.register(memory, { missing: true });
  const resolver = new Worker(new URL(import.meta.url), { workerData: { fd: uffd.dup(), base: memory.address } });
  await once(resolver, 'online');
  const bytes = new Uint8Array(memory.buffer);
  console.log(bytes[0], bytes[5 * PAGE + 1]);   // each first touch waits until the resolver has filled the page
  resolver.postMessage('stop');
  await once(resolver, 'exit');
} else {
  // The resolver thread never touches the memory; it owns (and closes) the dup it was given.
  const { fd, base } = workerData as { fd: number; base: bigint };
  const uffd = Userfaultfd.fromFd(fd);
  const stop = new AbortController();
  parentPort?.once('message', () => { stop.abort(); });
  const page = new Uint8Array(PAGE);
  for await (const event of uffd.events({ signal: stop.signal })) {
    if (event.type !== 'pagefault') continue;
    const address = event.address & ~BigInt(PAGE - 1);
    page.fill(Number((address - base) / BigInt(PAGE)));   // page n holds n
    try {
      uffd.copy(address, page);
    } catch (err) {
      if (!isEexist(err)) throw err;   // already there (a race, a repeated message): just wake the faulter
      uffd.wake({ address, length: PAGE });
    }
  }
  uffd.close();
}
