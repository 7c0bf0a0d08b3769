// A uffd-stress style bounce across processes. Helper threads take a pthread mutex that lives inside the
// registered pages and bump a counter next to it, all racing for the same pages, while this process serves
// their faults on the event loop (events()) with COPY from a source the helper keeps up to date, and a
// background copier fills pages ahead of the faults. A copy that loses the race gets EEXIST, which is success
// followed by a WAKE. Each round the helper checks every counter, copies the area back to the source and
// empties it, so the next round faults again.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readSync } from 'node:fs';
import { setImmediate as nextTick } from 'node:timers/promises';
import { UffdError } from '../src/index.js';
import type { MapKind } from './support/helper.js';
import { hugePagesFor, skipUnless, withHelper } from './support/helper.js';

const THREADS = 4;
// UFFD_TEST_SCALE shrinks the work where code runs 10-15x slower (the kernel matrix runs in QEMU).
const SCALE = Math.min(1, Math.max(0.05, Number(process.env.UFFD_TEST_SCALE ?? '1') || 1));
const OPS = Math.max(200, Math.round(5000 * SCALE));
const ROUNDS = Math.max(2, Math.round(8 * SCALE));
const CASES: { kind: MapKind; pages: number }[] = [
  { kind: 'anon', pages: 64 },
  { kind: 'shmem', pages: 64 },
  { kind: 'shmem-private', pages: 32 },
  { kind: 'hugetlb', pages: 6 },
  { kind: 'hugetlb-private', pages: 6 },
];

for (const { kind, pages } of CASES) {
  const skip = skipUnless({ features: kind === 'anon' ? [] : kind.startsWith('hugetlb') ? ['MISSING_HUGETLBFS'] : ['MISSING_SHMEM'], hugePages: hugePagesFor(kind, pages) });
  test(`bounce (${kind}, ${String(THREADS)} threads, ${String(ROUNDS)} rounds): every counter verifies`, { skip }, async (t) => {
    await withHelper(async (helper) => {
      await helper.createUffd([]);
      const dst = await helper.map(0, kind, pages);
      const src = await helper.map(1, 'shmem', (pages * dst.pageSize) / 4096);
      const srcFd = helper.takeFd(src.memfd); // read with pread: never through a registered mapping
      using uffd = await helper.takeUffd();
      uffd.register(dst.range(), { missing: true });
      await helper.command('bounce-init 0 1');

      const buffer = new Uint8Array(dst.pageSize);
      let inRound = false;
      let faults = 0;
      let stale = 0;
      let eexist = 0;
      let writeFaults = 0;
      const fill = (page: number): void => {
        assert.equal(readSync(srcFd, buffer, 0, buffer.length, page * dst.pageSize), buffer.length);
        try {
          uffd.copy(dst.page(page), buffer);
        } catch (err) {
          if (!(err instanceof UffdError) || err.code !== 'EEXIST') throw err;
          eexist++;
          uffd.wake(dst.range(page, 1));
        }
      };

      const stop = new AbortController();
      let serveError: Error | undefined;
      const serving = (async () => {
        for await (const event of uffd.events({ signal: stop.signal })) {
          assert.equal(event.type, 'pagefault');
          if (event.type !== 'pagefault') continue;
          // Between rounds the threads are done: a message still queued is a duplicate nobody waits for, and
          // DST is being emptied, so it is not served.
          if (!inRound) {
            stale++;
            continue;
          }
          faults++;
          // As upstream asserts: the threads' first access to a page is pthread_mutex_lock reading the mutex.
          if (event.kind === 'missing' && event.write) writeFaults++;
          fill(Number((event.address - dst.address) / BigInt(dst.pageSize)));
        }
      })().catch((err: unknown) => { serveError = err instanceof Error ? err : new Error(String(err)); });
      // If the server fails, the helper's threads stay blocked: fail the round now rather than wait for them.
      const serverStopped = serving.then(() => { throw serveError ?? new Error('the fault server stopped'); });
      serverStopped.catch(() => { /* seen by the round that races it, or the server was stopped on purpose */ });

      // The copier fills even pages ahead of the threads (alternating direction); odd pages are only ever
      // filled by faults. It stops between rounds: nothing may land in DST while the helper empties it.
      let copying = false;
      let copyError: Error | undefined;
      let copier = Promise.resolve();
      const startCopier = (round: number): void => {
        copying = true;
        copier = (async () => {
          const step = round % 2 === 0 ? 2 : -2;
          for (let page = step > 0 ? 0 : pages - 2; copying && page >= 0 && page < pages; page += step) {
            fill(page);
            await nextTick();
          }
        })().catch((err: unknown) => { copyError = err instanceof Error ? err : new Error(String(err)); });
      };
      const stopCopier = async (): Promise<void> => {
        copying = false;
        await copier;
        if (copyError !== undefined) throw copyError;
      };

      try {
        let expected = (pages * (pages + 1)) / 2;
        for (let round = 0; round < ROUNDS; round++) {
          inRound = true;
          const before = faults;
          startCopier(round);
          await helper.command(`bounce b${String(round)} 0 ${String(THREADS)} ${String(OPS)} ${String(round)}`);
          const [, , total, mismatches] = await Promise.race([helper.expect(new RegExp(`^done b${String(round)} `)), serverStopped]);
          inRound = false;
          await stopCopier();
          expected += THREADS * OPS;
          assert.equal(mismatches, '0', `round ${String(round)}: counters that did not hold their expected value`);
          assert.equal(writeFaults, 0, `round ${String(round)}: a missing fault is a read fault (the mutex is read first)`);
          assert.equal(Number(total), expected, `round ${String(round)}: the sum of all counters`);
          // The helper checks every counter at the end of a round, so every odd page faulted at least once.
          assert.ok(faults - before >= pages / 2, `round ${String(round)}: ${String(faults - before)} faults served`);
          await helper.command('bounce-swap 0 1');
        }
      } finally {
        copying = false;
        await copier; // never rejects: its error is kept in copyError
        stop.abort();
        await serving;
      }
      if (serveError !== undefined) throw serveError;
      t.diagnostic(`${kind}: ${String(faults)} faults served, ${String(eexist)} copies lost a race (EEXIST + WAKE), ${String(stale)} stale messages`);
    });
  });
}
