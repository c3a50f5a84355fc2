/**
 * At most `perKey` tasks running at once for each key (a client address), the rest of that key's
 * waiting in order: one client's burst queues behind itself instead of taking every slot of a
 * resource all clients share. A slot is handed straight to the next waiter, so the bound holds
 * exactly; a waiter gives up after `maxWaitMs`.
 */
export class KeyedLimiter {
  private readonly keys = new Map<string, { running: number; waiting: Array<{ go: () => void; timer: NodeJS.Timeout }> }>();

  constructor(
    private readonly perKey: number,
    private readonly maxWaitMs: number,
  ) {}

  /** Runs `task` in one of `key`'s slots; rejects with `onTimeout()` if no slot frees within maxWaitMs. */
  async run<T>(key: string, task: () => Promise<T>, onTimeout: () => Error): Promise<T> {
    await this.acquire(key, onTimeout);
    try {
      return await task();
    } finally {
      this.release(key);
    }
  }

  /** Keys with a task running or waiting (tests, and a bound on memory: one entry per busy key). */
  get size(): number {
    return this.keys.size;
  }

  private acquire(key: string, onTimeout: () => Error): Promise<void> {
    let e = this.keys.get(key);
    if (e === undefined) this.keys.set(key, (e = { running: 0, waiting: [] }));
    if (e.running < this.perKey) {
      e.running++;
      return Promise.resolve();
    }
    const entry = e;
    return new Promise<void>((resolve, reject) => {
      const waiter = {
        go: () => {
          clearTimeout(waiter.timer);
          resolve();
        },
        timer: setTimeout(() => {
          entry.waiting.splice(entry.waiting.indexOf(waiter), 1);
          reject(onTimeout());
        }, this.maxWaitMs),
      };
      entry.waiting.push(waiter);
    });
  }

  private release(key: string): void {
    const e = this.keys.get(key);
    if (e === undefined) return;
    const next = e.waiting.shift();
    // The slot passes to the next waiter as it is: `running` is unchanged.
    if (next !== undefined) return next.go();
    if (--e.running === 0) this.keys.delete(key);
  }
}
