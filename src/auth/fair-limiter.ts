/**
 * At most `capacity` tasks running at once, shared fairly between keys (client addresses): while
 * there is room a task starts at once, whatever its key (one client alone may use every slot);
 * when there is none it waits, and each slot that frees goes to the waiting key with the fewest
 * tasks running, the longest-waiting first among equals (and first of all a waiter that has waited
 * half of `maxWaitMs`). So one client's burst queues behind itself: another client's task waits for
 * one slot to free, not for the burst. A waiter gives up after `maxWaitMs`. Choosing costs one pass
 * over the waiting keys (at most the calls in flight, overload.maxInFlight).
 */
export class FairLimiter {
  private running = 0;
  private readonly runningByKey = new Map<string, number>();
  /** Waiters per key, in arrival order (keys too: a Map keeps insertion order). */
  private readonly waiting = new Map<string, Array<{ go: () => void; timer: NodeJS.Timeout; since: number }>>();

  constructor(
    private readonly capacity: number,
    private readonly maxWaitMs: number,
  ) {}

  /** Runs `task` in a slot for `key`; rejects with `onTimeout()` if none is given within maxWaitMs. */
  async run<T>(key: string, task: () => Promise<T>, onTimeout: () => Error): Promise<T> {
    await this.acquire(key, onTimeout);
    try {
      return await task();
    } finally {
      this.release(key);
    }
  }

  /** Tasks running, and keys known (running or waiting): tests, and a bound on memory. */
  get stats(): { running: number; keys: number } {
    return { running: this.running, keys: new Set([...this.runningByKey.keys(), ...this.waiting.keys()]).size };
  }

  private start(key: string): void {
    this.running++;
    this.runningByKey.set(key, (this.runningByKey.get(key) ?? 0) + 1);
  }

  private acquire(key: string, onTimeout: () => Error): Promise<void> {
    if (this.running < this.capacity && this.waiting.size === 0) {
      this.start(key);
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      const queue = this.waiting.get(key) ?? [];
      if (queue.length === 0) this.waiting.set(key, queue);
      const waiter = {
        since: performance.now(),
        go: () => {
          clearTimeout(waiter.timer);
          resolve();
        },
        timer: setTimeout(() => {
          const i = queue.indexOf(waiter);
          if (i >= 0) queue.splice(i, 1);
          if (queue.length === 0 && this.waiting.get(key) === queue) this.waiting.delete(key);
          reject(onTimeout());
        }, this.maxWaitMs),
      };
      queue.push(waiter);
    });
  }

  private release(key: string): void {
    this.running--;
    const left = (this.runningByKey.get(key) ?? 1) - 1;
    if (left > 0) this.runningByKey.set(key, left);
    else this.runningByKey.delete(key);
    // The freed slot to the waiting key with the fewest running; among equals, the longest waiting.
    // A waiter that has waited half of maxWaitMs goes first whatever its key runs, so that a key
    // with tasks under way (a gateway's) is not passed over by a stream of new keys until it times out.
    const overdue = performance.now() - this.maxWaitMs / 2;
    let best: string | undefined;
    let bestRunning = Infinity;
    let bestSince = Infinity;
    for (const [k, queue] of this.waiting) {
      const since = queue[0]!.since;
      const r = since <= overdue ? -1 : (this.runningByKey.get(k) ?? 0);
      if (r < bestRunning || (r === bestRunning && since < bestSince)) {
        best = k;
        bestRunning = r;
        bestSince = since;
      }
    }
    if (best === undefined) return;
    const queue = this.waiting.get(best)!;
    const next = queue.shift()!;
    if (queue.length === 0) this.waiting.delete(best);
    this.start(best);
    next.go();
  }
}
