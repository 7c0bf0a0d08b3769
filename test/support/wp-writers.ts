// The test side of test/native/wp-writers.c: a process whose threads keep writing sequence numbers into its
// memory. The test takes its uffd (pidfd_getfd) and reads its memory through /proc/<pid>/mem.
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import type { FeatureName } from '../../src/abi.js';
import { native } from '../../src/binding.js';
import { Userfaultfd } from '../../src/index.js';
import { featureMask } from './helper.js';
import type { MapKind } from './helper.js';
import { ROOT } from './support.js';

const PROGRAM = join(ROOT, 'test', 'native', 'bin', 'wp-writers');
const WAIT_MS = 30_000;

export class Writers {
  readonly pid: number;
  readonly address: bigint;
  readonly pageSize: number;
  readonly length: number;
  readonly uffd: Userfaultfd;
  readonly #child: ChildProcessWithoutNullStreams;
  readonly #lines: AsyncIterator<string>;
  readonly #mem: number;
  #stderr = '';

  private constructor(child: ChildProcessWithoutNullStreams, lines: AsyncIterator<string>, ready: string[], length: number) {
    this.#child = child;
    this.#lines = lines;
    this.pid = child.pid!;
    this.address = BigInt(ready[1]!);
    this.pageSize = Number(ready[2]);
    this.length = length * this.pageSize;
    child.stderr.on('data', (chunk: Buffer) => { this.#stderr += chunk.toString(); });
    const pidfd = native.pidfdOpen(this.pid);
    if (pidfd < 0) throw new Error(`pidfd_open: ${String(pidfd)}`);
    const fd = native.pidfdGetfd(pidfd, Number(ready[3]));
    native.close(pidfd);
    if (fd < 0) throw new Error(`pidfd_getfd: ${String(fd)}`);
    this.uffd = Userfaultfd.fromFd(fd);
    this.#mem = openSync(`/proc/${String(this.pid)}/mem`, 'r');
  }

  /** Starts the program with a map of `pages` pages of `kind` and a uffd with `features`. */
  static async start(kind: MapKind, pages: number, features: readonly FeatureName[], options: { touch?: boolean } = {}): Promise<Writers> {
    if (!existsSync(PROGRAM)) throw new Error(`${PROGRAM} is missing: run \`npm run build:helpers\``);
    const child = spawn(PROGRAM, [kind, String(pages), featureMask(features).toString(16), options.touch === true ? '1' : '0']);
    const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
    const ready = await nextLine(lines, child);
    if (ready[0] !== 'ready') throw new Error(`wp-writers did not start: ${ready.join(' ')}`);
    return new Writers(child, lines, ready, pages);
  }

  get range(): { address: bigint; length: number; pageSize: number } {
    return { address: this.address, length: this.length, pageSize: this.pageSize };
  }

  /** Starts `threads` writer threads. */
  async startWriting(threads: number): Promise<void> {
    await this.#command(`start ${String(threads)}`, 'started');
  }

  /** Stops the writers (each finished its last write) and returns how many writes they made. */
  async stopWriting(): Promise<number> {
    const reply = await this.#command('stop', 'stopped');
    return Number(reply[1]);
  }

  /** `length` bytes of the program's memory from `offset`, read through /proc/<pid>/mem. */
  read(offset: number, length: number, into: Uint8Array = new Uint8Array(length)): Uint8Array {
    for (let done = 0; done < length;) {
      const n = readSync(this.#mem, into, done, length - done, Number(this.address) + offset + done);
      if (n <= 0) throw new Error(`short read of /proc/${String(this.pid)}/mem at offset ${String(offset + done)}`);
      done += n;
    }
    return into;
  }

  async close(): Promise<void> {
    closeSync(this.#mem);
    if (!this.uffd.closed) this.uffd.close();
    if (this.#child.exitCode === null && this.#child.signalCode === null) {
      const exited = new Promise((resolve) => this.#child.once('close', resolve));
      this.#child.kill('SIGKILL');
      await exited;
    }
  }

  async #command(line: string, expect: string): Promise<string[]> {
    this.#child.stdin.write(`${line}\n`);
    const reply = await nextLine(this.#lines, this.#child);
    if (reply[0] !== expect) throw new Error(`wp-writers: "${line}" answered "${reply.join(' ')}"; stderr: ${this.#stderr}`);
    return reply;
  }
}

async function nextLine(lines: AsyncIterator<string>, child: ChildProcessWithoutNullStreams): Promise<string[]> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`no reply from wp-writers within ${String(WAIT_MS)} ms`)); }, WAIT_MS);
  });
  try {
    const next = await Promise.race([lines.next(), timeout]);
    if (next.done === true) throw new Error(`wp-writers ended (exit ${String(child.exitCode)}, signal ${String(child.signalCode)})`);
    return next.value.split(' ');
  } finally {
    clearTimeout(timer);
  }
}
