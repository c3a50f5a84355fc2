import { existsSync, readFileSync } from 'node:fs';
import { caPath } from '../ca/files.js';
import { parsePemBundle } from '../x509/pem.js';
import { certificateDetails, formatDn } from './record-from-cert.js';
/** Fraction of the lifetime below which a latest certificate counts as not renewed. */
export const STALE_REMAINING_FRACTION = 1 / 3;
/** The state of a certificate ending at `notAfter`, seen at `now`, warning `warnBefore` seconds ahead. */
export function expiryState(notAfter, now, warnBefore) {
    const msLeft = notAfter.getTime() - now.getTime();
    if (msLeft < 0)
        return 'expired';
    return msLeft <= warnBefore * 1000 ? 'warning' : 'ok';
}
/** One entry per certificate, in input order. Pure: `now` is the reference time. */
export function caExpiryReport(certs, now, warnBefore) {
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
/**
 * The CA certificates of a CA directory (Istio layout), for {@link caExpiryReport}: roots from
 * root-cert.pem, the signing certificate (ca-cert.pem) and the intermediates of cert-chain.pem
 * (self-signed entries count as roots; duplicates are skipped), plus a serving certificate file
 * when given. Unlike loadCaDir it checks no validity, key or chain: expired and not-yet-valid
 * certificates are exactly what the report is for. Unreadable or unparsable files are returned as
 * `problems`, never thrown; a missing file is no problem unless the directory holds no certificate.
 */
export function readCaCertificates(caDir, issuer, servingCertFile = null) {
    const certs = [];
    const problems = [];
    const seen = new Set();
    const add = (role, cert) => {
        if (seen.has(cert.fingerprint256))
            return;
        seen.add(cert.fingerprint256);
        certs.push({ role, issuer, cert });
    };
    const read = (path, what) => {
        if (!existsSync(path))
            return [];
        try {
            return parsePemBundle(readFileSync(path, 'utf8'));
        }
        catch (e) {
            problems.push(`${what} ${path}: ${e.message}`);
            return [];
        }
    };
    for (const r of read(caPath(caDir, 'root'), 'CA root file'))
        add('root', r);
    for (const c of [...read(caPath(caDir, 'cert'), 'CA certificate file'), ...read(caPath(caDir, 'chain'), 'CA chain file')]) {
        add(c.issuer === c.subject && c.checkIssued(c) ? 'root' : 'intermediate', c);
    }
    if (certs.length === 0)
        problems.push(`no CA certificates in ${caDir}`);
    if (servingCertFile !== null) {
        const serving = read(servingCertFile, 'serving certificate file');
        if (serving[0] !== undefined)
            add('serving', serving[0]);
        else if (!existsSync(servingCertFile))
            problems.push(`serving certificate file ${servingCertFile} does not exist`);
    }
    return { certs, problems };
}
/** Fraction of the lifetime [notBefore, notAfter] left at `now`, clamped to [0, 1] (0 for a zero lifetime). */
export function remainingFraction(r, now) {
    const lifetime = r.notAfter.getTime() - r.notBefore.getTime();
    if (lifetime <= 0)
        return 0;
    return Math.min(1, Math.max(0, (r.notAfter.getTime() - now.getTime()) / lifetime));
}
/**
 * Whether `latest` (an identity's latest certificate) means the identity is stale at `now` with a
 * window of `within` seconds; see the module comment for the rule.
 */
export function isStale(latest, now, within, fraction = STALE_REMAINING_FRACTION) {
    const t = now.getTime();
    const end = latest.notAfter.getTime();
    if (end < t || end >= t + within * 1000)
        return false;
    return remainingFraction(latest, now) < fraction;
}
/**
 * Identities whose latest certificate expires within `within` seconds of `now` and was not
 * renewed in time (see the module comment). Ordered by notAfter, then SPIFFE ID.
 */
export async function staleIdentities(store, now, within, options = {}) {
    const fraction = options.fraction ?? STALE_REMAINING_FRACTION;
    const latest = await store.latestPerIdentity(new Date(now.getTime() + within * 1000), now, { maxRemainingFraction: fraction });
    const out = [];
    for (const r of latest) {
        if (r.spiffeId === null || !isStale(r, now, within, fraction))
            continue;
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
//# sourceMappingURL=expiry.js.map