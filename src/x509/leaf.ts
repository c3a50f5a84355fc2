/**
 * Per-request leaf certificate encoder (the issuance hot path). Leaves are written as DER
 * directly, with all per-CA parts prepared once in prepareLeafSigner, because the generic ASN.1
 * libraries manage only a few hundred leaves per second. Shape follows istiod's built-in CA (see
 * PROTOCOL.md §4, §6): v3, empty subject, KU/EKU/BC/SKI/AKI/SAN in that order.
 */
import { randomBytes, sign, X509Certificate } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { sha1 } from '../crypto/digest.js';
import { ipToBytes } from '../net/ip-text.js';
import {
  TAG_BIT_STRING,
  TAG_OCTET_STRING,
  TAG_SEQUENCE,
  bitString,
  boolean,
  explicitTag,
  ia5Bytes,
  implicitPrimitive,
  integer,
  nullValue,
  octetString,
  oid,
  readChildren,
  readElement,
  sequence,
  smallInteger,
  tlvParts,
  x509Time,
} from './der.js';
import type { DerElement } from './der.js';

/**
 * Prepared per-CA state. Treat as opaque: build it with prepareLeafSigner, pass it to buildLeaf.
 */
export interface LeafSigner {
  /** DER Name copied verbatim from the CA certificate's subject. */
  readonly issuerName: Buffer;
  /** keyIdentifier placed in the leaf's AuthorityKeyIdentifier. */
  readonly authorityKeyId: Buffer;
  /** DER AlgorithmIdentifier used both inside the TBS and as the outer signatureAlgorithm. */
  readonly signatureAlgorithm: Buffer;
  readonly hash: 'sha256' | 'sha384';
  readonly key: KeyObject;
  /** Complete DER of the AuthorityKeyIdentifier extension. */
  readonly akiExtension: Buffer;
}

export interface LeafParams {
  /** Positive big-endian magnitude (no sign byte); leading zeros are stripped. */
  serial: Buffer;
  notBefore: Date;
  notAfter: Date;
  /** DER SubjectPublicKeyInfo copied verbatim from the CSR. */
  spki: Buffer;
  /** SAN URIs (the SPIFFE ID). */
  uris: readonly string[];
  dnsNames?: readonly string[];
  /** IPv4 or IPv6 text. */
  ipAddresses?: readonly string[];
  /** Default true. */
  serverAuth?: boolean;
  /** Default true. */
  clientAuth?: boolean;
}

// --- constants -------------------------------------------------------------------------------

const OID_KEY_USAGE = oid('2.5.29.15');
const OID_EXT_KEY_USAGE = oid('2.5.29.37');
const OID_BASIC_CONSTRAINTS = oid('2.5.29.19');
const OID_SUBJECT_KEY_ID = oid('2.5.29.14');
const OID_AUTHORITY_KEY_ID = oid('2.5.29.35');
const OID_SUBJECT_ALT_NAME = oid('2.5.29.17');
const OID_SERVER_AUTH = oid('1.3.6.1.5.5.7.3.1');
const OID_CLIENT_AUTH = oid('1.3.6.1.5.5.7.3.2');
/** Content octets of the SKI OID, for matching while parsing the CA certificate. */
const SKI_OID_CONTENT = OID_SUBJECT_KEY_ID.subarray(2);

const SIG_ECDSA_SHA256 = sequence(oid('1.2.840.10045.4.3.2'));
const SIG_ECDSA_SHA384 = sequence(oid('1.2.840.10045.4.3.3'));
// RFC 4055: the RSA PKCS#1 v1.5 AlgorithmIdentifiers carry an explicit NULL parameter.
const SIG_RSA_SHA256 = sequence(oid('1.2.840.113549.1.1.11'), nullValue());

const CRITICAL = boolean(true);

function extension(extnId: Buffer, critical: boolean, value: Buffer): Buffer {
  return critical ? sequence(extnId, CRITICAL, octetString(value)) : sequence(extnId, octetString(value));
}

const VERSION_V3 = explicitTag(0, smallInteger(2));
const EMPTY_NAME = sequence();
// digitalSignature (bit 0) + keyEncipherment (bit 2): 0b1010_0000, 5 unused trailing bits.
const EXT_KEY_USAGE = extension(OID_KEY_USAGE, true, bitString(Uint8Array.of(0xa0), 5));
const EXT_EKU_BOTH = extension(OID_EXT_KEY_USAGE, false, sequence(OID_SERVER_AUTH, OID_CLIENT_AUTH));
const EXT_EKU_SERVER = extension(OID_EXT_KEY_USAGE, false, sequence(OID_SERVER_AUTH));
const EXT_EKU_CLIENT = extension(OID_EXT_KEY_USAGE, false, sequence(OID_CLIENT_AUTH));
// cA FALSE is the DEFAULT, so DER omits it: an empty SEQUENCE.
const EXT_BASIC_CONSTRAINTS = extension(OID_BASIC_CONSTRAINTS, true, sequence());
// A SHA-1 key id is always 20 octets, so everything before it in the SKI extension is constant.
const SKI_EXT_PREFIX = (() => {
  const full = extension(OID_SUBJECT_KEY_ID, false, octetString(Buffer.alloc(20)));
  return full.subarray(0, full.length - 20);
})();

const GN_DNS = 2;
const GN_URI = 6;
const GN_IP = 7;

// --- CA preparation (setup, not hot path) ------------------------------------------------------

interface CaCertParts {
  subject: Buffer;
  publicKeyBits: Buffer;
  subjectKeyId?: Buffer;
}

function expectTag(el: DerElement | undefined, tag: number, what: string): DerElement {
  if (!el || el.tag !== tag) throw new Error(`CA certificate: malformed ${what}`);
  return el;
}

/** Pulls subject DER, public key bits and SKI from the CA certificate without re-encoding anything. */
function parseCaCert(der: Buffer): CaCertParts {
  const cert = expectTag(readElement(der), TAG_SEQUENCE, 'Certificate');
  if (cert.end !== der.length) throw new Error('CA certificate: trailing data after Certificate');
  const tbs = expectTag(readChildren(der, cert)[0], TAG_SEQUENCE, 'TBSCertificate');
  const fields = readChildren(der, tbs);
  let i = fields[0]?.tag === 0xa0 ? 1 : 0; // optional [0] version
  i += 4; // serialNumber, signature, issuer, validity
  const subject = expectTag(fields[i++], TAG_SEQUENCE, 'subject');
  const spki = expectTag(fields[i++], TAG_SEQUENCE, 'subjectPublicKeyInfo');
  const bits = expectTag(readChildren(der, spki)[1], TAG_BIT_STRING, 'subjectPublicKey');
  const parts: CaCertParts = {
    subject: Buffer.from(der.subarray(subject.offset, subject.end)),
    publicKeyBits: Buffer.from(der.subarray(bits.start + 1, bits.end)),
  };
  const extsWrapper = fields.slice(i).find((f) => f.tag === 0xa3);
  if (extsWrapper) {
    const exts = expectTag(readChildren(der, extsWrapper)[0], TAG_SEQUENCE, 'extensions');
    for (const ext of readChildren(der, exts)) {
      const [id, ...rest] = readChildren(der, ext);
      if (!id || !der.subarray(id.start, id.end).equals(SKI_OID_CONTENT)) continue;
      const value = expectTag(rest[rest.length - 1], TAG_OCTET_STRING, 'SubjectKeyIdentifier');
      const keyId = expectTag(readElement(der, value.start, value.end), TAG_OCTET_STRING, 'SubjectKeyIdentifier');
      parts.subjectKeyId = Buffer.from(der.subarray(keyId.start, keyId.end));
    }
  }
  return parts;
}

/**
 * Prepares everything per-CA once. Throws Error if the key is not a private ECDSA P-256/P-384 or
 * RSA key, does not match the certificate, or the certificate is not a CA.
 */
export function prepareLeafSigner(caCertDer: Buffer, caKey: KeyObject): LeafSigner {
  if (caKey.type !== 'private') throw new Error('CA key must be a private key');
  let signatureAlgorithm: Buffer;
  let hash: LeafSigner['hash'];
  if (caKey.asymmetricKeyType === 'ec') {
    const curve = caKey.asymmetricKeyDetails?.namedCurve;
    if (curve === 'prime256v1') {
      signatureAlgorithm = SIG_ECDSA_SHA256;
      hash = 'sha256';
    } else if (curve === 'secp384r1') {
      signatureAlgorithm = SIG_ECDSA_SHA384;
      hash = 'sha384';
    } else {
      throw new Error(`unsupported CA key curve: ${curve ?? 'unknown'} (supported: P-256, P-384)`);
    }
  } else if (caKey.asymmetricKeyType === 'rsa') {
    signatureAlgorithm = SIG_RSA_SHA256;
    hash = 'sha256';
  } else {
    throw new Error(`unsupported CA key type: ${caKey.asymmetricKeyType ?? 'unknown'} (supported: EC P-256/P-384, RSA)`);
  }

  // Node parses the certificate fully, so malformed input fails here rather than in leaves.
  const cert = new X509Certificate(caCertDer);
  if (!cert.ca) throw new Error('CA certificate does not have BasicConstraints CA:true');
  if (!cert.checkPrivateKey(caKey)) throw new Error('CA key does not match the CA certificate');

  const parts = parseCaCert(caCertDer);
  // RFC 5280 method 1 fallback when the CA certificate carries no SKI.
  const authorityKeyId = parts.subjectKeyId ?? sha1(parts.publicKeyBits);
  const akiExtension = extension(OID_AUTHORITY_KEY_ID, false, sequence(implicitPrimitive(0, authorityKeyId)));
  return {
    issuerName: parts.subject,
    authorityKeyId,
    signatureAlgorithm,
    hash,
    key: caKey,
    akiExtension,
  };
}

// --- per-leaf encoding ---------------------------------------------------------------------------

/** Contents of the subjectPublicKey BIT STRING (without the unused-bits octet), after a structural check. */
function spkiKeyBits(spki: Buffer): Buffer {
  const outer = readElement(spki);
  if (outer.tag !== TAG_SEQUENCE || outer.end !== spki.length) throw new Error('spki: not a single DER SEQUENCE');
  const alg = readElement(spki, outer.start, outer.end);
  if (alg.tag !== TAG_SEQUENCE) throw new Error('spki: missing AlgorithmIdentifier');
  const bits = readElement(spki, alg.end, outer.end);
  if (bits.tag !== TAG_BIT_STRING || bits.end !== outer.end) throw new Error('spki: missing subjectPublicKey');
  if (bits.end - bits.start < 2 || spki[bits.start] !== 0) throw new Error('spki: malformed subjectPublicKey');
  return spki.subarray(bits.start + 1, bits.end);
}

function subjectAltNames(p: LeafParams): Buffer {
  const names: Buffer[] = [];
  for (const uri of p.uris) {
    if (uri.length === 0) throw new Error('SAN URI must not be empty');
    names.push(implicitPrimitive(GN_URI, ia5Bytes(uri)));
  }
  for (const dns of p.dnsNames ?? []) {
    if (dns.length === 0) throw new Error('SAN DNS name must not be empty');
    names.push(implicitPrimitive(GN_DNS, ia5Bytes(dns)));
  }
  for (const ip of p.ipAddresses ?? []) names.push(implicitPrimitive(GN_IP, ipToBytes(ip)));
  // The subject is empty, so the SAN is the only identity and must exist (RFC 5280 §4.2.1.6).
  if (names.length === 0) throw new Error('a leaf needs at least one SAN');
  return extension(OID_SUBJECT_ALT_NAME, true, tlvParts(TAG_SEQUENCE, names));
}

/** Builds and signs one leaf; returns its DER. Throws Error on invalid parameters. */
export function buildLeaf(signer: LeafSigner, p: LeafParams): Buffer {
  const tbs = encodeTbs(signer, p);
  return assembleLeaf(signer, tbs, sign(signer.hash, tbs, signer.key));
}

/**
 * buildLeaf with the signature computed on libuv's thread pool (see verifyCsrProofAsync for why).
 * The encoding is the same; only where the signature is computed differs.
 */
export async function buildLeafAsync(signer: LeafSigner, p: LeafParams): Promise<Buffer> {
  const tbs = encodeTbs(signer, p);
  const signature = await new Promise<Buffer>((resolve, reject) => {
    sign(signer.hash, tbs, signer.key, (err, sig) => (err ? reject(err) : resolve(sig)));
  });
  return assembleLeaf(signer, tbs, signature);
}

/** The DER TBSCertificate of a leaf. Throws Error on invalid parameters. */
export function encodeTbs(signer: LeafSigner, p: LeafParams): Buffer {
  const serial = integer(p.serial);
  // Content must be non-zero (positive) and at most 20 octets (RFC 5280 §4.1.2.2).
  if (serial.length > 22 || (serial.length === 3 && serial[2] === 0)) {
    throw new Error('serial must be positive and at most 20 octets');
  }
  // Written so that an invalid Date (NaN) also fails.
  if (!(p.notAfter.getTime() >= p.notBefore.getTime())) {
    throw new Error('notBefore/notAfter must be valid dates and notAfter must not precede notBefore');
  }

  const ski = sha1(spkiKeyBits(p.spki));
  const serverAuth = p.serverAuth ?? true;
  const clientAuth = p.clientAuth ?? true;
  const eku = serverAuth ? (clientAuth ? EXT_EKU_BOTH : EXT_EKU_SERVER) : clientAuth ? EXT_EKU_CLIENT : undefined;
  const exts: Buffer[] = [EXT_KEY_USAGE];
  if (eku) exts.push(eku);
  exts.push(EXT_BASIC_CONSTRAINTS, SKI_EXT_PREFIX, ski, signer.akiExtension, subjectAltNames(p));

  return sequence(
    VERSION_V3,
    serial,
    signer.signatureAlgorithm,
    signer.issuerName,
    sequence(x509Time(p.notBefore), x509Time(p.notAfter)),
    EMPTY_NAME,
    p.spki,
    explicitTag(3, tlvParts(TAG_SEQUENCE, exts)),
  );
}

/** Certificate ::= SEQUENCE { tbs, signatureAlgorithm, signature }. */
function assembleLeaf(signer: LeafSigner, tbs: Buffer, signature: Buffer): Buffer {
  // ECDSA: Node returns the DER Ecdsa-Sig-Value already; RSA: PKCS#1 v1.5 by default.
  return sequence(tbs, signer.signatureAlgorithm, bitString(signature));
}

// randomBytes costs ~2.5 us per call regardless of size, so the random part is cut from a refilled pool.
const SERIAL_LEN = 16;
const SERIAL_TIME_LEN = 6;
const SERIAL_RANDOM_LEN = SERIAL_LEN - SERIAL_TIME_LEN;
const SERIAL_POOL_SIZE = SERIAL_RANDOM_LEN * 256;
let serialPool = Buffer.alloc(0);
let serialPoolOffset = 0;

/**
 * A new positive 16-octet serial (< 2^127): the issuance time in milliseconds since the epoch
 * (48 bits, big-endian) followed by 80 bits from the CSPRNG.
 *
 * Why not 128 random bits: the inventory indexes serials, and a B-tree fed keys in random order
 * writes a random leaf page per certificate; over a store of 300,000 certificates that made a
 * SQLite insert cost 92-104 µs of CPU instead of 23-35 µs with serials in issuance order (the
 * same holds for PostgreSQL's B-trees). Unpredictability is kept where it matters: 80 random bits
 * (CA/Browser Forum baseline: at least 64), and the time part says no more than NotBefore does.
 * The first octet is 0x01 from November 2004 to 2039 (and stays below 0x80 until the year 6429), so the
 * DER integer needs no leading zero and the hex of serials of one era sorts as their numbers do.
 */
export function newSerial(nowMs: number = Date.now()): Buffer {
  if (serialPoolOffset + SERIAL_RANDOM_LEN > serialPool.length) {
    serialPool = randomBytes(SERIAL_POOL_SIZE);
    serialPoolOffset = 0;
  }
  const b = Buffer.allocUnsafe(SERIAL_LEN);
  // A clock before 1970 or past 2^47 ms (year 6429) cannot happen on a sane host; clamp anyway so
  // the serial stays positive and 16 octets whatever the clock says.
  const ms = Number.isFinite(nowMs) ? Math.min(Math.max(Math.trunc(nowMs), 1), 2 ** 47 - 1) : 1;
  b.writeUIntBE(ms, 0, SERIAL_TIME_LEN);
  // Copied, so callers never share (or pin) the pool.
  serialPool.copy(b, SERIAL_TIME_LEN, serialPoolOffset, serialPoolOffset + SERIAL_RANDOM_LEN);
  serialPoolOffset += SERIAL_RANDOM_LEN;
  return b;
}

export function derToPem(der: Buffer): string {
  const b64 = der.toString('base64');
  let out = '-----BEGIN CERTIFICATE-----\n';
  for (let i = 0; i < b64.length; i += 64) out += b64.slice(i, i + 64) + '\n';
  return out + '-----END CERTIFICATE-----\n';
}
