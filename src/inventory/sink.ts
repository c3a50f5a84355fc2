import { X509Certificate } from 'node:crypto';
import { isPlausibleClusterId } from '../auth/chain.js';
import { sha256Hex } from '../crypto/digest.js';
import type { IssuedCertificate } from '../authority/authority.js';
import type { CallContext, IssuanceObserver } from '../authority/observer.js';
import type { Logger } from '../log/logger.js';
import { recordFromCertificate } from './record-from-cert.js';
import type { AuditEvent, CertificateRecord } from './types.js';

/** Where issuance hands records: the write-behind recorder in-process, or the primary over IPC. */
export interface RecordSink {
  record(rec: CertificateRecord): void;
  /**
   * Queues a record and resolves once it is stored (inventory.failClosed: a certificate is
   * answered only then); rejects when it cannot be. Unbounded in time: the caller bounds it.
   */
  keep(rec: CertificateRecord): Promise<void>;
  recordAudit(ev: AuditEvent): void;
  /** False when inventory.failClosed is on and records cannot be kept now. */
  accepting(): boolean;
}

/**
 * The record of a certificate meshcert issued not through CreateCertificate but for itself or
 * istiod (its serving certificate, istiod-tls): read from the leaf, with no caller; `requester`
 * says which of meshcert's own parts asked.
 */
export function recordOfOwnCertificate(leafPem: string, issuer: string, requester: string, now = new Date()): CertificateRecord {
  return recordFromCertificate(new X509Certificate(leafPem), { source: 'issued', issuer, now, requester });
}

/** The requesters of the certificates meshcert issues its own parts (see recordOfOwnCertificate). */
export const SERVING_CERT_REQUESTER = 'meshcert:server.tls';
export const ISTIOD_TLS_REQUESTER = 'meshcert:istio.istiodTls';

/**
 * Records each certificate one of meshcert's own parts was issued, into `record` (the inventory's
 * intake); a record the inventory refuses is logged, never thrown into the renewal that issued it.
 */
export function ownCertificateRecorder(record: (rec: CertificateRecord) => void, requester: string, logger: Logger): (leafPem: string, issuerName: string) => void {
  return (leafPem, issuerName) => {
    try {
      record(recordOfOwnCertificate(leafPem, issuerName, requester));
    } catch (err) {
      logger.error({ err, requester }, 'the inventory refused the record of a certificate meshcert issued itself');
    }
  };
}

/** The inventory record of a certificate meshcert just issued (no re-parsing: we know every field). */
export function recordFromIssued(cert: IssuedCertificate, ctx: Pick<CallContext, 'clusterId'>, now = new Date()): CertificateRecord {
  const w = cert.workload;
  return {
    serial: cert.leaf.serial,
    fingerprint: sha256Hex(cert.leaf.der),
    spiffeId: cert.spiffeId,
    namespace: w?.namespace ?? null,
    serviceAccount: w?.serviceAccount ?? null,
    // The cluster the policy judged it under: an absent clusterid is the default cluster.
    cluster: cert.cluster ?? (ctx.clusterId || null),
    issuer: cert.issuer,
    keyAlgorithm: cert.key.algorithm,
    keySize: cert.key.size,
    notBefore: cert.leaf.notBefore,
    notAfter: cert.leaf.notAfter,
    issuedAt: now,
    requester: cert.caller.identities[0] ?? null,
    policyRule: cert.policyRule ?? null,
    source: 'issued',
    dnsNames: [...(cert.dnsNames ?? [])],
  };
}

/**
 * Rows for refusals of callers nobody vouched for, per replica: a burst of this many, then one a
 * second (a token bucket). About 86,000 rows a day at most, however fast junk arrives.
 */
export const ANONYMOUS_AUDIT_BURST = 50;
export const ANONYMOUS_AUDIT_PER_SECOND = 1;
/**
 * The same bound for each authenticated caller: a workload whose token or certificate is valid
 * (a revoked certificate's holder, one refused by policy or its rate limit) can refuse itself as
 * fast as unauthenticated junk can.
 */
export const CALLER_AUDIT_BURST = 50;
export const CALLER_AUDIT_PER_SECOND = 1;
/** Callers whose buckets are kept at once, per process; beyond, the least recently refused one's is written out and dropped. */
export const MAX_TRACKED_CALLERS = 10_000;
/** The refusals beyond a bucket are counted in one row per this many seconds. */
export const AUDIT_SUMMARY_SECONDS = 60;
/** The longest refusal text kept (refusals quote what the caller sent). */
const MAX_REASON = 1024;

/** An IssuanceObserver whose pending summary can be written before the sink closes. */
export interface InventoryObserver extends IssuanceObserver {
  /** Writes the count of refusals not yet recorded (at shutdown, before the sink closes). */
  flush(): void;
}

/** What a bucket did not record one by one since `since`: written as one row. */
interface Uncounted {
  readonly since: number;
  count: number;
  readonly codes: Set<string>;
}

/**
 * A token bucket of audit rows: admit() says whether a refusal gets its own row; those it refuses
 * are counted, and the count is written (by `write`) when its minute is over or at flush().
 */
class RowBucket {
  private tokens: number;
  private refilledAt: number;
  private uncounted: Uncounted | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly burst: number,
    private readonly perSecond: number,
    private readonly now: () => number,
    private readonly write: (u: Uncounted) => void,
  ) {
    this.tokens = burst;
    this.refilledAt = now();
  }

  admit(code: string): boolean {
    const t = this.now();
    this.tokens = Math.min(this.burst, this.tokens + (Math.max(0, t - this.refilledAt) / 1000) * this.perSecond);
    this.refilledAt = t;
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return true;
    }
    if (this.uncounted && t - this.uncounted.since >= AUDIT_SUMMARY_SECONDS * 1000) this.flush();
    if (!this.uncounted) {
      this.uncounted = { since: t, count: 0, codes: new Set() };
      // Written when its minute is over, whether or not another refusal comes to roll it.
      this.timer = setTimeout(() => this.flush(), AUDIT_SUMMARY_SECONDS * 1000);
      this.timer.unref();
    }
    this.uncounted.count++;
    this.uncounted.codes.add(code);
    return false;
  }

  flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const u = this.uncounted;
    this.uncounted = undefined;
    if (!u) return;
    try {
      this.write(u);
    } catch {
      // The sink has closed (shutdown): nothing left to write to.
    }
  }
}

/**
 * Records every issuance and audits refusals (within the bounds below), into a sink. No secrets:
 * identities and codes only. An issuance's audit entry is its certificate record (who asked, for which identity, when,
 * under which rule, serial): writing a second row for it would double the store's write load at
 * thousands of certificates per second for no information.
 *
 * Audit rows are kept for a year, so refusals get rows from token buckets: one for callers that
 * did not authenticate (what anyone who reaches the port can produce at will), and one for each
 * authenticated caller (a node agent's: for each workload it asked for); a burst of 50, then one a
 * second, per replica (`share` is this process's part). The rest are counted in one row a minute
 * per bucket and process (codes listed), so neither junk nor a misbehaving workload can fill the
 * store's disk. An unauthenticated call's `clusterid` is stored only when it could be a cluster
 * name, and any refusal's text is cut at 1 KiB. `issuedKept`: certificates' records are stored by
 * the call itself before it answers (inventory.failClosed), so `issued` writes none.
 */
export function inventoryObserver(sink: RecordSink, now: () => number = Date.now, share = 1, o: { issuedKept?: boolean } = {}): InventoryObserver {
  /**
   * A bucket of rows for one kind of refusal, whose uncounted refusals are written as one row under
   * `requester` and `identity`. Each of N worker processes keeps 1/N of it, so the replica's bound
   * does not grow with N.
   */
  const rows = (burst: number, perSecond: number, requester: string | null, identity: string | null, whose: string): RowBucket =>
    new RowBucket(Math.max(1, Math.ceil(burst * share)), perSecond * share, now, (u) =>
      sink.recordAudit({
        at: new Date(u.since),
        requester,
        identity,
        cluster: null,
        decision: 'refused',
        code: [...u.codes].sort().join(','),
        reason: `${u.count} more refusals of ${whose} from this time on, not recorded one by one (over ${burst} at once or ${perSecond} a second)`,
      }),
    );
  const anonymous = rows(ANONYMOUS_AUDIT_BURST, ANONYMOUS_AUDIT_PER_SECOND, null, null, 'unauthenticated calls');
  /**
   * By caller, and for a node agent (ztunnel) by the workload it asked for: every ztunnel shares
   * one service account, and one pod refused in a loop must not take the rows of the others.
   * Least recently refused first (a Map keeps insertion order; each refusal moves its key last).
   */
  const callers = new Map<string, RowBucket>();
  const callerRows = (caller: string, identity: string | undefined): RowBucket => {
    const key = identity === undefined ? caller : `${caller}\n${identity}`;
    let bucket = callers.get(key);
    if (bucket) callers.delete(key);
    else {
      if (callers.size >= MAX_TRACKED_CALLERS) {
        const [oldest, dropped] = callers.entries().next().value as [string, RowBucket];
        dropped.flush();
        callers.delete(oldest);
      }
      const whose = identity === undefined ? 'calls by this caller' : 'calls by this caller for this identity';
      bucket = rows(CALLER_AUDIT_BURST, CALLER_AUDIT_PER_SECOND, storable(caller), storable(identity ?? null), whose);
    }
    callers.set(key, bucket);
    return bucket;
  };
  return {
    flush() {
      anonymous.flush();
      for (const bucket of callers.values()) bucket.flush();
    },
    issued(cert, ctx) {
      // With `issuedKept` the call stored it before answering (RecordSink.keep).
      if (!o.issuedKept) sink.record(recordFromIssued(cert, ctx));
    },
    refused(code, reason, ctx) {
      // A refusal of a certificate already signed gets its row whatever the bucket says: such rows
      // come no faster than certificates are signed, and each names one nobody received.
      if (!ctx.serial && !(ctx.caller ? callerRows(ctx.caller, ctx.identity) : anonymous).admit(code)) return;
      // An authenticated caller's cluster is a configured one (authentication checked the header).
      const cluster = ctx.caller ? ctx.clusterId || null : ctx.clusterId && isPlausibleClusterId(ctx.clusterId) ? ctx.clusterId : null;
      sink.recordAudit({
        at: new Date(),
        requester: storable(ctx.caller ?? null),
        identity: storable(ctx.identity ?? null),
        cluster: storable(cluster),
        decision: 'refused',
        code,
        reason: storable(reason.length > MAX_REASON ? `${reason.slice(0, MAX_REASON)}...` : reason),
        // A certificate signed, then not delivered (inventory.failClosed): its record may exist.
        ...(ctx.serial ? { serial: ctx.serial } : {}),
      });
    },
  };
}

/**
 * A refusal's text can quote what the caller sent; the stores refuse NUL (PostgreSQL cannot hold
 * it) and unpaired surrogates (no UTF-8 can) in text, and an audit event they refuse must not be
 * what an unauthenticated caller can produce.
 */
function storable<T extends string | null>(text: T): T {
  return (text === null ? text : text.replace(UNSTORABLE, '\uFFFD')) as T;
}

// NUL on purpose: the one control character the stores refuse.
// eslint-disable-next-line no-control-regex
const UNSTORABLE = /\u0000|\p{Cs}/gu;
