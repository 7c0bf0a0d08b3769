// The Userfaultfd class: creation with feature negotiation done right, ranges, resolve ioctls, events.
import { readlinkSync } from 'node:fs';
import type { FeatureName } from '../abi.js';
import {
  CONTINUE_MODE, COPY_MODE, FEATURES, ioctlInfo, MOVE_MODE, POISON_MODE, REGISTER_MODE, STRUCTS,
  WRITEPROTECT_MODE, ZEROPAGE_MODE,
} from '../abi.js';
import { native } from '../binding.js';
import type { Via } from './create.js';
import { createFd, VIAS } from './create.js';
import { check, EAGAIN, ERRNO, errnoName, UffdError, UnsupportedFeatureError, withCode } from '../errors.js';
import type { UffdEvent } from './events.js';
import { decodeBatch } from './events.js';
import type { RunningStream } from './event-stream.js';
import { streamEvents } from './event-stream.js';
import { FillIoctls } from './fill-ioctls.js';
import { readFdInfo, uffdioApi } from './uffdio-api.js';
import { probe } from '../probe/probe.js';
import { FeatureSet, IoctlSet } from './sets.js';
import type { Range } from '../validate.js';
import { PAGE_SIZE } from '../system.js';
import { checkAddress, checkBoolean, checkInteger, checkLength, checkOneOf, checkOptionsObject, checkRange, describe } from '../validate.js';

export interface OpenOptions {
  /** All must be enabled, else UnsupportedFeatureError. */
  require?: FeatureName[];
  /** Enabled where this kernel offers them, skipped otherwise. */
  request?: FeatureName[];
  nonBlocking?: boolean;
  closeOnExec?: boolean;
  userModeOnly?: boolean;
  via?: Via;
}

export type UffdEventOf = UffdEvent<Userfaultfd>;

/** Keys of the raw message path of the library's own serving loops: no objects per fault message. */
/** @internal */
export const readRaw = Symbol('readRaw');
/** @internal */
export const eventAt = Symbol('eventAt');

/** Messages read per read(2) by events(). */
const READ_BATCH = 64;
const POLLERR = 0x8;
const FEATURE_NAMES = new Set<string>(FEATURES.map((f) => f.name));
// fromNames throws on a name abi.ts lacks: a renamed feature cannot silently become bit 0.
const maskOf = (names: FeatureName[]): bigint => FeatureSet.fromNames(names).mask;
const WP_ASYNC = maskOf(['WP_ASYNC']);
const WP_UNPOPULATED = maskOf(['WP_UNPOPULATED']);
const EVENT_FORK = maskOf(['EVENT_FORK']);
const MSG_SIZE = STRUCTS.uffd_msg.size;
const NUMBER_END = BigInt(Number.MAX_SAFE_INTEGER);
/** The scratch struct holds any ioctl argument: the largest is 40 bytes (uffdio_copy, uffdio_move). */
const SCRATCH_SIZE = Math.max(...Object.values(STRUCTS).map((s) => s.size));
// Range-style structs ({ start, len, mode, result }: register, zeropage, continue, poison, writeprotect)
// and the two-address ones ({ dst, src, len, mode, result }: copy, move) share their layouts.
const { start: RANGE_START, len: RANGE_LEN, mode: RANGE_MODE, zeropage: RANGE_RESULT } = STRUCTS.uffdio_zeropage;
const { dst: PAIR_DST, src: PAIR_SRC, len: PAIR_LEN, mode: PAIR_MODE, copy: PAIR_RESULT } = STRUCTS.uffdio_copy;
const REQ = {
  REGISTER: ioctlInfo('REGISTER').request, UNREGISTER: ioctlInfo('UNREGISTER').request, WAKE: ioctlInfo('WAKE').request,
  COPY: ioctlInfo('COPY').request, ZEROPAGE: ioctlInfo('ZEROPAGE').request, MOVE: ioctlInfo('MOVE').request,
  WRITEPROTECT: ioctlInfo('WRITEPROTECT').request, CONTINUE: ioctlInfo('CONTINUE').request, POISON: ioctlInfo('POISON').request,
};

// Fds the library created for the user (a fork event's uffd) are closed if the user drops the object.
const dropped = new FinalizationRegistry<number>((fd) => native.close(fd));
// process.exit() joins the libuv threadpool before env cleanup: a pool thread blocked in a fault would hang
// the exit. Closing every live uffd first wakes such faulters.
const live = new Set<WeakRef<Userfaultfd>>();
const forgotten = new FinalizationRegistry<WeakRef<Userfaultfd>>((ref) => { live.delete(ref); });
process.on('exit', () => {
  for (const ref of live) ref.deref()?.close();
});

function checkFeatureNames(value: unknown, name: string): FeatureName[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) throw new TypeError(`${name} must be an array of feature names, got ${describe(value)}`);
  for (const item of value) {
    if (typeof item !== 'string' || !FEATURE_NAMES.has(item)) {
      throw new TypeError(`${name}: unknown userfaultfd feature ${describe(item)}; known: ${FEATURES.map((f) => f.name).join(', ')}`);
    }
  }
  return value as FeatureName[];
}

export class Userfaultfd {
  #fd: number;
  #features: FeatureSet;
  readonly #scratch = new Uint8Array(SCRATCH_SIZE);
  readonly #view = new DataView(this.#scratch.buffer);
  readonly #streams = new Set<RunningStream>();
  readonly #ref: WeakRef<Userfaultfd>;
  #readBuffer = new Uint8Array(READ_BATCH * MSG_SIZE);
  #fill: FillIoctls | undefined;
  #unconsumed: UffdEventOf[] = [];

  private constructor(fd: number, features: FeatureSet) {
    this.#fd = fd;
    this.#features = features;
    this.#ref = new WeakRef(this);
    live.add(this.#ref);
    forgotten.register(this, this.#ref, this.#ref);
  }

  /** Creates a uffd and enables `require` and the offered part of `request`. */
  static open(options?: OpenOptions): Userfaultfd {
    const opts = checkOptionsObject(options, 'Userfaultfd.open options', ['require', 'request', 'nonBlocking', 'closeOnExec', 'userModeOnly', 'via']);
    const required = checkFeatureNames(opts.require, 'require');
    const requested = checkFeatureNames(opts.request, 'request');
    const flags = {
      nonBlocking: checkBoolean(opts.nonBlocking, 'nonBlocking') ?? true,
      closeOnExec: checkBoolean(opts.closeOnExec, 'closeOnExec') ?? true,
      userModeOnly: checkBoolean(opts.userModeOnly, 'userModeOnly') ?? false,
    };
    const via = opts.via ?? 'auto';
    checkOneOf(via, 'via', VIAS);

    const fd = createFd(via, flags);
    try {
      // The offered set comes from a throwaway fd (cached): only ever send the kernel bits it offers.
      const offered = probe().features.mask;
      const missing = required.filter((name) => (offered & maskOf([name])) === 0n);
      if (missing.length > 0) throw new UnsupportedFeatureError(missing);
      let wanted = (maskOf(required) | maskOf(requested)) & offered;
      let result = uffdioApi(fd, wanted);
      if (errnoName(result.errno) === 'EPERM' && (wanted & EVENT_FORK) !== 0n) {
        if (required.includes('EVENT_FORK')) {
          throw new UnsupportedFeatureError(['EVENT_FORK'], 'EVENT_FORK needs CAP_SYS_PTRACE in the initial user namespace (run as root)', 'privilege');
        }
        // A failed UFFDIO_API leaves the fd uninitialized: retry on the same fd without the bit.
        wanted &= ~EVENT_FORK;
        result = uffdioApi(fd, wanted);
      }
      if (result.errno !== 0) throw new UffdError(result.errno, 'ioctl(UFFDIO_API)');
      // The kernel turns WP_UNPOPULATED on with WP_ASYNC.
      const enabled = (wanted & WP_ASYNC) !== 0n ? wanted | WP_UNPOPULATED : wanted;
      return new Userfaultfd(fd, FeatureSet.fromMask(enabled));
    } catch (err) {
      native.close(fd);
      throw err;
    }
  }

  /**
   * Adopts an initialized uffd (from a socket, a fork event, a worker's workerData): close() closes it.
   * Sets O_NONBLOCK (a fork event's fd keeps the creator's flags, and poll on a blocking uffd is POLLERR).
   */
  static fromFd(fd: number, options?: { features?: FeatureName[] }): Userfaultfd {
    checkInteger(fd, 'fd', { min: 0, error: TypeError });
    const opts = checkOptionsObject(options, 'Userfaultfd.fromFd options', ['features']);
    const given = opts.features === undefined ? undefined : checkFeatureNames(opts.features, 'features');
    let target: string;
    try {
      target = readlinkSync(`/proc/self/fd/${String(fd)}`);
    } catch {
      throw new UffdError(ERRNO.EBADF, 'fromFd', { hint: `fd ${String(fd)} is not open` });
    }
    if (target !== 'anon_inode:[userfaultfd]') throw new TypeError(`fd ${String(fd)} is not a userfaultfd (it is ${target})`);
    // Two owners of one descriptor: the first close() would leave the other holding a number that the next
    // open() reuses, and its close() would then close an unrelated file. dup() it to get a second owner.
    for (const ref of live) {
      if (ref.deref()?.fd === fd) throw new TypeError(`fd ${String(fd)} is already owned by an open Userfaultfd; adopt a dup() of it instead`);
    }
    const info = readFdInfo(fd);
    check(native.setNonBlocking(fd, true), 'fcntl(F_SETFL, O_NONBLOCK)');
    // fdinfo shows the initialized bit only since 5.15; a non-blocking uffd polls POLLERR until UFFDIO_API
    // has succeeded on every kernel.
    const revents = check(native.pollNow(fd), 'poll');
    if (info === undefined || (revents & POLLERR) !== 0) throw new TypeError(`fd ${String(fd)} is a userfaultfd on which UFFDIO_API has not succeeded yet`);
    return new Userfaultfd(fd, given === undefined ? FeatureSet.fromMask(info.features) : FeatureSet.fromNames(given));
  }

  /** The descriptor; -1 once closed. */
  get fd(): number {
    return this.#fd;
  }

  get closed(): boolean {
    return this.#fd < 0;
  }

  /** The features ENABLED on this uffd (UFFDIO_API reports those offered; the enabled set is in fdinfo). */
  get features(): FeatureSet {
    return this.#features;
  }

  /** A new close-on-exec descriptor for the same uffd, e.g. for a worker thread. Whoever dup()s closes it:
   * the kernel wakes blocked faulters only when the last descriptor of a uffd is closed. */
  dup(): number {
    return check(native.dupCloexec(this.#open()), 'fcntl(F_DUPFD_CLOEXEC)');
  }

  register(range: Range, modes: { missing?: boolean; wp?: boolean; minor?: boolean }): IoctlSet {
    const r = checkRange(range);
    const m = checkOptionsObject(modes, 'modes', ['missing', 'wp', 'minor']);
    const mode = (checkBoolean(m.missing, 'missing') === true ? REGISTER_MODE.MISSING : 0n)
      | (checkBoolean(m.wp, 'wp') === true ? REGISTER_MODE.WP : 0n)
      | (checkBoolean(m.minor, 'minor') === true ? REGISTER_MODE.MINOR : 0n);
    if (mode === 0n) throw new TypeError('register needs at least one of missing, wp, minor');
    this.#put(r.address, BigInt(r.length), mode, 0n);
    check(this.#ioctl(REQ.REGISTER), 'ioctl(UFFDIO_REGISTER)');
    return IoctlSet.fromMask(this.#view.getBigUint64(STRUCTS.uffdio_register.ioctls, true));
  }

  unregister(range: Range): void {
    const r = checkRange(range);
    this.#put(r.address, BigInt(r.length));
    check(this.#ioctl(REQ.UNREGISTER), 'ioctl(UFFDIO_UNREGISTER)');
  }

  wake(range: Range): void {
    const r = checkRange(range);
    this.#put(r.address, BigInt(r.length));
    check(this.#ioctl(REQ.WAKE), 'ioctl(UFFDIO_WAKE)');
  }

  /** UFFDIO_COPY of `src` to `dst`; returns the bytes copied (all of them, or it throws with `.bytes`). */
  copy(dst: bigint, src: ArrayBufferView, options?: { wake?: boolean; wp?: boolean }): number {
    const o = checkOptionsObject(options, 'copy options', ['wake', 'wp']);
    checkAddress(dst, 'dst', PAGE_SIZE);
    if (!ArrayBuffer.isView(src)) throw new TypeError(`src must be an ArrayBufferView, got ${describe(src)}`);
    // The length V8 holds, not the byteLength property: user code can redefine that to read past the view.
    const length = checkLength(native.byteLengthOf(src), 'src.byteLength', PAGE_SIZE);
    const wake = checkBoolean(o.wake, 'wake') !== false;
    const wp = checkBoolean(o.wp, 'wp') === true;
    const source = native.addressOf(src);
    if (!wp && dst < NUMBER_END) {
      // The common case without BigInt arithmetic per call (addresses below 2^53 are exact as Numbers).
      this.#fill ??= new FillIoctls(this);
      const errno = this.#fill.copy(Number(dst), Number(source), length, wake);
      if (errno !== 0) throw resolveError(errno, 'ioctl(UFFDIO_COPY)', this.#fill.done);
      return length;
    }
    const mode = (wake ? 0n : COPY_MODE.DONTWAKE) | (wp ? COPY_MODE.WP : 0n);
    return this.#resolve(REQ.COPY, 'ioctl(UFFDIO_COPY)', dst, source, length, mode);
  }

  zeropage(range: Range, options?: { wake?: boolean }): number {
    const r = checkRange(range);
    const o = checkOptionsObject(options, 'zeropage options', ['wake']);
    const mode = checkBoolean(o.wake, 'wake') === false ? ZEROPAGE_MODE.DONTWAKE : 0n;
    return this.#resolveRange(REQ.ZEROPAGE, 'ioctl(UFFDIO_ZEROPAGE)', r, mode);
  }

  continue(range: Range, options?: { wake?: boolean; wp?: boolean }): number {
    const r = checkRange(range);
    const o = checkOptionsObject(options, 'continue options', ['wake', 'wp']);
    const mode = (checkBoolean(o.wake, 'wake') === false ? CONTINUE_MODE.DONTWAKE : 0n) | (checkBoolean(o.wp, 'wp') === true ? CONTINUE_MODE.WP : 0n);
    return this.#resolveRange(REQ.CONTINUE, 'ioctl(UFFDIO_CONTINUE)', r, mode);
  }

  poison(range: Range, options?: { wake?: boolean }): number {
    const r = checkRange(range);
    const o = checkOptionsObject(options, 'poison options', ['wake']);
    const mode = checkBoolean(o.wake, 'wake') === false ? POISON_MODE.DONTWAKE : 0n;
    return this.#resolveRange(REQ.POISON, 'ioctl(UFFDIO_POISON)', r, mode);
  }

  move(dst: bigint, src: bigint, length: number, options?: { wake?: boolean; allowSrcHoles?: boolean }): number {
    checkAddress(dst, 'dst', PAGE_SIZE);
    checkAddress(src, 'src', PAGE_SIZE);
    checkLength(length, 'length', PAGE_SIZE);
    const o = checkOptionsObject(options, 'move options', ['wake', 'allowSrcHoles']);
    const mode = (checkBoolean(o.wake, 'wake') === false ? MOVE_MODE.DONTWAKE : 0n) | (checkBoolean(o.allowSrcHoles, 'allowSrcHoles') === true ? MOVE_MODE.ALLOW_SRC_HOLES : 0n);
    return this.#resolve(REQ.MOVE, 'ioctl(UFFDIO_MOVE)', dst, src, length, mode);
  }

  writeProtect(range: Range, protect: boolean, options?: { wake?: boolean }): void {
    const r = checkRange(range);
    if (typeof protect !== 'boolean') throw new TypeError(`protect must be a boolean, got ${describe(protect)}`);
    const o = checkOptionsObject(options, 'writeProtect options', ['wake']);
    const wake = checkBoolean(o.wake, 'wake') ?? true;
    if (protect && !wake) throw new TypeError('wake: false applies only when removing protection (the kernel refuses WP|DONTWAKE)');
    const mode = (protect ? WRITEPROTECT_MODE.WP : 0n) | (wake ? 0n : WRITEPROTECT_MODE.DONTWAKE);
    this.#put(r.address, BigInt(r.length), mode);
    check(this.#ioctl(REQ.WRITEPROTECT), 'ioctl(UFFDIO_WRITEPROTECT)');
  }

  /** Reads one batch of pending messages without blocking; [] when nothing is pending. */
  read(max = 64): UffdEventOf[] {
    checkInteger(max, 'max', { min: 1, max: 4096 });
    const fd = this.#open();
    // Events an events() loop read from the kernel but was left before it yielded them come first.
    if (this.#unconsumed.length > 0) return this.#unconsumed.splice(0, max);
    if (this.#readBuffer.length < max * MSG_SIZE) this.#readBuffer = new Uint8Array(max * MSG_SIZE);
    const n = native.read(fd, this.#readBuffer.subarray(0, max * MSG_SIZE));
    if (n === EAGAIN) return [];
    check(n, 'read');
    return decodeBatch(this.#readBuffer, n / MSG_SIZE, adoptChild);
  }

  /**
   * @internal
   * Reads pending messages into `into` (whole uffd_msg structs) without decoding them; returns how many,
   * 0 when none is pending. For the library's serving loops, which decode fault messages in place.
   */
  [readRaw](into: Uint8Array): number {
    const n = native.read(this.#open(), into);
    if (n === EAGAIN) return 0;
    return check(n, 'read') / MSG_SIZE;
  }

  /** @internal Message `index` of a batch read by [readRaw], as an event (a fork's uffd adopted as read() does). */
  [eventAt](bytes: Uint8Array, index: number): UffdEventOf {
    const events = decodeBatch(bytes.subarray(index * MSG_SIZE, (index + 1) * MSG_SIZE), 1, adoptChild);
    return events[0] ?? { type: 'unknown', code: bytes[index * MSG_SIZE] ?? 0, raw: bytes.slice(index * MSG_SIZE, (index + 1) * MSG_SIZE) };
  }

  /** Events as they arrive, driven by the event loop; ends on close() or when `signal` aborts. */
  events(options?: { signal?: AbortSignal }): AsyncGenerator<UffdEventOf, void, undefined> {
    return streamEvents({
      open: () => this.#open(), isOpen: () => this.#fd >= 0, next: () => this.#nextEvent(), streams: this.#streams,
    }, options);
  }

  /** The next event the backlog or the kernel has; undefined when none is pending. */
  #nextEvent(): UffdEventOf | undefined {
    if (this.#unconsumed.length === 0) this.#unconsumed = this.read(READ_BATCH);
    return this.#unconsumed.shift();
  }

  /** Closes the descriptor. The kernel unregisters and wakes faulters when the LAST descriptor closes. */
  close(): void {
    if (this.#fd < 0) return;
    for (const stream of this.#streams) stream.stop(); // before the fd goes: epoll must not see a closed fd
    this.#streams.clear();
    const fd = this.#fd;
    this.#fd = -1;
    live.delete(this.#ref);
    forgotten.unregister(this.#ref);
    dropped.unregister(this);
    check(native.close(fd), 'close');
  }

  [Symbol.dispose](): void {
    this.close();
  }

  #open(): number {
    if (this.#fd < 0) throw withCode(new TypeError('the userfaultfd is closed'), 'ERR_UFFD_CLOSED');
    return this.#fd;
  }

  /** Fills a range-style struct in the scratch: start, len, then mode and the result field where given. */
  #put(start: bigint, len: bigint, mode?: bigint, result?: bigint): void {
    const view = this.#view;
    view.setBigUint64(RANGE_START, start, true);
    view.setBigUint64(RANGE_LEN, len, true);
    if (mode !== undefined) view.setBigUint64(RANGE_MODE, mode, true);
    if (result !== undefined) view.setBigUint64(RANGE_RESULT, result, true);
  }

  #ioctl(request: number): number {
    return native.ioctl(this.#open(), request, this.#scratch);
  }

  /** ZEROPAGE, CONTINUE and POISON share one layout: { start, len, mode, result }. */
  #resolveRange(request: number, syscall: string, r: { address: bigint; length: number }, mode: bigint): number {
    return this.#resolve(request, syscall, r.address, undefined, r.length, mode);
  }

  /**
   * Runs a resolve ioctl to completion. The kernel reports partial progress as EAGAIN with a positive count
   * and hides the real cause, so the rest is retried until done or a real error appears, which is thrown
   * with `.bytes` = bytes resolved before it. EAGAIN with the count -EAGAIN means an unread event: thrown as
   * EAGAIN without looping (read the events, then retry). The count field is preset to 0 because the kernel
   * leaves it unwritten on early EINVAL/EFAULT/ESRCH: errno is the truth then.
   */
  #resolve(request: number, syscall: string, dst: bigint, src: bigint | undefined, length: number, mode: bigint): number {
    // COPY and MOVE: { dst, src, len, mode, result }; the others: { start, len, mode, result }.
    const view = this.#view;
    const resultOffset = src === undefined ? RANGE_RESULT : PAIR_RESULT;
    let done = 0;
    for (;;) {
      const offset = BigInt(done);
      const rest = BigInt(length - done);
      if (src === undefined) {
        view.setBigUint64(RANGE_START, dst + offset, true);
        view.setBigUint64(RANGE_LEN, rest, true);
        view.setBigUint64(RANGE_MODE, mode, true);
      } else {
        view.setBigUint64(PAIR_DST, dst + offset, true);
        view.setBigUint64(PAIR_SRC, src + offset, true);
        view.setBigUint64(PAIR_LEN, rest, true);
        view.setBigUint64(PAIR_MODE, mode, true);
      }
      view.setBigInt64(resultOffset, 0n, true);
      const errno = this.#ioctl(request);
      if (errno === 0) return length;
      const count = Number(view.getBigInt64(resultOffset, true));
      if (errno === EAGAIN && count > 0 && done + count <= length) {
        done += count;
        if (done === length) return length;
        continue;
      }
      throw resolveError(errno, syscall, done);
    }
  }
}

/** Which kind of uffd LazyMemory and the like got: a full one, or user-mode-only (kernel-mode faults EFAULT). */
export type UffdMode = 'full' | 'user-mode-only';

/**
 * Wraps the fd a FORK message installed in this process. If it cannot be adopted it is closed, and the
 * event still surfaces (as 'unknown') rather than the whole batch being lost.
 */
function adoptChild(child: number): Userfaultfd | undefined {
  try {
    const uffd = Userfaultfd.fromFd(child);
    dropped.register(uffd, child, uffd);
    return uffd;
  } catch {
    native.close(child);
    return undefined;
  }
}

/**
 * A full uffd when this process may create one, else a user-mode-only one: then faults the kernel takes on
 * the program's behalf (a read(2) into registered memory) fail with EFAULT instead of reaching the handler.
 * `refused` is why the full uffd was not possible.
 */
export function openPreferringFull(options: Omit<OpenOptions, 'userModeOnly'> = {}): { uffd: Userfaultfd; mode: UffdMode; refused?: UffdError } {
  try {
    return { uffd: Userfaultfd.open(options), mode: 'full' };
  } catch (err) {
    if (err instanceof UffdError && err.code === 'EPERM') return { uffd: Userfaultfd.open({ ...options, userModeOnly: true }), mode: 'user-mode-only', refused: err };
    throw err;
  }
}

/** A resolve ioctl's failure. ENOENT is what the kernel says for a destination outside every registered range. */
function resolveError(errno: number, syscall: string, bytes: number): UffdError {
  return new UffdError(errno, syscall, { bytes, ...(errno === -2 ? { hint: 'the destination is not in a range registered with this uffd' } : {}) });
}
