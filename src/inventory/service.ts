import { withTimeout } from '../async/with-timeout.js';
import { ConfigError } from '../errors/ca-error.js';
import type { Logger } from '../log/logger.js';
import type { InventoryMetrics } from '../metrics/ca-metrics.js';
import { MigratingStore } from './migrating-store.js';
import { createStore } from './open.js';
import { InventoryOverflowError, InventoryRecorder } from './recorder.js';
import type { RecordSink } from './sink.js';
import { InventoryDataError, type AuditEvent, type CertificateRecord, type InventoryStore } from './types.js';

export interface InventoryOptions {
  /** Default: postgres when url is set, else sqlite. */
  readonly store?: 'sqlite' | 'postgres' | 'none';
  readonly path?: string;
  readonly url?: string;
  readonly failClosed: boolean;
  readonly maxBuffer: number;
  /** Seconds after expiry a record is pruned. */
  readonly retention: number;
  /** Seconds after it was recorded an audit event is pruned; 0 or absent keeps them. */
  readonly auditRetention?: number;
}

/** Expired records and old audit events are pruned at start, then at this interval. */
const PRUNE_EVERY_MS = 3600_000;
/** After a prune fails, the next try comes this soon (one retry pending at a time; the hourly rounds go on). */
export const PRUNE_RETRY_MS = 300_000;

/**
 * The inventory as the server runs it: the store, the write-behind recorder in front of it, the
 * retention pruner, and the gauges operators watch (backlog, store up, records).
 */
export class InventoryService implements RecordSink {
  private timers: NodeJS.Timeout[] = [];
  private pruneRetry: NodeJS.Timeout | undefined;
  private closed = false;

  private constructor(
    readonly store: InventoryStore,
    readonly recorder: InventoryRecorder,
    private readonly o: InventoryOptions,
    /** False while a store unreachable at start has not been migrated (see MigratingStore). */
    private readonly ready: () => boolean,
    private readonly logger: Logger,
  ) {}

  static async open(o: InventoryOptions, logger: Logger, metrics?: InventoryMetrics): Promise<InventoryService | undefined> {
    const kind = o.store ?? (o.url ? 'postgres' : 'sqlite');
    if (kind === 'none') return undefined;
    if (kind === 'postgres' && !o.url) throw new ConfigError('inventory.store postgres needs inventory.url');
    if (kind === 'sqlite' && !o.path) throw new ConfigError('inventory.path is not set');
    const failed = (err: unknown): ConfigError => new ConfigError(`cannot open the ${kind} inventory store: ${(err as Error).message.split('\n')[0]}${kind === 'postgres' ? postgresTlsHint(err) : ''}`);
    let store: InventoryStore;
    try {
      // failClosed: answers wait for commits, which must then survive a power loss (see SqliteStoreOptions.durable).
      store = await createStore(kind === 'postgres' ? { kind: 'postgres', url: o.url! } : { kind: 'sqlite', path: o.path!, durable: o.failClosed });
    } catch (err) {
      throw failed(err);
    }
    let ready = (): boolean => true;
    try {
      await store.migrate();
    } catch (err) {
      // PostgreSQL down while this replica starts (maintenance, a failover): serve anyway, as once
      // started, keeping records in memory; with failClosed, refuse to issue until it answers. A
      // refusal an operator must fix (credentials, database, permissions) stops the start.
      const isConnectionFailure = kind === 'postgres' ? (await import('./postgres.js')).isConnectionFailure : () => false;
      if (!isConnectionFailure(err)) {
        await store.close().catch(() => undefined);
        throw failed(err);
      }
      const migrating = new MigratingStore(store, { logger, isConnectionFailure });
      store = migrating;
      ready = () => migrating.ready;
      logger.error(
        { err, failClosed: o.failClosed },
        o.failClosed
          ? 'inventory store unreachable at start: refusing to issue (inventory.failClosed) until it answers; retrying'
          : 'inventory store unreachable at start: serving, and keeping records in memory until it answers; retrying',
      );
    }
    const recorder = new InventoryRecorder(store, { failClosed: o.failClosed, maxBuffer: o.maxBuffer, onError: inventoryErrorLog(logger), startUnhealthy: !ready() });
    const svc = new InventoryService(store, recorder, o, ready, logger);
    if (metrics) metrics.recorder = recorder;
    const count = (): void => {
      store.count().then(
        (n) => {
          metrics?.records.set(n);
          metrics?.recordsCountedAt.set(Date.now() / 1000);
        },
        () => {},
      );
    };
    count();
    svc.timers.push(setInterval(count, 30_000).unref());
    // A failed prune (the store down at start, a lock held too long) is tried again in minutes,
    // not at the next hourly round: a replica started while PostgreSQL was away would otherwise
    // leave expired records an hour longer than retention says.
    const pruneFailed = (what: string) => (err: unknown): void => {
      if (svc.closed) return; // a prune cut short by close(): nothing to retry
      if (svc.pruneRetry) return void logger.warn({ err }, `${what} pruning failed; a retry is already due`);
      svc.pruneRetry = setTimeout(() => {
        svc.pruneRetry = undefined;
        prune();
      }, PRUNE_RETRY_MS).unref();
      logger.warn({ err, retryInSeconds: PRUNE_RETRY_MS / 1000 }, `${what} pruning failed; will retry`);
    };
    const prune = (): void => {
      store.pruneExpired(new Date(Date.now() - o.retention * 1000)).then(
        (n) => n > 0 && logger.info({ pruned: n }, 'pruned expired inventory records'),
        pruneFailed('inventory'),
      );
      if (o.auditRetention) {
        store.pruneAudit(new Date(Date.now() - o.auditRetention * 1000)).then(
          (n) => n > 0 && logger.info({ pruned: n }, 'pruned old audit events'),
          pruneFailed('audit'),
        );
      }
    };
    prune();
    svc.timers.push(setInterval(prune, PRUNE_EVERY_MS).unref());
    if (ready()) logger.info({ store: kind, ...(kind === 'sqlite' ? { path: o.path } : {}), failClosed: o.failClosed }, 'inventory store open');
    return svc;
  }

  record(rec: CertificateRecord): void {
    this.recorder.record(rec);
  }

  keep(rec: CertificateRecord): Promise<void> {
    return this.recorder.recordDurable(rec);
  }

  recordAudit(ev: AuditEvent): void {
    this.recorder.recordAudit(ev);
  }

  accepting(): boolean {
    return !this.o.failClosed || (this.ready() && this.recorder.storeHealthy && this.recorder.canAccept());
  }

  /**
   * Ready when the store answers, or while it is down but the buffer still has room. A store that
   * does not answer within `pingTimeoutMs` counts as down: a black-holed database would otherwise
   * hold /readyz past the kubelet's probe timeout and take every replica out at once, although
   * buffering keeps issuance going. With failClosed, a store that answers but does not take
   * records (a full disk, a read-only standby, writes stalled, the buffer full) is not ready
   * either: every call is refused then, and the Service should send them elsewhere.
   */
  async readiness(pingTimeoutMs = 1000): Promise<{ ok: boolean; detail: string }> {
    try {
      await withTimeout(this.store.ping(), pingTimeoutMs, 'inventory store ping');
      if (!this.accepting()) {
        return { ok: false, detail: `store reachable but not taking records (writes failing or stalled, or the buffer full; backlog ${this.recorder.backlog}): with inventory.failClosed every call is refused` };
      }
      return { ok: true, detail: `store reachable, backlog ${this.recorder.backlog}` };
    } catch {
      const room = this.recorder.canAccept();
      return { ok: room && !this.o.failClosed, detail: `store unreachable, buffering ${this.recorder.backlog} records` };
    }
  }

  /** Writes everything buffered (a clean shutdown loses nothing), then closes the store. */
  async close(deadlineMs = 30_000): Promise<void> {
    this.closed = true;
    for (const t of this.timers) clearInterval(t);
    clearTimeout(this.pruneRetry);
    // Said first: a pod killed before the flush ends (its grace period is over) leaves this line.
    const pending = this.recorder.backlog + this.recorder.auditBacklog;
    if (pending > 0) this.logger.info({ records: this.recorder.backlog, auditEvents: this.recorder.auditBacklog, deadlineSeconds: deadlineMs / 1000 }, 'writing what the inventory holds in memory before exiting');
    let unwritten: unknown;
    try {
      await this.recorder.close({ deadlineMs });
    } catch (e) {
      unwritten = e;
    }
    if (unwritten === undefined) return this.store.close();
    // The store did not take everything in time: closing it may wait on a write that never ends
    // (a database that drops packets); the caller says what was lost without waiting for that.
    void this.store.close().catch(() => undefined);
    throw unwritten;
  }
}

/**
 * The recorder's errors as log lines, at most one per kind every 10 s: a store that is down fails
 * every retry, and a full buffer drops on every record. The kinds must not hide each other: that
 * records are now being lost (overflow) or discarded (refused as data) is not the same news as
 * the store being down.
 */
export function inventoryErrorLog(logger: Logger, now: () => number = Date.now): (err: Error) => void {
  const last = new Map<string, number>();
  // Certificate records and audit events each: audit events overflowing first must not hide that
  // certificate records are now being lost too (each lane says so once per overflow).
  const message = {
    'overflow:certificates': 'inventory buffer full: the oldest unwritten certificate records are being dropped (see meshcert_inventory_dropped_records)',
    'overflow:audit': 'inventory audit buffer full: the oldest unwritten audit events are being dropped (see meshcert_inventory_audit_events_lost_total{reason="dropped"})',
    'data:certificates': 'the inventory store refused an entry as invalid; it was discarded (see meshcert_inventory_rejected_records)',
    'data:audit': 'the inventory store refused an audit event as invalid; it was discarded (see meshcert_inventory_audit_events_lost_total{reason="rejected"})',
    write: 'inventory write failed; records are kept in memory and retried',
  } as const;
  return (err) => {
    const kind: keyof typeof message =
      err instanceof InventoryOverflowError ? `overflow:${err.lane}` : err instanceof InventoryDataError ? `data:${err.lane ?? 'certificates'}` : 'write';
    const t = now();
    if (t - (last.get(kind) ?? -Infinity) < 10_000) return;
    last.set(kind, t);
    logger.error({ err }, message[kind]);
  };
}

/** Node's codes for a server certificate that does not verify (against its CA list, or by name). */
const TLS_VERIFY_CODES = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'CERT_HAS_EXPIRED',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

/**
 * What to do about a PostgreSQL server certificate that does not verify. node-postgres verifies
 * against Node's public CA list for every sslmode from require up (libpq would not for require),
 * so a server with a private CA (most in-cluster operators make one) is refused until its CA is named.
 */
function postgresTlsHint(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code !== 'string' || !TLS_VERIFY_CODES.has(code)) return '';
  return code === 'ERR_TLS_CERT_ALTNAME_INVALID'
    ? ' (the PostgreSQL server\'s certificate does not name the host in inventory.url: connect by a name it holds)'
    : ` (${code}: the PostgreSQL server's certificate does not chain to a CA Node trusts; name its CA in inventory.url with sslrootcert=/path/to/ca.crt, or with NODE_EXTRA_CA_CERTS)`;
}
