// `uffd probe`: the real command against this kernel, and the renderer given bits no kernel has yet.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { release } from 'node:os';
import { probeReportJson, renderProbeText } from '../src/cli/render-probe.js';
import { FEATURES, FeatureSet, IoctlSet, probe } from '../src/index.js';
import type { Capabilities } from '../src/index.js';
import { CLI } from './support/support.js';

function uffd(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

const caps = probe();
// Debian's 6.12 is `6.12.117+deb12-amd64`: a release string is not a regular expression.
const escapeRegExp = (text: string): string => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

test('uffd probe: every feature with offered/version, the ioctls and the access paths; exit 0', () => {
  const r = uffd('probe');
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`^userfaultfd on Linux ${escapeRegExp(release())}: available \\(API 0xaa\\)`));
  for (const f of FEATURES) {
    const row = new RegExp(`^\\s+${String(f.bit)}\\s+${f.name}\\s+${caps.features.has(f.name) ? 'yes' : 'no'}\\s+${f.since.replaceAll('.', '\\.')}\\s`, 'm');
    assert.match(r.stdout, row, f.name);
  }
  assert.match(r.stdout, new RegExp(`Features: ${String(caps.features.size)} offered \\(mask 0x${caps.features.mask.toString(16)}\\)`));
  assert.match(r.stdout, /Ioctls on a new uffd \(mask 0x8000000000000003\): REGISTER UNREGISTER API/);
  assert.match(r.stdout, /^\s+syscall\s+ok$/m);
});

test('uffd probe --json: one JSON document with the same content', () => {
  const r = uffd('probe', '--json');
  assert.equal(r.status, 0, r.stderr);
  const doc = JSON.parse(r.stdout) as { available: boolean; kernel: string; features: { mask: string; offered: string[]; table: { name: string; since: string; offered: boolean }[] }; ioctls: { names: string[] }; access: unknown };
  assert.equal(doc.available, true);
  assert.equal(doc.kernel, release());
  assert.equal(BigInt(doc.features.mask), caps.features.mask);
  assert.deepEqual(doc.features.offered, caps.features.toJSON());
  assert.deepEqual(doc.features.table.map((f) => [f.name, f.since, f.offered]), FEATURES.map((f) => [f.name, f.since, caps.features.has(f.name)]));
  assert.deepEqual(doc.ioctls.names, caps.ioctls.toJSON());
  assert.deepEqual(doc.access, JSON.parse(JSON.stringify(caps.access)));
});

test('uffd probe --memory --madvise --json adds the register matrix and the advice table', () => {
  const r = uffd('probe', '--memory', '--madvise', '--json');
  assert.equal(r.status, 0, r.stderr);
  const doc = JSON.parse(r.stdout) as { memory: Record<string, { modes?: Record<string, { ok: boolean; reported?: string[]; code?: string }> }>; madvise: { name: string; known: boolean }[] };
  assert.deepEqual(doc.memory.anon?.modes?.minor, { ok: false, code: 'EINVAL' });
  assert.ok(doc.memory.anon?.modes?.missing?.reported?.includes('COPY'));
  assert.ok(doc.madvise.some((a) => a.name === 'DONTNEED' && a.known));
  const text = uffd('probe', '--memory', '--madvise');
  assert.equal(text.status, 0);
  assert.match(text.stdout, /^\s+anon\s+4 KiB\s+minor\s+EINVAL$/m);
  assert.match(text.stdout, /^\s+DONTNEED\s+4\s+2\.4\s+yes\s+ok/m);
});

test('uffd: unknown command or option is a usage error (exit 2)', () => {
  const a = uffd('probe', '--bogus');
  assert.equal(a.status, 2);
  assert.match(a.stderr, /bogus/);
  const b = uffd('frobnicate');
  assert.equal(b.status, 2);
  assert.match(b.stderr, /unknown command "frobnicate"/);
  assert.equal(uffd('--help').status, 0);
});

const future: Capabilities = {
  available: true, kernel: '9.9.0-future', api: 0xaa,
  features: FeatureSet.fromMask(0x1ffffn | (1n << 17n) | (1n << 40n)),
  ioctls: IoctlSet.fromMask(0x8000000000000003n | (1n << 9n)),
  access: { syscall: { ok: true }, device: { ok: false, code: 'EACCES', hint: 'no permission' }, userModeOnly: { ok: true } },
};

test('renderer: unknown feature and ioctl bits are shown as `bit N`, in text and JSON, never dropped', () => {
  const text = renderProbeText({ capabilities: future });
  assert.match(text, /^\s+17\s+bit 17\s+yes\s+\?\s+unknown/m);
  assert.match(text, /^\s+40\s+bit 40\s+yes\s+\?\s+unknown/m);
  assert.match(text, /Features: 19 offered \(mask 0x1000003ffff\)/);
  assert.match(text, /REGISTER UNREGISTER API bit 9/);
  assert.match(text, /\/dev\/userfaultfd\s+EACCES: no permission/);
  const json = JSON.parse(JSON.stringify(probeReportJson({ capabilities: future }))) as { features: { offered: string[]; table: { name: string }[] }; ioctls: { names: string[] } };
  assert.deepEqual(json.features.offered.slice(-2), ['bit 17', 'bit 40']);
  assert.deepEqual(json.features.table.slice(-2).map((r) => r.name), ['bit 17', 'bit 40']);
  assert.deepEqual(json.ioctls.names, ['REGISTER', 'UNREGISTER', 'API', 'bit 9']);
});

test('renderer: an unavailable userfaultfd says why', () => {
  const text = renderProbeText({ capabilities: { ...future, available: false, reason: 'EPERM: needs CAP_SYS_PTRACE' } });
  assert.match(text, /NOT available: EPERM: needs CAP_SYS_PTRACE/);
});
