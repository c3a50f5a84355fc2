/**
 * Builds an inventory record from a certificate (issued by meshcert or discovered).
 *
 * Everything is read from the DER with @peculiar/asn1-x509 (serial, validity, SANs), never from
 * Node's display strings (`subjectAltName` is a human-readable rendering that does not escape
 * separators inside names). Node's X509Certificate supplies the public key details and the
 * subject/issuer DNs.
 */
import type { X509Certificate } from 'node:crypto';
import { AsnConvert } from '@peculiar/asn1-schema';
import { Certificate, SubjectAlternativeName, id_ce_subjectAltName } from '@peculiar/asn1-x509';
import { parseWorkloadSpiffeId } from '../x509/spiffe-id.js';
import { sha256Hex } from '../crypto/digest.js';
import { serialHex } from '../x509/serial-hex.js';
import type { CertificateRecord, RecordSource } from './types.js';

export interface RecordFromCertificateOptions {
  source: RecordSource;
  /** Issuer name (meshcert's issuer, e.g. `default`); default: the certificate's issuer DN. */
  issuer?: string;
  /** When the certificate was issued (meshcert's signing time); default: its notBefore. */
  now?: Date;
  cluster?: string | null;
  requester?: string | null;
  policyRule?: string | null;
}

/** What the DER says, parsed once. */
export interface CertificateDetails {
  /** Lowercase hex of the serial's DER integer, leading zero octets/nibbles stripped ("0" for zero). */
  serial: string;
  /** SHA-256 of the DER, lowercase hex. */
  fingerprint: string;
  notBefore: Date;
  notAfter: Date;
  /** URI SANs, in certificate order. */
  uris: string[];
  dnsNames: string[];
  /** The first `spiffe://` URI SAN (an X.509-SVID has exactly one), or null. */
  spiffeId: string | null;
  /** Subject DN as "C=US, O=acme, CN=x"; null when the subject is empty. */
  subject: string | null;
  /** Issuer DN in the same form; "" when empty. */
  issuerDn: string;
  keyAlgorithm: string;
  keySize: number;
}

/** Key algorithm names by SubjectPublicKeyInfo OID, for keys node:crypto cannot import. */
const KEY_OIDS: Record<string, string> = {
  '1.2.840.113549.1.1.1': 'RSA',
  '1.2.840.113549.1.1.10': 'RSA-PSS',
  '1.2.840.10045.2.1': 'ECDSA',
  '1.3.101.112': 'Ed25519',
  '1.3.101.113': 'Ed448',
  '1.2.840.10040.4.1': 'DSA',
};

const CURVE_BITS: Record<string, number> = {
  prime256v1: 256,
  'P-256': 256,
  secp256k1: 256,
  secp384r1: 384,
  'P-384': 384,
  secp521r1: 521,
  'P-521': 521,
  secp224r1: 224,
  prime192v1: 192,
};

/**
 * Node renders DNs one attribute per line; inventory records use one line, ", "-separated.
 * Node gives `undefined` (despite its types) for an empty DN: that is "".
 */
export function formatDn(nodeDn: string | undefined): string {
  return (nodeDn ?? '')
    .split('\n')
    .filter((l) => l.length > 0)
    .join(', ');
}

/** Lowercase hex without leading zeros (serialHex); "0" for zero, and for no octets at all. */
export function formatSerial(bytes: Uint8Array): string {
  return serialHex(Buffer.from(bytes).toString('hex')) || '0';
}

function keyInfo(cert: X509Certificate, parsed: Certificate): { keyAlgorithm: string; keySize: number } {
  try {
    const key = cert.publicKey;
    const details = key.asymmetricKeyDetails ?? {};
    switch (key.asymmetricKeyType) {
      case 'rsa':
        return { keyAlgorithm: 'RSA', keySize: details.modulusLength ?? 0 };
      case 'rsa-pss':
        return { keyAlgorithm: 'RSA-PSS', keySize: details.modulusLength ?? 0 };
      case 'dsa':
        return { keyAlgorithm: 'DSA', keySize: details.modulusLength ?? 0 };
      case 'ec': {
        const curve = details.namedCurve ?? '';
        const bits = CURVE_BITS[curve] ?? Number(/(\d{3})/.exec(curve)?.[1] ?? 0);
        return { keyAlgorithm: 'ECDSA', keySize: bits };
      }
      case 'ed25519':
        return { keyAlgorithm: 'Ed25519', keySize: 256 };
      case 'ed448':
        return { keyAlgorithm: 'Ed448', keySize: 456 };
      default:
        break;
    }
  } catch {
    // A key node:crypto cannot import: fall back to the algorithm OID.
  }
  const oid = parsed.tbsCertificate.subjectPublicKeyInfo.algorithm.algorithm;
  return { keyAlgorithm: KEY_OIDS[oid] ?? oid, keySize: 0 };
}

/** Parses the parts of a certificate the inventory needs. Throws when the DER is not a certificate. */
export function certificateDetails(cert: X509Certificate): CertificateDetails {
  const der = cert.raw;
  const parsed = AsnConvert.parse(der, Certificate);
  const tbs = parsed.tbsCertificate;
  const uris: string[] = [];
  const dnsNames: string[] = [];
  for (const ext of tbs.extensions ?? []) {
    if (ext.extnID !== id_ce_subjectAltName) continue;
    const san = AsnConvert.parse(ext.extnValue, SubjectAlternativeName);
    for (const name of san) {
      if (name.uniformResourceIdentifier !== undefined) uris.push(name.uniformResourceIdentifier);
      if (name.dNSName !== undefined) dnsNames.push(name.dNSName);
    }
  }
  const spiffeId = uris.find((u) => u.toLowerCase().startsWith('spiffe://')) ?? null;
  const subject = formatDn(cert.subject);
  return {
    serial: formatSerial(new Uint8Array(tbs.serialNumber)),
    fingerprint: sha256Hex(der),
    notBefore: tbs.validity.notBefore.getTime(),
    notAfter: tbs.validity.notAfter.getTime(),
    uris,
    dnsNames,
    spiffeId,
    subject: subject === '' ? null : subject,
    issuerDn: formatDn(cert.issuer),
    ...keyInfo(cert, parsed),
  };
}

/**
 * The inventory record for `cert`. Namespace and service account are filled for Istio workload
 * IDs (`spiffe://<td>/ns/<ns>/sa/<sa>`), null otherwise. `issuer` defaults to the issuer DN
 * (or "(empty issuer DN)" for the rare certificate without one, since a record needs an issuer);
 * `issuedAt` to the certificate's notBefore.
 */
export function recordFromCertificate(cert: X509Certificate, o: RecordFromCertificateOptions): CertificateRecord {
  const d = certificateDetails(cert);
  const workload = d.spiffeId === null ? null : parseWorkloadSpiffeId(d.spiffeId);
  const issuer = o.issuer ?? (d.issuerDn === '' ? '(empty issuer DN)' : d.issuerDn);
  return {
    serial: d.serial,
    fingerprint: d.fingerprint,
    spiffeId: d.spiffeId,
    namespace: workload?.namespace ?? null,
    serviceAccount: workload?.serviceAccount ?? null,
    cluster: o.cluster ?? null,
    issuer,
    keyAlgorithm: d.keyAlgorithm,
    keySize: d.keySize,
    notBefore: d.notBefore,
    notAfter: d.notAfter,
    issuedAt: o.now ?? d.notBefore,
    requester: o.requester ?? null,
    policyRule: o.policyRule ?? null,
    source: o.source,
    subject: d.subject,
    dnsNames: d.dnsNames,
  };
}
