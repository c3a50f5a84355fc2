/**
 * Expiry monitoring: which CA certificates are close to (or past) their end, which workload
 * identities stopped renewing, and which certificates found by discovery expire soon.
 *
 * CA certificates. A certificate is `expired` once `now` is past its notAfter, `warning` while
 * fewer than `warnBefore` seconds are left (notAfter - now <= warnBefore), `ok` otherwise.
 *
 * Stale identities. istio-agent (and ztunnel) renew a workload certificate when about half of its
 * lifetime is left (SECRET_GRACE_PERIOD_RATIO 0.5, plus up to 1% jitter), so the latest
 * certificate of a healthy workload always has roughly half of its lifetime, or more, left. An
 * identity is reported as stale when its latest certificate (any source, as
 * `InventoryStore.latestPerIdentity` picks it) was issued by meshcert (a discovered certificate
 * is a snapshot: its renewals elsewhere are never seen) and:
 *   1. has not expired yet and expires within the window (`now <= notAfter < now + within`), and
 *   2. has less than {@link STALE_REMAINING_FRACTION} (one third) of its lifetime left,
 * i.e. the agent is overdue by at least a sixth of the lifetime: the workload is gone, stuck, or
 * cannot reach meshcert. Rule 2 keeps short-lived certificates of healthy workloads (24h
 * certificates with a 7-day window, say) out of the report; rule 1 bounds how far ahead one looks.
 * Identities whose latest certificate has already expired are history, not an alert (the store
 * leaves them out).
 */
import type { X509Certificate } from 'node:crypto';
import { existsSync } from 'node:fs';
import { MAX_PEM_BYTES, readTextFile } from '../fs/read-file.js';
import { caPath } from '../ca/files.js';
import { caBundleProblem, parsePemBundle } from '../x509/pem.js';
import { placeName } from './common.js';
import { formatDn } from './record-from-cert.js';
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
  // Node's parser only, which read the file: a stricter one (the inventory's, for SANs) could
  // refuse one odd certificate and with it the whole report, the monitor's warnings included.
  return certs.map(({ role, issuer, cert }) => {
    const notAfter = new Date(Date.parse(cert.validTo));
    return {
      role,
      issuer,
      subject: formatDn(cert.subject),
      fingerprint: cert.fingerprint256.replace(/:/g, '').toLowerCase(),
      notAfter,
      secondsLeft: Math.floor((notAfter.getTime() - now.getTime()) / 1000),
      state: expiryState(notAfter, now, warnBefore),
    };
  });
}

/**
 * The CA certificates of a CA directory (Istio layout), for {@link caExpiryReport}: roots from
 * root-cert.pem, the signing certificate (ca-cert.pem) and the intermediates of cert-chain.pem
 * (self-signed entries count as roots; duplicates are skipped), plus a serving certificate file
 * when given. Unlike loadCaDir it checks no validity, key or chain: expired and not-yet-valid
 * certificates are exactly what the report is for. Unreadable or unparsable files, files that are
 * empty or cut short (caBundleProblem), and ca-cert.pem or root-cert.pem missing beside the other
 * are returned as `problems`, never thrown (a missing cert-chain.pem is none).
 */
export function readCaCertificates(caDir: string, issuer: string, servingCertFile: string | null = null): { certs: CaCertificateInput[]; problems: string[] } {
  const certs: CaCertificateInput[] = [];
  const problems: string[] = [];
  const seen = new Set<string>();
  const add = (role: CaRole, cert: X509Certificate): void => {
    if (seen.has(cert.fingerprint256)) return;
    seen.add(cert.fingerprint256);
    certs.push({ role, issuer, cert });
  };
  const read = (path: string, what: string, required = false): X509Certificate[] => {
    if (!existsSync(path)) {
      if (required) problems.push(`${what} ${path} does not exist`);
      return [];
    }
    let text: string;
    try {
      text = readTextFile(path, MAX_PEM_BYTES);
    } catch (e) {
      problems.push(`${what} ${path}: ${(e as Error).message}`);
      return [];
    }
    // A file emptied or cut short (a rotation half written) parses as fewer certificates, or
    // none: a problem, so the monitor keeps what it last read (and says so), not a count that
    // drops and resolves an expiring CA's alert. What serve would refuse to load, as it does.
    const problem = caBundleProblem(text);
    if (problem !== undefined) problems.push(`${what} ${path}: ${problem}`);
    try {
      return parsePemBundle(text);
    } catch {
      return []; // said above: a block that does not parse is a caBundleProblem
    }
  };
  // A served CA directory has both of these (loadCaDir requires them); cert-chain.pem is optional.
  const served = existsSync(caPath(caDir, 'cert')) || existsSync(caPath(caDir, 'root'));
  for (const r of read(caPath(caDir, 'root'), 'CA root file', served)) add('root', r);
  for (const c of [...read(caPath(caDir, 'cert'), 'CA certificate file', served), ...read(caPath(caDir, 'chain'), 'CA chain file')]) {
    add(c.issuer === c.subject && c.checkIssued(c) ? 'root' : 'intermediate', c);
  }
  if (certs.length === 0) problems.push(`no CA certificates in ${caDir}`);
  if (servingCertFile !== null) {
    const serving = read(servingCertFile, 'serving certificate file');
    if (serving[0] !== undefined) add('serving', serving[0]);
    else if (!existsSync(servingCertFile)) problems.push(`serving certificate file ${servingCertFile} does not exist`);
  }
  return { certs, problems };
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
  const latest = await store.latestPerIdentity(new Date(now.getTime() + within * 1000), now, { maxRemainingFraction: fraction });
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

export interface ExpiringDiscovered {
  /** The place, without `discovered:` (`file:/etc/tls/web.pem`, `endpoint:db:5432`...). */
  where: string;
  record: CertificateRecord;
  /** When discovery last saw the place (its latest snapshot holds this certificate). */
  seenAt: Date;
  /** Whole seconds until notAfter (negative once expired). */
  secondsLeft: number;
  /** expiryState's, never 'ok': the store returns only certificates ending within the window. */
  state: Exclude<ExpiryState, 'ok'>;
}

/**
 * The certificates that places found by discovery served at their latest sighting and that expire
 * within `within` seconds of `now`, or have expired (`InventoryStore.discoveredExpiring`): a
 * certificate renewed where it is served leaves the report once discovery sees the place again.
 * Ordered by notAfter. A window of 0 still reports expired ones.
 */
export async function discoveredExpiring(store: Pick<InventoryStore, 'discoveredExpiring'>, now: Date, within: number): Promise<ExpiringDiscovered[]> {
  const found = await store.discoveredExpiring(new Date(now.getTime() + within * 1000));
  return found.map(({ record, source, seenAt }) => ({
    where: placeName(source),
    record,
    seenAt,
    secondsLeft: Math.floor((record.notAfter.getTime() - now.getTime()) / 1000),
    state: expiryState(record.notAfter, now, within) as Exclude<ExpiryState, 'ok'>,
  }));
}
