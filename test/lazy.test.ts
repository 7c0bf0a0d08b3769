// LazyMemory: every byte checked against its source, for each built-in source, sequential and random order,
// 4 KiB and hugetlb pages; read-ahead at the end; failing and short sources; close with faults in flight;
// two at once; a module source; exit without close.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { join } from 'node:path';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { pathToFileURL } from 'node:url';
import { bufferSource, fileSource, LazyMemory, moduleSource, probe, zeroSource } from '../src/index.js';
import type { LazyMemoryOptions, SourceSpec } from '../src/index.js';
import { freeHugePages } from '../src/system.js';
import { ScratchFile } from './support/faulter.js';
import { patternByte } from './fixtures/pattern-source.js';
import type { PatternOptions } from './fixtures/pattern-source.js';
import { ROOT } from './support/support.js';

const PATTERN = new URL('./fixtures/pattern-source.js', import.meta.url);
const sha = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

function patterned(length: number): Uint8Array {
  return Uint8Array.from({ length }, (_, i) => patternByte(i));
}

/** Touches one byte per page, in order or shuffled (a fixed seed: the same order every run). */
function touch(memory: ArrayBuffer, pageSize: number, order: 'sequential' | 'random'): number {
  const bytes = new Uint8Array(memory);
  const pages = Array.from({ length: bytes.length / pageSize }, (_, i) => i);
  if (order === 'random') {
    let seed = 12345;
    for (let i = pages.length - 1; i > 0; i--) {
      seed = (seed * 1103515245 + 12345) >>> 0;
      const j = seed % (i + 1);
      [pages[i], pages[j]] = [pages[j]!, pages[i]!];
    }
  }
  let sum = 0;
  for (const p of pages) sum += bytes[p * pageSize + (p % 97)]!;
  return sum;
}

async function withLazy<T>(options: LazyMemoryOptions, body: (lazy: LazyMemory) => T | Promise<T>): Promise<T> {
  const lazy = await LazyMemory.open(options);
  try {
    return await body(lazy);
  } finally {
    await lazy.close();
  }
}

const LENGTH = 3 * 1024 * 1024 + 1234; // not a whole number of pages
const expected = patterned(LENGTH);
const file = new ScratchFile(expected);
process.on('exit', () => { file[Symbol.dispose](); });

const sources: [string, () => SourceSpec][] = [
  ['file (pread)', () => fileSource(file.path)],
  ['file (mmap)', () => fileSource(file.path, { access: 'mmap' })],
  ['buffer', () => bufferSource(expected)],
  ['module', () => moduleSource(PATTERN, { length: LENGTH } satisfies PatternOptions)],
];

for (const [name, source] of sources) {
  for (const order of ['sequential', 'random'] as const) {
    for (const readahead of [1, 'auto'] as const) {
      test(`${name}, ${order}, readahead ${String(readahead)}: every byte matches the source`, async () => {
        await withLazy({ source: source(), readahead }, (lazy) => {
          assert.equal(lazy.sourceLength, LENGTH);
          assert.equal(lazy.length, Math.ceil(LENGTH / 4096) * 4096);
          touch(lazy.buffer, lazy.pageSize, order);
          const bytes = new Uint8Array(lazy.buffer);
          assert.equal(sha(bytes.subarray(0, LENGTH)), sha(expected));
          assert.ok(bytes.subarray(LENGTH).every((b) => b === 0), 'the tail of the last page reads as zeros');
          const stats = lazy.stats();
          assert.equal(stats.pagesServed, lazy.length / 4096, 'each page served once, none past the end');
          if (readahead === 1) assert.equal(stats.faults, stats.pagesServed);
          else assert.ok(stats.faults < stats.pagesServed, 'read-ahead saved faults');
          assert.equal(stats.sourceErrors, 0);
        });
      });
    }
  }
}

test('a zero source serves every page as zeros', async () => {
  await withLazy({ source: zeroSource(5 * 4096) }, (lazy) => {
    assert.ok(new Uint8Array(lazy.buffer).every((b) => b === 0));
    assert.equal(lazy.stats().pagesServed, 5);
  });
});

describe('hugetlb', { skip: freeHugePages() >= 4 ? false : 'fewer than 4 free huge pages (vm.nr_hugepages)' }, () => {
  for (const order of ['sequential', 'random'] as const) {
    test(`file source on 2 MiB pages, ${order}`, async () => {
      await withLazy({ source: fileSource(file.path), hugetlb: true, readahead: 1 }, (lazy) => {
        assert.equal(lazy.pageSize, 2 << 20);
        touch(lazy.buffer, lazy.pageSize, order);
        const bytes = new Uint8Array(lazy.buffer);
        assert.equal(sha(bytes.subarray(0, LENGTH)), sha(expected));
        assert.ok(bytes.subarray(LENGTH).every((b) => b === 0));
        assert.equal(lazy.stats().pagesServed, 2);
      });
    });
  }
});

test('read-ahead is clipped to the source: faults at the end never serve past it', async () => {
  await withLazy({ source: bufferSource(expected), readahead: 64 }, (lazy) => {
    const bytes = new Uint8Array(lazy.buffer);
    assert.equal(bytes[lazy.length - 1], 0);
    assert.equal(bytes[LENGTH - 1], expected[LENGTH - 1]);
    assert.equal(lazy.stats().pagesServed, 1, 'the last page only');
    assert.equal(bytes[0], expected[0]);
    assert.equal(lazy.stats().pagesServed, 65);
  });
});

test('present pages are never re-copied: read-ahead stops at pages already served', async () => {
  await withLazy({ source: bufferSource(expected), readahead: 8 }, (lazy) => {
    const bytes = new Uint8Array(lazy.buffer);
    assert.equal(bytes[4 * 4096], expected[4 * 4096]); // pages 4..11
    assert.equal(bytes[0], expected[0]); // pages 0..3, then 4..7 are present: skipped
    assert.equal(lazy.stats().pagesServed, 12);
    assert.equal(sha(bytes.subarray(0, 12 * 4096)), sha(expected.subarray(0, 12 * 4096)));
  });
});

test('prefetch fills everything in the background; demand faults still get the right bytes', async () => {
  await withLazy({ source: bufferSource(expected), prefetch: true, readahead: 1 }, async (lazy) => {
    const bytes = new Uint8Array(lazy.buffer);
    assert.equal(bytes[LENGTH - 1], expected[LENGTH - 1]);
    const deadline = Date.now() + 10_000;
    while (lazy.stats().pagesServed < lazy.length / 4096 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    const stats = lazy.stats();
    assert.equal(stats.pagesServed, lazy.length / 4096);
    assert.ok(stats.prefetchPages > 0);
    assert.equal(sha(bytes.subarray(0, LENGTH)), sha(expected));
  });
});

test('a failing source is retried: reads that fail twice then succeed serve the right bytes', async () => {
  const source = moduleSource(PATTERN, { length: 64 * 4096, failAt: 10 * 4096, failTimes: 2 } satisfies PatternOptions);
  await withLazy({ source, readahead: 1, retryDelayMs: 1 }, (lazy) => {
    const bytes = new Uint8Array(lazy.buffer);
    assert.equal(bytes[10 * 4096 + 5], patternByte(10 * 4096 + 5));
    assert.equal(lazy.stats().sourceErrors, 2);
  });
});

for (const [what, options] of [
  ['a source that keeps failing', { length: 16 * 4096, failAt: 3 * 4096 }],
  ['a source shorter than it claims', { length: 16 * 4096, realLength: 3 * 4096 + 100 }],
] as [string, PatternOptions][]) {
  test(`${what}, onSourceError 'zero': zeros and an 'error' event, never wrong data`, async () => {
    await withLazy({ source: moduleSource(PATTERN, { ...options, async: true }), onSourceError: 'zero', readahead: 1, retries: 2, retryDelayMs: 1 }, async (lazy) => {
      const error = once(lazy, 'error');
      const bytes = new Uint8Array(lazy.buffer);
      assert.equal(bytes[2 * 4096 + 7], patternByte(2 * 4096 + 7));
      assert.ok(bytes.subarray(3 * 4096, 4 * 4096).every((b) => b === 0), 'the failed page is zeros');
      const [err] = (await error) as [Error & { page: number; code: string }];
      assert.equal(err.code, 'ERR_UFFD_SOURCE');
      assert.equal(err.page, 3);
      const stats = lazy.stats();
      assert.equal(stats.zeroFilled, 1);
      assert.equal(stats.sourceErrors, 3, 'one try and two retries');
    });
  });
}

const childScript = (body: string): string => `
  import { LazyMemory, moduleSource, bufferSource } from ${JSON.stringify(pathToFileURL(join(ROOT, 'dist', 'src', 'index.js')).href)};
  ${body}
`;

// The fail-stop signal: SIGBUS from a poisoned page; SIGSEGV from the PROT_NONE used where POISON is missing.
const FAIL_STOP = probe().features.has('POISON') ? 'SIGBUS' : 'SIGSEGV';

test("onSourceError 'poison' (the default): the toucher dies with SIGBUS, it never sees wrong data", () => {
  const script = childScript(`
    const lazy = await LazyMemory.open({ source: moduleSource(${JSON.stringify(PATTERN.href)}, { length: 8 * 4096, failAt: 4096 }), readahead: 1, retries: 1, retryDelayMs: 1 });
    const bytes = new Uint8Array(lazy.buffer);
    process.stdout.write('page0 ' + bytes[0] + '\\n');
    process.stdout.write('page1 ' + bytes[4096] + '\\n');
  `);
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.signal, FAIL_STOP, `status ${String(r.status)} ${r.stderr}`);
  assert.equal(r.stdout, `page0 ${String(patternByte(0))}\n`);
});

test('a resolver that dies while the main thread waits on a fault: SIGBUS (fail-stop), never a hang', () => {
  const script = childScript(`
    const lazy = await LazyMemory.open({ source: moduleSource(${JSON.stringify(PATTERN.href)}, { length: 8 * 4096, exitAt: 3 * 4096 }), readahead: 1 });
    lazy.on('error', () => {});
    const bytes = new Uint8Array(lazy.buffer);
    process.stdout.write('page0 ' + bytes[0] + '\\n');
    process.stdout.write('page3 ' + bytes[3 * 4096] + '\\n');
  `);
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.signal, FAIL_STOP, `status ${String(r.status)} signal ${String(r.signal)} ${r.stderr}`);
  assert.equal(r.stdout, `page0 ${String(patternByte(0))}\n`);
});

test('Node flags of the process (a V8 flag, --input-type) do not stop the resolver worker', () => {
  for (const flags of [['--max-old-space-size=512'], ['--max-old-space-size=512', '--input-type=module']]) {
    const script = childScript(`
      const lazy = await LazyMemory.open({ source: bufferSource(new Uint8Array(8192).fill(4)) });
      process.stdout.write(String(new Uint8Array(lazy.buffer)[5000]));
      await lazy.close();
    `);
    const dir = mkdtempSync(join(tmpdir(), 'uffd-flags-'));
    const file = join(dir, 'main.mjs');
    writeFileSync(file, script);
    const args = flags.includes('--input-type=module') ? [...flags, '-e', script] : [...flags, file];
    const r = spawnSync(process.execPath, args, { encoding: 'utf8', timeout: 30_000 });
    rmSync(dir, { recursive: true, force: true });
    assert.equal(r.status, 0, `${flags.join(' ')}: ${r.stderr}`);
    assert.equal(r.stdout, '4');
  }
});

test('a process that exits with LazyMemory open neither hangs nor crashes', () => {
  for (const ending of ['', 'process.exit(3);']) {
    const script = childScript(`
      const lazy = await LazyMemory.open({ source: bufferSource(new Uint8Array(1 << 20).fill(9)) });
      process.stdout.write(String(new Uint8Array(lazy.buffer)[12345]));
      ${ending}
    `);
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.signal, null, r.stderr);
    assert.equal(r.status, ending === '' ? 0 : 3, r.stderr);
    assert.equal(r.stdout, '9');
  }
});

test('process.exit while a threadpool write of lazy memory waits on a slow source: no hang', () => {
  const script = childScript(`
    import { open, write } from 'node:fs';
    const lazy = await LazyMemory.open({ source: moduleSource(${JSON.stringify(PATTERN.href)}, { length: 16 * 4096, async: true, delayMs: 500 }), readahead: 1 });
    open('/dev/null', 'w', (err, fd) => {
      write(fd, new Uint8Array(lazy.buffer), (err, n) => process.stdout.write(err ? err.code : 'wrote ' + n));
      setTimeout(() => process.exit(4), 50);
    });
  `);
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.signal, null, `hung or crashed: ${r.stderr}`);
  assert.equal(r.status, 4, r.stderr);
});

test('close() while a threadpool read into lazy memory waits on a slow source: no hang, the read completes', async () => {
  const lazy = await LazyMemory.open({ source: moduleSource(PATTERN, { length: 64 * 4096, async: true } satisfies PatternOptions), readahead: 1 });
  using target = new ScratchFile(new Uint8Array(0));
  const written = target.writeFrom(new Uint8Array(lazy.buffer)); // the kernel reads lazy memory on a pool thread
  await lazy.close();
  const n = await written.catch((err: unknown) => err);
  assert.ok(typeof n === 'number' || (n as { code?: string }).code === 'EFAULT', String(n));
});

test('two LazyMemory objects at once, touched alternately', async () => {
  const a = await LazyMemory.open({ source: bufferSource(expected), readahead: 'auto' });
  const b = await LazyMemory.open({ source: moduleSource(PATTERN, { length: LENGTH } satisfies PatternOptions), readahead: 1 });
  try {
    const x = new Uint8Array(a.buffer);
    const y = new Uint8Array(b.buffer);
    for (let off = 0; off < LENGTH; off += 4096 * 7) {
      assert.equal(x[off], expected[off]);
      assert.equal(y[off], expected[off]);
    }
    assert.equal(sha(y.subarray(0, LENGTH)), sha(x.subarray(0, LENGTH)));
  } finally {
    await Promise.all([a.close(), b.close()]);
  }
});

test('after close() the buffer is detached', async () => {
  const lazy = await LazyMemory.open({ source: zeroSource(4096) });
  const bytes = new Uint8Array(lazy.buffer);
  await lazy.close();
  await lazy.close();
  assert.equal(bytes.length, 0);
});

test('userModeOnly: kernel-mode access to untouched lazy memory is EFAULT; touched pages work', async () => {
  await withLazy({ source: bufferSource(expected), userModeOnly: true, readahead: 1 }, async (lazy) => {
    using out = new ScratchFile(new Uint8Array(0));
    await assert.rejects(out.writeFrom(new Uint8Array(lazy.buffer, 0, 4096)), { code: 'EFAULT' });
    assert.equal(new Uint8Array(lazy.buffer)[4096], expected[4096]); // a user-mode touch faults normally
    assert.equal(await out.writeFrom(new Uint8Array(lazy.buffer, 4096, 4096)), 4096);
  });
});

test('LazyMemory.open: bad options are TypeErrors/RangeErrors before anything starts', async () => {
  await assert.rejects(LazyMemory.open({} as never), TypeError);
  await assert.rejects(LazyMemory.open({ source: { kind: 'http' } } as never), TypeError);
  await assert.rejects(LazyMemory.open({ source: zeroSource(4096), readahead: 0 }), RangeError);
  await assert.rejects(LazyMemory.open({ source: zeroSource(4096), onSourceError: 'ignore' as never }), TypeError);
  await assert.rejects(LazyMemory.open({ source: zeroSource(4096), color: 'red' } as never), { message: /unknown option "color"/ });
  assert.throws(() => zeroSource(0), RangeError);
  assert.throws(() => fileSource(''), TypeError);
  await assert.rejects(LazyMemory.open({ source: fileSource('/nonexistent/file') }), { code: 'ENOENT', message: /could not be opened: cannot use \/nonexistent\/file as a page source: no such file/ });
  await assert.rejects(LazyMemory.open({ source: moduleSource(new URL('./support/support.js', import.meta.url)) }), { message: /default function/ });
});
