/**
 * Runs the CPU-heavy part of calls (CSR check, signing) in time slices. node:http2 writes
 * responses from a native immediate, which runs only when JavaScript yields to the event loop; a
 * burst of N requests read in one go would otherwise be signed back to back and every response
 * would wait for all N signatures. With slices, responses leave every `budgetMs` and new input is
 * read in between, so a burst raises tail latency by a slice, not by the whole burst.
 *
 * Under a deep backlog (a restart storm) it yields only every `deepBudgetMs`: reading more input
 * then would only admit calls that wait behind the queue or get shed (UNAVAILABLE) and come back as
 * retries; left unread, they wait in the connections' flow-control windows instead. It still
 * yields at that pace: a queue of thousands (seconds of signing with an RSA CA) must not stop
 * timers (deadlines, handshake and read timeouts) and cancellations for all that time; a call
 * cancelled meanwhile is then skipped instead of signed.
 */
export class WorkSlicer {
  private queue: Array<() => void> = [];
  private head = 0;
  private scheduled = false;

  constructor(
    private readonly budgetMs = 2,
    /** Queue length from which a drain runs for `deepBudgetMs` before yielding. */
    private readonly backlog = 64,
    private readonly deepBudgetMs = 500,
  ) {}

  /** Queues synchronous work; settles with its result or its exception. */
  run<T>(work: () => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.queue.push(() => {
        try {
          resolve(work());
        } catch (e) {
          reject(e);
        }
      });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(this.drain);
      }
    });
  }

  get pending(): number {
    return this.queue.length - this.head;
  }

  private readonly drain = (): void => {
    const end = performance.now() + (this.pending >= this.backlog ? this.deepBudgetMs : this.budgetMs);
    while (this.head < this.queue.length) {
      const job = this.queue[this.head]!;
      this.queue[this.head++] = noop;
      job();
      if (performance.now() >= end) break;
    }
    if (this.head < this.queue.length) {
      // Under steady load the queue may never run empty; drop the finished slots now and then so
      // the array holds what is pending, not every call since the last idle moment.
      if (this.head >= COMPACT_AFTER) {
        this.queue = this.queue.slice(this.head);
        this.head = 0;
      }
      setImmediate(this.drain);
    } else {
      this.queue = [];
      this.head = 0;
      this.scheduled = false;
    }
  };
}

const COMPACT_AFTER = 1024;

function noop(): void {}
