// Shared by the tests: facts read from the running kernel and the machine, never hard-coded results.
import { readFileSync, readlinkSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PAGE_SIZE } from '../../src/system.js';

/** The base page size, for tests that think in pages. */
export const PAGE = PAGE_SIZE;

/** `length` bytes that differ from seed to seed and from byte to byte: what a copy must bring back whole. */
export function pattern(seed: number, length = PAGE): Uint8Array {
  return Uint8Array.from({ length }, (_, i) => (seed * 31 + i) & 0xff);
}

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const CLI = join(ROOT, 'dist', 'src', 'cli', 'main.js');

export const isRoot = process.getuid?.() === 0;

export function sysctl(name: string): string | undefined {
  try {
    return readFileSync(`/proc/sys/${name.replaceAll('.', '/')}`, 'latin1').trim();
  } catch {
    return undefined;
  }
}

/** The API line of /proc/self/fdinfo/<fd>: features as the kernel stores them (bit 31 = initialized). */
export function fdinfoApi(fd: number): { features: bigint; ioctls: bigint } | undefined {
  const text = readFileSync(`/proc/self/fdinfo/${String(fd)}`, 'latin1');
  const m = /^API:\s*aa:([0-9a-f]+):([0-9a-f]+)$/m.exec(text);
  if (m?.[1] === undefined || m[2] === undefined) return undefined;
  return { features: BigInt(`0x${m[1]}`), ioctls: BigInt(`0x${m[2]}`) };
}

export function fdTarget(fd: number): string {
  return readlinkSync(`/proc/self/fd/${String(fd)}`);
}

export function isOpen(fd: number): boolean {
  try {
    readlinkSync(`/proc/self/fd/${String(fd)}`);
    return true;
  } catch {
    return false;
  }
}

export const INITIALIZED = 1n << 31n;
