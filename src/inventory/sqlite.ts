/**
 * SQLite inventory store (better-sqlite3, WAL). For a single replica: the file lives on the
 * replica's volume.
 *
 * better-sqlite3 is synchronous, and a batch of a few thousand rows with its index updates (plus
 * the fsync of an occasional WAL checkpoint) can take tens to hundreds of milliseconds on a slow
 * disk. Run on the main thread, that would stall every in-flight issuance. So the database lives
 * in a dedicated worker thread: this class only builds SQL and parameters (shared with the
 * PostgreSQL store, see common.ts) and exchanges messages with the worker; the event loop never
 * waits on SQLite. The worker is a small self-contained CommonJS script (WORKER_SOURCE) started with
 * `eval: true`, so it works the same from TypeScript sources (tests) and from compiled dist/.
 *
 * Timestamps are stored as INTEGER milliseconds since the epoch; dns_names as JSON text.
 */
import { closeSync, constants, existsSync, fchmodSync, fstatSync, mkdirSync, openSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, resolve } from 'node:path';
import { Worker } from 'node:worker_threads';
import { notRegular } from '../fs/read-file.js';
import {
  AUDIT_COLUMNS,
  AUDIT_TABLE,
  PRUNE_BATCH,
  pruneInBatches,
  CERT_COLUMNS,
  CERT_TABLE,
  DISCOVERED_EXPIRING_SQL,
  PLACES_SQL,
  rowToPlace,
  discoveryTablesSql,
  NOT_STILL_SERVED,
  PLACES_TABLE,
  PRUNE_SIGHTINGS_SQL,
  SIGHTINGS_TABLE,
  GET_SQL,
  LATEST_PER_IDENTITY_SQL,
  LATEST_PER_IDENTITY_UNDER_FRACTION_SQL,
  MIGRATIONS_TABLE,
  assertSchemaCurrent,
  assertSchemaNotNewer,
  buildListQuery,
  dnsNamesJson,
  getParams,
  pageOf,
  prepareAudit,
  rowToDiscovered,
  splitSnapshots,
  rowToRecord,
  validateRecords,
  validateSnapshots,
  type CertRow,
} from './common.js';
import {
  InventoryDataError,
  type AuditEvent,
  type CertificateFilter,
  type CertificateRecord,
  type DiscoveredCertificate,
  type PlaceSummary,
  type InventoryStore,
  type RecordSource,
  type Snapshot,
  type LatestPerIdentityOptions,
  type Page,
} from './types.js';

export interface SqliteStoreOptions {
  /** Database file; its parent directory is created (0700) and the file is 0600. ':memory:' for a private in-memory store. */
  path: string;
  /** How long a write waits for another connection's lock (SQLITE_BUSY), default 5000 ms. */
  busyTimeoutMs?: number;
  /**
   * A worker thread that died (an uncaught error in it, or its heap limit) is started again on
   * the next call, but not sooner than this after its death, default 1000 ms: the recorder's
   * retries then succeed rather than failing for the life of the process. Not for ':memory:'
   * (its data died with the thread).
   */
  respawnDelayMs?: number;
  /**
   * For commands that only read (`certs`): the file must exist and is opened read-only, nothing
   * is created or chmod-ed, and migrate() checks the schema is current instead of changing it.
   */
  readOnly?: boolean;
  /**
   * inventory.failClosed: a committed write survives a power loss too (`synchronous = FULL`: each
   * commit syncs the WAL; durable records are committed in groups, so that is one sync per group),
   * and the thread keeps the serving threads' priority, since every answer now waits for it.
   */
  durable?: boolean;
}

/** Schema versions, applied in order, in the migration transaction. Never edit one that shipped. */
const MIGRATIONS: readonly { version: number; statements: readonly string[] }[] = [
  {
    version: 1,
    statements: [
      `CREATE TABLE ${CERT_TABLE} (
        fingerprint TEXT PRIMARY KEY NOT NULL,
        serial TEXT NOT NULL,
        spiffe_id TEXT,
        namespace TEXT,
        service_account TEXT,
        cluster TEXT,
        issuer TEXT NOT NULL,
        key_algorithm TEXT NOT NULL,
        key_size INTEGER NOT NULL,
        not_before INTEGER NOT NULL,
        not_after INTEGER NOT NULL,
        issued_at INTEGER NOT NULL,
        requester TEXT,
        policy_rule TEXT,
        source TEXT NOT NULL,
        subject TEXT,
        dns_names TEXT NOT NULL DEFAULT '[]'
      )`,
      `CREATE INDEX ${CERT_TABLE}_serial ON ${CERT_TABLE} (serial)`,
      `CREATE INDEX ${CERT_TABLE}_not_after ON ${CERT_TABLE} (not_after, fingerprint)`,
      `CREATE INDEX ${CERT_TABLE}_namespace ON ${CERT_TABLE} (namespace, not_after, fingerprint)`,
      `CREATE INDEX ${CERT_TABLE}_spiffe ON ${CERT_TABLE} (spiffe_id, issued_at DESC)`,
      `CREATE TABLE ${AUDIT_TABLE} (
        id TEXT PRIMARY KEY NOT NULL,
        at INTEGER NOT NULL,
        requester TEXT,
        identity TEXT,
        cluster TEXT,
        decision TEXT NOT NULL CHECK (decision IN ('issued', 'refused')),
        code TEXT,
        reason TEXT,
        serial TEXT
      )`,
      `CREATE INDEX ${AUDIT_TABLE}_at ON ${AUDIT_TABLE} (at)`,
    ],
  },
  {
    // Discovery's places and what each served when last read (see common.ts).
    version: 2,
    statements: discoveryTablesSql({ text: 'TEXT', time: 'INTEGER', now: "CAST(strftime('%s', 'now') AS INTEGER) * 1000", least: 'min' }),
  },
];

/** Places forgotten per transaction (forgetPlaces), and its two statements per place. */
const FORGET_CHUNK = 5_000;
const FORGET_SIGHTINGS_SQL = `DELETE FROM ${SIGHTINGS_TABLE} WHERE source = ?`;
const FORGET_PLACE_SQL = `DELETE FROM ${PLACES_TABLE} WHERE source = ?`;

const INSERT_CERT_SQL =
  `INSERT INTO ${CERT_TABLE} (${CERT_COLUMNS.join(', ')}) VALUES (${CERT_COLUMNS.map(() => '?').join(', ')}) ` +
  'ON CONFLICT (fingerprint) DO NOTHING';
const INSERT_AUDIT_SQL =
  `INSERT INTO ${AUDIT_TABLE} (${AUDIT_COLUMNS.join(', ')}) VALUES (${AUDIT_COLUMNS.map(() => '?').join(', ')}) ` +
  'ON CONFLICT (id) DO NOTHING';
const UPSERT_PLACE_SQL = `INSERT INTO ${PLACES_TABLE} (source, seen_at) VALUES (?, ?) ON CONFLICT (source) DO UPDATE SET seen_at = max(seen_at, excluded.seen_at)`;
/** An empty snapshot of a place already known (one never seen holding a certificate is no place to keep). */
const EMPTY_PLACE_SQL = `UPDATE ${PLACES_TABLE} SET seen_at = max(seen_at, ?) WHERE source = ?`;
const UPSERT_SIGHTING_SQL =
  `INSERT INTO ${SIGHTINGS_TABLE} (source, fingerprint, seen_at) VALUES (?, ?, ?) ` +
  'ON CONFLICT (source, fingerprint) DO UPDATE SET seen_at = max(seen_at, excluded.seen_at)';
const MIGRATIONS_TABLE_SQL = `CREATE TABLE IF NOT EXISTS ${MIGRATIONS_TABLE} (version INTEGER PRIMARY KEY NOT NULL, applied_at INTEGER NOT NULL)`;

/** WAL pages between automatic checkpoints (see the worker source). */
export const WAL_AUTOCHECKPOINT_PAGES = 10_000;
/** Scheduling priority of the store's thread on Linux (see the worker source). */
export const STORE_THREAD_NICE = 5;

/**
 * Switches the connection to WAL. That takes an exclusive lock, and when two connections try it
 * together (two processes opening a fresh inventory at the same moment) each holds the shared lock
 * the other waits for: SQLite answers SQLITE_BUSY at once, without its busy handler, to avoid the
 * deadlock. So retry, with a short random pause, for as long as busy_timeout would have waited.
 * Runs inside the worker (its source is copied into WORKER_SOURCE): plain JavaScript, no imports,
 * and no nested functions (a bundler's keep-names helper would follow them into the worker).
 */
export function setWalMode(db: { pragma(sql: string): unknown }, timeoutMs: number): void {
  const deadline = Date.now() + timeoutMs;
  const pause = new Int32Array(new SharedArrayBuffer(4));
  for (;;) {
    try {
      db.pragma('journal_mode = WAL');
      return;
    } catch (err) {
      // SQLITE_BUSY, or an extended code of it (better-sqlite3 turns extended codes on).
      if (!String((err as { code?: unknown } | null)?.code).startsWith('SQLITE_BUSY') || Date.now() >= deadline) throw err;
      Atomics.wait(pause, 0, 0, 5 + Math.floor(Math.random() * 10));
    }
  }
}

/**
 * The worker: owns the connection, runs what it is sent, answers { id, result } or
 * { id, error: { message, code, name } } (error `code`s do not survive structured clone).
 * Plain CommonJS on purpose (see the module comment).
 */
const WORKER_SOURCE = String.raw`
'use strict';
const WAL_AUTOCHECKPOINT_PAGES = ${WAL_AUTOCHECKPOINT_PAGES};
const THREAD_NICE = ${STORE_THREAD_NICE};
const { parentPort, workerData } = require('node:worker_threads');
// Inventory writes are background work: this thread runs at a lower priority (nice 5) than the
// threads serving calls, so a WAL checkpoint's burst yields the CPU to them. At full load it still
// gets about a fifth of a core from the scheduler, twice what the inserts need at 5,000/s.
// Linux only (a thread's id is its /proc/thread-self name); elsewhere it keeps the default.
// Not so with inventory.failClosed (workerData.durable): every answer then waits for this thread.
let threadId = null;
try {
  threadId = Number(require('node:fs').readlinkSync('/proc/thread-self').split('/').pop());
  if (!workerData.durable) require('node:os').setPriority(threadId, THREAD_NICE);
} catch (_) {}
${setWalMode.toString()}
let db = null;
let openError = null;
try {
  const Database = require(workerData.modulePath);
  db = new Database(workerData.path, workerData.readOnly ? { readonly: true, fileMustExist: true } : undefined);
  db.pragma('busy_timeout = ' + workerData.busyTimeoutMs);
  if (!workerData.readOnly) {
    setWalMode(db, workerData.busyTimeoutMs);
    db.pragma(workerData.durable ? 'synchronous = FULL' : 'synchronous = NORMAL');
    // Checkpoint every 10000 WAL pages (about 40 MB), not SQLite's 1000: certificate inserts touch
    // random pages of five indexes, so a page is often written again before the next checkpoint,
    // and each checkpoint copies it back only once. Measured under full load: 24 instead of 31 µs
    // of this thread per certificate. The WAL file stays at its largest size (it is reused).
    db.pragma('wal_autocheckpoint = ' + WAL_AUTOCHECKPOINT_PAGES);
  }
} catch (err) {
  openError = err;
  if (db) { try { db.close(); } catch (_) {} db = null; }
}
const cache = new Map();
function stmt(sql) {
  let s = cache.get(sql);
  if (s === undefined) {
    if (cache.size >= 256) cache.clear();
    s = db.prepare(sql);
    cache.set(sql, s);
  }
  return s;
}
const ops = {
  all(sql, params) { return stmt(sql).all(...params); },
  get(sql, params) { const row = stmt(sql).get(...params); return row === undefined ? null : row; },
  run(sql, params) { return stmt(sql).run(...params).changes; },
  batch(sql, rows) {
    ops.batches([[sql, rows]]);
    return null;
  },
  batches(list) {
    // One transaction; the rows each statement changed, in order.
    return db.transaction(() => list.map(([sql, rows]) => { const s = stmt(sql); let n = 0; for (const r of rows) n += s.run(...r).changes; return n; })).immediate();
  },
  schemaVersion(table) {
    const exists = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?").get(table);
    return exists ? (db.prepare('SELECT MAX(version) AS v FROM ' + table).get().v ?? 0) : null;
  },
  migrate(createSql, table, migrations) {
    // BEGIN IMMEDIATE takes the write lock up front: two connections migrating one file serialise.
    db.transaction(() => {
      db.exec(createSql);
      const applied = new Set(db.prepare('SELECT version FROM ' + table).all().map((r) => r.version));
      const record = db.prepare('INSERT INTO ' + table + ' (version, applied_at) VALUES (?, ?)');
      for (const m of migrations) {
        if (applied.has(m.version)) continue;
        for (const sql of m.statements) db.exec(sql);
        record.run(m.version, Date.now());
      }
    }).immediate();
    cache.clear();
    return null;
  },
  thread() {
    let nice = null;
    try { nice = threadId === null ? null : require('node:os').getPriority(threadId); } catch (_) {}
    return { threadId, nice };
  },
  close() {
    if (db) { cache.clear(); db.close(); db = null; }
    if (openError === null) openError = new Error('inventory store is closed');
    return null;
  },
};
parentPort.on('message', (m) => {
  try {
    if (db === null && m.op !== 'close') throw openError || new Error('inventory store is closed');
    parentPort.postMessage({ id: m.id, result: ops[m.op](...m.args) });
  } catch (err) {
    const e = err || {};
    parentPort.postMessage({
      id: m.id,
      error: { message: String(e.message || e), code: typeof e.code === 'string' ? e.code : null, name: String(e.name || 'Error') },
    });
  }
});
`;

type Op = 'all' | 'get' | 'run' | 'batch' | 'batches' | 'migrate' | 'schemaVersion' | 'thread' | 'close';

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
}

function sqliteParam(v: unknown): unknown {
  return v instanceof Date ? v.getTime() : v;
}

/** Constraint and type errors are properties of the data; everything else (busy, full, I/O) is transient. */
function classify(err: Error & { code?: string | null }): Error {
  const code = err.code;
  if (
    err.name === 'TypeError' ||
    err.name === 'RangeError' ||
    (typeof code === 'string' && (code.startsWith('SQLITE_CONSTRAINT') || code === 'SQLITE_MISMATCH' || code === 'SQLITE_TOOBIG'))
  ) {
    return new InventoryDataError('the inventory database rejected the batch', { cause: err });
  }
  return err;
}

/**
 * Creates the database file's folder (0700) and its missing parents. mkdir's own EEXIST/ENOTDIR
 * names neither the path in the way nor what it is, so a file where a folder should be (a stray
 * `.meshcert` file, say) is said as such.
 */
function makeParentDirectory(file: string): void {
  try {
    mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'EEXIST' && code !== 'ENOTDIR') throw e;
    let dir = dirname(file);
    while (dirname(dir) !== dir && !existsSync(dir)) dir = dirname(dir);
    throw new Error(`${dir} is not a directory (the inventory's file ${file} is to be created under it): move it, or set inventory.path or dataDir elsewhere`, { cause: e });
  }
}

export class SqliteInventoryStore implements InventoryStore {
  readonly kind = 'sqlite' as const;
  private worker!: Worker;
  private readonly workerData: { modulePath: string; path: string; busyTimeoutMs: number; readOnly: boolean; durable: boolean };
  private readonly readOnly: boolean;
  private readonly respawnDelayMs: number;
  private diedAt = 0;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private closed = false;
  private dead: Error | null = null;
  private closing: Promise<void> | null = null;

  constructor(options: SqliteStoreOptions) {
    const path = options.path;
    this.readOnly = options.readOnly === true;
    if (path !== ':memory:' && path !== '') {
      const abs = resolve(path);
      if (this.readOnly) {
        // Opened as it is, never created; but a named pipe would block the open all the same.
        if (existsSync(abs)) assertRegularFile(abs);
      } else {
        makeParentDirectory(abs);
        prepareDatabaseFile(abs);
      }
    }
    this.workerData = {
      modulePath: createRequire(import.meta.url).resolve('better-sqlite3'),
      path: path === ':memory:' || path === '' ? path : resolve(path),
      busyTimeoutMs: Math.max(0, Math.floor(options.busyTimeoutMs ?? 5000)),
      readOnly: this.readOnly,
      durable: options.durable === true,
    };
    this.respawnDelayMs = options.respawnDelayMs ?? 1000;
    this.spawn();
  }

  private spawn(): void {
    const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: this.workerData });
    this.worker = worker;
    this.dead = null;
    // Referenced only while a request is outstanding: an idle store never keeps the process alive.
    worker.unref();
    worker.on('message', (m: { id: number; result?: unknown; error?: { message: string; code: string | null; name: string } }) => {
      const p = this.pending.get(m.id);
      if (p === undefined) return;
      this.pending.delete(m.id);
      if (this.pending.size === 0) worker.unref();
      if (m.error !== undefined) {
        const e = Object.assign(new Error(m.error.message), { code: m.error.code });
        e.name = m.error.name;
        p.reject(e);
      } else {
        p.resolve(m.result);
      }
    });
    const fail = (err: Error): void => {
      if (this.worker !== worker || this.dead !== null) return;
      this.dead = err;
      this.diedAt = performance.now();
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
    };
    worker.on('error', (err) => fail(err));
    worker.on('exit', (code) => fail(new Error(`inventory sqlite worker exited (code ${code})`)));
  }

  private call<T>(op: Op, ...args: unknown[]): Promise<T> {
    if (this.closed && op !== 'close') return Promise.reject(new Error('inventory store is closed'));
    if (this.dead !== null) {
      const inMemory = this.workerData.path === ':memory:' || this.workerData.path === '';
      if (this.closed || inMemory || performance.now() - this.diedAt < this.respawnDelayMs) return Promise.reject(this.dead);
      this.spawn();
    }
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      if (this.pending.size === 1) this.worker.ref();
      this.worker.postMessage({ id, op, args });
    });
  }

  async migrate(): Promise<void> {
    const version = await this.call<number | null>('schemaVersion', MIGRATIONS_TABLE);
    if (this.readOnly) return assertSchemaCurrent(version, MIGRATIONS);
    assertSchemaNotNewer(version, MIGRATIONS);
    await this.call('migrate', MIGRATIONS_TABLE_SQL, MIGRATIONS_TABLE, MIGRATIONS);
  }

  async insertMany(records: readonly CertificateRecord[]): Promise<void> {
    if (records.length === 0) return;
    validateRecords(records);
    const rows = records.map((r) => [
      r.fingerprint,
      r.serial,
      r.spiffeId,
      r.namespace,
      r.serviceAccount,
      r.cluster,
      r.issuer,
      r.keyAlgorithm,
      r.keySize,
      r.notBefore.getTime(),
      r.notAfter.getTime(),
      r.issuedAt.getTime(),
      r.requester,
      r.policyRule,
      r.source,
      r.subject ?? null,
      dnsNamesJson(r),
    ]);
    try {
      await this.call('batch', INSERT_CERT_SQL, rows);
    } catch (err) {
      throw classify(err as Error);
    }
  }

  async insertAudit(events: readonly AuditEvent[]): Promise<void> {
    if (events.length === 0) return;
    const rows = prepareAudit(events).map((e) => [
      e.id,
      e.at.getTime(),
      e.requester,
      e.identity,
      e.cluster,
      e.decision,
      e.code ?? null,
      e.reason ?? null,
      e.serial ?? null,
    ]);
    try {
      await this.call('batch', INSERT_AUDIT_SQL, rows);
    } catch (err) {
      throw classify(err as Error);
    }
  }

  async get(serialOrFingerprint: string): Promise<CertificateRecord | null> {
    const params = getParams(serialOrFingerprint);
    if (params === null) return null;
    const row = await this.call<CertRow | null>('get', GET_SQL, params);
    return row === null ? null : rowToRecord(row);
  }

  async list(filter: CertificateFilter): Promise<Page<CertificateRecord>> {
    const q = buildListQuery(filter);
    const rows = await this.call<CertRow[]>('all', q.sql, q.params.map(sqliteParam));
    return pageOf(rows.map(rowToRecord), q.limit);
  }

  async count(): Promise<number> {
    const row = await this.call<{ n: number }>('get', `SELECT count(*) AS n FROM ${CERT_TABLE}`, []);
    return row.n;
  }

  async latestPerIdentity(expiringBefore: Date, now: Date, options: LatestPerIdentityOptions = {}): Promise<CertificateRecord[]> {
    const f = options.maxRemainingFraction;
    const rows =
      f === undefined
        ? await this.call<CertRow[]>('all', LATEST_PER_IDENTITY_SQL, [now.getTime(), expiringBefore.getTime()])
        : await this.call<CertRow[]>('all', LATEST_PER_IDENTITY_UNDER_FRACTION_SQL, [now.getTime(), expiringBefore.getTime(), now.getTime(), f]);
    return rows.map(rowToRecord);
  }

  async recordSnapshots(snapshots: readonly Snapshot[], at: Date): Promise<void> {
    if (snapshots.length === 0) return;
    validateSnapshots(snapshots, at);
    const t = at.getTime();
    const { held, empty } = splitSnapshots(snapshots);
    const sightings = snapshots.flatMap((x) => x.fingerprints.map((f) => [x.source, f, t]));
    try {
      await this.call('batches', [
        [UPSERT_PLACE_SQL, held.map((source) => [source, t])],
        [EMPTY_PLACE_SQL, empty.map((source) => [t, source])],
        [UPSERT_SIGHTING_SQL, sightings],
      ]);
    } catch (err) {
      throw classify(err as Error);
    }
  }

  async discoveredExpiring(expiringBefore: Date): Promise<DiscoveredCertificate[]> {
    const rows = await this.call<Array<CertRow & { seen_source: string; seen_at: number }>>('all', DISCOVERED_EXPIRING_SQL, [expiringBefore.getTime()]);
    return rows.map(rowToDiscovered);
  }

  async forgetPlaces<S extends RecordSource>(sources: readonly S[]): Promise<S[]> {
    const unique = [...new Set(sources)];
    const known = new Set<S>();
    // Two statements per place, a transaction per chunk: their counts say which places were known,
    // and a running server's writes wait for one chunk (about 0.1 s), not for every place.
    for (let i = 0; i < unique.length; i += FORGET_CHUNK) {
      const chunk = unique.slice(i, i + FORGET_CHUNK);
      const changed = await this.call<number[]>(
        'batches',
        chunk.flatMap((s) => [
          [FORGET_SIGHTINGS_SQL, [[s]]],
          [FORGET_PLACE_SQL, [[s]]],
        ]),
      );
      chunk.forEach((s, j) => {
        if (changed[2 * j]! + changed[2 * j + 1]! > 0) known.add(s);
      });
    }
    return sources.filter((s) => known.has(s));
  }

  async places(prefix: `discovered:${string}`): Promise<PlaceSummary[]> {
    const rows = await this.call<Array<Parameters<typeof rowToPlace>[0]>>('all', PLACES_SQL, [prefix, prefix]);
    return rows.map(rowToPlace);
  }

  async pruneExpired(before: Date): Promise<number> {
    const n = await this.pruneBatches(`DELETE FROM ${CERT_TABLE} WHERE rowid IN (SELECT rowid FROM ${CERT_TABLE} c WHERE c.not_after < ? AND ${NOT_STILL_SERVED('c')} LIMIT ${PRUNE_BATCH})`, before);
    if (n > 0) await this.call<number>('run', PRUNE_SIGHTINGS_SQL, []);
    return n;
  }

  async pruneAudit(before: Date): Promise<number> {
    return this.pruneBatches(`DELETE FROM ${AUDIT_TABLE} WHERE rowid IN (SELECT rowid FROM ${AUDIT_TABLE} WHERE at < ? LIMIT ${PRUNE_BATCH})`, before);
  }

  /** One call per batch: the store's other calls run between them. */
  private pruneBatches(sql: string, before: Date): Promise<number> {
    return pruneInBatches(() => this.call<number>('run', sql, [before.getTime()]));
  }

  async ping(): Promise<void> {
    await this.call('get', 'SELECT 1 AS ok', []);
  }

  /** The connection's journal settings and the store thread's priority (diagnostics and tests: none is stored in the file). */
  async settings(): Promise<{ journalMode: string; synchronous: number; walAutocheckpoint: number; busyTimeoutMs: number; threadNice: number | null }> {
    const one = async <T>(pragma: string): Promise<T> => Object.values((await this.call<Record<string, T>>('get', `PRAGMA ${pragma}`, []))!)[0]!;
    return {
      journalMode: await one<string>('journal_mode'),
      synchronous: await one<number>('synchronous'),
      walAutocheckpoint: await one<number>('wal_autocheckpoint'),
      busyTimeoutMs: await one<number>('busy_timeout'),
      threadNice: (await this.call<{ nice: number | null }>('thread')).nice,
    };
  }

  /** Waits for outstanding requests, closes the database, stops the worker. Idempotent. */
  close(): Promise<void> {
    if (this.closing !== null) return this.closing;
    // A dead thread has nothing to close: no new one just for that.
    const closeReq = this.dead !== null ? Promise.resolve() : this.call('close');
    this.closed = true;
    this.closing = closeReq
      .catch(() => undefined)
      .then(async () => {
        await this.worker.terminate();
      });
    return this.closing;
  }
}

/**
 * Creates the database file 0600 before SQLite does (SQLite gives its -wal/-shm files the same
 * mode). One that exists is left with the mode its owner gave it (a mistyped path must not change
 * another file's), but must be a regular file: SQLite's open of a named pipe would block the
 * process, and a device is no database.
 */
function prepareDatabaseFile(abs: string): void {
  try {
    const fd = openSync(abs, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
    try {
      fchmodSync(fd, 0o600); // whatever the umask
    } finally {
      closeSync(fd);
    }
    return;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
  }
  assertRegularFile(abs);
}

function assertRegularFile(abs: string): void {
  // Non-blocking: opening a named pipe must not wait for a writer.
  const fd = openSync(abs, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new Error(`the inventory database ${abs} is ${notRegular(st).message}`);
  } finally {
    closeSync(fd);
  }
}
