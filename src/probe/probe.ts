// What this kernel's userfaultfd can do, asked the portable way (a throwaway fd per UFFDIO_API), plus what
// the feature bits cannot say: which ioctls each memory type really allows.
import { release } from 'node:os';
import type { IoctlName } from '../abi.js';
import { O_CLOEXEC, O_NONBLOCK, UFFD_USER_MODE_ONLY } from '../abi.js';
import { native } from '../binding.js';
import type { Route } from '../core/create.js';
import { accessHint, createRaw } from '../core/create.js';
import { errnoName } from '../errors.js';
import { uffdioApi } from '../core/uffdio-api.js';
import { FeatureSet, IoctlSet } from '../core/sets.js';
import { checkBoolean, checkOptionsObject } from '../validate.js';

export type Access = { ok: true } | { ok: false; code: string; hint: string };

export interface Capabilities {
  /** Some way to create a uffd worked. */
  available: boolean;
  /** Why not, when not available. */
  reason?: string;
  kernel: string;
  /** 0xAA when available. */
  api: number;
  /** Offered by this kernel (UFFDIO_API with features=0 on a throwaway fd). */
  features: FeatureSet;
  /** The ioctl mask UFFDIO_API returned. */
  ioctls: IoctlSet;
  access: { syscall: Access; device: Access; userModeOnly: Access };
}

let cached: Capabilities | undefined;

/** Probes once per process (cached); `{ fresh: true }` asks the kernel again. */
export function probe(options?: { fresh?: boolean }): Capabilities {
  const opts = checkOptionsObject(options, 'probe options', ['fresh']);
  const fresh = checkBoolean(opts.fresh, 'fresh') ?? false;
  if (cached === undefined || fresh) cached = probeNow();
  return cached;
}

function tryCreate(route: Route, bits: number, label: Route | 'userModeOnly'): { fd: number; access: Access } {
  const fd = createRaw(route, bits);
  if (fd >= 0) return { fd, access: { ok: true } };
  return { fd: -1, access: { ok: false, code: errnoName(fd), hint: accessHint(label, fd) } };
}

function probeNow(): Capabilities {
  const bits = O_CLOEXEC | O_NONBLOCK;
  const attempts = {
    syscall: tryCreate('syscall', bits, 'syscall'),
    device: tryCreate('device', bits, 'device'),
    userModeOnly: tryCreate('syscall', bits | UFFD_USER_MODE_ONLY, 'userModeOnly'),
  };
  const access = { syscall: attempts.syscall.access, device: attempts.device.access, userModeOnly: attempts.userModeOnly.access };
  const usable = [attempts.syscall.fd, attempts.device.fd, attempts.userModeOnly.fd].filter((fd) => fd >= 0);
  const base = { kernel: release(), access };
  try {
    const fd = usable[0];
    if (fd === undefined) {
      const a = access.syscall;
      return { ...base, available: false, reason: a.ok ? 'unknown' : `${a.code}: ${a.hint}`, api: 0, features: FeatureSet.EMPTY, ioctls: IoctlSet.fromMask(0n) };
    }
    // features=0 enables nothing optional and is accepted by every kernel since 4.3.
    const result = uffdioApi(fd, 0n);
    if (result.errno !== 0) {
      return { ...base, available: false, reason: `UFFDIO_API failed: ${errnoName(result.errno)}`, api: 0, features: FeatureSet.EMPTY, ioctls: IoctlSet.fromMask(0n) };
    }
    return {
      ...base, available: true, api: Number(result.api),
      features: FeatureSet.fromMask(result.features), ioctls: IoctlSet.fromMask(result.ioctls),
    };
  } finally {
    for (const fd of usable) native.close(fd);
  }
}

export type { IoctlName };
