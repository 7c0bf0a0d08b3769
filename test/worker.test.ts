// The native watcher inside worker_threads, and the pattern every in-process user needs: faults raised by
// this process's JS thread are resolved by Userfaultfd.fromFd(uffd.dup()) in a worker thread.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { read } from 'node:fs';
import { openSync, closeSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { native } from '../src/binding.js';
import { Mapping, Userfaultfd } from '../src/index.js';

const worker = (name: string, data: unknown): Worker => new Worker(new URL(`./fixtures/${name}.js`, import.meta.url), { workerData: data });

for (const exit of ['terminate', 'process.exit', 'close'] as const) {
  test(`a worker with an open watcher exits cleanly (${exit})`, async () => {
    const w = worker('idle-watcher', { exit });
    const messages: unknown[] = [];
    w.on('message', (m) => messages.push(m));
    const exited = once(w, 'exit');
    await once(w, 'message');
    if (exit === 'terminate') await w.terminate();
    const [code] = (await exited) as [number];
    assert.equal(code, exit === 'process.exit' ? 7 : exit === 'terminate' ? 1 : 0);
    if (exit === 'close') assert.deepEqual(messages.at(-1), { how: 'ended' });
  });
}

test('main-thread faults resolved by a worker on a dup of the uffd', async () => {
  const pages = 64;
  using mapping = Mapping.anonymous(pages * 4096);
  using uffd = Userfaultfd.open();
  uffd.register(mapping, { missing: true });
  const w = worker('resolver', { fd: uffd.dup(), base: mapping.address, pageSize: mapping.pageSize });
  await once(w, 'message'); // ready
  const bytes = new Uint8Array(mapping.buffer);
  for (let i = 0; i < pages; i++) {
    assert.equal(bytes[i * 4096 + 123], i + 1, `page ${String(i)}`); // blocks in the fault until the worker copies
  }
  assert.equal(bytes[(pages - 1) * 4096], pages);
  const exited = once(w, 'exit');
  w.postMessage('stop');
  const [done] = (await once(w, 'message')) as [{ served: number }];
  assert.equal(done.served, pages);
  await exited;
});

test('events() on the main loop resolves faults raised by a libuv threadpool read into registered memory', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'uffd-'));
  const file = join(dir, 'data');
  writeFileSync(file, Buffer.alloc(3 * 4096, 0x61));
  using mapping = Mapping.anonymous(3 * 4096);
  using uffd = Userfaultfd.open(); // not user-mode-only: the kernel-mode fault waits for us
  uffd.register(mapping, { missing: true });
  const fd = openSync(file, 'r');
  try {
    const target = new Uint8Array(mapping.buffer);
    const reading = new Promise<number>((resolve, reject) => {
      read(fd, target, 0, target.length, 0, (err, n) => { if (err) reject(err); else resolve(n); });
    });
    let faults = 0;
    const zero = new Uint8Array(4096);
    const abort = new AbortController();
    const serving = (async () => {
      for await (const event of uffd.events({ signal: abort.signal })) {
        assert.equal(event.type, 'pagefault');
        if (event.type !== 'pagefault') continue;
        assert.equal(event.write, true, 'the kernel writes into the buffer');
        faults++;
        uffd.copy(event.address, zero);
      }
    })();
    assert.equal(await reading, 3 * 4096);
    abort.abort();
    await serving;
    assert.equal(faults, 3);
    assert.ok(target.every((b) => b === 0x61));
  } finally {
    closeSync(fd);
    rmSync(dir, { recursive: true });
  }
});

test('close() ends a pending events() iterator and stops its watcher', async () => {
  await new Promise((resolve) => setTimeout(resolve, 10)); // watchers stopped by earlier tests finish closing
  const uffd = Userfaultfd.open();
  const before = native.liveHandles().watchers;
  const iterator = uffd.events();
  const next = iterator.next();
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(native.liveHandles().watchers, before + 1);
  uffd.close();
  assert.deepEqual(await next, { done: true, value: undefined });
  await new Promise((resolve) => setTimeout(resolve, 10)); // uv_close completes in the loop's close phase
  assert.equal(native.liveHandles().watchers, before);
});
