/**
 * Write-behind recorder: issuance calls `record()` (synchronous, O(1): a push onto an in-memory
 * queue); a background loop writes batches to the store. Nothing here is on the request path
 * except that push and, in fail-closed mode, the `canAccept()` check made before signing and the
 * wait for `recordDurable()` (see "Kept records").
 *
 * Flushing. A flush starts every `flushIntervalMs` (everything queued at that moment is written)
 * or as soon as `batchSize` records are queued. One batch is in flight at a time; while the
 * queue holds a full batch the loop goes on without waiting, so throughput is bounded by the
 * store, not by the interval. Certificate and audit batches alternate.
 *
 * Failures. A batch that fails for a transient reason (store unreachable, restarting, busy,
 * disk full...) is retried, unchanged and ahead of everything queued after it, with exponential
 * backoff and jitter (`retryInitialMs` doubling up to `retryMaxMs`); `storeHealthy` is false
 * until a write succeeds again. Records stay in order, and since inserts are idempotent on
 * fingerprint (audit events on their id), a batch that was committed but whose acknowledgement
 * was lost is not stored twice. A batch the store rejects as data (InventoryDataError) is split
 * in halves until the offending record is isolated; that one record is discarded and reported
 * (`rejected`, onError) so that one poison record can never block the queue.
 *
 * Full buffer — the choice made here:
 * - `failClosed: true` (default): `canAccept()` turns false once `maxBuffer` certificate records
 *   are pending, and issuance must refuse (UNAVAILABLE) before signing. A record that arrives
 *   anyway (issuances that passed the check concurrently) is KEPT, not dropped: the certificate
 *   exists and must be inventoried. Only past `hardLimit` (default 2 x maxBuffer; a caller that
 *   ignores canAccept) is the oldest queued record dropped, to protect the process's memory.
 * - `failClosed: false`: issuance never waits for the inventory; past `maxBuffer` the oldest
 *   queued record is dropped, counted in `dropped` and reported once per overflow episode.
 * Audit events are always bounded by `maxAuditBuffer` with drop-oldest: refusals are not gated
 * by canAccept, so during an outage they would otherwise grow without limit.
 *
 * Kept records. `recordDurable()` queues a record and resolves once the batch holding it is
 * stored (inventory.failClosed: a certificate is answered only then). It starts a write within
 * DURABLE_GROUP_MS instead of waiting for the interval, so that records arriving together (from
 * several worker processes) share one transaction; records that arrive while a write is in flight
 * go in the next one, so under load durable records are committed in groups, as the others are.
 *
 * Shutdown. `close()` stops accepting new work after it has written everything queued (records
 * arriving while it runs are written too), then resolves: a clean shutdown loses nothing. If
 * the store stays unavailable past the deadline it rejects with InventoryFlushTimeoutError
 * saying how many records were not written. While closing, timers are ref'd so the process
 * does not exit under a pending close(); otherwise every timer is unref'd. The recorder does
 * not close the store.
 */
import { randomUUID } from 'node:crypto';
import { auditProblem, recordProblem } from './common.js';
import { InventoryDataError, type AuditEvent, type CertificateRecord, type InventoryStore } from './types.js';

export type RecorderLaneKind = 'certificates' | 'audit';

/** How long a durable record waits for others to share its write (see the module comment). */
export const DURABLE_GROUP_MS = 2;

export interface InventoryRecorderOptions {
  /** Pending certificate records at which canAccept() turns false (fail-closed) or dropping starts. Default 100000. */
  maxBuffer?: number;
  /** Default true; see the module comment. */
  failClosed?: boolean;
  /** Fail-closed only: absolute bound, past it the oldest record is dropped. Default 2 x maxBuffer. */
  hardLimit?: number;
  /** Pending audit events kept before dropping the oldest. Default maxBuffer. */
  maxAuditBuffer?: number;
  /**
   * Default 2000. Larger batches cost the store less per record (SQLite writes a page touched by
   * several records of one transaction once; measured 20 instead of 24-25 µs per certificate on
   * its thread at 4,800/s, where batches of about 1,000 form every 200 ms), and records wait no
   * longer: the interval flush writes whatever is queued.
   */
  batchSize?: number;
  /** Default 200 ms. */
  flushIntervalMs?: number;
  /** First retry delay after a failed write, default 100 ms. */
  retryInitialMs?: number;
  /** Backoff ceiling, default 5000 ms. */
  retryMaxMs?: number;
  /** The store is known to be down at the start (`storeHealthy` false until a write or ping succeeds). */
  startUnhealthy?: boolean;
  /** When idle this long, ping the store to keep `storeHealthy` current. Default 5000 ms; 0 disables. */
  healthCheckIntervalMs?: number;
  /** Default deadline for close(), 10000 ms. */
  closeDeadlineMs?: number;
  /**
   * A write outstanding this long makes `storeHealthy` false until it ends: a black-holed database
   * fails a write only at the driver's query timeout (30 s), and fail-closed must not issue
   * unrecorded certificates meanwhile. Default 5000 ms (well above a healthy batch); 0 disables.
   */
  writeStallMs?: number;
  /** Called after each batch is stored (n = batch size). */
  onFlush?: (n: number, kind: RecorderLaneKind) => void;
  /** Failed writes, health check failures, rejected records, overflow. For logging/metrics; never throw. */
  onError?: (err: Error) => void;
}

/** close() ran out of time with records still unwritten. */
export class InventoryFlushTimeoutError extends Error {
  override readonly name = 'InventoryFlushTimeoutError';
  constructor(
    readonly remaining: number,
    readonly remainingAudit: number,
  ) {
    super(`inventory flush deadline exceeded: ${remaining} certificate record(s) and ${remainingAudit} audit event(s) not written`);
  }
}

/** Records (or audit events: `lane`) were dropped because the buffer was full. */
export class InventoryOverflowError extends Error {
  override readonly name = 'InventoryOverflowError';
  constructor(
    message: string,
    readonly lane: RecorderLaneKind = 'certificates',
  ) {
    super(message);
  }
}

interface Batch<T> {
  items: T[];
  /** Sequence number of items[0]; a batch's items have consecutive sequence numbers. */
  start: number;
}

/** An ordered queue plus the batches taken from its head and not yet stored. */
class Lane<T> {
  private queue: T[] = [];
  private head = 0;
  /** Sequence number of queue[head]. */
  private headSeq = 0;
  /** Batches taken from the queue, oldest first, awaiting a successful write. */
  private readonly batches: Batch<T>[] = [];
  private inBatches = 0;
  enqueued = 0;
  /** Everything with a sequence number below this is to be written without waiting for a full batch. */
  drainTarget = 0;
  stored = 0;
  dropped = 0;
  rejected = 0;
  overflowing = false;
  /** recordDurable()'s callers, by sequence number, until their record is stored or lost. */
  private readonly watchers = new Map<number, Watcher>();

  constructor(
    readonly kind: RecorderLaneKind,
    readonly write: (items: readonly T[]) => Promise<void>,
  ) {}

  get queued(): number {
    return this.queue.length - this.head;
  }

  get pending(): number {
    return this.queued + this.inBatches;
  }

  push(item: T): void {
    this.queue.push(item);
    this.enqueued++;
  }

  /** Calls `w` once the item numbered `seq` is stored, or lost (dropped, rejected, abandoned). */
  watch(seq: number, w: Watcher): void {
    this.watchers.set(seq, w);
  }

  unwatch(seq: number): void {
    this.watchers.delete(seq);
  }

  /** Rejects every watcher (close() gave up: nothing more is written). */
  abandonWatchers(err: Error): void {
    for (const w of this.watchers.values()) w.reject(err);
    this.watchers.clear();
  }

  /** Drops the oldest record not yet taken into a batch. */
  dropOldest(): boolean {
    if (this.queued === 0) return false;
    this.settle(this.headSeq, 1, new InventoryOverflowError(`inventory buffer full: the record was dropped before it could be written`));
    (this.queue as unknown[])[this.head] = undefined;
    this.head++;
    this.headSeq++;
    this.dropped++;
    this.compact();
    return true;
  }

  wantsWrite(batchSize: number): boolean {
    return this.batches.length > 0 || this.queued >= batchSize || (this.queued > 0 && this.headSeq < this.drainTarget);
  }

  /** The oldest unwritten batch, or a new one taken from the queue. */
  take(batchSize: number): Batch<T> {
    if (this.batches.length > 0) return this.batches[0]!;
    const n = Math.min(batchSize, this.queued);
    const batch: Batch<T> = { items: this.queue.slice(this.head, this.head + n), start: this.headSeq };
    for (let i = this.head; i < this.head + n; i++) (this.queue as unknown[])[i] = undefined;
    this.head += n;
    this.headSeq += n;
    this.compact();
    this.batches.push(batch);
    this.inBatches += n;
    return batch;
  }

  commit(batch: Batch<T>): void {
    this.removeBatch(batch);
    this.stored += batch.items.length;
    this.settle(batch.start, batch.items.length, null);
  }

  /** Replaces the batch by its two halves, in order. */
  split(batch: Batch<T>): void {
    const mid = Math.ceil(batch.items.length / 2);
    const i = this.batches.indexOf(batch);
    this.batches.splice(
      i,
      1,
      { items: batch.items.slice(0, mid), start: batch.start },
      { items: batch.items.slice(mid), start: batch.start + mid },
    );
  }

  reject(batch: Batch<T>, why: Error): void {
    this.removeBatch(batch);
    this.rejected += batch.items.length;
    this.settle(batch.start, batch.items.length, why);
  }

  /** True when every item with a sequence number below `seq` has been stored, dropped or rejected. */
  settledBelow(seq: number): boolean {
    const oldest = this.batches.length > 0 ? this.batches[0]!.start : this.headSeq;
    return oldest >= seq;
  }

  /** Settles the watchers of items start .. start + n - 1 (by the shorter walk of the two). */
  private settle(start: number, n: number, err: Error | null): void {
    if (this.watchers.size === 0) return;
    const done = (seq: number, w: Watcher): void => {
      this.watchers.delete(seq);
      if (err === null) w.resolve();
      else w.reject(err);
    };
    if (n <= this.watchers.size) {
      for (let seq = start; seq < start + n; seq++) {
        const w = this.watchers.get(seq);
        if (w) done(seq, w);
      }
    } else {
      // Deleting the entry being visited is safe while iterating a Map.
      for (const [seq, w] of this.watchers) if (seq >= start && seq < start + n) done(seq, w);
    }
  }

  private removeBatch(batch: Batch<T>): void {
    const i = this.batches.indexOf(batch);
    if (i >= 0) {
      this.batches.splice(i, 1);
      this.inBatches -= batch.items.length;
    }
  }

  private compact(): void {
    if (this.head === this.queue.length) {
      this.queue = [];
      this.head = 0;
    } else if (this.head > 1024 && this.head * 2 >= this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
  }
}

interface Watcher {
  resolve: () => void;
  reject: (err: Error) => void;
}

interface Waiter {
  certs: number;
  audit: number;
  resolve: () => void;
  reject: (err: Error) => void;
}

type State = 'open' | 'closing' | 'closed';

function positive(v: number | undefined, dflt: number, min = 1): number {
  // 2^31-1 also keeps every delay within what setTimeout accepts.
  return v === undefined || !Number.isFinite(v) ? dflt : Math.min(2 ** 31 - 1, Math.max(min, Math.floor(v)));
}

export class InventoryRecorder {
  private readonly certs: Lane<CertificateRecord>;
  private readonly audit: Lane<AuditEvent & { id: string }>;
  private readonly maxBuffer: number;
  private readonly hardLimit: number;
  private readonly maxAuditBuffer: number;
  private readonly failClosed: boolean;
  private readonly batchSize: number;
  private readonly retryInitialMs: number;
  private readonly retryMaxMs: number;
  private readonly healthCheckIntervalMs: number;
  private readonly closeDeadlineMs: number;
  private readonly onFlushCb: InventoryRecorderOptions['onFlush'];
  private readonly onErrorCb: InventoryRecorderOptions['onError'];

  private state: State = 'open';
  private aborted = false;
  private running = false;
  private healthy = true;
  /**
   * The last certificate write failed (not for its data) and none has succeeded since. Health
   * follows the certificate records: a table that takes audit rows but not certificates (locked by
   * a migration or a VACUUM FULL) must keep issuance refused (inventory.failClosed) and the retries
   * backing off, although the audit batches in between succeed.
   */
  private certsFailing = false;
  private failures = 0;
  private pinging = false;
  /** performance.now() when the write in progress began; 0 when none is. */
  private writeStartedAt = 0;
  private readonly writeStallMs: number;
  private lastContact = Date.now();
  private auditFirst = false;
  private refTimers = false;
  private backoffTimer: NodeJS.Timeout | null = null;
  private groupTimer: NodeJS.Timeout | undefined;
  private readonly flushTimer: NodeJS.Timeout;
  private waiters: Waiter[] = [];
  private closePromise: Promise<void> | null = null;

  constructor(
    private readonly store: InventoryStore,
    options: InventoryRecorderOptions = {},
  ) {
    this.healthy = options.startUnhealthy !== true;
    this.maxBuffer = positive(options.maxBuffer, 100_000);
    this.hardLimit = Math.max(this.maxBuffer, positive(options.hardLimit, this.maxBuffer * 2));
    this.maxAuditBuffer = positive(options.maxAuditBuffer, this.maxBuffer);
    this.failClosed = options.failClosed ?? true;
    this.batchSize = positive(options.batchSize, 2000);
    this.retryInitialMs = positive(options.retryInitialMs, 100);
    this.retryMaxMs = Math.max(this.retryInitialMs, positive(options.retryMaxMs, 5000));
    this.healthCheckIntervalMs = positive(options.healthCheckIntervalMs, 5000, 0);
    this.closeDeadlineMs = positive(options.closeDeadlineMs, 10_000, 0);
    this.writeStallMs = positive(options.writeStallMs, 5000, 0);
    this.onFlushCb = options.onFlush;
    this.onErrorCb = options.onError;
    this.certs = new Lane('certificates', (items) => this.store.insertMany(items));
    this.audit = new Lane('audit', (items) => this.store.insertAudit(items));
    this.flushTimer = setInterval(() => this.tick(), positive(options.flushIntervalMs, 200));
    this.flushTimer.unref();
  }

  // ------------------------------------------------------------------------------------------
  // Request path.

  /**
   * In fail-closed mode: false once maxBuffer certificate records are pending, or after close();
   * issuance must then refuse before signing. Always true otherwise while open.
   */
  canAccept(): boolean {
    if (this.state !== 'open') return false;
    return !this.failClosed || this.certs.pending < this.maxBuffer;
  }

  /**
   * Queues a record; synchronous and O(1). The record must not be mutated afterwards.
   * Throws TypeError for a malformed record (a programming error) and after close().
   */
  record(rec: CertificateRecord): void {
    if (this.state === 'closed') throw new Error('inventory recorder is closed');
    const problem = recordProblem(rec);
    if (problem !== null) throw new TypeError(`invalid certificate record: ${problem}`);
    const lane = this.certs;
    const limit = this.failClosed ? this.hardLimit : this.maxBuffer;
    if (lane.pending >= limit) this.overflow(lane);
    lane.push(rec);
    if (this.state === 'closing') lane.drainTarget = lane.enqueued;
    if (lane.queued >= this.batchSize || this.state === 'closing') this.kick();
  }

  /**
   * Queues a record and resolves once it is stored; a write starts at once (see the module
   * comment). Rejects with the store's InventoryDataError if the store refuses this record, with
   * InventoryOverflowError if it was dropped (a full buffer past hardLimit), and with
   * InventoryFlushTimeoutError if close() gave up before writing it; a malformed record or a
   * closed recorder rejects at once. Waits through outages: a caller that must answer bounds it.
   */
  recordDurable(rec: CertificateRecord): Promise<void> {
    const lane = this.certs;
    // Watched before it is queued: record() may start a write, which may settle synchronously.
    const seq = lane.enqueued;
    let watcher!: Watcher;
    const kept = new Promise<void>((resolve, reject) => (watcher = { resolve, reject }));
    lane.watch(seq, watcher);
    try {
      this.record(rec);
    } catch (err) {
      lane.unwatch(seq);
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
    this.groupTimer ??= setTimeout(() => {
      this.groupTimer = undefined;
      lane.drainTarget = lane.enqueued;
      this.kick();
    }, DURABLE_GROUP_MS);
    if (!this.refTimers) this.groupTimer.unref();
    return kept;
  }

  /** Queues an audit event (an id is assigned when absent); synchronous and O(1). */
  recordAudit(ev: AuditEvent): void {
    if (this.state === 'closed') throw new Error('inventory recorder is closed');
    const problem = auditProblem(ev);
    if (problem !== null) throw new TypeError(`invalid audit event: ${problem}`);
    const lane = this.audit;
    if (lane.pending >= this.maxAuditBuffer) this.overflow(lane);
    lane.push(ev.id === undefined ? { ...ev, id: randomUUID() } : (ev as AuditEvent & { id: string }));
    if (this.state === 'closing') lane.drainTarget = lane.enqueued;
    if (lane.queued >= this.batchSize || this.state === 'closing') this.kick();
  }

  // ------------------------------------------------------------------------------------------
  // Observability.

  /** Certificate records not yet stored (queued + in flight / awaiting retry). */
  get backlog(): number {
    return this.certs.pending;
  }

  get auditBacklog(): number {
    return this.audit.pending;
  }

  /** False from a failed write (or health check) until the next successful one, and while a write has stalled. */
  get storeHealthy(): boolean {
    return this.healthy && !this.writeStalled;
  }

  /** A write has been outstanding longer than `writeStallMs`. */
  get writeStalled(): boolean {
    return this.writeStallMs > 0 && this.writeStartedAt > 0 && performance.now() - this.writeStartedAt > this.writeStallMs;
  }

  /** Certificate records dropped because the buffer was full. */
  get dropped(): number {
    return this.certs.dropped;
  }

  /** Certificate records the store rejected as invalid data (isolated and discarded). */
  get rejected(): number {
    return this.certs.rejected;
  }

  get stats(): {
    backlog: number;
    auditBacklog: number;
    stored: number;
    auditStored: number;
    dropped: number;
    auditDropped: number;
    rejected: number;
    auditRejected: number;
    storeHealthy: boolean;
  } {
    return {
      backlog: this.certs.pending,
      auditBacklog: this.audit.pending,
      stored: this.certs.stored,
      auditStored: this.audit.stored,
      dropped: this.certs.dropped,
      auditDropped: this.audit.dropped,
      rejected: this.certs.rejected,
      auditRejected: this.audit.rejected,
      storeHealthy: this.storeHealthy,
    };
  }

  // ------------------------------------------------------------------------------------------
  // Flush and close.

  /**
   * Writes everything queued so far; resolves once it is stored (or dropped/rejected). Waits
   * through outages; rejects only if close() gives up at its deadline.
   */
  flush(): Promise<void> {
    if (this.aborted) return Promise.reject(new Error('inventory recorder is closed'));
    const w = new Promise<void>((resolve, reject) => {
      this.waiters.push({ certs: this.certs.enqueued, audit: this.audit.enqueued, resolve, reject });
    });
    this.certs.drainTarget = this.certs.enqueued;
    this.audit.drainTarget = this.audit.enqueued;
    this.settleWaiters();
    this.kick();
    return w;
  }

  /**
   * Writes everything (including records that arrive meanwhile), then stops. Rejects with
   * InventoryFlushTimeoutError if that takes longer than `deadlineMs` (default closeDeadlineMs).
   * Idempotent.
   */
  close(options: { deadlineMs?: number } = {}): Promise<void> {
    if (this.closePromise !== null) return this.closePromise;
    this.state = 'closing';
    clearInterval(this.flushTimer);
    this.refTimers = true;
    this.backoffTimer?.ref();
    const deadlineMs = positive(options.deadlineMs, this.closeDeadlineMs, 0);
    this.closePromise = new Promise<void>((resolve, reject) => {
      const deadline = setTimeout(() => {
        this.aborted = true;
        this.state = 'closed';
        if (this.backoffTimer !== null) clearTimeout(this.backoffTimer);
        this.backoffTimer = null;
        const err = new InventoryFlushTimeoutError(this.certs.pending, this.audit.pending);
        this.rejectWaiters(err);
        this.certs.abandonWatchers(err);
        reject(err);
      }, deadlineMs);
      const drainAll = (): void => {
        if (this.aborted) return;
        if (this.certs.pending === 0 && this.audit.pending === 0) {
          this.state = 'closed';
          clearTimeout(deadline);
          resolve();
          return;
        }
        this.flush().then(drainAll, () => undefined);
      };
      drainAll();
    });
    return this.closePromise;
  }

  // ------------------------------------------------------------------------------------------
  // Background loop.

  private tick(): void {
    this.certs.drainTarget = this.certs.enqueued;
    this.audit.drainTarget = this.audit.enqueued;
    this.kick();
    if (
      this.healthCheckIntervalMs > 0 &&
      !this.running &&
      !this.pinging &&
      this.backoffTimer === null &&
      Date.now() - this.lastContact >= this.healthCheckIntervalMs
    ) {
      this.pinging = true;
      this.store.ping().then(
        () => {
          this.pinging = false;
          this.lastContact = Date.now();
          // With no certificate record left to write, nothing is failing any more.
          if (this.certs.pending === 0) this.certsFailing = false;
          this.healthy = !this.certsFailing;
        },
        (err: unknown) => {
          this.pinging = false;
          this.lastContact = Date.now();
          this.healthy = false;
          this.emitError(err);
        },
      );
    }
  }

  private kick(): void {
    if (this.running || this.aborted || this.backoffTimer !== null) return;
    void this.drain();
  }

  private nextLane(): Lane<CertificateRecord> | Lane<AuditEvent & { id: string }> | null {
    this.auditFirst = !this.auditFirst;
    const order = this.auditFirst ? [this.audit, this.certs] : [this.certs, this.audit];
    for (const lane of order) if (lane.wantsWrite(this.batchSize)) return lane;
    return null;
  }

  private async drain(): Promise<void> {
    this.running = true;
    try {
      while (!this.aborted && this.backoffTimer === null) {
        const lane = this.nextLane();
        if (lane === null) break;
        // Both lanes share the loop; the cast keeps one code path for the two item types.
        const l = lane as Lane<unknown>;
        const batch = l.take(this.batchSize);
        let error: unknown = null;
        this.writeStartedAt = performance.now();
        try {
          await l.write(batch.items);
        } catch (err) {
          error = err ?? new Error('inventory write failed');
        } finally {
          this.writeStartedAt = 0;
        }
        this.lastContact = Date.now();
        if (error === null) {
          l.commit(batch);
          if (lane === this.certs) this.certsFailing = false;
          if (!this.certsFailing) {
            this.failures = 0;
            this.healthy = true;
          }
          if (l.overflowing && l.pending < this.limitOf(l)) l.overflowing = false;
          this.call(() => this.onFlushCb?.(batch.items.length, l.kind));
        } else if (error instanceof InventoryDataError) {
          // The store answered (it refused the data): certificate writes reach it again.
          if (lane === this.certs) this.certsFailing = false;
          if (batch.items.length > 1) {
            l.split(batch);
          } else {
            const discarded = new InventoryDataError(`${l.kind === 'audit' ? 'audit event' : 'certificate record'} discarded: ${error.message}`, { cause: error, lane: l.kind });
            l.reject(batch, discarded);
            this.emitError(discarded);
          }
        } else {
          if (lane === this.certs) this.certsFailing = true;
          this.healthy = false;
          this.emitError(error);
          this.scheduleRetry();
        }
        this.settleWaiters();
      }
    } finally {
      this.running = false;
    }
    this.settleWaiters();
  }

  private limitOf(l: Lane<unknown>): number {
    if (l === (this.audit as Lane<unknown>)) return this.maxAuditBuffer;
    return this.failClosed ? this.hardLimit : this.maxBuffer;
  }

  private overflow(lane: Lane<CertificateRecord> | Lane<AuditEvent & { id: string }>): void {
    if (!lane.dropOldest()) return;
    if (!lane.overflowing) {
      lane.overflowing = true;
      this.emitError(
        new InventoryOverflowError(
          `inventory buffer full (${this.limitOf(lane as Lane<unknown>)} pending ${lane.kind}): dropping the oldest unwritten entries`,
          lane.kind,
        ),
      );
    }
    this.settleWaiters();
  }

  private scheduleRetry(): void {
    this.failures++;
    const base = Math.min(this.retryMaxMs, this.retryInitialMs * 2 ** Math.min(30, this.failures - 1));
    const delay = base / 2 + (Math.random() * base) / 2;
    this.backoffTimer = setTimeout(() => {
      this.backoffTimer = null;
      this.kick();
    }, delay);
    if (!this.refTimers) this.backoffTimer.unref();
  }

  private settleWaiters(): void {
    if (this.waiters.length === 0) return;
    const still: Waiter[] = [];
    for (const w of this.waiters) {
      if (this.certs.settledBelow(w.certs) && this.audit.settledBelow(w.audit)) w.resolve();
      else still.push(w);
    }
    this.waiters = still;
  }

  private rejectWaiters(err: Error): void {
    const ws = this.waiters;
    this.waiters = [];
    for (const w of ws) w.reject(err);
  }

  private emitError(err: unknown): void {
    const e = err instanceof Error ? err : new Error(String(err));
    this.call(() => this.onErrorCb?.(e));
  }

  private call(fn: () => void): void {
    try {
      fn();
    } catch {
      // Callbacks are for metrics and logs; they must not break the write loop.
    }
  }
}
