// Opening a remote spec where it is used (the resolver): the transport, the object's version, the chunk
// cache keyed by that version, and the page source over them.
import { createHash } from 'node:crypto';
import { ChunkCache } from './chunk-cache.js';
import { chunkedSource } from './chunked-source.js';
import type { ChunkedObject, RemotePageSource } from './chunked-source.js';
import { FetchQueue } from './fetch-queue.js';
import type { RemoteSpec } from './http-source.js';
import { RangeClient } from './range-client.js';
import { redactUrl } from './remote-error.js';

export async function openRemoteSource(spec: RemoteSpec): Promise<RemotePageSource> {
  const url = new URL(spec.url);
  const client = new RangeClient({
    url, headers: spec.headers, concurrency: spec.concurrency, timeoutMs: spec.timeoutMs, retries: spec.retries, ca: spec.ca,
  });
  try {
    if (spec.pack) throw new TypeError('pack sources are not supported yet');
    // With a disk cache the first chunk may be here already: one byte is enough to learn the version.
    const first = await client.open(spec.cache === undefined ? spec.chunkSize : 1);
    const identity = client.identity;
    const key = cacheKey([redactUrl(url), identity.etag ?? '', identity.lastModified ?? '', String(identity.length), String(spec.chunkSize)]);
    const cache = new ChunkCache({ key, memoryBytes: spec.memoryBytes, disk: spec.cache });
    // The first chunk came with the open: it is cached like any other (unless this host has it already).
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
  } catch (err) {
    client.close();
    throw err;
  }
}

function cacheKey(parts: string[]): string {
  return createHash('sha256').update(parts.join('\0')).digest('hex').slice(0, 32);
}
