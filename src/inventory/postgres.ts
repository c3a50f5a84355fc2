/**
 * PostgreSQL inventory store (`pg` Pool). For several replicas sharing one database.
 *
 * - Migrations are versioned in `inventory_schema_migrations` and applied one per transaction,
 *   each holding a transaction-level advisory lock, so replicas starting together migrate once
 *   (also through a transaction-pooling PgBouncer: nothing here relies on session state, and
 *   statements are unnamed, since a named one is prepared on one server connection only).
 * - A batch is ONE statement (INSERT ... SELECT FROM unnest(arrays) ON CONFLICT (fingerprint)
 *   DO NOTHING): atomic, and a retry after a lost acknowledgement stores nothing twice.
 *   Rows are sorted by fingerprint so that two replicas inserting overlapping batches lock
 *   rows in the same order (no deadlock).
 * - Text columns use the "C" collation so that ordering matches the SQLite backend byte for byte.
 */
import pg from 'pg';
import {
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
  PRUNED_SIGHTINGS_PG,
  PLACES_TABLE,
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

export interface PostgresStoreOptions {
  /** libpq-style connection string, e.g. postgresql://user@host:5432/db */
  url: string;
  /** Pool size, default 10. The recorder uses one connection at a time; the rest serve reads. */
  poolSize?: number;
  /** How long to wait for a connection, default 5000 ms (fails fast while the server is down). */
  connectionTimeoutMs?: number;
  /** Client-side bound on any query, default 30000 ms (a hung network cannot stall the recorder). */
  queryTimeoutMs?: number;
  /** Errors of idle pooled connections (e.g. the server restarted). Without it they are ignored: the pool drops the client. */
  onPoolError?: (err: Error) => void;
  /**
   * For commands that only read (`certs`): migrate() checks the schema is current instead of
   * changing it, and writes are refused. A role with SELECT on the inventory tables (including
   * inventory_schema_migrations) will do.
   */
  readOnly?: boolean;
}

/** Two-int advisory lock key: 'mesh' and 'inv' as ASCII. */
const LOCK_KEY = [0x6d657368, 0x696e76] as const;
/**
 * Prune batches (shared) and discovery's snapshot writes (exclusive) take turns on this key
 * ('mesh', 'seen'): see pruneExpired.
 */
export const SIGHTINGS_LOCK_KEY = [0x6d657368, 0x7365656e] as const;

/**
 * Query values with Dates as UTC ISO text, as inserts write them: pg would send a Date in this
 * process's local time, with an offset rounded to the minute, shifting an instant whose zone then
 * had seconds in its offset (local mean time before 1900), so a cursor on it could return it again forever.
 */
function pgValues(values: readonly unknown[]): unknown[] {
  return values.map((v) => (v instanceof Date ? v.toISOString() : v));
}

const MIGRATION_TIMEOUT_MS = 10 * 60_000;

const C = 'COLLATE "C"';

/** Schema versions, applied in order, each in its own transaction. Never edit one that shipped. */
const MIGRATIONS: readonly { version: number; sql: string }[] = [
  {
    version: 1,
    sql: `
      CREATE TABLE ${CERT_TABLE} (
        fingerprint text ${C} PRIMARY KEY,
        serial text ${C} NOT NULL,
        spiffe_id text ${C},
        namespace text ${C},
        service_account text ${C},
        cluster text ${C},
        issuer text ${C} NOT NULL,
        key_algorithm text ${C} NOT NULL,
        key_size integer NOT NULL,
        not_before timestamptz NOT NULL,
        not_after timestamptz NOT NULL,
        issued_at timestamptz NOT NULL,
        requester text ${C},
        policy_rule text ${C},
        source text ${C} NOT NULL,
        subject text ${C},
        dns_names jsonb NOT NULL DEFAULT '[]'::jsonb
      );
      CREATE INDEX ${CERT_TABLE}_serial ON ${CERT_TABLE} (serial);
      CREATE INDEX ${CERT_TABLE}_not_after ON ${CERT_TABLE} (not_after, fingerprint);
      CREATE INDEX ${CERT_TABLE}_namespace ON ${CERT_TABLE} (namespace, not_after, fingerprint);
      CREATE INDEX ${CERT_TABLE}_spiffe ON ${CERT_TABLE} (spiffe_id, issued_at DESC);
      CREATE TABLE ${AUDIT_TABLE} (
        id text ${C} PRIMARY KEY,
        at timestamptz NOT NULL,
        requester text ${C},
        identity text ${C},
        cluster text ${C},
        decision text ${C} NOT NULL CHECK (decision IN ('issued', 'refused')),
        code text ${C},
        reason text ${C},
        serial text ${C}
      );
      CREATE INDEX ${AUDIT_TABLE}_at ON ${AUDIT_TABLE} (at);
    `,
  },
  {
    // Discovery's places and what each served when last read (see common.ts). New tables: the
    // certificate table is only read (no lock that blocks inserts, as an index on it would take).
    version: 2,
    sql: discoveryTablesSql({ text: `text ${C}`, time: 'timestamptz', now: 'now()', least: 'LEAST' }).join(';\n'),
  },
];

const INSERT_CERTS_SQL =
  `INSERT INTO ${CERT_TABLE} (${CERT_COLUMNS.join(', ')}) ` +
  'SELECT f, s, sp, ns, sa, cl, iss, ka, ks, nb, na, ia, rq, pr, src, subj, dn::jsonb FROM unnest(' +
  '$1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::int4[], ' +
  '$10::timestamptz[], $11::timestamptz[], $12::timestamptz[], $13::text[], $14::text[], $15::text[], $16::text[], $17::text[]' +
  ') AS t(f, s, sp, ns, sa, cl, iss, ka, ks, nb, na, ia, rq, pr, src, subj, dn) ' +
  'ON CONFLICT (fingerprint) DO NOTHING';

const INSERT_AUDIT_SQL =
  `INSERT INTO ${AUDIT_TABLE} (id, at, requester, identity, cluster, decision, code, reason, serial) ` +
  'SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[]) ' +
  'ON CONFLICT (id) DO NOTHING';

/** `?` placeholders (common.ts) to `$n`. The shared SQL contains no literal '?'. */
function numbered(sql: string): string {
  let n = 0;
  return sql.replace(/\?/g, () => `$${++n}`);
}

const GET_PG = numbered(GET_SQL);
const LATEST_PG = numbered(LATEST_PER_IDENTITY_SQL);
const LATEST_UNDER_FRACTION_PG = numbered(LATEST_PER_IDENTITY_UNDER_FRACTION_SQL);
const DISCOVERED_EXPIRING_PG = numbered(DISCOVERED_EXPIRING_SQL);
const PLACES_PG = numbered(PLACES_SQL);
/**
 * One statement, so one transaction: places $1, sightings' places $2 and fingerprints $3, all at
 * $4, but never more than 5 minutes past the database's clock (a runner whose clock is far ahead
 * would freeze every place it read until real time caught up). DISTINCT ON: ON CONFLICT may touch
 * a row once.
 */
const SNAPSHOT_AT = "LEAST($4::timestamptz, now() + interval '5 minutes')";
const UPSERT_SNAPSHOTS_PG =
  `WITH places AS (INSERT INTO ${PLACES_TABLE} (source, seen_at) SELECT DISTINCT ON (source) source, ${SNAPSHOT_AT} FROM unnest($1::text[]) AS t(source) ` +
  `ON CONFLICT (source) DO UPDATE SET seen_at = GREATEST(${PLACES_TABLE}.seen_at, excluded.seen_at) RETURNING 1), ` +
  // Empty snapshots ($5): only of places already known (splitSnapshots keeps them apart from $1).
  `emptied AS (UPDATE ${PLACES_TABLE} SET seen_at = GREATEST(${PLACES_TABLE}.seen_at, ${SNAPSHOT_AT}) WHERE source = ANY($5::text[]) RETURNING 1) ` +
  `INSERT INTO ${SIGHTINGS_TABLE} (source, fingerprint, seen_at) SELECT DISTINCT ON (source, fingerprint) source, fingerprint, ${SNAPSHOT_AT} FROM unnest($2::text[], $3::text[]) AS t(source, fingerprint) ` +
  `ON CONFLICT (source, fingerprint) DO UPDATE SET seen_at = GREATEST(${SIGHTINGS_TABLE}.seen_at, excluded.seen_at)`;
/** A statement inside inTransaction, on its connection. */
type TransactionQuery = <R extends pg.QueryResultRow>(text: string, values?: unknown[]) => Promise<pg.QueryResult<R>>;
/** One statement for any number of places: the sources it deleted anything of. */
const FORGET_PLACES_PG =
  `WITH s AS (DELETE FROM ${SIGHTINGS_TABLE} WHERE source = ANY($1::text[]) RETURNING source), p AS (DELETE FROM ${PLACES_TABLE} WHERE source = ANY($1::text[]) RETURNING source) ` +
  'SELECT source FROM s UNION SELECT source FROM p';

/**
 * SQLSTATE class 22 (data exception), 23 (integrity constraint violation) and 54 (program limit
 * exceeded: an index entry too large, say) are properties of the batch, which the recorder then
 * splits; everything else (connection, shutdown, resources, serialization) is transient.
 */
function classify(err: unknown): unknown {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && code.length === 5 && (code.startsWith('22') || code.startsWith('23') || code.startsWith('54'))) {
    return new InventoryDataError('the inventory database rejected the batch', { cause: err });
  }
  return err;
}

/** Network errors of the socket under a pg connection. */
const NETWORK_ERRORS = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'EPIPE']);

/**
 * Whether `err` says the server could not be reached or is not taking connections yet (network
 * errors, pg's connect timeout, SQLSTATE class 08, 57P01-3 shut down or starting, 53300 too many clients), as
 * opposed to a refusal an operator must fix (bad password, no such database, no permission).
 */
export function isConnectionFailure(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown } | null;
  const code = typeof e?.code === 'string' ? e.code : '';
  // 57P01/57P02: the server shut down (an admin or a crash: a failover under way).
  if (NETWORK_ERRORS.has(code) || code.startsWith('08') || code === '57P01' || code === '57P02' || code === '57P03' || code === '53300') return true;
  const message = typeof e?.message === 'string' ? e.message : '';
  return /timeout exceeded when trying to connect|Connection terminated|connection error and is not queryable|Query read timeout/i.test(message);
}

/** Attempts of a statement PostgreSQL rolled back for a deadlock or a serialization failure. */
const CONFLICT_ATTEMPTS = 4;

export class PostgresInventoryStore implements InventoryStore {
  readonly kind = 'postgres' as const;
  private readonly pool: pg.Pool;
  private closed = false;
  private readonly readOnly: boolean;

  constructor(options: PostgresStoreOptions) {
    this.readOnly = options.readOnly === true;
    this.pool = new pg.Pool({
      connectionString: options.url,
      max: Math.max(1, Math.floor(options.poolSize ?? 10)),
      connectionTimeoutMillis: options.connectionTimeoutMs ?? 5000,
      query_timeout: options.queryTimeoutMs ?? 30_000,
      idleTimeoutMillis: 30_000,
      keepAlive: true,
      application_name: 'meshcert-inventory',
    });
    // An idle client whose server went away emits 'error' on the pool; unhandled it would crash the process.
    const onPoolError = options.onPoolError;
    this.pool.on('error', (err) => onPoolError?.(err));
  }

  private assertOpen(): void {
    if (this.closed) throw new Error('inventory store is closed');
  }

  /**
   * A read-only store writes nothing. Checked here rather than with a read-only session set at
   * connect time: poolers such as PgBouncer refuse that startup parameter.
   */
  private assertWritable(): void {
    this.assertOpen();
    if (this.readOnly) throw new Error('this inventory store is open read-only');
  }

  /**
   * Every statement here is its own transaction and safe to run twice (inserts skip conflicts,
   * upserts keep the later time, deletes and reads repeat). Statements that lock rows of one table
   * in different orders (forgetting a place and pruning its certificates' sightings, a discover
   * run's snapshot and a forget) can deadlock; PostgreSQL then rolls one back (40P01), which is
   * retried here rather than failing a CronJob or an hourly prune. So is a serialization failure
   * (40001) under a stricter default isolation level.
   */
  private async query<R extends pg.QueryResultRow>(text: string, values: unknown[] = []): Promise<pg.QueryResult<R>> {
    this.assertOpen();
    values = pgValues(values);
    // Unnamed: a named statement is prepared on one server connection, which a transaction-pooling
    // PgBouncer does not keep for the next statement.
    const config = { text, values };
    return this.againOnConflict(() => this.pool.query<R>(config));
  }

  /** Runs `run` again when PostgreSQL rolled it back for a deadlock or a serialization failure. */
  private async againOnConflict<T>(run: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await run();
      } catch (e) {
        const code = (e as { code?: unknown } | null)?.code;
        if ((code !== '40P01' && code !== '40001') || attempt >= CONFLICT_ATTEMPTS || this.closed) throw e;
        // Apart, so the two statements do not meet again in the same order.
        await new Promise((r) => setTimeout(r, 20 + Math.random() * 80));
        // Closed meanwhile: the conflict is the answer, not "pool ended".
        if (this.closed) throw e;
      }
    }
  }

  async migrate(): Promise<void> {
    this.assertOpen();
    if (this.readOnly) {
      const version = await this.query<{ v: number | null }>(`SELECT max(version) AS v FROM ${MIGRATIONS_TABLE}`).then(
        (r) => Number(r.rows[0]?.v ?? 0),
        (err: unknown) => {
          // 42P01: no such table.
          if ((err as { code?: unknown }).code === '42P01') return null;
          throw err;
        },
      );
      return assertSchemaCurrent(version, MIGRATIONS);
    }
    const { client, release } = await this.checkOut();
    let broken = false;
    // Waiting for another replica's migration may legitimately outlast the per-query timeout.
    const migrationQuery = (text: string, values: unknown[] = []): Promise<pg.QueryResult> =>
      client.query({ text, values, query_timeout: MIGRATION_TIMEOUT_MS } as pg.QueryConfig);
    try {
      // One migration per transaction, each under a transaction-level advisory lock taken first:
      // a session-level lock would be neither held nor released on the right server connection
      // behind a transaction-pooling PgBouncer, where every statement outside a transaction may
      // run on another one.
      for (;;) {
        await client.query('BEGIN');
        try {
          await migrationQuery('SELECT pg_advisory_xact_lock($1, $2)', [...LOCK_KEY]);
          await client.query(
            `CREATE TABLE IF NOT EXISTS ${MIGRATIONS_TABLE} (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`,
          );
          const { rows } = await client.query<{ version: number }>(`SELECT version FROM ${MIGRATIONS_TABLE}`);
          const applied = new Set(rows.map((r) => Number(r.version)));
          assertSchemaNotNewer(Math.max(0, ...applied), MIGRATIONS);
          const next = MIGRATIONS.find((m) => !applied.has(m.version));
          if (next !== undefined) {
            await migrationQuery(next.sql);
            await client.query(`INSERT INTO ${MIGRATIONS_TABLE} (version) VALUES ($1)`, [next.version]);
          }
          await client.query('COMMIT');
          if (next === undefined) break;
        } catch (err) {
          await client.query('ROLLBACK').catch(() => undefined);
          throw err;
        }
      }
    } catch (err) {
      broken = true;
      throw err;
    } finally {
      release(broken);
    }
  }

  async insertMany(records: readonly CertificateRecord[]): Promise<void> {
    this.assertWritable();
    if (records.length === 0) return;
    validateRecords(records);
    const sorted = [...records].sort((a, b) => (a.fingerprint < b.fingerprint ? -1 : a.fingerprint > b.fingerprint ? 1 : 0));
    const cols: unknown[][] = Array.from({ length: CERT_COLUMNS.length }, () => new Array<unknown>(sorted.length));
    sorted.forEach((r, i) => {
      cols[0]![i] = r.fingerprint;
      cols[1]![i] = r.serial;
      cols[2]![i] = r.spiffeId;
      cols[3]![i] = r.namespace;
      cols[4]![i] = r.serviceAccount;
      cols[5]![i] = r.cluster;
      cols[6]![i] = r.issuer;
      cols[7]![i] = r.keyAlgorithm;
      cols[8]![i] = r.keySize;
      cols[9]![i] = r.notBefore.toISOString();
      cols[10]![i] = r.notAfter.toISOString();
      cols[11]![i] = r.issuedAt.toISOString();
      cols[12]![i] = r.requester;
      cols[13]![i] = r.policyRule;
      cols[14]![i] = r.source;
      cols[15]![i] = r.subject ?? null;
      cols[16]![i] = dnsNamesJson(r);
    });
    try {
      await this.query(INSERT_CERTS_SQL, cols);
    } catch (err) {
      throw classify(err);
    }
  }

  async insertAudit(events: readonly AuditEvent[]): Promise<void> {
    this.assertWritable();
    if (events.length === 0) return;
    const prepared = prepareAudit(events);
    const cols: unknown[][] = Array.from({ length: 9 }, () => new Array<unknown>(prepared.length));
    prepared.forEach((e, i) => {
      cols[0]![i] = e.id;
      cols[1]![i] = e.at.toISOString();
      cols[2]![i] = e.requester;
      cols[3]![i] = e.identity;
      cols[4]![i] = e.cluster;
      cols[5]![i] = e.decision;
      cols[6]![i] = e.code ?? null;
      cols[7]![i] = e.reason ?? null;
      cols[8]![i] = e.serial ?? null;
    });
    try {
      await this.query(INSERT_AUDIT_SQL, cols);
    } catch (err) {
      throw classify(err);
    }
  }

  async get(serialOrFingerprint: string): Promise<CertificateRecord | null> {
    const params = getParams(serialOrFingerprint);
    if (params === null) return null;
    const { rows } = await this.query<CertRow & pg.QueryResultRow>(GET_PG, params);
    return rows.length === 0 ? null : rowToRecord(rows[0]!);
  }

  async list(filter: CertificateFilter): Promise<Page<CertificateRecord>> {
    const q = buildListQuery(filter);
    const { rows } = await this.query<CertRow & pg.QueryResultRow>(numbered(q.sql), q.params);
    return pageOf(rows.map(rowToRecord), q.limit);
  }

  async count(): Promise<number> {
    const { rows } = await this.query<{ n: string }>(`SELECT count(*) AS n FROM ${CERT_TABLE}`);
    return Number(rows[0]!.n);
  }

  async latestPerIdentity(expiringBefore: Date, now: Date, options: LatestPerIdentityOptions = {}): Promise<CertificateRecord[]> {
    const f = options.maxRemainingFraction;
    const { rows } =
      f === undefined
        ? await this.query<CertRow & pg.QueryResultRow>(LATEST_PG, [now, expiringBefore])
        : await this.query<CertRow & pg.QueryResultRow>(LATEST_UNDER_FRACTION_PG, [now, expiringBefore, now, f]);
    return rows.map(rowToRecord);
  }

  async recordSnapshots(snapshots: readonly Snapshot[], at: Date): Promise<void> {
    this.assertWritable();
    if (snapshots.length === 0) return;
    validateSnapshots(snapshots, at);
    const seen = snapshots.flatMap((x) => x.fingerprints.map((f) => [x.source, f] as const));
    const { held, empty } = splitSnapshots(snapshots);
    try {
      await this.inTransaction(async (q) => {
        // After any prune batch under way: see pruneExpired.
        await q('SELECT pg_advisory_xact_lock($1, $2)', [...SIGHTINGS_LOCK_KEY]);
        await q(UPSERT_SNAPSHOTS_PG, [held, seen.map(([src]) => src), seen.map(([, f]) => f), at.toISOString(), empty]);
      });
    } catch (err) {
      throw classify(err);
    }
  }

  async discoveredExpiring(expiringBefore: Date): Promise<DiscoveredCertificate[]> {
    const { rows } = await this.query<CertRow & { seen_source: string; seen_at: Date } & pg.QueryResultRow>(DISCOVERED_EXPIRING_PG, [expiringBefore]);
    return rows.map(rowToDiscovered);
  }

  async forgetPlaces<S extends RecordSource>(sources: readonly S[]): Promise<S[]> {
    this.assertWritable();
    if (sources.length === 0) return [];
    const { rows } = await this.query<{ source: string }>(FORGET_PLACES_PG, [sources]);
    const known = new Set(rows.map((r) => r.source));
    return sources.filter((s) => known.has(s));
  }

  async places(prefix: `discovered:${string}`): Promise<PlaceSummary[]> {
    const { rows } = await this.query<Parameters<typeof rowToPlace>[0] & pg.QueryResultRow>(PLACES_PG, [prefix, prefix]);
    return rows.map(rowToPlace);
  }

  // Short transactions, one per batch; rows another replica is deleting at the same moment are
  // skipped (SKIP LOCKED) rather than waited for.
  async pruneExpired(before: Date): Promise<number> {
    this.assertWritable();
    // Each batch takes its records' sightings with it, by fingerprint (an index), in the same
    // statement: sweeping sightings whose record is gone would read the whole certificate table.
    // A batch judges "still served" from the snapshot its DELETE starts with (READ COMMITTED): a
    // discover run that recorded a sighting and wrote the record again while that statement ran
    // would see the record there, and the batch delete it. So batches (shared) and snapshot
    // writes (exclusive) take turns on an advisory lock: a snapshot written before a batch is in
    // its DELETE's view, and discover's second write follows any batch that began before it.
    return pruneInBatches(() =>
      this.inTransaction(async (q) => {
        await q('SELECT pg_advisory_xact_lock_shared($1, $2)', [...SIGHTINGS_LOCK_KEY]);
        const { rows } = await q<{ n: string }>(
          `WITH d AS (DELETE FROM ${CERT_TABLE} WHERE fingerprint IN (SELECT fingerprint FROM ${CERT_TABLE} c WHERE c.not_after < $1 AND ${NOT_STILL_SERVED('c')} LIMIT ${PRUNE_BATCH} FOR UPDATE SKIP LOCKED) RETURNING fingerprint), ` +
            `s AS (${PRUNED_SIGHTINGS_PG('d')}) SELECT count(*) AS n FROM d`,
          [before],
        );
        return Number(rows[0]?.n ?? 0);
      }),
    );
  }

  /**
   * Runs `fn`'s statements in one transaction on one connection, committed, or rolled back when it
   * throws; the whole transaction again after a deadlock or serialization failure, as query() does
   * a statement (`fn` must be safe to run twice: a snapshot write and a prune batch are).
   */
  private async inTransaction<T>(fn: (q: TransactionQuery) => Promise<T>): Promise<T> {
    this.assertOpen();
    return this.againOnConflict(() => this.transactionOnce(fn));
  }

  /**
   * A pooled connection for statements that must share one (a transaction). While
   * it is checked out pg-pool's own 'error' listener is off, and a connection that ends (a restart,
   * a failover, pg_terminate_backend) makes pg's Client emit 'error' besides rejecting the statement
   * in progress: unheard, that throws from a socket event and ends the process. Heard here, it only
   * marks the connection broken, so that it is discarded rather than returned to the pool.
   */
  private async checkOut(): Promise<{ client: pg.PoolClient; release: (broken: boolean) => void }> {
    const client = await this.pool.connect();
    let lost = false;
    const onError = (): void => {
      lost = true;
    };
    client.on('error', onError);
    return {
      client,
      release: (broken) => {
        // A discarded connection keeps the listener: it may still report its end as it closes.
        if (!(broken || lost)) client.off('error', onError);
        client.release(broken || lost);
      },
    };
  }

  private async transactionOnce<T>(fn: (q: TransactionQuery) => Promise<T>): Promise<T> {
    const { client, release } = await this.checkOut();
    let broken = false;
    try {
      await client.query('BEGIN');
      try {
        const result = await fn((text, values = []) => client.query(text, pgValues(values)));
        await client.query('COMMIT');
        return result;
      } catch (err) {
        await client.query('ROLLBACK').catch(() => (broken = true));
        throw err;
      }
    } catch (err) {
      broken ||= isConnectionFailure(err);
      throw err;
    } finally {
      release(broken);
    }
  }

  async pruneAudit(before: Date): Promise<number> {
    this.assertWritable();
    return this.pruneBatches(`DELETE FROM ${AUDIT_TABLE} WHERE id IN (SELECT id FROM ${AUDIT_TABLE} WHERE at < $1 LIMIT ${PRUNE_BATCH} FOR UPDATE SKIP LOCKED)`, before);
  }

  private pruneBatches(sql: string, before: Date): Promise<number> {
    return pruneInBatches(async () => (await this.query(sql, [before])).rowCount ?? 0);
  }

  async ping(): Promise<void> {
    await this.query('SELECT 1');
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.pool.end();
  }
}
