// Real processes dumped by CRIU and restored lazily through `uffd criu-lazy-pages`, with prefetch and
// demand-only: each program checks its own memory from inside, page by page, after the restore (sizes,
// threads, forked children, mremap/munmap/madvise during the restore, futexes in lazy pages). CRIU's own
// daemon restores the same images as the reference; a daemon killed mid-restore shows what the process sees.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Criu, Dump } from './support/criu.js';
import { dumpTarget, findCriu, restore, startDaemon, tail } from './support/criu.js';

const found = findCriu();
const skip = typeof found === 'string' ? found : false;
console.log(typeof found === 'string' ? `criu-restore: skipped: ${found}` : `criu-restore: CRIU ${found.version} at ${found.path}`);
/** Restores per program and mode: CI asks for 10 (UFFD_CRIU_REPEAT), a local `npm test` does 2. */
const REPEAT = Number(process.env.UFFD_CRIU_REPEAT ?? '2');

const PROGRAMS: { mode: string; mib: number }[] = [
  { mode: 'plain', mib: 1 }, { mode: 'plain', mib: 16 }, { mode: 'plain', mib: 96 },
  { mode: 'threads', mib: 32 }, { mode: 'fork', mib: 8 }, { mode: 'remap', mib: 16 }, { mode: 'futex', mib: 16 },
];

async function restoreOnce(criu: Criu, dump: Dump, which: 'uffd' | 'criu', extra: string[]): Promise<void> {
  const daemon = await startDaemon(criu, dump, which, extra);
  const r = await restore(criu, dump, daemon);
  const where = `${dump.mode} via ${which} ${extra.join(' ')}: restore ${tail(join(dump.dir, 'restore.log'), 3)}; daemon log ${r.log.split('\n').slice(-4).join(' | ')}`;
  assert.equal(r.criu.code, 0, `criu restore failed: ${where}`);
  assert.deepEqual(r.daemon, { code: 0, signal: null }, `the daemon did not exit 0 by itself: ${where}`);
  assert.deepEqual([...r.results.keys()].sort(), dump.results, `results: ${[...r.results].join('; ')}; ${where}`);
  for (const [name, text] of r.results) assert.equal(text, 'ok', `${name}: ${text}; ${where}`);
}

describe('CRIU lazy restore through uffd criu-lazy-pages', { skip }, () => {
  const criu = found as Criu;
  const dumps: Dump[] = [];
  after(() => { for (const d of dumps) rmSync(d.dir, { recursive: true, force: true }); });

  for (const program of PROGRAMS) {
    test(`${program.mode} ${String(program.mib)} MiB: ${String(REPEAT)} restores with prefetch, ${String(REPEAT)} demand-only, one with criu's own daemon`, async () => {
      const dump = await dumpTarget(criu, program.mode, program.mib);
      dumps.push(dump);
      for (let i = 0; i < REPEAT; i++) {
        await restoreOnce(criu, dump, 'uffd', []);
        await restoreOnce(criu, dump, 'uffd', ['--no-prefetch']);
      }
      await restoreOnce(criu, dump, 'criu', []);
    });
  }

  describe('a daemon killed mid-restore', () => {
    let dump: Dump;
    before(async () => { dump = await dumpTarget(criu, 'slow', 16); dumps.push(dump); });
    test('the restored process never sees its data: it dies (SIGSEGV) or finds zero pages, and never reports ok', async () => {
          const daemon = await startDaemon(criu, dump, 'uffd', ['--no-prefetch']);
      const r = await restore(criu, dump, daemon, () => { setTimeout(() => daemon.child.kill('SIGKILL'), 50); });
      assert.equal(r.daemon.signal, 'SIGKILL');
      const root = r.results.get('root');
      // Its uffd's last descriptor is gone: every page still missing reads as zeros. The program usually
      // dies before it can write a result (a zeroed page of ld.so's data), else it reports the zeros.
      assert.ok(root === undefined || /the page is all zeros/.test(root), `root reported: ${String(root)}`);
      console.log(`killed mid-restore: criu restore exit ${String(r.criu.code)}, result: ${root ?? 'none (the process died)'}`);
    });
  });
});
