// A fault-injecting HTTP proxy on loopback, in front of an origin (nginx): each request is passed through,
// or answered with the fault a test planned for its number. The faults are the ones object stores and
// networks really produce: a reset mid-body, 503 bursts, a stall past the client's timeout, a body cut
// short under a correct Content-Length, flipped bytes, the object replaced, and added latency. The server
// runs in a worker thread (test/fixtures/fault-proxy-server.ts): the test's thread may be asleep in a fault.
import { once } from 'node:events';
import { Worker } from 'node:worker_threads';

export type Fault =
  | { kind: 'pass' }
  | { kind: 'reset' }          // headers and half the body, then a TCP reset
  | { kind: 'status'; status: number }
  | { kind: 'stall'; ms: number } // headers and half the body, then silence for ms
  | { kind: 'truncate' }       // the full Content-Length announced, half the body sent, connection closed
  | { kind: 'flip'; at?: number } // one byte of the body inverted
  | { kind: 'replace'; etag: string }; // another version of the object: its ETag differs

export interface ProxiedRequest {
  n: number;
  path: string;
  range: string | undefined;
}

export type ToProxy =
  | { type: 'plan'; sequence: Fault[]; rest: Fault | 'repeat' }
  | { type: 'latency'; ms: number }
  | { type: 'seen' }
  | { type: 'close' };

type FromProxy = { type: 'port'; port: number } | { type: 'done' } | { type: 'seen'; seen: (ProxiedRequest & { fault: Fault['kind'] })[] };

export const PASS: Fault = { kind: 'pass' };

export class FaultProxy {
  readonly #worker: Worker;
  readonly port: number;

  private constructor(worker: Worker, port: number) {
    this.#worker = worker;
    this.port = port;
  }

  static async start(origin: string): Promise<FaultProxy> {
    const worker = new Worker(new URL('../fixtures/fault-proxy-server.js', import.meta.url), { workerData: { origin } });
    const [first] = (await once(worker, 'message')) as [FromProxy];
    if (first.type !== 'port') throw new Error('the proxy did not start');
    return new FaultProxy(worker, first.port);
  }

  url(path: string): string {
    return `http://127.0.0.1:${String(this.port)}/${path}`;
  }

  /** Request n (counted from 0 at this call) gets sequence[n]; later ones get `rest`, or the sequence again. */
  async plan(sequence: Fault[], rest: Fault | 'repeat' = PASS): Promise<void> {
    await this.#ask({ type: 'plan', sequence, rest });
  }

  async latency(ms: number): Promise<void> {
    await this.#ask({ type: 'latency', ms });
  }

  /** The requests since the last plan, with the fault each got. */
  async seen(): Promise<(ProxiedRequest & { fault: Fault['kind'] })[]> {
    const answer = await this.#ask({ type: 'seen' });
    return answer.type === 'seen' ? answer.seen : [];
  }

  async close(): Promise<void> {
    this.#worker.postMessage({ type: 'close' } satisfies ToProxy);
    await once(this.#worker, 'exit');
  }

  async #ask(message: ToProxy): Promise<FromProxy> {
    this.#worker.postMessage(message);
    const [answer] = (await once(this.#worker, 'message')) as [FromProxy];
    return answer;
  }
}
