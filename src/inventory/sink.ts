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
    cluster: ctx.clusterId || null,
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

/** Refusals of callers nobody vouched for, recorded one by one per second and process; the rest are summed. */
export const ANONYMOUS_AUDIT_PER_SECOND = 50;
/** The longest refusal text kept (refusals quote what the caller sent). */
const MAX_REASON = 1024;
/** What the `clusterid` header may hold to be stored as it is (the log applies the same rule). */
const STORABLE_CLUSTER = /^[A-Za-z0-9._-]{1,63}$/;

/**
 * Records every issuance and audits every refusal, into a sink. No secrets: identities and codes
 * only. An issuance's audit entry is its certificate record (who asked, for which identity, when,
 * under which rule, serial): writing a second row for it would double the store's write load at
 * thousands of certificates per second for no information.
 *
 * Refusals of callers that did not authenticate are what anyone who reaches the port can produce
 * at will: each second, the first ANONYMOUS_AUDIT_PER_SECOND get their own row and the rest one
 * row that counts them, so junk cannot fill the store's disk (audit rows are kept for a year).
 * What a caller sends is stored only within bounds: a `clusterid` that is no plausible cluster
 * name is left out, and a refusal's text is cut at 1 KiB.
 */
export function inventoryObserver(sink: RecordSink, now: () => number = Date.now): IssuanceObserver {
  let second = 0;
  let anonymous = 0;
  let summed: { count: number; codes: Set<string> } | undefined;
  const flushSummed = (): void => {
    if (!summed) return;
    sink.recordAudit({
      at: new Date(second * 1000),
      requester: null,
      identity: null,
      cluster: null,
      decision: 'refused',
      code: [...summed.codes].sort().join(','),
      reason: `${summed.count} more refusals of unauthenticated calls in this second, not recorded one by one (over ${ANONYMOUS_AUDIT_PER_SECOND} a second)`,
    });
    summed = undefined;
  };
  return {
    issued(cert, ctx) {
      sink.record(recordFromIssued(cert, ctx));
    },
    refused(code, reason, ctx) {
      if (!ctx.caller) {
        const t = Math.floor(now() / 1000);
        if (t !== second) {
          flushSummed();
          second = t;
          anonymous = 0;
        }
        if (++anonymous > ANONYMOUS_AUDIT_PER_SECOND) {
          if (!summed) {
            summed = { count: 0, codes: new Set() };
            // Written when the second is over, whether or not another refusal comes to roll it.
            setTimeout(() => {
              if (Math.floor(now() / 1000) !== second) {
                flushSummed();
              }
            }, 1100).unref();
          }
          summed.count++;
          summed.codes.add(code);
          return;
        }
      }
      sink.recordAudit({
        at: new Date(),
        requester: storable(ctx.caller ?? null),
        identity: null,
        cluster: ctx.clusterId && STORABLE_CLUSTER.test(ctx.clusterId) ? ctx.clusterId : null,
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
