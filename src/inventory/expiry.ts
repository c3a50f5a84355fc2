/**
 * Expiry monitoring: which CA certificates are close to (or past) their end, and which workload
 * identities stopped renewing.
 *
 * CA certificates. A certificate is `expired` once `now` is past its notAfter, `warning` while
 * fewer than `warnBefore` seconds are left (notAfter - now <= warnBefore), `ok` otherwise.
 *
 * Stale identities. istio-agent (and ztunnel) renew a workload certificate when about half of its
 * lifetime is left (SECRET_GRACE_PERIOD_RATIO 0.5, plus up to 1% jitter), so the latest
 * certificate of a healthy workload always has roughly half of its lifetime, or more, left. An
 * identity is reported as stale when its latest certificate (any source, as
 * `InventoryStore.latestPerIdentity` picks it):
 *   1. has not expired yet and expires within the window (`now <= notAfter < now + within`), and
 *   2. has less than {@link STALE_REMAINING_FRACTION} (one third) of its lifetime left,
 * i.e. the agent is overdue by at least a sixth of the lifetime: the workload is gone, stuck, or
 * cannot reach meshcert. Rule 2 keeps short-lived certificates of healthy workloads (24h
 * certificates with a 7-day window, say) out of the report; rule 1 bounds how far ahead one looks.
 * Identities whose latest certificate has already expired are history, not an alert (the store
 * leaves them out).
 */
import type { X509Certificate } from 'node:crypto';
import { certificateDetails, formatDn } from './record-from-cert.js';
import type { CertificateRecord, InventoryStore } from './types.js';

export type CaRole = 'root' | 'intermediate' | 'serving';
export type ExpiryState = 'ok' | 'warning' | 'expired';

export interface CaCertificateInput {
  role: CaRole;
  issuer: string;
  cert: X509Certificate;
}

export interface CaExpiryEntry {
  role: CaRole;
  /** The issuer (CA) name in meshcert's config this certificate belongs to. */
  issuer: string;
  /** Subject DN, "C=US, O=acme, CN=x". */
  subject: string;
  /** SHA-256 of the DER, lowercase hex. */
  fingerprint: string;
  notAfter: Date;
  /** Whole seconds until notAfter (negative once expired). */
  secondsLeft: number;
  state: ExpiryState;
}

/** Fraction of the lifetime below which a latest certificate counts as not renewed. */
export const STALE_REMAINING_FRACTION = 1 / 3;

/** The state of a certificate ending at `notAfter`, seen at `now`, warning `warnBefore` seconds ahead. */
export function expiryState(notAfter: Date, now: Date, warnBefore: number): ExpiryState {
  const msLeft = notAfter.getTime() - now.getTime();
  if (msLeft < 0) return 'expired';
  return msLeft <= warnBefore * 1000 ? 'warning' : 'ok';
}

/** One entry per certificate, in input order. Pure: `now` is the reference time. */
export function caExpiryReport(certs: readonly CaCertificateInput[], now: Date, warnBefore: number): CaExpiryEntry[] {
  return certs.map(({ role, issuer, cert }) => {
    const d = certificateDetails(cert);
    return {
      role,
      issuer,
      subject: d.subject ?? formatDn(cert.subject),
      fingerprint: d.fingerprint,
      notAfter: d.notAfter,
      secondsLeft: Math.floor((d.notAfter.getTime() - now.getTime()) / 1000),
      state: expiryState(d.notAfter, now, warnBefore),
    };
  });
}

export interface StaleIdentity {
  spiffeId: string;
  namespace: string | null;
  serviceAccount: string | null;
  cluster: string | null;
  /** The identity's latest certificate. */
  latest: CertificateRecord;
  /** Whole seconds until the latest certificate's notAfter. */
  secondsLeft: number;
  /** Fraction of its lifetime the latest certificate has left, in [0, 1]. */
  remainingFraction: number;
}

/** Fraction of the lifetime [notBefore, notAfter] left at `now`, clamped to [0, 1] (0 for a zero lifetime). */
export function remainingFraction(r: Pick<CertificateRecord, 'notBefore' | 'notAfter'>, now: Date): number {
  const lifetime = r.notAfter.getTime() - r.notBefore.getTime();
  if (lifetime <= 0) return 0;
  return Math.min(1, Math.max(0, (r.notAfter.getTime() - now.getTime()) / lifetime));
}

/**
 * Whether `latest` (an identity's latest certificate) means the identity is stale at `now` with a
 * window of `within` seconds; see the module comment for the rule.
 */
export function isStale(latest: Pick<CertificateRecord, 'notBefore' | 'notAfter'>, now: Date, within: number, fraction = STALE_REMAINING_FRACTION): boolean {
  const t = now.getTime();
  const end = latest.notAfter.getTime();
  if (end < t || end >= t + within * 1000) return false;
  return remainingFraction(latest, now) < fraction;
}

/**
 * Identities whose latest certificate expires within `within` seconds of `now` and was not
 * renewed in time (see the module comment). Ordered by notAfter, then SPIFFE ID.
 */
export async function staleIdentities(
  store: Pick<InventoryStore, 'latestPerIdentity'>,
  now: Date,
  within: number,
  options: { fraction?: number } = {},
): Promise<StaleIdentity[]> {
  const fraction = options.fraction ?? STALE_REMAINING_FRACTION;
  const latest = await store.latestPerIdentity(new Date(now.getTime() + within * 1000), now);
  const out: StaleIdentity[] = [];
  for (const r of latest) {
    if (r.spiffeId === null || !isStale(r, now, within, fraction)) continue;
    out.push({
      spiffeId: r.spiffeId,
      namespace: r.namespace,
      serviceAccount: r.serviceAccount,
      cluster: r.cluster,
      latest: r,
      secondsLeft: Math.floor((r.notAfter.getTime() - now.getTime()) / 1000),
      remainingFraction: remainingFraction(r, now),
    });
  }
  return out;
}
