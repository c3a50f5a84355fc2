/**
 * PKCS#10 (RFC 2986) CSR parsing and signature verification, on the per-request hot path.
 *
 * Cost per parseCsrPem (Node 20.20 / OpenSSL 3.0.19, one core of a shared 2-core box, best of
 * several runs; see test/unit/csr/parse.perf.test.ts): RSA-2048 ~50-70 µs, P-256 ~190-220 µs,
 * P-384 ~0.95 ms. PEM decoding is ~3-5 µs and the DER walk a few µs; the rest is OpenSSL: key import
 * (see ./key.ts for why RSA and P-256 go through a JWK and P-384 through DER) and `crypto.verify`
 * on a fresh key (RSA-2048 ~40 µs, P-256 ~115 µs, P-384 ~800 µs). The DER is read with the
 * hand-written strict reader in ./der-reader.ts because `asn1js.fromBER` alone measured ~150 µs per
 * CSR, more than the whole RSA budget.
 *
 * Order of checks, so the caller gets the most useful error first:
 *   PEM armor -> outer DER structure -> public key (CSR_UNSUPPORTED_KEY) -> signature algorithm
 *   and its match with the key (CSR_BAD_SIGNATURE) -> encoding of the signature -> subject and
 *   requested extensions -> the signature check itself (CSR_BAD_SIGNATURE).
 * The signature check comes last so that the server can run it off the JavaScript thread
 * (decodeCsr*, then verifyCsrProofAsync); parseCsr* do both steps synchronously.
 * Every failure is a CaError; messages describe the problem and never quote the input.
 */
import { constants, verify } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { CaError } from '../errors/ca-error.js';
import type { CsrProof, DecodedCsr, ParsedCsr } from './types.js';
import { isIpv4Mapped } from '../net/ipv4-mapped.js';
import { ipBytesToText } from '../net/ip-text.js';
import {
  DerReader,
  Tag,
  checkNull,
  contextTag,
  malformed,
  oidKey,
  oidKeyToDotted,
  readBitString,
  readBoolean,
  readOctetAlignedBitString,
  readOidKey,
  readSmallUint,
} from './der-reader.js';
import type { Tlv } from './der-reader.js';
import { importSubjectPublicKeyInfo } from './key.js';
import { PEM_BASE64 } from '../x509/pem.js';

/** Largest PEM (characters) or DER (bytes) accepted; real CSRs are 0.5-2 KB. */
export const MAX_CSR_SIZE = 64 * 1024;

/* ------------------------------------------------------------------------------------------------
 * PEM
 * ---------------------------------------------------------------------------------------------- */

const PEM_LABELS = new Set(['CERTIFICATE REQUEST', 'NEW CERTIFICATE REQUEST']);
/** PEM labels people send by mistake, named in the error (the label is from a fixed list, not echoed). */
const WRONG_PEM_LABELS = new Map<string, string>([
  ['CERTIFICATE', 'a certificate'],
  ['TRUSTED CERTIFICATE', 'a certificate'],
  ['X509 CRL', 'a CRL'],
  ['PRIVATE KEY', 'a private key'],
  ['RSA PRIVATE KEY', 'a private key'],
  ['EC PRIVATE KEY', 'a private key'],
  ['ENCRYPTED PRIVATE KEY', 'a private key'],
  ['PUBLIC KEY', 'a public key'],
  ['RSA PUBLIC KEY', 'a public key'],
]);
const PEM_WHITESPACE = /[ \t\r\n]+/g;
const BEGIN = '-----BEGIN ';
const DASHES = '-----';

function isSpace(c: number): boolean {
  return c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d;
}

function pemError(message: string): CaError {
  return new CaError('CSR_MALFORMED', `CSR is not a valid PEM certificate request: ${message}`);
}

/** Strips the armor of exactly one CERTIFICATE REQUEST block and decodes its base64 body. */
export function pemToDer(pem: string): Buffer {
  if (typeof pem !== 'string') throw pemError('expected a PEM string');
  if (pem.length > MAX_CSR_SIZE) throw new CaError('CSR_MALFORMED', `CSR is larger than ${MAX_CSR_SIZE / 1024} KiB`);
  let s = 0;
  let e = pem.length;
  while (s < e && isSpace(pem.charCodeAt(s))) s++;
  while (e > s && isSpace(pem.charCodeAt(e - 1))) e--;
  if (s === e) throw new CaError('CSR_MALFORMED', 'CSR is empty');
  if (!pem.startsWith(BEGIN, s)) {
    throw pemError('it must start with "-----BEGIN CERTIFICATE REQUEST-----"');
  }
  const labelStart = s + BEGIN.length;
  const labelEnd = pem.indexOf(DASHES, labelStart);
  if (labelEnd < 0 || labelEnd - labelStart > 64) throw pemError('the BEGIN line is incomplete');
  const label = pem.slice(labelStart, labelEnd);
  if (!PEM_LABELS.has(label)) {
    const what = WRONG_PEM_LABELS.get(label);
    throw pemError(`${what === undefined ? 'the PEM block is not' : `this is ${what}, not`} a CERTIFICATE REQUEST`);
  }
  const bodyStart = labelEnd + DASHES.length;
  const endLine = `-----END ${label}-----`;
  const endIdx = pem.indexOf('-----END ', bodyStart);
  const nextBegin = pem.indexOf(BEGIN, bodyStart);
  if (nextBegin >= 0 && (endIdx < 0 || nextBegin < endIdx)) throw pemError('the first PEM block has no END line');
  if (endIdx < 0) throw pemError('the END line is missing');
  if (!pem.startsWith(endLine, endIdx)) throw pemError('the END line does not match the BEGIN line');
  const after = endIdx + endLine.length;
  if (after !== e) {
    if (nextBegin >= 0) throw pemError('it contains more than one PEM block; send exactly one certificate request');
    throw pemError('unexpected text after the END line');
  }
  const body = pem.slice(bodyStart, endIdx).replace(PEM_WHITESPACE, '');
  if (body.length === 0) throw pemError('the PEM block is empty');
  if (body.length % 4 !== 0 || !PEM_BASE64.test(body)) {
    throw pemError('the body is not valid base64 (PEM headers are not supported)');
  }
  return Buffer.from(body, 'base64');
}

/* ------------------------------------------------------------------------------------------------
 * OIDs
 * ---------------------------------------------------------------------------------------------- */

const OID_EXTENSION_REQUEST = oidKey('1.2.840.113549.1.9.14');
const OID_CN = oidKey('2.5.4.3');
const OID_SAN = oidKey('2.5.29.17');
const OID_KU = oidKey('2.5.29.15');
const OID_EKU = oidKey('2.5.29.37');
const OID_BC = oidKey('2.5.29.19');
const OID_SKI = oidKey('2.5.29.14');

type Hash = 'sha256' | 'sha384' | 'sha512';

const HASHES = new Map<string, Hash>([
  [oidKey('2.16.840.1.101.3.4.2.1'), 'sha256'],
  [oidKey('2.16.840.1.101.3.4.2.2'), 'sha384'],
  [oidKey('2.16.840.1.101.3.4.2.3'), 'sha512'],
]);

const OID_RSA_PSS = oidKey('1.2.840.113549.1.1.10');
const OID_MGF1 = oidKey('1.2.840.113549.1.1.8');

interface SignatureAlgorithm {
  readonly keyAlgorithm: 'RSA' | 'ECDSA';
  readonly hash: Hash;
  /** Set for RSASSA-PSS. */
  readonly pssSaltLength?: number;
}

const RSA_PKCS1 = new Map<string, SignatureAlgorithm>([
  [oidKey('1.2.840.113549.1.1.11'), { keyAlgorithm: 'RSA', hash: 'sha256' }],
  [oidKey('1.2.840.113549.1.1.12'), { keyAlgorithm: 'RSA', hash: 'sha384' }],
  [oidKey('1.2.840.113549.1.1.13'), { keyAlgorithm: 'RSA', hash: 'sha512' }],
]);
const ECDSA = new Map<string, SignatureAlgorithm>([
  [oidKey('1.2.840.10045.4.3.2'), { keyAlgorithm: 'ECDSA', hash: 'sha256' }],
  [oidKey('1.2.840.10045.4.3.3'), { keyAlgorithm: 'ECDSA', hash: 'sha384' }],
  [oidKey('1.2.840.10045.4.3.4'), { keyAlgorithm: 'ECDSA', hash: 'sha512' }],
]);
const USE_SHA2 = 'sign the CSR with SHA-256, SHA-384 or SHA-512';
const REFUSED_SIGNATURE_ALGORITHMS = new Map<string, string>([
  [oidKey('1.2.840.113549.1.1.2'), 'md2WithRSAEncryption'],
  [oidKey('1.2.840.113549.1.1.4'), 'md5WithRSAEncryption'],
  [oidKey('1.2.840.113549.1.1.5'), 'sha1WithRSAEncryption'],
  [oidKey('1.2.840.113549.1.1.14'), 'sha224WithRSAEncryption'],
  [oidKey('1.2.840.10045.4.1'), 'ecdsa-with-SHA1'],
  [oidKey('1.2.840.10045.4.3.1'), 'ecdsa-with-SHA224'],
]);

function unsupportedSignature(message: string): CaError {
  return new CaError('CSR_UNSUPPORTED_KEY', message);
}

/* ------------------------------------------------------------------------------------------------
 * CSR
 * ---------------------------------------------------------------------------------------------- */

/** Parses a PEM CSR (exactly one CERTIFICATE REQUEST block), verifies its signature. */
export function parseCsrPem(pem: string): ParsedCsr {
  return verified(decodeCsrDer(pemToDer(pem)));
}

/** Parses a DER CSR (the whole buffer, nothing after it), verifies its signature. */
export function parseCsrDer(input: Buffer | Uint8Array): ParsedCsr {
  return verified(decodeCsrDer(input));
}

function verified(d: DecodedCsr): ParsedCsr {
  verifyCsrProof(d.proof);
  return d.unverified;
}

/** Decodes and checks a PEM CSR except for its signature: check `proof` before trusting it. */
export function decodeCsrPem(pem: string): DecodedCsr {
  return decodeCsrDer(pemToDer(pem));
}

/** Decodes and checks a DER CSR except for its signature: check `proof` before trusting it. */
export function decodeCsrDer(input: Buffer | Uint8Array): DecodedCsr {
  if (!(input instanceof Uint8Array)) throw malformed('expected DER bytes');
  const der = Buffer.isBuffer(input) ? input : Buffer.from(input.buffer, input.byteOffset, input.byteLength);
  if (der.length === 0) throw new CaError('CSR_MALFORMED', 'CSR is empty');
  if (der.length > MAX_CSR_SIZE) throw new CaError('CSR_MALFORMED', `CSR is larger than ${MAX_CSR_SIZE / 1024} KiB`);

  // CertificationRequest ::= SEQUENCE { certificationRequestInfo, signatureAlgorithm, signature BIT STRING }
  const top = new DerReader(der);
  const csrTlv = top.expect(Tag.SEQUENCE, 'CertificationRequest');
  top.finish('the CertificationRequest');
  const csr = top.enter(csrTlv, 'CertificationRequest');
  const criTlv = csr.expect(Tag.SEQUENCE, 'CertificationRequestInfo');
  const sigAlgTlv = csr.expect(Tag.SEQUENCE, 'signature algorithm');
  const sigTlv = csr.expect(Tag.BIT_STRING, 'signature');
  csr.finish('the signature');

  // CertificationRequestInfo ::= SEQUENCE { version INTEGER { v1(0) }, subject Name,
  //   subjectPKInfo SubjectPublicKeyInfo, attributes [0] IMPLICIT SET OF Attribute }
  const cri = csr.enter(criTlv, 'CertificationRequestInfo');
  if (cri.peekTag() === contextTag(0, true)) {
    throw malformed('this is an X.509 certificate, not a certificate request');
  }
  const version = readSmallUint(der, cri.expect(Tag.INTEGER, 'version'), 'version');
  if (version !== 0) throw malformed('version must be v1 (0)');
  const subjectTlv = cri.expect(Tag.SEQUENCE, 'subject');
  const spkiTlv = cri.expect(Tag.SEQUENCE, 'SubjectPublicKeyInfo');
  // The attributes field is mandatory in RFC 2986 but some encoders omit it when empty: tolerated.
  const attributesTlv = cri.optional(contextTag(0, true), 'attributes');
  cri.finish('the attributes');

  const spki = Buffer.from(der.subarray(spkiTlv.start, spkiTlv.end));
  const { publicKey, key } = importSubjectPublicKeyInfo(spki);

  const sigAlg = readSignatureAlgorithm(der, csr.enter(sigAlgTlv, 'signature algorithm'));
  if (sigAlg.keyAlgorithm !== key.algorithm) {
    throw new CaError('CSR_BAD_SIGNATURE', `CSR is signed with an ${sigAlg.keyAlgorithm} algorithm but its key is ${key.algorithm}`);
  }
  const signature = readOctetAlignedBitString(der, sigTlv, 'signature');
  // Copies: the proof must cover exactly the bytes decoded here, whatever the caller later does with `input`.
  const proof: CsrProof = {
    ...signatureOptions(sigAlg),
    data: Buffer.from(der.subarray(criTlv.start, criTlv.end)),
    publicKey,
    signature: Buffer.from(signature),
  };

  const subjectCommonName = readSubjectCommonName(der, cri.enter(subjectTlv, 'subject'));
  const ext: Extensions = {
    uris: [],
    dnsNames: [],
    ipAddresses: [],
    emails: [],
    requestsCa: false,
    unknownExtensions: [],
  };
  if (attributesTlv !== undefined) readAttributes(der, cri.enter(attributesTlv, 'attributes'), ext);

  const parsed: ParsedCsr = {
    spki,
    publicKey,
    key,
    uris: ext.uris,
    dnsNames: ext.dnsNames,
    ipAddresses: ext.ipAddresses,
    emails: ext.emails,
    requestsCa: ext.requestsCa,
    unknownExtensions: ext.unknownExtensions,
  };
  return { unverified: subjectCommonName === undefined ? parsed : { ...parsed, subjectCommonName }, proof };
}

/* ------------------------------------------------------------------------------------------------
 * Signature
 * ---------------------------------------------------------------------------------------------- */

function readSignatureAlgorithm(der: Buffer, alg: DerReader): SignatureAlgorithm {
  const oid = readOidKey(der, alg.expect(Tag.OID, 'signature algorithm'), 'signature algorithm');
  const pkcs1 = RSA_PKCS1.get(oid);
  if (pkcs1 !== undefined) {
    // RFC 4055: parameters NULL; absent parameters are tolerated (as most verifiers do).
    const p = alg.optional(Tag.NULL, 'signature algorithm parameters');
    if (p !== undefined) checkNull(p, 'signature algorithm parameters');
    alg.finish('the signature algorithm');
    return pkcs1;
  }
  const ecdsa = ECDSA.get(oid);
  if (ecdsa !== undefined) {
    alg.finish('the signature algorithm (ECDSA takes no parameters)');
    return ecdsa;
  }
  if (oid === OID_RSA_PSS) return readPssParameters(der, alg);
  const refused = REFUSED_SIGNATURE_ALGORITHMS.get(oid);
  if (refused !== undefined) throw unsupportedSignature(`signature algorithm ${refused} is not supported; ${USE_SHA2}`);
  throw unsupportedSignature(
    `the CSR's signature algorithm is not supported; sign it with RSA (PKCS#1 v1.5 or PSS) or ECDSA, using SHA-256, SHA-384 or SHA-512`,
  );
}

/** A hash AlgorithmIdentifier: SHA-2 OID with absent or NULL parameters. */
function readHashAlgorithm(der: Buffer, r: DerReader, what: string): Hash {
  const seq = r.expect(Tag.SEQUENCE, what);
  const alg = r.enter(seq, what);
  const hash = HASHES.get(readOidKey(der, alg.expect(Tag.OID, what), what));
  if (hash === undefined) throw unsupportedSignature(`RSA-PSS with this hash is not supported; ${USE_SHA2}`);
  const p = alg.optional(Tag.NULL, `${what} parameters`);
  if (p !== undefined) checkNull(p, `${what} parameters`);
  alg.finish(what);
  return hash;
}

/** The salt length Go (istiod's x509.CheckSignature) verifies RSA-PSS with: the hash's length. */
const PSS_SALT_BYTES: Readonly<Record<Hash, number>> = { sha256: 32, sha384: 48, sha512: 64 };

/**
 * RSASSA-PSS-params (RFC 4055). Only the unambiguous modern form is accepted: explicit SHA-2 hash,
 * MGF1 with the same hash (Node cannot verify with a different MGF1 hash), an explicit salt length
 * equal to the hash's (what Go verifies, so what istiod accepts), trailer field 1. The SHA-1
 * defaults are refused.
 */
function readPssParameters(der: Buffer, alg: DerReader): SignatureAlgorithm {
  const refuse = (): CaError =>
    unsupportedSignature(`RSA-PSS is supported only with SHA-256/384/512, MGF1 with the same hash and an explicit salt length equal to the hash's (32, 48 or 64 bytes); ${USE_SHA2}`);
  const paramsTlv = alg.expect(Tag.SEQUENCE, 'RSA-PSS parameters');
  alg.finish('the RSA-PSS parameters');
  const p = alg.enter(paramsTlv, 'RSA-PSS parameters');

  const hashTlv = p.optional(contextTag(0, true), 'RSA-PSS hash');
  if (hashTlv === undefined) throw refuse();
  const hr = p.enter(hashTlv, 'RSA-PSS hash');
  const hash = readHashAlgorithm(der, hr, 'RSA-PSS hash');
  hr.finish('the RSA-PSS hash');

  const mgfTlv = p.optional(contextTag(1, true), 'RSA-PSS mask generation');
  if (mgfTlv === undefined) throw refuse();
  const mr = p.enter(mgfTlv, 'RSA-PSS mask generation');
  const mgfSeq = mr.expect(Tag.SEQUENCE, 'RSA-PSS mask generation');
  mr.finish('the RSA-PSS mask generation');
  const mgf = mr.enter(mgfSeq, 'RSA-PSS mask generation');
  if (readOidKey(der, mgf.expect(Tag.OID, 'RSA-PSS mask generation'), 'RSA-PSS mask generation') !== OID_MGF1) throw refuse();
  const mgfHash = readHashAlgorithm(der, mgf, 'RSA-PSS MGF1 hash');
  mgf.finish('the RSA-PSS MGF1 hash');
  if (mgfHash !== hash) throw refuse();

  const saltTlv = p.optional(contextTag(2, true), 'RSA-PSS salt length');
  if (saltTlv === undefined) throw refuse();
  const sr = p.enter(saltTlv, 'RSA-PSS salt length');
  const saltLength = readSmallUint(der, sr.expect(Tag.INTEGER, 'RSA-PSS salt length'), 'RSA-PSS salt length');
  sr.finish('the RSA-PSS salt length');
  if (saltLength > 1024) throw malformed('RSA-PSS salt length is implausibly large');
  if (saltLength !== PSS_SALT_BYTES[hash]) throw refuse();

  const trailerTlv = p.optional(contextTag(3, true), 'RSA-PSS trailer field');
  if (trailerTlv !== undefined) {
    const tr = p.enter(trailerTlv, 'RSA-PSS trailer field');
    if (readSmallUint(der, tr.expect(Tag.INTEGER, 'RSA-PSS trailer field'), 'RSA-PSS trailer field') !== 1) {
      throw malformed('RSA-PSS trailer field must be 1');
    }
    tr.finish('the RSA-PSS trailer field');
  }
  p.finish('the RSA-PSS parameters');
  return { keyAlgorithm: 'RSA', hash, pssSaltLength: saltLength };
}

function signatureOptions(alg: SignatureAlgorithm): Pick<CsrProof, 'hash' | 'pssSaltLength'> {
  return alg.pssSaltLength === undefined ? { hash: alg.hash } : { hash: alg.hash, pssSaltLength: alg.pssSaltLength };
}

function verifyKey(p: CsrProof): KeyObject | { key: KeyObject; padding: number; saltLength: number } {
  return p.pssSaltLength === undefined ? p.publicKey : { key: p.publicKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: p.pssSaltLength };
}

const BAD_SIGNATURE = 'CSR signature does not verify with the public key in the CSR';

/** Proof of possession: the CSR's signature verifies with the key it carries. Throws CSR_BAD_SIGNATURE. */
export function verifyCsrProof(p: CsrProof): void {
  let ok: boolean;
  try {
    ok = verify(p.hash, p.data, verifyKey(p), p.signature);
  } catch {
    // OpenSSL throws for some malformed signatures (wrong length, bad ECDSA DER): same verdict.
    ok = false;
  }
  if (!ok) throw new CaError('CSR_BAD_SIGNATURE', BAD_SIGNATURE);
}

/**
 * verifyCsrProof on libuv's thread pool: the JavaScript thread only dispatches the check, so a
 * single process can use a second core for signatures while it parses the next request.
 */
export function verifyCsrProofAsync(p: CsrProof): Promise<void> {
  return new Promise((resolve, reject) => {
    const verdict = (ok: boolean): void => (ok ? resolve() : reject(new CaError('CSR_BAD_SIGNATURE', BAD_SIGNATURE)));
    try {
      verify(p.hash, p.data, verifyKey(p), p.signature, (err, ok) => verdict(!err && ok));
    } catch {
      verdict(false);
    }
  });
}

/* ------------------------------------------------------------------------------------------------
 * Subject
 * ---------------------------------------------------------------------------------------------- */

const UTF8 = new TextDecoder('utf-8', { fatal: true });
const UTF16BE = new TextDecoder('utf-16be', { fatal: true });

/** Walks Name ::= SEQUENCE OF RDN (SET SIZE(1..MAX) OF AttributeTypeAndValue); returns the first CN. */
function readSubjectCommonName(der: Buffer, name: DerReader): string | undefined {
  let cn: string | undefined;
  while (!name.done) {
    const rdnTlv = name.expect(Tag.SET, 'subject name component');
    const rdn = name.enter(rdnTlv, 'subject name component');
    if (rdn.done) throw malformed('subject has an empty name component');
    while (!rdn.done) {
      const atvTlv = rdn.expect(Tag.SEQUENCE, 'subject attribute');
      const atv = rdn.enter(atvTlv, 'subject attribute');
      const type = readOidKey(der, atv.expect(Tag.OID, 'subject attribute type'), 'subject attribute type');
      const value = atv.next('subject attribute value');
      atv.finish('a subject attribute');
      if (type === OID_CN && cn === undefined) cn = decodeDirectoryString(der, value, 'subject common name');
    }
  }
  return cn;
}

function decodeDirectoryString(der: Buffer, tlv: Tlv, what: string): string {
  const bytes = der.subarray(tlv.contentStart, tlv.end);
  try {
    switch (tlv.tag) {
      case Tag.UTF8_STRING:
        return UTF8.decode(bytes);
      case Tag.PRINTABLE_STRING:
      case Tag.IA5_STRING:
        if (!isAscii(bytes)) throw malformed(`${what} is not ASCII`);
        return bytes.toString('latin1');
      case Tag.TELETEX_STRING:
        return bytes.toString('latin1');
      case Tag.BMP_STRING:
        if (bytes.length % 2 !== 0) throw malformed(`${what} is not a valid BMPString`);
        return UTF16BE.decode(bytes);
      case Tag.UNIVERSAL_STRING: {
        if (bytes.length % 4 !== 0) throw malformed(`${what} is not a valid UniversalString`);
        let s = '';
        for (let i = 0; i < bytes.length; i += 4) s += String.fromCodePoint(bytes.readUInt32BE(i));
        return s;
      }
      default:
        throw malformed(`${what} has an unsupported string type`);
    }
  } catch (err) {
    if (err instanceof CaError) throw err;
    throw malformed(`${what} is not a valid string`);
  }
}

function isAscii(bytes: Buffer): boolean {
  for (const b of bytes) if (b > 0x7f) return false;
  return true;
}

/* ------------------------------------------------------------------------------------------------
 * Attributes and requested extensions
 * ---------------------------------------------------------------------------------------------- */

interface Extensions {
  uris: string[];
  dnsNames: string[];
  ipAddresses: string[];
  emails: string[];
  requestsCa: boolean;
  unknownExtensions: string[];
}

/** attributes [0] IMPLICIT SET OF Attribute { type OID, values SET OF ANY }. Only extensionRequest is read. */
function readAttributes(der: Buffer, attrs: DerReader, out: Extensions): void {
  let sawExtensionRequest = false;
  while (!attrs.done) {
    const attrTlv = attrs.expect(Tag.SEQUENCE, 'attribute');
    const attr = attrs.enter(attrTlv, 'attribute');
    const type = readOidKey(der, attr.expect(Tag.OID, 'attribute type'), 'attribute type');
    const valuesTlv = attr.expect(Tag.SET, 'attribute values');
    attr.finish('an attribute');
    if (type !== OID_EXTENSION_REQUEST) continue; // challengePassword etc.: not used
    if (sawExtensionRequest) throw malformed('it has more than one extensionRequest attribute');
    sawExtensionRequest = true;
    const values = attr.enter(valuesTlv, 'extensionRequest');
    const extsTlv = values.expect(Tag.SEQUENCE, 'requested extensions');
    values.finish('the requested extensions (extensionRequest must have exactly one value)');
    readExtensions(der, values.enter(extsTlv, 'requested extensions'), out);
  }
}

/** Extensions ::= SEQUENCE OF Extension { extnID OID, critical BOOLEAN DEFAULT FALSE, extnValue OCTET STRING } */
function readExtensions(der: Buffer, exts: DerReader, out: Extensions): void {
  const seen = new Set<string>();
  while (!exts.done) {
    const extTlv = exts.expect(Tag.SEQUENCE, 'extension');
    const ext = exts.enter(extTlv, 'extension');
    const oid = readOidKey(der, ext.expect(Tag.OID, 'extension id'), 'extension id');
    // An explicit FALSE is not DER but is common and harmless: tolerated.
    const critical = ext.optional(Tag.BOOLEAN, 'extension criticality');
    if (critical !== undefined) readBoolean(der, critical, 'extension criticality');
    const valueTlv = ext.expect(Tag.OCTET_STRING, 'extension value');
    ext.finish('an extension');
    if (seen.has(oid)) throw malformed('the same extension is requested twice');
    seen.add(oid);
    const value = new DerReader(der, valueTlv.contentStart, valueTlv.end, 4);
    if (oid === OID_SAN) readSubjectAltNames(der, value, out);
    else if (oid === OID_BC) readBasicConstraints(der, value, out);
    else if (oid === OID_KU) readKeyUsage(der, value, out);
    else if (oid === OID_EKU) readExtendedKeyUsage(der, value);
    else if (oid === OID_SKI) value.expect(Tag.OCTET_STRING, 'subject key identifier');
    else {
      out.unknownExtensions.push(oidKeyToDotted(oid));
      continue;
    }
    value.finish('an extension value');
  }
}

function readBasicConstraints(der: Buffer, r: DerReader, out: Extensions): void {
  const seqTlv = r.expect(Tag.SEQUENCE, 'basic constraints');
  const bc = r.enter(seqTlv, 'basic constraints');
  const caTlv = bc.optional(Tag.BOOLEAN, 'basic constraints cA');
  if (caTlv !== undefined && readBoolean(der, caTlv, 'basic constraints cA')) out.requestsCa = true;
  const pathLen = bc.optional(Tag.INTEGER, 'basic constraints pathLenConstraint');
  if (pathLen !== undefined) readSmallUint(der, pathLen, 'basic constraints pathLenConstraint');
  bc.finish('the basic constraints');
}

/** KeyUsage BIT STRING: keyCertSign is bit 5, cRLSign bit 6 (both in the first octet). */
function readKeyUsage(der: Buffer, r: DerReader, out: Extensions): void {
  const { bytes } = readBitString(der, r.expect(Tag.BIT_STRING, 'key usage'), 'key usage');
  if (bytes.length > 0 && (bytes[0]! & 0x06) !== 0) out.requestsCa = true;
}

function readExtendedKeyUsage(der: Buffer, r: DerReader): void {
  const seqTlv = r.expect(Tag.SEQUENCE, 'extended key usage');
  const eku = r.enter(seqTlv, 'extended key usage');
  if (eku.done) throw malformed('extended key usage is empty');
  while (!eku.done) readOidKey(der, eku.expect(Tag.OID, 'extended key usage'), 'extended key usage');
}

const SAN_EMAIL = contextTag(1, false);
const SAN_DNS = contextTag(2, false);
const SAN_URI = contextTag(6, false);
const SAN_IP = contextTag(7, false);
const REFUSED_SAN_TYPES = new Map<number, string>([
  [contextTag(0, true), 'otherName'],
  [contextTag(3, true), 'x400Address'],
  [contextTag(4, true), 'directoryName'],
  [contextTag(5, true), 'ediPartyName'],
  [contextTag(8, false), 'registeredID'],
]);

/** The most subject alternative names one CSR may ask for (Let's Encrypt's limit too). */
export const MAX_SUBJECT_ALT_NAMES = 100;

/** GeneralNames ::= SEQUENCE SIZE (1..MAX) OF GeneralName */
function readSubjectAltNames(der: Buffer, r: DerReader, out: Extensions): void {
  const seqTlv = r.expect(Tag.SEQUENCE, 'subject alternative names');
  const names = r.enter(seqTlv, 'subject alternative names');
  if (names.done) throw malformed('subject alternative name extension is empty');
  let count = 0;
  while (!names.done) {
    const gn = names.next('subject alternative name');
    // A workload asks for one URI; a few DNS or IP names at most. Thousands fit in a 64 KiB CSR
    // and would each be judged by policy and copied into the leaf.
    if (++count > MAX_SUBJECT_ALT_NAMES) {
      throw new CaError('CSR_FORBIDDEN_EXTENSION', `the CSR asks for more than ${MAX_SUBJECT_ALT_NAMES} subject alternative names; request at most ${MAX_SUBJECT_ALT_NAMES}`);
    }
    switch (gn.tag) {
      case SAN_URI:
        out.uris.push(ia5Name(der, gn, 'URI'));
        break;
      case SAN_DNS:
        out.dnsNames.push(ia5Name(der, gn, 'DNS'));
        break;
      case SAN_EMAIL:
        out.emails.push(ia5Name(der, gn, 'email'));
        break;
      case SAN_IP:
        out.ipAddresses.push(ipToText(der, gn));
        break;
      default: {
        const refused = REFUSED_SAN_TYPES.get(gn.tag);
        if (refused === undefined) throw malformed('subject alternative name has an unknown type');
        throw new CaError(
          'CSR_FORBIDDEN_EXTENSION',
          `subject alternative names of type ${refused} are not supported; request only URI, DNS, IP address or email names`,
        );
      }
    }
  }
}

/** IA5String SAN value: non-empty, printable ASCII without spaces or control characters. */
function ia5Name(der: Buffer, tlv: Tlv, what: string): string {
  const { contentStart: s, end: e } = tlv;
  if (e === s) throw malformed(`${what} subject alternative name is empty`);
  for (let i = s; i < e; i++) {
    const b = der[i]!;
    if (b < 0x21 || b > 0x7e) throw malformed(`${what} subject alternative name contains a character that is not printable ASCII`);
  }
  return der.toString('latin1', s, e);
}

/**
 * iPAddress: 4 octets (IPv4) or 16 (IPv6, printed per RFC 5952). An IPv4-mapped IPv6 address
 * (::ffff:a.b.c.d) is the IPv4 address it maps: policy judges it as that, and the leaf carries
 * it as 4 octets (Go 1.27's parser refuses the mapped form in a certificate).
 */
function ipToText(der: Buffer, tlv: Tlv): string {
  const { contentStart: s, end: e } = tlv;
  if (e - s !== 4 && e - s !== 16) throw malformed('IP address subject alternative name must be 4 or 16 bytes');
  const octets = der.subarray(s, e);
  return ipBytesToText(isIpv4Mapped(octets) ? octets.subarray(12) : octets);
}

