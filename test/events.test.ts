// Non-cooperative events (selftest "events"), raised by the native helper and read here: FORK, REMAP,
// REMOVE, UNMAP. Each is synchronous for the thread that causes it: fork/mremap/madvise/munmap sleep in the
// kernel (state D) until the monitor read()s the event, and only then return.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Helper } from './support/helper.js';
import { asFault, byteSum, describeEvent, nextEvents, readable, skipUnless, threadState, withHelper } from './support/helper.js';
import type { Userfaultfd } from '../src/index.js';
import type { UffdEventOf } from '../src/core/uffd.js';

/**
 * Reads `count` events raised by the helper's job `tag`, checking before each read that the job's thread is
 * still inside its call: asleep in the kernel, and it has not reported `returned` yet.
 */
async function readWhileBlocked(helper: Helper, uffd: Userfaultfd, tag: string, count: number, returned: RegExp): Promise<UffdEventOf[]> {
  const tid = await helper.tid(tag);
  const events: UffdEventOf[] = [];
  while (events.length < count) {
    await readable(uffd.fd); // the event is queued: the kernel set the thread's state before it woke pollers
    assert.equal(threadState(helper.pid, tid), 'D', `job ${tag}: the thread waits (TASK_KILLABLE) for the event to be read`);
    assert.equal(helper.seen(returned), false, `job ${tag}: its call returned before the event was read`);
    events.push(...uffd.read(count - events.length));
  }
  return events;
}

test('EVENT_FORK: fork blocks until read; the event carries a Userfaultfd for the child, which faults on it', { skip: skipUnless({ features: ['EVENT_FORK'] }) }, async () => {
  await withHelper(async (helper) => {
    await helper.createUffd(['EVENT_FORK']);
    const map = await helper.map(0, 'anon', 2);
    using uffd = await helper.takeUffd(); // the helper closes its copy: the child does not inherit one
    uffd.register(map.range(), { missing: true });

    await helper.command('fork f 0 1'); // the child reads page 1
    const [event] = await readWhileBlocked(helper, uffd, 'f', 1, /^forked f /);
    assert.equal(event?.type, 'fork', describeEvent(event));
    if (event?.type !== 'fork') return;
    using child = event.uffd;
    assert.notEqual(child.fd, uffd.fd);
    assert.ok(child.features.has('EVENT_FORK'), 'the child ctx inherits the enabled features');
    const [, , pid] = await helper.expect(/^forked f /);

    // The child's registered range reports to the child's uffd, not the parent's.
    const fault = asFault((await nextEvents(child, 1))[0]);
    assert.equal(fault.address, map.page(1));
    assert.equal(fault.write, false);
    assert.deepEqual(uffd.read(), []);
    const data = new Uint8Array(map.pageSize).fill(0x11);
    assert.equal(child.copy(map.page(1), data), map.pageSize);
    const [, , childPid, sum] = await helper.expect(/^child f /);
    assert.equal(childPid, pid);
    assert.equal(BigInt(sum!), byteSum(data));
    assert.deepEqual(await helper.expect(/^done f /), ['done', 'f', '0'], 'the child exited 0');
    // The parent's page 1 is still missing: the copy went to the child's memory only.
    await helper.touch('parent', map, { page: 1 });
    assert.equal(asFault((await nextEvents(uffd, 1))[0]).address, map.page(1));
    uffd.zeropage(map.range(1, 1));
    assert.deepEqual(await helper.touched('parent'), { sum: 0n, sigbuses: 0 });
  });
});

test('EVENT_REMAP: mremap blocks until read; from/to/length, then an UNMAP of the old range; faults follow the move', { skip: skipUnless({ features: ['EVENT_REMAP', 'EVENT_UNMAP'] }) }, async () => {
  await withHelper(async (helper) => {
    await helper.createUffd(['EVENT_REMAP', 'EVENT_UNMAP']);
    const map = await helper.map(0, 'anon', 4);
    using uffd = await helper.takeUffd();
    uffd.register(map.range(), { missing: true });
    const data = new Uint8Array(map.pageSize).fill(0x22);
    uffd.copy(map.page(0), data); // page 0 present: it must move with the mapping

    await helper.command('mremap r 0');
    const events = await readWhileBlocked(helper, uffd, 'r', 2, /^done r /);
    const remap = events[0];
    assert.equal(remap?.type, 'remap', describeEvent(remap));
    if (remap?.type !== 'remap') return;
    assert.equal(remap.from, map.address);
    assert.equal(remap.length, map.length);
    assert.deepEqual(events[1], { type: 'unmap', start: map.address, end: map.address + BigInt(map.length) });
    const [, , result, to] = await helper.expect(/^done r /);
    assert.equal(result, '0');
    assert.equal(BigInt(to!), remap.to);

    // The registration moved with the range: page 1 faults at its new address; page 0 kept its data.
    await helper.touch('moved', map, { pages: 2 }); // the helper now uses the new address
    const fault = asFault((await nextEvents(uffd, 1))[0]);
    assert.equal(fault.address, remap.to + BigInt(map.pageSize));
    uffd.zeropage({ address: fault.address, length: map.pageSize });
    assert.deepEqual(await helper.touched('moved'), { sum: byteSum(data), sigbuses: 0 });
  });
});

test('EVENT_REMOVE: madvise(DONTNEED) blocks until read; start/end; the pages fault again', { skip: skipUnless({ features: ['EVENT_REMOVE'] }) }, async () => {
  await withHelper(async (helper) => {
    await helper.createUffd(['EVENT_REMOVE']);
    const map = await helper.map(0, 'anon', 4);
    using uffd = await helper.takeUffd();
    uffd.register(map.range(), { missing: true });
    const data = new Uint8Array(2 * map.pageSize).fill(0x33);
    uffd.copy(map.page(1), data);

    await helper.command('madvise m 0 1 2 dontneed');
    const events = await readWhileBlocked(helper, uffd, 'm', 1, /^done m /);
    assert.deepEqual(events, [{ type: 'remove', start: map.page(1), end: map.page(3) }]);
    assert.deepEqual(await helper.expect(/^done m /), ['done', 'm', '0']);

    await helper.touch('gone', map, { page: 2 });
    assert.equal(asFault((await nextEvents(uffd, 1))[0]).address, map.page(2), 'the dropped page is missing again');
    uffd.zeropage(map.range(2, 1));
    assert.deepEqual(await helper.touched('gone'), { sum: 0n, sigbuses: 0 });
  });
});

test('EVENT_REMOVE: madvise(REMOVE) on shared memory: start/end', { skip: skipUnless({ features: ['EVENT_REMOVE'] }) }, async () => {
  await withHelper(async (helper) => {
    await helper.createUffd(['EVENT_REMOVE']);
    const map = await helper.map(0, 'shmem', 4);
    using uffd = await helper.takeUffd();
    uffd.register(map.range(), { missing: true });

    await helper.command('madvise m 0 0 3 remove');
    const events = await readWhileBlocked(helper, uffd, 'm', 1, /^done m /);
    assert.deepEqual(events, [{ type: 'remove', start: map.page(0), end: map.page(3) }]);
    assert.deepEqual(await helper.expect(/^done m /), ['done', 'm', '0']);
  });
});

test('EVENT_UNMAP: munmap blocks until read; start/end', { skip: skipUnless({ features: ['EVENT_UNMAP'] }) }, async () => {
  await withHelper(async (helper) => {
    await helper.createUffd(['EVENT_UNMAP']);
    const map = await helper.map(0, 'anon', 4);
    using uffd = await helper.takeUffd();
    uffd.register(map.range(), { missing: true });

    await helper.command('munmap u 0 2 2');
    const events = await readWhileBlocked(helper, uffd, 'u', 1, /^done u /);
    assert.deepEqual(events, [{ type: 'unmap', start: map.page(2), end: map.page(4) }]);
    assert.deepEqual(await helper.expect(/^done u /), ['done', 'u', '0']);
    // The range is gone: COPY there finds no registered VMA.
    assert.throws(() => uffd.copy(map.page(2), new Uint8Array(map.pageSize)), { name: 'UffdError', code: 'ENOENT' });
  });
});

test('without the event features the same calls raise nothing and do not block', { skip: skipUnless() }, async () => {
  await withHelper(async (helper) => {
    await helper.createUffd([]);
    const map = await helper.map(0, 'anon', 8);
    const moving = await helper.map(1, 'anon', 2);
    using uffd = await helper.takeUffd();
    uffd.register(map.range(), { missing: true });
    uffd.register(moving.range(), { missing: true });
    await helper.command('madvise m 0 0 2 dontneed');
    assert.deepEqual(await helper.expect(/^done m /), ['done', 'm', '0']);
    await helper.command('munmap u 0 6 2');
    assert.deepEqual(await helper.expect(/^done u /), ['done', 'u', '0']);
    await helper.command('mremap r 1');
    assert.equal((await helper.expect(/^done r /))[2], '0');
    assert.deepEqual(uffd.read(), []);
  });
});
