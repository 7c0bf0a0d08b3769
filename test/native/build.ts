// Builds the native helper programs the tests start (test/native/*.c -> test/native/bin/<name>).
// Run by `npm run build:helpers` (part of pretest) after tsc has compiled this file. Any compiler failure
// fails the build: a test must never run against a stale or missing helper.
import { spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync } from 'node:fs';
import { basename, join } from 'node:path';
import { ROOT } from '../support/support.js';

const source = join(ROOT, 'test', 'native');
const out = join(source, 'bin');
const cc = process.env.CC ?? 'gcc';
const flags = ['-O2', '-g', '-Wall', '-Wextra', '-Werror', '-pthread'];

mkdirSync(out, { recursive: true });
const programs = readdirSync(source).filter((name) => name.endsWith('.c')).sort();
if (programs.length === 0) throw new Error(`no helper sources in ${source}`);
for (const file of programs) {
  const args = [...flags, '-o', join(out, basename(file, '.c')), join(source, file)];
  console.log(`${cc} ${args.join(' ')}`);
  const r = spawnSync(cc, args, { stdio: 'inherit' });
  if (r.error !== undefined) {
    console.error(`build:helpers: cannot run ${cc}: ${r.error.message} (install gcc, or set CC)`);
    process.exit(1);
  }
  if (r.status !== 0) {
    console.error(`build:helpers: ${cc} failed on ${file} (${r.signal ?? `exit ${String(r.status)}`})`);
    process.exit(1);
  }
}
