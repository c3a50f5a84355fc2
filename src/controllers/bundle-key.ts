import { X509Certificate } from 'node:crypto';

export const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

export function pemCerts(pem: string): X509Certificate[] {
  return (pem.match(PEM_CERT) ?? []).map((b) => new X509Certificate(b));
}

/**
 * A comparable identity of a PEM bundle: the set of certificates, order, whitespace and text
 * around the blocks ignored. A bundle that does not parse is only equal to the same text.
 */
export function bundleKey(pem: string): string {
  try {
    return pemCerts(pem)
      .map((c) => c.fingerprint256)
      .sort()
      .join(',');
  } catch {
    return `unparsable:${pem}`;
  }
}
