// Mapped memory as JavaScript sees it: the ArrayBuffers are the mapping itself, no copy.
// close() detaches every buffer and maps PROT_NONE over the range (in-flight native I/O then faults instead
// of writing into whatever is mapped there next); the one munmap happens when the native region is
// finalized, so no second munmap can hit an unrelated mapping placed at the same address.
import { constants as bufferConstants } from 'node:buffer';
import { closeSync, fstatSync, ftruncateSync, openSync, constants as fsConstants } from 'node:fs';
import type { MadviseName } from '../abi.js';
import { MADVISE, MAP, MFD, PROT } from '../abi.js';
import type { Region } from '../binding.js';
import { native } from '../binding.js';
import { check, ERRNO, UffdError, withCode } from '../errors.js';
import { hugePageSize, PAGE_SIZE, unreservedHugePages } from '../system.js';
import { checkBoolean, checkInteger, checkOptionsObject, describe, isPositiveInt } from '../validate.js';
import { markUntransferable } from './untransferable.js';

/** The largest external ArrayBuffer this Node allows (4 GiB on Node 20). */
export const MAX_BUFFER_LENGTH = bufferConstants.MAX_LENGTH;

function roundUp(length: number, pageSize: number): number {
  return Math.ceil(length / pageSize) * pageSize;
}

interface MapRequest {
  length: number;
  pageSize: number;
  prot: number;
  flags: number;
  fd: number;
  offset: number;
  ownsFd: boolean;
  memfd: boolean;
  shared: boolean;
  hugetlb: boolean;
}

const ENOMEM = -12;

/**
 * Advices Mapping.madvise() refuses although they retire no physical page: their effect is a signal on the
 * next touch, which kills a Node process (a JS thread cannot survive SIGSEGV).
 */
const REFUSED_ADVICE: Partial<Record<MadviseName, string>> = {
  GUARD_INSTALL: 'a guard region makes the next touch of these pages SIGSEGV, which kills the process',
};

export class Mapping {
  readonly address: bigint;
  readonly length: number;
  readonly pageSize: number;
  /** The memfd or file descriptor behind the mapping (memfd mappings), -1 for anonymous memory. */
  readonly fd: number;
  readonly #region: Region;
  readonly #request: MapRequest;
  /** Every buffer handed out, weakly: close() detaches the live ones; collected ones drop out. */
  readonly #buffers = new Set<WeakRef<ArrayBuffer>>();
  #buffer: ArrayBuffer | undefined;
  #closed = false;

  private constructor(request: MapRequest) {
    const result = native.mmap(request.length, request.prot, request.flags, request.fd, request.offset);
    if (typeof result === 'number') {
      if (request.ownsFd) closeSync(request.fd);
      // Huge pages are reserved at mmap (no MAP_NORESERVE): ENOMEM means the pool cannot hold the mapping,
      // where a mapping without the reservation would map and then SIGBUS on a touch.
      const hint = request.hugetlb && result === ENOMEM
        ? { hint: `the huge page pool cannot hold ${String(request.length / request.pageSize)} pages of ${String(request.pageSize)} bytes: ${String(unreservedHugePages())} are free and unreserved (vm.nr_hugepages)` }
        : undefined;
      throw new UffdError(result, 'mmap', hint);
    }
    if (request.ownsFd) ownedFds.register(this, request.fd, this);
    this.#region = result;
    this.#request = request;
    this.address = native.regionAddress(result);
    this.length = request.length;
    this.pageSize = request.pageSize;
    this.fd = request.memfd ? request.fd : -1;
  }

  /**
   * Private anonymous memory (MAP_PRIVATE|MAP_ANONYMOUS), 4 KiB pages with MAP_NORESERVE, or huge pages
   * reserved up front: a mapping the huge page pool cannot hold fails here with ENOMEM instead of SIGBUS later.
   */
  static anonymous(length: number, options?: { hugetlb?: boolean }): Mapping {
    const opts = checkOptionsObject(options, 'Mapping.anonymous options', ['hugetlb']);
    const hugetlb = checkBoolean(opts.hugetlb, 'hugetlb') ?? false;
    const pageSize = hugetlb ? requireHugePages() : PAGE_SIZE;
    checkMapLength(length);
    return new Mapping({
      length: roundUp(length, pageSize), pageSize, prot: PROT.READ | PROT.WRITE,
      flags: MAP.PRIVATE | MAP.ANONYMOUS | (hugetlb ? MAP.HUGETLB : MAP.NORESERVE),
      fd: -1, offset: 0, ownsFd: false, memfd: false, shared: false, hugetlb,
    });
  }

  /** A memfd (shmem, or hugetlbfs with `hugetlb`) mapped shared, or private with `private: true`. */
  static memfd(length: number, options?: { name?: string; hugetlb?: boolean; private?: boolean }): Mapping {
    const opts = checkOptionsObject(options, 'Mapping.memfd options', ['name', 'hugetlb', 'private']);
    const hugetlb = checkBoolean(opts.hugetlb, 'hugetlb') ?? false;
    const isPrivate = checkBoolean(opts.private, 'private') ?? false;
    const name = opts.name ?? 'userfaultfd';
    if (typeof name !== 'string' || Buffer.byteLength(name) > 249 || name.includes('\0')) {
      throw new TypeError(`name must be a string of at most 249 bytes without NUL, got ${describe(name)}`);
    }
    checkMapLength(length);
    const pageSize = hugetlb ? requireHugePages() : PAGE_SIZE;
    const size = roundUp(length, pageSize);
    const fd = check(native.memfdCreate(name, MFD.CLOEXEC | (hugetlb ? MFD.HUGETLB : 0)), 'memfd_create');
    try {
      ftruncateSync(fd, size);
    } catch (err) {
      closeSync(fd);
      throw err;
    }
    return new Mapping({
      length: size, pageSize, prot: PROT.READ | PROT.WRITE,
      flags: (isPrivate ? MAP.PRIVATE : MAP.SHARED) | (hugetlb ? 0 : MAP.NORESERVE),
      fd, offset: 0, ownsFd: true, memfd: true, shared: !isPrivate, hugetlb,
    });
  }

  /**
   * A file mapped read-only (or `writable`), private unless `shared`. `populate` maps every page up front
   * (MAP_POPULATE): a copy from the mapping then takes no faults of its own.
   */
  static file(path: string, options?: { offset?: number; length?: number; writable?: boolean; shared?: boolean; populate?: boolean }): Mapping {
    const opts = checkOptionsObject(options, 'Mapping.file options', ['offset', 'length', 'writable', 'shared', 'populate']);
    const populate = checkBoolean(opts.populate, 'populate') ?? false;
    if (typeof path !== 'string') throw new TypeError(`path must be a string, got ${describe(path)}`);
    const writable = checkBoolean(opts.writable, 'writable') ?? false;
    const shared = checkBoolean(opts.shared, 'shared') ?? false;
    const offset = opts.offset ?? 0;
    checkInteger(offset, 'offset', { min: 0 });
    if (offset % PAGE_SIZE !== 0) throw new RangeError(`offset must be a multiple of ${String(PAGE_SIZE)}, got ${describe(offset)}`);
    const fd = openSync(path, writable && shared ? fsConstants.O_RDWR : fsConstants.O_RDONLY);
    try {
      const size = fstatSync(fd).size;
      const length = opts.length ?? size - offset;
      checkMapLength(length);
      // A touch past the page that holds the end of the file is SIGBUS: refuse to map beyond it. (A file that
      // shrinks after this check can still do it; that stays the owner's responsibility.)
      if (offset + length > roundUp(size, PAGE_SIZE)) {
        throw new RangeError(`offset ${String(offset)} + length ${String(length)} reaches past the end of ${path} (${String(size)} bytes); a touch there would be SIGBUS`);
      }
      return new Mapping({
        length: roundUp(length, PAGE_SIZE), pageSize: PAGE_SIZE,
        prot: PROT.READ | (writable ? PROT.WRITE : 0), flags: (shared ? MAP.SHARED : MAP.PRIVATE) | (populate ? MAP.POPULATE : 0),
        fd, offset, ownsFd: false, memfd: false, shared, hugetlb: false,
      });
    } finally {
      closeSync(fd); // the mapping holds the file itself: the descriptor is not kept (ownsFd: false)
    }
  }

  /** A second mapping of the same memfd pages: fill the page cache through it for UFFDIO_CONTINUE. */
  alias(): Mapping {
    this.#checkOpen();
    if (!this.#request.memfd) throw new TypeError('alias() needs a memfd mapping');
    // Its own descriptor: the alias outlives the original's close(), and alias().alias() must not map
    // whatever file reused a closed number.
    const fd = check(native.dupCloexec(this.fd), 'fcntl(F_DUPFD_CLOEXEC)');
    return new Mapping({ ...this.#request, fd, flags: MAP.SHARED | (this.#request.hugetlb ? 0 : MAP.NORESERVE), ownsFd: true, shared: true });
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** The whole mapping as one ArrayBuffer (at most MAX_BUFFER_LENGTH bytes; use view() beyond). */
  get buffer(): ArrayBuffer {
    this.#checkOpen();
    if (this.length > MAX_BUFFER_LENGTH) {
      throw new RangeError(`mapping of ${String(this.length)} bytes exceeds this Node's ArrayBuffer limit (${String(MAX_BUFFER_LENGTH)}); use view(offset, length)`);
    }
    this.#buffer ??= this.view(0, this.length);
    return this.#buffer;
  }

  /** A window [offset, offset + length) of the mapping as its own ArrayBuffer, no copy. */
  view(offset: number, length: number): ArrayBuffer {
    this.#checkOpen();
    checkInteger(offset, 'offset', { min: 0 });
    checkInteger(length, 'length', { min: 0 });
    if (offset + length > this.length) throw new RangeError(`view [${String(offset)}, ${String(offset + length)}) is outside the mapping of ${String(this.length)} bytes`);
    if (length > MAX_BUFFER_LENGTH) throw new RangeError(`view of ${String(length)} bytes exceeds this Node's ArrayBuffer limit (${String(MAX_BUFFER_LENGTH)})`);
    const buffer = native.regionBuffer(this.#region, offset, length);
    markUntransferable(buffer);
    const ref = new WeakRef(buffer);
    this.#buffers.add(ref);
    collectedBuffers.register(buffer, { set: this.#buffers, ref });
    return buffer;
  }

  madvise(advice: MadviseName, offset = 0, length?: number): void {
    this.#checkOpen();
    if (!Number.isSafeInteger(offset) || offset < 0 || offset % PAGE_SIZE !== 0) throw new RangeError(`offset must be a page-aligned non-negative integer, got ${describe(offset)}`);
    length ??= this.length - offset;
    const info = MADVISE.find((a) => a.name === advice);
    if (info === undefined) throw new TypeError(`unknown madvise advice ${describe(advice)}`);
    if (!info.safe) throw new RangeError(`madvise(${advice}) with a length retires physical pages for good; not done here`);
    const refused = REFUSED_ADVICE[advice];
    if (refused !== undefined) throw new RangeError(`madvise(${advice}) is refused: ${refused}`);
    checkInteger(length, 'length', { min: 0 });
    if (offset + length > this.length) throw new RangeError(`length ${describe(length)} reaches outside the mapping`);
    check(native.madvise(this.address + BigInt(offset), length, info.value), `madvise(MADV_${advice})`);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const ref of this.#buffers) {
      const buffer = ref.deref();
      if (buffer !== undefined) native.detach(buffer);
    }
    this.#buffers.clear();
    this.#buffer = undefined;
    check(native.regionSeal(this.#region), 'mmap(PROT_NONE)');
    if (this.#request.ownsFd) {
      ownedFds.unregister(this);
      closeSync(this.fd);
    }
  }

  [Symbol.dispose](): void {
    this.close();
  }

  #checkOpen(): void {
    if (this.#closed) throw withCode(new TypeError('the mapping is closed'), 'ERR_UFFD_CLOSED');
  }
}

// A memfd mapping dropped without close() still closes its descriptor (the memory goes with the last buffer).
const ownedFds = new FinalizationRegistry<number>((fd) => { closeSync(fd); });
const collectedBuffers = new FinalizationRegistry<{ set: Set<WeakRef<ArrayBuffer>>; ref: WeakRef<ArrayBuffer> }>(({ set, ref }) => { set.delete(ref); });

function checkMapLength(length: unknown): asserts length is number {
  if (!isPositiveInt(length)) throw new RangeError(`length must be a positive integer, got ${describe(length)}`);
}

function requireHugePages(): number {
  const size = hugePageSize();
  if (size === 0) throw new UffdError(ERRNO.ENOTSUP, 'mmap', { hint: 'this kernel has no hugetlb support' });
  return size;
}

/**
 * Makes [address, address + length) of this process inaccessible (PROT_NONE). The fail-stop for lazily filled
 * memory where UFFDIO_POISON is missing (before Linux 6.6): a thread woken on such a page gets SIGSEGV, the
 * kernel's own accesses EFAULT; never a page of zeros posing as data.
 */
export function protectNone(address: bigint, length: number): void {
  check(native.mprotect(address, length, PROT.NONE), 'mprotect(PROT_NONE)');
}
