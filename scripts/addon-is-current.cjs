// node-gyp-build's install test (package.json "prebuild.test"): it decides whether `npm install` compiles the
// addon. Installed from the registry there is no local build and the prebuilt binary loads: nothing to do. In
// a checkout a build older than its sources must be compiled again (a change to native/ is always built),
// while an up-to-date one is kept, so that npx running the checkout's own bin compiles nothing.
'use strict';
const { readdirSync, statSync } = require('node:fs');
const { join } = require('node:path');

const root = join(__dirname, '..');
const mtime = (path) => statSync(path, { throwIfNoEntry: false })?.mtimeMs ?? 0;
const built = mtime(join(root, 'build', 'Release', 'userfaultfd.node'));
if (built !== 0) {
  const native = join(root, 'native');
  const sources = [join(root, 'binding.gyp'), ...readdirSync(native).map((name) => join(native, name))];
  const stale = sources.find((path) => mtime(path) > built);
  if (stale !== undefined) throw new Error(`the local build is older than ${stale}: compiling again`);
}
require('node-gyp-build')(root);
