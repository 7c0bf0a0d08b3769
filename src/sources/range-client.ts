// HTTP/1.1 range GETs of one object over keep-alive connections, several in flight. Every response is
// checked against the object seen at open (status 206, Content-Range, length, ETag or Last-Modified), so an
// object replaced mid-restore fails instead of mixing two versions. Transient failures (5xx, 429, resets,
// timeouts, short bodies) are retried with exponential backoff and jitter; redirects are followed within a
// limit. Sockets only: host names go through HostResolver, never dns.lookup (the libuv threadpool).
import http from 'node:http';
import https from 'node:https';
import type { IncomingMessage } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { HostResolver } from './resolve-host.js';
import { RemoteSourceError } from './remote-error.js';

export interface RangeClientOptions {
  url: URL;
  headers: Record<string, string>;
  /** Requests in flight at most (sockets per host). */
  concurrency: number;
  /** A request that sees no bytes for this long is abandoned (and retried). */
  timeoutMs: number;
  /** Attempts after the first for a transient failure. */
  retries: number;
  /** Extra trusted CA certificates (PEM) for HTTPS. */
  ca?: string | undefined;
  maxRedirects?: number;
  /** Adds headers to each request just before it is sent (request signing). */
  sign?: (request: { method: string; url: URL; headers: Record<string, string> }) => Record<string, string>;
}

/** The version of the object every range must come from. */
export interface ObjectIdentity {
  length: number;
  etag?: string;
  lastModified?: string;
}

export interface RangeClientStats {
  requests: number;
  retries: number;
  bytesFetched: number;
}

const BACKOFF_BASE_MS = 50;
const BACKOFF_MAX_MS = 2000;
const REDIRECTS = new Set([301, 302, 303, 307, 308]);

export class RangeClient {
  readonly #o: RangeClientOptions;
  readonly #agents: { http: http.Agent; https: https.Agent };
  /** Where the object was found at open, after redirects; ranges go there directly. */
  #url: URL;
  #identity: ObjectIdentity | undefined;
  readonly stats: RangeClientStats = { requests: 0, retries: 0, bytesFetched: 0 };

  constructor(options: RangeClientOptions) {
    this.#o = options;
    this.#url = options.url;
    const resolver = new HostResolver();
    const common = { keepAlive: true, maxSockets: options.concurrency, lookup: resolver.lookup, scheduling: 'lifo' as const };
    this.#agents = {
      http: new http.Agent(common),
      https: new https.Agent({ ...common, ...(options.ca === undefined ? {} : { ca: options.ca }) }),
    };
  }

  get identity(): ObjectIdentity {
    if (this.#identity === undefined) throw new Error('RangeClient.open() has not completed');
    return this.#identity;
  }

  get url(): URL {
    return this.#url;
  }

  /**
   * Reads the first `length` bytes (fewer if the object is smaller) and learns the object's size and version.
   * A server that ignores Range, or names no version (neither ETag nor Last-Modified), is refused.
   */
  async open(length: number): Promise<Uint8Array> {
    return this.#withRetries(0, length, true);
  }

  /** The bytes [start, end) of the object seen at open; `label` (e.g. the chunk) leads any error message. */
  async get(start: number, end: number, label?: string): Promise<Uint8Array> {
    return this.#withRetries(start, end, false, label);
  }

  close(): void {
    this.#agents.http.destroy();
    this.#agents.https.destroy();
  }

  async #withRetries(start: number, end: number, opening: boolean, label?: string): Promise<Uint8Array> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.#request(this.#url, start, end, opening, this.#o.maxRedirects ?? 5, label);
      } catch (err) {
        if (!(err instanceof RemoteSourceError) || !err.retryable || attempt >= this.#o.retries) {
          if (err instanceof RemoteSourceError && attempt > 0) err.message += ` after ${String(attempt + 1)} attempts`;
          throw err;
        }
        this.stats.retries++;
        const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** attempt);
        await sleep(delay / 2 + Math.random() * (delay / 2));
      }
    }
  }

  #request(url: URL, start: number, end: number, opening: boolean, redirectsLeft: number, label?: string): Promise<Uint8Array> {
    const identity = this.#identity;
    const headers: Record<string, string> = { ...this.#o.headers, range: `bytes=${String(start)}-${String(end - 1)}`, 'accept-encoding': 'identity' };
    // A strong ETag lets the server refuse a replaced object itself (412); weak ones cannot be matched.
    if (identity?.etag !== undefined && !identity.etag.startsWith('W/')) headers['if-match'] = identity.etag;
    const signed = this.#o.sign === undefined ? headers : { ...headers, ...this.#o.sign({ method: 'GET', url, headers }) };
    const what = `${label === undefined ? '' : `${label}, `}bytes ${String(start)}-${String(end - 1)}`;
    this.stats.requests++;
    return new Promise<Uint8Array>((resolve, reject) => {
      const secure = url.protocol === 'https:';
      const request = (secure ? https : http).request(url, { method: 'GET', agent: secure ? this.#agents.https : this.#agents.http, headers: signed });
      let settled = false;
      const fail = (message: string, retryable: boolean, status?: number, cause?: unknown): void => {
        if (settled) return;
        settled = true;
        request.destroy();
        reject(new RemoteSourceError(`${what}: ${message}`, { url, retryable, ...(status === undefined ? {} : { status }), cause }));
      };
      request.setTimeout(this.#o.timeoutMs, () => { fail(`no data for ${String(this.#o.timeoutMs)} ms`, true); });
      request.on('error', (err: NodeJS.ErrnoException) => { fail(`${err.code ?? 'request failed'}: ${err.message}`, isTransient(err), undefined, err); });
      request.on('response', (response) => {
        const status = response.statusCode ?? 0;
        if (REDIRECTS.has(status)) {
          response.resume();
          const location = response.headers.location;
          if (location === undefined) { fail(`redirect ${String(status)} without a Location`, false, status); return; }
          if (redirectsLeft === 0) { fail('too many redirects', false, status); return; }
          const next = new URL(location, url);
          if (next.protocol !== 'http:' && next.protocol !== 'https:') { fail(`redirect to unsupported ${next.protocol}`, false, status); return; }
          settled = true;
          // A permanent redirect found at open is where the object lives: later ranges go there directly.
          if (opening && (status === 301 || status === 308)) this.#url = next;
          resolve(this.#request(next, start, end, opening, redirectsLeft - 1, label));
          return;
        }
        if (status !== 206) {
          response.resume();
          if (status === 200) { fail('the server ignored the Range header (answered 200): range requests are required', false, status); return; }
          if (status === 412) { fail('the object changed since it was opened (412 Precondition Failed)', false, status); return; }
          if (status === 416 && opening) { fail('the object is empty (416)', false, status); return; }
          fail(`the server answered ${String(status)} ${response.statusMessage ?? ''}`.trim(), status >= 500 || status === 429 || status === 408, status);
          return;
        }
        const checked = this.#check(response, start, end, opening);
        if (typeof checked === 'string') {
          response.resume();
          fail(checked, false, status);
          return;
        }
        const body = Buffer.allocUnsafe(checked);
        let received = 0;
        response.on('data', (data: Buffer) => {
          if (received + data.length > body.length) { fail(`the body is longer than the ${String(body.length)} bytes announced`, true, status); return; }
          data.copy(body, received);
          received += data.length;
        });
        response.on('end', () => {
          if (settled) return;
          if (received !== body.length) { fail(`short body: ${String(received)} of ${String(body.length)} bytes`, true, status); return; }
          settled = true;
          this.stats.bytesFetched += received;
          resolve(new Uint8Array(body.buffer, body.byteOffset, received));
        });
        response.on('aborted', () => { fail(`connection closed after ${String(received)} of ${String(body.length)} bytes`, true, status); });
        response.on('error', (err: NodeJS.ErrnoException) => { fail(`${err.code ?? 'response failed'} after ${String(received)} of ${String(body.length)} bytes: ${err.message}`, true, status, err); });
      });
      request.end();
    });
  }

  /** The body length this 206 must carry, or why it is not the range asked for of the object opened. */
  #check(response: IncomingMessage, start: number, end: number, opening: boolean): number | string {
    const h = response.headers;
    const encoding = h['content-encoding'];
    if (encoding !== undefined && encoding !== 'identity') return `the server encoded the body (${encoding}) although identity was asked for`;
    const match = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(h['content-range'] ?? '');
    if (match === null) return `206 with a malformed Content-Range ${JSON.stringify(h['content-range'] ?? null)}`;
    const [first, last, total] = [Number(match[1]), Number(match[2]), Number(match[3])];
    if (opening) {
      if (h.etag === undefined && h['last-modified'] === undefined) return 'the server names no version of the object (neither ETag nor Last-Modified): a replaced object could not be detected';
      this.#identity = { length: total, ...(h.etag === undefined ? {} : { etag: h.etag }), ...(h['last-modified'] === undefined ? {} : { lastModified: h['last-modified'] }) };
    }
    const identity = this.identity;
    if (total !== identity.length) return `the object's size changed from ${String(identity.length)} to ${String(total)} bytes since it was opened`;
    if (identity.etag !== undefined ? h.etag !== identity.etag : h['last-modified'] !== identity.lastModified) {
      return `the object changed since it was opened (${identity.etag !== undefined ? `ETag ${String(h.etag)}, was ${identity.etag}` : `Last-Modified ${String(h['last-modified'])}, was ${String(identity.lastModified)}`})`;
    }
    const wantedLast = Math.min(end, total) - 1;
    if (first !== start || last !== wantedLast) return `asked for bytes ${String(start)}-${String(wantedLast)}, got Content-Range ${String(h['content-range'])}`;
    const length = last - first + 1;
    const announced = h['content-length'];
    if (announced !== undefined && Number(announced) !== length) return `Content-Length ${announced} does not match Content-Range ${String(h['content-range'])}`;
    return length;
  }
}

function isTransient(err: NodeJS.ErrnoException): boolean {
  // Name resolution and TLS verification failures do not heal by repeating the request.
  return !(err.code === 'ENOTFOUND' || err.code === 'ENODATA' || err.code?.startsWith('ERR_TLS') === true || err.code?.includes('CERT') === true || err.code === 'DEPTH_ZERO_SELF_SIGNED_CERT');
}
