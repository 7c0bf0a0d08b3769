// Creating a userfaultfd: the syscall, or /dev/userfaultfd + USERFAULTFD_IOC_NEW (6.1+), and saying why
// neither worked in words a user can act on.
import { DEVICE_PATH, O_CLOEXEC, O_NONBLOCK, UFFD_USER_MODE_ONLY } from '../abi.js';
import { native } from '../binding.js';
import { errnoName, UffdError } from '../errors.js';

export const VIAS = ['auto', 'syscall', 'device'] as const;
export type Via = typeof VIAS[number];
/** The two ways to a new uffd: the userfaultfd(2) syscall or the /dev/userfaultfd device. */
export type Route = 'syscall' | 'device';

export interface CreateFlags {
  nonBlocking: boolean;
  closeOnExec: boolean;
  userModeOnly: boolean;
}

export function flagBits(flags: CreateFlags): number {
  return (flags.nonBlocking ? O_NONBLOCK : 0) | (flags.closeOnExec ? O_CLOEXEC : 0) | (flags.userModeOnly ? UFFD_USER_MODE_ONLY : 0);
}

/** fd >= 0, or -errno. */
export function createRaw(route: Route, bits: number): number {
  return route === 'syscall' ? native.userfaultfd(bits) : native.openDevice(DEVICE_PATH, bits);
}

/** What to do about a failed creation, by route (the syscall asked for user mode only counts apart) and errno. */
export function accessHint(route: Route | 'userModeOnly', errno: number): string {
  const code = errnoName(errno);
  if (code === 'ENOSYS') return 'this kernel has no userfaultfd (CONFIG_USERFAULTFD) or a seccomp filter blocks it';
  if (route === 'device') {
    if (code === 'ENOENT') return `${DEVICE_PATH} does not exist (Linux 6.1+ with the misc device)`;
    if (code === 'EACCES') return `no permission to open ${DEVICE_PATH}; grant read-write access to it (e.g. a group or setfacl)`;
  }
  if (code === 'EPERM') {
    return route === 'userModeOnly'
      ? 'even user-mode-only creation is refused: a seccomp filter or LSM blocks userfaultfd'
      : 'needs CAP_SYS_PTRACE, sysctl vm.unprivileged_userfaultfd=1, or access to /dev/userfaultfd; or pass userModeOnly: true';
  }
  if (code === 'EINVAL' && route === 'userModeOnly') return 'UFFD_USER_MODE_ONLY needs Linux 5.11';
  return 'unexpected error creating a userfaultfd';
}

/** Creates the fd by the requested path; 'auto' tries the syscall, then the device on EPERM. */
export function createFd(via: Via, flags: CreateFlags): number {
  const bits = flagBits(flags);
  const syscallRoute = flags.userModeOnly ? 'userModeOnly' : 'syscall';
  if (via === 'device') {
    const fd = createRaw('device', bits);
    if (fd < 0) throw new UffdError(fd, `ioctl(USERFAULTFD_IOC_NEW) on ${DEVICE_PATH}`, { hint: accessHint('device', fd) });
    return fd;
  }
  const fd = createRaw('syscall', bits);
  if (fd >= 0) return fd;
  if (via === 'syscall' || errnoName(fd) !== 'EPERM') {
    throw new UffdError(fd, 'userfaultfd', { hint: accessHint(syscallRoute, fd) });
  }
  const viaDevice = createRaw('device', bits);
  if (viaDevice >= 0) return viaDevice;
  throw new UffdError(fd, 'userfaultfd', {
    hint: `${accessHint(syscallRoute, fd)}; ${DEVICE_PATH} failed too: ${errnoName(viaDevice)}, ${accessHint('device', viaDevice)}`,
  });
}
