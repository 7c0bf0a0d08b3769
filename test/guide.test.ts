// docs/guide.md shows its examples (files in docs/examples) verbatim; the man-page program runs here and
// prints what the man page's does: each page's first read waits for the handler, which fills it with the
// next letter.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from './support/support.js';

const guide = readFileSync(join(ROOT, 'docs', 'guide.md'), 'utf8');
const blocks = [...guide.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]);

test('docs/guide.md shows every example it uses verbatim', () => {
  for (const name of ['threading', 'manpage', 'lazy-file']) {
    assert.ok(blocks.includes(readFileSync(join(ROOT, 'docs', 'examples', `${name}.ts`), 'utf8')), `${name}.ts is in the guide as it is`);
  }
  assert.equal(blocks.length, 3, 'every ts block of the guide is an example file (so every one is run)');
});

test('the userfaultfd(2) man page program, in TypeScript: letters per fault, one fault per page', () => {
  const r = spawnSync(process.execPath, [join(ROOT, 'dist', 'docs', 'examples', 'manpage.js'), '3'], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.status, 0, r.stderr);
  const reads = [...r.stdout.matchAll(/^Read address 0x[0-9a-f]+ in main\(\): (.)$/gm)].map((m) => m[1]);
  assert.deepEqual(reads, ['A', 'A', 'A', 'A', 'B', 'B', 'B', 'B', 'C', 'C', 'C', 'C']);
  assert.equal(r.stdout.match(/UFFD_EVENT_PAGEFAULT event: write = false/g)?.length, 3);
  assert.equal(r.stdout.match(/\(uffdio_copy\.copy returned 4096\)/g)?.length, 3);
});
