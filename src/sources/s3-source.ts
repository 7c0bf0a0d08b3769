// s3Source(): an object (or a pack) in an S3-compatible store (AWS S3, GCS's XML API, R2, MinIO-style
// stores), read with SigV4-signed range GETs through the same client and chunk cache as httpSource.
// Signing is the aws4 library's (synchronous hashing on the calling thread, no threadpool). Credentials
// come from the options or the usual AWS_* variables, travel only inside the spec, and never appear in a
// log or an error (errors name the URL without query or user info).
import aws4 from 'aws4';
import { checkOptionsObject, describe as describeValue } from '../validate.js';
import { remoteOptions } from './http-source.js';
import type { HttpSourceOptions, RemoteSpec } from './http-source.js';

export interface S3Credentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

export interface S3SourceOptions extends Omit<HttpSourceOptions, 'headers'> {
  /** The store's endpoint (default https://s3.REGION.amazonaws.com). */
  endpoint?: string;
  region: string;
  bucket: string;
  /** The object's key; a key ending in '/' names a pack written by `uffd pack` under that prefix. */
  key: string;
  /** 'virtual-host' (bucket.endpoint, AWS's default) or 'path' (endpoint/bucket, MinIO-style); default:
   * virtual-host for AWS endpoints, path for any other endpoint. */
  style?: 'virtual-host' | 'path';
  /** Default: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN. */
  credentials?: S3Credentials;
}

const S3_OPTIONS = ['endpoint', 'region', 'bucket', 'key', 'style', 'credentials', 'chunkSize', 'concurrency', 'cache', 'memoryBytes', 'retries', 'timeoutMs', 'ca', 'workingSet'];
const BUCKET = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

function nonEmpty(value: unknown, name: string): string {
  if (typeof value !== 'string' || value.length === 0) throw new TypeError(`${name} must be a non-empty string, got ${describeValue(value)}`);
  return value;
}

function credentialsFrom(value: unknown): S3Credentials {
  if (value === undefined) {
    const { AWS_ACCESS_KEY_ID: id, AWS_SECRET_ACCESS_KEY: secret, AWS_SESSION_TOKEN: token } = process.env;
    if (id === undefined || id === '' || secret === undefined || secret === '') {
      throw new TypeError('s3Source needs credentials: pass { credentials } or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY');
    }
    return { accessKeyId: id, secretAccessKey: secret, ...(token === undefined || token === '' ? {} : { sessionToken: token }) };
  }
  const c = checkOptionsObject(value, 'credentials', ['accessKeyId', 'secretAccessKey', 'sessionToken']);
  // The values are never echoed: a wrong type is named, not shown.
  if (typeof c.accessKeyId !== 'string' || c.accessKeyId === '') throw new TypeError('credentials.accessKeyId must be a non-empty string');
  if (typeof c.secretAccessKey !== 'string' || c.secretAccessKey === '') throw new TypeError('credentials.secretAccessKey must be a non-empty string');
  if (c.sessionToken !== undefined && typeof c.sessionToken !== 'string') throw new TypeError('credentials.sessionToken must be a string');
  return { accessKeyId: c.accessKeyId, secretAccessKey: c.secretAccessKey, ...(c.sessionToken === undefined ? {} : { sessionToken: c.sessionToken }) };
}

/** The object URL for a bucket and key in the given addressing style. */
export function s3ObjectUrl(endpoint: URL, bucket: string, key: string, style: 'virtual-host' | 'path'): URL {
  const path = key.split('/').map(encodeURIComponent).join('/');
  if (style === 'path') return new URL(`${endpoint.origin}${endpoint.pathname.replace(/\/$/, '')}/${bucket}/${path}`);
  return new URL(`${endpoint.protocol}//${bucket}.${endpoint.host}${endpoint.pathname.replace(/\/$/, '')}/${path}`);
}

export function s3Source(options: S3SourceOptions): RemoteSpec {
  const o = checkOptionsObject(options, 's3Source options', S3_OPTIONS) as Partial<S3SourceOptions>;
  const region = nonEmpty(o.region, 'region');
  const bucket = nonEmpty(o.bucket, 'bucket');
  if (!BUCKET.test(bucket)) throw new TypeError(`bucket ${describeValue(bucket)} is not a valid bucket name`);
  const key = nonEmpty(o.key, 'key').replace(/^\//, '');
  let endpoint: URL;
  try {
    endpoint = new URL(o.endpoint ?? `https://s3.${region}.amazonaws.com`);
  } catch {
    throw new TypeError(`endpoint must be an http or https URL, got ${describeValue(o.endpoint)}`);
  }
  if (endpoint.protocol !== 'http:' && endpoint.protocol !== 'https:') throw new TypeError(`endpoint must be an http or https URL, got ${describeValue(o.endpoint)}`);
  const style = o.style ?? (o.endpoint === undefined || endpoint.hostname.endsWith('.amazonaws.com') ? 'virtual-host' : 'path');
  if (style !== 'virtual-host' && style !== 'path') throw new TypeError(`style must be 'virtual-host' or 'path', got ${describeValue(style)}`);
  const credentials = credentialsFrom(o.credentials);
  const rest = Object.fromEntries(Object.entries(o).filter(([name]) => !['endpoint', 'region', 'bucket', 'key', 'style', 'credentials'].includes(name)));
  const url = s3ObjectUrl(endpoint, bucket, key, style);
  return { kind: 'remote', url: url.href, pack: key.endsWith('/'), ...remoteOptions(rest, 's3Source options'), s3: { region, credentials } };
}

/** Signs one request of a spec made by s3Source (SigV4, service s3, unsigned payload of an empty body). */
export function s3Signer(s3: NonNullable<RemoteSpec['s3']>): (request: { method: string; url: URL; headers: Record<string, string> }) => Record<string, string> {
  return ({ method, url, headers }) => {
    const signed = aws4.sign({ host: url.host, path: `${url.pathname}${url.search}`, method, service: 's3', region: s3.region, headers: { ...headers } }, s3.credentials);
    const out: Record<string, string> = {};
    for (const [name, value] of Object.entries(signed.headers ?? {})) if (value !== undefined) out[name.toLowerCase()] = String(value);
    return out;
  };
}
