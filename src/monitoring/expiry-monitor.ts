import { caExpiryReport, discoveredExpiring, readCaCertificates, staleIdentities, type CaCertificateInput, type CaExpiryEntry } from '../inventory/expiry.js';
import type { InventoryStore } from '../inventory/types.js';
import type { Logger } from '../log/logger.js';
import type { InventoryMetrics } from '../metrics/ca-metrics.js';

export interface ExpiryMonitorOptions {
  readonly issuers: ReadonlyArray<{ name: string; dir: string }>;
  /** A user-supplied serving certificate (a self-issued one renews itself). */
  readonly servingCertFile?: string;
  /** Seconds. */
  readonly caWarnBefore: number;
  readonly staleWithin: number;
  /** Seconds; 0 reports only expired discovered certificates. */
  readonly discoveredWarnBefore: number;
  readonly interval: number;
}

/**
 * Periodically re-reads the CA directories (so rotated files are seen) and the inventory: warns
 * once per certificate and state when a CA certificate enters its warning window or expires, and
 * reports stale workload identities and discovered certificates that expire soon. Results go to
 * the log and to metrics.
 */
export class ExpiryMonitor {
  private timer: NodeJS.Timeout | undefined;
  private readonly warned = new Map<string, string>();
  /** Discovered certificates warned about, by place and fingerprint: their state then. */
  private discoveredWarned = new Map<string, string>();
  /** Stale identities warned about (SPIFFE IDs), while they stay stale. */
  private staleWarned = new Set<string>();
  /** Each issuer's CA certificates as last read in full, by issuer and files: see check(). */
  private lastRead = new Map<string, CaCertificateInput[]>();

  constructor(
    private o: ExpiryMonitorOptions,
    private readonly logger: Logger,
    private readonly metrics?: InventoryMetrics,
    private readonly store?: InventoryStore,
  ) {}

  private checking = false;
  private again = false;

  start(): void {
    void this.tick();
    this.timer = setInterval(() => void this.tick(), this.o.interval * 1000).unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.again = false;
  }

  /** A reloaded config: issuers added or removed, new windows; the next check uses them. */
  update(o: ExpiryMonitorOptions): void {
    const interval = this.o.interval;
    this.o = o;
    if (this.timer && o.interval !== interval) {
      clearInterval(this.timer);
      this.timer = setInterval(() => void this.tick(), o.interval * 1000).unref();
    }
    // Checked at once: a CA a reload added (or a narrower window) is not left unreported for an
    // interval; after the check under way, if there is one (it read the config before).
    if (this.timer) {
      if (this.checking) this.again = true;
      else void this.tick();
    }
  }

  /** A timer's check, skipped while the last one still runs (a slow store must not pile them up); a reload's is run after it (update). */
  private async tick(): Promise<void> {
    if (this.checking) return;
    this.checking = true;
    try {
      do {
        this.again = false;
        try {
          await this.check();
        } catch (err) {
          // Never an unhandled rejection: say so, and the next tick tries again.
          this.logger.error({ err }, 'expiry check failed');
        }
      } while (this.again);
    } finally {
      this.checking = false;
    }
  }

  async check(now = new Date()): Promise<{ ca: CaExpiryEntry[]; stale: number; discovered: number }> {
    const ca: CaExpiryEntry[] = [];
    const lastRead = new Map<string, CaCertificateInput[]>();
    let unreadable = 0;
    for (const [i, issuer] of this.o.issuers.entries()) {
      const servingCertFile = i === 0 ? (this.o.servingCertFile ?? null) : null;
      const key = JSON.stringify([issuer.name, issuer.dir, servingCertFile]);
      // Read without validity checks: an expired certificate is what we must report, not a reason to stop.
      const { certs, problems } = readCaCertificates(issuer.dir, issuer.name, servingCertFile);
      for (const problem of problems) this.logger.error({ issuer: issuer.name, problem }, 'expiry monitor cannot read a CA file');
      let report = certs;
      if (problems.length === 0) lastRead.set(key, certs);
      else {
        // A file that cannot be read now (a volume unmounted, a half-written rotation) keeps its
        // certificates as last read, judged against now: an expiring CA must not leave the count,
        // and resolve its alert, because its file broke. meshcert_ca_files_unreadable says so.
        unreadable++;
        const before = this.lastRead.get(key) ?? [];
        const readNow = new Set(certs.map((c) => c.cert.fingerprint256));
        report = [...certs, ...before.filter((c) => !readNow.has(c.cert.fingerprint256))];
        lastRead.set(key, report);
      }
      ca.push(...caExpiryReport(report, now, this.o.caWarnBefore));
    }
    // Issuers a reload removed are forgotten.
    this.lastRead = lastRead;
    this.metrics?.caFilesUnreadable.set(unreadable);
    for (const e of ca) {
      if (e.state === 'ok') continue;
      if (this.warned.get(e.fingerprint) === e.state) continue;
      this.warned.set(e.fingerprint, e.state);
      this.logger.warn(
        { issuer: e.issuer, role: e.role, subject: e.subject, notAfter: e.notAfter.toISOString(), daysLeft: Math.floor(e.secondsLeft / 86400), state: e.state },
        expiryMessage(e),
      );
    }
    // Certificates, not entries: a root several issuers share is one certificate to rotate.
    this.metrics?.caWarnings.set(new Set(ca.filter((e) => e.state !== 'ok').map((e) => e.fingerprint)).size);
    this.metrics?.caCheckedAt.set(now.getTime() / 1000);
    let stale = 0;
    let discovered = 0;
    if (this.store) {
      try {
        const s = await staleIdentities(this.store, now, this.o.staleWithin);
        stale = s.length;
        this.metrics?.staleIdentities.set(stale);
        this.metrics?.staleIdentitiesCheckedAt.set(now.getTime() / 1000);
        // Once per identity while it stays stale, as for CA and discovered certificates: one deleted
        // Deployment would otherwise log a warning every interval until its certificates expire.
        const fresh = s.filter((x) => !this.staleWarned.has(x.spiffeId));
        this.staleWarned = new Set(s.map((x) => x.spiffeId));
        if (fresh.length > 0) this.logger.warn({ count: fresh.length, total: stale, examples: fresh.slice(0, 5).map((x) => x.spiffeId) }, 'workload identities whose latest certificate was not renewed');
      } catch (err) {
        this.logger.warn({ err }, 'expiry monitor cannot query the inventory');
      }
      try {
        const d = await discoveredExpiring(this.store, now, this.o.discoveredWarnBefore);
        discovered = d.length;
        const expired = d.filter((x) => x.state === 'expired').length;
        this.metrics?.discoveredExpiring.set({ state: 'warning' }, discovered - expired);
        this.metrics?.discoveredExpiring.set({ state: 'expired' }, expired);
        this.metrics?.discoveredExpiringCheckedAt.set(now.getTime() / 1000);
        // Once per place, certificate and state, as for CA certificates; one that leaves the
        // report (renewed, forgotten) and comes back is warned about again.
        const key = (x: (typeof d)[number]): string => `${x.where}\n${x.record.fingerprint}`;
        const current = new Map(d.map((x) => [key(x), x.state]));
        const fresh = d.filter((x) => this.discoveredWarned.get(key(x)) !== x.state);
        this.discoveredWarned = current;
        if (fresh.length > 0) {
          this.logger.warn(
            {
              count: fresh.length,
              total: discovered,
              examples: fresh.slice(0, 5).map((x) => ({ where: x.where, subject: x.record.subject, serial: x.record.serial, notAfter: x.record.notAfter.toISOString(), state: x.state, seenAt: x.seenAt.toISOString() })),
            },
            'discovered certificates expire soon or have expired where they were last seen: renew them there, then run meshcert discover again (meshcert certs expiring lists them all)',
          );
        }
      } catch (err) {
        this.logger.warn({ err }, 'expiry monitor cannot query the inventory for discovered certificates');
      }
    }
    return { ca, stale, discovered };
  }
}

/** The warning for a certificate the CA serves or signs with: server.tls.certFile is replaced, not rotated. */
export function expiryMessage(e: Pick<CaExpiryEntry, 'role' | 'state'>): string {
  if (e.role === 'serving') return e.state === 'expired' ? 'serving certificate (server.tls.certFile) has expired' : 'serving certificate (server.tls.certFile) expires soon: replace the file (meshcert re-reads it)';
  return e.state === 'expired' ? 'CA certificate has expired' : 'CA certificate expires soon: rotate it (see README "CA rotation")';
}
