/**
 * The running inventory's retention: expired certificate records and old audit events are
 * pruned at start (and hourly), each by its own setting; auditRetention 0 keeps every event.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { TLSSocket } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { Registry } from 'prom-client';
import { createLogger } from '../../../src/log/logger.js';
import { InventoryMetrics } from '../../../src/metrics/ca-metrics.js';
import { openStore } from '../../../src/inventory/open.js';
import { InventoryOverflowError } from '../../../src/inventory/recorder.js';
import { inventoryErrorLog, InventoryService } from '../../../src/inventory/service.js';
import { InventoryDataError, type AuditEvent, type InventoryStore } from '../../../src/inventory/types.js';
import { makeRecord } from './fixtures.js';
import { closedPort } from '../auth/helpers.js';
import { createTestDatabase, dedicatedClusterSkipReason, destroyDedicatedCluster, pgInfo, pgSkipReason, startDedicatedCluster, startPostgres, stopPostgres } from '../../support/postgres-control.js';
import { captureLogs } from '../../support/log-capture.js';

const DAY = 86_400_000;
const dirs: string[] = [];
afterEach(() => dirs.splice(0).forEach((d) => rmSync(d, { recursive: true, force: true })));

async function seeded(): Promise<{ path: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'meshcert-inv-'));
  dirs.push(dir);
  const path = join(dir, 'inventory.db');
  const store: InventoryStore = await openStore({ kind: 'sqlite', path });
  const now = Date.now();
  const ev = (id: string, ageDays: number): AuditEvent => ({ id, at: new Date(now - ageDays * DAY), requester: null, identity: null, cluster: null, decision: 'refused', code: 'AUTH_INVALID' });
  await store.insertAudit([ev('old', 400), ev('recent', 10)]);
  await store.insertMany([makeRecord(1, { notAfter: new Date(now - 60 * DAY) }), makeRecord(2, { notAfter: new Date(now + DAY) })]);
  await store.close();
  return { path };
}

function auditIds(path: string): string[] {
  const db = new Database(path, { readonly: true });
  try {
    return (db.prepare('SELECT id FROM inventory_audit_events ORDER BY at').all() as { id: string }[]).map((r) => r.id);
  } finally {
    db.close();
  }
}

describe('InventoryService retention', () => {
  it.each([
    ['prunes audit events older than auditRetention, and expired records past retention', 365 * 86_400, ['recent']],
    ['keeps every audit event with auditRetention 0', 0, ['old', 'recent']],
  ])('%s', async (_name, auditRetention, kept) => {
    const { path } = await seeded();
    const svc = await InventoryService.open({ store: 'sqlite', path, failClosed: false, maxBuffer: 1000, retention: 30 * 86_400, auditRetention }, createLogger('silent'));
    // The SQLite store runs its calls in order: once the count sees the expired record gone, the
    // audit pruning sent with it has run too.
    await expect.poll(async () => svc!.store.count(), { timeout: 5_000 }).toBe(1);
    expect(auditIds(path)).toEqual(kept);
    await svc!.close();
  });
});

describe('InventoryService metrics', () => {
  it('counts the records, and says when it last did (the count keeps its value while the store cannot be queried)', async () => {
    const { path } = await seeded();
    const registry = new Registry();
    const metrics = new InventoryMetrics(registry);
    const before = Date.now() / 1000;
    const svc = (await InventoryService.open({ store: 'sqlite', path, failClosed: false, maxBuffer: 1000, retention: 0, auditRetention: 0 }, createLogger('silent'), metrics))!;
    try {
      const value = async (name: string): Promise<number> => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(await registry.getSingleMetricAsString(name))?.[1]);
      await expect.poll(() => value('meshcert_inventory_records_checked_timestamp_seconds'), { timeout: 5_000 }).toBeGreaterThanOrEqual(before);
      expect(await value('meshcert_inventory_records')).toBeGreaterThanOrEqual(1);
    } finally {
      await svc.close();
    }
  });
});

describe('InventoryService readiness', () => {
  it.each([
    [false, true],
    [true, false],
  ])('answers in time when the store does not (failClosed %s: ready %s), as a black-holed database would', async (failClosed, ready) => {
    const dir = mkdtempSync(join(tmpdir(), 'meshcert-inv-'));
    dirs.push(dir);
    const svc = (await InventoryService.open({ store: 'sqlite', path: join(dir, 'inventory.db'), failClosed, maxBuffer: 1000, retention: 30 * 86_400, auditRetention: 0 }, createLogger('silent')))!;
    try {
      expect(await svc.readiness(200)).toMatchObject({ ok: true, detail: expect.stringMatching(/^store reachable/) });
      const ping = svc.store.ping.bind(svc.store);
      svc.store.ping = () => new Promise<void>(() => {}); // never answers
      try {
        expect(await svc.readiness(200)).toEqual({ ok: ready, detail: 'store unreachable, buffering 0 records' });
      } finally {
        svc.store.ping = ping;
      }
    } finally {
      await svc.close();
    }
  });
});

describe('InventoryService readiness while the store answers but takes no records', () => {
  it.each([
    [false, true],
    [true, false],
  ])('failClosed %s: ready %s (every call would be refused)', async (failClosed, ready) => {
    const dir = mkdtempSync(join(tmpdir(), 'meshcert-inv-'));
    dirs.push(dir);
    const svc = (await InventoryService.open({ store: 'sqlite', path: join(dir, 'inventory.db'), failClosed, maxBuffer: 1000, retention: 30 * 86_400, auditRetention: 0 }, createLogger('silent')))!;
    const insertMany = svc.store.insertMany.bind(svc.store);
    try {
      // A full disk: writes fail, the ping (a read) still answers.
      svc.store.insertMany = () => Promise.reject(new Error('SQLITE_FULL: database or disk is full'));
      svc.record(makeRecord(1));
      await expect.poll(() => svc.recorder.storeHealthy, { timeout: 5_000 }).toBe(false);
      const r = await svc.readiness(1000);
      expect(r.ok).toBe(ready);
      expect(r.detail).toMatch(ready ? /^store reachable, backlog 1$/ : /^store reachable but not taking records \(writes failing or stalled, or the buffer full; backlog 1\): with inventory.failClosed every call is refused$/);
    } finally {
      svc.store.insertMany = insertMany;
      await svc.close();
    }
  });
});

describe('InventoryService with PostgreSQL unreachable at start', () => {
  const { lines, logger } = captureLogs();
  const options = (url: string, failClosed: boolean) => ({ store: 'postgres' as const, url, failClosed, maxBuffer: 1000, retention: 30 * 86_400, auditRetention: 0 });

  it.each([
    [false, true],
    [true, false],
  ])('starts anyway (failClosed %s: issuing and ready %s), keeping records in memory', async (failClosed, issuing) => {
    const svc = (await InventoryService.open(options(`postgres://meshcert@127.0.0.1:${await closedPort()}/inventory`, failClosed), logger))!;
    try {
      expect(svc.accepting()).toBe(issuing);
      // meshcert_inventory_store_up reads this: down from the start, not after the first failed write.
      expect(svc.recorder.storeHealthy).toBe(false);
      svc.record(makeRecord(1));
      expect(await svc.readiness(200)).toEqual({ ok: issuing, detail: 'store unreachable, buffering 1 records' });
      expect(lines.some((l) => l.level === 50 && /^inventory store unreachable at start/.test(String(l.msg)))).toBe(true);
    } finally {
      await svc.close(100).catch(() => {});
    }
    // What was still held is said as the shutdown begins, before a flush the pod may not outlive.
    expect(lines.find((l) => l.msg === 'writing what the inventory holds in memory before exiting')).toMatchObject({ records: 1, auditEvents: 0, deadlineSeconds: 0.1 });
  });

  it.skipIf(pgSkipReason() !== null)('still refuses to start on what an operator must fix (here: a database that does not exist)', async () => {
    const url = new URL(pgInfo().url!);
    url.pathname = '/meshcert_no_such_database';
    await expect(InventoryService.open(options(url.toString(), false), logger)).rejects.toThrow(/^cannot open the postgres inventory store: database "meshcert_no_such_database" does not exist$/);
  });

  it.skipIf(dedicatedClusterSkipReason() !== null)('migrates once the server answers and writes what it kept', async () => {
    const cluster = await startDedicatedCluster();
    try {
      const db = await createTestDatabase('late-start', cluster.url);
      await stopPostgres(cluster);
      const svc = (await InventoryService.open(options(db.url, false), logger))!;
      try {
        svc.record(makeRecord(7));
        expect(await svc.readiness(200)).toMatchObject({ ok: true, detail: 'store unreachable, buffering 1 records' });
        await startPostgres(cluster);
        await expect.poll(() => svc.store.count().catch(() => -1), { timeout: 30_000, interval: 250 }).toBe(1);
        expect(await svc.readiness(1000)).toMatchObject({ ok: true, detail: expect.stringMatching(/^store reachable/) });
        expect(lines.some((l) => /^inventory store reachable: migrations done/.test(String(l.msg)))).toBe(true);
      } finally {
        await svc.close();
      }
    } finally {
      await destroyDedicatedCluster(cluster);
    }
  }, 90_000);
});

describe('inventoryErrorLog', () => {
  it('logs each kind of failure at most once every 10 s, kinds not hiding each other', async () => {
    const lines: string[] = [];
    let t = 0;
    const log = inventoryErrorLog(createLogger('info', new Writable({ write: (c, _e, cb) => (lines.push(String(c)), cb()) })), () => t);
    log(new Error('connection refused'));
    log(new Error('connection refused'));
    // Audit events overflow first; certificate records a few seconds later are news of their own.
    log(new InventoryOverflowError('inventory buffer full (100 pending audit)', 'audit'));
    log(new InventoryDataError('certificate record discarded', { lane: 'certificates' }));
    t = 5_000;
    log(new InventoryOverflowError('inventory buffer full (100 pending audit)', 'audit'));
    log(new InventoryOverflowError('inventory buffer full (100 pending certificates)', 'certificates'));
    log(new InventoryDataError('audit event discarded', { lane: 'audit' }));
    t = 10_001;
    log(new Error('connection refused'));
    log(new InventoryOverflowError('inventory buffer full (100 pending certificates)', 'certificates'));
    await new Promise((r) => setTimeout(r, 300)); // the logger flushes on a timer
    expect(lines.map((l) => (JSON.parse(l) as { msg: string }).msg)).toEqual([
      'inventory write failed; records are kept in memory and retried',
      'inventory audit buffer full: the oldest unwritten audit events are being dropped (see meshcert_inventory_audit_events_lost_total{reason="dropped"})',
      'the inventory store refused an entry as invalid; it was discarded (see meshcert_inventory_rejected_records)',
      'inventory buffer full: the oldest unwritten certificate records are being dropped (see meshcert_inventory_dropped_records)',
      'the inventory store refused an audit event as invalid; it was discarded (see meshcert_inventory_audit_events_lost_total{reason="rejected"})',
      'inventory write failed; records are kept in memory and retried',
    ]);
  });
});

describe('InventoryService.open and a PostgreSQL server certificate that does not verify', () => {
  /** Answers PostgreSQL's SSLRequest with 'S' and a TLS handshake with `cert`, then hangs up: enough for the client to judge the certificate. */
  async function fakeTlsPostgres(key: string, cert: string): Promise<{ port: number; close: () => Promise<void> }> {
    const sockets = new Set<Socket>();
    const server = createServer((socket) => {
      sockets.add(socket);
      socket.once('data', () => {
        socket.write('S');
        const tls = new TLSSocket(socket, { isServer: true, key, cert });
        tls.on('error', () => socket.destroy());
        tls.once('secure', () => tls.destroy());
      });
      socket.on('error', () => undefined);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    return {
      port: (server.address() as AddressInfo).port,
      close: () => new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
    };
  }

  const OPTS = { failClosed: false, maxBuffer: 1000, retention: 0, auditRetention: 0 };

  it('says to name its CA with sslrootcert, and a URL that names it gets past the handshake', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'meshcert-pg-tls-'));
    const pg = await (async () => {
      execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'ca.crt'), '-days', '2', '-subj', '/CN=private postgres', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
      return fakeTlsPostgres(readFileSync(join(dir, 'key.pem'), 'utf8'), readFileSync(join(dir, 'ca.crt'), 'utf8'));
    })();
    try {
      const url = `postgres://meshcert:pw@127.0.0.1:${pg.port}/meshcert?sslmode=verify-full`;
      await expect(InventoryService.open({ store: 'postgres', url, ...OPTS }, createLogger('silent'))).rejects.toThrow(
        /^cannot open the postgres inventory store: self[- ]signed certificate \(DEPTH_ZERO_SELF_SIGNED_CERT: the PostgreSQL server's certificate does not chain to a CA Node trusts; name its CA in inventory\.url with sslrootcert=\/path\/to\/ca\.crt, or with NODE_EXTRA_CA_CERTS\)$/,
      );
      // Its CA named: the certificate verifies, and what fails is the connection the fake drops
      // (an outage at start, which serves anyway and retries).
      const { lines, logger } = captureLogs('error');
      const service = await InventoryService.open({ store: 'postgres', url: `${url}&sslrootcert=${join(dir, 'ca.crt')}`, ...OPTS }, logger);
      expect(service).toBeDefined();
      await expect.poll(() => lines.find((l) => String(l.msg).startsWith('inventory store unreachable at start: serving'))).toBeDefined();
      await service!.close(1000).catch(() => undefined);
    } finally {
      await pg.close();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 30_000);
});
