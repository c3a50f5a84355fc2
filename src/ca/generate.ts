import 'reflect-metadata'; // @peculiar/x509 (tsyringe) needs the Reflect polyfill loaded first
import { KeyObject, webcrypto, randomBytes } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import type { KeyType } from '../config/schema.js';
import { ConfigError } from '../errors/ca-error.js';

x509.cryptoProvider.set(webcrypto as unknown as Crypto);

type Alg = RsaHashedKeyGenParams | EcKeyGenParams;

export function keyAlgorithm(type: KeyType): { gen: Alg; sign: Algorithm | EcdsaParams } {
  switch (type) {
    case 'ec256':
      return { gen: { name: 'ECDSA', namedCurve: 'P-256' }, sign: { name: 'ECDSA', hash: 'SHA-256' } as EcdsaParams };
    case 'ec384':
      return { gen: { name: 'ECDSA', namedCurve: 'P-384' }, sign: { name: 'ECDSA', hash: 'SHA-384' } as EcdsaParams };
    default: {
      const bits = Number(type.slice(3));
      return {
        gen: { name: 'RSASSA-PKCS1-v1_5', modulusLength: bits, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' },
        sign: { name: 'RSASSA-PKCS1-v1_5' },
      };
    }
  }
}

export interface GeneratedKey {
  readonly keys: CryptoKeyPair;
  readonly privateKey: KeyObject;
  readonly privateKeyPem: string;
}

export async function generateKey(type: KeyType): Promise<GeneratedKey> {
  const keys = (await webcrypto.subtle.generateKey(keyAlgorithm(type).gen, true, ['sign', 'verify'])) as CryptoKeyPair;
  const privateKey = KeyObject.from(keys.privateKey as unknown as webcrypto.CryptoKey);
  return { keys, privateKey, privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() };
}

/** Positive 128-bit serial for CA certificates (RFC 5280: at most 20 octets). */
function caSerial(): string {
  const b = randomBytes(16);
  b[0] = b[0]! & 0x7f | 0x01;
  return b.toString('hex');
}

export interface CaCertOptions {
  readonly subject: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly keyType: KeyType;
  readonly pathLength?: number;
}

/**
 * The RFC 4514 subject "O=<org>, CN=<org> <label>" of a CA meshcert creates. The organization is
 * escaped: it may hold a comma ("Acme, Inc."), which would otherwise end the attribute (and
 * "Acme, CN=x" add one).
 */
export function caSubjectName(org: string, label: string): string {
  if (org.trim() === '' || [...org].some((ch) => ch.charCodeAt(0) < 0x20 || ch.charCodeAt(0) === 0x7f)) throw new ConfigError(`the organization name ${JSON.stringify(org)} must be non-empty and without control characters`);
  // One read from an existing CA (a renewal keeps it) may be longer than the bound: cut short, not refused.
  const o = [...org].length > MAX_DN_VALUE ? [...org].slice(0, MAX_DN_VALUE).join('') : org;
  return `O=${escapeDnValue(o)}, CN=${escapeDnValue(caCommonName(o, label))}`;
}

/** An organization name given for a new CA (`--org`): refused before any key is made when it cannot be one. */
export function checkOrganization(org: string): void {
  if ([...org].length > MAX_DN_VALUE) throw new ConfigError(`the organization name must be at most ${MAX_DN_VALUE} characters (X.520's bound, which RFC 5280 keeps); it has ${[...org].length}`);
  caSubjectName(org, '');
}

/** X.520's upper bound for an organization name and a common name (RFC 5280 Appendix A: ub-organization-name, ub-common-name). */
const MAX_DN_VALUE = 64;

/** `<org> <label>`, the organization cut short (at a character) so that the whole stays within the bound. */
export function caCommonName(org: string, label: string): string {
  const room = MAX_DN_VALUE - 1 - [...label].length;
  const chars = [...org];
  return `${chars.length <= room ? org : chars.slice(0, Math.max(0, room)).join('').trimEnd()} ${label}`;
}

function escapeDnValue(v: string): string {
  return v.replace(/[,+"\\<>;=]/g, (c) => `\\${c}`).replace(/^[ #]/, (c) => `\\${c}`).replace(/ $/, '\\ ');
}

export async function createRootCert(key: GeneratedKey, o: CaCertOptions): Promise<x509.X509Certificate> {
  return x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: caSerial(),
    name: o.subject,
    notBefore: o.notBefore,
    notAfter: o.notAfter,
    keys: key.keys,
    signingAlgorithm: keyAlgorithm(o.keyType).sign,
    extensions: [
      new x509.BasicConstraintsExtension(true, o.pathLength, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(key.keys.publicKey),
    ],
  });
}

/**
 * A CA certificate for `subjectKey`, signed by `issuer` (whose key type decides the algorithm).
 * `carried`: extensions of a previous intermediate to keep (see carriedExtensions).
 */
export async function createIntermediateCert(
  subjectKey: CryptoKey,
  issuer: { cert: x509.X509Certificate; key: CryptoKey; keyType: KeyType },
  o: Omit<CaCertOptions, 'keyType'>,
  carried: readonly x509.Extension[] = [],
): Promise<x509.X509Certificate> {
  return x509.X509CertificateGenerator.create({
    serialNumber: caSerial(),
    subject: o.subject,
    // The parent's subject exactly as encoded (string types included): Go and rustls match an
    // issuer to its parent by bytes, so re-encoding the name from text would break the chain.
    issuer: issuer.cert.subjectName,
    notBefore: o.notBefore,
    notAfter: o.notAfter,
    publicKey: subjectKey,
    signingKey: issuer.key,
    signingAlgorithm: keyAlgorithm(issuer.keyType).sign,
    extensions: [
      new x509.BasicConstraintsExtension(true, o.pathLength ?? 0, true),
      // SPIFFE X509-SVID Appendix A: digitalSignature "if and only if" a leaf; a signing certificate signs certificates and CRLs only.
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(subjectKey),
      await authorityKeyIdentifier(issuer.cert),
      ...carried,
    ],
  });
}

/** The extensions createIntermediateCert writes itself (basic constraints, key usage, SKI, AKI). */
const MADE_HERE = new Set(['2.5.29.19', '2.5.29.15', '2.5.29.14', '2.5.29.35']);

/**
 * The extensions of a previous intermediate that its renewal keeps, as they were (criticality
 * too): name constraints, extended key usage, policies, a SPIFFE ID, issuer and CRL locations. An
 * intermediate an organization's root confined to the mesh by name constraints must stay confined:
 * dropped, the new one could sign any name the root is trusted for.
 */
export function carriedExtensions(previous: x509.X509Certificate): x509.Extension[] {
  return previous.extensions.filter((e) => !MADE_HERE.has(e.type)).map((e) => new x509.Extension(e.type, e.critical, e.value));
}

/**
 * The AKI is the parent's SKI as the parent carries it (RFC 5280 §4.2.1.1): a root from another CA
 * may derive it otherwise (truncated SHA-256, say), and OpenSSL then refuses the pair. Computed
 * (SHA-1 of the key) only when the parent has none.
 */
async function authorityKeyIdentifier(parent: x509.X509Certificate): Promise<x509.AuthorityKeyIdentifierExtension> {
  const ski = parent.getExtension(x509.SubjectKeyIdentifierExtension);
  return ski ? new x509.AuthorityKeyIdentifierExtension(ski.keyId) : x509.AuthorityKeyIdentifierExtension.create(parent);
}

const EXTENSION_NAMES: Readonly<Record<string, string>> = {
  '2.5.29.30': 'name constraints',
  '2.5.29.37': 'extended key usage',
  '2.5.29.32': 'certificate policies',
  '2.5.29.33': 'policy mappings',
  '2.5.29.36': 'policy constraints',
  '2.5.29.54': 'inhibit anyPolicy',
  '2.5.29.17': 'subject alternative names',
  '2.5.29.31': 'CRL distribution points',
  '1.3.6.1.5.5.7.1.1': 'authority information access',
};

/** An extension's name for a message: its usual one, or its OID. */
export function extensionName(e: x509.Extension): string {
  return EXTENSION_NAMES[e.type] ?? `extension ${e.type}`;
}
