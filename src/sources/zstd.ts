// zstd for packs, synchronous on the calling thread (a resolver must not wait on the libuv threadpool).
// Chosen by measurement (2 MiB chunks of memory-like data, AMD EPYC, load 12): a native binding (zstd-napi)
// 2.3 GB/s, WebAssembly (@foxglove/wasm-zstd) 1.4 GB/s, @bokuweb/zstd-wasm 0.7 GB/s, pure JS (fzstd)
// 15 MB/s. Node's own zlib.zstd*Sync (22.15+, 23.8+) is native and needs no install, so it is used where it
// exists; Node 20 gets the WebAssembly build, which installs without compiling anything.
import zlib from 'node:zlib';

export interface Zstd {
  readonly name: string;
  compress(input: Uint8Array, level: number): Uint8Array;
  /** Exactly `size` bytes, or throws. */
  decompress(input: Uint8Array, size: number): Uint8Array;
}

interface BuiltIn {
  zstdCompressSync?: (input: Uint8Array, options?: { params?: Record<number, number> }) => Buffer;
  zstdDecompressSync?: (input: Uint8Array, options?: { maxOutputLength?: number }) => Buffer;
  constants: Record<string, number>;
}

let loaded: Promise<Zstd> | undefined;

/** The zstd implementation this process uses (loaded once). */
export function loadZstd(): Promise<Zstd> {
  loaded ??= load();
  return loaded;
}

async function load(): Promise<Zstd> {
  const z = zlib as unknown as BuiltIn;
  const compressSync = z.zstdCompressSync;
  const decompressSync = z.zstdDecompressSync;
  if (compressSync !== undefined && decompressSync !== undefined && process.env.UFFD_ZSTD !== 'wasm') {
    const levelParam = z.constants.ZSTD_c_compressionLevel ?? 100;
    return {
      name: 'node:zlib',
      compress: (input, level) => compressSync(input, { params: { [levelParam]: level } }),
      decompress: (input, size) => checked(decompressSync(input, { maxOutputLength: Math.max(1, size) }), size),
    };
  }
  const wasm = (await import('@foxglove/wasm-zstd')) as unknown as { default?: WasmZstd } & WasmZstd;
  const api = wasm.default ?? wasm;
  await api.isLoaded;
  return {
    name: '@foxglove/wasm-zstd',
    compress: (input, level) => api.compress(input, level),
    decompress: (input, size) => checked(api.decompress(input, size), size),
  };
}

interface WasmZstd {
  isLoaded: Promise<boolean>;
  compress(buffer: Uint8Array, level?: number): Uint8Array;
  decompress(buffer: Uint8Array, size: number): Uint8Array;
}

function checked(out: Uint8Array, size: number): Uint8Array {
  if (out.length !== size) throw new Error(`zstd frame decoded to ${String(out.length)} bytes, expected ${String(size)}`);
  return out;
}
