// The 'async' method: WP_ASYNC write protection, whose faults the kernel resolves itself (no message, no
// thread), read and re-armed with PAGEMAP_SCAN: one walk reports the written pages and write-protects them
// again, atomically per page, in batches bounded by the scanner's result vector.
import { PAGE_IS, PM_SCAN } from '../abi.js';
import { PagemapScanner } from '../core/pagemap-scan.js';
import type { Userfaultfd } from '../core/uffd.js';
import { PageRuns } from './page-runs.js';
import type { Target } from './target.js';

export class AsyncMethod {
  readonly #target: Target;
  readonly #scanner: PagemapScanner;

  constructor(target: Target, uffd: Userfaultfd) {
    this.#target = target;
    this.#scanner = new PagemapScanner(target.pid);
    try {
      uffd.writeProtect(target, true);
    } catch (err) {
      this.#scanner.close();
      throw err;
    }
  }

  collect(reset: boolean): PageRuns {
    const { address, length, pageSize } = this.#target;
    const runs = new PageRuns(pageSize);
    const end = address + BigInt(length);
    const size = BigInt(pageSize);
    // CHECK_WPASYNC: a range that lost its WP_ASYNC registration (unregistered, remapped) fails loudly with
    // EPERM instead of reading as "nothing written".
    const flags = PM_SCAN.CHECK_WPASYNC | (reset ? PM_SCAN.WP_MATCHING : 0n);
    for (let start = address; start < end;) {
      const { count, walkEnd } = this.#scanner.scan({ start, end, flags, categoryMask: PAGE_IS.WRITTEN, returnMask: PAGE_IS.WRITTEN });
      for (let i = 0; i < count; i++) {
        const region = this.#scanner.region(i);
        runs.add(Number((region.start - address) / size), Number((region.end - region.start + size - 1n) / size));
      }
      if (walkEnd <= start) throw new Error(`PAGEMAP_SCAN made no progress at 0x${start.toString(16)}`);
      start = walkEnd;
    }
    return runs;
  }

  close(): void {
    this.#scanner.close();
  }
}
