#!/usr/bin/env node
// `prepare`: compiles the TypeScript unless dist/ is already newer than every input. npm runs prepare on
// `npm install` in a checkout and again each time `npx uffd` runs this package's own bin from its checkout
// (npx links the checkout into its cache and runs its scripts): skipping an up-to-date compile makes that
// start at once, and work for a user who may not write to the checkout.
import { execFileSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const mtime = (path) => statSync(path, { throwIfNoEntry: false })?.mtimeMs ?? 0;

function newestInput() {
  let newest = Math.max(mtime(join(root, 'tsconfig.json')), mtime(join(root, 'package.json')));
  for (const dir of ['src', 'test', 'bench', 'docs']) {
    for (const entry of readdirSync(join(root, dir), { recursive: true, withFileTypes: true })) {
      if (entry.isFile() && entry.name.endsWith('.ts')) newest = Math.max(newest, mtime(join(entry.parentPath, entry.name)));
    }
  }
  return newest;
}

const built = Math.min(mtime(join(root, 'dist', 'src', 'index.js')), mtime(join(root, 'dist', 'src', 'cli', 'main.js')));
if (built === 0 || built < newestInput()) {
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  execFileSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.json')], { stdio: 'inherit' });
}
