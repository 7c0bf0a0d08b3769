// The layering is held by lint (eslint.architecture.js, run by `npm test`): each rule fires on a deliberate
// violation, linted through the project's own config, and src/ has no import cycle.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { test } from 'node:test';
import { ESLint } from 'eslint';
import ts from 'typescript';
import { ROOT } from './support/support.js';

// The project's own config; only the parser may also read files that are not on disk (the probes below).
const PROBES = ['src/lint-probe.ts', 'src/*/lint-probe.ts', 'src/*/*/lint-probe.ts'];
const eslint = new ESLint({
  cwd: ROOT,
  overrideConfig: { languageOptions: { parserOptions: { projectService: { allowDefaultProject: PROBES } } } },
});

/** The no-restricted-imports messages lint gives `source` as if it were the file at `path` (relative to ROOT). */
async function restricted(path: string, source: string): Promise<string[]> {
  const [result] = await eslint.lintText(source, { filePath: join(ROOT, path) });
  assert.ok(result !== undefined);
  return result.messages.filter((m) => m.ruleId === 'no-restricted-imports').map((m) => m.message);
}

const violations: { what: string; path: string; source: string }[] = [
  { what: 'an application imports the binding', path: 'src/server/lint-probe.ts', source: "import { native } from '../binding.js';\nnative.close(0);\n" },
  { what: 'a protocol imports the binding', path: 'src/server/firecracker/lint-probe.ts', source: "export type { Watcher } from '../../binding.js';\n" },
  { what: 'the CLI imports the binding', path: 'src/cli/lint-probe.ts', source: "import { native } from '../binding.js';\nnative.close(0);\n" },
  { what: 'a definition imports the binding', path: 'src/lint-probe.ts', source: "import { native } from './binding.js';\nnative.close(0);\n" },
  { what: 'a definition imports the core', path: 'src/lint-probe.ts', source: "export { Userfaultfd } from './core/uffd.js';\n" },
  { what: 'the core imports an application', path: 'src/core/lint-probe.ts', source: "export { PageFiller } from '../fill/page-filler.js';\n" },
  { what: 'the core imports the server', path: 'src/core/lint-probe.ts', source: "export type { GuestRegion } from '../server/region.js';\n" },
  { what: 'a probe imports an application', path: 'src/probe/lint-probe.ts', source: "export { zeroSource } from '../sources/source.js';\n" },
  { what: 'firecracker imports criu', path: 'src/server/firecracker/lint-probe.ts', source: "export * from '../criu/lint-target.js';\n" },
  { what: 'criu imports firecracker', path: 'src/server/criu/lint-probe.ts', source: "export { parseHandshake } from '../firecracker/handshake.js';\n" },
];

for (const { what, path, source } of violations) {
  test(`lint refuses an import against the layering: ${what}`, async () => {
    const messages = await restricted(path, source);
    assert.equal(messages.length, 1, `expected one no-restricted-imports error for ${path}, got ${JSON.stringify(messages)}`);
  });
}

test('lint accepts the imports the layering allows', async () => {
  assert.deepEqual(await restricted('src/core/lint-probe.ts', "export { native } from '../binding.js';\nexport { U64_END } from '../abi.js';\n"), []);
  assert.deepEqual(await restricted('src/probe/lint-probe.ts', "export { native } from '../binding.js';\nexport { Mapping } from '../core/mapping.js';\n"), []);
  assert.deepEqual(await restricted('src/server/firecracker/lint-probe.ts', "export type { GuestRegion } from '../region.js';\nexport { U64_END } from '../../abi.js';\n"), []);
  assert.deepEqual(await restricted('src/lazy/lint-probe.ts', "export { Userfaultfd } from '../core/uffd.js';\nexport { PAGE_SIZE } from '../system.js';\n"), []);
});

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && e.name.endsWith('.ts'))
    .map((e) => join(e.parentPath, e.name));
}

/** Every import and re-export of each file in src/, resolved to the file it names (type-only ones too). */
function importGraph(): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const file of sourceFiles(join(ROOT, 'src'))) {
    const { importedFiles } = ts.preProcessFile(readFileSync(file, 'utf8'), true, false);
    graph.set(file, importedFiles
      .map((i) => i.fileName)
      .filter((name) => name.startsWith('.'))
      .map((name) => resolve(dirname(file), name.replace(/\.js$/, '.ts'))));
  }
  return graph;
}

/** The first import cycle found, as the files along it (the first repeated at the end), or undefined. */
function findCycle(graph: ReadonlyMap<string, readonly string[]>): string[] | undefined {
  const done = new Set<string>();
  const onPath: string[] = [];
  const visit = (file: string): string[] | undefined => {
    const at = onPath.indexOf(file);
    if (at >= 0) return [...onPath.slice(at), file];
    if (done.has(file)) return undefined;
    onPath.push(file);
    for (const next of graph.get(file) ?? []) {
      const cycle = visit(next);
      if (cycle !== undefined) return cycle;
    }
    onPath.pop();
    done.add(file);
    return undefined;
  };
  for (const file of graph.keys()) {
    const cycle = visit(file);
    if (cycle !== undefined) return cycle;
  }
  return undefined;
}

test('src/ has no import cycle', () => {
  const graph = importGraph();
  assert.ok(graph.size > 30, `read only ${String(graph.size)} files`);
  const edges = [...graph.values()].reduce((n, targets) => n + targets.length, 0);
  assert.ok(edges > graph.size, `found only ${String(edges)} imports`);
  const cycle = findCycle(graph);
  assert.equal(cycle?.map((f) => relative(ROOT, f)).join(' -> '), undefined);
});

test('the cycle check finds a cycle through type-only imports too', () => {
  const graph = new Map([['a', ['b']], ['b', ['c', 'd']], ['c', []], ['d', ['b']]]);
  assert.deepEqual(findCycle(graph), ['b', 'd', 'b']);
  assert.equal(findCycle(new Map([['a', ['b']], ['b', []]])), undefined);
  const { importedFiles } = ts.preProcessFile("import type { A } from './a.js';\nexport * from './b.js';\n", true, false);
  assert.deepEqual(importedFiles.map((i) => i.fileName), ['./a.js', './b.js']);
});
