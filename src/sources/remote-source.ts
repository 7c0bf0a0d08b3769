// Opening a remote spec where it is used (the resolver): the transport, the object's version, the chunk
// cache keyed by that version, and the page source over them. A raw object is cut into chunkSize ranges;
// a pack (`uffd pack`) is read through its index, each stored chunk verified (and decoded) before use.
import { createHash } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { ChunkCache } from './chunk-cache.js';
import { chunkedSource } from './chunked-source.js';
import type { ChunkedObject, RemotePageSource } from './chunked-source.js';
import { FetchQueue } from './fetch-queue.js';
import type { RemoteSpec } from './http-source.js';
import { MAX_INDEX_BYTES, PACK_DATA, PACK_INDEX, parsePackIndex } from './pack-format.js';
import type { PackEntry, PackIndex } from './pack-format.js';
import { RangeClient } from './range-client.js';
import type { RangeClientOptions } from './range-client.js';
import { redactUrl, RemoteSourceError } from './remote-error.js';
import { loadZstd } from './zstd.js';
import type { Zstd } from './zstd.js';

export async function openRemoteSource(spec: RemoteSpec, sign?: RangeClientOptions['sign']): Promise<RemotePageSource> {
  const clients: RangeClient[] = [];
  const client = (url: URL): RangeClient => {
    const c = new RangeClient({ url, headers: spec.headers, concurrency: spec.concurrency, timeoutMs: spec.timeoutMs, retries: spec.retries, ca: spec.ca, ...(sign === undefined ? {} : { sign }) });
    clients.push(c);
    return c;
  };
  try {
    const url = new URL(spec.url);
    const source = spec.pack ? await openPack(spec, url, client) : await openRaw(spec, url, client(url));
    for (const offset of spec.workingSet ?? []) source.prefetch(offset, 1);
    return source;
  } catch (err) {
    for (const c of clients) c.close();
    throw err;
  }
}

async function openRaw(spec: RemoteSpec, url: URL, client: RangeClient): Promise<RemotePageSource> {
  // With a disk cache the first chunk may be here already: one byte is enough to learn the version.
  const first = await client.open(spec.cache === undefined ? spec.chunkSize : 1);
  const identity = client.identity;
  const cache = new ChunkCache({ key: cacheKey([redactUrl(url), identity.etag ?? '', identity.lastModified ?? '', String(identity.length), String(spec.chunkSize)]), memoryBytes: spec.memoryBytes, disk: spec.cache });
  // The first chunk came with the open: it is cached like any other.
  if (first.length === Math.min(spec.chunkSize, identity.length)) void cache.obtain(0, () => Promise.resolve(first));
  const queue = new FetchQueue(spec.concurrency);
  const object: ChunkedObject = {
    length: identity.length,
    chunkSize: spec.chunkSize,
    ahead: spec.concurrency,
    fetch: (index, urgent) => queue.run(index, urgent, () => client.get(index * spec.chunkSize, Math.min(identity.length, (index + 1) * spec.chunkSize), `chunk ${String(index)}`)),
    promote: (index) => { queue.promote(index); },
    close: () => { client.close(); },
    transportStats: () => ({ ...client.stats }),
  };
  return chunkedSource(object, cache);
}

async function openPack(spec: RemoteSpec, prefix: URL, client: (url: URL) => RangeClient): Promise<RemotePageSource> {
  const indexUrl = new URL(PACK_INDEX, prefix);
  const indexClient = client(indexUrl);
  const text = await indexClient.open(MAX_INDEX_BYTES);
  if (indexClient.identity.length > MAX_INDEX_BYTES) throw new RemoteSourceError(`the pack index is larger than ${String(MAX_INDEX_BYTES)} bytes`, { url: indexUrl, retryable: false });
  indexClient.close();
  const index = parsePackIndex(Buffer.from(text).toString('utf8'), redactUrl(indexUrl));
  const dataUrl = new URL(PACK_DATA, prefix);
  const data = client(dataUrl);
  if (index.dataLength > 0) {
    await data.open(1);
    if (data.identity.length !== index.dataLength) throw new RemoteSourceError(`${PACK_DATA} holds ${String(data.identity.length)} bytes, the index says ${String(index.dataLength)}: not the data of this index`, { url: dataUrl, retryable: false });
  }
  const zstd = index.compression === 'zstd' ? await loadZstd() : undefined;
  const cache = new ChunkCache({ key: cacheKey([redactUrl(prefix), 'pack', indexClient.identity.etag ?? indexClient.identity.lastModified ?? '', createHash('sha256').update(text).digest('hex')]), memoryBytes: spec.memoryBytes, disk: spec.cache });
  const queue = new FetchQueue(spec.concurrency);
  const stats = { checksumErrors: 0 };
  const entry = (i: number): PackEntry | null => index.chunks[i] ?? null;
  const object: ChunkedObject = {
    length: index.length,
    chunkSize: index.chunkSize,
    ahead: spec.concurrency,
    isZero: (i) => entry(i) === null,
    fetch: (i, urgent) => queue.run(i, urgent, async () => {
      const e = entry(i);
      if (e === null) return new Uint8Array(Math.min(index.chunkSize, index.length - i * index.chunkSize));
      // A stored chunk that fails its checksum is fetched again (a flipped bit in transit), then refused.
      for (let attempt = 0; ; attempt++) {
        const stored = await data.get(e[0], e[0] + e[1], `chunk ${String(i)}`);
        const why = verifyChunk(index, i, e, stored, zstd);
        if (typeof why !== 'string') return why;
        stats.checksumErrors++;
        if (attempt >= spec.retries) throw new RemoteSourceError(`chunk ${String(i)}, bytes ${String(e[0])}-${String(e[0] + e[1] - 1)}: ${why}`, { url: dataUrl, retryable: false });
      }
    }),
    promote: (i) => { queue.promote(i); },
    close: () => { data.close(); },
    transportStats: () => ({ ...data.stats, ...stats }),
  };
  return chunkedSource(object, cache);
}

/** The chunk's bytes, or why the stored bytes are not that chunk. */
function verifyChunk(index: PackIndex, i: number, e: PackEntry, stored: Uint8Array, zstd: Zstd | undefined): Uint8Array | string {
  if (crc32(stored) !== e[2]) return 'the stored bytes fail their checksum';
  const size = Math.min(index.chunkSize, index.length - i * index.chunkSize);
  let chunk: Uint8Array;
  try {
    chunk = zstd === undefined ? stored : zstd.decompress(stored, size);
  } catch (err) {
    return `zstd decoding failed: ${(err as Error).message}`;
  }
  if (chunk.length !== size || crc32(chunk) !== e[3]) return 'the decoded chunk fails its checksum';
  return chunk;
}

function cacheKey(parts: string[]): string {
  return createHash('sha256').update(parts.join('\0')).digest('hex').slice(0, 32);
}
