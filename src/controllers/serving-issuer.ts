/**
 * A ServingCertIssuer (for IstiodTlsController) backed by meshcert's LocalIssuer, shaped as
 * src/serving/serving-cert.ts issues meshcert's own serving certificate: a fresh P-256 key per
 * issue, NotBefore backdated, tls.crt = leaf + intermediates, ca.crt = the root bundle.
 * `issuer` (and `caBundle`) are read at every issue, so a reloaded or rotated CA is picked up.
 */
import { generateKeyPairSync } from 'node:crypto';
import type { LocalIssuer } from '../issuer/local.js';
import type { IssuedServingCert, ServingCertIssuer } from './istiod-tls.js';

export interface LocalServingIssuerOptions {
  /** NotBefore this far in the past (clock skew). Default 120000 ms. */
  readonly backdateMs?: number;
  /**
   * ca.crt to write; default the issuer's own root bundle. With several configured CAs pass the
   * union bundle (IssuerRegistry#rootBundlePem), the same one the root ConfigMap distributes.
   */
  readonly caBundle?: () => string;
  readonly now?: () => number;
  /** Told of each certificate issued (its PEM and the issuer's name), for the inventory; must not throw. */
  readonly onIssued?: (leafPem: string, issuerName: string) => void;
}

/** The shortest validity worth writing (the controller renews at 2/3 of a certificate's life). */
const MIN_USEFUL_LIFETIME_MS = 10 * 60_000;

export function localServingCertIssuer(issuer: () => Pick<LocalIssuer, 'sign' | 'name'>, o: LocalServingIssuerOptions = {}): ServingCertIssuer {
  const backdateMs = o.backdateMs ?? 120_000;
  const clock = o.now ?? Date.now;
  return async (dnsNames: string[], lifetimeSeconds: number): Promise<IssuedServingCert> => {
    const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const now = clock();
    const ca = issuer();
    const leaf = ca.sign({
      spki: publicKey.export({ type: 'spki', format: 'der' }),
      uris: [],
      dnsNames,
      notBefore: new Date(now - backdateMs),
      notAfter: new Date(now + lifetimeSeconds * 1000),
    });
    // A signing CA near its end caps the leaf there: one that would be due for renewal as soon as
    // it is written makes the controller rewrite the Secret in a loop. Refused instead, so the
    // controller retries with backoff (and says why) until the CA is renewed.
    const lastsMs = leaf.notAfter.getTime() - now;
    if (lastsMs < MIN_USEFUL_LIFETIME_MS) {
      throw new Error(`the signing CA ends at ${leaf.notAfter.toISOString()}: a certificate for istiod would last only ${Math.max(0, Math.round(lastsMs / 1000))} s; renew or rotate the CA`);
    }
    o.onIssued?.(leaf.pem, ca.name);
    const chain = leaf.chainPem; // [...intermediates, rootBundle]
    return {
      certChainPem: [leaf.pem, ...chain.slice(0, -1)].join(''),
      keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
      caPem: o.caBundle?.() ?? chain[chain.length - 1] ?? '',
      notAfter: leaf.notAfter,
    };
  };
}
