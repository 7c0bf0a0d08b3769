// events(): what a consumer that stops early leaves behind, and one iterator at a time per uffd.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFdInfo } from '../src/core/uffdio-api.js';
import { Mapping, Userfaultfd } from '../src/index.js';
import { ScratchFile, until } from './support/faulter.js';

test('leaving events() early keeps the rest of the batch for the next read()', async () => {
  using file = new ScratchFile(new Uint8Array(4096).fill(3));
  using mapping = Mapping.anonymous(2 * 4096);
  using uffd = Userfaultfd.open();
  uffd.register(mapping, { missing: true });
  // Two threadpool reads fault on two pages: two messages pending before anyone reads.
  const reads = [file.readInto(new Uint8Array(mapping.buffer, 0, 4096)), file.readInto(new Uint8Array(mapping.buffer, 4096, 4096))];
  await until(() => readFdInfo(uffd.fd)?.pending === 2, 'two pending faults');
  const seen: bigint[] = [];
  for await (const event of uffd.events()) {
    assert.equal(event.type, 'pagefault');
    if (event.type === 'pagefault') seen.push(event.address);
    break;
  }
  const rest = uffd.read();
  assert.equal(rest.length, 1, 'the second message was kept, not dropped');
  const second = rest[0];
  assert.ok(second?.type === 'pagefault');
  seen.push(second.address);
  assert.deepEqual([...seen].sort(), [mapping.address, mapping.address + 4096n]);
  for (const address of seen) uffd.copy(address, new Uint8Array(4096));
  assert.deepEqual(await Promise.all(reads), [4096, 4096]);
});

test('a second events() on the same uffd while one runs is a clear error', async () => {
  using uffd = Userfaultfd.open();
  const first = uffd.events();
  const pending = first.next();
  await new Promise((resolve) => setImmediate(resolve));
  await assert.rejects(uffd.events().next(), { code: 'ERR_UFFD_EVENTS_ACTIVE' });
  uffd.close();
  assert.deepEqual(await pending, { done: true, value: undefined });
});
