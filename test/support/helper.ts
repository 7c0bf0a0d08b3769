// The test side of test/native/uffd-helper.c: spawns the helper, sends it commands, waits for its reply
// lines, and takes its uffd (and memfds) with pidfd_getfd. The protocol is documented at the top of the C file.
//
// Waiting never hangs a test: a wait fails as soon as the helper exits, and otherwise after a generous
// timeout, with the helper's stderr and its unread lines in the message. The timeout is a safety net for a
// broken kernel or helper, never an assertion about speed.
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FeatureName } from '../../src/abi.js';
import { FEATURES } from '../../src/abi.js';
import { native } from '../../src/binding.js';
import type { UffdEventOf } from '../../src/core/uffd.js';
import { freeHugePages } from '../../src/system.js';
import { probe, Userfaultfd } from '../../src/index.js';
import { isRoot, ROOT } from './support.js';

export const HELPER = join(ROOT, 'test', 'native', 'bin', 'uffd-helper');
const WAIT_MS = 30_000;

export type MapKind = 'anon' | 'shmem' | 'shmem-private' | 'hugetlb' | 'hugetlb-private';

export interface HelperMap {
  id: number;
  address: bigint;
  pageSize: number;
  pages: number;
  length: number;
  /** The helper's memfd number (-1 for anon); take it with `takeFd`. */
  memfd: number;
  /** The address of page `n`. */
  page(n: number): bigint;
  /** A Range over `count` pages from page `first`, for the Userfaultfd methods. */
  range(first?: number, count?: number): { address: bigint; length: number; pageSize: number };
}

interface Waiter {
  pattern: RegExp;
  resolve: (fields: string[]) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

export function featureMask(names: readonly FeatureName[]): bigint {
  let mask = 0n;
  for (const name of names) {
    const info = FEATURES.find((f) => f.name === name);
    if (info === undefined) throw new TypeError(`unknown feature ${name}`);
    mask |= 1n << BigInt(info.bit);
  }
  return mask;
}

/**
 * Why a helper test cannot run here, or false: a feature this kernel does not offer, too few free huge pages
 * (vm.nr_hugepages), no root (pidfd_getfd of the helper's uffd needs ptrace rights; EVENT_FORK needs
 * CAP_SYS_PTRACE). A missing helper binary is a build error, not a reason to skip: Helper.start() fails.
 */
export function skipUnless(needs: { features?: readonly FeatureName[]; hugePages?: number } = {}): string | false {
  if (!isRoot) return 'needs root (pidfd_getfd of the helper\'s uffd, and EVENT_FORK, need ptrace rights)';
  const offered = probe().features;
  const missing = (needs.features ?? []).filter((name) => !offered.has(name));
  if (missing.length > 0) return `this kernel does not offer ${missing.join(', ')}`;
  const huge = needs.hugePages ?? 0;
  if (huge > 0 && freeHugePages() < huge) return `needs ${String(huge)} free huge pages, ${String(freeHugePages())} free (set vm.nr_hugepages)`;
  return false;
}

/** Huge pages a map of `pages` pages of `kind` needs (0 for the other kinds). */
export function hugePagesFor(kind: MapKind, pages: number): number {
  return kind.startsWith('hugetlb') ? pages : 0;
}

/** Reads exactly `count` messages from `uffd`, waiting for each batch on the event loop (never reads more). */
export async function nextEvents(uffd: Userfaultfd, count: number): Promise<UffdEventOf[]> {
  const events: UffdEventOf[] = [];
  while (events.length < count) {
    await readable(uffd.fd);
    events.push(...uffd.read(count - events.length));
  }
  return events;
}

/** Narrows an event to a page fault, failing the test with the event otherwise. */
export function asFault(event: UffdEventOf | undefined): Extract<UffdEventOf, { type: 'pagefault' }> {
  if (event?.type !== 'pagefault') throw new Error(`expected a pagefault event, got ${describeEvent(event)}`);
  return event;
}

export function describeEvent(event: UffdEventOf | undefined): string {
  if (event === undefined) return 'nothing';
  return JSON.stringify(event, (key, value: unknown) => (typeof value === 'bigint' ? `0x${value.toString(16)}` : key === 'uffd' ? 'Userfaultfd' : value));
}

/**
 * Resolves once `fd` is readable (a uffd with a pending message, a pidfd whose process exited), without
 * reading. Not while an events() iterator polls the same fd: libuv allows one poll handle per descriptor.
 */
export function readable(fd: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const watcher = native.pollStart(fd, native.pollEvents.READABLE, (status) => {
      if (typeof watcher !== 'number') native.pollStop(watcher); // level-triggered: once is enough
      if (status < 0) reject(new Error(`poll on fd ${String(fd)} failed: ${String(status)}`));
      else resolve();
    });
    if (typeof watcher === 'number') reject(new Error(`uv_poll_start on fd ${String(fd)} failed: ${String(watcher)}`));
  });
}

/** The scheduler state letter of a thread ('R', 'S', 'D', ...) from /proc/<pid>/task/<tid>/stat. */
export function threadState(pid: number, tid: number): string {
  const stat = readFileSync(`/proc/${String(pid)}/task/${String(tid)}/stat`, 'latin1');
  return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
}

/** The sum of all bytes, as the helper's touch reports it. */
export function byteSum(bytes: Uint8Array): bigint {
  let sum = 0;
  for (const b of bytes) sum += b;
  return BigInt(sum);
}

export class Helper {
  readonly pid: number;
  readonly #child: ChildProcessWithoutNullStreams;
  readonly #lines: string[] = [];
  readonly #waiters: Waiter[] = [];
  readonly #taken: number[] = [];
  #partial = '';
  #stderr = '';
  #exit: string | undefined;
  readonly #exited: Promise<void>;
  #pidfd = -1;
  #uffdFd = -1;

  private constructor(child: ChildProcessWithoutNullStreams, pid: number) {
    this.#child = child;
    this.pid = pid;
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => { this.#onData(chunk); });
    child.stderr.on('data', (chunk: string) => { this.#stderr += chunk; });
    child.stdin.on('error', () => { /* EPIPE after the helper exited: reported through the exit below */ });
    // 'close', not 'exit': it comes after the last output line was read, so no waiter for a line that was
    // written just before the exit is failed early.
    this.#exited = new Promise((resolve) => {
      child.once('close', (code, signal) => {
        this.#exit = signal === null ? `exit ${String(code)}` : `signal ${signal}`;
        for (const w of this.#waiters.splice(0)) {
          clearTimeout(w.timer);
          w.reject(this.#failure(`the helper ended (${this.#exit}) while a test waited for ${String(w.pattern)}`));
        }
        resolve();
      });
    });
  }

  /** Starts the helper; fails with a hint when it was not built. */
  static async start(): Promise<Helper> {
    if (!existsSync(HELPER)) throw new Error(`${HELPER} is missing: run \`npm run build:helpers\` (part of npm test)`);
    const child = spawn(HELPER, [], { stdio: ['pipe', 'pipe', 'pipe'] });
    const pid = child.pid;
    if (pid === undefined) throw new Error(`cannot spawn ${HELPER}`);
    const helper = new Helper(child, pid);
    child.once('error', (err) => { helper.#stderr += `spawn error: ${err.message}\n`; });
    await helper.expect(/^ready /);
    return helper;
  }

  /** Whether the helper is still running. */
  get running(): boolean {
    return this.#exit === undefined;
  }

  /** A pidfd for the helper (opened once, closed with the helper). */
  get pidfd(): number {
    if (this.#pidfd < 0) {
      const fd = native.pidfdOpen(this.pid);
      if (fd < 0) throw new Error(`pidfd_open(${String(this.pid)}) failed: ${String(fd)}`);
      this.#pidfd = fd;
    }
    return this.#pidfd;
  }

  send(line: string): void {
    if (!this.running) throw this.#failure(`cannot send "${line}": the helper ended (${String(this.#exit)})`);
    this.#child.stdin.write(`${line}\n`);
  }

  /** Sends a command and returns the fields of its `ok` reply (after "ok <cmd>"); throws on `err`. */
  async command(line: string): Promise<string[]> {
    const name = line.split(' ')[0] ?? '';
    this.send(line);
    const reply = await this.expect(new RegExp(`^(ok|err) ${name.replace(/[^a-z-]/g, '')}( |$)`));
    if (reply[0] === 'err') throw this.#failure(`helper command "${line}" failed: ${reply.slice(2).join(' ')}`);
    return reply.slice(2);
  }

  /** Waits for (and consumes) the first line matching `pattern`; returns its space-separated fields. */
  expect(pattern: RegExp, timeoutMs = WAIT_MS): Promise<string[]> {
    const index = this.#lines.findIndex((line) => pattern.test(line));
    if (index >= 0) return Promise.resolve(this.#lines.splice(index, 1)[0]!.split(' '));
    if (!this.running) return Promise.reject(this.#failure(`the helper ended (${String(this.#exit)}) before a line matching ${String(pattern)}`));
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        pattern, resolve, reject,
        timer: setTimeout(() => {
          this.#waiters.splice(this.#waiters.indexOf(waiter), 1);
          reject(this.#failure(`no line matching ${String(pattern)} from the helper within ${String(timeoutMs)} ms`));
        }, timeoutMs),
      };
      this.#waiters.push(waiter);
    });
  }

  /** Whether a line matching `pattern` has arrived and not been consumed yet. */
  seen(pattern: RegExp): boolean {
    return this.#lines.some((line) => pattern.test(line));
  }

  /** Creates the helper's uffd with `features` (only ever what probe() offers) and returns its fd number there. */
  async createUffd(features: readonly FeatureName[] = []): Promise<number> {
    const [fd] = await this.command(`uffd 0x${featureMask(features).toString(16)}`);
    this.#uffdFd = Number(fd);
    return this.#uffdFd;
  }

  /** Copies one of the helper's descriptors into this process (pidfd_getfd); closed with the helper. */
  takeFd(remote: number): number {
    const fd = native.pidfdGetfd(this.pidfd, remote);
    if (fd < 0) throw new Error(`pidfd_getfd(${String(remote)}) failed: ${String(fd)}`);
    this.#taken.push(fd);
    return fd;
  }

  /**
   * Takes the helper's uffd and makes the helper close its own copy, so that the returned Userfaultfd holds
   * the last descriptor (closing it then wakes the helper's faulters). The caller closes it.
   */
  async takeUffd(): Promise<Userfaultfd> {
    if (this.#uffdFd < 0) throw new Error('the helper has no uffd: call createUffd() first');
    const fd = native.pidfdGetfd(this.pidfd, this.#uffdFd);
    if (fd < 0) throw new Error(`pidfd_getfd(uffd ${String(this.#uffdFd)}) failed: ${String(fd)}`);
    let uffd: Userfaultfd;
    try {
      uffd = Userfaultfd.fromFd(fd);
    } catch (err) {
      native.close(fd);
      throw err;
    }
    await this.command('close-uffd');
    this.#uffdFd = -1;
    return uffd;
  }

  async map(id: number, kind: MapKind, pages: number): Promise<HelperMap> {
    const [, address, pageSize, memfd] = await this.command(`map ${String(id)} ${kind} ${String(pages)}`);
    const base = BigInt(address!);
    const size = Number(pageSize);
    return {
      id, address: base, pageSize: size, pages, length: pages * size, memfd: Number(memfd),
      page: (n) => base + BigInt(n * size),
      range: (first = 0, count = pages - first) => ({ address: base + BigInt(first * size), length: count * size, pageSize: size }),
    };
  }

  /** Starts a touch job (see the C file); await its end with `touched(tag)`. */
  touch(tag: string, map: HelperMap, options: { page?: number; pages?: number; threads?: number; offset?: number; write?: number } = {}): Promise<string[]> {
    const { page = 0, pages = 1, threads = 1, offset = 0, write } = options;
    const how = write === undefined ? 'r' : `w ${String(write)}`;
    return this.command(`touch ${tag} ${String(map.id)} ${String(page)} ${String(pages)} ${String(threads)} ${String(offset)} ${how}`);
  }

  /** Waits for a touch job to end: the byte sum of the pages it read, and how many SIGBUSes it took. */
  async touched(tag: string): Promise<{ sum: bigint; sigbuses: number }> {
    const [, , sum, sigbuses] = await this.expect(new RegExp(`^done ${tag} `));
    return { sum: BigInt(sum!), sigbuses: Number(sigbuses) };
  }

  /** Waits for `tid <tag> <index> <tid>` and returns the thread id. */
  async tid(tag: string, index = 0): Promise<number> {
    const fields = await this.expect(new RegExp(`^tid ${tag} ${String(index)} `));
    return Number(fields[3]);
  }

  /** Resolves when the helper process has exited, as seen by its pidfd (not by the uffd: it never says). */
  async exitedByPidfd(): Promise<void> {
    await readable(this.pidfd);
  }

  /** Kills the helper (if still running), waits for it and closes every descriptor taken from it. */
  async close(): Promise<void> {
    if (this.running) this.#child.kill('SIGKILL');
    await this.#exited;
    for (const fd of this.#taken.splice(0)) native.close(fd);
    if (this.#pidfd >= 0) native.close(this.#pidfd);
    this.#pidfd = -1;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #onData(chunk: string): void {
    const parts = (this.#partial + chunk).split('\n');
    this.#partial = parts.pop() ?? '';
    for (const line of parts) {
      const index = this.#waiters.findIndex((w) => w.pattern.test(line));
      if (index < 0) {
        this.#lines.push(line);
        continue;
      }
      const [waiter] = this.#waiters.splice(index, 1);
      clearTimeout(waiter!.timer);
      waiter!.resolve(line.split(' '));
    }
  }

  #failure(message: string): Error {
    const unread = this.#lines.length === 0 ? 'none' : this.#lines.join(' | ');
    const stderr = this.#stderr.trim() === '' ? '(empty)' : this.#stderr.trim();
    return new Error(`${message}\n  helper pid ${String(this.pid)}; unread lines: ${unread}\n  helper stderr: ${stderr}`);
  }
}

/** Starts a helper for the duration of `fn`, killing it afterwards whatever happens. */
export async function withHelper<T>(fn: (helper: Helper) => Promise<T>): Promise<T> {
  const helper = await Helper.start();
  try {
    return await fn(helper);
  } finally {
    await helper.close();
  }
}
