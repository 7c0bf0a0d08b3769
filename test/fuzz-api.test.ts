// The public API's argument checks under random calls with random values, against a live uffd (the fuzzer is
// test/fixtures/fuzz-api.ts). Bounded in time; runs in a child so a native crash is a failure seen here. Zero
// native crashes and zero errors that are not typed (an argument check's TypeError/RangeError, UffdError, a
// Node SystemError) are allowed. The seeds are fixed so a failure replays: node dist/test/fixtures/fuzz-api.js SEED MS
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { probe } from '../src/index.js';

const FUZZER = fileURLToPath(new URL('./fixtures/fuzz-api.js', import.meta.url));
const MS_PER_SEED = 4000;

for (const seed of [1, 20261201]) {
  test(`fuzz the public API (seed ${String(seed)}, ${String(MS_PER_SEED)} ms): no native crash, every error typed`, { skip: probe().available ? false : 'no userfaultfd here' }, () => {
    const r = spawnSync(process.execPath, [FUZZER, String(seed), String(MS_PER_SEED)], { encoding: 'utf8', timeout: MS_PER_SEED + 60_000, killSignal: 'SIGKILL' });
    assert.equal(r.signal, null, `the fuzzer died of ${String(r.signal)} (replay: node ${FUZZER} ${String(seed)} ${String(MS_PER_SEED)})\n${r.stderr}`);
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { calls: number; typed: number; untyped: unknown[] };
    assert.deepEqual(out.untyped, [], 'errors that are not typed');
    assert.ok(out.calls > 500 && out.typed > 100, `too few calls to mean anything: ${r.stdout}`);
  });
}
