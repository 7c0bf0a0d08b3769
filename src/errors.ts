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

/** A native call's result for "try again" (-EAGAIN: nothing pending, or an unread uffd event). */
export const EAGAIN = -11;

/** EEXIST from a resolve ioctl: the page is already there (a race, a duplicate message). */
export function isEexist(err: unknown): err is UffdError {
  return err instanceof UffdError && err.code === 'EEXIST';
}

/** Throws a UffdError when a native call returned a negative errno; passes other results through. */
export function check(result: number, syscall: string): number {
  if (result < 0) throw new UffdError(result, syscall);
  return result;
}

export class UnsupportedFeatureError extends Error {
  override name = 'UnsupportedFeatureError';
  readonly code = 'ERR_UFFD_UNSUPPORTED_FEATURE';
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
