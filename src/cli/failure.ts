// How the `uffd` command reports a failure: one line saying what went wrong and what to do about it, never a
// stack trace unless --debug. The exit code says which kind of failure it was (see EXIT).
import { dirname } from 'node:path';
import { UffdError, UnsupportedFeatureError } from '../errors.js';

/** The exit codes of every `uffd` subcommand (documented in `uffd --help` and the README). */
export const EXIT = {
  /** The command did its job. */
  ok: 0,
  /** An operational failure: the machine, a file, a socket, a privilege or the kernel said no. */
  failed: 1,
  /** A usage error: unknown command or option, a bad option value. */
  usage: 2,
  /** A bug in uffd itself (an unexpected exception): re-run with --debug and report it. */
  internal: 70,
} as const;

/** A wrong command line; the message names the bad value. */
export class UsageError extends Error {
  override name = 'UsageError';
}

/** An operational failure the command itself recognised, with the remedy to print. */
export class CommandError extends Error {
  override name = 'CommandError';
  readonly remedy: string | undefined;
  readonly code: string | undefined;

  constructor(message: string, options?: { remedy?: string; code?: string; cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.remedy = options?.remedy;
    this.code = options?.code;
  }
}

export interface Failure {
  exitCode: number;
  code: string;
  message: string;
  remedy?: string;
}

/** Which option a path came from, so a failure can say which option to fix. */
export type PathOrigins = ReadonlyMap<string, string>;

interface SystemErrorLike { code: string; syscall?: string; path?: string; message: string }

function isSystemError(err: unknown): err is SystemErrorLike {
  return err instanceof Error && typeof (err as { code?: unknown }).code === 'string' && /^E[A-Z0-9]+$/.test((err as unknown as { code: string }).code);
}

/** listen(/a/b) -> /a/b: the path a UffdError's syscall names, if any. */
function pathOfSyscall(syscall: string | undefined): string | undefined {
  const m = /^[a-z]+\((\/.*)\)$/.exec(syscall ?? '');
  return m?.[1];
}

function remedyFor(code: string, syscall: string, path: string | undefined, origins: PathOrigins): string | undefined {
  const option = path === undefined ? undefined : origins.get(path);
  const which = option === undefined ? 'another path' : `another ${option}`;
  if (syscall.startsWith('listen') || syscall.startsWith('bind')) {
    switch (code) {
      case 'ENOENT': return `the directory ${dirname(path ?? '.')} does not exist: create it (mkdir -p) or choose ${which}`;
      case 'EADDRINUSE': return `a server is already listening there (or a file that is not a socket is in the way): stop it, remove the file, or choose ${which}`;
      case 'EACCES': return `no permission to create a socket in ${dirname(path ?? '.')}: run as a user who may, or choose ${which}`;
      case 'ENAMETOOLONG': case 'EINVAL': return `a Unix socket path is limited to 107 bytes: choose a shorter ${option ?? 'path'}`;
      default: return undefined;
    }
  }
  switch (code) {
    case 'ENOENT': return `check the path${option === undefined ? '' : ` given to ${option}`}`;
    case 'EISDIR': return `${option ?? 'it'} needs a file, not a directory`;
    case 'ENOTDIR': return `a component of the path is not a directory: check the path${option === undefined ? '' : ` given to ${option}`}`;
    case 'EACCES': return 'no permission: run as a user who may read it, or change its mode';
    case 'EPERM':
      return 'userfaultfd needs a privilege here: run as root (CAP_SYS_PTRACE), set `sysctl vm.unprivileged_userfaultfd=1`, '
        + 'or give this user read-write access to /dev/userfaultfd; `uffd probe` shows which paths are open';
    case 'ENOMEM': return 'not enough memory (or huge pages: see vm.nr_hugepages) for the mapping';
    case 'EMFILE': case 'ENFILE': return 'too many open files: raise the limit (ulimit -n)';
    default: return undefined;
  }
}

/** Turns any exception a subcommand threw into what the user reads and the exit code. */
export function describeFailure(err: unknown, origins: PathOrigins = new Map()): Failure {
  // RangeError: a value from the command line that the library refused, with the value in the message.
  if (err instanceof UsageError || err instanceof RangeError) return { exitCode: EXIT.usage, code: 'ERR_USAGE', message: err.message };
  if (err instanceof TypeError && String((err as { code?: unknown }).code).startsWith('ERR_PARSE_ARGS')) {
    return { exitCode: EXIT.usage, code: 'ERR_USAGE', message: err.message };
  }
  if (err instanceof CommandError) {
    return { exitCode: EXIT.failed, code: err.code ?? 'ERR_UFFD_FAILED', message: err.message, ...(err.remedy === undefined ? {} : { remedy: err.remedy }) };
  }
  if (err instanceof UnsupportedFeatureError) {
    return { exitCode: EXIT.failed, code: err.code, message: err.message, remedy: '`uffd probe` lists what this kernel offers' };
  }
  if (err instanceof UffdError || isSystemError(err)) {
    const syscall = err.syscall ?? '';
    const path = (err as { path?: string }).path ?? pathOfSyscall(syscall);
    const remedy = remedyFor(err.code, syscall, path, origins);
    return { exitCode: EXIT.failed, code: err.code, message: err.message, ...(remedy === undefined ? {} : { remedy }) };
  }
  // Errors the library documents as operational (a source that cannot be opened, a resolver that died) carry
  // an ERR_UFFD_* code; their message already says what happened.
  const code = (err as { code?: unknown } | undefined)?.code;
  if (err instanceof Error && typeof code === 'string' && code.startsWith('ERR_UFFD')) {
    const cause = (err as { cause?: unknown }).cause;
    const inner = cause === undefined ? undefined : describeFailure(cause, origins);
    return { exitCode: EXIT.failed, code, message: err.message, ...(inner?.remedy === undefined ? {} : { remedy: inner.remedy }) };
  }
  const message = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
  return { exitCode: EXIT.internal, code: 'ERR_UFFD_INTERNAL', message, remedy: 'this is a bug in uffd: re-run with --debug and report the stack trace' };
}

/** Writes the failure to stderr (one line, or one JSON object with --json) and returns the exit code. */
export function reportFailure(err: unknown, options: { command: string; json: boolean; debug: boolean; origins?: PathOrigins }): number {
  const failure = describeFailure(err, options.origins);
  if (options.json) {
    process.stderr.write(`${JSON.stringify({ error: { command: options.command, ...failure } })}\n`);
  } else {
    const remedy = failure.exitCode === EXIT.usage ? `see \`${options.command} --help\`` : failure.remedy;
    process.stderr.write(`${options.command}: ${failure.message}${remedy === undefined ? '' : `; ${remedy}`}\n`);
  }
  if (options.debug && err instanceof Error) process.stderr.write(`${err.stack ?? String(err)}\n`);
  return failure.exitCode;
}
