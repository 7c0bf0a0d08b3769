// The package as a user gets it: packed (prepack builds the prebuilt binary), installed into a fresh project
// with no compiler on PATH, then `npx uffd probe` runs from the prebuilt binary; every source map in the
// tarball resolves to a file in it, and the LICENSE is there.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { ROOT } from './support/support.js';

const NPM_CLI = join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'bin', 'npm-cli.js');
const skip = existsSync(NPM_CLI) ? false : `npm is not where this Node keeps it (${NPM_CLI})`;

/** A PATH with node, npm, npx and sh only: no cc, gcc, make or python. */
function bareBin(dir: string): string {
  const bin = join(dir, 'bin');
  mkdirSync(bin);
  symlinkSync(process.execPath, join(bin, 'node'));
  symlinkSync(NPM_CLI, join(bin, 'npm'));
  symlinkSync(join(dirname(NPM_CLI), 'npx-cli.js'), join(bin, 'npx'));
  symlinkSync('/bin/sh', join(bin, 'sh'));
  return bin;
}

function run(command: string, args: string[], cwd: string, env: NodeJS.ProcessEnv): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(command, args, { cwd, env, encoding: 'utf8', timeout: 300_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name));
}

test('npm pack -> install in a fresh project with no compiler on PATH -> npx uffd probe, from the prebuilt binary', { skip, timeout: 600_000 }, () => {
  const work = mkdtempSync(join(tmpdir(), 'uffd-package-'));
  try {
    // Packed from a copy, so that prepack's build does not replace this checkout's addon under the suite.
    const copy = join(work, 'checkout');
    cpSync(ROOT, copy, {
      recursive: true,
      filter: (path) => {
        const rel = relative(ROOT, path);
        if (/^(\.git|build|prebuilds|docs\/reference|dist\/(test|bench|docs)|test|bench|node_modules)(\/|$)/.test(rel)) return false;
        // Outputs of sources that no longer exist (tsc never deletes them) are not what a fresh build ships.
        const output = /^dist\/(src\/.*?)\.(js|d\.ts)(\.map)?$/.exec(rel);
        return output?.[1] === undefined || existsSync(join(ROOT, `${output[1]}.ts`));
      },
    });
    symlinkSync(join(ROOT, 'node_modules'), join(copy, 'node_modules'));
    const env = { ...process.env };
    delete env.npm_config_build_from_source;
    // The compiled JavaScript is this checkout's (prepare would compile the same again); prepack builds the
    // prebuilt binary as `npm publish` would.
    const prebuild = run(process.execPath, [NPM_CLI, 'run', 'prepack'], copy, env);
    assert.equal(prebuild.status, 0, prebuild.stderr);
    const pack = run(process.execPath, [NPM_CLI, 'pack', '--ignore-scripts', '--json', '--pack-destination', work], copy, env);
    assert.equal(pack.status, 0, pack.stderr);
    const [{ filename, files }] = JSON.parse(pack.stdout.slice(pack.stdout.indexOf('['))) as [{ filename: string; files: { path: string }[] }];
    const shipped = new Set(files.map((f) => f.path));
    assert.ok(shipped.has('LICENSE'), 'LICENSE is in the package');
    assert.ok([...shipped].some((p) => /^prebuilds\/linux-x64\/.*\.node$/.test(p)), `a linux-x64 prebuild is in the package: ${[...shipped].filter((p) => p.startsWith('prebuilds')).join(', ')}`);
    assert.ok(!shipped.has('build/Release/userfaultfd.node'), 'no local build in the package');

    const project = join(work, 'project');
    mkdirSync(project);
    writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'first-hour', version: '1.0.0', private: true, type: 'module' }));
    const bin = bareBin(work);
    const bare = { ...env, PATH: bin, npm_config_cache: process.env.npm_config_cache ?? join(process.env.HOME ?? '/root', '.npm') };
    const compilers = run('/bin/sh', ['-c', 'command -v cc || command -v gcc || command -v make || command -v python3 || command -v g++'], project, bare);
    assert.notEqual(compilers.status, 0, `no compiler on PATH: ${compilers.stdout}`);
    const install = run(process.execPath, [NPM_CLI, 'install', '--no-audit', '--no-fund', '--prefer-offline', join(work, filename)], project, bare);
    assert.equal(install.status, 0, `${install.stdout}\n${install.stderr}`);
    const installed = join(project, 'node_modules', 'userfaultfd');
    assert.equal(existsSync(join(installed, 'build')), false, 'nothing was compiled at install');

    const probe = run(join(bin, 'npx'), ['uffd', 'probe', '--json'], project, bare);
    assert.equal(probe.status, 0, probe.stderr);
    assert.equal((JSON.parse(probe.stdout) as { available: boolean }).available, true);
    const version = run(join(bin, 'npx'), ['uffd', '--version'], project, bare);
    assert.match(version.stdout, /^uffd \d+\.\d+\.\d+ /);

    // Every source map points at sources that are in the package.
    const maps = filesUnder(installed).filter((f) => f.endsWith('.map'));
    assert.ok(maps.length > 0);
    for (const map of maps) {
      const { sources } = JSON.parse(readFileSync(map, 'utf8')) as { sources: string[] };
      for (const source of sources) assert.ok(existsSync(resolve(dirname(map), source)), `${relative(installed, map)} -> ${source}`);
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
});
