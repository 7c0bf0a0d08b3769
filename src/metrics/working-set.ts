// Working-set records: the pages one client faulted, in first-fault order with time offsets, tied to the
// snapshot they were recorded from. Format and rules: docs/working-sets.md. Written atomically (a temporary
// file linked into place: a full disk or a crash never leaves a partial record under the final name, and an
// existing record is never replaced); read back only after every field has been checked.
import { closeSync, fsyncSync, linkSync, openSync, readFileSync, readSync, unlinkSync, writeSync, fstatSync } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import { basename, dirname, join } from 'node:path';
import type { HistogramSnapshot } from './log2-histogram.js';
import type { PageSource } from '../sources/source.js';

export const WORKING_SET_FORMAT = 'uffd-working-set';
export const WORKING_SET_VERSION = 1;

/** Which memory file a record belongs to: its size and a hash of sampled pages (cheap on any size). */
export interface SnapshotIdentity {
  size: number;
  fingerprint: string;
}

export interface WorkingSetRecord {
  format: typeof WORKING_SET_FORMAT;
  version: typeof WORKING_SET_VERSION;
  pageSize: number;
  snapshot: SnapshotIdentity;
  /** ISO time of the first fault. */
  recordedAt: string;
  /** Who faulted (informational). */
  client?: { pid: number; id: number };
  /** Why the record ended: the settle detector saw the fault rate converge, or the client went away. */
  ended: 'settled' | 'client gone' | 'merged';
  /** Memory-file byte offsets of the pages, in first-fault order; each page once. */
  offsets: number[];
  /** For each page, µs from the first fault to its first fault (non-decreasing, except in a merged record). */
  micros: number[];
  /** The client's fault service time while it was recorded (informational, for `uffd report`). */
  serviceMicros?: HistogramSnapshot;
}

const SAMPLES = 16;
const SAMPLE_BYTES = 4096;

/** Where the samples of a `size`-byte snapshot are: evenly spaced, page-aligned. */
function sampleOffsets(size: number): number[] {
  return Array.from({ length: SAMPLES }, (_, i) => Math.floor((size / SAMPLES) * i / SAMPLE_BYTES) * SAMPLE_BYTES);
}

function identityOf(size: number, samples: Uint8Array[]): SnapshotIdentity {
  const hash = createHash('sha256').update(String(size));
  for (const sample of samples) hash.update(sample);
  return { size, fingerprint: `sha256-sampled:${hash.digest('hex')}` };
}

/** The identity of the memory file at `path`: SAMPLES evenly spaced 4 KiB samples hashed with the size. */
export function snapshotIdentity(path: string): SnapshotIdentity {
  const fd = openSync(path, 'r');
  try {
    const size = fstatSync(fd).size;
    return identityOf(size, sampleOffsets(size).map((at) => {
      const buffer = new Uint8Array(SAMPLE_BYTES);
      return buffer.subarray(0, readSync(fd, buffer, 0, SAMPLE_BYTES, at));
    }));
  } finally {
    closeSync(fd);
  }
}

/** The same identity read through an open page source (a file, or a remote object). */
export async function sourceIdentity(source: PageSource): Promise<SnapshotIdentity> {
  const samples: Uint8Array[] = [];
  for (const at of sampleOffsets(source.length)) {
    const buffer = new Uint8Array(Math.max(0, Math.min(SAMPLE_BYTES, source.length - at)));
    const n = await source.read(at, buffer);
    samples.push(buffer.subarray(0, n));
  }
  return identityOf(source.length, samples);
}

export class WorkingSetError extends Error {
  readonly code = 'ERR_UFFD_WORKING_SET';
  constructor(readonly path: string, readonly reason: string) {
    super(`${path} is not a usable working-set record: ${reason}`);
    this.name = 'WorkingSetError';
  }
}

const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/** Parses and checks a record; `name` is for messages. Throws WorkingSetError saying what is wrong. */
export function parseWorkingSet(text: string, name: string): WorkingSetRecord {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    const legacy = /^\s*\d+\s*(\n|$)/.test(text) ? ' (a plain list of offsets from an older uffd: record it again)' : '';
    throw new WorkingSetError(name, `not JSON, or cut short${legacy}: ${err instanceof Error ? err.message : String(err)}`);
  }
  const fail = (reason: string): never => { throw new WorkingSetError(name, reason); };
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return fail('not a JSON object');
  const r = value as Record<string, unknown>;
  if (r.format !== WORKING_SET_FORMAT) fail(`format is ${JSON.stringify(r.format)}, expected "${WORKING_SET_FORMAT}"`);
  if (r.version !== WORKING_SET_VERSION) fail(`version ${JSON.stringify(r.version)} is not one this uffd reads (${String(WORKING_SET_VERSION)})`);
  const pageSize = r.pageSize;
  if (!isCount(pageSize) || pageSize < 4096 || (pageSize & (pageSize - 1)) !== 0) fail(`pageSize ${JSON.stringify(pageSize)} is not a power of two >= 4096`);
  const snapshot = r.snapshot as Record<string, unknown> | undefined;
  if (typeof snapshot !== 'object' || snapshot === null || !isCount(snapshot.size) || typeof snapshot.fingerprint !== 'string') fail('snapshot must be { size, fingerprint }');
  if (typeof r.recordedAt !== 'string' || Number.isNaN(Date.parse(r.recordedAt))) fail('recordedAt is not an ISO time');
  if (r.ended !== 'settled' && r.ended !== 'client gone' && r.ended !== 'merged') fail(`ended ${JSON.stringify(r.ended)} is not settled, client gone or merged`);
  const { offsets, micros } = r;
  if (!Array.isArray(offsets) || !Array.isArray(micros)) return fail('offsets and micros must be arrays');
  if (offsets.length !== micros.length) fail(`${String(offsets.length)} offsets but ${String(micros.length)} times`);
  const size = (snapshot as unknown as SnapshotIdentity).size;
  const seen = new Set<number>();
  // A merged record lists the pages most runs share first: its times (medians) need not be in order.
  const ordered = r.ended !== 'merged';
  let previous = 0;
  for (let i = 0; i < offsets.length; i++) {
    const offset: unknown = offsets[i];
    const time: unknown = micros[i];
    if (!isCount(offset) || offset % (pageSize as number) !== 0 || offset >= size) fail(`offsets[${String(i)}] = ${JSON.stringify(offset)} is not a page offset within the ${String(size)}-byte snapshot`);
    if (seen.has(offset as number)) fail(`offsets[${String(i)}] = ${String(offset)} appears twice`);
    seen.add(offset as number);
    if (typeof time !== 'number' || !Number.isFinite(time) || time < 0 || (ordered && time < previous)) fail(`micros[${String(i)}] = ${JSON.stringify(time)} is not a time at or after the one before`);
    if (ordered) previous = time as number;
  }
  return value as WorkingSetRecord;
}

export function readWorkingSet(path: string): WorkingSetRecord {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new WorkingSetError(path, err instanceof Error ? err.message : String(err));
  }
  return parseWorkingSet(text, path);
}

/** Throws unless `record` was taken from the memory file `identity` describes. */
export function checkSnapshot(record: WorkingSetRecord, identity: SnapshotIdentity, name: string): void {
  if (record.snapshot.size !== identity.size || record.snapshot.fingerprint !== identity.fingerprint) {
    throw new WorkingSetError(name, `it was recorded from another snapshot (size ${String(record.snapshot.size)}, ${record.snapshot.fingerprint}; `
      + `this one: size ${String(identity.size)}, ${identity.fingerprint})`);
  }
}

/**
 * Writes `record` to `path` atomically and without replacing anything: the bytes go to a temporary file
 * in the same directory, are flushed to disk, and the file is linked under `path` (EEXIST if taken).
 * On any failure nothing is left behind and no existing file changes.
 */
export function writeWorkingSet(path: string, record: WorkingSetRecord): void {
  const temp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  const bytes = Buffer.from(`${JSON.stringify(record)}\n`);
  const fd = openSync(temp, 'wx', 0o600);
  try {
    try {
      for (let at = 0; at < bytes.length;) at += writeSync(fd, bytes, at);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    linkSync(temp, path);
  } finally {
    unlinkSync(temp);
  }
}
