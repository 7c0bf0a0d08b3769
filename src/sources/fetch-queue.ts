// At most `concurrency` fetches at a time, demand reads before background ones (read-ahead, prefetch): a
// faulting thread never waits behind a queue of prefetches. A queued background fetch that a fault comes
// to need is moved to the front.
interface Queued {
  key: number;
  start: () => void;
}

export class FetchQueue {
  readonly #concurrency: number;
  #running = 0;
  readonly #urgent: Queued[] = [];
  readonly #background: Queued[] = [];

  constructor(concurrency: number) {
    this.#concurrency = concurrency;
  }

  run<T>(key: number, urgent: boolean, task: () => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const entry: Queued = {
        key,
        start: () => {
          this.#running++;
          task().then(resolve, reject).finally(() => {
            this.#running--;
            this.#next();
          });
        },
      };
      (urgent ? this.#urgent : this.#background).push(entry);
      this.#next();
    });
  }

  /** A fault needs `key`: if its fetch is still queued in the background, it goes next. */
  promote(key: number): void {
    const at = this.#background.findIndex((q) => q.key === key);
    if (at < 0) return;
    const [entry] = this.#background.splice(at, 1);
    if (entry !== undefined) this.#urgent.push(entry);
  }

  #next(): void {
    while (this.#running < this.#concurrency) {
      const entry = this.#urgent.shift() ?? this.#background.shift();
      if (entry === undefined) return;
      entry.start();
    }
  }
}
