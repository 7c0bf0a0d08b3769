// UFFDIO_API and the enabled feature set. The kernel is strict: an unknown or unoffered bit gives EINVAL
// with the whole struct zeroed; only the first successful call on an fd counts (a second is EINVAL, a
// failed one leaves the fd usable); and the call reports the features *offered*, never those enabled. The
// enabled set is only visible in /proc/self/fdinfo/<fd>.
import { readFileSync } from 'node:fs';
import { FEATURE_INITIALIZED_BIT, ioctlInfo, STRUCTS, UFFD_API } from '../abi.js';
import { native } from '../binding.js';

export interface ApiResult {
  /** 0 or -errno */
  errno: number;
  /** The struct as the kernel left it (all zero after a failure). */
  api: bigint;
  features: bigint;
  ioctls: bigint;
}

const API = ioctlInfo('API');

/** One UFFDIO_API call; `api` defaults to 0xAA (tests pass other values). */
export function uffdioApi(fd: number, features: bigint, api: bigint = BigInt(UFFD_API)): ApiResult {
  const bytes = new Uint8Array(STRUCTS.uffdio_api.size);
  const view = new DataView(bytes.buffer);
  view.setBigUint64(STRUCTS.uffdio_api.api, api, true);
  view.setBigUint64(STRUCTS.uffdio_api.features, features, true);
  view.setBigUint64(STRUCTS.uffdio_api.ioctls, 0n, true);
  const errno = native.ioctl(fd, API.request, bytes);
  return {
    errno,
    api: view.getBigUint64(STRUCTS.uffdio_api.api, true),
    features: view.getBigUint64(STRUCTS.uffdio_api.features, true),
    ioctls: view.getBigUint64(STRUCTS.uffdio_api.ioctls, true),
  };
}

export interface FdInfo {
  /** UFFDIO_API has succeeded on this uffd. */
  initialized: boolean;
  /** Enabled features, without the internal INITIALIZED bit. */
  features: bigint;
  ioctls: bigint;
  /** Faults queued and not yet read. */
  pending: number;
  /** Faults queued or read and not yet woken. */
  total: number;
}

/** Reads /proc/self/fdinfo/<fd>; undefined when the fd is not a userfaultfd. */
export function readFdInfo(fd: number): FdInfo | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/self/fdinfo/${String(fd)}`, 'latin1');
  } catch {
    return undefined;
  }
  const api = /^API:\s*([0-9a-f]+):([0-9a-f]+):([0-9a-f]+)$/m.exec(text);
  if (api?.[2] === undefined || api[3] === undefined) return undefined;
  const raw = BigInt(`0x${api[2]}`);
  const initializedBit = 1n << BigInt(FEATURE_INITIALIZED_BIT);
  return {
    initialized: (raw & initializedBit) !== 0n,
    features: raw & ~initializedBit,
    ioctls: BigInt(`0x${api[3]}`),
    pending: Number(/^pending:\s*(\d+)$/m.exec(text)?.[1] ?? 0),
    total: Number(/^total:\s*(\d+)$/m.exec(text)?.[1] ?? 0),
  };
}
