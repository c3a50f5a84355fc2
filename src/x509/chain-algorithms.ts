/**
 * What the mesh's verifiers accept in a CA chain: Go's crypto/x509 (istio-agent, and Envoy's peers
 * through it) and rustls-webpki (ztunnel). OpenSSL, which loads and self-tests the CA here, accepts
 * more (SHA-1 signatures, RSA-1024 keys), so a CA that passes its self-test could still sign
 * leaves no workload accepts. The intersection, checked at load:
 * - signatures on certificates below the trust anchor: RSA PKCS#1 v1.5 or PSS with SHA-256/384/512,
 *   ECDSA with SHA-256/384, Ed25519 (no SHA-1 or MD5 in Go; no ECDSA with SHA-512 in webpki's
 *   ring back end);
 * - keys: RSA of 2048 to 8192 bits, ECDSA P-256 or P-384, Ed25519 (webpki has no RSA below 2048
 *   or above 8192 bits and, with ring, no P-521).
 * A trust anchor's own signature is never checked by either, so a root's is not judged here.
 */
import type { X509Certificate } from 'node:crypto';
import { id_mgf1, id_RSASSA_PSS, RsaSaPssParams } from '@peculiar/asn1-rsa';
import { AsnConvert } from '@peculiar/asn1-schema';
import { AlgorithmIdentifier, Certificate } from '@peculiar/asn1-x509';

const SIGNATURES = new Map<string, string>([
  ['1.2.840.113549.1.1.11', 'sha256WithRSAEncryption'],
  ['1.2.840.113549.1.1.12', 'sha384WithRSAEncryption'],
  ['1.2.840.113549.1.1.13', 'sha512WithRSAEncryption'],
  ['1.2.840.10045.4.3.2', 'ecdsa-with-SHA256'],
  ['1.2.840.10045.4.3.3', 'ecdsa-with-SHA384'],
  ['1.3.101.112', 'Ed25519'],
]);

/** Names of refused signature algorithms met in practice, for the message. */
const REFUSED_NAMES = new Map<string, string>([
  ['1.2.840.113549.1.1.4', 'md5WithRSAEncryption'],
  ['1.2.840.113549.1.1.5', 'sha1WithRSAEncryption'],
  ['1.2.840.10045.4.1', 'ecdsa-with-SHA1'],
  ['1.2.840.10045.4.3.4', 'ecdsa-with-SHA512'],
  ['1.2.840.10040.4.3', 'dsa-with-SHA1'],
]);

/** PSS hashes Go and webpki accept, with their output length (the salt length they require). */
const PSS_HASHES = new Map<string, { name: string; bytes: number }>([
  ['2.16.840.1.101.3.4.2.1', { name: 'SHA-256', bytes: 32 }],
  ['2.16.840.1.101.3.4.2.2', { name: 'SHA-384', bytes: 48 }],
  ['2.16.840.1.101.3.4.2.3', { name: 'SHA-512', bytes: 64 }],
]);

/** Why verifiers would refuse a signature made with this certificate's key, or undefined. */
export function keyProblem(cert: X509Certificate): string | undefined {
  const key = cert.publicKey;
  const d = key.asymmetricKeyDetails;
  switch (key.asymmetricKeyType) {
    case 'rsa-pss':
      // Go and webpki verify RSA signatures, PSS ones included, with rsaEncryption keys only.
      return 'an RSA key restricted to PSS (id-RSASSA-PSS; accepted: rsaEncryption keys)';
    case 'rsa': {
      const bits = d?.modulusLength ?? 0;
      return bits >= 2048 && bits <= 8192 ? undefined : `an RSA key of ${bits} bits (ztunnel's rustls accepts 2048 to 8192)`;
    }
    case 'ec':
      return d?.namedCurve === 'prime256v1' || d?.namedCurve === 'secp384r1' ? undefined : `an ECDSA key on ${d?.namedCurve ?? 'an unknown curve'} (accepted: P-256, P-384)`;
    case 'ed25519':
      return undefined;
    default:
      return `a ${key.asymmetricKeyType ?? 'unknown'} key (accepted: RSA, ECDSA P-256/P-384, Ed25519)`;
  }
}

/** Why verifiers would refuse the signature on this (non-anchor) certificate, or undefined. */
export function signatureProblem(cert: X509Certificate): string | undefined {
  const alg = AsnConvert.parse(cert.raw, Certificate).signatureAlgorithm;
  const oid = alg.algorithm;
  if (oid === id_RSASSA_PSS) return pssProblem(alg);
  if (SIGNATURES.has(oid)) return undefined;
  const name = REFUSED_NAMES.get(oid) ?? `the algorithm ${oid}`;
  return `a signature made with ${name} (accepted: RSA or RSA-PSS with SHA-256/384/512, ECDSA with SHA-256/384, Ed25519)`;
}

/**
 * RSASSA-PSS as Go and webpki take it: SHA-256/384/512, MGF1 with the same hash, a salt as long as
 * the hash (the parameters' defaults, SHA-1 and 20 bytes, are refused).
 */
function pssProblem(alg: AlgorithmIdentifier): string | undefined {
  let p: RsaSaPssParams;
  try {
    p = alg.parameters ? AsnConvert.parse(alg.parameters, RsaSaPssParams) : new RsaSaPssParams();
  } catch {
    return 'an RSASSA-PSS signature whose parameters do not parse';
  }
  const hash = PSS_HASHES.get(p.hashAlgorithm.algorithm);
  if (!hash) return `an RSASSA-PSS signature with the hash ${p.hashAlgorithm.algorithm} (accepted: SHA-256/384/512)`;
  let mgfHash: string | undefined;
  try {
    mgfHash = p.maskGenAlgorithm.parameters ? AsnConvert.parse(p.maskGenAlgorithm.parameters, AlgorithmIdentifier).algorithm : undefined;
  } catch {
    mgfHash = undefined;
  }
  if (p.maskGenAlgorithm.algorithm !== id_mgf1 || mgfHash !== p.hashAlgorithm.algorithm) return `an RSASSA-PSS signature whose mask generation is not MGF1 with ${hash.name}`;
  if (p.saltLength !== hash.bytes) return `an RSASSA-PSS signature with a ${p.saltLength}-byte salt (accepted: the hash length, ${hash.bytes} for ${hash.name})`;
  return undefined;
}
