// `uffd pack`: a snapshot's memory file cut into a pack (index + chunks, zero chunks omitted, optionally
// zstd-compressed) that httpSource reads from a URL prefix (any static file server or object store).
import { parseArgs } from 'node:util';
import { writePack } from '../sources/pack-writer.js';
import { PAGE_SIZE } from '../system.js';
import type { Command, CommandContext } from './command.js';
import { EXIT, UsageError } from './failure.js';

const USAGE = `usage: uffd pack FILE --out DIR [--chunk SIZE] [--compress zstd|none] [--json]

  Cuts FILE into chunks and writes DIR/index.json (each chunk's offset, length and CRC-32s; chunks of
  zeros omitted) and DIR/chunks.bin. Serve DIR from any HTTP server or object store and open it with
  httpSource('https://host/DIR/') or \`uffd serve --memory https://host/DIR/\` (the trailing / names a pack).

  --out DIR              the pack's directory (created if needed)
  --chunk SIZE           bytes per chunk: a number with an optional K, M or G suffix, a multiple of the
                         ${String(PAGE_SIZE)}-byte page size (default 2M)
  --compress zstd|none   compress each chunk with zstd (verified and decoded by the reader), or store it
                         as is (default none)
  --json                 the summary as one JSON object

  Exit code 0 when the pack is written, 1 when FILE cannot be read or DIR written, 2 on a bad command line.
`;

const UNITS: Record<string, number> = { '': 1, K: 1 << 10, M: 1 << 20, G: 1 << 30 };

export function parseSize(text: string, option: string): number {
  const m = /^(\d+)([KMG]?)(?:i?B)?$/i.exec(text.trim());
  const n = m === null ? NaN : Number(m[1]) * (UNITS[(m[2] ?? '').toUpperCase()] ?? NaN);
  if (!Number.isSafeInteger(n) || n <= 0) throw new UsageError(`${option} must be a size like 2M or 65536, got ${text}`);
  return n;
}

export const packCommand: Command = {
  summary: 'cut a memory file into chunks (zstd optional) for httpSource and `serve --memory URL`',
  usage: USAGE,
  async run(args: string[], context: CommandContext) {
    const { values, positionals } = parseArgs({
      args, allowPositionals: true, strict: true,
      options: { out: { type: 'string' }, chunk: { type: 'string' }, compress: { type: 'string' }, json: { type: 'boolean' } },
    });
    const [file, ...extra] = positionals;
    if (file === undefined || values.out === undefined) throw new UsageError('FILE and --out DIR are required');
    if (extra.length > 0) throw new UsageError(`one FILE only, got also ${extra.join(' ')}`);
    const chunkSize = values.chunk === undefined ? 2 << 20 : parseSize(values.chunk, '--chunk');
    if (chunkSize % PAGE_SIZE !== 0 || chunkSize > 256 << 20) throw new UsageError(`--chunk must be a multiple of ${String(PAGE_SIZE)} up to 256M, got ${values.chunk ?? ''}`);
    const compression = values.compress ?? 'none';
    if (compression !== 'zstd' && compression !== 'none') throw new UsageError(`--compress must be zstd or none, got ${compression}`);
    context.origins.set(file, 'FILE');
    context.origins.set(values.out, '--out');
    const summary = await writePack(file, values.out, { chunkSize, compression });
    if (values.json === true) process.stdout.write(`${JSON.stringify({ file, out: values.out, chunkSize, ...summary })}\n`);
    else {
      process.stdout.write(`packed ${file} (${String(summary.length)} bytes) into ${values.out}: ${String(summary.chunks)} chunks of ${String(chunkSize)} bytes, `
        + `${String(summary.zeroChunks)} of zeros omitted, ${String(summary.storedBytes)} bytes stored`
        + `${summary.codec === undefined ? '' : ` (zstd by ${summary.codec}, ${(summary.storedBytes / summary.length * 100).toFixed(1)}% of the file)`}\n`);
    }
    return EXIT.ok;
  },
};
