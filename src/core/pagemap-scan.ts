// The PAGEMAP_SCAN ioctl (Linux 6.7) on /proc/<pid>/pagemap: which pages of a range are in given categories
// (written since write-protected, present, ...), optionally write-protecting the matched pages in the same
// walk. The kernel writes its answer through a user pointer in the argument: the result vector is a buffer
// this object owns and keeps alive, and its capacity bounds every call.
import { closeSync, openSync } from 'node:fs';
import { PAGEMAP_SCAN } from '../abi.js';
import { native } from '../binding.js';
import { UffdError } from '../errors.js';

const ARG = PAGEMAP_SCAN.arg;
const REGION_WORDS = PAGEMAP_SCAN.region.size / 8;

export interface ScanRequest {
  start: bigint;
  end: bigint;
  /** PM_SCAN_* bits */
  flags: bigint;
  categoryMask: bigint;
  returnMask: bigint;
  categoryInverted?: bigint;
  categoryAnyofMask?: bigint;
}

export class PagemapScanner {
  readonly #fd: number;
  readonly #arg = new Uint8Array(ARG.size);
  readonly #view = new DataView(this.#arg.buffer);
  readonly #vec: BigUint64Array;
  /** Page regions one call can return at most. */
  readonly capacity: number;

  /** Opens /proc/<pid>/pagemap (`pid` 'self' for this process; another needs ptrace read access to it). */
  constructor(pid: number | 'self' = 'self', capacity = 1024) {
    if (!Number.isSafeInteger(capacity) || capacity < 1) throw new RangeError(`capacity must be a positive integer, got ${String(capacity)}`);
    this.capacity = capacity;
    this.#vec = new BigUint64Array(capacity * REGION_WORDS);
    this.#fd = openSync(`/proc/${String(pid)}/pagemap`, 'r');
  }

  /**
   * One PAGEMAP_SCAN call. Returns how many regions it wrote (read them with `region(i)`) and where the walk
   * stopped: `end` when it covered the range, less when the result vector filled up (call again from there).
   */
  scan(request: ScanRequest): { count: number; walkEnd: bigint } {
    const view = this.#view;
    view.setBigUint64(ARG.sizeField, BigInt(ARG.size), true);
    view.setBigUint64(ARG.flags, request.flags, true);
    view.setBigUint64(ARG.start, request.start, true);
    view.setBigUint64(ARG.end, request.end, true);
    view.setBigUint64(ARG.walkEnd, 0n, true);
    view.setBigUint64(ARG.vec, native.addressOf(this.#vec), true);
    view.setBigUint64(ARG.vecLen, BigInt(this.capacity), true);
    view.setBigUint64(ARG.maxPages, 0n, true);
    view.setBigUint64(ARG.categoryInverted, request.categoryInverted ?? 0n, true);
    view.setBigUint64(ARG.categoryMask, request.categoryMask, true);
    view.setBigUint64(ARG.categoryAnyofMask, request.categoryAnyofMask ?? 0n, true);
    view.setBigUint64(ARG.returnMask, request.returnMask, true);
    const rc = native.ioctl(this.#fd, PAGEMAP_SCAN.request, this.#arg);
    if (rc < 0) {
      throw new UffdError(rc, 'ioctl(PAGEMAP_SCAN)', rc === -25 /* ENOTTY */ ? { hint: 'PAGEMAP_SCAN needs Linux 6.7' } : undefined);
    }
    return { count: rc, walkEnd: view.getBigUint64(ARG.walkEnd, true) };
  }

  /** Region `i` of the last scan: [start, end) and its categories. */
  region(i: number): { start: bigint; end: bigint; categories: bigint } {
    const vec = this.#vec;
    const at = i * REGION_WORDS;
    return { start: vec[at] ?? 0n, end: vec[at + 1] ?? 0n, categories: vec[at + 2] ?? 0n };
  }

  close(): void {
    closeSync(this.#fd);
  }
}
