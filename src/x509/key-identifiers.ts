/**
 * Key identifiers a strict verifier requires of a CA chain. Go's crypto/x509, rustls-webpki and
 * plain `openssl verify` build paths by name and signature and need neither, so their absence is
 * not a reason to refuse a CA; but OpenSSL's strict mode (`openssl verify -x509_strict`, and
 * programs that set X509_V_FLAG_X509_STRICT) refuses a chain through a CA certificate without a
 * SubjectKeyIdentifier, or through one issued by another certificate without an
 * AuthorityKeyIdentifier (RFC 5280 4.2.1.1-2 make both a MUST for conforming CAs). Said as warnings.
 */
import type { X509Certificate } from 'node:crypto';
import { AsnConvert } from '@peculiar/asn1-schema';
import { Certificate, id_ce_authorityKeyIdentifier, id_ce_subjectKeyIdentifier } from '@peculiar/asn1-x509';
import { oneLine } from './names.js';

/** One line per CA certificate lacking an identifier; empty when the chain has both everywhere. */
export function missingKeyIdentifiers(chain: readonly X509Certificate[]): string[] {
  const seen = new Set<string>();
  const notes: string[] = [];
  for (const c of chain) {
    if (seen.has(c.fingerprint256)) continue;
    seen.add(c.fingerprint256);
    const ids = new Set((AsnConvert.parse(c.raw, Certificate).tbsCertificate.extensions ?? []).map((e) => e.extnID));
    const missing: string[] = [];
    if (!ids.has(id_ce_subjectKeyIdentifier)) missing.push('SubjectKeyIdentifier');
    if (c.subject !== c.issuer && !ids.has(id_ce_authorityKeyIdentifier)) missing.push('AuthorityKeyIdentifier');
    if (missing.length === 0) continue;
    notes.push(
      `CA certificate "${oneLine(c.subject)}" has no ${missing.join(' and no ')} (RFC 5280 requires it of a CA): Go, rustls and openssl verify its leaves, but verifiers in OpenSSL's strict mode (openssl verify -x509_strict) refuse them; re-issue it with the extension when you next renew it`,
    );
  }
  return notes;
}
