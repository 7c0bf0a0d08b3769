// Starts the test S3 server (test/fixtures/s3-server.ts) in a worker thread: objects are files under
// root/BUCKET/KEY; every request must carry a valid SigV4 signature for the one key pair it knows.
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';

export class S3Server {
  readonly root: string;
  readonly port: number;
  readonly region = 'eu-test-1';
  readonly credentials = { accessKeyId: 'AKIDUFFDTEST', secretAccessKey: 'uffd-test-secret-key-0123456789' };
  readonly #worker: Worker;

  private constructor(root: string, port: number, worker: Worker) {
    this.root = root;
    this.port = port;
    this.#worker = worker;
  }

  static async start(): Promise<S3Server> {
    const root = mkdtempSync(join(tmpdir(), 'uffd-s3-'));
    const probe = { accessKeyId: 'AKIDUFFDTEST', secretAccessKey: 'uffd-test-secret-key-0123456789', region: 'eu-test-1' };
    const worker = new Worker(new URL('../fixtures/s3-server.js', import.meta.url), { workerData: { root, ...probe } });
    const [message] = (await once(worker, 'message')) as [{ port: number }];
    return new S3Server(root, message.port, worker);
  }

  get endpoint(): string {
    return `http://127.0.0.1:${String(this.port)}`;
  }

  async log(): Promise<{ path: string; status: number; range: string | undefined }[]> {
    this.#worker.postMessage({ type: 'log' });
    const [message] = (await once(this.#worker, 'message')) as [{ log: { path: string; status: number; range: string | undefined }[] }];
    return message.log;
  }

  async stop(): Promise<void> {
    this.#worker.postMessage({ type: 'close' });
    await once(this.#worker, 'exit');
    rmSync(this.root, { recursive: true, force: true });
  }
}
