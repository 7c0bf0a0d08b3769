// `uffd serve`: the page server as a command. Logs each client, shows live progress on a terminal, prints a
// summary when a client goes away, and exits cleanly on SIGINT/SIGTERM. --json: one JSON object per line.
import { parseArgs } from 'node:util';
import { PageServer } from '../server/page-server.js';
import type { ServerLog } from '../server/page-server.js';
import type { Command, CommandContext } from './command.js';
import { EXIT, UsageError } from './failure.js';
import { micros } from '../metrics/format.js';
import { parseListenAddress, serveMetrics } from '../metrics/endpoint.js';
import { renderPrometheus } from '../metrics/prometheus.js';
import { LogSink } from './log-sink.js';

const USAGE = `usage: uffd serve --socket PATH --memory FILE|URL [--readahead PAGES] [--record DIR [--record-settle SECONDS]]
                  [--prefetch RECORD] [--metrics [HOST:]PORT] [--handshake-timeout SECONDS] [--max-clients N]
                  [--allow-uid UID]... [--json] [--log-file FILE]

  Serves the guest memory of processes that hand over a userfaultfd on the Unix socket PATH with the
  Firecracker snapshot-restore handshake (every version), from FILE (the regions back to back). Runs until
  SIGINT or SIGTERM.

  --socket PATH               the socket to listen on (created 0600; a stale socket file is replaced)
  --memory FILE|URL           the snapshot's memory file, or an http(s):// or s3://BUCKET/KEY URL of it
                              (range requests through a chunk cache; a URL ending in / names a directory
                              written by uffd pack; s3:// signs with AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,
                              AWS_REGION and, for other stores, AWS_ENDPOINT_URL)
  --readahead PAGES           pages filled per fault, the faulting one included (default 1)
  --record DIR                write each client's working set (pages in first-fault order, docs/working-sets.md)
                              into DIR, one file per client, when it goes away or its faults settle
  --record-settle SECONDS     a record is complete once no new page has faulted for this long
  --prefetch RECORD           a record (from --record or \`uffd ws merge\`) of this memory file: its pages
                              are filled first, in the background, for every client
  --metrics [HOST:]PORT       serve Prometheus metrics at http://HOST:PORT/metrics (HOST: 127.0.0.1)
  --handshake-timeout SECONDS drop a client that has not sent its handshake by then (default 10)
  --max-clients N             clients served at once (default 64)
  --allow-uid UID             serve only peers with this uid (repeatable; default: anyone who can connect)
  --json                      one JSON object per line instead of text (schema: docs/logging.md)
  --log-file FILE             append the log lines to FILE instead of stdout; SIGHUP reopens it (logrotate)

  Exit code 0 after SIGINT/SIGTERM, 1 when the server cannot start (the message says why), 2 on a bad
  command line.
`;

const size = (bytes: number): string => (bytes >= 1 << 30 ? `${(bytes / (1 << 30)).toFixed(1)} GiB` : bytes >= 1 << 20 ? `${(bytes / (1 << 20)).toFixed(1)} MiB` : `${String(bytes >> 10)} KiB`);

/** Control characters a client put in a reason or a version never reach the terminal or the log as such. */
function printable(line: string): string {
  return line.replace(/[\x00-\x1f\x7f-\x9f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

/** What the command itself logs besides the server's events. */
type LogLine = ServerLog | { event: 'metrics'; url: string } | { event: 'log reopened' };

const LEVEL: Partial<Record<LogLine['event'], 'warn' | 'error'>> = { refused: 'warn', error: 'error' };

/** A --json line, schema 1 (docs/logging.md): fields may be added, none renamed or removed. */
export function jsonLine(entry: LogLine): Record<string, unknown> {
  return { schema: 1, time: new Date().toISOString(), level: LEVEL[entry.event] ?? 'info', ...entry };
}

function lineText(entry: LogLine): string {
  if (entry.event === 'metrics') return `metrics at ${entry.url}`;
  if (entry.event === 'log reopened') return 'log file reopened';
  return printable(text(entry));
}

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
        + ` fault service ${micros(s.serviceMicros)}`;
    }
    case 'prefetched':
      return `client ${String(entry.id)} (pid ${String(entry.pid)}): working set of ${String(entry.pages)} pages prefetched in ${entry.ms.toFixed(0)} ms`;
    case 'recorded':
      return `client ${String(entry.id)} (pid ${String(entry.pid)}): working set of ${String(entry.pages)} pages recorded in ${entry.path} (${entry.ended})`;
    case 'error':
      return `error: ${entry.message}`;
    case 'closed':
      return entry.source === undefined ? 'server closed' : `server closed; ${sourceSummary(entry.source)}`;
  }
}

/** A remote source's counters in one line. */
function sourceSummary(s: Record<string, number>): string {
  const n = (k: string): string => String(s[k] ?? 0);
  return `fetched ${size(s.bytesFetched ?? 0)} in ${n('requests')} requests (${n('retries')} retries), cache hits ${n('memoryHits')} in memory and ${n('diskHits')} on disk, ${n('misses')} misses`;
}

export const serveCommand: Command = {
  summary: 'serve a microVM snapshot\'s memory to Firecracker (UFFD handshake, every version)',
  usage: USAGE,
  run: runServe,
};

async function runServe(args: string[], context: CommandContext): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      socket: { type: 'string' }, memory: { type: 'string' }, readahead: { type: 'string' }, record: { type: 'string' },
      'record-settle': { type: 'string' }, metrics: { type: 'string' },
      prefetch: { type: 'string' }, 'handshake-timeout': { type: 'string' }, 'max-clients': { type: 'string' },
      'allow-uid': { type: 'string', multiple: true }, json: { type: 'boolean' }, 'log-file': { type: 'string' },
    },
    strict: true,
  });
  if (values.socket === undefined || values.memory === undefined) throw new UsageError('--socket and --memory are required');
  context.origins.set(values.socket, '--socket');
  context.origins.set(values.memory, '--memory');
  if (values.record !== undefined) context.origins.set(values.record, '--record');
  if (values.prefetch !== undefined) context.origins.set(values.prefetch, '--prefetch');
  const int = (v: string | undefined, name: string): number | undefined => {
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isSafeInteger(n) || n < 0) throw new UsageError(`--${name} must be a whole number, got ${v}`);
    return n;
  };
  const timeout = values['handshake-timeout'] === undefined ? undefined : Number(values['handshake-timeout']);
  if (timeout !== undefined && !(timeout > 0)) throw new UsageError(`--handshake-timeout must be a positive number of seconds, got ${values['handshake-timeout'] ?? ''}`);
  const settle = values['record-settle'] === undefined ? undefined : Number(values['record-settle']);
  if (settle !== undefined && !(settle > 0)) throw new UsageError(`--record-settle must be a positive number of seconds, got ${values['record-settle'] ?? ''}`);
  if (settle !== undefined && values.record === undefined) throw new UsageError('--record-settle needs --record');
  const metricsAt = values.metrics === undefined ? undefined : parseListenAddress(values.metrics);
  const readahead = int(values.readahead, 'readahead');
  const maxClients = int(values['max-clients'], 'max-clients');
  if (values['log-file'] !== undefined) context.origins.set(values['log-file'], '--log-file');
  const sink = new LogSink(values['log-file']);
  const log = (entry: LogLine): void => {
    sink.write(values.json === true ? `${JSON.stringify(jsonLine(entry))}\n` : `${lineText(entry)}\n`);
  };
  let progressShown = false;
  const clearProgress = (): void => {
    if (progressShown) process.stderr.write('\r\x1b[K');
    progressShown = false;
  };
  const server = await PageServer.listen({
    socket: values.socket, memory: values.memory,
    ...(readahead === undefined ? {} : { readahead }),
    ...(maxClients === undefined ? {} : { maxClients }),
    ...(timeout === undefined ? {} : { handshakeTimeoutMs: Math.round(timeout * 1000) }),
    ...(values.record === undefined ? {} : { record: values.record }),
    ...(settle === undefined ? {} : { recordSettleMs: Math.round(settle * 1000) }),
    ...(values.prefetch === undefined ? {} : { prefetch: values.prefetch }),
    ...(values['allow-uid'] === undefined ? {} : { allowUids: values['allow-uid'].map((u) => int(u, 'allow-uid') ?? 0) }),
  });
  // At once: the server's first line ('listening') comes on the next turn of the event loop.
  server.on('log', (entry) => {
    clearProgress();
    log(entry);
  });
  const endpoint = metricsAt === undefined ? undefined : await serveMetrics(metricsAt, () => renderPrometheus(server.metrics())).catch(async (err: unknown) => {
    await server.close();
    throw err;
  });
  if (endpoint !== undefined) log({ event: 'metrics', url: endpoint.url });
  const onHangup = (): void => { if (sink.reopen()) log({ event: 'log reopened' }); };
  process.on('SIGHUP', onHangup);
  const live = process.stderr.isTTY && values.json !== true;
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
  await endpoint?.close();
  await server.close();
  process.off('SIGHUP', onHangup);
  sink.close();
  return EXIT.ok;
}
