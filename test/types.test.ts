// The published types as a TypeScript consumer sees them: a project with the consumer settings the README
// documents compiles against the package's .d.ts (typed LazyMemory events, awaitable receive, the exported
// helpers), internal names are not in the .d.ts, and a deep import of one does not compile.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { UnixConnection } from '../src/index.js';
import { ROOT } from './support/support.js';

const TSC = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');

// The consumer tsconfig the README documents.
const CONSUMER_TSCONFIG = {
  compilerOptions: { module: 'nodenext', moduleResolution: 'nodenext', target: 'es2022', lib: ['es2022', 'esnext.disposable'], types: ['node'], strict: true, noEmit: true, skipLibCheck: false },
};

const CONSUMER = `
import { LazyMemory, SourceReadError, UnixConnection, bufferSource, isEexist, presentPages, FEATURES } from 'userfaultfd';
import type { LazyMemoryEvents, Via } from 'userfaultfd';

const via: Via = 'device';
const lazy = await LazyMemory.open({ source: bufferSource(new Uint8Array(4096)) });
lazy.on('error', (err) => {
  const page: number | undefined = err instanceof SourceReadError ? err.page : undefined;
  const code: string = err.code;
  console.log(page, code, via);
});
const mode: 'full' | 'user-mode-only' = lazy.mode;
const events: keyof LazyMemoryEvents = 'error';
const [a, b] = UnixConnection.pair();
b.send(new TextEncoder().encode('hi'));
const message = await a.receiveAsync();
if (message.kind === 'data') console.log(message.data.length, message.fds.length);
console.log(isEexist(new Error('x')), presentPages(lazy.address, 1, lazy.pageSize).length, mode, events, FEATURES[0]?.behavioural);
await lazy.close();
`;

function consumerProject(dir: string, source: string): { status: number | null; output: string } {
  const pkg = join(dir, 'node_modules', 'userfaultfd');
  mkdirSync(join(pkg, 'dist'), { recursive: true });
  // What the package ships of its types: package.json and the .d.ts files under dist/src.
  cpSync(join(ROOT, 'package.json'), join(pkg, 'package.json'));
  cpSync(join(ROOT, 'dist', 'src'), join(pkg, 'dist', 'src'), { recursive: true, filter: (p) => !p.endsWith('.js') });
  symlinkSync(join(ROOT, 'node_modules', '@types'), join(dir, 'node_modules', '@types'));
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'consumer', type: 'module', private: true }));
  writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify(CONSUMER_TSCONFIG));
  writeFileSync(join(dir, 'main.ts'), source);
  const r = spawnSync(process.execPath, [TSC, '-p', dir], { encoding: 'utf8', timeout: 120_000 });
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

test('a consumer project compiles against the package .d.ts with the documented settings', () => {
  const dir = mkdtempSync(join(tmpdir(), 'uffd-types-'));
  try {
    const r = consumerProject(dir, CONSUMER);
    assert.equal(r.status, 0, r.output);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('internal names are not in the .d.ts; a deep import does not compile', () => {
  const dts = readdirSync(join(ROOT, 'dist', 'src'), { recursive: true }).map(String).filter((f) => f.endsWith('.d.ts'));
  for (const file of dts) {
    const text = readFileSync(join(ROOT, 'dist', 'src', file), 'utf8');
    assert.doesNotMatch(text, /\breadRaw\b|\beventAt\b/, file);
  }
  const dir = mkdtempSync(join(tmpdir(), 'uffd-types-'));
  try {
    const r = consumerProject(dir, "import { readRaw } from 'userfaultfd/dist/src/core/uffd.js';\nconsole.log(readRaw);\n");
    assert.notEqual(r.status, 0);
    assert.match(r.output, /TS2307|TS2305|TS2459|TS2724/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('UnixConnection: await receiveAsync() resolves when data arrives, and at the end of the stream', async () => {
  const [a, b] = UnixConnection.pair();
  try {
    const pending = a.receiveAsync();
    setTimeout(() => { b.send(new TextEncoder().encode('hello')); }, 20);
    const first = await pending;
    assert.equal(first.kind, 'data');
    assert.equal(first.kind === 'data' ? Buffer.from(first.data).toString() : '', 'hello');
    const gone = a.receiveAsync();
    b.close();
    assert.equal((await gone).kind, 'eof');
  } finally {
    a.close();
    b.close();
  }
  const [c, d] = UnixConnection.pair();
  try {
    const aborted = new AbortController();
    const waiting = c.receiveAsync({ signal: aborted.signal });
    setTimeout(() => { aborted.abort(new Error('stop waiting')); }, 20);
    await assert.rejects(waiting, /stop waiting/);
  } finally {
    c.close();
    d.close();
  }
});
