/**
 * Backend-independent pieces of the inventory stores: validation, the SQL shared by both
 * backends (written with `?` placeholders; the PostgreSQL store renumbers them), cursor
 * encoding and row decoding. Keeping these in one place is what makes the two backends'
 * semantics identical.
 */
import { randomUUID } from 'node:crypto';
import {
  InvalidCursorError,
  InvalidFilterError,
  InventoryDataError,
  type AuditEvent,
  type CertificateFilter,
  type CertificateRecord,
  type DiscoveredCertificate,
  type PlaceSummary,
  type RecordSource,
  type Snapshot,
} from './types.js';
import { canonicalSerial, typedHex } from '../x509/serial-hex.js';

export const CERT_TABLE = 'inventory_certificates';
export const AUDIT_TABLE = 'inventory_audit_events';
export const MIGRATIONS_TABLE = 'inventory_schema_migrations';

/** Column order used by every SELECT and INSERT of certificate rows. */
export const CERT_COLUMNS = [
  'fingerprint',
  'serial',
  'spiffe_id',
  'namespace',
  'service_account',
  'cluster',
  'issuer',
  'key_algorithm',
  'key_size',
  'not_before',
  'not_after',
  'issued_at',
  'requester',
  'policy_rule',
  'source',
  'subject',
  'dns_names',
] as const;

export const AUDIT_COLUMNS = ['id', 'at', 'requester', 'identity', 'cluster', 'decision', 'code', 'reason', 'serial'] as const;

export const SELECT_CERT = `SELECT ${CERT_COLUMNS.join(', ')} FROM ${CERT_TABLE}`;

/**
 * Pruning deletes at most this many rows per statement, so a large backlog (a year of refusals)
 * never holds the store in one long transaction: other writes and queries run between batches.
 */
export const PRUNE_BATCH = 5000;

/** Runs `deleteBatch` (one statement deleting at most PRUNE_BATCH rows) until a batch comes back short; returns the total. */
export async function pruneInBatches(deleteBatch: () => Promise<number>): Promise<number> {
  let total = 0;
  for (;;) {
    const n = await deleteBatch();
    total += n;
    if (n < PRUNE_BATCH) return total;
  }
}

export const DEFAULT_LIMIT = 100;
export const MAX_LIMIT = 1000;

const HEX64 = /^[0-9a-f]{64}$/;
const SERIAL = /^[0-9a-f]{1,128}$/;
const MAX_INT32 = 2 ** 31 - 1;

// ---------------------------------------------------------------------------------------------
// Validation. Both stores validate a whole batch before writing anything, so that a batch is
// rejected identically (InventoryDataError) by both backends. PostgreSQL text cannot hold NUL.

function isValidDate(d: unknown): d is Date {
  return d instanceof Date && !Number.isNaN(d.getTime());
}

/** A UTF-16 surrogate not in a pair (\p{Cs} under /u matches no pair): no UTF-8 holds it, so SQLite stored mangled bytes and PostgreSQL refused it. */
const LONE_SURROGATE = /\p{Cs}/u;

function badText(v: unknown, nullable: boolean): boolean {
  if (v === null || v === undefined) return !nullable;
  return typeof v !== 'string' || v.includes('\u0000') || LONE_SURROGATE.test(v);
}

/**
 * The longest value of an indexed text column, in UTF-8 bytes: PostgreSQL refuses an index entry
 * over about 2.7 KB (SQLite has no such limit; both stores refuse alike). A SPIFFE ID is at most
 * 2048 bytes (SPIFFE-ID §2.3); a longer one comes only from a discovered certificate.
 */
export const MAX_INDEXED_TEXT_BYTES = 2048;

function tooLong(v: string | null | undefined): boolean {
  // A UTF-8 character takes at most 4 bytes: only a long string needs counting.
  return typeof v === 'string' && v.length > MAX_INDEXED_TEXT_BYTES / 4 && Buffer.byteLength(v, 'utf8') > MAX_INDEXED_TEXT_BYTES;
}

/** Returns what is wrong with the record, or null when it can be stored. */
export function recordProblem(r: CertificateRecord): string | null {
  if (r === null || typeof r !== 'object') return 'not an object';
  if (typeof r.fingerprint !== 'string' || !HEX64.test(r.fingerprint)) return 'fingerprint must be 64 lowercase hex chars';
  if (typeof r.serial !== 'string' || !SERIAL.test(r.serial)) return 'serial must be 1-128 lowercase hex chars';
  if (badText(r.issuer, false) || r.issuer.length === 0) return 'issuer must be a non-empty string';
  if (badText(r.keyAlgorithm, false) || r.keyAlgorithm.length === 0) return 'keyAlgorithm must be a non-empty string';
  if (!Number.isInteger(r.keySize) || r.keySize < 0 || r.keySize > MAX_INT32) return 'keySize must be a non-negative integer';
  if (!isValidDate(r.notBefore) || !isValidDate(r.notAfter) || !isValidDate(r.issuedAt)) return 'notBefore, notAfter and issuedAt must be valid Dates';
  if (typeof r.source !== 'string' || !isRecordSource(r.source) || r.source.includes('\u0000')) return "source must be 'issued' or 'discovered:<name>'";
  if (
    badText(r.spiffeId, true) ||
    badText(r.namespace, true) ||
    badText(r.serviceAccount, true) ||
    badText(r.cluster, true) ||
    badText(r.requester, true) ||
    badText(r.policyRule, true) ||
    badText(r.subject, true)
  ) {
    return 'text fields must be strings (or null) without NUL characters or unpaired surrogates';
  }
  if (tooLong(r.spiffeId) || tooLong(r.namespace) || tooLong(r.serviceAccount) || tooLong(r.source)) {
    return `spiffeId, namespace, serviceAccount and source must be at most ${MAX_INDEXED_TEXT_BYTES} bytes each`;
  }
  if (r.dnsNames !== undefined && r.dnsNames !== null) {
    if (!Array.isArray(r.dnsNames) || r.dnsNames.some((n) => badText(n, false))) return 'dnsNames must be an array of strings';
  }
  return null;
}

export function isRecordSource(s: string): s is RecordSource {
  return s === 'issued' || (s.startsWith('discovered:') && s.length > 'discovered:'.length);
}

/** A place as people see it (`certs expiring`, `discover --places`, `--forget`): its source without `discovered:`. */
export function placeName(source: `discovered:${string}`): string {
  return source.slice('discovered:'.length);
}

export function auditProblem(e: AuditEvent): string | null {
  if (e === null || typeof e !== 'object') return 'not an object';
  if (!isValidDate(e.at)) return 'at must be a valid Date';
  if (e.decision !== 'issued' && e.decision !== 'refused') return "decision must be 'issued' or 'refused'";
  if (e.id !== undefined && (badText(e.id, false) || e.id.length === 0)) return 'id must be a non-empty string';
  if (
    badText(e.requester, true) ||
    badText(e.identity, true) ||
    badText(e.cluster, true) ||
    badText(e.code, true) ||
    badText(e.reason, true) ||
    badText(e.serial, true)
  ) {
    return 'text fields must be strings (or null) without NUL characters or unpaired surrogates';
  }
  return null;
}

export function validateRecords(records: readonly CertificateRecord[]): void {
  for (let i = 0; i < records.length; i++) {
    const problem = recordProblem(records[i]!);
    if (problem !== null) throw new InventoryDataError(`certificate record #${i} rejected: ${problem}`);
  }
}

/** Validates and returns the events with an id each (the given id, or a fresh UUID). */
export function prepareAudit(events: readonly AuditEvent[]): (AuditEvent & { id: string })[] {
  return events.map((e, i) => {
    const problem = auditProblem(e);
    if (problem !== null) throw new InventoryDataError(`audit event #${i} rejected: ${problem}`);
    return e.id === undefined ? { ...e, id: randomUUID() } : (e as AuditEvent & { id: string });
  });
}

// ---------------------------------------------------------------------------------------------
// Lookup keys, filters and cursors.

/** GET_SQL's parameters for a serial or fingerprint as a user typed it; null when there is nothing to look up. */
export function getParams(serialOrFingerprint: string): [string, string, string, string] | null {
  const k = typedHex(serialOrFingerprint);
  return k.length === 0 ? null : [k, k, canonicalSerial(k), k];
}

/**
 * A read-only store's check in place of migrating: `version` is the newest schema version the
 * store has (null: no meshcert inventory there at all), `migrations` the store's own list. Only
 * the exact version is read safely.
 */
export function assertSchemaCurrent(version: number | null, migrations: readonly { readonly version: number }[]): void {
  const latest = Math.max(...migrations.map((m) => m.version));
  if (version === null || version === 0) throw new Error('it holds no meshcert inventory (no schema): is this the right database?');
  if (version < latest) throw new Error(`its schema is version ${version}, older than this meshcert's ${latest}: start meshcert serve against it once to upgrade it`);
  assertSchemaNotNewer(version, migrations);
}

/**
 * Refuses a schema a later meshcert wrote (a rollback), for writing as for reading: an older
 * release would write rows without what the newer schema expects of them.
 */
export function assertSchemaNotNewer(version: number | null, migrations: readonly { readonly version: number }[]): void {
  const latest = Math.max(...migrations.map((m) => m.version));
  if (version !== null && version > latest) throw new Error(`its schema is version ${version}, newer than this meshcert's ${latest}: use the meshcert release that wrote it`);
}

export function clampLimit(limit: number | undefined): number {
  if (limit === undefined || !Number.isFinite(limit)) return DEFAULT_LIMIT;
  return Math.min(MAX_LIMIT, Math.max(1, Math.floor(limit)));
}

interface CursorPosition {
  notAfterMs: number;
  fingerprint: string;
}

export function encodeCursor(r: CertificateRecord): string {
  return Buffer.from(JSON.stringify({ v: 1, a: r.notAfter.getTime(), f: r.fingerprint }), 'utf8').toString('base64url');
}

/** 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z. */
const MIN_CERT_TIME_MS = -62_135_596_800_000;
const MAX_CERT_TIME_MS = 253_402_300_799_999;

export function decodeCursor(cursor: string): CursorPosition {
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    throw new InvalidCursorError();
  }
  if (typeof parsed !== 'object' || parsed === null) throw new InvalidCursorError();
  const { v, a, f } = parsed as Record<string, unknown>;
  // A certificate's time is within years 1-9999 (X.509's GeneralizedTime); outside, the stores
  // disagree (SQLite: an empty page; PostgreSQL: an out-of-range error) on what no listing made.
  if (v !== 1 || typeof a !== 'number' || !Number.isSafeInteger(a) || a < MIN_CERT_TIME_MS || a > MAX_CERT_TIME_MS || typeof f !== 'string' || !HEX64.test(f)) {
    throw new InvalidCursorError();
  }
  return { notAfterMs: a, fingerprint: f };
}

export interface ListQuery {
  /** SQL with `?` placeholders; selects `limit + 1` rows so the caller knows whether a next page exists. */
  sql: string;
  /** Placeholder values; Dates are left to the backend to encode. */
  params: unknown[];
  limit: number;
}

export function buildListQuery(filter: CertificateFilter): ListQuery {
  const where: string[] = [];
  const params: unknown[] = [];
  const eq = (column: string, value: string | undefined): void => {
    if (value !== undefined) {
      // Both stores must answer alike: PostgreSQL refuses a NUL in text (an error, read as the store failing).
      if (value.includes('\u0000')) throw new InvalidFilterError(`the ${column.replace('_', ' ')} filter contains a NUL character`);
      where.push(`${column} = ?`);
      params.push(value);
    }
  };
  eq('namespace', filter.namespace);
  eq('service_account', filter.serviceAccount);
  eq('issuer', filter.issuer);
  eq('spiffe_id', filter.spiffeId);
  eq('requester', filter.requester);
  if (filter.source !== undefined) {
    if (filter.source === 'discovered') {
      where.push(`substr(source, 1, 11) = 'discovered:'`);
    } else {
      eq('source', filter.source);
    }
  }
  if (filter.expiringBefore !== undefined) {
    if (!isValidDate(filter.expiringBefore)) throw new RangeError('expiringBefore must be a valid Date');
    where.push('not_after < ?');
    params.push(filter.expiringBefore);
  }
  if (filter.includeExpired === false) {
    const now = filter.now ?? new Date();
    if (!isValidDate(now)) throw new RangeError('now must be a valid Date');
    where.push('not_after >= ?');
    params.push(now);
  }
  if (filter.cursor !== undefined && filter.cursor !== null) {
    const pos = decodeCursor(filter.cursor);
    const at = new Date(pos.notAfterMs);
    // A row value, not "a > ? OR (a = ? AND b > ?)": both stores seek the (not_after, fingerprint)
    // index to it, where the OR form scanned the index from its start on every page.
    where.push('(not_after, fingerprint) > (?, ?)');
    params.push(at, pos.fingerprint);
  }
  const limit = clampLimit(filter.limit);
  params.push(limit + 1);
  const sql =
    `${SELECT_CERT}` +
    (where.length > 0 ? ` WHERE ${where.join(' AND ')}` : '') +
    ' ORDER BY not_after ASC, fingerprint ASC LIMIT ?';
  return { sql, params, limit };
}

/** Params: getParams(). A serial matches as typed or in its canonical form (see canonicalSerial). */
export const GET_SQL =
  `${SELECT_CERT} WHERE fingerprint = ? OR serial IN (?, ?) ` +
  'ORDER BY CASE WHEN fingerprint = ? THEN 0 ELSE 1 END, issued_at DESC, fingerprint DESC LIMIT 1';

/** Params: now, expiringBefore. */
/**
 * Per identity, its latest certificate (greatest issued_at, then not_after, then fingerprint),
 * when that one was issued by meshcert and expires in [?, ?). A discovered certificate is a
 * snapshot (its renewals elsewhere are never seen), so it is never reported as not renewed; a
 * later one still supersedes an issued one (the workload renewed, elsewhere). Written as "certificates in the window that no later
 * certificate of the same identity supersedes" so the not_after index narrows it to the window
 * and the (spiffe_id, issued_at) index answers each check: the cost follows the window, not the
 * table (a window function over every row made the primary's memory jump at each check).
 */
const LATEST_IN_WINDOW =
  `SELECT ${CERT_COLUMNS.map((c) => `c.${c}`).join(', ')} FROM ${CERT_TABLE} c ` +
  `WHERE c.spiffe_id IS NOT NULL AND c.source = 'issued' AND c.not_after >= ? AND c.not_after < ? AND NOT EXISTS (` +
  `SELECT 1 FROM ${CERT_TABLE} n WHERE n.spiffe_id = c.spiffe_id AND (n.issued_at > c.issued_at OR (n.issued_at = c.issued_at AND ` +
  `(n.not_after > c.not_after OR (n.not_after = c.not_after AND n.fingerprint > c.fingerprint))))` +
  `)`;
const LATEST_ORDER = ` ORDER BY c.not_after ASC, c.spiffe_id ASC`;

export const LATEST_PER_IDENTITY_SQL = LATEST_IN_WINDOW + LATEST_ORDER;

/**
 * The same, keeping only certificates with at most a given fraction of their lifetime left (params:
 * window start, window end, now, fraction). A superset of expiry.ts's isStale (which decides): in a
 * mesh whose certificates all live as long as the window, the window alone is the whole table.
 * The casts read as no-ops to SQLite and type the parameters for PostgreSQL.
 */
export const LATEST_PER_IDENTITY_UNDER_FRACTION_SQL =
  LATEST_IN_WINDOW +
  ` AND (c.not_after <= c.not_before OR (c.not_after - CAST(? AS timestamptz)) <= CAST(? AS double precision) * (c.not_after - c.not_before))` +
  LATEST_ORDER;

/**
 * Discovery's places (a file, an endpoint, a Secret key) and when each was last read in full; and
 * what each read found there (one row per place and certificate, with the time of the latest read
 * that found it). A place's latest snapshot is its sightings at its own time: what it served when
 * last seen, possibly nothing. A certificate record keeps the place it was first found at; these
 * tables hold every place.
 */
export const PLACES_TABLE = 'inventory_discovery_places';
export const SIGHTINGS_TABLE = 'inventory_discovery_sightings';

/** "s is in its place's latest snapshot", for a sightings alias s. */
const IN_LATEST = (s: string): string => `EXISTS (SELECT 1 FROM ${PLACES_TABLE} p WHERE p.source = ${s}.source AND p.seen_at = ${s}.seen_at)`;

/**
 * The certificates of every place's latest snapshot that end before ? (expired ones included: a
 * place that still served one when last seen is an outage), with the place and when it was last
 * seen. Ordered by notAfter, then place, then fingerprint.
 */
export const DISCOVERED_EXPIRING_SQL =
  `SELECT ${CERT_COLUMNS.map((c) => `c.${c}`).join(', ')}, s.source AS seen_source, s.seen_at AS seen_at ` +
  `FROM ${PLACES_TABLE} p JOIN ${SIGHTINGS_TABLE} s ON s.source = p.source AND s.seen_at = p.seen_at JOIN ${CERT_TABLE} c ON c.fingerprint = s.fingerprint ` +
  'WHERE c.not_after < ? ORDER BY c.not_after ASC, s.source ASC, c.fingerprint ASC';

/**
 * The places under a prefix (? twice: SQLite and PostgreSQL both count characters), each with its
 * latest snapshot's size and earliest end, in bytewise order (PostgreSQL's discovery columns are
 * COLLATE "C"). The casts read as no-ops to SQLite and type the parameter for PostgreSQL.
 */
export const PLACES_SQL =
  `SELECT p.source AS source, p.seen_at AS seen_at, count(c.fingerprint) AS certificates, min(c.not_after) AS earliest ` +
  `FROM ${PLACES_TABLE} p LEFT JOIN ${SIGHTINGS_TABLE} s ON s.source = p.source AND s.seen_at = p.seen_at LEFT JOIN ${CERT_TABLE} c ON c.fingerprint = s.fingerprint ` +
  `WHERE substr(p.source, 1, length(CAST(? AS text))) = CAST(? AS text) GROUP BY p.source, p.seen_at ORDER BY p.source`;

export function rowToPlace(row: { source: string; seen_at: unknown; certificates: unknown; earliest: unknown }): PlaceSummary {
  return {
    source: row.source as PlaceSummary['source'],
    seenAt: toDate(row.seen_at),
    certificates: Number(row.certificates),
    earliestNotAfter: row.earliest === null || row.earliest === undefined ? null : toDate(row.earliest),
  };
}

/** For pruneExpired: a record that no place's latest snapshot holds, for a certificates alias c. */
export const NOT_STILL_SERVED = (c: string): string => `NOT EXISTS (SELECT 1 FROM ${SIGHTINGS_TABLE} s WHERE s.fingerprint = ${c}.fingerprint AND ${IN_LATEST('s')})`;

/**
 * Sightings whose certificate record is gone (pruned after its retention), except those a latest
 * snapshot holds: a discover run may have just recorded one whose record a prune deleted a moment
 * before (its record is written again right after: discover.ts).
 */
export const PRUNE_SIGHTINGS_SQL = `DELETE FROM ${SIGHTINGS_TABLE} WHERE NOT EXISTS (SELECT 1 FROM ${CERT_TABLE} c WHERE c.fingerprint = ${SIGHTINGS_TABLE}.fingerprint) AND NOT ${IN_LATEST(SIGHTINGS_TABLE)}`;

/** For the PostgreSQL prune: sightings of the records a batch deleted (alias d), except those a latest snapshot holds (see above). */
export const PRUNED_SIGHTINGS_PG = (d: string): string => `DELETE FROM ${SIGHTINGS_TABLE} s WHERE s.fingerprint IN (SELECT fingerprint FROM ${d}) AND NOT ${IN_LATEST('s')}`;

/**
 * Migration 2's tables and their seed (dialect: the column types and the time function). Places
 * found before are seeded with, per place and subject, the unexpired certificate with the latest
 * notBefore (a renewal there supersedes the certificate it replaced; the records cannot tell more;
 * one that has expired already is history, not an alert to raise at the upgrade), as seen at the
 * place's latest notBefore, capped at now: a time in the past, so that the next run, by any clock
 * near the right time, supersedes the guess.
 */
export function discoveryTablesSql(d: { text: string; time: string; now: string; least: string }): string[] {
  return [
    `CREATE TABLE ${PLACES_TABLE} (source ${d.text} PRIMARY KEY NOT NULL, seen_at ${d.time} NOT NULL)`,
    `CREATE TABLE ${SIGHTINGS_TABLE} (source ${d.text} NOT NULL, fingerprint ${d.text} NOT NULL, seen_at ${d.time} NOT NULL, PRIMARY KEY (source, fingerprint))`,
    `CREATE INDEX ${SIGHTINGS_TABLE}_latest ON ${SIGHTINGS_TABLE} (source, seen_at)`,
    `CREATE INDEX ${SIGHTINGS_TABLE}_fingerprint ON ${SIGHTINGS_TABLE} (fingerprint)`,
    `INSERT INTO ${PLACES_TABLE} (source, seen_at) SELECT source, ${d.least}(max(issued_at), ${d.now}) FROM ${CERT_TABLE} WHERE source <> 'issued' GROUP BY source`,
    `INSERT INTO ${SIGHTINGS_TABLE} (source, fingerprint, seen_at) SELECT t.source, t.fingerprint, p.seen_at FROM (` +
      `SELECT source, fingerprint, row_number() OVER (PARTITION BY source, subject ORDER BY issued_at DESC, fingerprint DESC) AS rn FROM ${CERT_TABLE} WHERE source <> 'issued' AND not_after >= ${d.now}` +
      `) t JOIN ${PLACES_TABLE} p ON p.source = t.source WHERE t.rn = 1`,
  ];
}

export function pageOf(rows: CertificateRecord[], limit: number): { items: CertificateRecord[]; nextCursor: string | null } {
  if (rows.length <= limit) return { items: rows, nextCursor: null };
  const items = rows.slice(0, limit);
  return { items, nextCursor: encodeCursor(items[items.length - 1]!) };
}

// ---------------------------------------------------------------------------------------------
// Row decoding.

export interface CertRow {
  fingerprint: string;
  serial: string;
  spiffe_id: string | null;
  namespace: string | null;
  service_account: string | null;
  cluster: string | null;
  issuer: string;
  key_algorithm: string;
  key_size: number;
  not_before: unknown;
  not_after: unknown;
  issued_at: unknown;
  requester: string | null;
  policy_rule: string | null;
  source: string;
  subject: string | null;
  dns_names: unknown;
}

function toDate(v: unknown): Date {
  if (v instanceof Date) return new Date(v.getTime());
  if (typeof v === 'number' || typeof v === 'bigint') return new Date(Number(v));
  return new Date(String(v));
}

function toNames(v: unknown): string[] {
  if (v === null || v === undefined) return [];
  const arr: unknown = typeof v === 'string' ? JSON.parse(v) : v;
  return Array.isArray(arr) ? arr.map(String) : [];
}

export function rowToRecord(row: CertRow): CertificateRecord {
  return {
    serial: row.serial,
    fingerprint: row.fingerprint,
    spiffeId: row.spiffe_id,
    namespace: row.namespace,
    serviceAccount: row.service_account,
    cluster: row.cluster,
    issuer: row.issuer,
    keyAlgorithm: row.key_algorithm,
    keySize: Number(row.key_size),
    notBefore: toDate(row.not_before),
    notAfter: toDate(row.not_after),
    issuedAt: toDate(row.issued_at),
    requester: row.requester,
    policyRule: row.policy_rule,
    source: row.source as RecordSource,
    subject: row.subject ?? null,
    dnsNames: toNames(row.dns_names),
  };
}

export function rowToDiscovered(row: CertRow & { seen_source: string; seen_at: unknown }): DiscoveredCertificate {
  return { record: rowToRecord(row), source: row.seen_source as DiscoveredCertificate['source'], seenAt: toDate(row.seen_at) };
}

/**
 * The places of a batch of snapshots: those holding certificates (created if new), and the empty
 * ones, kept only for a place already known (a place never seen holding a certificate, such as a
 * TLS Secret's absent ca.crt, is not recorded). A place in both is one that holds certificates.
 */
export function splitSnapshots(snapshots: readonly Snapshot[]): { held: string[]; empty: string[] } {
  const held = new Set(snapshots.filter((x) => x.fingerprints.length > 0).map((x) => x.source));
  const empty = new Set(snapshots.filter((x) => x.fingerprints.length === 0 && !held.has(x.source)).map((x) => x.source));
  return { held: [...held], empty: [...empty] };
}

/** Refuses snapshots a store must not hold (as validateRecords does for records): InventoryDataError. */
export function validateSnapshots(snapshots: readonly Snapshot[], at: Date): void {
  if (!isValidDate(at)) throw new InventoryDataError('a snapshot time must be a valid Date');
  for (const s of snapshots) {
    if (typeof s.source !== 'string' || (s.source as string) === 'issued' || !isRecordSource(s.source) || s.source.includes('\u0000')) {
      throw new InventoryDataError(`a snapshot's place must be a discovered:<where> source, got ${JSON.stringify(String(s.source).slice(0, 80))}`);
    }
    if (tooLong(s.source)) throw new InventoryDataError(`a snapshot's place must be at most ${MAX_INDEXED_TEXT_BYTES} bytes, got ${JSON.stringify(s.source.slice(0, 80))}...`);
    if (!Array.isArray(s.fingerprints) || !s.fingerprints.every((f) => typeof f === 'string' && HEX64.test(f))) {
      throw new InventoryDataError("a snapshot's fingerprints must be 64 lowercase hex digits each");
    }
  }
}

export function dnsNamesJson(r: CertificateRecord): string {
  return JSON.stringify(r.dnsNames ?? []);
}
