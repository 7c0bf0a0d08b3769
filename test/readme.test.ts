// The README's examples are files in docs/examples, compiled with the project and run here: the README
// shows them verbatim, so an example that stops working fails this test.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT } from './support/support.js';

const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
const blocks = [...readme.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]);

for (const name of ['quickstart', 'lazy-file', 'threading']) {
  test(`README example docs/examples/${name}.ts is shown verbatim and runs`, () => {
    const source = readFileSync(join(ROOT, 'docs', 'examples', `${name}.ts`), 'utf8');
    assert.ok(blocks.includes(source), `README.md shows docs/examples/${name}.ts as it is`);
    const dir = mkdtempSync(join(tmpdir(), 'uffd-readme-'));
    try {
      // The compiled example, with the placeholder data file replaced by a real one.
      const data = join(dir, 'model.bin');
      writeFileSync(data, Buffer.alloc(128 << 20, 0x2a));
      const compiled = readFileSync(join(ROOT, 'dist', 'docs', 'examples', `${name}.js`), 'utf8').replace('/data/model.bin', data);
      const script = join(ROOT, 'dist', 'docs', 'examples', `${name}.run.js`);
      writeFileSync(script, compiled);
      const r = spawnSync(process.execPath, [script], { encoding: 'utf8', timeout: 30_000, cwd: ROOT });
      rmSync(script);
      assert.equal(r.status, 0, r.stderr);
      if (name === 'lazy-file') assert.match(r.stdout, /^42 \{/);
      else if (name === 'threading') assert.equal(r.stdout, '0 5\n');
      else assert.match(r.stdout, /'MISSING_SHMEM'[\s\S]*'COPY'/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}
