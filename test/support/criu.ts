// Real CRIU for the lazy-restore tests: where the binary is (scripts/install-criu.sh builds it into
// /var/cache/uffd-criu), whether this kernel can restore lazily, and the dump / daemon / restore steps.
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Readable } from 'node:stream';
import { CLI, ROOT } from './support.js';

export const TARGET = join(ROOT, 'test', 'native', 'bin', 'criu-target');
const CACHED = '/var/cache/uffd-criu/4.1.1/criu';

export interface Criu { path: string; version: string }

/** CRIU >= 4.1 with uffd-noncoop on this kernel, or why not (the reason the tests print when they skip). */
export function findCriu(): Criu | string {
  const candidates = [process.env.UFFD_CRIU, CACHED, 'criu'].filter((c): c is string => c !== undefined && c.length > 0);
  for (const path of candidates) {
    const v = spawnSync(path, ['--version'], { encoding: 'utf8' });
    if (v.error !== undefined || v.status !== 0) continue;
    const version = /Version: (\d+)\.(\d+)(?:\.(\d+))?/.exec(v.stdout);
    if (version === null || Number(version[1]) * 100 + Number(version[2]) < 401) continue;
    const check = spawnSync(path, ['check', '--feature', 'uffd-noncoop'], { encoding: 'utf8' });
    if (check.status !== 0) return `CRIU ${version[0].slice(9)} says this kernel lacks uffd-noncoop: ${(check.stdout + check.stderr).trim().split('\n').pop() ?? ''}`;
    return { path, version: version[0].slice(9) };
  }
  return `no CRIU >= 4.1 here (Debian 12's 3.17 cannot run on kernels >= 6.13): run scripts/install-criu.sh, as .ci/run does`;
}

export interface Dump { dir: string; mode: string; results: string[] }

const RESULTS: Record<string, string[]> = {
  fork: ['child0', 'child0-fork', 'child1', 'child1-fork', 'root', 'root-fork'],
};

async function waitFor(what: string, ok: () => boolean, ms: number): Promise<void> {
  const until = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

function run(cmd: string, args: string[], cwd: string): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd, stdio: 'ignore' });
    child.on('error', reject);
    child.on('exit', (code, signal) => { resolve({ code, signal }); });
  });
}

/** Starts the test program, lets it fill its memory, and dumps it (which kills it). */
export async function dumpTarget(criu: Criu, mode: string, mib: number): Promise<Dump> {
  const dir = mkdtempSync(join(tmpdir(), `uffd-criu-${mode}-`));
  // Its own session and no terminal: criu would need --shell-job otherwise.
  const child = spawn(TARGET, [dir, mode, String(mib)], { detached: true, stdio: 'ignore' });
  const exited = new Promise((resolve) => child.on('exit', resolve));
  const ready = mode === 'fork' ? ['ready', 'ready-child0', 'ready-child1'] : ['ready'];
  await waitFor(`${mode} to fill its memory`, () => ready.every((f) => existsSync(join(dir, f))), 60_000);
  const dumped = await run(criu.path, ['dump', '-t', String(child.pid), '-D', dir, '-o', 'dump.log'], dir);
  if (dumped.code !== 0) throw new Error(`criu dump failed (${String(dumped.code)}): ${tail(join(dir, 'dump.log'))}`);
  await exited;
  for (const f of ready) rmSync(join(dir, f));
  return { dir, mode, results: RESULTS[mode] ?? ['root'] };
}

export interface Daemon {
  child: ChildProcess;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stderr: () => string;
}

/** Starts `uffd criu-lazy-pages` or `criu lazy-pages` on the dump and waits for its status byte. */
export async function startDaemon(criu: Criu, dump: Dump, which: 'uffd' | 'criu', extra: string[] = []): Promise<Daemon> {
  const args = ['-D', dump.dir, '-o', 'lazy.log', '--status-fd', '3', ...extra];
  const child = which === 'uffd'
    ? spawn(process.execPath, [CLI, 'criu-lazy-pages', ...args], { stdio: ['ignore', 'ignore', 'pipe', 'pipe'] })
    : spawn(criu.path, ['lazy-pages', ...args], { cwd: dump.dir, stdio: ['ignore', 'ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => { stderr += d.toString(); });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => { resolve({ code, signal }); }));
  const status = child.stdio[3] as Readable;
  const byte = await new Promise<number | undefined>((resolve) => {
    status.once('data', (d: Buffer) => { resolve(d[0]); });
    status.once('end', () => { resolve(undefined); });
  });
  status.destroy();
  if (byte !== 0) throw new Error(`${which} lazy-pages did not report readiness (${String(byte)}): ${stderr}`);
  return { child, exited, stderr: () => stderr };
}

export interface Restore { criu: { code: number | null; signal: NodeJS.Signals | null }; results: Map<string, string>; log: string }

/** `criu restore --lazy-pages` against a running daemon; the results the restored processes wrote. */
export async function restore(criu: Criu, dump: Dump, daemon: Daemon, onFinished?: () => void): Promise<Restore & { daemon: { code: number | null; signal: NodeJS.Signals | null } }> {
  writeFileSync(join(dump.dir, 'go'), '1\n');
  // In a pid namespace of its own: the restored processes get their old pids there, whatever has taken
  // them on the host meanwhile (pid_max is small here, and eight test suites run at once).
  const restored = run('unshare', ['-p', '-f', '--mount-proc', criu.path, 'restore', '-D', dump.dir, '--lazy-pages', '-o', 'restore.log'], dump.dir);
  if (onFinished !== undefined) {
    await waitFor('the restore to finish', () => readLog(dump).includes('restore finished'), 60_000).catch(() => undefined);
    onFinished();
  }
  const criuExit = await restored;
  // The daemon must end by itself once the restored processes are gone; a daemon still running 30 s after
  // criu restore returned is killed, and the test fails on its exit status (never a hung suite).
  const watchdog = setTimeout(() => { daemon.child.kill('SIGKILL'); }, 30_000);
  const daemonExit = await daemon.exited;
  clearTimeout(watchdog);
  const results = new Map<string, string>();
  for (const f of readdirSync(dump.dir)) {
    const m = /^result-(.+)$/.exec(f);
    if (m?.[1] !== undefined) results.set(m[1], readFileSync(join(dump.dir, f), 'utf8').trim());
  }
  const log = readLog(dump);
  for (const f of readdirSync(dump.dir)) if (f.startsWith('result-') || f === 'go') rmSync(join(dump.dir, f));
  return { criu: criuExit, daemon: daemonExit, results, log };
}

function readLog(dump: Dump): string {
  try {
    return readFileSync(join(dump.dir, 'lazy.log'), 'utf8');
  } catch {
    return '';
  }
}

export function tail(file: string, lines = 8): string {
  try {
    return readFileSync(file, 'utf8').split('\n').filter((l) => !l.includes('RLIMIT_NOFILE')).slice(-lines).join(' | ');
  } catch {
    return `(no ${file})`;
  }
}
