/**
 * A small controller work queue, shaped like client-go's rate-limited workqueue:
 *
 * - dedupe: a key waiting in the queue is queued once, however often it is added;
 * - a key is never processed by two workers at once: added while being processed, it is processed
 *   again once the current run ends (so the latest state always wins);
 * - per-key exponential backoff for failures (`retryBaseMs` × 2^(failures−1), capped at
 *   `retryMaxMs`), reset when the key succeeds;
 * - a token bucket (`qps`, `burst`) on how often the handler starts, and `concurrency` workers:
 *   a resync of thousands of namespaces does not flood the API server.
 *
 * The handler throws to ask for a retry with backoff. Every timer is unref()'d; stop() waits for
 * running handlers and drops everything queued.
 */
export class WorkQueue {
    handler;
    onError;
    concurrency;
    qps;
    burst;
    retryBaseMs;
    retryMaxMs;
    now;
    queue = [];
    /** Keys waiting in `queue`, or re-added while processing. */
    dirty = new Set();
    processing = new Set();
    failures = new Map();
    delayed = new Map();
    running = new Set();
    tokens;
    lastRefill;
    pumpTimer;
    paused = true;
    stopped = false;
    constructor(handler, opts = {}, onError) {
        this.handler = handler;
        this.onError = onError;
        this.concurrency = Math.max(1, opts.concurrency ?? 4);
        this.qps = opts.qps ?? 20;
        this.burst = Math.max(1, opts.burst ?? 40);
        this.retryBaseMs = opts.retryBaseMs ?? 200;
        this.retryMaxMs = opts.retryMaxMs ?? 60_000;
        this.now = opts.now ?? Date.now;
        if (!(this.qps > 0))
            throw new Error('qps must be positive');
        this.tokens = this.burst;
        this.lastRefill = this.now();
    }
    /** Starts (or resumes) handing keys to the handler. Keys added before are kept. */
    resume() {
        if (this.stopped)
            return;
        this.paused = false;
        this.pump();
    }
    /** Stops starting handlers (keys still accumulate, deduplicated). */
    pause() {
        this.paused = true;
    }
    add(key) {
        if (this.stopped)
            return;
        if (this.dirty.has(key))
            return;
        this.dirty.add(key);
        if (this.processing.has(key))
            return; // re-queued when the current run ends
        this.queue.push(key);
        this.pump();
    }
    /** Adds `key` after `ms`; when the key is already scheduled, the sooner of the two times wins. */
    addAfter(key, ms) {
        if (this.stopped)
            return;
        if (ms <= 0) {
            this.add(key);
            return;
        }
        const due = this.now() + ms;
        const prev = this.delayed.get(key);
        if (prev) {
            if (prev.due <= due)
                return;
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
    numRequeues(key) {
        return this.failures.get(key) ?? 0;
    }
    /** Clears the backoff of `key`. */
    forget(key) {
        this.failures.delete(key);
    }
    /** Keys queued or being processed (for status and tests). */
    get length() {
        return this.dirty.size + [...this.processing].filter((k) => !this.dirty.has(k)).length;
    }
    /** Resolves when nothing is queued, delayed or running. */
    async idle() {
        while (this.queue.length > 0 || this.running.size > 0 || this.delayed.size > 0) {
            if (this.running.size > 0)
                await Promise.race(this.running);
            else
                await new Promise((r) => setTimeout(r, 10).unref());
        }
    }
    async stop() {
        this.stopped = true;
        this.paused = true;
        clearTimeout(this.pumpTimer);
        this.pumpTimer = undefined;
        for (const d of this.delayed.values())
            clearTimeout(d.timer);
        this.delayed.clear();
        this.queue.length = 0;
        this.dirty.clear();
        await Promise.allSettled([...this.running]);
    }
    takeToken() {
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
    pump() {
        if (this.paused || this.stopped)
            return;
        while (this.running.size < this.concurrency && this.queue.length > 0) {
            if (!this.takeToken()) {
                if (!this.pumpTimer) {
                    const wait = Math.max(1, Math.ceil(((1 - this.tokens) * 1000) / this.qps));
                    this.pumpTimer = setTimeout(() => {
                        this.pumpTimer = undefined;
                        this.pump();
                    }, wait);
                    this.pumpTimer.unref();
                }
                return;
            }
            const key = this.queue.shift();
            this.dirty.delete(key);
            this.processing.add(key);
            const run = this.process(key).finally(() => {
                this.running.delete(run);
                this.processing.delete(key);
                if (this.dirty.has(key) && !this.stopped)
                    this.queue.push(key);
                this.pump();
            });
            this.running.add(run);
        }
    }
    async process(key) {
        try {
            await this.handler(key);
            this.failures.delete(key);
        }
        catch (err) {
            if (this.stopped)
                return;
            const n = (this.failures.get(key) ?? 0) + 1;
            this.failures.set(key, n);
            const delay = Math.min(this.retryMaxMs, this.retryBaseMs * 2 ** Math.min(n - 1, 30));
            const jittered = Math.round(delay * (0.9 + Math.random() * 0.2));
            try {
                this.onError?.(key, err, n, jittered);
            }
            catch {
                // a logging problem must not stop retries
            }
            this.addAfter(key, jittered);
        }
    }
}
//# sourceMappingURL=work-queue.js.map