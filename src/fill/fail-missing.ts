// Fail-stop for a range of this process whose resolver is gone (it failed, or the process is exiting): every
// page not present is poisoned, which wakes whoever waits on it. A kernel-mode access then fails with EFAULT
// and a user-mode one with SIGBUS: loud, never wrong data, never a hang. Without UFFDIO_POISON (before 6.6)
// the missing pages are made PROT_NONE and their waiters woken: SIGSEGV instead of SIGBUS, EFAULT the same.
import { isEexist } from '../errors.js';
import { protectNone } from '../core/mapping.js';
import { presentPages } from '../system.js';
import type { Userfaultfd } from '../core/uffd.js';

export function failMissingPages(uffd: Userfaultfd, range: { address: bigint; length: number; pageSize: number }, canPoison: boolean): void {
  const { address, pageSize } = range;
  const pages = range.length / pageSize;
  const present = presentPages(address, pages, pageSize);
  let runStart = -1;
  for (let page = 0; page <= pages; page++) {
    const missing = page < pages && present[page] === 0;
    if (missing && runStart < 0) runStart = page;
    if (!missing && runStart >= 0) {
      const run = { address: address + BigInt(runStart * pageSize), length: (page - runStart) * pageSize, pageSize };
      if (canPoison) {
        poisonRun(uffd, run.address, run.length, pageSize);
      } else {
        protectNone(run.address, run.length);
        uffd.wake(run);
      }
      runStart = -1;
    }
  }
}

function poisonRun(uffd: Userfaultfd, address: bigint, length: number, pageSize: number): void {
  let done = 0;
  while (done < length) {
    try {
      done += uffd.poison({ address: address + BigInt(done), length: length - done, pageSize });
    } catch (err) {
      // A page filled meanwhile: skip it.
      if (!isEexist(err)) throw err;
      done += (err.bytes ?? 0) + pageSize;
    }
  }
}
