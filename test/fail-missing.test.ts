// The fail-stop used when a resolver is gone: missing pages poisoned (6.6+) or made PROT_NONE (before), their
// waiters woken, never zeros posing as data. Both ways are checked here on any kernel that has POISON.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { failMissingPages } from '../src/fill/fail-missing.js';
import { Mapping, probe, Userfaultfd } from '../src/index.js';
import { presentPages } from '../src/system.js';
import { ScratchFile, until } from './support/faulter.js';
import { readFdInfo } from '../src/core/uffdio-api.js';

for (const canPoison of [true, false]) {
  test(`failMissingPages (${canPoison ? 'POISON' : 'PROT_NONE, as before 6.6'}): a waiting faulter wakes with EFAULT; present pages keep their data`, { skip: canPoison && !probe().features.has('POISON') ? 'this kernel has no UFFDIO_POISON' : false }, async () => {
    using file = new ScratchFile(new Uint8Array(4096).fill(9));
    using mapping = Mapping.anonymous(4 * 4096);
    using uffd = Userfaultfd.open();
    uffd.register(mapping, { missing: true });
    uffd.copy(mapping.address, new Uint8Array(4096).fill(1)); // page 0 is there
    const waiting = file.readInto(new Uint8Array(mapping.buffer, 2 * 4096, 4096)); // a pool thread waits on page 2
    await until(() => readFdInfo(uffd.fd)?.total === 1, 'the fault');
    failMissingPages(uffd, { address: mapping.address, length: mapping.length, pageSize: 4096 }, canPoison);
    await assert.rejects(waiting, { code: 'EFAULT' });
    assert.equal(new Uint8Array(mapping.view(0, 4096))[100], 1, 'the present page is untouched');
    assert.deepEqual([...presentPages(mapping.address, 4, 4096)].slice(0, 1), [1]);
  });
}
