// The README's first line, `npm install && npx uffd probe`, in a fresh clone, as root and as a non-root user
// in their own clone. npx runs a checkout's own bin by linking the checkout into its cache and running its
// prepare and install scripts: both must see that everything is built and do nothing (no compile, no
// rebuild of the addon), so the command costs about the install plus a second. The install itself is stood
// in for by this checkout's build (npm ci --ignore-scripts, then the addon and dist/ copied in), to keep the
// suite short; the times are printed, never asserted.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, cpSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createRequire } from 'node:module';
import { join, relative } from 'node:path';
import { performance } from 'node:perf_hooks';
import { isRoot, ROOT } from './support/support.js';

const NOBODY = 65534;
const git = spawnSync('git', ['-C', ROOT, 'rev-parse', 'HEAD'], { encoding: 'utf8' });
const skip = git.status !== 0 ? `${ROOT} is not a git checkout` : false;

function chownTree(path: string, uid: number): void {
  chownSync(path, uid, uid);
  for (const entry of readdirSync(path, { recursive: true, withFileTypes: true })) {
    if (!entry.isSymbolicLink()) chownSync(join(entry.parentPath, entry.name), uid, uid);
  }
}

test('a fresh clone: npx uffd probe runs the checkout\'s own bin without compiling anything, as root and as a user', { skip, timeout: 300_000 }, (t) => {
  const work = mkdtempSync(join(tmpdir(), 'uffd-newcomer-'));
  try {
    chmodSync(work, 0o755);
    const clone = join(work, 'userfaultfd');
    assert.equal(spawnSync('git', ['clone', '--quiet', ROOT, clone]).status, 0);
    const env: NodeJS.ProcessEnv = { ...process.env, npm_config_update_notifier: 'false', npm_config_fund: 'false', npm_config_audit: 'false' };
    delete env.npm_config_build_from_source;
    const ci = spawnSync('npm', ['ci', '--ignore-scripts', '--prefer-offline'], { cwd: clone, env, encoding: 'utf8' });
    assert.equal(ci.status, 0, ci.stderr);
    // What `npm install`'s install and prepare scripts leave behind, newer than every source.
    const addon = relative(ROOT, (createRequire(import.meta.url)('node-gyp-build') as { path(dir: string): string }).path(ROOT));
    cpSync(join(ROOT, addon), join(clone, addon));
    cpSync(join(ROOT, 'dist', 'src'), join(clone, 'dist', 'src'), { recursive: true });
    const built = (): number[] => [statSync(join(clone, 'dist', 'src', 'index.js')).mtimeMs, statSync(join(clone, addon)).mtimeMs];

    const runs: { who: string; uid?: number }[] = [{ who: 'root' }];
    if (isRoot) runs.push({ who: 'nobody, in a clone of their own', uid: NOBODY });
    else t.diagnostic('not root: the run as another user is skipped');
    for (const { who, uid } of runs) {
      const home = join(work, `home-${who.split(',')[0] ?? who}`);
      mkdirSync(home);
      if (uid !== undefined) {
        chownTree(clone, uid);
        chownSync(home, uid, uid);
      }
      const before = built();
      const started = performance.now();
      const r = spawnSync('npx', ['uffd', 'probe'], {
        cwd: clone, encoding: 'utf8', timeout: 120_000,
        env: { ...env, HOME: home, npm_config_cache: join(home, '.npm') },
        ...(uid === undefined ? {} : { uid, gid: uid }),
      });
      const ms = performance.now() - started;
      assert.equal(r.status, 0, `${who}: ${r.stderr}`);
      assert.match(r.stdout, /^userfaultfd on Linux \S+: available/, who);
      assert.deepEqual(built(), before, `${who}: nothing was compiled again`);
      t.diagnostic(`${who}: npx uffd probe took ${ms.toFixed(0)} ms with a fresh npm cache (load ${readLoad()})`);
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
});

function readLoad(): string {
  return spawnSync('cat', ['/proc/loadavg'], { encoding: 'utf8' }).stdout.split(' ').slice(0, 3).join(' ');
}
