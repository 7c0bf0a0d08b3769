// Errors in the style of Node core's SystemError: `code`, a negative `errno`, `syscall`, and a message
// like `EEXIST: file already exists, ioctl(UFFDIO_COPY)`.
import { getSystemErrorMap } from 'node:util';
import { constants, release } from 'node:os';
import type { FeatureName } from './abi.js';
import { FEATURES } from './abi.js';

const systemErrors = getSystemErrorMap();
const errnoNames = new Map<number, string>(
  Object.entries(constants.errno).map(([name, value]) => [value, name]),
);

/** The errno name for a positive or negative errno ('EEXIST'), `E<n>` when nothing knows it. */
export function errnoName(errno: number): string {
  const n = Math.abs(errno);
  return systemErrors.get(-n)?.[0] ?? errnoNames.get(n) ?? (n === 133 ? 'EHWPOISON' : `E${String(n)}`);
}

function errnoText(errno: number): string {
  const n = Math.abs(errno);
  return systemErrors.get(-n)?.[1] ?? (n === 133 ? 'memory page has hardware error' : 'unknown error');
}

export class UffdError extends Error {
  override name = 'UffdError';
  /** 'EEXIST' */
  readonly code: string;
  /** Negative, as in Node core's errors: -17 */
  readonly errno: number;
  /** 'ioctl(UFFDIO_COPY)' */
  readonly syscall: string;
  /** Bytes the operation had resolved before it failed (resolve ioctls only). */
  declare readonly bytes?: number;

  constructor(errno: number, syscall: string, options?: { bytes?: number; hint?: string }) {
    const n = -Math.abs(errno);
    const code = errnoName(n);
    const hint = options?.hint === undefined ? '' : ` (${options.hint})`;
    super(`${code}: ${errnoText(n)}, ${syscall}${hint}`);
    this.code = code;
    this.errno = n;
    this.syscall = syscall;
    if (options?.bytes !== undefined) this.bytes = options.bytes;
  }
}

/** The negative errnos the library raises or compares native results with (from Node's table of this OS). */
export const ERRNO = Object.freeze({
  EBADF: -constants.errno.EBADF,
  EAGAIN: -constants.errno.EAGAIN,
  EINVAL: -constants.errno.EINVAL,
  // EOPNOTSUPP on Linux (95): ENOTSUP is the name Node and UffdError.code give it.
  ENOTSUP: -constants.errno.ENOTSUP,
  ENOBUFS: -constants.errno.ENOBUFS,
});

/** A native call's result for "try again" (-EAGAIN: nothing pending, or an unread uffd event). */
export const EAGAIN = ERRNO.EAGAIN;

/** EEXIST from a resolve ioctl: the page is already there (a race, a duplicate message). */
export function isEexist(err: unknown): err is UffdError {
  return err instanceof UffdError && err.code === 'EEXIST';
}

/** EAGAIN from a resolve ioctl: an event (a REMOVE, a fork) is unread; read the events, then retry. */
export function isEagain(err: unknown): err is UffdError {
  return err instanceof UffdError && err.code === 'EAGAIN';
}

/** What a caught value says, for a log line or a refusal: an Error's message, anything else as a string. */
export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * The `code` of every error the library raises itself (an error from the kernel carries its errno name,
 * 'EEXIST', instead). One table, so a code means one thing everywhere; test/errors.test.ts checks that src/
 * uses no other ERR_UFFD_ code.
 */
export const ERROR_CODES = Object.freeze({
  /** A Userfaultfd, Mapping or Unix socket was used after close(). A TypeError. */
  ERR_UFFD_CLOSED: 'used after close()',
  /** A second events() iterator was started while one runs on the same uffd (one poll handle per fd). */
  ERR_UFFD_EVENTS_ACTIVE: 'events() is already running on this userfaultfd',
  /** A feature the caller required is not offered by this kernel: UnsupportedFeatureError, with .missing. */
  ERR_UFFD_UNSUPPORTED_FEATURE: 'a required userfaultfd feature is not available',
  /** A page server client's handshake was refused: HandshakeError, with .reason. */
  ERR_UFFD_HANDSHAKE: 'the handshake was refused',
  /**
   * A page source failed: LazyMemory's 'error' event for a page it zero-filled (with .page), or a source
   * that could not be opened by the resolver worker.
   */
  ERR_UFFD_SOURCE: 'the page source failed',
  /** A remote (HTTP, object store) source failed: RemoteSourceError, with .url, .status and .retryable. */
  ERR_UFFD_REMOTE: 'the remote source failed',
  /** A file source is empty (0 bytes): SourceOpenError, at open. */
  ERR_UFFD_SOURCE_EMPTY: 'the source file is empty',
  /** A file source is not a regular file (a directory, a device): SourceOpenError, at open. */
  ERR_UFFD_SOURCE_NOT_FILE: 'the source is not a regular file',
  /** LazyMemory's resolver failed and stopped (fail-stop): an 'error' event; later faults get SIGBUS or wait. */
  ERR_UFFD_RESOLVER: 'the fault resolver failed',
  /** transfer() of an ArrayBuffer that is a Mapping's memory (it cannot move; copy it with slice()). A TypeError. */
  ERR_UFFD_UNTRANSFERABLE: 'mapped memory cannot be transferred',
  /** A file is not an incremental snapshot (no trailer, a bad index): reading a delta file refused it. */
  ERR_UFFD_DELTA: 'not an incremental snapshot file',
  /** A working-set record cannot be used (cut short, an old format, another snapshot's): WorkingSetError. */
  ERR_UFFD_WORKING_SET: 'the working-set record is not usable',
  /** A live snapshot failed (its copy thread reported the reason). */
  ERR_UFFD_SNAPSHOT: 'the snapshot failed',
  /** Snapshot.start() on memory that already has a snapshot running. */
  ERR_UFFD_SNAPSHOT_ACTIVE: 'a snapshot of this memory is already running',
  /** CRIU's images for a lazy restore are missing or malformed: CriuImageError, with .reason. */
  ERR_UFFD_CRIU_IMAGE: 'the CRIU images cannot be used',
  /** A CRIU restore peer broke the lazy-pages protocol: CriuProtocolError, with .reason. */
  ERR_UFFD_CRIU_PROTOCOL: 'the CRIU lazy-pages protocol was broken',
  /** The native binding was called wrongly, or Node-API failed inside it (a bug, or out of memory). */
  ERR_UFFD_BINDING: 'the native binding failed',
  /** The `uffd` command failed for a reason it explains (its JSON failure report, exit code 1). */
  ERR_UFFD_FAILED: 'the command failed',
  /** The `uffd` command met an error it does not know (a bug; exit code 70). */
  ERR_UFFD_INTERNAL: 'internal error in the command',
} as const);

export type ErrorCode = keyof typeof ERROR_CODES;

/** `error` with its `code` set from the table (and any other fields, e.g. `page`). */
export function withCode<E extends Error, X extends object>(error: E, code: ErrorCode, extra?: X): E & { code: ErrorCode } & X {
  return Object.assign(error, extra, { code });
}

/** Throws a UffdError when a native call returned a negative errno; passes other results through. */
export function check(result: number, syscall: string): number {
  if (result < 0) throw new UffdError(result, syscall);
  return result;
}

export class UnsupportedFeatureError extends Error {
  override name = 'UnsupportedFeatureError';
  readonly code = 'ERR_UFFD_UNSUPPORTED_FEATURE' satisfies ErrorCode;
  readonly missing: FeatureName[];
  /** 'kernel': this kernel does not offer them; 'privilege': it does, but this process may not enable them. */
  readonly reason: 'kernel' | 'privilege';

  constructor(missing: FeatureName[], why?: string, reason: 'kernel' | 'privilege' = 'kernel') {
    const s = missing.length > 1 ? 's' : '';
    if (reason === 'privilege') {
      super(`userfaultfd feature${s} ${missing.join(', ')} offered by this kernel but refused to this process (EPERM)${why === undefined ? '' : `: ${why}`}`);
    } else {
      const described = missing.map((name) => {
        const info = FEATURES.find((f) => f.name === name);
        return info === undefined ? name : `${name} (Linux ${info.since})`;
      });
      super(`userfaultfd feature${s} not available on this kernel (Linux ${release()}): ${described.join(', ')}${why === undefined ? '' : `; ${why}`}`);
    }
    this.missing = missing;
    this.reason = reason;
  }
}
