// Where a server's memory lives: a local file path, an http(s):// URL, or a remote spec built by the caller
// (httpSource with options). Local files are mapped; remote objects are read through the chunk cache.
import type { SourceSpec } from './source.js';
import { httpSource } from './http-source.js';
import type { RemoteSpec } from './http-source.js';
import { redactUrl } from './remote-error.js';
import { s3Source } from './s3-source.js';
import { describe } from '../validate.js';

/** s3://BUCKET/KEY with the region and endpoint the AWS tools read from the environment. */
function s3FromUrl(url: URL): RemoteSpec {
  const env = process.env;
  const endpoint = env.AWS_ENDPOINT_URL_S3 ?? env.AWS_ENDPOINT_URL;
  return s3Source({
    region: env.AWS_REGION ?? env.AWS_DEFAULT_REGION ?? 'us-east-1', bucket: url.hostname, key: decodeURIComponent(url.pathname.slice(1)),
    ...(endpoint === undefined || endpoint === '' ? {} : { endpoint }),
  });
}

export type MemoryLocation = string | RemoteSpec;

export function memorySource(memory: unknown): { spec: SourceSpec; label: string } {
  if (typeof memory === 'string' && /^https?:\/\//i.test(memory)) memory = httpSource(memory);
  if (typeof memory === 'string' && /^s3:\/\//i.test(memory)) memory = s3FromUrl(new URL(memory));
  // A file is mapped populated up front (as Firecracker's own example handler does): every UFFDIO_COPY then
  // reads mapped pages, instead of taking a page-cache fault per source page inside the ioctl.
  if (typeof memory === 'string' && memory.length > 0) return { spec: { kind: 'file', path: memory, access: 'mmap', populate: true }, label: memory };
  if (memory !== null && typeof memory === 'object' && (memory as { kind?: unknown }).kind === 'remote') {
    const spec = memory as RemoteSpec;
    return { spec, label: redactUrl(new URL(spec.url)) };
  }
  throw new TypeError(`memory must be a file path, an http(s) or s3:// URL, httpSource(...) or s3Source(...), got ${describe(memory)}`);
}
