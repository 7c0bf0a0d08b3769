// Failures that say what happened: a poisoned page's cause is on stderr before the toucher dies, source
// errors arrive as typed events, lazy.mode says which uffd is in effect (with one warning on the fallback),
// and the kernel errnos users hit come with what they mean.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { LazyMemory, Mapping, moduleSource, probe, SourceReadError, Userfaultfd, zeroSource } from '../src/index.js';
import { isRoot, ROOT, sysctl } from './support/support.js';

const PATTERN = new URL('./fixtures/pattern-source.js', import.meta.url);
const INDEX = pathToFileURL(join(ROOT, 'dist', 'src', 'index.js')).href;
// SIGBUS from a poisoned page; SIGSEGV from the PROT_NONE used where POISON is missing (before 6.6).
const FAIL_STOP = probe().features.has('POISON') ? 'SIGBUS' : 'SIGSEGV';

test("onSourceError 'poison': the source's error (page, offset, source, cause) is on stderr before the toucher dies", () => {
  const script = `
    import { LazyMemory, moduleSource } from ${JSON.stringify(INDEX)};
    const lazy = await LazyMemory.open({ source: moduleSource(${JSON.stringify(PATTERN.href)}, { length: 8 * 4096, failAt: 5 * 4096 }), readahead: 1, retries: 0 });
    new Uint8Array(lazy.buffer)[5 * 4096 + 1];
    process.stdout.write('survived');
  `;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.signal, FAIL_STOP, `status ${String(r.status)} ${r.stderr}`);
  assert.equal(r.stdout, '');
  const line = `userfaultfd: page 5 (offset 20480) of module ${PATTERN.href} poisoned: the source failed: pattern source: injected failure at 20480; `
    + "the thread that touches it gets SIGBUS (fail-stop; onSourceError: 'zero' fills zeros instead)";
  assert.ok(r.stderr.includes(line), r.stderr);
});

test("onSourceError 'zero': the 'error' event is a SourceReadError with page, offset, source, outcome and cause", async () => {
  const lazy = await LazyMemory.open({ source: moduleSource(PATTERN, { length: 8 * 4096, failAt: 2 * 4096 + 10, async: true }), onSourceError: 'zero', readahead: 1, retries: 0 });
  try {
    const event = once(lazy, 'error');
    assert.equal(new Uint8Array(lazy.buffer)[2 * 4096], 0);
    const [err] = (await event) as [unknown];
    assert.ok(err instanceof SourceReadError);
    assert.equal(err.code, 'ERR_UFFD_SOURCE');
    assert.deepEqual([err.page, err.offset, err.source, err.outcome], [2, 8192, `module ${PATTERN.href}`, 'zero-filled']);
    assert.match((err.cause as Error).message, /injected failure at 8202/);
  } finally {
    await lazy.close();
  }
});

test('lazy.mode: full with the privilege, user-mode-only when asked for', { skip: isRoot ? false : 'needs root for a full uffd' }, async () => {
  for (const [userModeOnly, mode] of [['auto', 'full'], [false, 'full'], [true, 'user-mode-only']] as const) {
    const lazy = await LazyMemory.open({ source: zeroSource(4096), userModeOnly });
    try {
      assert.equal(lazy.mode, mode, `userModeOnly ${String(userModeOnly)}`);
    } finally {
      await lazy.close();
    }
  }
});

const deviceOpenToOthers = ((statSync('/dev/userfaultfd', { throwIfNoEntry: false })?.mode ?? 0) & 0o006) === 0o006;
const fallbackSkip = !isRoot ? 'needs root to drop to nobody'
  : sysctl('vm.unprivileged_userfaultfd') === '1' || deviceOpenToOthers ? 'unprivileged users may create a full uffd here' : false;

test("as nobody, userModeOnly 'auto': lazy.mode is user-mode-only and one warning says so, once per process", { skip: fallbackSkip }, () => {
  const script = `
    import { LazyMemory, zeroSource } from ${JSON.stringify(INDEX)};
    const modes = [];
    for (const userModeOnly of ['auto', 'auto', true]) {
      const lazy = await LazyMemory.open({ source: zeroSource(4096), userModeOnly });
      modes.push(lazy.mode);
      await lazy.close();
    }
    process.stdout.write(JSON.stringify(modes));
  `;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 30_000, uid: 65534, gid: 65534, cwd: '/' });
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), ['user-mode-only', 'user-mode-only', 'user-mode-only']);
  const warnings = r.stderr.match(/\[UFFD_USER_MODE_ONLY\] Warning: LazyMemory is user-mode-only here/g) ?? [];
  assert.equal(warnings.length, 1, r.stderr);
  assert.match(r.stderr, /fails with EFAULT instead of being served/);
});

test('copy into a range not registered with the uffd: ENOENT says so', () => {
  using uffd = Userfaultfd.open({ userModeOnly: !isRoot });
  using memory = Mapping.anonymous(4096);
  assert.throws(() => uffd.copy(memory.address, new Uint8Array(4096)), {
    code: 'ENOENT', syscall: 'ioctl(UFFDIO_COPY)',
    message: 'ENOENT: no such file or directory, ioctl(UFFDIO_COPY) (the destination is not in a range registered with this uffd)',
  });
  assert.throws(() => { uffd.zeropage(memory); }, { code: 'ENOENT', message: /not in a range registered with this uffd/ });
});
