/**
 * Certificate inventory: every certificate meshcert issues (and ones it discovers)
 * is recorded here, write-behind (see recorder.ts), so recording never slows issuance.
 *
 * Two backends with identical semantics: SQLite (single replica, file) and PostgreSQL
 * (several replicas). The contract test suite (test/unit/inventory/store.contract.test.ts)
 * runs the same assertions against both.
 */

/** 'issued' by meshcert, or found at a place by discovery (e.g. `discovered:k8s-secret:web/tls`, `discovered:file:/etc/tls/a.pem`). */
export type RecordSource = 'issued' | `discovered:${string}`;

export interface CertificateRecord {
  /** Lowercase hex, no leading zeros beyond what the DER integer holds (stored as given). */
  serial: string;
  /** SHA-256 of the DER, lowercase hex (64 chars). The record's identity: inserts are idempotent on it. */
  fingerprint: string;
  spiffeId: string | null;
  namespace: string | null;
  serviceAccount: string | null;
  cluster: string | null;
  /** Issuer (CA) name in meshcert's config, or the issuer DN for discovered certs. */
  issuer: string;
  keyAlgorithm: string;
  keySize: number;
  notBefore: Date;
  notAfter: Date;
  issuedAt: Date;
  /** The authenticated caller identity (differs from spiffeId when impersonated). */
  requester: string | null;
  policyRule: string | null;
  source: RecordSource;
  /**
   * Optional on write. Records read back from a store always carry `subject`
   * (null when absent) and `dnsNames` ([] when absent).
   */
  subject?: string | null;
  dnsNames?: string[];
}

/** What discovery found at a place (`discovered:<where>`): the certificates' fingerprints. */
export interface Snapshot {
  source: `discovered:${string}`;
  fingerprints: readonly string[];
}

export interface DiscoveredCertificate {
  record: CertificateRecord;
  /** The place it was seen at (not necessarily the record's source: the place first found). */
  source: `discovered:${string}`;
  /** When the place was last seen (its latest snapshot holds this certificate). */
  seenAt: Date;
}

/** A place discovery knows (a file, an endpoint, a Secret key) and its latest snapshot. */
export interface PlaceSummary {
  source: `discovered:${string}`;
  /** When the place was last read in full. */
  seenAt: Date;
  /** Certificates its latest snapshot holds (0: it held none then). */
  certificates: number;
  /** The earliest notAfter among them; null when it holds none. */
  earliestNotAfter: Date | null;
}

export interface AuditEvent {
  /**
   * Idempotency key. Optional: the recorder (and a store, when given none) assigns a
   * random UUID, so a retried batch never stores an event twice.
   */
  id?: string;
  at: Date;
  requester: string | null;
  identity: string | null;
  cluster: string | null;
  decision: 'issued' | 'refused';
  code?: string;
  reason?: string;
  serial?: string;
}

/**
 * Filter for {@link InventoryStore.list}. All given criteria must hold (AND).
 *
 * Ordering and pagination: results are ordered by `notAfter` ascending, then `fingerprint`
 * ascending (a total order, since fingerprint is unique). The cursor is an opaque keyset
 * position (the last row's notAfter + fingerprint): paging through a filter returns every
 * matching row exactly once even while rows are being inserted (a row inserted behind the
 * cursor is simply not seen by that walk). A cursor is only meaningful with the same filter.
 */
export interface CertificateFilter {
  namespace?: string;
  serviceAccount?: string;
  issuer?: string;
  spiffeId?: string;
  /**
   * Who asked: the caller's identity (a node agent's for what it asked for workloads), or one of
   * meshcert's own parts (`meshcert:server.tls`, `meshcert:istio.istiodTls`).
   */
  requester?: string;
  /** Exact source, or 'discovered' for every `discovered:*` source. */
  source?: RecordSource | 'discovered';
  /** Only certificates with notAfter strictly before this date. */
  expiringBefore?: Date;
  /** Default true. When false, only certificates with notAfter >= `now`. */
  includeExpired?: boolean;
  /** Reference time for `includeExpired: false`; default: the current time. */
  now?: Date;
  /** Default 100, clamped to [1, 1000]. */
  limit?: number;
  /** `nextCursor` of the previous page. An invalid cursor throws {@link InvalidCursorError}. */
  cursor?: string;
}

export interface Page<T> {
  items: T[];
  /** null when this is the last page. */
  nextCursor: string | null;
}

export interface InventoryStore {
  readonly kind: 'sqlite' | 'postgres';
  /** Idempotent. PostgreSQL: serialised across replicas with pg_advisory_xact_lock (one per migration transaction). */
  migrate(): Promise<void>;
  /**
   * Atomic (all or nothing) and idempotent on fingerprint: a record whose fingerprint is
   * already stored (or repeated within the batch) is skipped, so a retried batch stores each
   * record exactly once. Invalid records throw {@link InventoryDataError} before anything is
   * written.
   */
  insertMany(records: readonly CertificateRecord[]): Promise<void>;
  /**
   * Atomic and idempotent on the event id. An event without an id gets a fresh one here, so
   * retrying such a call would store it again: give ids up front (the recorder does).
   */
  insertAudit(events: readonly AuditEvent[]): Promise<void>;
  /**
   * By fingerprint or serial (case-insensitive, ':' separators and a 0x prefix tolerated).
   * A fingerprint match wins; when several certificates share a serial (different issuers),
   * the most recently issued one is returned.
   */
  get(serialOrFingerprint: string): Promise<CertificateRecord | null>;
  list(filter: CertificateFilter): Promise<Page<CertificateRecord>>;
  /** Number of certificate records. */
  count(): Promise<number>;
  /**
   * Stale identities: for every spiffeId (records without one are ignored), its latest
   * certificate (greatest issuedAt, then notAfter, then fingerprint; any source) is returned
   * when meshcert issued it (source `issued`: a discovered one is a snapshot whose renewals are
   * never seen) and `now <= latest.notAfter < expiringBefore`, i.e. it expires soon and no newer
   * certificate was issued for that identity — a workload that stopped renewing.
   * Identities whose latest certificate has already expired (before `now`) are excluded:
   * they are history, not an actionable alert; pass `now = new Date(0)` to include them.
   * Ordered by notAfter, then spiffeId.
   */
  latestPerIdentity(expiringBefore: Date, now: Date, options?: LatestPerIdentityOptions): Promise<CertificateRecord[]>;
  /**
   * Records, in one transaction, what discovery found at each place at `at`: its snapshot (the
   * certificates' records must be stored already; an empty list is a place that holds none now,
   * recorded only for a place already known).
   * A place's latest snapshot is the one with its greatest `at`; an older `at` (a run that started
   * earlier, another machine's clock) changes no place's latest. Idempotent.
   */
  recordSnapshots(snapshots: readonly Snapshot[], at: Date): Promise<void>;
  /**
   * The certificates of every place's latest snapshot with `notAfter < expiringBefore` (expired
   * ones included), each with its place: a certificate served at two places is listed twice.
   * Ordered by notAfter, then place, then fingerprint.
   */
  discoveredExpiring(expiringBefore: Date): Promise<DiscoveredCertificate[]>;
  /**
   * Drops places (ones that are gone) and their snapshots: in one statement on PostgreSQL, in
   * transactions of up to 5,000 places on SQLite. Returns the given sources that were known, in
   * the order given (each copy of one given twice). Their certificate records stay.
   */
  forgetPlaces<S extends RecordSource>(sources: readonly S[]): Promise<S[]>;
  /** The known places whose source starts with `prefix` (e.g. `discovered:k8s-secret:`), with their latest snapshot, sorted by source (bytewise). */
  places(prefix: `discovered:${string}`): Promise<PlaceSummary[]>;
  /**
   * Deletes certificate records with notAfter < before, except discovered ones that a place's
   * latest snapshot holds (still served when last seen), and their sightings; returns how many
   * records. Audit events are not touched.
   */
  pruneExpired(before: Date): Promise<number>;
  /** Deletes audit events recorded before `before`; returns how many. */
  pruneAudit(before: Date): Promise<number>;
  /** Resolves when the store answers a trivial query; throws when unreachable or closed. */
  ping(): Promise<void>;
  /** Idempotent. */
  close(): Promise<void>;
}

/**
 * The batch holds data the store will never accept (a validation failure, a constraint
 * violation): retrying it unchanged fails again. Anything else a store throws is treated as
 * transient (store unreachable, busy, disk full...) and retried.
 */
export class InventoryDataError extends Error {
  override readonly name = 'InventoryDataError';
  /** What the recorder discarded: a certificate record or an audit event (absent: a record, or not the recorder's). */
  readonly lane?: 'certificates' | 'audit';
  constructor(message: string, options?: { cause?: unknown; lane?: 'certificates' | 'audit' }) {
    super(message, options);
    if (options?.lane !== undefined) this.lane = options.lane;
  }
}

/** A filter value no certificate can have (a NUL, which PostgreSQL text refuses and SQLite would just not match). */
export class InvalidFilterError extends RangeError {
  override readonly name = 'InvalidFilterError';
}

/** A `cursor` that is not a `nextCursor` returned by `list`. */
export class InvalidCursorError extends RangeError {
  override readonly name = 'InvalidCursorError';
  constructor() {
    super('invalid inventory cursor: pass back the nextCursor of a previous page unchanged');
  }
}

export interface LatestPerIdentityOptions {
  /** Keep only certificates with at most this fraction of their lifetime left at `now` (a pre-filter; callers decide exactly). */
  readonly maxRemainingFraction?: number;
}
