// Chunks of remote objects kept on this host: in memory (an LRU bounded in bytes) and, with a directory, on
// disk (an LRU bounded by maxBytes, shared by every source in every process that names the same directory,
// kept across restarts). A chunk being fetched is fetched once: later readers wait for the same promise.
//
// A disk chunk is written to a temporary name and renamed into place, and carries its length and CRC-32 in
// a trailer that is verified on every read: a torn or corrupt file is dropped and fetched again, never
// served. Disk I/O is synchronous (the libuv threadpool is off limits to a resolver).
import { closeSync, fstatSync, mkdirSync, openSync, readdirSync, readSync, renameSync, rmSync, statSync, unlinkSync, utimesSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';

export interface ChunkCacheStats {
  memoryHits: number;
  diskHits: number;
  misses: number;
  /** Disk chunks that failed their checksum (dropped and fetched again). */
  corrupt: number;
  diskWriteErrors: number;
}

const MAGIC = Buffer.from('UFFDCHK1');
const TRAILER = 16; // magic, u32 length, u32 crc32

/** The on-disk LRU of one cache directory; one per directory per thread. */
class DiskStore {
  readonly #dir: string;
  readonly #maxBytes: number;
  /** path -> size, least recently used first. */
  readonly #files = new Map<string, number>();
  #bytes = 0;

  constructor(dir: string, maxBytes: number) {
    this.#dir = dir;
    this.#maxBytes = maxBytes;
    mkdirSync(dir, { recursive: true });
    // Rebuilt from the directory: oldest use (mtime) first; leftovers of interrupted writes are removed.
    const found: { path: string; size: number; used: number }[] = [];
    for (const object of readdirSync(dir, { withFileTypes: true })) {
      if (!object.isDirectory()) continue;
      const objectDir = join(dir, object.name);
      for (const name of readdirSync(objectDir)) {
        const path = join(objectDir, name);
        if (name.includes('.tmp')) {
          rmSync(path, { force: true });
          continue;
        }
        try {
          const st = statSync(path);
          found.push({ path, size: st.size, used: st.mtimeMs });
        } catch {
          // removed meanwhile by another process
        }
      }
    }
    found.sort((a, b) => a.used - b.used);
    for (const f of found) this.#add(f.path, f.size);
    this.#evict();
  }

  read(path: string): Uint8Array | 'missing' | 'corrupt' {
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch {
      this.#forget(path);
      return 'missing';
    }
    try {
      const size = fstatSync(fd).size;
      if (size < TRAILER) return this.#drop(path);
      const bytes = Buffer.allocUnsafe(size);
      let done = 0;
      while (done < size) {
        const n = readSync(fd, bytes, done, size - done, done);
        if (n === 0) break;
        done += n;
      }
      const body = bytes.subarray(0, size - TRAILER);
      const trailer = bytes.subarray(size - TRAILER);
      if (done !== size || !trailer.subarray(0, 8).equals(MAGIC) || trailer.readUInt32LE(8) !== body.length || trailer.readUInt32LE(12) !== crc32(body)) return this.#drop(path);
      this.#touch(path, size);
      return new Uint8Array(body.buffer, body.byteOffset, body.length);
    } finally {
      closeSync(fd);
    }
  }

  write(path: string, bytes: Uint8Array): void {
    const trailer = Buffer.alloc(TRAILER);
    MAGIC.copy(trailer);
    trailer.writeUInt32LE(bytes.length, 8);
    trailer.writeUInt32LE(crc32(bytes), 12);
    const temp = `${path}.tmp${String(process.pid)}-${Math.random().toString(36).slice(2)}`;
    mkdirSync(join(path, '..'), { recursive: true });
    const fd = openSync(temp, 'w');
    try {
      writeAll(fd, bytes);
      writeAll(fd, trailer);
    } finally {
      closeSync(fd);
    }
    renameSync(temp, path);
    this.#forget(path);
    this.#add(path, bytes.length + TRAILER);
    this.#evict();
  }

  #touch(path: string, size: number): void {
    this.#forget(path);
    this.#add(path, size);
    try {
      const now = new Date();
      utimesSync(path, now, now); // the LRU order survives a restart
    } catch {
      // evicted by another process meanwhile: still served from what was read
    }
  }

  #drop(path: string): 'corrupt' {
    rmSync(path, { force: true });
    this.#forget(path);
    return 'corrupt';
  }

  #add(path: string, size: number): void {
    this.#files.set(path, size);
    this.#bytes += size;
  }

  #forget(path: string): void {
    const size = this.#files.get(path);
    if (size === undefined) return;
    this.#files.delete(path);
    this.#bytes -= size;
  }

  #evict(): void {
    for (const [path, size] of this.#files) {
      if (this.#bytes <= this.#maxBytes) break;
      this.#files.delete(path);
      this.#bytes -= size;
      try {
        unlinkSync(path);
      } catch {
        // already gone
      }
    }
  }

  get dir(): string {
    return this.#dir;
  }
}

function writeAll(fd: number, bytes: Uint8Array): void {
  for (let done = 0; done < bytes.length;) done += writeSync(fd, bytes, done, bytes.length - done);
}

/** Open stores by directory, with how many caches use each: the last to close forgets it (a reopen rescans). */
const stores = new Map<string, { store: DiskStore; users: number }>();

function acquireStore(dir: string, maxBytes: number): DiskStore {
  let entry = stores.get(dir);
  if (entry === undefined) {
    entry = { store: new DiskStore(dir, maxBytes), users: 0 };
    stores.set(dir, entry);
  }
  entry.users++;
  return entry.store;
}

function releaseStore(dir: string): void {
  const entry = stores.get(dir);
  if (entry !== undefined && --entry.users === 0) stores.delete(dir);
}

export interface ChunkCacheOptions {
  /** Names the object version (URL, ETag or Last-Modified, size, chunk size): its disk chunks live under it. */
  key: string;
  memoryBytes: number;
  disk?: { dir: string; maxBytes: number } | undefined;
}

/** The chunks of one object version. */
export class ChunkCache {
  readonly #memory = new Map<number, Uint8Array>();
  readonly #memoryBytes: number;
  #memoryUsed = 0;
  readonly #inflight = new Map<number, Promise<Uint8Array>>();
  readonly #disk: DiskStore | undefined;
  readonly #objectDir: string | undefined;
  readonly stats: ChunkCacheStats = { memoryHits: 0, diskHits: 0, misses: 0, corrupt: 0, diskWriteErrors: 0 };

  constructor(options: ChunkCacheOptions) {
    this.#memoryBytes = options.memoryBytes;
    if (options.disk !== undefined) {
      this.#disk = acquireStore(options.disk.dir, options.disk.maxBytes);
      this.#objectDir = join(this.#disk.dir, options.key);
    }
  }

  /** The chunk if this host has it (memory, then a verified disk copy); counts a miss otherwise. */
  get(index: number): Uint8Array | undefined {
    const held = this.#memory.get(index);
    if (held !== undefined) {
      this.#memory.delete(index); // most recently used last
      this.#memory.set(index, held);
      this.stats.memoryHits++;
      return held;
    }
    if (this.#disk === undefined || this.#objectDir === undefined) return undefined;
    const read = this.#disk.read(join(this.#objectDir, String(index)));
    if (read === 'corrupt') this.stats.corrupt++;
    if (typeof read === 'string') return undefined;
    this.stats.diskHits++;
    this.#remember(index, read);
    return read;
  }

  /** True when the chunk is in memory or being fetched (no disk read). */
  pending(index: number): boolean {
    return this.#memory.has(index) || this.#inflight.has(index);
  }

  /** The chunk from the cache, or fetched once however many callers ask at the same time. */
  obtain(index: number, fetch: () => Promise<Uint8Array>): Uint8Array | Promise<Uint8Array> {
    const cached = this.get(index);
    if (cached !== undefined) return cached;
    let inflight = this.#inflight.get(index);
    if (inflight === undefined) {
      this.stats.misses++;
      inflight = fetch().then((bytes) => {
        this.#remember(index, bytes);
        try {
          if (this.#disk !== undefined && this.#objectDir !== undefined) this.#disk.write(join(this.#objectDir, String(index)), bytes);
        } catch {
          this.stats.diskWriteErrors++; // a full or read-only disk costs refetches, not the restore
        }
        return bytes;
      }).finally(() => { this.#inflight.delete(index); });
      this.#inflight.set(index, inflight);
    }
    return inflight;
  }

  /** Memory copies are dropped; disk copies stay for the next reader. */
  close(): void {
    this.#memory.clear();
    this.#memoryUsed = 0;
    if (this.#disk !== undefined) releaseStore(this.#disk.dir);
  }

  #remember(index: number, bytes: Uint8Array): void {
    if (bytes.length > this.#memoryBytes || this.#memory.has(index)) return;
    this.#memory.set(index, bytes);
    this.#memoryUsed += bytes.length;
    for (const [old, held] of this.#memory) {
      if (this.#memoryUsed <= this.#memoryBytes) break;
      this.#memory.delete(old);
      this.#memoryUsed -= held.length;
    }
  }
}
