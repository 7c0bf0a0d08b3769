// `uffd serve`: the page server as a command. Logs each client, shows live progress on a terminal, prints a
// summary when a client goes away, and exits cleanly on SIGINT/SIGTERM. --json: one JSON object per line.
import { parseArgs } from 'node:util';
import { PageServer } from '../server/page-server.js';
import type { ServerLog } from '../server/page-server.js';

export const SERVE_USAGE = `  serve --socket PATH --memory FILE [--readahead PAGES] [--record FILE] [--prefetch FILE]
        [--handshake-timeout SECONDS] [--max-clients N] [--allow-uid UID]... [--json]
      serves the guest memory of processes that hand over a userfaultfd on PATH with the Firecracker
      snapshot-restore handshake (every version), from FILE (the regions back to back).
`;

const size = (bytes: number): string => (bytes >= 1 << 30 ? `${(bytes / (1 << 30)).toFixed(1)} GiB` : bytes >= 1 << 20 ? `${(bytes / (1 << 20)).toFixed(1)} MiB` : `${String(bytes >> 10)} KiB`);

function text(entry: ServerLog): string {
  switch (entry.event) {
    case 'listening':
      return `listening on ${entry.socket}, serving ${entry.memory} (${size(entry.memoryBytes)})`;
    case 'client': {
      const total = entry.regions.reduce((n, r) => n + r.size, 0);
      return `client ${String(entry.id)}: pid ${String(entry.pid)} (uid ${String(entry.uid)}), Firecracker protocol ${entry.version}, `
        + `${String(entry.regions.length)} region${entry.regions.length === 1 ? '' : 's'} of ${size(total)}, page size ${size(entry.pageSize)}`;
    }
    case 'refused':
      return `refused client ${String(entry.id)}${entry.pid === undefined ? '' : ` (pid ${String(entry.pid)})`}: ${entry.reason}`;
    case 'gone': {
      const s = entry.summary;
      return `client ${String(entry.id)} (pid ${String(entry.pid)}) gone: ${entry.reason}; faults ${String(s.faults)}, pages copied ${String(s.pagesCopied)}`
        + ` of ${String(entry.pagesTotal)}, zero pages ${String(s.zeroPages)}, removes ${String(s.removes)}, prefetched ${String(s.prefetched)},`
        + ` fault service p50 ${String(s.serviceMicros.p50)} µs p99 ${String(s.serviceMicros.p99)} µs`;
    }
    case 'error':
      return `error: ${entry.message}`;
    case 'closed':
      return 'server closed';
  }
}

export async function runServe(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      socket: { type: 'string' }, memory: { type: 'string' }, readahead: { type: 'string' }, record: { type: 'string' },
      prefetch: { type: 'string' }, 'handshake-timeout': { type: 'string' }, 'max-clients': { type: 'string' },
      'allow-uid': { type: 'string', multiple: true }, json: { type: 'boolean' },
    },
    strict: true,
  });
  if (values.socket === undefined || values.memory === undefined) {
    process.stderr.write(`uffd serve: --socket and --memory are required\n${SERVE_USAGE}`);
    return 2;
  }
  const int = (v: string | undefined, name: string): number | undefined => {
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`--${name} must be a whole number, got ${v}`);
    return n;
  };
  const timeout = values['handshake-timeout'] === undefined ? undefined : Number(values['handshake-timeout']);
  if (timeout !== undefined && !(timeout > 0)) throw new RangeError(`--handshake-timeout must be a positive number of seconds, got ${values['handshake-timeout'] ?? ''}`);
  const readahead = int(values.readahead, 'readahead');
  const maxClients = int(values['max-clients'], 'max-clients');
  const server = await PageServer.listen({
    socket: values.socket, memory: values.memory,
    ...(readahead === undefined ? {} : { readahead }),
    ...(maxClients === undefined ? {} : { maxClients }),
    ...(timeout === undefined ? {} : { handshakeTimeoutMs: Math.round(timeout * 1000) }),
    ...(values.record === undefined ? {} : { record: values.record }),
    ...(values.prefetch === undefined ? {} : { prefetch: values.prefetch }),
    ...(values['allow-uid'] === undefined ? {} : { allowUids: values['allow-uid'].map((u) => int(u, 'allow-uid') ?? 0) }),
  });
  const live = process.stderr.isTTY && values.json !== true;
  let progressShown = false;
  const clearProgress = (): void => {
    if (progressShown) process.stderr.write('\r\x1b[K');
    progressShown = false;
  };
  server.on('log', (entry) => {
    clearProgress();
    process.stdout.write(values.json === true ? `${JSON.stringify({ time: new Date().toISOString(), ...entry })}\n` : `${text(entry)}\n`);
  });
  const ticker = live
    ? setInterval(() => {
        const clients = server.progress();
        if (clients.length === 0) {
          clearProgress();
          return;
        }
        const served = clients.reduce((n, c) => n + c.pagesServed, 0);
        const total = clients.reduce((n, c) => n + c.pagesTotal, 0);
        process.stderr.write(`\r\x1b[Kserving ${String(clients.length)} client${clients.length === 1 ? '' : 's'}: ${String(served)} / ${String(total)} pages`);
        progressShown = true;
      }, 250)
    : undefined;
  await new Promise<void>((resolve) => {
    const stop = (): void => { resolve(); };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  if (ticker !== undefined) clearInterval(ticker);
  clearProgress();
  await server.close();
  return 0;
}
