import { isPlausibleClusterId } from '../auth/chain.js';
import { sha256Hex } from '../crypto/digest.js';
import type { IssuedCertificate } from '../authority/authority.js';
import type { CallContext, IssuanceObserver } from '../authority/observer.js';
import type { AuditEvent, CertificateRecord } from './types.js';

/** Where issuance hands records: the write-behind recorder in-process, or the primary over IPC. */
export interface RecordSink {
  record(rec: CertificateRecord): void;
  recordAudit(ev: AuditEvent): void;
  /** False when inventory.failClosed is on and records cannot be kept now. */
  accepting(): boolean;
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
 * Rows for refusals of callers nobody vouched for, per process: a burst of this many, then one a
 * second (a token bucket). About 86,000 rows a day at most, however fast junk arrives.
 */
export const ANONYMOUS_AUDIT_BURST = 50;
export const ANONYMOUS_AUDIT_PER_SECOND = 1;
/** The refusals beyond the bucket are counted in one row per this many seconds. */
export const ANONYMOUS_SUMMARY_SECONDS = 60;
/** The longest refusal text kept (refusals quote what the caller sent). */
const MAX_REASON = 1024;

/** An IssuanceObserver whose pending summary can be written before the sink closes. */
export interface InventoryObserver extends IssuanceObserver {
  /** Writes the count of refusals not yet recorded (at shutdown, before the sink closes). */
  flush(): void;
}

/**
 * Records every issuance and audits every refusal, into a sink. No secrets: identities and codes
 * only. An issuance's audit entry is its certificate record (who asked, for which identity, when,
 * under which rule, serial): writing a second row for it would double the store's write load at
 * thousands of certificates per second for no information.
 *
 * Refusals of callers that did not authenticate are what anyone who reaches the port can produce
 * at will, and audit rows are kept for a year: they get rows from a token bucket (a burst of 50,
 * then one a second, per replica: `share` is this process's part of it), and the rest are counted
 * in one row a minute per process (codes listed), so junk cannot
 * fill the store's disk. Their `clusterid` is stored only when it could be a cluster name, and any
 * refusal's text is cut at 1 KiB.
 */
export function inventoryObserver(sink: RecordSink, now: () => number = Date.now, share = 1): InventoryObserver {
  // Each of N worker processes keeps 1/N of the bucket, so the replica's bound does not grow with N.
  const burst = Math.max(1, Math.ceil(ANONYMOUS_AUDIT_BURST * share));
  const perSecond = ANONYMOUS_AUDIT_PER_SECOND * share;
  let tokens = burst;
  let refilledAt = now();
  let summed: { since: number; count: number; codes: Set<string> } | undefined;
  let timer: NodeJS.Timeout | undefined;
  const flush = (): void => {
    if (timer) clearTimeout(timer);
    timer = undefined;
    const s = summed;
    summed = undefined;
    if (!s) return;
    try {
      sink.recordAudit({
        at: new Date(s.since),
        requester: null,
        identity: null,
        cluster: null,
        decision: 'refused',
        code: [...s.codes].sort().join(','),
        reason: `${s.count} more refusals of unauthenticated calls from this time on, not recorded one by one (over ${ANONYMOUS_AUDIT_BURST} at once or ${ANONYMOUS_AUDIT_PER_SECOND} a second)`,
      });
    } catch {
      // The sink has closed (shutdown): nothing left to write to.
    }
  };
  const admitAnonymous = (code: string): boolean => {
    const t = now();
    tokens = Math.min(burst, tokens + (Math.max(0, t - refilledAt) / 1000) * perSecond);
    refilledAt = t;
    if (tokens >= 1) {
      tokens -= 1;
      return true;
    }
    if (summed && t - summed.since >= ANONYMOUS_SUMMARY_SECONDS * 1000) flush();
    if (!summed) {
      summed = { since: t, count: 0, codes: new Set() };
      // Written when its minute is over, whether or not another refusal comes to roll it.
      timer = setTimeout(flush, ANONYMOUS_SUMMARY_SECONDS * 1000);
      timer.unref();
    }
    summed.count++;
    summed.codes.add(code);
    return false;
  };
  return {
    flush,
    issued(cert, ctx) {
      sink.record(recordFromIssued(cert, ctx));
    },
    refused(code, reason, ctx) {
      if (!ctx.caller && !admitAnonymous(code)) return;
      // An authenticated caller's cluster is a configured one (authentication checked the header).
      const cluster = ctx.caller ? ctx.clusterId || null : ctx.clusterId && isPlausibleClusterId(ctx.clusterId) ? ctx.clusterId : null;
      sink.recordAudit({
        at: new Date(),
        requester: storable(ctx.caller ?? null),
        identity: null,
        cluster: storable(cluster),
        decision: 'refused',
        code,
        reason: storable(reason.length > MAX_REASON ? `${reason.slice(0, MAX_REASON)}...` : reason),
      });
    },
  };
}

/**
 * A refusal's text can quote what the caller sent; the stores refuse NUL in text (PostgreSQL
 * cannot hold it), and an audit event they refuse must not be what an unauthenticated caller
 * can produce.
 */
function storable<T extends string | null>(text: T): T {
  return (text === null || !text.includes('\u0000') ? text : text.replaceAll('\u0000', '\uFFFD')) as T;
}
