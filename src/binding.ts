// The only module that loads the compiled addon. Every native function takes arguments TypeScript has
// already validated and reports failure as a negative errno; policy lives in the callers.
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** An opaque native handle (a napi external). */
export interface Region { readonly __region: unique symbol }
export interface Watcher { readonly __watcher: unique symbol }

export interface NativeBinding {
  // uffd.c
  userfaultfd(flags: number): number;
  openDevice(path: string, flags: number): number;
  ioctl(fd: number, request: number, struct: Uint8Array): number;
  read(fd: number, into: Uint8Array): number;
  // fd.c
  setNonBlocking(fd: number, on: boolean): number;
  getStatusFlags(fd: number): number;
  getFdFlags(fd: number): number;
  pollNow(fd: number): number;
  dupCloexec(fd: number): number;
  close(fd: number): number;
  // memory.c
  mmap(length: number, prot: number, flags: number, fd: number, offset: number): Region | number;
  regionAddress(region: Region): bigint;
  regionBuffer(region: Region, offset: number, length: number): ArrayBuffer;
  regionSeal(region: Region): number;
  detach(buffer: ArrayBuffer): void;
  madvise(address: bigint, length: number, advice: number): number;
  mprotect(address: bigint, length: number, prot: number): number;
  memfdCreate(name: string, flags: number): number;
  addressOf(view: ArrayBufferView | ArrayBuffer): bigint;
  byteLengthOf(view: ArrayBufferView | ArrayBuffer): number;
  pageSize(): number;
  // poll.c
  pollStart(fd: number, events: number, callback: (status: number, events: number) => void): Watcher | number;
  pollStop(watcher: Watcher): void;
  pollRef(watcher: Watcher, keepsLoopAlive: boolean): void;
  pollPause(watcher: Watcher): void;
  pollResume(watcher: Watcher): number;
  readonly pollEvents: { readonly READABLE: number; readonly DISCONNECT: number };
  // process.c
  pidfdOpen(pid: number): number;
  pidfdGetfd(pidfd: number, targetFd: number): number;
  // socket.c
  unixListen(path: string, backlog: number, mode: number): number;
  unixConnect(path: string): number;
  socketPair(): [number, number] | number;
  accept(fd: number): number;
  recvWithFds(fd: number, into: Uint8Array): { bytes: number; fds: number[]; truncated: boolean } | number;
  sendWithFds(fd: number, data: Uint8Array, fds: number[]): number;
  peerCredentials(fd: number): { pid: number; uid: number; gid: number } | number;
  peerPidfd(fd: number): number;
  // addon.c
  liveHandles(): { watchers: number };
}

function packageRoot(): string {
  // This file runs as dist/src/binding.js (compiled) and, under a TS loader, as src/binding.ts.
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('userfaultfd: cannot find the package root');
    dir = up;
  }
  return dir;
}

/**
 * The addon through node-gyp-build: a local build (build/Release, made by `npm install` from source) first,
 * else the prebuilt binary shipped in prebuilds/<platform>-<arch>/ (N-API: one per architecture and libc).
 */
function load(): NativeBinding {
  if (process.platform !== 'linux') {
    throw new Error(`userfaultfd: Linux only (this is ${process.platform})`);
  }
  const require = createRequire(import.meta.url);
  const nodeGypBuild = require('node-gyp-build') as { path(dir: string): string };
  const root = packageRoot();
  let path: string;
  try {
    path = nodeGypBuild.path(root);
  } catch (err) {
    throw new Error(
      `userfaultfd: no native addon for linux-${process.arch} in ${root}: no prebuilt binary for this platform and no local build. `
        + 'Build it from source with `npm rebuild userfaultfd` (needs a C compiler, make and python3: apt-get install build-essential python3)',
      { cause: err },
    );
  }
  return require(path) as NativeBinding;
}

export const native: NativeBinding = load();
