// The `uffd` command explains itself: --help for every subcommand, --version, and for each operational
// failure a new user hits, one line with what happened and what to do (no stack trace unless --debug),
// with the documented exit code; --json gives the failure as one JSON object.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PageServer } from '../src/index.js';
import { randomPages } from '../src/cli/demo.js';
import { CLI, isRoot, ROOT } from './support/support.js';

interface Run { status: number | null; stdout: string; stderr: string }

function uffd(args: string[], options: { uid?: number } = {}): Run {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 60_000, ...(options.uid === undefined ? {} : { uid: options.uid, gid: options.uid, cwd: '/' }) });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Async, for a failure that needs this process's event loop to keep running (a live server). */
function uffdAsync(args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    child.on('close', (status) => { resolve({ status, stdout, stderr }); });
  });
}

/** One line on stderr, no stack frame, no Node banner. */
function assertOneLine(r: Run, pattern: RegExp): void {
  const lines = r.stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, `one line, got:\n${r.stderr}`);
  assert.doesNotMatch(r.stderr, /^\s+at /m);
  assert.doesNotMatch(r.stderr, /Node\.js v/);
  assert.match(lines[0] ?? '', pattern);
}

function withDir(fn: (dir: string) => Promise<void> | void): () => Promise<void> {
  return async () => {
    const dir = mkdtempSync(join(tmpdir(), 'uffd-cli-'));
    try {
      await fn(dir);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
}

const COMMANDS = ['probe', 'serve', 'demo', 'ws', 'report'];

test('every subcommand answers --help (and -h, and `uffd help <command>`) with its usage, exit 0', () => {
  for (const command of COMMANDS) {
    for (const args of [[command, '--help'], [command, '-h'], ['help', command]]) {
      const r = uffd(args);
      assert.equal(r.status, 0, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stdout, new RegExp(`^usage: uffd ${command}`), args.join(' '));
      assert.match(r.stdout, /Exit code/);
      assert.equal(r.stderr, '');
    }
  }
  const top = uffd(['--help']);
  assert.equal(top.status, 0);
  for (const command of COMMANDS) assert.match(top.stdout, new RegExp(`^  ${command} `, 'm'));
  assert.match(top.stdout, /exit codes:\n\s+0\s+done\n\s+1\s+operational failure/);
  const bare = uffd([]);
  assert.equal(bare.status, 2, 'no command is a usage error');
  assert.match(bare.stderr, /^usage: uffd/);
});

test('uffd --version: the package version, text and --json', () => {
  const { version } = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
  const text = uffd(['--version']);
  assert.equal(text.status, 0);
  assert.equal(text.stdout, `uffd ${version} (userfaultfd on Node ${process.version}, linux-${process.arch})\n`);
  const json = JSON.parse(uffd(['--version', '--json']).stdout) as { version: string; node: string };
  assert.equal(json.version, version);
  assert.equal(json.node, process.version);
});

test('usage errors: one line naming the bad value and pointing at --help, exit 2', () => {
  assertOneLine(uffd(['serve', '--memory', 'x']), /^uffd serve: --socket and --memory are required; see `uffd serve --help`$/);
  assertOneLine(uffd(['serve', '--socket', 's', '--memory', 'm', '--readahead', 'many']), /--readahead must be a whole number, got many/);
  assertOneLine(uffd(['demo', '--size', '3']), /--size must be a whole number of MiB in \[16, 65536\], got 3/);
  assertOneLine(uffd(['demo', '--help-me']), /^uffd demo: Unknown option '--help-me'/);
  const frob = uffd(['frobnicate']);
  assert.equal(frob.status, 2);
  assertOneLine(frob, /^uffd: unknown command "frobnicate"; the commands are probe, serve, (criu-lazy-pages, )?demo/);
});

test('uffd serve: the socket\'s directory does not exist -> one line naming --socket, exit 1', withDir((dir) => {
  writeFileSync(join(dir, 'mem'), Buffer.alloc(4096, 1));
  const r = uffd(['serve', '--socket', join(dir, 'no', 'such', 'dir', 's.sock'), '--memory', join(dir, 'mem')]);
  assert.equal(r.status, 1);
  assertOneLine(r, new RegExp(`^uffd serve: ENOENT: no such file or directory, listen\\(.*\\); the directory ${join(dir, 'no', 'such', 'dir')} does not exist: create it \\(mkdir -p\\) or choose another --socket$`));
}));

test('uffd serve: the memory file is missing, a directory, or empty -> one line naming it, exit 1', withDir((dir) => {
  const socket = join(dir, 's.sock');
  const missing = uffd(['serve', '--socket', socket, '--memory', join(dir, 'nope.mem')]);
  assert.equal(missing.status, 1);
  assertOneLine(missing, /cannot use .*nope\.mem as a page source: no such file; check the path given to --memory$/);
  mkdirSync(join(dir, 'adir'));
  const directory = uffd(['serve', '--socket', socket, '--memory', join(dir, 'adir')]);
  assert.equal(directory.status, 1);
  assertOneLine(directory, /adir as a page source: it is a directory; a source is a file; --memory needs a file, not a directory$/);
  writeFileSync(join(dir, 'empty.mem'), '');
  const empty = uffd(['serve', '--socket', socket, '--memory', join(dir, 'empty.mem')]);
  assert.equal(empty.status, 1);
  assertOneLine(empty, /empty\.mem as a page source: the file is empty \(0 bytes\)/);
}));

test('uffd serve --json: a failure is one JSON object on stderr with code, message and remedy', withDir((dir) => {
  const r = uffd(['serve', '--socket', join(dir, 's.sock'), '--memory', join(dir, 'nope.mem'), '--json']);
  assert.equal(r.status, 1);
  assert.equal(r.stdout, '');
  const doc = JSON.parse(r.stderr) as { error: { command: string; exitCode: number; code: string; message: string; remedy: string } };
  assert.deepEqual({ ...doc.error, message: undefined }, { command: 'uffd serve', exitCode: 1, code: 'ENOENT', message: undefined, remedy: 'check the path given to --memory' });
  assert.match(doc.error.message, /nope\.mem/);
}));

test('uffd serve: the socket is in use by a live server -> one line with the remedy, exit 1', withDir(async (dir) => {
  const memory = join(dir, 'mem');
  writeFileSync(memory, Buffer.alloc(4096, 1));
  const socket = join(dir, 's.sock');
  const server = await PageServer.listen({ socket, memory });
  try {
    const r = await uffdAsync(['serve', '--socket', socket, '--memory', memory]);
    assert.equal(r.status, 1);
    assertOneLine(r, /^uffd serve: EADDRINUSE: address already in use, listen\(.*\).*; a server is already listening there .*choose another --socket$/);
  } finally {
    await server.close();
  }
}));

test('uffd serve: a file that is not a socket in the way -> one line, exit 1', withDir((dir) => {
  const memory = join(dir, 'mem');
  writeFileSync(memory, Buffer.alloc(4096, 1));
  writeFileSync(join(dir, 'taken'), 'a plain file');
  const r = uffd(['serve', '--socket', join(dir, 'taken'), '--memory', memory]);
  assert.equal(r.status, 1);
  assertOneLine(r, /^uffd serve: EADDRINUSE: .*choose another --socket$/);
}));

test('--debug adds the stack trace; without it there is none', withDir((dir) => {
  const args = ['serve', '--socket', join(dir, 's.sock'), '--memory', join(dir, 'nope.mem')];
  assert.doesNotMatch(uffd(args).stderr, /^\s+at /m);
  const debug = uffd([...args, '--debug']);
  assert.equal(debug.status, 1);
  assert.match(debug.stderr, /^uffd serve: .*nope\.mem/);
  assert.match(debug.stderr, /^SourceOpenError: .*\n\s+at /m);
}));

test('uffd serve: an unreadable memory file (as nobody) -> EACCES, one line, exit 1', { skip: isRoot ? false : 'needs root to drop to nobody' }, withDir((dir) => {
  chmodSync(dir, 0o755);
  const memory = join(dir, 'secret.mem');
  writeFileSync(memory, Buffer.alloc(4096, 1), { mode: 0o600 });
  const r = uffd(['serve', '--socket', join(dir, 's.sock'), '--memory', memory], { uid: 65534 });
  assert.equal(r.status, 1, r.stderr);
  assertOneLine(r, /secret\.mem as a page source: no permission to read it; no permission: run as a user who may read it, or change its mode$/);
}));

test('uffd demo --json: reads 500 distinct random pages; the generator is exact', () => {
  const pages = randomPages(500, 65536);
  assert.equal(new Set(pages).size, 500);
  assert.ok(pages.every((p) => Number.isInteger(p) && p >= 0 && p < 65536));
  assert.deepEqual(randomPages(500, 65536), pages, 'the same pages every run');
  const r = uffd(['demo', '--size', '16', '--json']);
  assert.equal(r.status, 0, r.stderr);
  const doc = JSON.parse(r.stdout) as { pages: number; sequentialPages: number; randomPages: number; pagesResident: number; stats: { faults: number } };
  assert.equal(doc.pages, 4096);
  assert.equal(doc.randomPages, 500);
  assert.ok(doc.pagesResident >= doc.sequentialPages, 'the sequential part is resident');
  assert.ok(doc.stats.faults > 0);
});
