// Runs the C fake VMM (test/native/fake-vmm.c) to the end and returns its verdict line: it exits 0 only
// when every page it read back was right. Waits for 'close', not 'exit': 'exit' can come before the
// child's last stdout data, which is the line this returns.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { ROOT } from './support.js';

export const FAKE_VMM = join(ROOT, 'test', 'native', 'bin', 'fake-vmm');

export interface FakeVmmVerdict { touched?: number; mismatches?: number }

export async function runFakeVmm(args: readonly string[]): Promise<FakeVmmVerdict> {
  const child = spawn(FAKE_VMM, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  const [code] = (await once(child, 'close')) as [number | null];
  assert.equal(code, 0, stderr);
  return JSON.parse(stdout.trim().split('\n').at(-1) ?? '{}') as FakeVmmVerdict;
}
