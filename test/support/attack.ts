// Attacks that may crash the process natively run in a child Node: the test then sees the exit signal
// (SIGSEGV, SIGBUS) as a failure instead of dying with it.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { ROOT } from './support.js';

export const PACKAGE_URL = pathToFileURL(join(ROOT, 'dist', 'src', 'index.js')).href;

export interface AttackResult {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs `body` (an ES module body; `uffd` is the package's namespace) in a child Node with this Node's
 * binary. The child ends within `timeoutMs` or is killed with SIGKILL (a hang shows as that signal).
 */
export function runAttack(body: string, options: { timeoutMs?: number; args?: string[]; env?: NodeJS.ProcessEnv } = {}): AttackResult {
  const script = `import * as uffd from ${JSON.stringify(PACKAGE_URL)};\n${body}`;
  const r = spawnSync(process.execPath, [...(options.args ?? []), '--input-type=module', '-e', script], {
    encoding: 'utf8', timeout: options.timeoutMs ?? 30_000, killSignal: 'SIGKILL', env: options.env ?? process.env,
  });
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

/** The message an assertion prints when a child did not end cleanly. */
export function describeExit(r: AttackResult): string {
  return `status ${String(r.status)}, signal ${String(r.signal)}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`;
}
