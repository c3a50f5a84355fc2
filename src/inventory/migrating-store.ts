/**
 * A store that could not be reached at start (PostgreSQL down while a replica starts). With
 * inventory.failClosed off the replica serves anyway; this retries the store's migrations in the
 * background, with backoff, and until they have run fails every call as the store being down: the
 * recorder keeps records in memory and retries, /readyz says the store is unreachable, and with
 * failClosed on, nothing is issued.
 */
import type { Logger } from '../log/logger.js';
import type { AuditEvent, CertificateFilter, CertificateRecord, DiscoveredCertificate, InventoryStore, LatestPerIdentityOptions, Page, PlaceSummary, RecordSource, Snapshot } from './types.js';
import { LogThrottle } from '../log/throttle.js';

export interface MigratingStoreOptions {
  readonly logger: Logger;
  /** Whether an error means the server is not reachable (else it refuses: an operator's to fix). */
  readonly isConnectionFailure: (err: unknown) => boolean;
  /** First retry after this long, doubling to maxDelayMs. Defaults 1 s and 30 s. */
  readonly initialDelayMs?: number;
  readonly maxDelayMs?: number;
}

export class MigratingStore implements InventoryStore {
  readonly kind: InventoryStore['kind'];
  private migrated = false;
  private closed = false;
  private timer: NodeJS.Timeout | undefined;
  private readonly maxDelayMs: number;
  private attempting: Promise<void> | undefined;
  /** performance.now() of the last attempt: the start's own failed migrate counts as one. */
  private lastAttempt = performance.now();
  /** What the last failure was, when it was logged, and how many failures went unlogged since. */
  /** The kind of the last failure, and the throttle of its lines (a new kind starts a new one). */
  private lastFailure: { kind: 'unreachable' | 'refused'; lines: LogThrottle } | undefined;

  constructor(
    private readonly inner: InventoryStore,
    private readonly o: MigratingStoreOptions,
  ) {
    this.kind = inner.kind;
    this.maxDelayMs = o.maxDelayMs ?? 30_000;
    this.schedule(o.initialDelayMs ?? 1000);
  }

  /** True once the migrations have run: from then on every call goes to the store. */
  get ready(): boolean {
    return this.migrated;
  }

  private schedule(delayMs: number): void {
    this.timer = setTimeout(() => void this.attempt(delayMs), delayMs);
    this.timer.unref();
  }

  private async attempt(delayMs: number): Promise<void> {
    if (this.closed || this.migrated) return;
    await this.tryMigrate();
    if (this.closed || this.migrated) return;
    const next = Math.min(this.maxDelayMs, delayMs * 2);
    this.schedule(next);
  }

  /** One migration attempt, shared by whoever asks while it runs. */
  private tryMigrate(): Promise<void> {
    this.attempting ??= (async () => {
      this.lastAttempt = performance.now();
      try {
        await this.inner.migrate();
        if (this.closed) return;
        this.migrated = true;
        this.o.logger.info({ store: this.kind }, 'inventory store reachable: migrations done, writing the records kept meanwhile');
      } catch (err) {
        if (!this.closed) this.logFailure(err);
      } finally {
        this.attempting = undefined;
      }
    })();
    return this.attempting;
  }

  /** A failure's log line: the first, any change of kind, then at most one a minute with a count. */
  private logFailure(err: unknown): void {
    const kind = this.o.isConnectionFailure(err) ? 'unreachable' : 'refused';
    if (this.lastFailure?.kind !== kind) this.lastFailure = { kind, lines: new LogThrottle(60_000, () => performance.now()) };
    const unlogged = this.lastFailure.lines.take();
    if (unlogged === undefined) return;
    const since = unlogged > 0 ? { failedAttemptsSinceLastLine: unlogged } : {};
    if (kind === 'unreachable') this.o.logger.error({ err, ...since }, 'inventory store still unreachable; records are kept in memory, retrying');
    else this.o.logger.error({ err, ...since }, 'inventory store refuses meshcert (credentials, database, permissions?): an operator must fix it; records are kept in memory, retrying');
  }

  /**
   * Every call waits for the migrations: when none was tried in the last second, it tries one
   * itself, so the recorder's retries (and the flush at shutdown) go through as soon as the
   * server answers, not at the background timer's next turn (up to 30 s away).
   */
  private async check(): Promise<void> {
    if (this.migrated) return;
    if (this.attempting) await this.attempting;
    else if (performance.now() - this.lastAttempt >= 1000) await this.tryMigrate();
    if (!this.migrated) throw new Error('the inventory store has not been reachable since meshcert started');
  }

  async migrate(): Promise<void> {
    await this.inner.migrate();
    this.migrated = true;
  }

  async insertMany(records: readonly CertificateRecord[]): Promise<void> {
    await this.check();
    return this.inner.insertMany(records);
  }

  async insertAudit(events: readonly AuditEvent[]): Promise<void> {
    await this.check();
    return this.inner.insertAudit(events);
  }

  async get(serialOrFingerprint: string): Promise<CertificateRecord | null> {
    await this.check();
    return this.inner.get(serialOrFingerprint);
  }

  async list(filter: CertificateFilter): Promise<Page<CertificateRecord>> {
    await this.check();
    return this.inner.list(filter);
  }

  async count(): Promise<number> {
    await this.check();
    return this.inner.count();
  }

  async latestPerIdentity(expiringBefore: Date, now: Date, options?: LatestPerIdentityOptions): Promise<CertificateRecord[]> {
    await this.check();
    return this.inner.latestPerIdentity(expiringBefore, now, options);
  }

  async recordSnapshots(snapshots: readonly Snapshot[], at: Date): Promise<void> {
    await this.check();
    return this.inner.recordSnapshots(snapshots, at);
  }

  async discoveredExpiring(expiringBefore: Date): Promise<DiscoveredCertificate[]> {
    await this.check();
    return this.inner.discoveredExpiring(expiringBefore);
  }

  async forgetPlaces<S extends RecordSource>(sources: readonly S[]): Promise<S[]> {
    await this.check();
    return this.inner.forgetPlaces(sources);
  }

  async places(prefix: `discovered:${string}`): Promise<PlaceSummary[]> {
    await this.check();
    return this.inner.places(prefix);
  }

  async pruneExpired(before: Date): Promise<number> {
    await this.check();
    return this.inner.pruneExpired(before);
  }

  async pruneAudit(before: Date): Promise<number> {
    await this.check();
    return this.inner.pruneAudit(before);
  }

  async ping(): Promise<void> {
    await this.check();
    return this.inner.ping();
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    await this.inner.close();
  }
}
