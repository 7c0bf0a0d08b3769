// Closing a descriptor the library handed out (a received fd, a pidfd) for a part above the core.
import { native } from '../binding.js';

/** Closes `fd`; an error (EBADF, EINTR) is not reported: the descriptor is gone either way on Linux. */
export function closeDescriptor(fd: number): void {
  native.close(fd);
}
