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

/**
 * Records every issuance and audits every refusal, into a sink. No secrets: identities and codes
 * only. An issuance's audit entry is its certificate record (who asked, for which identity, when,
 * under which rule, serial): writing a second row for it would double the store's write load at
 * thousands of certificates per second for no information.
 */
export function inventoryObserver(sink: RecordSink): IssuanceObserver {
  return {
    issued(cert, ctx) {
      sink.record(recordFromIssued(cert, ctx));
    },
    refused(code, reason, ctx) {
      sink.recordAudit({
        at: new Date(),
        requester: storable(ctx.caller ?? null),
        identity: null,
        cluster: storable(ctx.clusterId || null),
        decision: 'refused',
        code,
        reason: storable(reason),
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
