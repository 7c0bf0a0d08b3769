// A batch of raw uffd messages read in one read(2), decoded in place: a fault message costs two array
// reads, no object and no BigInt. Any other message (an event) is decoded into an object on request.
import { EVENT, STRUCTS } from '../abi.js';
import type { Userfaultfd, UffdEventOf } from '../core/uffd.js';
import { eventAt, readRaw } from '../core/uffd.js';

const MSG_SIZE = STRUCTS.uffd_msg.size;
const WORDS = MSG_SIZE / 4;
/** uffd_msg.arg.pagefault.address, in u32 words from the start of a message. */
const ADDRESS = (STRUCTS.uffd_msg.arg + 8) / 4;
const TWO_32 = 4294967296;

export class MessageBatch {
  readonly #bytes: Uint8Array;
  readonly #words: Uint32Array;
  /** Messages in the batch read last. */
  count = 0;

  constructor(max: number) {
    this.#bytes = new Uint8Array(max * MSG_SIZE);
    this.#words = new Uint32Array(this.#bytes.buffer);
  }

  /** Reads what is pending (up to the batch size) without blocking; the count, 0 when nothing is. */
  read(uffd: Userfaultfd): number {
    this.count = uffd[readRaw](this.#bytes);
    return this.count;
  }

  isFault(index: number): boolean {
    return this.#bytes[index * MSG_SIZE] === EVENT.PAGEFAULT;
  }

  /** The faulting address of fault message `index`, as a Number (user-space addresses are below 2^53). */
  address(index: number): number {
    const at = index * WORDS + ADDRESS;
    return (this.#words[at] ?? 0) + (this.#words[at + 1] ?? 0) * TWO_32;
  }

  /** Message `index` as an event object (for the messages that are not faults). */
  event(uffd: Userfaultfd, index: number): UffdEventOf {
    return uffd[eventAt](this.#bytes, index);
  }
}
