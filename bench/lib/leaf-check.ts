import { X509Certificate } from 'node:crypto';

/**
 * Why `leafPem` is not the answer to any of the requests (`keyOf`: each SPIFFE ID asked for, with
 * its CSR's SubjectPublicKeyInfo DER), or undefined when it is: its one URI SAN is an identity asked
 * for, and its key is that request's. A leaf for another caller, or one issued earlier for another
 * key, would still verify as a chain.
 */
export function leafMismatch(leafPem: string, keyOf: ReadonlyMap<string, Buffer>): string | undefined {
  const leaf = new X509Certificate(leafPem);
  const uris = (leaf.subjectAltName ?? '').split(', ').filter((n) => n.startsWith('URI:')).map((n) => n.slice(4));
  if (uris.length !== 1) return `${uris.length} URI SANs (${uris.join(' ')})`;
  const expected = keyOf.get(uris[0]!);
  if (!expected) return `${uris[0]} was not asked for`;
  if (!leaf.publicKey.export({ type: 'spki', format: 'der' }).equals(expected)) return `${uris[0]} certified with another key than its CSR's`;
  return undefined;
}
