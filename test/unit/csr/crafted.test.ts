/**
 * CSRs assembled byte by byte, for shapes that CSR libraries will not produce.
 */
import { constants, generateKeyPairSync, sign } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { Status } from '../../../src/grpc/codes.js';
import { toGrpcFailure } from '../../../src/grpc/status.js';
import { CaError } from '../../../src/errors/ca-error.js';
import type { CaErrorCode } from '../../../src/errors/ca-error.js';
import { oidKey } from '../../../src/csr/der-reader.js';
import { decodeCsrDer, parseCsrDer, verifyCsrProofAsync } from '../../../src/csr/parse.js';

/* -- a tiny DER writer ------------------------------------------------------------------------ */

function len(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  if (n < 0x100) return Buffer.from([0x81, n]);
  return Buffer.from([0x82, n >> 8, n & 0xff]);
}
const tlv = (tag: number, ...parts: Buffer[]): Buffer => {
  const c = Buffer.concat(parts);
  return Buffer.concat([Buffer.from([tag]), len(c.length), c]);
};
const seq = (...p: Buffer[]): Buffer => tlv(0x30, ...p);
const set = (...p: Buffer[]): Buffer => tlv(0x31, ...p);
const oid = (dotted: string): Buffer => tlv(0x06, Buffer.from(oidKey(dotted), 'latin1'));
const int = (v: number): Buffer => tlv(0x02, Buffer.from([v]));
const uint = (mag: Buffer): Buffer => tlv(0x02, mag[0]! >= 0x80 ? Buffer.concat([Buffer.from([0]), mag]) : mag);
const NULL = tlv(0x05);
const octets = (c: Buffer): Buffer => tlv(0x04, c);
const bits = (c: Buffer, unused = 0): Buffer => tlv(0x03, Buffer.from([unused]), c);
const bool = (v: number): Buffer => tlv(0x01, Buffer.from([v]));
const ctx = (n: number, ...p: Buffer[]): Buffer => tlv(0xa0 | n, ...p);
const str = (tag: number, s: Buffer | string): Buffer => tlv(tag, typeof s === 'string' ? Buffer.from(s, 'latin1') : s);

const OID = {
  ecPublicKey: '1.2.840.10045.2.1',
  p256: '1.2.840.10045.3.1.7',
  rsa: '1.2.840.113549.1.1.1',
  ecdsaSha256: '1.2.840.10045.4.3.2',
  rsaSha256: '1.2.840.113549.1.1.11',
  pss: '1.2.840.113549.1.1.10',
  mgf1: '1.2.840.113549.1.1.8',
  sha256: '2.16.840.1.101.3.4.2.1',
  sha384: '2.16.840.1.101.3.4.2.2',
  extReq: '1.2.840.113549.1.9.14',
  san: '2.5.29.17',
  cn: '2.5.4.3',
  o: '2.5.4.10',
} as const;

/* -- keys --------------------------------------------------------------------------------------- */

const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const ecSpki = ec.publicKey.export({ type: 'spki', format: 'der' });
const ec384Spki = generateKeyPairSync('ec', { namedCurve: 'P-384' }).publicKey.export({ type: 'spki', format: 'der' });
let rsaCached: { privateKey: KeyObject; spki: Buffer } | undefined;
function rsa(): { privateKey: KeyObject; spki: Buffer } {
  if (!rsaCached) {
    const k = generateKeyPairSync('rsa', { modulusLength: 2048 });
    rsaCached = { privateKey: k.privateKey, spki: k.publicKey.export({ type: 'spki', format: 'der' }) };
  }
  return rsaCached;
}

/* -- CSR assembly ------------------------------------------------------------------------------- */

const SPIFFE_SAN = seq(oid(OID.san), bool(0xff), octets(seq(str(0x86, 'spiffe://td/ns/a/sa/b'))));

interface Craft {
  version?: Buffer;
  /** Default: O= as Go's crypto/x509 writes it. */
  subject?: Buffer;
  spki?: Buffer;
  /** Extension SEQUENCEs put in one extensionRequest; default the SPIFFE SAN. */
  extensions?: Buffer[];
  /** Replaces the whole attributes field; null omits it. */
  attributes?: Buffer | null;
  sigAlg?: Buffer;
  /** Signs the CertificationRequestInfo; default ECDSA P-256 SHA-256 with `ec`. */
  signer?: (cri: Buffer) => Buffer;
  /** Wraps the signature bytes; default a BIT STRING with no unused bits. */
  signatureField?: (sig: Buffer) => Buffer;
}

function craft(c: Craft = {}): Buffer {
  const attributes =
    c.attributes === null ? Buffer.alloc(0) : (c.attributes ?? ctx(0, seq(oid(OID.extReq), set(seq(...(c.extensions ?? [SPIFFE_SAN]))))));
  const cri = seq(
    c.version ?? int(0),
    c.subject ?? seq(set(seq(oid(OID.o), str(0x13, '')))),
    c.spki ?? ecSpki,
    attributes,
  );
  const signature = (c.signer ?? ((d: Buffer) => sign('sha256', d, ec.privateKey)))(cri);
  return seq(cri, c.sigAlg ?? seq(oid(OID.ecdsaSha256)), (c.signatureField ?? ((s: Buffer) => bits(s)))(signature));
}

function rsaCraft(c: Craft = {}): Buffer {
  const k = rsa();
  return craft({ spki: k.spki, sigAlg: seq(oid(OID.rsaSha256), NULL), signer: (d) => sign('sha256', d, k.privateKey), ...c });
}

function pssParams(opts: { hash?: string; mgfHash?: string; salt?: number; trailer?: number; omit?: ('hash' | 'mgf' | 'salt')[] }): Buffer {
  const omit = opts.omit ?? [];
  const parts: Buffer[] = [];
  if (!omit.includes('hash')) parts.push(ctx(0, seq(oid(opts.hash ?? OID.sha256), NULL)));
  if (!omit.includes('mgf')) parts.push(ctx(1, seq(oid(OID.mgf1), seq(oid(opts.mgfHash ?? OID.sha256), NULL))));
  if (!omit.includes('salt')) parts.push(ctx(2, int(opts.salt ?? 32)));
  if (opts.trailer !== undefined) parts.push(ctx(3, int(opts.trailer)));
  return seq(oid(OID.pss), seq(...parts));
}

const pssSigner = (salt: number) => (d: Buffer) =>
  sign('sha256', d, { key: rsa().privateKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: salt });

function expectCaError(fn: () => unknown, code: CaErrorCode, message?: RegExp): void {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err, 'expected a CaError').toBeInstanceOf(CaError);
  expect((err as CaError).code, (err as CaError).message).toBe(code);
  if (message) expect((err as CaError).message).toMatch(message);
}

/* -- tests -------------------------------------------------------------------------------------- */

describe('hand-built CSRs: accepted shapes', () => {
  it('accepts the istio-agent shape built by hand', () => {
    const parsed = parseCsrDer(craft());
    expect(parsed.uris).toEqual(['spiffe://td/ns/a/sa/b']);
    expect(parsed.key).toEqual({ algorithm: 'ECDSA', size: 256, curve: 'P-256' });
  });

  it('accepts an empty subject and no attributes field at all', () => {
    const parsed = parseCsrDer(craft({ subject: seq(), attributes: null }));
    expect(parsed.uris).toEqual([]);
  });

  it('accepts an explicit FALSE criticality flag', () => {
    const san = seq(oid(OID.san), bool(0x00), octets(seq(str(0x82, 'a.example'))));
    expect(parseCsrDer(craft({ extensions: [san] })).dnsNames).toEqual(['a.example']);
  });

  it('ignores attributes other than extensionRequest', () => {
    const attrs = ctx(0, seq(oid('1.2.840.113549.1.9.7'), set(str(0x0c, 'pw'))), seq(oid(OID.extReq), set(seq(SPIFFE_SAN))));
    expect(parseCsrDer(craft({ attributes: attrs })).uris).toHaveLength(1);
  });

  it('accepts RSA PKCS#1 v1.5 with absent instead of NULL parameters', () => {
    expect(parseCsrDer(rsaCraft({ sigAlg: seq(oid(OID.rsaSha256)) })).key.size).toBe(2048);
  });

  it('accepts RSA-PSS with SHA-256, MGF1-SHA-256 and an explicit salt length', () => {
    expect(parseCsrDer(rsaCraft({ sigAlg: pssParams({ salt: 32, trailer: 1 }), signer: pssSigner(32) })).key.algorithm).toBe('RSA');
  });

  it.each([
    ['ECDSA P-256', () => craft()],
    ['RSA PKCS#1 v1.5', () => rsaCraft({ sigAlg: seq(oid(OID.rsaSha256), NULL) })],
    ['RSA-PSS', () => rsaCraft({ sigAlg: pssParams({ salt: 32, trailer: 1 }), signer: pssSigner(32) })],
  ])('accepts %s on the thread-pool path (decode, then verifyCsrProofAsync) as parseCsrDer does', async (_name, csr) => {
    const der = csr();
    expect(await parseOnPool(der)).toEqual(parseCsrDer(der));
  });

  it.each([
    ['a UTF8String', str(0x0c, Buffer.from('caf\u00e9', 'utf8')), 'caf\u00e9'],
    ['a PrintableString', str(0x13, 'Acme 1'), 'Acme 1'],
    ['an IA5String', str(0x16, 'a@b'), 'a@b'],
    ['a TeletexString', str(0x14, Buffer.from([0x63, 0xe9])), 'c\u00e9'],
    ['a BMPString', str(0x1e, Buffer.from([0x00, 0x63, 0x00, 0xe9])), 'c\u00e9'],
    ['a UniversalString', str(0x1c, Buffer.from([0, 0, 0, 0x63, 0, 0x01, 0xf6, 0x00])), 'c\u{1f600}'],
  ])('decodes a CN in %s', (_name, value, expected) => {
    const subject = seq(set(seq(oid(OID.o), str(0x13, ''))), set(seq(oid(OID.cn), value)));
    expect(parseCsrDer(craft({ subject })).subjectCommonName).toBe(expected);
  });

  it('returns the first CN when there are several', () => {
    const subject = seq(set(seq(oid(OID.cn), str(0x0c, 'one')), seq(oid(OID.cn), str(0x0c, 'two'))));
    expect(parseCsrDer(craft({ subject })).subjectCommonName).toBe('one');
  });

  it('reports an empty CN as an empty string, not as absent', () => {
    const subject = seq(set(seq(oid(OID.cn), str(0x0c, ''))));
    expect(parseCsrDer(craft({ subject })).subjectCommonName).toBe('');
  });
});

describe('hand-built CSRs: refused', () => {
  const uncompressed = ecSpki.subarray(ecSpki.length - 65);
  const ecSpkiWith = (point: Buffer, curve = oid(OID.p256)): Buffer => seq(seq(oid(OID.ecPublicKey), curve), bits(point));
  const rsaSpkiWith = (n: Buffer, e: Buffer, params: Buffer[] = [NULL]): Buffer => seq(seq(oid(OID.rsa), ...params), bits(seq(uint(n), uint(e))));
  const oddModulus = (bytes: number): Buffer => {
    const n = Buffer.alloc(bytes, 0xab);
    n[bytes - 1] = 0x01;
    return n;
  };

  const cases: { name: string; csr: () => Buffer; code: CaErrorCode; message: RegExp }[] = [
    // keys
    { name: 'a compressed EC point', csr: () => craft({ spki: ecSpkiWith(Buffer.concat([Buffer.from([0x02]), uncompressed.subarray(1, 33)])) }), code: 'CSR_UNSUPPORTED_KEY', message: /compressed EC points/ },
    { name: 'an EC point that is not on the curve', csr: () => craft({ spki: ecSpkiWith(Buffer.concat([uncompressed.subarray(0, 64), Buffer.from([uncompressed[64]! ^ 1])])) }), code: 'CSR_MALFORMED', message: /public key is not valid/ },
    {
      name: 'a P-384 point that is not on the curve',
      csr: () => {
        const p = Buffer.from(ec384Spki.subarray(ec384Spki.length - 97));
        p[96] ^= 1;
        return craft({ spki: ecSpkiWith(p, oid('1.3.132.0.34')) });
      },
      code: 'CSR_MALFORMED',
      message: /public key is not valid/,
    },
    { name: 'an EC point of the wrong length', csr: () => craft({ spki: ecSpkiWith(uncompressed.subarray(0, 64)) }), code: 'CSR_MALFORMED', message: /not a valid uncompressed P-256 point/ },
    { name: 'explicit EC curve parameters', csr: () => craft({ spki: seq(seq(oid(OID.ecPublicKey), seq(int(1))), bits(uncompressed)) }), code: 'CSR_UNSUPPORTED_KEY', message: /explicit or implicit curve/ },
    { name: 'the secp256k1 curve', csr: () => craft({ spki: ecSpkiWith(uncompressed, oid('1.3.132.0.10')) }), code: 'CSR_UNSUPPORTED_KEY', message: /secp256k1 is not supported/ },
    { name: 'an unknown curve', csr: () => craft({ spki: ecSpkiWith(uncompressed, oid('1.2.3.4')) }), code: 'CSR_UNSUPPORTED_KEY', message: /this EC curve is not supported/ },
    { name: 'an RSA-PSS-only key', csr: () => craft({ spki: seq(seq(oid(OID.pss)), bits(Buffer.from([0]))) }), code: 'CSR_UNSUPPORTED_KEY', message: /RSA-PSS-only keys/ },
    { name: 'an unknown key algorithm', csr: () => craft({ spki: seq(seq(oid('1.2.3.4.5')), bits(Buffer.from([0]))) }), code: 'CSR_UNSUPPORTED_KEY', message: /public key algorithm is not supported/ },
    { name: 'an RSA key without NULL parameters', csr: () => craft({ spki: rsaSpkiWith(oddModulus(256), Buffer.from([1, 0, 1]), []) }), code: 'CSR_MALFORMED', message: /RSA key parameters is missing/ },
    { name: 'an RSA key of 9000 bits', csr: () => craft({ spki: rsaSpkiWith(oddModulus(1125), Buffer.from([1, 0, 1])) }), code: 'CSR_UNSUPPORTED_KEY', message: /9000 bits is too large; use 2048 to 8192 bits/ },
    { name: 'an RSA key of 2047 bits', csr: () => craft({ spki: rsaSpkiWith(Buffer.concat([Buffer.alloc(255, 0x55), Buffer.from([0x01])]), Buffer.from([1, 0, 1])) }), code: 'CSR_UNSUPPORTED_KEY', message: /2047 bits is too small; use 2048 to 8192 bits/ },
    // 2048 and 8192 bits are taken: the CSR is refused for its ECDSA signature over an RSA key, after the key is read.
    { name: 'an RSA key of 2048 bits under an ECDSA signature', csr: () => craft({ spki: rsaSpkiWith(oddModulus(256), Buffer.from([1, 0, 1])) }), code: 'CSR_BAD_SIGNATURE', message: /signed with an ECDSA algorithm but its key is RSA/ },
    { name: 'an RSA key of 8192 bits under an ECDSA signature', csr: () => craft({ spki: rsaSpkiWith(oddModulus(1024), Buffer.from([1, 0, 1])) }), code: 'CSR_BAD_SIGNATURE', message: /signed with an ECDSA algorithm but its key is RSA/ },
    { name: 'an RSA key with exponent 0x01000101 (65537 followed by another octet)', csr: () => craft({ spki: rsaSpkiWith(oddModulus(256), Buffer.from([1, 0, 1, 1])) }), code: 'CSR_UNSUPPORTED_KEY', message: /exponent must be 65537/ },
    { name: 'RSA key parameters that are a NULL with content', csr: () => craft({ spki: rsaSpkiWith(oddModulus(256), Buffer.from([1, 0, 1]), [tlv(0x05, Buffer.from([0]))]) }), code: 'CSR_MALFORMED', message: /RSA key parameters is not a valid NULL/ },
    { name: 'RSA key parameters followed by more data', csr: () => craft({ spki: rsaSpkiWith(oddModulus(256), Buffer.from([1, 0, 1]), [NULL, NULL]) }), code: 'CSR_MALFORMED', message: /unexpected data after RSA key parameters/ },
    { name: 'EC key parameters followed by more data', csr: () => craft({ spki: seq(seq(oid(OID.ecPublicKey), oid(OID.p256), NULL), bits(uncompressed)) }), code: 'CSR_MALFORMED', message: /unexpected data after EC key parameters/ },
    { name: 'an RSA key with exponent 3', csr: () => craft({ spki: rsaSpkiWith(oddModulus(256), Buffer.from([3])) }), code: 'CSR_UNSUPPORTED_KEY', message: /exponent must be 65537/ },
    { name: 'an RSA key with an even modulus', csr: () => craft({ spki: rsaSpkiWith(Buffer.alloc(256, 0xaa), Buffer.from([1, 0, 1])) }), code: 'CSR_MALFORMED', message: /modulus is even/ },
    { name: 'trailing data inside the SPKI', csr: () => craft({ spki: seq(seq(oid(OID.ecPublicKey), oid(OID.p256)), bits(uncompressed), NULL) }), code: 'CSR_MALFORMED', message: /unexpected data after the public key/ },
    // signature algorithms
    { name: 'an ECDSA signature algorithm with an RSA key', csr: () => rsaCraft({ sigAlg: seq(oid(OID.ecdsaSha256)) }), code: 'CSR_BAD_SIGNATURE', message: /signed with an ECDSA algorithm but its key is RSA/ },
    { name: 'an RSA signature algorithm with an EC key', csr: () => craft({ sigAlg: seq(oid(OID.rsaSha256), NULL) }), code: 'CSR_BAD_SIGNATURE', message: /signed with an RSA algorithm but its key is ECDSA/ },
    { name: 'ECDSA with NULL parameters', csr: () => craft({ sigAlg: seq(oid(OID.ecdsaSha256), NULL) }), code: 'CSR_MALFORMED', message: /ECDSA takes no parameters/ },
    { name: 'sha1WithRSAEncryption', csr: () => rsaCraft({ sigAlg: seq(oid('1.2.840.113549.1.1.5'), NULL) }), code: 'CSR_UNSUPPORTED_KEY', message: /sha1WithRSAEncryption is not supported; sign the CSR with SHA-256/ },
    { name: 'an unknown signature algorithm', csr: () => craft({ sigAlg: seq(oid('1.2.3.4')) }), code: 'CSR_UNSUPPORTED_KEY', message: /signature algorithm is not supported/ },
    { name: 'RSA-PSS with the SHA-1 defaults', csr: () => rsaCraft({ sigAlg: seq(oid(OID.pss), seq()), signer: pssSigner(20) }), code: 'CSR_UNSUPPORTED_KEY', message: /RSA-PSS is supported only with/ },
    { name: 'RSA-PSS with a different MGF1 hash', csr: () => rsaCraft({ sigAlg: pssParams({ mgfHash: OID.sha384 }), signer: pssSigner(32) }), code: 'CSR_UNSUPPORTED_KEY', message: /RSA-PSS is supported only with/ },
    { name: 'RSA-PSS without a salt length', csr: () => rsaCraft({ sigAlg: pssParams({ omit: ['salt'] }), signer: pssSigner(20) }), code: 'CSR_UNSUPPORTED_KEY', message: /RSA-PSS is supported only with/ },
    { name: 'RSA-PSS with trailer field 2', csr: () => rsaCraft({ sigAlg: pssParams({ trailer: 2 }), signer: pssSigner(32) }), code: 'CSR_MALFORMED', message: /trailer field must be 1/ },
    { name: 'RSA-PSS whose declared salt length is not the one used', csr: () => rsaCraft({ sigAlg: pssParams({ salt: 32 }), signer: pssSigner(20) }), code: 'CSR_BAD_SIGNATURE', message: /does not verify/ },
    // Go (istiod) verifies PSS only with the hash's length as salt: another, honestly declared, is refused as there.
    { name: 'RSA-PSS with a salt length other than the hash length (Go refuses it)', csr: () => rsaCraft({ sigAlg: pssParams({ salt: 20 }), signer: pssSigner(20) }), code: 'CSR_UNSUPPORTED_KEY', message: /salt length equal to the hash's/ },
    { name: 'RSA-PSS with a zero salt length', csr: () => rsaCraft({ sigAlg: pssParams({ salt: 0 }), signer: pssSigner(0) }), code: 'CSR_UNSUPPORTED_KEY', message: /salt length equal to the hash's/ },
    // signatures
    { name: 'an ECDSA signature in raw r||s form', csr: () => craft({ signer: (d) => sign('sha256', d, { key: ec.privateKey, dsaEncoding: 'ieee-p1363' }) }), code: 'CSR_BAD_SIGNATURE', message: /does not verify/ },
    { name: 'an RSA signature one byte short', csr: () => rsaCraft({ signatureField: (s) => bits(s.subarray(1)) }), code: 'CSR_BAD_SIGNATURE', message: /does not verify/ },
    { name: 'a signature BIT STRING with unused bits', csr: () => craft({ signatureField: (s) => bits(Buffer.concat([s, Buffer.from([0x80])]), 7) }), code: 'CSR_MALFORMED', message: /not a whole number of bytes/ },
    // request info
    { name: 'version 2', csr: () => craft({ version: int(1) }), code: 'CSR_MALFORMED', message: /version must be v1/ },
    { name: 'a subject with an empty name component', csr: () => craft({ subject: seq(set()) }), code: 'CSR_MALFORMED', message: /empty name component/ },
    { name: 'a CN that is not valid UTF-8', csr: () => craft({ subject: seq(set(seq(oid(OID.cn), str(0x0c, Buffer.from([0xc3, 0x28]))))) }), code: 'CSR_MALFORMED', message: /subject common name is not a valid string/ },
    { name: 'a CN in a PrintableString with non-ASCII bytes', csr: () => craft({ subject: seq(set(seq(oid(OID.cn), str(0x13, Buffer.from([0xe9]))))) }), code: 'CSR_MALFORMED', message: /not ASCII/ },
    { name: 'a CN as an OCTET STRING', csr: () => craft({ subject: seq(set(seq(oid(OID.cn), octets(Buffer.from('x'))))) }), code: 'CSR_MALFORMED', message: /unsupported string type/ },
    { name: 'two extensionRequest attributes', csr: () => craft({ attributes: ctx(0, seq(oid(OID.extReq), set(seq(SPIFFE_SAN))), seq(oid(OID.extReq), set(seq()))) }), code: 'CSR_MALFORMED', message: /more than one extensionRequest/ },
    { name: 'an extensionRequest with two values', csr: () => craft({ attributes: ctx(0, seq(oid(OID.extReq), set(seq(SPIFFE_SAN), seq()))) }), code: 'CSR_MALFORMED', message: /exactly one value/ },
    { name: 'a non-DER criticality flag', csr: () => craft({ extensions: [seq(oid(OID.san), bool(0x01), octets(seq(str(0x82, 'a'))))] }), code: 'CSR_MALFORMED', message: /not a DER BOOLEAN/ },
    { name: 'an extension value with trailing data', csr: () => craft({ extensions: [seq(oid(OID.san), octets(Buffer.concat([seq(str(0x82, 'a')), NULL])))] }), code: 'CSR_MALFORMED', message: /unexpected data after an extension value/ },
    // SANs
    { name: 'an empty SAN extension', csr: () => craft({ extensions: [seq(oid(OID.san), octets(seq()))] }), code: 'CSR_MALFORMED', message: /subject alternative name extension is empty/ },
    { name: 'an empty DNS name', csr: () => craft({ extensions: [seq(oid(OID.san), octets(seq(str(0x82, ''))))] }), code: 'CSR_MALFORMED', message: /DNS subject alternative name is empty/ },
    { name: 'a URI with a NUL byte', csr: () => craft({ extensions: [seq(oid(OID.san), octets(seq(str(0x86, 'spiffe://td\u0000.evil/ns/a/sa/b'))))] }), code: 'CSR_MALFORMED', message: /not printable ASCII/ },
    { name: 'a DNS name with a space', csr: () => craft({ extensions: [seq(oid(OID.san), octets(seq(str(0x82, 'a b'))))] }), code: 'CSR_MALFORMED', message: /not printable ASCII/ },
    { name: 'an email with non-ASCII bytes', csr: () => craft({ extensions: [seq(oid(OID.san), octets(seq(str(0x81, Buffer.from([0x61, 0x40, 0xe9])))))] }), code: 'CSR_MALFORMED', message: /not printable ASCII/ },
    { name: 'an IP address of 5 bytes', csr: () => craft({ extensions: [seq(oid(OID.san), octets(seq(str(0x87, Buffer.from([1, 2, 3, 4, 5])))))] }), code: 'CSR_MALFORMED', message: /must be 4 or 16 bytes/ },
    { name: 'an otherName SAN', csr: () => craft({ extensions: [seq(oid(OID.san), octets(seq(tlv(0xa0, oid('1.3.6.1.4.1.311.20.2.3'), ctx(0, str(0x0c, 'u@d'))))))] }), code: 'CSR_FORBIDDEN_EXTENSION', message: /otherName are not supported/ },
    { name: 'a registeredID SAN', csr: () => craft({ extensions: [seq(oid(OID.san), octets(seq(tlv(0x88, Buffer.from(oidKey('1.2.3'), 'latin1')))))] }), code: 'CSR_FORBIDDEN_EXTENSION', message: /registeredID are not supported/ },
    { name: 'a SAN of an undefined type', csr: () => craft({ extensions: [seq(oid(OID.san), octets(seq(str(0x89, 'x'))))] }), code: 'CSR_MALFORMED', message: /unknown type/ },
    // known extensions with bad contents
    { name: 'BasicConstraints that is not a SEQUENCE', csr: () => craft({ extensions: [seq(oid('2.5.29.19'), octets(bool(0xff)))] }), code: 'CSR_MALFORMED', message: /basic constraints has an unexpected type/ },
    { name: 'an empty ExtendedKeyUsage', csr: () => craft({ extensions: [seq(oid('2.5.29.37'), octets(seq()))] }), code: 'CSR_MALFORMED', message: /extended key usage is empty/ },
    { name: 'a KeyUsage with bad padding', csr: () => craft({ extensions: [seq(oid('2.5.29.15'), octets(bits(Buffer.from([0x05]), 1)))] }), code: 'CSR_MALFORMED', message: /non-zero padding/ },
  ];

  it.each(cases)('rejects a CSR with $name', ({ csr, code, message }) => {
    expectCaError(() => parseCsrDer(csr()), code, message);
  });

  it('tells the client an RSA-PSS salt Go refuses as INVALID_ARGUMENT, naming the salt rule and nothing of the CSR', () => {
    let err: unknown;
    try {
      parseCsrDer(rsaCraft({ sigAlg: pssParams({ salt: 20 }), signer: pssSigner(20) }));
    } catch (e) {
      err = e;
    }
    const told = toGrpcFailure(err);
    expect(told.code).toBe(Status.INVALID_ARGUMENT);
    expect(told.details).toMatch(/^RSA-PSS is supported only with .*salt length equal to the hash's \(32, 48 or 64 bytes\)/);
    expect(told.details).not.toMatch(/BEGIN|[0-9a-f]{32}/);
  });

  it.each(cases)('rejects a CSR with $name alike on the thread-pool path', async ({ csr, code, message }) => {
    const err = await parseOnPool(csr()).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(CaError);
    expect((err as CaError).code).toBe(code);
    expect((err as CaError).message).toMatch(message);
  });

  it('reports a malformed extension before a bad signature (the signature is checked last)', () => {
    const bad = craft({ extensions: [seq(oid(OID.san), octets(seq()))], signatureField: (s) => bits(Buffer.from(s.map((b) => b ^ 0xff))) });
    expectCaError(() => parseCsrDer(bad), 'CSR_MALFORMED', /subject alternative name extension is empty/);
  });
});

/** The server's path: every check but the signature on the JavaScript thread, then the signature on libuv's pool. */
async function parseOnPool(der: Buffer): Promise<unknown> {
  const d = decodeCsrDer(der);
  await verifyCsrProofAsync(d.proof);
  return d.unverified;
}
