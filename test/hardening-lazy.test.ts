// Attacks on LazyMemory's resolver: a source that never answers, a resolver thread that crashes, and close()
// while the program's own I/O on the memory is in flight. None may hang, crash the process natively, or leave
// close() unable to release the uffd and the mapping. Each runs in a child Node (a hang is killed and seen).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { probe } from '../src/index.js';
import { describeExit, runAttack } from './support/attack.js';
import { ROOT } from './support/support.js';

const HOSTILE = pathToFileURL(join(ROOT, 'dist', 'test', 'fixtures', 'hostile-source.js')).href;
const skip = probe().available ? false : 'no userfaultfd here';

/**
 * Counts the child's descriptors, after one LazyMemory has come and gone (Node opens a descriptor or two
 * the first time a worker runs, for good) and with the loop kept alive while the test waits on events.
 */
const FDS = `
  const { readdirSync } = await import('node:fs');
  const fds = () => readdirSync('/proc/self/fd').length;
  await (await uffd.LazyMemory.open({ source: uffd.zeroSource(4096) })).close();
  const alive = setInterval(() => undefined, 1000);
`;

test('a source that never answers: the toucher gets the error policy after readTimeoutMs, and close() returns', { skip }, () => {
  const r = runAttack(`
    ${FDS}
    const before = fds();
    const lazy = await uffd.LazyMemory.open({ source: uffd.moduleSource(${JSON.stringify(HOSTILE)}, { mode: 'never', length: 16 * 4096 }), readahead: 1, onSourceError: 'zero', retries: 0, readTimeoutMs: 300 });
    const errors = [];
    lazy.on('error', (err) => errors.push(err.code));
    const started = Date.now();
    const byte = new Uint8Array(lazy.buffer)[5 * 4096];
    const waited = Date.now() - started;
    await new Promise((r) => setTimeout(r, 50));
    await lazy.close();
    clearInterval(alive);
    console.log(JSON.stringify({ byte, timedOut: waited >= 250, errors, fdsBack: fds() === before }));
  `, { timeoutMs: 20_000 });
  assert.equal(r.signal, null, describeExit(r));
  assert.equal(r.status, 0, describeExit(r));
  assert.deepEqual(JSON.parse(r.stdout), { byte: 0, timedOut: true, errors: ['ERR_UFFD_SOURCE'], fdsBack: true });
});

test('a source that never answers while prefetching: close() is bounded and releases everything', { skip }, () => {
  const r = runAttack(`
    ${FDS}
    const before = fds();
    const lazy = await uffd.LazyMemory.open({ source: uffd.moduleSource(${JSON.stringify(HOSTILE)}, { mode: 'never', length: 64 * 4096 }), prefetch: true });
    await new Promise((r) => setTimeout(r, 100));
    const started = Date.now();
    await lazy.close();
    clearInterval(alive);
    console.log(JSON.stringify({ closedWithinSeconds: Math.ceil((Date.now() - started) / 1000), fdsBack: fds() === before }));
  `, { timeoutMs: 20_000 });
  assert.equal(r.signal, null, describeExit(r));
  assert.equal(r.status, 0, describeExit(r));
  const out = JSON.parse(r.stdout) as { closedWithinSeconds: number; fdsBack: boolean };
  assert.ok(out.closedWithinSeconds <= 5, r.stdout);
  assert.ok(out.fdsBack, r.stdout);
});

test("a crash in the resolver thread is an 'error' event, not a dead process; close() still releases everything", { skip }, () => {
  const r = runAttack(`
    ${FDS}
    const before = fds();
    const lazy = await uffd.LazyMemory.open({ source: uffd.moduleSource(${JSON.stringify(HOSTILE)}, { mode: 'crash', length: 16 * 4096, crashAfterMs: 200 }), readahead: 1 });
    const bytes = new Uint8Array(lazy.buffer);
    const first = bytes[0];
    const error = await new Promise((resolve) => lazy.once('error', resolve));
    let closeError = 'none';
    await lazy.close().catch((err) => { closeError = err.message; });
    await new Promise((r) => setTimeout(r, 100));
    clearInterval(alive);
    console.log(JSON.stringify({ first, code: error.code, closeError, detached: bytes.length === 0, fdsBack: fds() === before }));
  `, { timeoutMs: 20_000 });
  assert.equal(r.signal, null, describeExit(r));
  assert.equal(r.status, 0, describeExit(r));
  const out = JSON.parse(r.stdout) as Record<string, unknown>;
  assert.deepEqual(out, { first: 0x5a, code: out.code, closeError: 'none', detached: true, fdsBack: true });
  assert.equal(typeof out.code, 'string');
});

test('close() while the program writes the memory to a file (fs.promises): the write fails or completes, never writes zeros for pages nobody filled', { skip }, () => {
  const out = join(ROOT, 'dist', `.hardening-write-${String(process.pid)}`);
  const r = runAttack(`
    const fs = await import('node:fs');
    const results = [];
    for (const delayMs of [1, 2, 3, 5, 8, 12, 20, 30]) {
      const lazy = await uffd.LazyMemory.open({ source: uffd.bufferSource(new Uint8Array(16 << 20).fill(1)), readahead: 1 });
      const writing = fs.promises.writeFile(${JSON.stringify(out)}, new Uint8Array(lazy.buffer)).then(() => 'ok', (err) => err.code ?? err.name);
      await new Promise((r) => setTimeout(r, delayMs));
      await lazy.close();
      const outcome = await writing;
      const written = fs.readFileSync(${JSON.stringify(out)});
      results.push({ outcome, wrong: written.filter((b) => b !== 1).length, complete: written.length === 16 << 20 });
    }
    fs.rmSync(${JSON.stringify(out)}, { force: true });
    console.log(JSON.stringify(results));
  `, { timeoutMs: 60_000 });
  assert.equal(r.signal, null, describeExit(r));
  assert.equal(r.status, 0, describeExit(r));
  for (const result of JSON.parse(r.stdout) as { outcome: string; wrong: number; complete: boolean }[]) {
    assert.equal(result.wrong, 0, r.stdout);
    if (result.outcome === 'ok') assert.ok(result.complete, r.stdout);
  }
});
