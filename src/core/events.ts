// Typed events from uffd_msg batches.
import type { RawMessage } from '../abi.js';
import { EVENT, PAGEFAULT_FLAG, STRUCTS } from '../abi.js';
import { decodeMessage } from '../abi.js';

export type PagefaultKind = 'missing' | 'wp' | 'minor';

export type UffdEvent<Child = unknown> =
  | { type: 'pagefault'; kind: PagefaultKind; address: bigint; write: boolean; threadId: number }
  | { type: 'fork'; uffd: Child }
  | { type: 'remap'; from: bigint; to: bigint; length: number }
  | { type: 'remove'; start: bigint; end: bigint }
  | { type: 'unmap'; start: bigint; end: bigint }
  | { type: 'unknown'; code: number; raw: Uint8Array };

/**
 * Turns one raw message into an event; `adoptFork` wraps the fd a FORK message installed in this process
 * (undefined when it could not: the message then surfaces as 'unknown', never dropped).
 */
export function toEvent<Child>(msg: RawMessage, adoptFork: (fd: number) => Child | undefined): UffdEvent<Child> {
  if ('flags' in msg) {
    const kind: PagefaultKind = msg.flags & PAGEFAULT_FLAG.WP ? 'wp' : msg.flags & PAGEFAULT_FLAG.MINOR ? 'minor' : 'missing';
    return { type: 'pagefault', kind, address: msg.address, write: (msg.flags & PAGEFAULT_FLAG.WRITE) !== 0n, threadId: msg.ptid };
  }
  if ('ufd' in msg) {
    const uffd = adoptFork(msg.ufd);
    if (uffd !== undefined) return { type: 'fork', uffd };
    const raw = new Uint8Array(STRUCTS.uffd_msg.size);
    raw[0] = msg.event;
    new DataView(raw.buffer).setUint32(STRUCTS.uffd_msg.arg, msg.ufd, true); // fork.ufd, the first field of arg
    return { type: 'unknown', code: msg.event, raw };
  }
  if ('from' in msg) return { type: 'remap', from: msg.from, to: msg.to, length: Number(msg.len) };
  if ('start' in msg) return { type: msg.event === EVENT.REMOVE ? 'remove' : 'unmap', start: msg.start, end: msg.end };
  return { type: 'unknown', code: msg.event, raw: msg.raw };
}

/**
 * Decodes `count` messages from a read() buffer, non-fault events first: the kernel hands out queued faults
 * before queued events, so a REMOVE that happened before a fault can arrive after it in the same batch, and a
 * server must apply the REMOVE before serving that fault. Order is otherwise kept.
 */
export function decodeBatch<Child>(bytes: Uint8Array, count: number, adoptFork: (fd: number) => Child | undefined): UffdEvent<Child>[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let events: UffdEvent<Child>[] | undefined;
  const faults: UffdEvent<Child>[] = [];
  for (let i = 0; i < count; i++) {
    const at = i * MSG_SIZE;
    if (view.getUint8(at) === EVENT.PAGEFAULT) {
      // Straight to the event: a fault is most messages, and the raw form would be a second object.
      faults.push(pagefault(view, at));
      continue;
    }
    (events ??= []).push(toEvent(decodeMessage(view, at), adoptFork));
  }
  return events === undefined ? faults : events.concat(faults);
}

const MSG_SIZE = STRUCTS.uffd_msg.size;
const FLAGS = STRUCTS.uffd_msg.arg;
const WRITE = Number(PAGEFAULT_FLAG.WRITE);
const WP = Number(PAGEFAULT_FLAG.WP);
const MINOR = Number(PAGEFAULT_FLAG.MINOR);

/** uffd_msg.arg.pagefault: u64 flags (the defined bits are in the low word), u64 address, u32 ptid. */
function pagefault(view: DataView, at: number): { type: 'pagefault'; kind: PagefaultKind; address: bigint; write: boolean; threadId: number } {
  const flags = view.getUint32(at + FLAGS, true);
  return {
    type: 'pagefault', kind: flags & WP ? 'wp' : flags & MINOR ? 'minor' : 'missing',
    address: view.getBigUint64(at + FLAGS + 8, true), write: (flags & WRITE) !== 0, threadId: view.getUint32(at + FLAGS + 16, true),
  };
}
