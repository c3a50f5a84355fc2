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
}

export function localServingCertIssuer(issuer: () => Pick<LocalIssuer, 'sign'>, o: LocalServingIssuerOptions = {}): ServingCertIssuer {
  const backdateMs = o.backdateMs ?? 120_000;
  const clock = o.now ?? Date.now;
  return async (dnsNames: string[], lifetimeSeconds: number): Promise<IssuedServingCert> => {
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
