import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStore } from '../../../src/inventory/open.js';
import { InventoryFlushTimeoutError, InventoryOverflowError, InventoryRecorder } from '../../../src/inventory/recorder.js';
import {
  InventoryDataError,
  type AuditEvent,
  type CertificateFilter,
  type CertificateRecord,
  type DiscoveredCertificate,
  type InventoryStore,
  type Page,
  type PlaceSummary,
} from '../../../src/inventory/types.js';
import {
  createTestDatabase,
  dedicatedClusterSkipReason,
  destroyDedicatedCluster,
  pgSkipReason,
  startDedicatedCluster,
  startPostgres,
  stopPostgres,
  type PgCluster,
  type TestDatabase,
} from '../../support/postgres-control.js';
import { T0, makeRecord } from './fixtures.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function waitFor(cond: () => boolean | Promise<boolean>, timeoutMs = 5000, what = 'condition'): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/** In-memory store with switchable outages; idempotent like the real ones. */
class MemoryStore implements InventoryStore {
  readonly kind = 'sqlite' as const;
  readonly certs = new Map<string, CertificateRecord>();
  readonly order: string[] = [];
  readonly audit = new Map<string, AuditEvent>();
  readonly calls: { kind: 'certs' | 'audit'; n: number }[] = [];
  down = false;
  /** Certificate writes fail while audit writes succeed (the certificates table locked). */
  certsDown = false;
  /** Commit the batch, then fail as if the acknowledgement was lost. */
  loseAckOnce = false;
  poison = new Set<string>();
  delayMs = 0;

  async migrate(): Promise<void> {}
  async insertMany(records: readonly CertificateRecord[]): Promise<void> {
    if (this.delayMs > 0) await sleep(this.delayMs);
    if (this.down || this.certsDown) throw Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });
    if (records.some((r) => this.poison.has(r.fingerprint))) throw new InventoryDataError('constraint violation');
    this.calls.push({ kind: 'certs', n: records.length });
    for (const r of records) {
      if (!this.certs.has(r.fingerprint)) {
        this.certs.set(r.fingerprint, r);
        this.order.push(r.fingerprint);
      }
    }
    if (this.loseAckOnce) {
      this.loseAckOnce = false;
      throw new Error('connection reset after commit');
    }
  }
  async insertAudit(events: readonly AuditEvent[]): Promise<void> {
    if (this.down) throw new Error('down');
    this.calls.push({ kind: 'audit', n: events.length });
    for (const e of events) if (!this.audit.has(e.id!)) this.audit.set(e.id!, e);
  }
  async get(): Promise<CertificateRecord | null> {
    return null;
  }
  async list(_f: CertificateFilter): Promise<Page<CertificateRecord>> {
    return { items: [], nextCursor: null };
  }
  async count(): Promise<number> {
    return this.certs.size;
  }
  async latestPerIdentity(): Promise<CertificateRecord[]> {
    return [];
  }
  async recordSnapshots(): Promise<void> {}
  async discoveredExpiring(): Promise<DiscoveredCertificate[]> {
    return [];
  }
  async forgetPlaces<S>(): Promise<S[]> {
    return [];
  }
  async places(): Promise<PlaceSummary[]> {
    return [];
  }
  async pruneExpired(): Promise<number> {
    return 0;
  }
  async pruneAudit(): Promise<number> {
    return 0;
  }
  async ping(): Promise<void> {
    if (this.down) throw new Error('down');
  }
  async close(): Promise<void> {}
}

const SLOW = 60_000; // an interval that never fires during a test

describe('InventoryRecorder (in-memory store)', () => {
  it('writes full batches at once and the rest on flush()', async () => {
    const store = new MemoryStore();
    const flushed: number[] = [];
    const rec = new InventoryRecorder(store, { batchSize: 500, flushIntervalMs: SLOW, onFlush: (n) => flushed.push(n) });
    for (let i = 0; i < 1200; i++) rec.record(makeRecord(i));
    await waitFor(() => store.certs.size === 1000, 2000, 'two full batches');
    expect(rec.backlog).toBe(200);
    await rec.flush();
    expect(flushed).toEqual([500, 500, 200]);
    expect(store.order).toHaveLength(1200);
    expect(rec.backlog).toBe(0);
    await rec.close();
  });

  it('writes batches of 2000 records by default', async () => {
    const store = new MemoryStore();
    const flushed: number[] = [];
    const rec = new InventoryRecorder(store, { flushIntervalMs: SLOW, onFlush: (n) => flushed.push(n) });
    for (let i = 0; i < 4500; i++) rec.record(makeRecord(i));
    await waitFor(() => store.certs.size === 4000, 2000, 'two full batches');
    await rec.flush();
    expect(flushed).toEqual([2000, 2000, 500]);
    await rec.close();
  });

  it('flushes a partial batch on the interval', async () => {
    const store = new MemoryStore();
    const rec = new InventoryRecorder(store, { flushIntervalMs: 20 });
    rec.record(makeRecord(1));
    rec.recordAudit({ at: new Date(T0), requester: 'r', identity: 'i', cluster: null, decision: 'refused', code: 'POLICY_DENIED' });
    await waitFor(() => store.certs.size === 1 && store.audit.size === 1, 2000, 'interval flush');
    await rec.close();
  });

  it('close() with a non-empty buffer writes everything, including records added meanwhile', async () => {
    const store = new MemoryStore();
    store.delayMs = 5;
    const rec = new InventoryRecorder(store, { batchSize: 100, flushIntervalMs: SLOW });
    for (let i = 0; i < 950; i++) rec.record(makeRecord(i));
    const closing = rec.close();
    rec.record(makeRecord('late')); // an issuance that was already in flight
    expect(rec.canAccept()).toBe(false);
    await closing;
    expect(store.certs.size).toBe(951);
    expect(() => rec.record(makeRecord('after'))).toThrow(/closed/);
    expect(rec.close()).toBe(closing);
  });

  it('retries through an outage in order, reports health, and stores each record once', async () => {
    const store = new MemoryStore();
    const errors: Error[] = [];
    const rec = new InventoryRecorder(store, { batchSize: 10, flushIntervalMs: 10, retryInitialMs: 5, retryMaxMs: 20, onError: (e) => errors.push(e) });
    for (let i = 0; i < 25; i++) rec.record(makeRecord(i));
    await waitFor(() => store.certs.size === 25);
    expect(rec.storeHealthy).toBe(true);
    store.down = true;
    for (let i = 25; i < 100; i++) rec.record(makeRecord(i));
    await waitFor(() => !rec.storeHealthy, 2000, 'unhealthy');
    expect(rec.backlog).toBe(75);
    expect(errors.length).toBeGreaterThan(0);
    store.down = false;
    await waitFor(() => rec.backlog === 0, 2000, 'drained');
    expect(rec.storeHealthy).toBe(true);
    expect(store.order).toEqual(Array.from({ length: 100 }, (_, i) => makeRecord(i).fingerprint));
    await rec.close();
  });

  it('a batch committed whose acknowledgement was lost is retried without duplicates (real SQLite)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'meshcert-rec-'));
    const real = await openStore({ kind: 'sqlite', path: join(dir, 'inv.db') });
    let lose = true;
    const flaky: InventoryStore = Object.assign(Object.create(real) as InventoryStore, {
      insertMany: async (records: readonly CertificateRecord[]) => {
        await real.insertMany(records);
        if (lose) {
          lose = false;
          throw new Error('connection reset after commit');
        }
      },
    });
    const rec = new InventoryRecorder(flaky, { batchSize: 50, flushIntervalMs: SLOW, retryInitialMs: 1 });
    for (let i = 0; i < 120; i++) rec.record(makeRecord(i));
    await rec.close();
    expect(await real.count()).toBe(120);
    expect(rec.stats.stored).toBe(120);
    await real.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('isolates and discards a poison record without blocking the others', async () => {
    const store = new MemoryStore();
    const errors: Error[] = [];
    const rec = new InventoryRecorder(store, { batchSize: 64, flushIntervalMs: SLOW, onError: (e) => errors.push(e) });
    const recs = Array.from({ length: 100 }, (_, i) => makeRecord(i));
    store.poison.add(recs[37]!.fingerprint);
    for (const r of recs) rec.record(r);
    await rec.close();
    expect(store.certs.size).toBe(99);
    expect(store.certs.has(recs[37]!.fingerprint)).toBe(false);
    expect(rec.rejected).toBe(1);
    expect(rec.storeHealthy).toBe(true);
    expect(errors.filter((e) => e instanceof InventoryDataError)).toHaveLength(1);
    expect(store.order).toEqual(recs.filter((_, i) => i !== 37).map((r) => r.fingerprint));
  });

  it('fail-closed: canAccept() turns false at maxBuffer, late records are kept, hardLimit drops the oldest', async () => {
    const store = new MemoryStore();
    store.down = true;
    const errors: Error[] = [];
    const rec = new InventoryRecorder(store, { maxBuffer: 10, hardLimit: 15, batchSize: 4, flushIntervalMs: 5, retryInitialMs: 5, retryMaxMs: 10, onError: (e) => errors.push(e) });
    for (let i = 0; i < 10; i++) {
      expect(rec.canAccept()).toBe(true);
      rec.record(makeRecord(i));
    }
    expect(rec.canAccept()).toBe(false);
    for (let i = 10; i < 15; i++) rec.record(makeRecord(i)); // raced past the check: kept
    expect(rec.backlog).toBe(15);
    expect(rec.dropped).toBe(0);
    rec.record(makeRecord(15)); // past the hard limit
    expect(rec.backlog).toBe(15);
    expect(rec.dropped).toBe(1);
    expect(errors.some((e) => e instanceof InventoryOverflowError)).toBe(true);
    store.down = false;
    await rec.close();
    expect(store.certs.size).toBe(15);
    expect(rec.canAccept()).toBe(false);
  });

  it('fail-open: drops the oldest queued records past maxBuffer, canAccept() stays true', async () => {
    const store = new MemoryStore();
    store.down = true;
    const rec = new InventoryRecorder(store, { failClosed: false, maxBuffer: 10, batchSize: 100, flushIntervalMs: SLOW });
    for (let i = 0; i < 25; i++) rec.record(makeRecord(i));
    expect(rec.canAccept()).toBe(true);
    expect(rec.backlog).toBe(10);
    expect(rec.dropped).toBe(15);
    store.down = false;
    await rec.close();
    expect([...store.certs.keys()]).toEqual(Array.from({ length: 10 }, (_, i) => makeRecord(i + 15).fingerprint));
  });

  it('audit events get ids, are bounded with drop-oldest, and are flushed on close', async () => {
    const store = new MemoryStore();
    store.down = true;
    const errors: Error[] = [];
    const rec = new InventoryRecorder(store, { maxAuditBuffer: 5, maxBuffer: 2, flushIntervalMs: SLOW, onError: (e) => errors.push(e) });
    for (let i = 0; i < 8; i++) {
      rec.recordAudit({ at: new Date(T0 + i), requester: null, identity: `id-${i}`, cluster: null, decision: 'refused' });
    }
    expect(rec.auditBacklog).toBe(5);
    expect(rec.stats.auditDropped).toBe(3);
    // Each lane's overflow says which it is (the log tells them apart: see inventoryErrorLog).
    for (let i = 0; i < 5; i++) rec.record(makeRecord(`lane-${i}`)); // past hardLimit (2 x maxBuffer)
    expect(errors.filter((e) => e instanceof InventoryOverflowError).map((e) => (e as InventoryOverflowError).lane)).toEqual(['audit', 'certificates']);
    store.down = false;
    await rec.close();
    const stored = [...store.audit.values()];
    expect(stored.map((e) => e.identity)).toEqual(['id-3', 'id-4', 'id-5', 'id-6', 'id-7']);
    expect(new Set(stored.map((e) => e.id)).size).toBe(5);
  });

  it('close() gives up at its deadline with the number of unwritten records', async () => {
    const store = new MemoryStore();
    store.down = true;
    const rec = new InventoryRecorder(store, { flushIntervalMs: SLOW, retryInitialMs: 10, retryMaxMs: 50 });
    for (let i = 0; i < 7; i++) rec.record(makeRecord(i));
    rec.recordAudit({ at: new Date(T0), requester: null, identity: null, cluster: null, decision: 'issued' });
    const started = Date.now();
    const err = await rec.close({ deadlineMs: 200 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InventoryFlushTimeoutError);
    expect((err as InventoryFlushTimeoutError).remaining).toBe(7);
    expect((err as InventoryFlushTimeoutError).remainingAudit).toBe(1);
    expect(Date.now() - started).toBeLessThan(2000);
    expect(() => rec.record(makeRecord(99))).toThrow(/closed/);
  });

  it('rejects malformed records synchronously', () => {
    const rec = new InventoryRecorder(new MemoryStore(), { flushIntervalMs: SLOW });
    expect(() => rec.record(makeRecord(1, { fingerprint: 'nope' }))).toThrow(TypeError);
    expect(() => rec.recordAudit({ at: new Date('x'), requester: null, identity: null, cluster: null, decision: 'issued' })).toThrow(TypeError);
    expect(rec.backlog).toBe(0);
    void rec.close();
  });

  it('health follows the certificate records: audit rows written meanwhile neither mark the store healthy nor reset the backoff', async () => {
    const store = new MemoryStore();
    const rec = new InventoryRecorder(store, { batchSize: 10, flushIntervalMs: 5, retryInitialMs: 5, retryMaxMs: 400, healthCheckIntervalMs: 10 });
    store.certsDown = true;
    rec.record(makeRecord(1));
    await waitFor(() => !rec.storeHealthy, 2000, 'unhealthy');
    // Audit rows keep coming (the refusals of a fail-closed CA, say) and are written.
    const audited = setInterval(() => rec.recordAudit({ at: new Date(T0), requester: null, identity: null, cluster: null, decision: 'refused', code: 'INVENTORY_UNAVAILABLE' }), 2);
    try {
      await waitFor(() => store.audit.size >= 20, 2000, 'audit rows written');
      const before = store.calls.length;
      const attempts: number[] = [];
      const wrapped = store.insertMany.bind(store);
      store.insertMany = async (r) => {
        attempts.push(performance.now());
        return wrapped(r);
      };
      let seenHealthy = false;
      const sampling = setInterval(() => (seenHealthy ||= rec.storeHealthy), 1);
      await sleep(600);
      clearInterval(sampling);
      expect(seenHealthy, 'healthy at some moment').toBe(false);
      expect(store.calls.length).toBeGreaterThan(before);
      // Backing off: retries apart by up to retryMaxMs, not one every few milliseconds.
      expect(attempts.length).toBeLessThan(12);
    } finally {
      clearInterval(audited);
    }
    store.certsDown = false;
    await waitFor(() => rec.backlog === 0 && rec.storeHealthy, 3000, 'healthy again');
    await rec.close();
  });

  it('recovers health when the certificate records that failed are then refused as data (the store answers again)', async () => {
    const store = new MemoryStore();
    const rec = new InventoryRecorder(store, { batchSize: 10, flushIntervalMs: 5, retryInitialMs: 5, retryMaxMs: 20, healthCheckIntervalMs: 10, onError: () => {} });
    const poison = makeRecord('poison');
    store.poison.add(poison.fingerprint);
    store.certsDown = true;
    rec.record(poison);
    await waitFor(() => !rec.storeHealthy, 2000, 'unhealthy');
    store.certsDown = false;
    await waitFor(() => rec.rejected === 1, 2000, 'refused as data');
    // Nothing left to write and the store answers: healthy again (failClosed would otherwise refuse until a restart).
    await waitFor(() => rec.storeHealthy, 2000, 'healthy again');
    expect(rec.backlog).toBe(0);
    await rec.close();
  });

  it('a health check marks the store unhealthy while idle', async () => {
    const store = new MemoryStore();
    const rec = new InventoryRecorder(store, { flushIntervalMs: 10, healthCheckIntervalMs: 20 });
    store.down = true;
    await waitFor(() => !rec.storeHealthy, 2000, 'unhealthy');
    store.down = false;
    await waitFor(() => rec.storeHealthy, 2000, 'healthy');
    await rec.close();
  });

  it('a write outstanding past writeStallMs makes the store unhealthy until it ends (a black-holed database)', async () => {
    const store = new MemoryStore();
    store.delayMs = 400;
    const rec = new InventoryRecorder(store, { flushIntervalMs: 10, healthCheckIntervalMs: 0, writeStallMs: 100 });
    rec.record(makeRecord(1));
    await waitFor(() => rec.writeStalled, 2000, 'stalled');
    expect(rec.storeHealthy).toBe(false);
    expect(rec.stats.storeHealthy).toBe(false);
    // The write ends (here: it succeeds): healthy again, the record stored once.
    await waitFor(() => rec.storeHealthy, 2000, 'healthy');
    expect(store.certs.size).toBe(1);
    await rec.close();
    // A write well within the bound never shows as a stall (a bound far above it: a loaded
    // machine may hold the event loop for a while between the write's start and its end).
    const quick = new InventoryRecorder(store, { flushIntervalMs: 10, healthCheckIntervalMs: 0, writeStallMs: 5000 });
    store.delayMs = 20;
    quick.record(makeRecord(2));
    const seen: boolean[] = [];
    await waitFor(() => (seen.push(quick.storeHealthy), store.certs.size === 2), 2000, 'stored');
    expect(seen.every(Boolean)).toBe(true);
    await quick.close();
  });

  // How cheap record() is belongs to the benchmark; here: 100k records queue without a flush and all arrive.
  it('record() queues 100k records without writing, and close() writes them all', async () => {
    const store = new MemoryStore();
    const rec = new InventoryRecorder(store, { flushIntervalMs: SLOW, batchSize: 1_000_000 });
    const recs = Array.from({ length: 100_000 }, (_, i) => makeRecord(i));
    for (const r of recs) rec.record(r);
    expect(rec.backlog).toBe(100_000);
    expect(rec.canAccept()).toBe(false); // default maxBuffer 100k
    await rec.close();
    expect(store.certs.size).toBe(100_000);
  });
});

describe('InventoryRecorder.recordDurable (inventory.failClosed: answered once stored)', () => {
  it('resolves only once the batch holding the record is stored, without waiting for the interval', async () => {
    const store = new MemoryStore();
    store.delayMs = 50;
    const rec = new InventoryRecorder(store, { flushIntervalMs: SLOW });
    let kept = false;
    const p = rec.recordDurable(makeRecord(1)).then(() => (kept = true));
    await sleep(20);
    expect(kept).toBe(false); // the write is under way, not done
    await p;
    expect(store.certs.has(makeRecord(1).fingerprint)).toBe(true);
    await rec.close();
  });

  it('records arriving while a write is in flight go in the next write together (group commit)', async () => {
    const store = new MemoryStore();
    store.delayMs = 30;
    const rec = new InventoryRecorder(store, { flushIntervalMs: SLOW });
    const first = rec.recordDurable(makeRecord(0));
    await sleep(5);
    const rest = Array.from({ length: 50 }, (_, i) => rec.recordDurable(makeRecord(i + 1)));
    await Promise.all([first, ...rest]);
    expect(store.calls.filter((c) => c.kind === 'certs').map((c) => c.n)).toEqual([1, 50]);
    await rec.close();
  });

  it('a record the store refuses as data rejects its caller only; the others of its batch are stored', async () => {
    const store = new MemoryStore();
    const rec = new InventoryRecorder(store, { flushIntervalMs: SLOW });
    store.poison.add(makeRecord(2).fingerprint);
    store.delayMs = 20;
    const first = rec.recordDurable(makeRecord(0));
    await sleep(5);
    const outcomes = await Promise.allSettled([1, 2, 3].map((i) => rec.recordDurable(makeRecord(i))));
    await first;
    expect(outcomes.map((o) => o.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect((outcomes[1] as PromiseRejectedResult).reason).toBeInstanceOf(InventoryDataError);
    expect(store.certs.size).toBe(3);
    await rec.close();
  });

  it('waits through an outage and resolves once a retry stores it', async () => {
    const store = new MemoryStore();
    store.down = true;
    const rec = new InventoryRecorder(store, { flushIntervalMs: SLOW, retryInitialMs: 10, retryMaxMs: 20 });
    let kept = false;
    const p = rec.recordDurable(makeRecord(1)).then(() => (kept = true));
    await sleep(60);
    expect(kept).toBe(false);
    expect(rec.storeHealthy).toBe(false);
    store.down = false;
    await p;
    expect(store.certs.size).toBe(1);
    await rec.close();
  });

  it('settles also when the write it starts fails synchronously (a store whose insert throws before returning a promise)', async () => {
    const store = new MemoryStore();
    store.insertMany = (records: readonly CertificateRecord[]): Promise<void> => {
      if (records.length > 0) throw new InventoryDataError('refused at once');
      return Promise.resolve();
    };
    // batchSize 1: record() itself starts the write.
    const rec = new InventoryRecorder(store, { batchSize: 1, flushIntervalMs: SLOW });
    await expect(rec.recordDurable(makeRecord(1))).rejects.toBeInstanceOf(InventoryDataError);
    await rec.close();
  });

  it('rejects when close() gives up before writing it, when dropped past hardLimit, and at once when malformed or closed', async () => {
    const store = new MemoryStore();
    store.down = true;
    const rec = new InventoryRecorder(store, { maxBuffer: 2, hardLimit: 2, flushIntervalMs: SLOW, retryInitialMs: 10, retryMaxMs: 20 });
    const inFlight = rec.recordDurable(makeRecord(1));
    await sleep(5); // its batch is taken (and failing); the next two queue behind it
    const queued = rec.recordDurable(makeRecord(2));
    const abandoned = rec.recordDurable(makeRecord(3)); // the buffer is full: record 2, not yet in a batch, is dropped
    await expect(queued).rejects.toBeInstanceOf(InventoryOverflowError);
    await expect(rec.recordDurable(makeRecord(4, { fingerprint: 'nope' }))).rejects.toBeInstanceOf(TypeError);
    await expect(rec.close({ deadlineMs: 100 })).rejects.toBeInstanceOf(InventoryFlushTimeoutError);
    await expect(inFlight).rejects.toBeInstanceOf(InventoryFlushTimeoutError);
    await expect(abandoned).rejects.toBeInstanceOf(InventoryFlushTimeoutError);
    await expect(rec.recordDurable(makeRecord(5))).rejects.toThrow(/closed/);
  });
});

describe('InventoryRecorder with SQLite', () => {
  it('close() flushes a non-empty buffer: nothing lost', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'meshcert-rec-'));
    try {
      const store = await openStore({ kind: 'sqlite', path: join(dir, 'inv.db') });
      const rec = new InventoryRecorder(store, { flushIntervalMs: SLOW });
      for (let i = 0; i < 1234; i++) rec.record(makeRecord(i));
      rec.recordAudit({ at: new Date(T0), requester: null, identity: null, cluster: null, decision: 'issued' });
      expect(rec.backlog).toBeGreaterThan(0);
      await rec.close();
      await store.close();
      const reopened = await openStore({ kind: 'sqlite', path: join(dir, 'inv.db') });
      expect(await reopened.count()).toBe(1234);
      await reopened.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

const pgSkip = pgSkipReason();
describe.skipIf(pgSkip !== null)(`InventoryRecorder with PostgreSQL${pgSkip !== null ? ` (SKIPPED: ${pgSkip})` : ''}`, () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase('recorder');
  });
  afterAll(async () => {
    await db?.drop();
  });

  it('close() flushes a non-empty buffer: nothing lost', async () => {
    const store = await openStore({ kind: 'postgres', url: db.url });
    const rec = new InventoryRecorder(store, { flushIntervalMs: SLOW });
    for (let i = 0; i < 1234; i++) rec.record(makeRecord(`close-${i}`));
    expect(rec.backlog).toBeGreaterThan(0);
    await rec.close();
    await store.close();
    const reopened = await openStore({ kind: 'postgres', url: db.url });
    expect(await reopened.count()).toBe(1234);
    await reopened.close();
  });
});

const outageSkip = pgSkip ?? dedicatedClusterSkipReason();
describe.skipIf(outageSkip !== null)(`InventoryRecorder PostgreSQL outage${outageSkip !== null ? ` (SKIPPED: ${outageSkip})` : ''}`, () => {
  // A private cluster: stopping the shared one would break test files running in parallel.
  let cluster: PgCluster;
  let db: TestDatabase;
  beforeAll(async () => {
    cluster = await startDedicatedCluster();
    db = await createTestDatabase('outage', cluster.url);
  });
  afterAll(async () => {
    if (cluster) await destroyDedicatedCluster(cluster);
  });

  it('keeps recording while the server is down and stores every record exactly once after it returns', async () => {
    const store = await openStore({ kind: 'postgres', url: db.url, connectionTimeoutMs: 1000, queryTimeoutMs: 5000 });
    const errors: Error[] = [];
    const rec = new InventoryRecorder(store, {
      batchSize: 200,
      flushIntervalMs: 50,
      retryInitialMs: 50,
      retryMaxMs: 300,
      onError: (e) => errors.push(e),
    });
    const fingerprints: string[] = [];
    let n = 0;
    const produce = (): void => {
      for (let i = 0; i < 25; i++) {
        const r = makeRecord(`outage-${n++}`, { notAfter: new Date(T0 + n) });
        rec.record(r);
        fingerprints.push(r.fingerprint);
      }
    };
    const producer = setInterval(produce, 5);
    try {
      await sleep(700);
      expect(rec.storeHealthy).toBe(true);
      await stopPostgres(cluster);
      const atStop = fingerprints.length;
      await waitFor(() => !rec.storeHealthy, 5000, 'storeHealthy false');
      await sleep(1000);
      expect(fingerprints.length).toBeGreaterThan(atStop); // recording went on
      const backlogDown = rec.backlog;
      expect(backlogDown).toBeGreaterThan(0);
      await sleep(300);
      expect(rec.backlog).toBeGreaterThan(backlogDown); // and the backlog grows
      await startPostgres(cluster);
      await sleep(500);
    } finally {
      clearInterval(producer);
    }
    await rec.close({ deadlineMs: 15_000 });
    expect(rec.storeHealthy).toBe(true);
    expect(rec.backlog).toBe(0);
    expect(errors.length).toBeGreaterThan(0);

    const check = new pg.Client({ connectionString: db.url });
    await check.connect();
    try {
      const { rows } = await check.query<{ fingerprint: string }>('SELECT fingerprint FROM inventory_certificates');
      const stored = rows.map((r) => r.fingerprint).sort();
      expect(stored.length).toBe(fingerprints.length);
      expect(stored).toEqual([...fingerprints].sort());
    } finally {
      await check.end();
      await store.close();
    }
  }, 30_000);
});
