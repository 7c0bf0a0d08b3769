// Without privileges: what the access diagnostics say, and the user-mode-only path. The checks run in a
// child process that drops to `nobody` (uid 65534), since this process is root in CI.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { isRoot, ROOT, sysctl } from './support/support.js';

const NOBODY = 65534;

/** Every directory from / to the package must be searchable by others, or nobody cannot load it. */
function reachableByOthers(path: string): boolean {
  for (let dir = path; ; dir = dirname(dir)) {
    if ((statSync(dir).mode & 0o001) === 0) return false;
    if (dirname(dir) === dir) return true;
  }
}

const skip = !isRoot ? 'needs root to drop to nobody' : !reachableByOthers(ROOT) ? `${ROOT} is not searchable by other users` : false;

const script = `
import { probe, Userfaultfd, UnsupportedFeatureError } from ${JSON.stringify(pathToFileURL(join(ROOT, 'dist', 'src', 'index.js')).href)};
const out = {};
const caps = probe();
out.available = caps.available;
out.access = caps.access;
try { Userfaultfd.open().close(); out.plain = 'ok'; } catch (e) { out.plain = { code: e.code, message: e.message }; }
const umo = Userfaultfd.open({ userModeOnly: true, request: ['EVENT_FORK', 'THREAD_ID'] });
out.requested = umo.features.toJSON();
umo.close();
try { Userfaultfd.open({ userModeOnly: true, require: ['EVENT_FORK'] }); out.requireFork = 'ok'; }
catch (e) { out.requireFork = { unsupported: e instanceof UnsupportedFeatureError, missing: e.missing, message: e.message, reason: e.reason }; }
process.stdout.write(JSON.stringify(out));
`;

test('as nobody: uffd probe --memory works through a user-mode-only uffd', { skip }, () => {
  const r = spawnSync(process.execPath, [join(ROOT, 'dist', 'src', 'cli', 'main.js'), 'probe', '--memory', '--json'], { uid: NOBODY, gid: NOBODY, encoding: 'utf8', cwd: '/' });
  assert.equal(r.status, 0, r.stderr);
  const doc = JSON.parse(r.stdout) as { memory: { anon: { modes: { missing: { ok: boolean; works: string[] } } } } };
  assert.equal(doc.memory.anon.modes.missing.ok, true);
  assert.ok(doc.memory.anon.modes.missing.works.includes('COPY'));
});

interface Report {
  available: boolean;
  access: Record<'syscall' | 'device' | 'userModeOnly', { ok: boolean; code?: string; hint?: string }>;
  plain: 'ok' | { code: string; message: string };
  requested: string[];
  requireFork: 'ok' | { unsupported: boolean; missing: string[]; message: string; reason: string };
}

test('as nobody: access diagnostics, user-mode-only works, EVENT_FORK is dropped or refused by name', { skip }, () => {
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { uid: NOBODY, gid: NOBODY, encoding: 'utf8', cwd: '/' });
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout) as Report;
  assert.equal(out.available, true, 'user-mode-only creation is always allowed');
  assert.deepEqual(out.access.userModeOnly, { ok: true });

  const unprivilegedAllowed = sysctl('vm.unprivileged_userfaultfd') === '1';
  if (unprivilegedAllowed) {
    assert.deepEqual(out.access.syscall, { ok: true });
  } else {
    assert.equal(out.access.syscall.code, 'EPERM');
    assert.match(out.access.syscall.hint ?? '', /vm\.unprivileged_userfaultfd=1/);
  }
  const deviceMode = statSync('/dev/userfaultfd', { throwIfNoEntry: false })?.mode;
  if (deviceMode !== undefined && (deviceMode & 0o006) !== 0o006) {
    assert.equal(out.access.device.code, 'EACCES');
    assert.match(out.access.device.hint ?? '', /permission/);
  }
  if (!unprivilegedAllowed && !out.access.device.ok) {
    assert.notEqual(out.plain, 'ok');
    assert.ok(typeof out.plain === 'object');
    assert.equal(out.plain.code, 'EPERM');
    // The error says what to do: the sysctl, the device, or userModeOnly.
    assert.match(out.plain.message, /vm\.unprivileged_userfaultfd=1/);
    assert.match(out.plain.message, /\/dev\/userfaultfd/);
    assert.match(out.plain.message, /userModeOnly: true/);
  }
  // EVENT_FORK needs CAP_SYS_PTRACE whatever the path: requested -> dropped, required -> named error.
  assert.deepEqual(out.requested, ['THREAD_ID']);
  assert.ok(typeof out.requireFork === 'object');
  assert.equal(out.requireFork.unsupported, true);
  assert.deepEqual(out.requireFork.missing, ['EVENT_FORK']);
  assert.match(out.requireFork.message, /CAP_SYS_PTRACE/);
  // The kernel offers it: the error blames the privilege, not the kernel version.
  assert.equal(out.requireFork.reason, 'privilege');
  assert.match(out.requireFork.message, /offered by this kernel but refused to this process \(EPERM\)/);
  assert.doesNotMatch(out.requireFork.message, /not available on this kernel/);
});
