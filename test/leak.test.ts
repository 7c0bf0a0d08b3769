// Descriptors, threads and RSS stay flat over many LazyMemory open/close cycles and page-server sessions: a
// leak of one descriptor, one thread or one worker per cycle shows here. Each count runs in its own child
// (started with --expose-gc, so RSS is measured after a collection).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { probe } from '../src/index.js';
import { ROOT } from './support/support.js';

const CYCLES = fileURLToPath(new URL('./fixtures/leak-cycles.js', import.meta.url));
const FAKE_VMM = join(ROOT, 'test', 'native', 'bin', 'fake-vmm');
/**
 * RSS grows while the allocator's arenas and V8's heap find their size, then settles: measured +33 MiB over
 * the first ~100 sessions, +2 MiB over the next 200; under a loaded machine LazyMemory cycles kept growing by
 * ~6 MiB per 170 cycles in the middle third. So RSS is judged over the last third only, against this slack: a
 * leaked worker (megabytes) or mapping (64 KiB) per cycle is well above it.
 */
const RSS_SLACK_KIB = 12 * 1024;

interface Sample { fds: number; threads: number; rssKiB: number }

interface Result { warm: Sample; settled: Sample; end: Sample }

function run(kind: 'lazy' | 'server', cycles: number): Result {
  const r = spawnSync(process.execPath, ['--expose-gc', CYCLES, kind, String(cycles), FAKE_VMM], { encoding: 'utf8', timeout: 600_000, killSignal: 'SIGKILL' });
  assert.equal(r.signal, null, r.stderr);
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as Result;
}

function assertFlat(result: Result): void {
  const { warm, settled, end } = result;
  const text = JSON.stringify(result);
  assert.equal(end.fds, warm.fds, `descriptors: ${text}`);
  assert.equal(end.threads, warm.threads, `threads: ${text}`);
  assert.ok(end.rssKiB - settled.rssKiB <= RSS_SLACK_KIB, `RSS grew by ${String(end.rssKiB - settled.rssKiB)} KiB over the last third: ${text}`);
}

const skip = probe().available ? false : 'no userfaultfd here';

test('500 LazyMemory open/touch/close cycles leave descriptors, threads and RSS flat', { skip }, () => {
  assertFlat(run('lazy', 500));
});

test('200 page-server sessions (a fake VMM each) leave descriptors, threads and RSS flat', { skip: skip || (existsSync(FAKE_VMM) ? false : `${FAKE_VMM} is not built (npm run build:helpers)`) }, () => {
  assertFlat(run('server', 200));
});
