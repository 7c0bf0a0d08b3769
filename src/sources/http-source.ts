// httpSource(): memory served from an object behind HTTP(S) range requests, through a chunk cache. The
// spec is plain data (it crosses into the resolver worker); the connections are made where it is opened.
import { describe as describeValue, checkOptionsObject } from '../validate.js';
import { PAGE_SIZE } from '../system.js';

export interface HttpSourceOptions {
  /** Sent with every request (e.g. authorization). Never logged. */
  headers?: Record<string, string>;
  /** Bytes per range request and cache entry, a multiple of the page size (default 2 MiB). */
  chunkSize?: number;
  /** Range requests in flight at most (default 8). */
  concurrency?: number;
  /** Chunks kept on disk under `dir`, at most `maxBytes` of them (default 4 GiB), least recently used out first. */
  cache?: { dir: string; maxBytes?: number };
  /** Chunks kept in memory at most (default 256 MiB). */
  memoryBytes?: number;
  /** Retries of a transient failure (5xx, reset, timeout, short body) per request (default 4). */
  retries?: number;
  /** A request that sees no bytes for this long is abandoned and retried (default 10000). */
  timeoutMs?: number;
  /** Extra trusted CA certificates (PEM) for HTTPS, e.g. a private store's own CA. */
  ca?: string;
  /** Byte offsets of a recorded working set: their chunks are fetched in the background from the open on,
   * behind demand reads. */
  workingSet?: number[];
}

/** What a remote source needs, as cloneable data. */
export interface RemoteSpec {
  kind: 'remote';
  url: string;
  /** The URL names a directory written by `uffd pack` (it ends with '/'), not the raw object. */
  pack: boolean;
  headers: Record<string, string>;
  chunkSize: number;
  concurrency: number;
  cache: { dir: string; maxBytes: number } | undefined;
  memoryBytes: number;
  retries: number;
  timeoutMs: number;
  ca: string | undefined;
  workingSet: number[] | undefined;
  s3?: { region: string; credentials: { accessKeyId: string; secretAccessKey: string; sessionToken?: string } };
}

const OPTIONS = ['headers', 'chunkSize', 'concurrency', 'cache', 'memoryBytes', 'retries', 'timeoutMs', 'ca', 'workingSet'];
const MIB = 1 << 20;

function intIn(value: unknown, name: string, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) {
    throw new RangeError(`${name} must be an integer in [${String(min)}, ${String(max)}], got ${describeValue(value)}`);
  }
  return value;
}

/** The options every remote source shares, validated. */
export function remoteOptions(options: unknown, name: string, known = OPTIONS): Omit<RemoteSpec, 'kind' | 'url' | 'pack'> {
  const o = checkOptionsObject(options, name, known) as HttpSourceOptions;
  const headers = o.headers ?? {};
  if (headers === null || typeof headers !== 'object' || !Object.values(headers).every((v) => typeof v === 'string')) {
    throw new TypeError(`headers must be an object of strings, got ${describeValue(headers)}`);
  }
  const chunkSize = intIn(o.chunkSize, 'chunkSize', 2 * MIB, PAGE_SIZE, 256 * MIB);
  if (chunkSize % PAGE_SIZE !== 0) throw new RangeError(`chunkSize ${String(chunkSize)} is not a multiple of the ${String(PAGE_SIZE)}-byte page size`);
  let cache: RemoteSpec['cache'];
  if (o.cache !== undefined) {
    const c = checkOptionsObject(o.cache, 'cache', ['dir', 'maxBytes']);
    if (typeof c.dir !== 'string' || c.dir.length === 0) throw new TypeError(`cache.dir must be a directory path, got ${describeValue(c.dir)}`);
    cache = { dir: c.dir, maxBytes: intIn(c.maxBytes, 'cache.maxBytes', 4096 * MIB, chunkSize, Number.MAX_SAFE_INTEGER) };
  }
  if (o.workingSet !== undefined && (!Array.isArray(o.workingSet) || !o.workingSet.every((v) => Number.isSafeInteger(v) && v >= 0))) {
    throw new TypeError(`workingSet must be an array of byte offsets, got ${describeValue(o.workingSet)}`);
  }
  if (o.ca !== undefined && typeof o.ca !== 'string') throw new TypeError(`ca must be PEM text, got ${describeValue(o.ca)}`);
  return {
    headers: { ...headers },
    chunkSize,
    concurrency: intIn(o.concurrency, 'concurrency', 8, 1, 256),
    cache,
    memoryBytes: intIn(o.memoryBytes, 'memoryBytes', 256 * MIB, 0, Number.MAX_SAFE_INTEGER),
    retries: intIn(o.retries, 'retries', 4, 0, 20),
    timeoutMs: intIn(o.timeoutMs, 'timeoutMs', 10_000, 1, 3_600_000),
    ca: o.ca,
    workingSet: o.workingSet === undefined ? undefined : [...o.workingSet],
  };
}

/**
 * An object behind HTTP(S), read with range requests of `chunkSize` bytes through a chunk cache. A URL
 * ending in '/' names a directory written by `uffd pack` (index and chunks, optionally zstd-compressed).
 */
export function httpSource(url: string | URL, options?: HttpSourceOptions): RemoteSpec {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new TypeError(`url must be an http or https URL, got ${describeValue(url)}`);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new TypeError(`url must be an http or https URL, got ${describeValue(parsed.protocol)}`);
  if (parsed.hash !== '') throw new TypeError('url must not have a fragment');
  return { kind: 'remote', url: parsed.href, pack: parsed.pathname.endsWith('/'), ...remoteOptions(options, 'httpSource options') };
}
