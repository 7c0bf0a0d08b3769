// The resolve ioctls of the library's own fillers, with addresses as Numbers instead of BigInts: a fault
// then costs no BigInt arithmetic, no DataView BigInt writes and no exception for the expected outcomes
// (EEXIST, EAGAIN). Arguments are valid by construction (page-aligned, inside a registered range), so
// nothing is checked here; results come back as 0 or a negative errno. User-space addresses stay below
// 2^47 (2^56 with 5-level paging, which the kernel hands out only on request), far inside a Number's 2^53.
import { COPY_MODE, ioctlInfo, STRUCTS, ZEROPAGE_MODE } from '../abi.js';
import { native } from '../binding.js';
import { EAGAIN } from '../errors.js';

const COPY = ioctlInfo('COPY').request;
const WAKE = ioctlInfo('WAKE').request;
const ZEROPAGE = ioctlInfo('ZEROPAGE').request;
const TWO_32 = 4294967296;
const COPY_RESULT = STRUCTS.uffdio_copy.copy / 4;
const ZEROPAGE_RESULT = STRUCTS.uffdio_zeropage.zeropage / 4;
const DONTWAKE = Number(COPY_MODE.DONTWAKE);
const ZERO_DONTWAKE = Number(ZEROPAGE_MODE.DONTWAKE);

/** The address of a view's first byte, for copying from memory this process owns (a source, a scratch). */
export function addressOfBytes(view: ArrayBufferView): number {
  return Number(native.addressOf(view));
}

/** A view's length as V8 holds it: a source's view can carry a redefined byteLength property. */
export function byteLengthOfBytes(view: ArrayBufferView): number {
  return native.byteLengthOf(view);
}

export class FillIoctls {
  /** The uffd (a Userfaultfd: only its descriptor is read, so this file need not import uffd.ts). */
  readonly #uffd: { readonly fd: number };
  readonly #bytes = new Uint8Array(STRUCTS.uffdio_copy.size);
  readonly #words = new Uint32Array(this.#bytes.buffer);
  readonly #signed = new Int32Array(this.#bytes.buffer);
  /** Bytes resolved by the last copy() or zeropage(), also when it failed. */
  done = 0;

  constructor(uffd: { readonly fd: number }) {
    this.#uffd = uffd;
  }

  /**
   * UFFDIO_COPY of `length` bytes from `src` (an address in this process) to `dst`, waking the waiters on
   * the copied range unless `wake` is false. Partial progress is continued until done or a real error;
   * returns 0 or the negative errno, with `done` the bytes copied before it. -EAGAIN with nothing done
   * means an unread event (mmap changing): read the events, then retry.
   */
  copy(dst: number, src: number, length: number, wake: boolean): number {
    const w = this.#words;
    this.done = 0;
    for (;;) {
      const at = this.done;
      u64(w, 0, dst + at);
      u64(w, 2, src + at);
      u64(w, 4, length - at);
      u64(w, 6, wake ? 0 : DONTWAKE);
      const errno = this.#ioctl(COPY, COPY_RESULT);
      if (errno === 0) {
        this.done = length;
        return 0;
      }
      if (!this.#progressed(errno, COPY_RESULT, length)) return errno;
      if (this.done === length) return 0;
    }
  }

  /** UFFDIO_ZEROPAGE of [start, start + length); 0 or the negative errno, `done` as for copy(). */
  zeropage(start: number, length: number, wake: boolean): number {
    const w = this.#words;
    this.done = 0;
    for (;;) {
      const at = this.done;
      u64(w, 0, start + at);
      u64(w, 2, length - at);
      u64(w, 4, wake ? 0 : ZERO_DONTWAKE);
      const errno = this.#ioctl(ZEROPAGE, ZEROPAGE_RESULT);
      if (errno === 0) {
        this.done = length;
        return 0;
      }
      if (!this.#progressed(errno, ZEROPAGE_RESULT, length)) return errno;
      if (this.done === length) return 0;
    }
  }

  /** UFFDIO_WAKE of [start, start + length); 0 or the negative errno. */
  wake(start: number, length: number): number {
    const w = this.#words;
    u64(w, 0, start);
    u64(w, 2, length);
    return native.ioctl(this.#uffd.fd, WAKE, this.#bytes);
  }

  /** Runs a resolve ioctl with its result field preset to 0 (the kernel leaves it unwritten on early errors). */
  #ioctl(request: number, result: number): number {
    this.#words[result] = 0;
    this.#words[result + 1] = 0;
    return native.ioctl(this.#uffd.fd, request, this.#bytes);
  }

  /** The kernel reports partial progress as EAGAIN with a positive count: true when it did (and counts it). */
  #progressed(errno: number, result: number, length: number): boolean {
    if (errno !== EAGAIN) return false;
    const count = (this.#signed[result + 1] ?? 0) * TWO_32 + (this.#words[result] ?? 0);
    if (count <= 0 || this.done + count > length) return false;
    this.done += count;
    return true;
  }
}

/** Writes a u64 from a Number below 2^53 as two little-endian u32 words. */
function u64(words: Uint32Array, index: number, value: number): void {
  const low = value >>> 0;
  words[index] = low;
  words[index + 1] = (value - low) / TWO_32;
}
