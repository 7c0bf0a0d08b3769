// `uffd criu-lazy-pages`: a drop-in for `criu lazy-pages`. Takes criu's options (--images-dir, --work-dir,
// --log-file relative to the work dir, -v/--verbosity, --status-fd, --daemon, --pidfile,
// --no-default-config, each as `--opt value` or `--opt=value`), chdirs to the work dir, listens on the
// relative socket `lazy-pages.socket`, writes one NUL byte to the status fd once listening, serves the one
// restore, and exits 0 when every restored process is complete or gone, 1 when the restore failed or on
// SIGTERM/SIGINT.
import { spawn } from 'node:child_process';
import { closeSync, openSync, writeFileSync, writeSync } from 'node:fs';
import { resolve } from 'node:path';
import { CriuLazyPagesDaemon } from '../server/criu/lazy-pages-daemon.js';
import type { Command } from './command.js';
import { UsageError } from './failure.js';

const USAGE = `usage: uffd criu-lazy-pages -D|--images-dir DIR [-W|--work-dir DIR] [-o|--log-file FILE] [-v[N]|--verbosity=N]
        [--status-fd FD] [-d|--daemon] [--pidfile FILE] [--no-prefetch] [--readahead PAGES]
        [--record FILE] [--prefetch FILE]
      the lazy-pages daemon of \`criu restore --lazy-pages\` (a drop-in for \`criu lazy-pages\`): listens on
      lazy-pages.socket in the work dir (default: the images dir), serves each restored process's memory
      from the images on demand and, after the restore, prefetches the rest (--no-prefetch: demand only,
      until every process has exited). --record writes each process's pages in first-fault order when the
      daemon ends; --prefetch fills the pages such a file lists first, as soon as each process's uffd arrives.
`;

interface Parsed {
  imagesDir?: string;
  workDir?: string;
  logFile?: string;
  verbosity: number;
  statusFd?: number;
  daemon: boolean;
  pidfile?: string;
  prefetch: boolean;
  readahead?: number;
  record?: string;
  workingSet?: string;
  help: boolean;
}

const WITH_VALUE: Record<string, keyof Parsed> = {
  '-D': 'imagesDir', '--images-dir': 'imagesDir', '-W': 'workDir', '--work-dir': 'workDir', '-o': 'logFile', '--log-file': 'logFile',
  '--status-fd': 'statusFd', '--pidfile': 'pidfile', '--verbosity': 'verbosity', '--readahead': 'readahead',
  '--record': 'record', '--prefetch': 'workingSet',
};
const FLAGS: Record<string, (p: Parsed) => void> = {
  '-d': (p) => { p.daemon = true; }, '--daemon': (p) => { p.daemon = true; },
  '--no-prefetch': (p) => { p.prefetch = false; }, '--no-default-config': () => undefined,
  '-h': (p) => { p.help = true; }, '--help': (p) => { p.help = true; },
};

/** criu's own option syntax: `--opt value`, `--opt=value`, `-D value`, `-Dvalue`, `-v`, `-v4`, `-vvv`. */
export function parseCriuLazyPagesArgs(args: string[]): Parsed {
  const p: Parsed = { verbosity: 2, daemon: false, prefetch: true, help: false };
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] ?? '';
    const flag = FLAGS[arg];
    if (flag !== undefined) {
      flag(p);
      continue;
    }
    if (/^-v+$/.test(arg)) {
      p.verbosity = arg === '-v' ? 4 : 2 + arg.length - 1;
      continue;
    }
    if (/^-v\d+$/.test(arg)) {
      p.verbosity = Number(arg.slice(2));
      continue;
    }
    const eq = arg.startsWith('--') ? arg.indexOf('=') : -1;
    const name = eq > 0 ? arg.slice(0, eq) : arg.startsWith('--') ? arg : arg.slice(0, 2);
    const key = WITH_VALUE[name];
    if (key === undefined) throw new UsageError(`unknown option ${JSON.stringify(arg)}`);
    let value: string | undefined;
    if (eq > 0) value = arg.slice(eq + 1);
    else if (!arg.startsWith('--') && arg.length > 2) value = arg.slice(2);
    else value = args[++i];
    if (value === undefined || value.length === 0) throw new UsageError(`${name} needs a value`);
    if (key === 'statusFd' || key === 'verbosity' || key === 'readahead') {
      const n = Number(value);
      if (!Number.isSafeInteger(n) || n < 0) throw new UsageError(`${name} must be a whole number, got ${JSON.stringify(value)}`);
      p[key] = n;
    } else {
      p[key as 'imagesDir' | 'workDir' | 'logFile' | 'pidfile' | 'record' | 'workingSet'] = value;
    }
  }
  return p;
}

export const criuLazyPagesCommand: Command = {
  summary: 'the lazy-pages daemon of `criu restore --lazy-pages` (a drop-in for `criu lazy-pages`)',
  usage: USAGE,
  run: runCriuLazyPages,
};

async function runCriuLazyPages(args: string[]): Promise<number> {
  const p = parseCriuLazyPagesArgs(args);
  if (p.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (p.imagesDir === undefined) throw new UsageError('--images-dir (-D) is required');
  if (p.daemon) return daemonize(args, p);
  // Relative to the caller's directory: resolved before moving to the work dir.
  const imagesDir = resolve(p.imagesDir);
  const workDir = resolve(p.workDir ?? imagesDir);
  const record = p.record === undefined ? undefined : resolve(p.record);
  const workingSet = p.workingSet === undefined ? undefined : resolve(p.workingSet);
  let logFd = 2;
  try {
    process.chdir(workDir);
    if (p.logFile !== undefined && p.logFile !== '-') logFd = openSync(p.logFile, 'w');
  } catch (err) {
    process.stderr.write(`uffd criu-lazy-pages: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  }
  const started = performance.now();
  const log = (line: string): void => {
    if (p.verbosity === 0 && !line.startsWith('error')) return;
    writeSync(logFd, `(${((performance.now() - started) / 1000).toFixed(6).padStart(12)}) ${line}\n`);
  };
  let daemon: CriuLazyPagesDaemon;
  try {
    daemon = CriuLazyPagesDaemon.listen({
      imagesDir, socket: 'lazy-pages.socket', prefetch: p.prefetch, log,
      ...(p.readahead === undefined ? {} : { readahead: p.readahead }),
      ...(record === undefined ? {} : { record }),
      ...(workingSet === undefined ? {} : { workingSet }),
    });
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    log(`error: ${message}`);
    if (logFd !== 2) process.stderr.write(`uffd criu-lazy-pages: ${message}\n`);
    if (p.statusFd !== undefined) closeQuietly(p.statusFd); // EOF without the byte: the starter sees a failure
    return 1;
  }
  log(`listening on ${workDir}/lazy-pages.socket, images in ${imagesDir}`);
  if (p.statusFd !== undefined) {
    try {
      writeSync(p.statusFd, Uint8Array.of(0));
    } finally {
      closeQuietly(p.statusFd);
    }
  }
  const stop = (signal: string): void => { daemon.close(`terminated by ${signal}`); };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  const result = await daemon.done;
  process.off('SIGTERM', stop);
  process.off('SIGINT', stop);
  if (logFd !== 2) closeSync(logFd);
  return result.code;
}

/**
 * --daemon: the same command again, detached, its readiness read from a pipe; exits 0 once the daemon
 * listens (after writing --pidfile and the caller's own status byte), 1 if it failed to start.
 */
async function daemonize(args: string[], p: Parsed): Promise<number> {
  // The same options, without those the starter keeps to itself (each `--opt value` or `--opt=value`).
  const rest: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] ?? '';
    if (arg === '-d' || arg === '--daemon' || arg.startsWith('--status-fd=') || arg.startsWith('--pidfile=')) continue;
    if (arg === '--status-fd' || arg === '--pidfile') {
      i++;
      continue;
    }
    rest.push(arg);
  }
  const argv1 = process.argv[1] ?? '';
  const child = spawn(process.execPath, [argv1, 'criu-lazy-pages', ...rest, '--status-fd', '3'], { detached: true, stdio: ['ignore', 'ignore', 'inherit', 'pipe'] });
  const pipe = child.stdio[3];
  const ready = await new Promise<boolean>((resolveReady) => {
    if (pipe === null || pipe === undefined) { resolveReady(false); return; }
    let got = false;
    pipe.on('data', (chunk: Buffer) => { if (!got) { got = true; resolveReady(chunk[0] === 0); } });
    pipe.on('close', () => { if (!got) resolveReady(false); });
    child.on('error', () => { resolveReady(false); });
  });
  pipe?.destroy();
  if (!ready || child.pid === undefined) return 1;
  if (p.pidfile !== undefined) writeFileSync(p.pidfile, `${String(child.pid)}\n`);
  if (p.statusFd !== undefined) {
    writeSync(p.statusFd, Uint8Array.of(0));
    closeQuietly(p.statusFd);
  }
  child.unref();
  return 0;
}

function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // already closed
  }
}
