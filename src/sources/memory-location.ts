// Where a server's memory lives: a local file path, an http(s):// URL, or a remote spec built by the caller
// (httpSource with options). Local files are mapped; remote objects are read through the chunk cache.
import type { SourceSpec } from './source.js';
import { httpSource } from './http-source.js';
import type { RemoteSpec } from './http-source.js';
import { redactUrl } from './remote-error.js';
import { describe } from '../validate.js';

export type MemoryLocation = string | RemoteSpec;

export function memorySource(memory: unknown): { spec: SourceSpec; label: string } {
  if (typeof memory === 'string' && /^https?:\/\//i.test(memory)) memory = httpSource(memory);
  // A file is mapped populated up front (as Firecracker's own example handler does): every UFFDIO_COPY then
  // reads mapped pages, instead of taking a page-cache fault per source page inside the ioctl.
  if (typeof memory === 'string' && memory.length > 0) return { spec: { kind: 'file', path: memory, access: 'mmap', populate: true }, label: memory };
  if (memory !== null && typeof memory === 'object' && (memory as { kind?: unknown }).kind === 'remote') {
    const spec = memory as RemoteSpec;
    return { spec, label: redactUrl(new URL(spec.url)) };
  }
  throw new TypeError(`memory must be a file path, an http(s) URL or httpSource(...), got ${describe(memory)}`);
}
