// The criu restore -> lazy-pages daemon protocol: exact reads, pids, zombies, the 1-byte message with its
// uffd, the end marker; every refusal; EOF at every byte over a real socket with real uffds; fuzzing in which
// only a message or a CriuProtocolError may come out.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { readdirSync } from 'node:fs';
import { native } from '../src/binding.js';
import { UnixConnection } from '../src/core/unix-socket.js';
import { Userfaultfd } from '../src/core/uffd.js';
import { CriuProtocolError } from '../src/server/criu/errors.js';
import type { RestoreMessage } from '../src/server/criu/protocol.js';
import { RESTORE_FINISHED, RestoreProtocolReader } from '../src/server/criu/protocol.js';
import { RestoreConnection } from '../src/server/criu/restore-connection.js';

function word(value: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setInt32(0, value | 0, true);
  return b;
}
const FIN = word(RESTORE_FINISHED);

function refused(run: () => unknown, reason: CriuProtocolError['reason'], pattern: RegExp): void {
  assert.throws(run, (err: unknown) => {
    assert.ok(err instanceof CriuProtocolError, `expected a CriuProtocolError, got ${String(err)}`);
    assert.equal(err.code, 'ERR_UFFD_CRIU_PROTOCOL');
    assert.equal(err.reason, reason, err.message);
    assert.match(err.message, pattern);
    return true;
  });
}

test('reader: pids with their fd, zombies, the end marker; exactly 4 then 1 byte asked for', () => {
  const r = new RestoreProtocolReader();
  assert.equal(r.wanted(), 4);
  assert.equal(r.push(word(100), []), undefined);
  assert.equal(r.wanted(), 1);
  assert.deepEqual(r.push(Uint8Array.of(0), [42]), { kind: 'process', pid: 100, fd: 42 });
  assert.deepEqual(r.push(word(-101), []), { kind: 'zombie', pid: 101 });
  assert.equal(r.push(word(4194304), []), undefined);
  assert.deepEqual(r.push(Uint8Array.of(0x7a), [43]), { kind: 'process', pid: 4194304, fd: 43 });
  assert.equal(r.endError()?.reason, 'eof');
  assert.deepEqual(r.push(FIN, []), { kind: 'finished' });
  assert.equal(r.wanted(), 0);
  assert.equal(r.processes, 2);
  assert.equal(r.endError(), undefined);
  refused(() => r.push(Uint8Array.of(1), []), 'garbage', /after the end marker/);
});

test('reader: a word split into 1-3 byte reads in every way', () => {
  for (const value of [100, -7, RESTORE_FINISHED]) {
    const bytes = word(value);
    for (const cuts of [[1, 1, 1, 1], [1, 3], [3, 1], [2, 2], [1, 2, 1], [2, 1, 1], [1, 1, 2]]) {
      const r = new RestoreProtocolReader();
      let at = 0;
      let out: RestoreMessage | undefined;
      for (const n of cuts) {
        assert.equal(r.wanted(), 4 - at);
        out = r.push(bytes.subarray(at, at + n), []);
        at += n;
        if (at < 4) assert.equal(out, undefined);
      }
      if (value === 100) assert.equal(r.wanted(), 1);
      else assert.deepEqual(out, value < 0 ? { kind: 'zombie', pid: 7 } : { kind: 'finished' });
    }
  }
});

test('reader: refusals name what came', () => {
  refused(() => new RestoreProtocolReader().push(word(0), []), 'garbage', /^word 0x00000000 is neither a pid/);
  refused(() => new RestoreProtocolReader().push(word(4194305), []), 'garbage', /word 0x00400001/);
  refused(() => new RestoreProtocolReader().push(word(-2147483648), []), 'garbage', /word 0x80000000/);
  refused(() => new RestoreProtocolReader().push(word(0x47455420), []), 'garbage', /0x47455420/); // "GET " in a daemon's face
  refused(() => new RestoreProtocolReader().push(word(5), [9]), 'unexpected-fd', /came with the bytes of a pid/);
  const missing = new RestoreProtocolReader();
  missing.push(word(5), []);
  refused(() => missing.push(Uint8Array.of(0), []), 'missing-fd', /^pid 5: the message after it carried no descriptor/);
  const two = new RestoreProtocolReader();
  two.push(word(5), []);
  refused(() => two.push(Uint8Array.of(0), [7, 8]), 'unexpected-fd', /^pid 5: 2 descriptors came with its message/);
  assert.throws(() => new RestoreProtocolReader().push(new Uint8Array(5), []), RangeError);
  const half = new RestoreProtocolReader();
  half.push(word(5).subarray(0, 2), []);
  assert.match(half.endError()?.message ?? '', /2 of the 4 bytes of a word had arrived/);
  const noFd = new RestoreProtocolReader();
  noFd.push(word(5), []);
  assert.match(noFd.endError()?.message ?? '', /pid 5 was announced but its descriptor never came/);
});

test('fuzz: any sequence of reads and descriptors gives messages or one CriuProtocolError', () => {
  let s = 0x1d2c3b4a;
  const random = (): number => {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    return s / 2 ** 32;
  };
  let errors = 0;
  let finished = 0;
  for (let round = 0; round < 3000; round++) {
    const r = new RestoreProtocolReader();
    try {
      for (let step = 0; step < 20; step++) {
        const wanted = r.wanted() === 0 ? 1 : r.wanted();
        const n = 1 + Math.floor(random() * wanted);
        const bytes = Uint8Array.from({ length: n }, () => (random() < 0.5 ? Math.floor(random() * 4) : Math.floor(random() * 256)));
        if (random() < 0.05 && n === 4) bytes.set(FIN);
        const fds = random() < 0.7 ? [] : random() < 0.8 ? [3] : [3, 4];
        const m = r.push(bytes, fds);
        if (m?.kind === 'finished') finished++;
      }
    } catch (err) {
      assert.ok(err instanceof CriuProtocolError, `round ${String(round)}: ${String(err)}`);
      errors++;
    }
  }
  assert.ok(errors > 1000 && finished > 10, `errors ${String(errors)}, finished ${String(finished)}`);
});

interface Outcome { messages: RestoreMessage[]; failed?: Error; trailing?: string | undefined; ended: boolean }

/** Serves one end of a socketpair with a RestoreConnection until it fails or ends. */
async function readAll(conn: UnixConnection): Promise<Outcome> {
  const out: Outcome = { messages: [], ended: false };
  await new Promise<void>((resolve) => {
    new RestoreConnection(conn, {
      message: (m) => { out.messages.push(m); },
      failed: (err) => { out.failed = err; resolve(); },
      ended: (trailing) => { out.ended = true; out.trailing = trailing; resolve(); },
    });
  });
  for (const m of out.messages) if (m.kind === 'process') native.close(m.fd);
  return out;
}

/** A restore's byte stream: which chunks carry a descriptor (the 1-byte messages). */
type Chunk = { bytes: Uint8Array; fds: number[] };

function restoreStream(uffds: number[]): Chunk[] {
  const chunks: Chunk[] = [];
  uffds.forEach((fd, i) => {
    chunks.push({ bytes: word(1000 + i), fds: [] }, { bytes: Uint8Array.of(0), fds: [fd] });
    if (i === 0) chunks.push({ bytes: word(-999), fds: [] });
  });
  chunks.push({ bytes: FIN, fds: [] });
  return chunks;
}

function sendPrefix(peer: UnixConnection, chunks: Chunk[], bytes: number): void {
  let left = bytes;
  for (const c of chunks) {
    if (left <= 0) break;
    const n = Math.min(left, c.bytes.length);
    peer.send(c.bytes.subarray(0, n), c.fds);
    left -= n;
  }
}

test('a real socket: three uffds and a zombie; each message handed on whole, fds are the uffds sent', async () => {
  const uffds = [Userfaultfd.open(), Userfaultfd.open(), Userfaultfd.open()];
  const [ours, peer] = UnixConnection.pair();
  const reading = readAll(ours);
  // One byte at a time, with the loop turning in between: the reader must never read ahead.
  for (const c of restoreStream(uffds.map((u) => u.fd))) {
    for (let i = 0; i < c.bytes.length; i++) {
      peer.send(c.bytes.subarray(i, i + 1), c.fds);
      await new Promise((r) => setImmediate(r));
    }
  }
  peer.close();
  const out = await reading;
  assert.equal(out.failed, undefined);
  assert.ok(out.ended);
  assert.deepEqual(out.messages.map((m) => (m.kind === 'process' ? `p${String(m.pid)}` : m.kind === 'zombie' ? `z${String(m.pid)}` : 'fin')), ['p1000', 'z999', 'p1001', 'p1002', 'fin']);
  for (const u of uffds) u.close();
});

test('a real socket: EOF at every byte before the end marker fails the restore, at the end it ends', async () => {
  const uffds = [Userfaultfd.open(), Userfaultfd.open()];
  const chunks = restoreStream(uffds.map((u) => u.fd));
  const total = chunks.reduce((n, c) => n + c.bytes.length, 0);
  for (let n = 0; n <= total; n++) {
    const [ours, peer] = UnixConnection.pair();
    const reading = readAll(ours);
    sendPrefix(peer, chunks, n);
    peer.close();
    const out = await reading;
    if (n === total) {
      assert.ok(out.ended && out.failed === undefined, `full stream: ${String(out.failed)}`);
    } else {
      assert.ok(out.failed instanceof CriuProtocolError && out.failed.reason === 'eof', `prefix ${String(n)}: ${String(out.failed)}`);
      assert.match(out.failed.message, /closed before the end marker/);
    }
  }
  for (const u of uffds) u.close();
});

test('a real socket: a pid without fd, two fds, garbage instead of FIN, bytes after FIN', async () => {
  const u = Userfaultfd.open();
  const openFds = (): number => readdirSync('/proc/self/fd').length;
  const before = openFds();
  const cases: { chunks: Chunk[]; reason?: CriuProtocolError['reason']; trailing?: RegExp }[] = [
    { chunks: [{ bytes: word(5), fds: [] }, { bytes: Uint8Array.of(0), fds: [] }], reason: 'missing-fd' },
    { chunks: [{ bytes: word(5), fds: [] }, { bytes: Uint8Array.of(0), fds: [u.fd, u.fd] }], reason: 'unexpected-fd' },
    { chunks: [{ bytes: word(5), fds: [u.fd] }], reason: 'unexpected-fd' },
    { chunks: [{ bytes: word(5), fds: [] }, { bytes: Uint8Array.of(0), fds: [u.fd] }, { bytes: Uint8Array.from([0x46, 0x54, 0x53, 0x53]), fds: [] }], reason: 'garbage' },
    { chunks: [{ bytes: FIN, fds: [] }, { bytes: Uint8Array.of(1, 2), fds: [] }], trailing: /bytes after the end marker \(first: 0x01\)/ },
  ];
  for (const c of cases) {
    const [ours, peer] = UnixConnection.pair();
    const reading = readAll(ours);
    for (const chunk of c.chunks) peer.send(chunk.bytes, chunk.fds);
    peer.close();
    const out = await reading;
    if (c.reason !== undefined) {
      assert.ok(out.failed instanceof CriuProtocolError, String(out.failed));
      assert.equal(out.failed.reason, c.reason, out.failed.message);
    } else {
      assert.ok(out.ended);
      assert.match(out.trailing ?? '', c.trailing ?? /./);
    }
  }
  // Every descriptor that came with a refused message was closed.
  assert.equal(openFds(), before);
  u.close();

});
