// Page sources: where the bytes of lazily filled memory come from. Lazy memory (and the page server) run
// sources inside their resolver, so a source is described by a plain, cloneable spec here and constructed
// where it is used (a worker cannot receive a file descriptor table entry, a mapping or a closure).
//
// A source's read must not wait on the libuv threadpool (async fs, zlib, crypto, dns.lookup): the pool is
// shared by every thread of the process, and if the main thread's own pool work faults on lazy memory, all
// pool threads can be asleep in faults that only this resolver can serve.
import { closeSync, readSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { Mapping } from '../core/mapping.js';
import { addressOfBytes } from '../core/fill-ioctls.js';
import { checkInteger, checkOneOf, describe as describeValue } from '../validate.js';
import { openSourceFile } from './source-error.js';
import type { RemoteSpec } from './http-source.js';
import { sourceMemory } from './page-source.js';
import type { PageSource } from './page-source.js';

export { sourceMemory } from './page-source.js';
export type { PageSource, SourceMemory } from './page-source.js';

export type SourceSpec =
  | { kind: 'file'; path: string; access: 'pread' | 'mmap'; populate?: boolean }
  | { kind: 'buffer'; data: SharedArrayBuffer; byteOffset: number; byteLength: number }
  | { kind: 'zero'; length: number }
  | { kind: 'module'; url: string; options: unknown }
  | RemoteSpec;

/**
 * A file: `mmap` (the default) copies straight from a read-only mapping of it, faulting its pages in from the
 * page cache as they are copied; `pread` reads each range with pread(2) into a buffer and copies that (a
 * second copy and a call per fault: measured 2-3x slower, bench/lazy). On a file system that cannot map
 * files (ENODEV) the file is read with pread either way.
 */
export function fileSource(path: string, options?: { access?: 'pread' | 'mmap' }): SourceSpec {
  if (typeof path !== 'string' || path.length === 0) throw new TypeError(`path must be a non-empty string, got ${describeValue(path)}`);
  const access = options?.access ?? 'mmap';
  checkOneOf(access, 'access', ['pread', 'mmap']);
  return { kind: 'file', path, access };
}

/**
 * Bytes in memory. A view of a SharedArrayBuffer is used in place (the resolver runs in a worker); any other
 * view is copied once into shared memory.
 */
export function bufferSource(data: ArrayBufferView | ArrayBuffer | SharedArrayBuffer): SourceSpec {
  if (data instanceof SharedArrayBuffer) return { kind: 'buffer', data, byteOffset: 0, byteLength: data.byteLength };
  const view = data instanceof ArrayBuffer ? new Uint8Array(data) : ArrayBuffer.isView(data) ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength) : undefined;
  if (view === undefined) throw new TypeError(`data must be an ArrayBuffer, a SharedArrayBuffer or a view of one, got ${describeValue(data)}`);
  if (view.buffer instanceof SharedArrayBuffer) return { kind: 'buffer', data: view.buffer, byteOffset: view.byteOffset, byteLength: view.byteLength };
  const shared = new SharedArrayBuffer(view.byteLength);
  new Uint8Array(shared).set(view);
  return { kind: 'buffer', data: shared, byteOffset: 0, byteLength: view.byteLength };
}

/** `length` zero bytes. */
export function zeroSource(length: number): SourceSpec {
  checkInteger(length, 'length', { min: 1 });
  return { kind: 'zero', length };
}

/**
 * A source written by the user: a module (path or URL) whose default export is a function
 * `(options) => PageSource | Promise<PageSource>`, imported inside the resolver. `options` must be cloneable.
 */
export function moduleSource(module: string | URL, options?: unknown): SourceSpec {
  const url = module instanceof URL ? module.href : typeof module === 'string' && module.length > 0 ? (/^[a-z]+:/i.test(module) ? module : pathToFileURL(module).href) : undefined;
  if (url === undefined) throw new TypeError(`module must be a path or URL, got ${describeValue(module)}`);
  return { kind: 'module', url, options };
}

/** Constructs the source a spec describes; runs where the source is used. */
export async function openSource(spec: SourceSpec): Promise<PageSource> {
  switch (spec.kind) {
    case 'file':
      return spec.access === 'mmap' ? openMappedOrPread(spec.path, spec.populate ?? false) : openPreadFile(spec.path);
    case 'buffer':
      return openBuffer(new Uint8Array(spec.data, spec.byteOffset, spec.byteLength));
    case 'zero':
      return { length: spec.length, read: (offset, target) => { const n = clip(spec.length, offset, target.length); target.fill(0, 0, n); return n; } };
    case 'module':
      return openModule(spec.url, spec.options);
    case 'remote':
      return (await import('./remote-source.js')).openRemoteSource(spec, spec.s3 === undefined ? undefined : (await import('./s3-source.js')).s3Signer(spec.s3));
  }
}

function clip(length: number, offset: number, wanted: number): number {
  return Math.max(0, Math.min(wanted, length - offset));
}

function openPreadFile(path: string): PageSource {
  const { fd, length } = openSourceFile(path);
  return {
    length,
    read(offset, target) {
      const wanted = clip(length, offset, target.length);
      let done = 0;
      while (done < wanted) {
        const n = readSync(fd, target, done, wanted - done, offset + done);
        if (n === 0) break; // the file shrank: the caller sees a short read
        done += n;
      }
      return done;
    },
    close: () => { closeSync(fd); },
  };
}

function openMappedOrPread(path: string, populate: boolean): PageSource {
  const checked = openSourceFile(path);
  closeSync(checked.fd);
  const { length } = checked;
  let mapping: Mapping;
  try {
    mapping = Mapping.file(path, { populate, length });
  } catch (err) {
    // A file system that cannot map files (ENODEV): read it instead. Anything else is an error.
    if ((err as { code?: unknown }).code !== 'ENODEV') throw err;
    return openPreadFile(path);
  }
  // Copies out of the mapping go through the kernel only (UFFDIO_COPY from its address): if the file shrinks
  // under it, the kernel's access is EFAULT, where a JavaScript copy from the same pages would be SIGBUS.
  // read() therefore reads the file itself.
  const pread = openPreadFile(path);
  return {
    length,
    // The whole mapping: past the end of the file its last page reads as zeros, as a source's tail must.
    [sourceMemory]: { address: Number(mapping.address), length: mapping.length },
    read: (offset, target) => pread.read(offset, target),
    close: () => {
      mapping.close();
      void pread.close?.();
    },
  };
}


function openBuffer(bytes: Uint8Array): PageSource {
  return {
    length: bytes.length,
    [sourceMemory]: { address: addressOfBytes(bytes), length: bytes.length },
    read(offset, target) {
      const n = clip(bytes.length, offset, target.length);
      target.set(bytes.subarray(offset, offset + n));
      return n;
    },
  };
}

async function openModule(url: string, options: unknown): Promise<PageSource> {
  const mod = (await import(url)) as { default?: unknown };
  if (typeof mod.default !== 'function') throw new TypeError(`source module ${url} must export a default function (options) => PageSource`);
  const source = (await (mod.default as (o: unknown) => unknown)(options)) as Partial<PageSource> | null;
  if (source === null || typeof source !== 'object' || typeof source.read !== 'function' || !Number.isSafeInteger(source.length) || (source.length ?? 0) <= 0) {
    throw new TypeError(`source module ${url} returned ${describeValue(source)}: expected { length: positive integer, read(offset, target) }`);
  }
  return source as PageSource;
}
