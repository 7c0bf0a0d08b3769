// docs/criu.md's step-by-step script, shown verbatim there, run on a real process with real CRIU: the
// process fills 16 MiB with a known pattern, is moved by the script, and checks every page after the restore.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { findCriu, TARGET } from './support/criu.js';
import { CLI, ROOT } from './support/support.js';

const SCRIPT = join(ROOT, 'docs', 'examples', 'criu-lazy-restore.sh');
const found = findCriu();

async function waitFor(path: string, ms: number): Promise<void> {
  const until = Date.now() + ms;
  while (!existsSync(path)) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${path}`);
    await sleep(10);
  }
}

test('docs/criu.md shows docs/examples/criu-lazy-restore.sh verbatim', () => {
  assert.ok(readFileSync(join(ROOT, 'docs', 'criu.md'), 'utf8').includes(`\`\`\`sh\n${readFileSync(SCRIPT, 'utf8')}\`\`\``));
});

test('the guide\'s script moves a process through dump and lazy restore; its memory is intact', { skip: typeof found === 'string' ? found : false }, async () => {
  if (typeof found === 'string') return;
  const dir = mkdtempSync(join(tmpdir(), 'uffd-criu-guide-'));
  const bin = join(dir, 'bin');
  const images = join(dir, 'images');
  mkdirSync(bin);
  mkdirSync(images);
  symlinkSync(found.path, join(bin, 'criu'));
  writeFileSync(join(bin, 'uffd'), `#!/bin/sh\nexec "${process.execPath}" "${CLI}" "$@"\n`);
  chmodSync(join(bin, 'uffd'), 0o755);
  const target = spawn(TARGET, [images, 'plain', '16'], { detached: true, stdio: 'ignore' });
  await waitFor(join(images, 'ready'), 30_000);
  rmSync(join(images, 'ready'));
  // Asynchronously: this process must reap the dumped target (its child) while the script waits for its pid.
  const script = spawn('sh', [SCRIPT, String(target.pid), images], { env: { ...process.env, PATH: `${bin}:${process.env.PATH ?? ''}` }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  script.stdout.on('data', (b: Buffer) => { out += b.toString(); });
  script.stderr.on('data', (b: Buffer) => { out += b.toString(); });
  assert.equal(await new Promise((resolve) => script.on('exit', resolve)), 0, out);
  assert.match(out, /done: every process is complete or has exited/);
  writeFileSync(join(images, 'go'), '1\n');
  await waitFor(join(images, 'result-root'), 30_000);
  assert.equal(readFileSync(join(images, 'result-root'), 'utf8').trim(), 'ok');
  rmSync(dir, { recursive: true, force: true });
});
