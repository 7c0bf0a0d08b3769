// s3Source against an S3-protocol server on loopback that checks every SigV4 signature with an independent
// signer: a wrong secret and an unsigned request are refused (403), path- and virtual-host-style restores
// are byte-exact (LazyMemory hashing the whole object), a pack works under a key prefix, credentials come
// from the AWS_* variables too, and the secret appears in no error.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import http from 'node:http';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LazyMemory, RemoteSourceError, s3Source } from '../src/index.js';
import { openSource } from '../src/sources/source.js';
import { S3Server } from './support/s3-server.js';
import { CLI } from './support/support.js';

const LENGTH = 1024 * 1024 + 4321;
const CHUNK = 128 * 1024;
const sha = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');
const object = Uint8Array.from({ length: LENGTH }, (_, i) => ((i >>> 12) * 17 + i * 5 + 1) & 0xff);
const scratch = mkdtempSync(join(tmpdir(), 'uffd-s3t-'));
process.on('exit', () => { rmSync(scratch, { recursive: true, force: true }); });

let s3: S3Server;

async function restore(spec: ReturnType<typeof s3Source>): Promise<string> {
  const lazy = await LazyMemory.open({ source: spec, readahead: 8 });
  try {
    assert.equal(lazy.sourceLength, LENGTH);
    return sha(new Uint8Array(lazy.buffer, 0, LENGTH));
  } finally {
    await lazy.close();
  }
}

describe('s3Source against a SigV4-checking S3 server', () => {
  before(async () => {
    s3 = await S3Server.start();
    mkdirSync(join(s3.root, 'snapshots', 'vm1'), { recursive: true });
    writeFileSync(join(s3.root, 'snapshots', 'vm1', 'memory.bin'), object);
    writeFileSync(join(scratch, 'memory.bin'), object);
    const packed = spawnSync(process.execPath, [CLI, 'pack', join(scratch, 'memory.bin'), '--out', join(s3.root, 'snapshots', 'vm1', 'pack'), '--chunk', '64K', '--compress', 'zstd'], { encoding: 'utf8' });
    assert.equal(packed.status, 0, packed.stderr);
  });
  after(async () => { await s3.stop(); });

  test('the server refuses an unsigned request and a wrong signature', async () => {
    const status = await new Promise<number>((resolve) => {
      http.get(`${s3.endpoint}/snapshots/vm1/memory.bin`, { headers: { range: 'bytes=0-9' } }, (res) => { res.resume(); resolve(res.statusCode ?? 0); });
    });
    assert.equal(status, 403);
    const secret = 'not-the-secret-at-all';
    await assert.rejects(openSource(s3Source({ endpoint: s3.endpoint, region: s3.region, bucket: 'snapshots', key: 'vm1/memory.bin', credentials: { accessKeyId: s3.credentials.accessKeyId, secretAccessKey: secret }, retries: 0 })), (err: unknown) => {
      assert.ok(err instanceof RemoteSourceError);
      assert.equal(err.status, 403);
      assert.doesNotMatch(`${err.message} ${String(err.stack)}`, new RegExp(`${secret}|${s3.credentials.secretAccessKey}`));
      return true;
    });
    const refused = (await s3.log()).filter((e) => e.status === 403);
    assert.ok(refused.length >= 2);
  });

  test('path style: LazyMemory restores every byte', async () => {
    assert.equal(await restore(s3Source({ endpoint: s3.endpoint, region: s3.region, bucket: 'snapshots', key: 'vm1/memory.bin', credentials: s3.credentials, chunkSize: CHUNK })), sha(object));
  });

  test('virtual-host style (bucket.localhost): LazyMemory restores every byte', async () => {
    const before = (await s3.log()).length;
    assert.equal(await restore(s3Source({ endpoint: `http://localhost:${String(s3.port)}`, style: 'virtual-host', region: s3.region, bucket: 'snapshots', key: 'vm1/memory.bin', credentials: s3.credentials, chunkSize: CHUNK })), sha(object));
    const served = (await s3.log()).slice(before);
    assert.ok(served.length > 0 && served.every((e) => e.status === 206 && e.path === 'snapshots/vm1/memory.bin'));
  });

  test('a zstd pack under a key prefix, credentials from AWS_* variables', async () => {
    const saved = { id: process.env.AWS_ACCESS_KEY_ID, secret: process.env.AWS_SECRET_ACCESS_KEY };
    process.env.AWS_ACCESS_KEY_ID = s3.credentials.accessKeyId;
    process.env.AWS_SECRET_ACCESS_KEY = s3.credentials.secretAccessKey;
    let spec;
    try {
      spec = s3Source({ endpoint: s3.endpoint, region: s3.region, bucket: 'snapshots', key: 'vm1/pack/' });
    } finally {
      if (saved.id === undefined) delete process.env.AWS_ACCESS_KEY_ID;
      else process.env.AWS_ACCESS_KEY_ID = saved.id;
      if (saved.secret === undefined) delete process.env.AWS_SECRET_ACCESS_KEY;
      else process.env.AWS_SECRET_ACCESS_KEY = saved.secret;
    }
    assert.equal(spec.pack, true);
    assert.equal(await restore(spec), sha(object));
  });

  test('a missing key fails the open with 404', async () => {
    await assert.rejects(openSource(s3Source({ endpoint: s3.endpoint, region: s3.region, bucket: 'snapshots', key: 'vm1/nothing.bin', credentials: s3.credentials, retries: 0 })), (err: unknown) => err instanceof RemoteSourceError && err.status === 404);
  });
});

describe('s3Source arguments', () => {
  test('refused before any request; secrets never echoed', () => {
    const ok = { region: 'r', bucket: 'bucket', key: 'k', credentials: { accessKeyId: 'a', secretAccessKey: 's' } };
    assert.equal(new URL(s3Source(ok).url).host, 'bucket.s3.r.amazonaws.com');
    assert.equal(new URL(s3Source({ ...ok, endpoint: 'http://127.0.0.1:9000' }).url).pathname, '/bucket/k');
    assert.throws(() => s3Source({ ...ok, bucket: 'Bad_Bucket' }), TypeError);
    assert.throws(() => s3Source({ ...ok, key: '' }), TypeError);
    assert.throws(() => s3Source({ ...ok, endpoint: 'ftp://x' }), TypeError);
    assert.throws(() => s3Source({ ...ok, credentials: { accessKeyId: 'a', secretAccessKey: 7 as unknown as string } }), (err: unknown) => err instanceof TypeError && !err.message.includes('7'));
    const saved = process.env.AWS_ACCESS_KEY_ID;
    delete process.env.AWS_ACCESS_KEY_ID;
    try {
      assert.throws(() => s3Source({ region: 'r', bucket: 'bucket', key: 'k' }), /AWS_ACCESS_KEY_ID/);
    } finally {
      if (saved !== undefined) process.env.AWS_ACCESS_KEY_ID = saved;
    }
  });
});
