// A source that cannot be used fails at open, not on the first touch, and the error keeps what refused it:
// `.code` (ENOENT, EISDIR, ERR_UFFD_SOURCE_EMPTY), `.path` and the original error as `.cause`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LazyMemory, fileSource, SourceOpenError } from '../src/index.js';
import { openSource } from '../src/sources/source.js';

const dir = mkdtempSync(join(tmpdir(), 'uffd-source-open-'));
process.on('exit', () => { rmSync(dir, { recursive: true, force: true }); });
mkdirSync(join(dir, 'a-directory'));
writeFileSync(join(dir, 'empty'), '');

const cases = [
  { name: 'a directory', path: join(dir, 'a-directory'), code: 'EISDIR', message: /is a directory/ },
  { name: 'an empty file', path: join(dir, 'empty'), code: 'ERR_UFFD_SOURCE_EMPTY', message: /empty \(0 bytes\)/ },
  { name: 'a missing file', path: join(dir, 'missing'), code: 'ENOENT', message: /no such file/ },
  { name: 'a character device', path: '/dev/null', code: 'ERR_UFFD_SOURCE_NOT_FILE', message: /not a regular file/ },
];

for (const c of cases) {
  test(`fileSource(${c.name}): openSource refuses it with .code ${c.code} (pread and mmap)`, async () => {
    for (const access of ['pread', 'mmap'] as const) {
      await assert.rejects(openSource(fileSource(c.path, { access })), (err: unknown) => {
        assert.ok(err instanceof SourceOpenError);
        assert.equal(err.code, c.code);
        assert.equal(err.path, c.path);
        assert.match(err.message, c.message);
        if (c.code === 'ENOENT') assert.equal((err.cause as { code?: string }).code, 'ENOENT');
        return true;
      });
    }
  });

  test(`LazyMemory.open with ${c.name}: rejects at open with .code ${c.code}, .path and .cause`, async () => {
    await assert.rejects(LazyMemory.open({ source: fileSource(c.path) }), (err: unknown) => {
      assert.ok(err instanceof Error);
      const e = err as Error & { code?: string; path?: string; cause?: { code?: string; message?: string } };
      assert.equal(e.code, c.code);
      assert.equal(e.path, c.path);
      assert.match(e.message, /^LazyMemory: the source could not be opened: cannot use /);
      assert.equal(e.cause?.code, c.code);
      assert.match(e.cause?.message ?? '', c.message);
      return true;
    });
  });
}
