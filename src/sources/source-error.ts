// A source that cannot be opened says so at open, with the errno code of what refused it (ENOENT, EACCES,
// EISDIR) or ERR_UFFD_SOURCE_EMPTY / ERR_UFFD_SOURCE_NOT_FILE, and the original error as `.cause`, instead
// of opening fine and failing on the first touch.
import { closeSync, fstatSync, openSync } from 'node:fs';

export class SourceOpenError extends Error {
  override name = 'SourceOpenError';
  /** 'ENOENT', 'EACCES', 'EISDIR', 'ERR_UFFD_SOURCE_EMPTY', 'ERR_UFFD_SOURCE_NOT_FILE', ... */
  readonly code: string;
  readonly path: string;
  /** The system call that failed, when one did ('open'). */
  readonly syscall: string | undefined;

  constructor(path: string, code: string, why: string, options?: { cause?: unknown; syscall?: string }) {
    super(`cannot use ${path} as a page source: ${why}`, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.path = path;
    this.syscall = options?.syscall;
  }
}

/** Opens a file for reading as a page source: a non-empty regular file. Returns the descriptor and its size. */
export function openSourceFile(path: string): { fd: number; length: number } {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (err) {
    const code = (err as { code?: string }).code ?? 'EIO';
    const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'no permission to read it' : (err as Error).message;
    throw new SourceOpenError(path, code, why, { cause: err, syscall: 'open' });
  }
  try {
    const stat = fstatSync(fd);
    if (stat.isDirectory()) throw new SourceOpenError(path, 'EISDIR', 'it is a directory; a source is a file');
    if (!stat.isFile()) throw new SourceOpenError(path, 'ERR_UFFD_SOURCE_NOT_FILE', 'it is not a regular file (a source needs a file with a size)');
    if (stat.size === 0) throw new SourceOpenError(path, 'ERR_UFFD_SOURCE_EMPTY', 'the file is empty (0 bytes): there is nothing to page in');
    return { fd, length: stat.size };
  } catch (err) {
    closeSync(fd);
    throw err;
  }
}

/** What crosses from the resolver thread when something fails there: enough to rebuild a useful error. */
export interface ErrorFields {
  message: string;
  name?: string;
  code?: string;
  syscall?: string;
  path?: string;
}

export function errorFields(err: unknown): ErrorFields {
  if (!(err instanceof Error)) return { message: String(err) };
  const e = err as Error & { code?: unknown; syscall?: unknown; path?: unknown };
  return {
    message: e.message, name: e.name,
    ...(typeof e.code === 'string' ? { code: e.code } : {}),
    ...(typeof e.syscall === 'string' ? { syscall: e.syscall } : {}),
    ...(typeof e.path === 'string' ? { path: e.path } : {}),
  };
}

/** The resolver thread's error, rebuilt on this side as the `.cause` of `message` (code kept). */
export function rebuildError(message: string, fields: ErrorFields, fallbackCode: string): Error & { code: string } {
  const cause = Object.assign(new Error(fields.message), fields);
  return Object.assign(new Error(`${message}: ${fields.message}`, { cause }), { code: fields.code ?? fallbackCode, ...(fields.path === undefined ? {} : { path: fields.path }) });
}

/** What a source is, for a message: `file /data/model.bin`, `module file:///...`, `buffer`, `zeros`. */
export function describeSource(spec: { kind: string; path?: string; url?: string }): string {
  return spec.path !== undefined ? `${spec.kind} ${spec.path}` : spec.url !== undefined ? `${spec.kind} ${spec.url}` : spec.kind;
}

/** A page the source could not deliver (after the retries): it was poisoned or zero-filled. */
export class SourceReadError extends Error {
  override name = 'SourceReadError';
  readonly code = 'ERR_UFFD_SOURCE';
  /** Page index in the memory, and its byte offset in the source. */
  readonly page: number;
  readonly offset: number;
  /** describeSource() of the source. */
  readonly source: string;
  /** 'poisoned' (onSourceError 'poison': the toucher gets SIGBUS) or 'zero-filled' (onSourceError 'zero'). */
  readonly outcome: 'poisoned' | 'zero-filled';

  constructor(info: { page: number; offset: number; source: string; outcome: 'poisoned' | 'zero-filled' }, cause: ErrorFields) {
    super(`page ${String(info.page)} (offset ${String(info.offset)}) of ${info.source} ${info.outcome}: the source failed: ${cause.message}`, { cause: Object.assign(new Error(cause.message), cause) });
    this.page = info.page;
    this.offset = info.offset;
    this.source = info.source;
    this.outcome = info.outcome;
  }
}
