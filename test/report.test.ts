// `uffd report`: records of two real restores (fake VMM, overlapping halves of one snapshot) drawn into one
// self-contained HTML page, rendered by headless Chromium (Debian's package): the page's own script finishes
// without errors, the DOM holds every picture, and a screenshot is taken and checked for content.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { inflateSync } from 'node:zlib';
import { PageServer } from '../src/index.js';
import type { ServerLog } from '../src/index.js';
import { CLI, isRoot, ROOT } from './support/support.js';

const dir = mkdtempSync(join(tmpdir(), 'uffd-report-'));
process.on('exit', () => { rmSync(dir, { recursive: true, force: true }); });
const MEMORY = join(dir, 'memory.bin');
const MEMORY_BYTES = 4 << 20;
writeFileSync(MEMORY, Uint8Array.from({ length: MEMORY_BYTES }, (_, i) => ((i >>> 12) * 3 + i) & 0xff));
const FAKE_VMM = join(ROOT, 'test', 'native', 'bin', 'fake-vmm');
const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => existsSync(p));
const skip = !existsSync(FAKE_VMM) ? `${FAKE_VMM} is not built (npm run build:helpers)`
  : CHROMIUM === undefined ? 'Chromium is not installed (apt-get install chromium; .ci/run installs it)' : false;

/** Records one restore by the fake VMM with `args`; returns the record's path. */
async function recordRestore(name: string, args: string[]): Promise<string> {
  const server = await PageServer.listen({ socket: join(dir, `${name}.sock`), memory: MEMORY, readahead: 1, record: join(dir, name) });
  const logs: ServerLog[] = [];
  server.on('log', (e) => logs.push(e));
  try {
    const vmm = spawn(FAKE_VMM, ['--socket', server.socket, '--memory', MEMORY, '--timeout', '60000', ...args], { stdio: 'ignore' });
    const [code] = (await once(vmm, 'exit')) as [number | null];
    assert.equal(code, 0);
    const deadline = Date.now() + 10_000;
    while (!logs.some((e) => e.event === 'recorded') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    const rec = logs.find((e) => e.event === 'recorded');
    assert.ok(rec?.event === 'recorded', JSON.stringify(logs));
    return rec.path;
  } finally {
    await server.close();
  }
}

/** Headless Chromium on a file URL; the sandbox needs a non-root user, which CI is not. */
function chromium(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(CHROMIUM ?? 'chromium', [
    '--headless', '--disable-gpu', '--no-first-run', '--no-default-browser-check', '--disable-extensions', '--hide-scrollbars',
    ...(isRoot ? ['--no-sandbox'] : []), `--user-data-dir=${join(dir, 'profile')}`, ...args,
  ], { encoding: 'utf8', timeout: 120_000, maxBuffer: 64 << 20 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Width, height and the number of distinct byte values of a PNG's pixels (its IDAT, inflated). */
function pngFacts(path: string): { width: number; height: number; distinct: number } {
  const png = readFileSync(path);
  assert.deepEqual([...png.subarray(0, 8)], [137, 80, 78, 71, 13, 10, 26, 10], 'a PNG');
  const idat: Buffer[] = [];
  let width = 0;
  let height = 0;
  for (let at = 8; at < png.length;) {
    const length = png.readUInt32BE(at);
    const type = png.toString('latin1', at + 4, at + 8);
    const data = png.subarray(at + 8, at + 8 + length);
    if (type === 'IHDR') {
      width = data.readUInt32BE(0);
      height = data.readUInt32BE(4);
    }
    if (type === 'IDAT') idat.push(data);
    at += length + 12;
  }
  const pixels = inflateSync(Buffer.concat(idat));
  const seen = new Set<number>();
  for (let i = 0; i < pixels.length; i += 7) seen.add(pixels[i] ?? 0);
  return { width, height, distinct: seen.size };
}

describe('uffd report', { skip }, () => {
  test('two overlapping restores: one self-contained page that Chromium renders without errors; a screenshot', async () => {
    const half = String(MEMORY_BYTES / 2);
    const a = await recordRestore('a', ['--size', String(MEMORY_BYTES * 3 / 4), '--random', '--threads', '2']);
    const b = await recordRestore('b', ['--file-offset', half]);
    const out = join(dir, 'report.html');
    const made = spawnSync(process.execPath, [CLI, 'report', a, b, '--out', out], { encoding: 'utf8' });
    assert.equal(made.status, 0, made.stderr);
    const html = readFileSync(out, 'utf8');
    assert.doesNotMatch(html, /https?:\/\/|<link|\bsrc=|@import|url\(/i, 'nothing fetched from anywhere');

    const dom = chromium(['--virtual-time-budget=5000', '--dump-dom', pathToFileURL(out).href]);
    assert.equal(dom.status, 0, dom.stderr);
    assert.match(dom.stdout, /<body data-rendered="ok">/, `the page's script finished without errors: ${dom.stdout.slice(0, 2000)}`);
    assert.match(dom.stdout, /<div id="errors"><\/div>/);
    assert.equal((dom.stdout.match(/<section class="card" data-record=/g) ?? []).length, 2, 'a card per record');
    assert.match(dom.stdout, /id="overlap"/);
    assert.match(dom.stdout, /Jaccard 0\.250: 256 pages in both, 512 only in .*, 256 only in/, 'A: pages [0, 768), B: [512, 1024)');
    assert.equal((dom.stdout.match(/<canvas /g) ?? []).length, 2 * 3 + 1, 'heat map, faults over time, latency per record; the overlap');

    const shot = join(dir, 'report.png');
    const taken = chromium(['--window-size=1280,1900', `--screenshot=${shot}`, '--virtual-time-budget=5000', pathToFileURL(out).href]);
    assert.equal(taken.status, 0, taken.stderr);
    assert.ok(statSync(shot).size > 10_000);
    const facts = pngFacts(shot);
    assert.deepEqual([facts.width, facts.height], [1280, 1900]);
    assert.ok(facts.distinct > 40, `the screenshot shows pictures, not a blank page (${String(facts.distinct)} distinct byte values)`);
    const keep = process.env.UFFD_REPORT_SCREENSHOT;
    if (keep !== undefined && keep !== '') copyFileSync(shot, keep);
  });
});
