// The page server against a C peer that is Firecracker byte for byte on the wire (test/native/fake-vmm.c):
// every protocol version, 4 KiB and 2 MiB pages, several vCPU threads, the balloon before and during the
// run, and bad peers. Every page the guest touches is checked against the memory file, then every byte.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freeHugePages } from '../src/system.js';
import { PageServer } from '../src/index.js';
import type { PageServerOptions, ServerLog } from '../src/index.js';
import { snapshotIdentity, writeWorkingSet } from '../src/metrics/working-set.js';
import { ROOT } from './support/support.js';

const FAKE_VMM = join(ROOT, 'test', 'native', 'bin', 'fake-vmm');
const dir = mkdtempSync(join(tmpdir(), 'uffd-fakevmm-'));
process.on('exit', () => { rmSync(dir, { recursive: true, force: true }); });
const MEMORY = join(dir, 'memory.bin');
const MEMORY_BYTES = 8 << 20;
writeFileSync(MEMORY, Uint8Array.from({ length: MEMORY_BYTES }, (_, i) => ((i >>> 12) * 7 + i * 13) & 0xff));
let sockets = 0;

interface VmmResult {
  code: number | null;
  stderr: string;
  out: { touched?: number; verified?: number; mismatches?: number; zeroChecked?: number } | undefined;
}

async function runVmm(socket: string, args: string[]): Promise<VmmResult> {
  const child = spawn(FAKE_VMM, ['--socket', socket, '--memory', MEMORY, '--timeout', '60000', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  const [code] = (await once(child, 'close')) as [number | null];
  const line = stdout.trim().split('\n').at(-1);
  return { code, stderr, out: line === undefined || line === '' ? undefined : JSON.parse(line) as VmmResult['out'] };
}

async function serve(options: Partial<PageServerOptions>, args: string[]): Promise<{ vmm: VmmResult; logs: ServerLog[] }> {
  const socket = join(dir, `f${String(sockets++)}.sock`);
  const server = await PageServer.listen({ socket, memory: MEMORY, readahead: 8, ...options });
  const logs: ServerLog[] = [];
  server.on('log', (e) => logs.push(e));
  try {
    const vmm = await runVmm(socket, args);
    const deadline = Date.now() + 10_000;
    while (!logs.some((e) => e.event === 'gone' || e.event === 'refused') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    return { vmm, logs };
  } finally {
    await server.close();
  }
}

const skip = existsSync(FAKE_VMM) ? false : `${FAKE_VMM} is not built (npm run build:helpers)`;
const hugeSkip = skip || (freeHugePages() >= 8 ? false : 'fewer than 8 free huge pages (vm.nr_hugepages)');

function verified(r: VmmResult, pageSize = 4096): void {
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.out?.mismatches, 0);
  assert.equal(r.out?.touched, MEMORY_BYTES / pageSize);
}

describe('restores by a Firecracker-exact peer', { skip }, () => {
  for (const protocol of ['1.1', '1.7', '1.12']) {
    test(`protocol ${protocol}, 3 regions, 2 vCPU threads in random order`, async () => {
      const { vmm, logs } = await serve({}, ['--protocol', protocol, '--regions', '3', '--threads', '2', '--random']);
      verified(vmm);
      const client = logs.find((e) => e.event === 'client');
      assert.ok(client?.event === 'client');
      assert.equal(client.version, protocol);
      assert.equal(client.regions.length, 3);
      const gone = logs.find((e) => e.event === 'gone');
      assert.ok(gone?.event === 'gone', JSON.stringify(logs.at(-1)));
      assert.equal(gone.reason, 'the process exited');
    });
  }

  test('a working set (10% in a fixed random order, guest work between touches): only it is faulted and verified', async () => {
    const { vmm, logs } = await serve({ readahead: 1 }, ['--random', '--working-set', '10', '--work-us', '20']);
    assert.equal(vmm.code, 0, vmm.stderr);
    const pages = Math.floor((MEMORY_BYTES / 4096) * 0.1);
    assert.equal(vmm.out?.touched, pages);
    assert.equal(vmm.out?.verified, pages);
    assert.equal(vmm.out?.mismatches, 0);
    const gone = logs.find((e) => e.event === 'gone');
    assert.ok(gone?.event === 'gone');
    assert.equal(gone.summary.faults, pages, 'one fault per working-set page, nothing else');
  });

  test('write faults', async () => {
    verified((await serve({}, ['--write', '--threads', '2'])).vmm);
  });

  test('balloon after the run: removed pages read as zeros, the rest stays right', async () => {
    const { vmm, logs } = await serve({}, ['--balloon']);
    verified(vmm);
    assert.ok((vmm.out?.zeroChecked ?? 0) > 0);
    const gone = logs.find((e) => e.event === 'gone');
    assert.ok(gone?.event === 'gone');
    assert.ok(gone.summary.removes >= 1);
  });

  test('balloon during the run, with working-set prefetch racing it (EAGAIN retried, never fatal)', async () => {
    const record = join(dir, 'ws.json');
    const offsets = Array.from({ length: MEMORY_BYTES / 4096 }, (_, i) => i * 4096);
    writeWorkingSet(record, {
      format: 'uffd-working-set', version: 1, pageSize: 4096, snapshot: snapshotIdentity(MEMORY), recordedAt: new Date().toISOString(),
      ended: 'merged', offsets, micros: offsets.map(() => 0),
    });
    const { vmm, logs } = await serve({ prefetch: record, readahead: 1 }, ['--balloon-during', '--threads', '2']);
    verified(vmm);
    const gone = logs.find((e) => e.event === 'gone');
    assert.ok(gone?.event === 'gone');
    assert.equal(gone.reason, 'the process exited', 'the client was not dropped');
  });

  test('a VMM that dies with faults outstanding is dropped; the next one is served', async () => {
    const socket = join(dir, `f${String(sockets++)}.sock`);
    const server = await PageServer.listen({ socket, memory: MEMORY });
    const logs: ServerLog[] = [];
    server.on('log', (e) => logs.push(e));
    try {
      const dying = await runVmm(socket, ['--die-after', '200', '--threads', '2']);
      assert.equal(dying.code, null, 'killed by its own SIGKILL');
      verified(await runVmm(socket, ['--protocol', '1.7']));
      const deadline = Date.now() + 10_000;
      while (logs.filter((e) => e.event === 'gone').length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
      assert.equal(logs.filter((e) => e.event === 'gone').length, 2);
    } finally {
      await server.close();
    }
  });

  for (const [what, args, reason] of [
    ['an eventfd instead of the uffd', ['--fds', 'eventfd'], /not a userfaultfd/],
    ['/dev/null instead of the uffd', ['--fds', 'devnull'], /not a userfaultfd/],
    ['the uffd and an eventfd', ['--fds', 'uffd,eventfd'], /exactly one descriptor.*got 2/],
    ['no descriptor', ['--fds', 'none'], /exactly one descriptor.*got 0/],
    ['trailing data', ['--payload', '@json@x'], /trailing/i],
    ['more memory than the file holds', ['--size', String(MEMORY_BYTES * 2), '--touch', 'none'], /memory file/],
  ] as [string, string[], RegExp][]) {
    test(`refused: ${what}`, async () => {
      const { logs } = await serve({}, [...args, '--touch', 'none', '--hold', '200']);
      const refused = logs.find((e) => e.event === 'refused');
      assert.ok(refused?.event === 'refused', JSON.stringify(logs));
      assert.match(refused.reason, reason);
    });
  }

  test('a body split into 10-byte reads is reassembled', async () => {
    const { vmm } = await serve({}, ['--split', '10', '--split-delay', '2']);
    verified(vmm);
  });
});

describe('2 MiB pages (hugetlb)', { skip: hugeSkip }, () => {
  for (const protocol of ['1.7', '1.12']) {
    test(`protocol ${protocol}, 2 regions, random, then the balloon (zero-filled copies: no ZEROPAGE on hugetlb)`, async () => {
      const { vmm, logs } = await serve({ readahead: 2 }, ['--protocol', protocol, '--hugetlb', '--regions', '2', '--random', '--balloon', '1:1']);
      verified(vmm, 2 << 20);
      const client = logs.find((e) => e.event === 'client');
      assert.ok(client?.event === 'client');
      assert.equal(client.pageSize, 2 << 20);
    });
  }
});
