// One run of the metrics-cost bench (bench/metrics.ts): the JS thread touches one word per 4 KiB page of
// anonymous memory registered MISSING, and a worker thread serves every fault with the library's PageFiller
// from a populated mapping of the file (one page per fault: the most counting per byte), counting into the
// real FillMetrics ('on') or into an object whose methods do nothing ('off'). Everything else is the same
// code. Prints one JSON line: { mode, pages, touchNs, faults }.
//   node metrics-cost.js on|off FILE
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { Mapping } from '../../src/core/mapping.js';
import { Userfaultfd } from '../../src/core/uffd.js';
import { PageFiller } from '../../src/fill/page-filler.js';
import { fixedReadahead } from '../../src/policy/readahead.js';
import { openSource } from '../../src/sources/source.js';
import { FillMetrics } from '../../src/metrics/fill-metrics.js';
import type { FillStats } from '../../src/metrics/fill-metrics.js';

interface Input { mode: 'on' | 'off'; path: string; fd: number; base: bigint; pages: number; stats: SharedArrayBuffer }

const NO_STATS: FillStats = { add: () => undefined, served: () => undefined, sourceRead: () => undefined };

if (isMainThread) {
  const [mode, path] = process.argv.slice(2);
  if ((mode !== 'on' && mode !== 'off') || path === undefined) throw new Error('usage: metrics-cost on|off FILE');
  const probeSource = await openSource({ kind: 'file', path, access: 'pread' });
  const length = probeSource.length;
  await probeSource.close?.();
  const memory = Mapping.anonymous(length);
  const uffd = Userfaultfd.open();
  uffd.register(memory, { missing: true });
  const stats = new FillMetrics();
  const input: Input = { mode, path, fd: uffd.dup(), base: memory.address, pages: length / 4096, stats: stats.buffer };
  const worker = new Worker(new URL(import.meta.url), { workerData: input });
  await new Promise((resolve) => worker.once('message', resolve));
  const words = new Uint32Array(memory.buffer);
  let sum = 0;
  const start = process.hrtime.bigint();
  for (let i = 0; i < words.length; i += 1024) sum += words[i] ?? 0;
  const touchNs = Number(process.hrtime.bigint() - start);
  worker.postMessage('stop');
  await new Promise((resolve) => worker.once('exit', resolve));
  uffd.close();
  memory.close();
  console.log(JSON.stringify({ mode, pages: input.pages, touchNs, faults: mode === 'on' ? stats.read().faults : input.pages, sum }));
} else {
  const input = workerData as Input;
  const port = parentPort;
  if (port === null) throw new Error('no parent port');
  const source = await openSource({ kind: 'file', path: input.path, access: 'mmap', populate: true });
  const uffd = Userfaultfd.fromFd(input.fd);
  const filler = new PageFiller({
    uffd, source, base: input.base, pageSize: 4096, pages: input.pages, sourceOffset: 0, policy: fixedReadahead(1),
    onSourceError: 'poison', canPoison: false, retries: 0, retryDelayMs: 0,
    stats: input.mode === 'on' ? new FillMetrics(input.stats) : NO_STATS, reportSourceError: () => undefined,
  });
  const stop = new AbortController();
  port.on('message', () => { stop.abort(); });
  port.postMessage('ready');
  for await (const event of uffd.events({ signal: stop.signal })) {
    if (event.type !== 'pagefault') continue;
    const served = filler.fault(Number(event.address));
    if (served instanceof Promise) await served;
  }
  uffd.close();
  await source.close?.();
  port.close();
}
