// The write-protection guide's example (docs/examples/snapshots.ts) is shown verbatim in
// docs/write-protection.md and runs: a base snapshot through a tracker, an increment, applied.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { needs } from './support/memory-types.js';
import { ROOT } from './support/support.js';

test('docs/write-protection.md shows docs/examples/snapshots.ts verbatim, and it runs', { skip: needs('PAGEFAULT_FLAG_WP') }, () => {
  const guide = readFileSync(join(ROOT, 'docs', 'write-protection.md'), 'utf8');
  const source = readFileSync(join(ROOT, 'docs', 'examples', 'snapshots.ts'), 'utf8');
  assert.ok([...guide.matchAll(/```ts\n([\s\S]*?)```/g)].some((m) => m[1] === source), 'the guide shows the example as it is');
  const dir = mkdtempSync(join(tmpdir(), 'uffd-guide-'));
  const script = join(ROOT, 'dist', 'docs', 'examples', 'snapshots.run.js');
  try {
    writeFileSync(script, readFileSync(join(ROOT, 'dist', 'docs', 'examples', 'snapshots.js'), 'utf8').replaceAll('/data/snapshots', dir));
    const r = spawnSync(process.execPath, [script], { encoding: 'utf8', timeout: 60_000, cwd: ROOT });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(r.stdout.trim().split('\n'), ['16384', '2', 'true']);
  } finally {
    rmSync(script, { force: true });
    rmSync(dir, { recursive: true, force: true });
  }
});
