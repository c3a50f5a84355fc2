/**
 * A small controller work queue, shaped like client-go's rate-limited workqueue:
 *
 * - dedupe: a key waiting in the queue is queued once, however often it is added;
 * - a key is never processed by two workers at once: added while being processed, it is processed
 *   again once the current run ends (so the latest state always wins);
 * - per-key exponential backoff for failures (`retryBaseMs` × 2^(failures−1), capped at
 *   `retryMaxMs`), reset when the key succeeds;
 * - a token bucket (`qps`, `burst`) on how often the handler starts, and `concurrency` workers:
 *   a resync of thousands of namespaces does not flood the API server;
 * - a failure `holdsAll` says no key can succeed either (credentials refused, RBAC forbidding the
 *   verb, the API server throttling) holds the whole queue back, with the same exponential
 *   backoff counted across keys, then lets one handler at a time run until one succeeds:
 *   thousands of keys failing alike would otherwise each be tried at the full rate.
 *
 * The handler throws to ask for a retry with backoff. Every timer is unref()'d; stop() waits for
 * running handlers and drops everything queued.
 */

export interface WorkQueueOptions {
  /** Parallel handlers. Default 4. */
  readonly concurrency?: number;
  /** Handler starts per second (token bucket refill). Default 20. */
  readonly qps?: number;
  /** Token bucket size. Default 40. */
  readonly burst?: number;
  /** First retry delay after a failure. Default 200 ms. */
  readonly retryBaseMs?: number;
  /** Longest retry delay. Default 60 s. */
  readonly retryMaxMs?: number;
  /** Clock (ms), for the token bucket. */
  readonly now?: () => number;
  /** Whether a failure means every key would fail alike now (the queue is held back; see above). */
  readonly holdsAll?: (err: unknown) => boolean;
}

export type WorkHandler = (key: string) => Promise<void>;
export type WorkErrorHandler = (key: string, err: unknown, failures: number, retryInMs: number) => void;

export class WorkQueue {
  private readonly handler: WorkHandler;
  private readonly onError: WorkErrorHandler | undefined;
  private readonly concurrency: number;
  private readonly qps: number;
  private readonly burst: number;
  private readonly retryBaseMs: number;
  private readonly retryMaxMs: number;
  private readonly now: () => number;
  private readonly holdsAll: (err: unknown) => boolean;

  private readonly queue: string[] = [];
  /** No handler starts before this time (ms), after a failure holdsAll said was the queue's. */
  private heldUntil = 0;
  /** Such failures in a row, for the hold's backoff; reset by a success. */
  private holds = 0;
  /** Keys waiting in `queue`, or re-added while processing. */
  private readonly dirty = new Set<string>();
  private readonly processing = new Set<string>();
  private readonly failures = new Map<string, number>();
  private readonly delayed = new Map<string, { timer: NodeJS.Timeout; due: number }>();
  private readonly running = new Set<Promise<void>>();
  private tokens: number;
  private lastRefill: number;
  private pumpTimer: NodeJS.Timeout | undefined;
  private paused = true;
  private stopped = false;

  constructor(handler: WorkHandler, opts: WorkQueueOptions = {}, onError?: WorkErrorHandler) {
    this.handler = handler;
    this.onError = onError;
    this.concurrency = Math.max(1, opts.concurrency ?? 4);
    this.qps = opts.qps ?? 20;
    this.burst = Math.max(1, opts.burst ?? 40);
    this.retryBaseMs = opts.retryBaseMs ?? 200;
    this.retryMaxMs = opts.retryMaxMs ?? 60_000;
    this.now = opts.now ?? Date.now;
    this.holdsAll = opts.holdsAll ?? (() => false);
    if (!(this.qps > 0)) throw new Error('qps must be positive');
    this.tokens = this.burst;
    this.lastRefill = this.now();
  }

  /** Starts (or resumes) handing keys to the handler. Keys added before are kept. */
  resume(): void {
    if (this.stopped) return;
    this.paused = false;
    this.pump();
  }

  /** Stops starting handlers (keys still accumulate, deduplicated). */
  pause(): void {
    this.paused = true;
  }

  add(key: string): void {
    if (this.stopped) return;
    if (this.dirty.has(key)) return;
    this.dirty.add(key);
    if (this.processing.has(key)) return; // re-queued when the current run ends
    this.queue.push(key);
    this.pump();
  }

  /** Adds `key` after `ms`; when the key is already scheduled, the sooner of the two times wins. */
  addAfter(key: string, ms: number): void {
    if (this.stopped) return;
    if (ms <= 0) {
      this.add(key);
      return;
    }
    const due = this.now() + ms;
    const prev = this.delayed.get(key);
    if (prev) {
      if (prev.due <= due) return;
      clearTimeout(prev.timer);
    }
    const timer = setTimeout(() => {
      this.delayed.delete(key);
      this.add(key);
    }, ms);
    timer.unref();
    this.delayed.set(key, { timer, due });
  }

  /** Number of failures recorded for `key` since its last success. */
  numRequeues(key: string): number {
    return this.failures.get(key) ?? 0;
  }

  /** Clears the backoff of `key`. */
  forget(key: string): void {
    this.failures.delete(key);
  }

  /** Whether the queue is held back after a failure every key would share (for status and tests). */
  get held(): boolean {
    return this.now() < this.heldUntil;
  }

  /** Keys queued or being processed (for status and tests). */
  get length(): number {
    return this.dirty.size + [...this.processing].filter((k) => !this.dirty.has(k)).length;
  }

  /** Resolves when nothing is queued, delayed or running. */
  async idle(): Promise<void> {
    while (this.queue.length > 0 || this.running.size > 0 || this.delayed.size > 0) {
      if (this.running.size > 0) await Promise.race(this.running);
      else await new Promise((r) => setTimeout(r, 10).unref());
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.paused = true;
    clearTimeout(this.pumpTimer);
    this.pumpTimer = undefined;
    for (const d of this.delayed.values()) clearTimeout(d.timer);
    this.delayed.clear();
    this.queue.length = 0;
    this.dirty.clear();
    await Promise.allSettled([...this.running]);
  }

  private takeToken(): boolean {
    const now = this.now();
    const elapsed = Math.max(0, now - this.lastRefill);
    this.lastRefill = now;
    this.tokens = Math.min(this.burst, this.tokens + (elapsed * this.qps) / 1000);
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return true;
    }
    return false;
  }

  private pump(): void {
    if (this.paused || this.stopped) return;
    while (this.running.size < this.concurrency && this.queue.length > 0) {
      const heldFor = this.heldUntil - this.now();
      if (heldFor > 0) return this.pumpAfter(heldFor);
      // After such a failure, one handler at a time until one succeeds: each is a probe.
      if (this.holds > 0 && this.running.size > 0) return;
      if (!this.takeToken()) return this.pumpAfter(Math.max(1, Math.ceil(((1 - this.tokens) * 1000) / this.qps)));
      const key = this.queue.shift()!;
      this.dirty.delete(key);
      this.processing.add(key);
      const run = this.process(key).finally(() => {
        this.running.delete(run);
        this.processing.delete(key);
        if (this.dirty.has(key) && !this.stopped) this.queue.push(key);
        this.pump();
      });
      this.running.add(run);
    }
  }

  /** Pumps again in `ms` (one timer at a time: the first asked for stands). */
  private pumpAfter(ms: number): void {
    if (this.pumpTimer) return;
    this.pumpTimer = setTimeout(() => {
      this.pumpTimer = undefined;
      this.pump();
    }, ms);
    this.pumpTimer.unref();
  }

  private backoff(n: number): number {
    const delay = Math.min(this.retryMaxMs, this.retryBaseMs * 2 ** Math.min(n - 1, 30));
    return Math.round(delay * (0.9 + Math.random() * 0.2));
  }

  private async process(key: string): Promise<void> {
    try {
      await this.handler(key);
      this.failures.delete(key);
      this.holds = 0;
    } catch (err) {
      if (this.stopped) return;
      const n = (this.failures.get(key) ?? 0) + 1;
      this.failures.set(key, n);
      let jittered = this.backoff(n);
      if (this.holdsAll(err)) {
        // Held from the last such failure on (handlers already started finish meanwhile).
        const hold = this.backoff(++this.holds);
        this.heldUntil = Math.max(this.heldUntil, this.now() + hold);
        jittered = Math.max(jittered, hold);
      }
      try {
        this.onError?.(key, err, n, jittered);
      } catch {
        // a logging problem must not stop retries
      }
      this.addAfter(key, jittered);
    }
  }
}
