/**
 * A ServingCertIssuer (for IstiodTlsController) backed by meshcert's LocalIssuer, shaped as
 * src/serving/serving-cert.ts issues meshcert's own serving certificate: a fresh P-256 key per
 * issue, NotBefore backdated, tls.crt = leaf + intermediates, ca.crt = the root bundle.
 * `issuer` (and `caBundle`) are read at every issue, so a reloaded or rotated CA is picked up.
 */
import { generateKeyPairSync } from 'node:crypto';
export function localServingCertIssuer(issuer, o = {}) {
    const backdateMs = o.backdateMs ?? 120_000;
    const clock = o.now ?? Date.now;
    return async (dnsNames, lifetimeSeconds) => {
        const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
        const now = clock();
        const leaf = issuer().sign({
            spki: publicKey.export({ type: 'spki', format: 'der' }),
            uris: [],
            dnsNames,
            notBefore: new Date(now - backdateMs),
            notAfter: new Date(now + lifetimeSeconds * 1000),
        });
        const chain = leaf.chainPem; // [...intermediates, rootBundle]
        return {
            certChainPem: [leaf.pem, ...chain.slice(0, -1)].join(''),
            keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
            caPem: o.caBundle?.() ?? chain[chain.length - 1] ?? '',
            notAfter: leaf.notAfter,
        };
    };
}
//# sourceMappingURL=serving-issuer.js.map