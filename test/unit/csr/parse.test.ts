import { createPrivateKey, sign, verify, webcrypto } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import { CaError } from '../../../src/errors/ca-error.js';
import type { CaErrorCode } from '../../../src/errors/ca-error.js';
import { MAX_CSR_SIZE, decodeCsrDer, parseCsrDer, parseCsrPem, verifyCsrProof, verifyCsrProofAsync } from '../../../src/csr/parse.js';
import type { ParsedCsr } from '../../../src/csr/types.js';
import { derToPem, hasOpenssl, makeCsr, makeKeys, makeOpensslCsr, tamperSignature, x509 } from '../../fixtures/csr.js';
import type { CsrKeyType, OpensslKeyType } from '../../fixtures/csr.js';

const SPIFFE = 'spiffe://cluster.local/ns/default/sa/demo';

function caErrorOf(fn: () => unknown): CaError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(CaError);
    return err as CaError;
  }
  throw new Error('expected a CaError, but parsing succeeded');
}

function expectCaError(fn: () => unknown, code: CaErrorCode, message?: RegExp): CaError {
  const err = caErrorOf(fn);
  expect(err.code, err.message).toBe(code);
  if (message) expect(err.message).toMatch(message);
  return err;
}

/** Re-wraps DER content in a SEQUENCE header of the given form. */
function seqWithHeader(header: number[], content: Buffer, trailer: number[] = []): Buffer {
  return Buffer.concat([Buffer.from(header), content, Buffer.from(trailer)]);
}

/** The content octets of the outer CertificationRequest SEQUENCE. */
function outerContent(der: Buffer): Buffer {
  const lenByte = der[1]!;
  const headerLen = lenByte < 0x80 ? 2 : 2 + (lenByte & 0x7f);
  return der.subarray(headerLen);
}

describe('parseCsrPem: accepted keys', () => {
  const cases: { key: CsrKeyType; algorithm: 'RSA' | 'ECDSA'; size: number; curve?: string }[] = [
    { key: 'rsa2048', algorithm: 'RSA', size: 2048 },
    { key: 'rsa3072', algorithm: 'RSA', size: 3072 },
    { key: 'rsa4096', algorithm: 'RSA', size: 4096 },
    { key: 'ec256', algorithm: 'ECDSA', size: 256, curve: 'P-256' },
    { key: 'ec384', algorithm: 'ECDSA', size: 384, curve: 'P-384' },
  ];
  it.each(cases)('accepts an istio-agent shaped CSR with a $key key', async ({ key, algorithm, size, curve }) => {
    const csr = await makeCsr({ key, uris: [SPIFFE] });
    const parsed = parseCsrPem(csr.pem);
    expect(parsed.key).toEqual(curve ? { algorithm, size, curve } : { algorithm, size });
    expect(parsed.uris).toEqual([SPIFFE]);
    expect(parsed.dnsNames).toEqual([]);
    expect(parsed.ipAddresses).toEqual([]);
    expect(parsed.emails).toEqual([]);
    expect(parsed.requestsCa).toBe(false);
    expect(parsed.unknownExtensions).toEqual([]);
    expect(parsed.subjectCommonName).toBeUndefined();
    expect(parsed.spki.equals(csr.spki)).toBe(true);
    expect(parsed.publicKey.type).toBe('public');
  });

  it.each(['SHA-384', 'SHA-512'] as const)('accepts an RSA CSR signed with %s', async (hash) => {
    const parsed = parseCsrPem((await makeCsr({ key: 'rsa2048', hash })).pem);
    expect(parsed.key.algorithm).toBe('RSA');
  });

  it.each(['SHA-256', 'SHA-512'] as const)('accepts a P-384 CSR signed with %s', async (hash) => {
    expect(parseCsrPem((await makeCsr({ key: 'ec384', hash })).pem).key.curve).toBe('P-384');
  });

  it('accepts the same CSR as DER', async () => {
    const csr = await makeCsr();
    expect(parseCsrDer(csr.der).uris).toEqual(['spiffe://cluster.local/ns/default/sa/default']);
    expect(parseCsrDer(new Uint8Array(csr.der)).key.curve).toBe('P-256');
  });

  it('accepts CRLF line endings and surrounding whitespace', async () => {
    const { pem } = await makeCsr();
    expect(parseCsrPem(`\r\n  ${pem.replace(/\n/g, '\r\n')}\n\n`).uris).toHaveLength(1);
  });

  it('accepts a body on one line and the legacy NEW CERTIFICATE REQUEST label', async () => {
    const { der } = await makeCsr();
    const b64 = der.toString('base64');
    expect(parseCsrPem(`-----BEGIN CERTIFICATE REQUEST-----\n${b64}\n-----END CERTIFICATE REQUEST-----`).uris).toHaveLength(1);
    expect(parseCsrPem(derToPem(der, 'NEW CERTIFICATE REQUEST')).uris).toHaveLength(1);
  });

  it('returns a public key that verifies signatures made with the private key', async () => {
    for (const key of ['ec256', 'rsa2048'] as const) {
      const csr = await makeCsr({ key });
      const parsed = parseCsrPem(csr.pem);
      const data = Buffer.from('hello mesh');
      const nodeKey = createPrivateKey(csr.privateKeyPem);
      const sig = sign('sha256', data, nodeKey);
      expect(verify('sha256', data, parsed.publicKey, sig)).toBe(true);
      expect(verify('sha256', Buffer.from('other'), parsed.publicKey, sig)).toBe(false);
      // and the SPKI exported from the KeyObject is the one in the CSR
      expect(parsed.publicKey.export({ type: 'spki', format: 'der' }).equals(parsed.spki)).toBe(true);
    }
  });

  it('returns an SPKI that is a copy, not a view of the input', async () => {
    const csr = await makeCsr();
    const parsed = parseCsrDer(csr.der);
    const before = Buffer.from(parsed.spki);
    csr.der.fill(0);
    expect(parsed.spki.equals(before)).toBe(true);
  });
});

describe('parseCsrPem: refused keys', () => {
  const cases: { key: CsrKeyType; message: RegExp }[] = [
    { key: 'rsa1024', message: /RSA key of 1024 bits is too small; use 2048 to 8192 bits/ },
    { key: 'ec521', message: /EC curve P-521 is not supported; use P-256 or P-384/ },
    { key: 'ed25519', message: /Ed25519 keys are not supported/ },
  ];
  it.each(cases)('rejects a CSR with a $key key as CSR_UNSUPPORTED_KEY', async ({ key, message }) => {
    const { pem } = await makeCsr({ key });
    expectCaError(() => parseCsrPem(pem), 'CSR_UNSUPPORTED_KEY', message);
  });

  it('rejects an RSA key whose public exponent is not 65537', async () => {
    const keys = (await webcrypto.subtle.generateKey(
      { name: 'RSASSA-PKCS1-v1_5', modulusLength: 2048, publicExponent: new Uint8Array([3]), hash: 'SHA-256' },
      true,
      ['sign', 'verify'],
    )) as CryptoKeyPair;
    const { pem } = await makeCsr({ key: 'rsa2048', keys });
    expectCaError(() => parseCsrPem(pem), 'CSR_UNSUPPORTED_KEY', /exponent must be 65537/);
  });
});

describe('parseCsrPem: signatures', () => {
  it.each(['ec256', 'ec384', 'rsa2048'] as const)('rejects a %s CSR whose signature was tampered with', async (key) => {
    const { der } = await makeCsr({ key });
    expectCaError(() => parseCsrPem(derToPem(tamperSignature(der))), 'CSR_BAD_SIGNATURE');
  });

  it('rejects a CSR whose requested SAN was changed after signing', async () => {
    const { der } = await makeCsr({ uris: ['spiffe://cluster.local/ns/default/sa/aaaa'] });
    const at = der.indexOf('aaaa');
    const forged = Buffer.from(der);
    forged.write('root', at, 'latin1');
    expectCaError(() => parseCsrDer(forged), 'CSR_BAD_SIGNATURE', /does not verify/);
  });

  it('rejects a CSR signed by a different key than the one it contains', async () => {
    const a = await makeCsr();
    const b = await makeCsr({ keys: await makeKeys('ec256') });
    const cri = (await x509.Pkcs10CertificateRequestGenerator.create({
      name: 'O=',
      keys: { publicKey: a.publicKey, privateKey: b.privateKey },
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } as EcdsaParams,
    })).rawData;
    expectCaError(() => parseCsrDer(Buffer.from(cri)), 'CSR_BAD_SIGNATURE');
  });
});

describe('decodeCsrDer and the proof of possession', () => {
  it('checks the bytes it decoded, even when the caller reuses its buffer before the check', async () => {
    const { der } = await makeCsr();
    const input = Buffer.from(der);
    const d = decodeCsrDer(input);
    input.fill(0);
    expect(() => verifyCsrProof(d.proof)).not.toThrow();
    await expect(verifyCsrProofAsync(d.proof)).resolves.toBeUndefined();
    expect(d.unverified.uris).toEqual(['spiffe://cluster.local/ns/default/sa/default']);
  });

  it('decodes a CSR with a bad signature; only the proof refuses it, on both paths', async () => {
    const { der } = await makeCsr({ key: 'rsa2048' });
    const d = decodeCsrDer(tamperSignature(der));
    expectCaError(() => verifyCsrProof(d.proof), 'CSR_BAD_SIGNATURE');
    await expect(verifyCsrProofAsync(d.proof)).rejects.toMatchObject({ code: 'CSR_BAD_SIGNATURE' });
  });
});

describe('parseCsrPem: malformed input', () => {
  let valid: { pem: string; der: Buffer };
  let certPem: string;
  beforeAll(async () => {
    valid = await makeCsr();
    const keys = await makeKeys('ec256');
    const cert = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: '01',
      name: 'CN=not a csr',
      notBefore: new Date(Date.now() - 1000),
      notAfter: new Date(Date.now() + 86_400_000),
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } as EcdsaParams,
      keys,
    });
    certPem = cert.toString('pem');
  });

  const body = (): string => valid.der.toString('base64');
  const wrap = (b64: string): string => `-----BEGIN CERTIFICATE REQUEST-----\n${b64}\n-----END CERTIFICATE REQUEST-----\n`;

  const cases: { name: string; input: () => string; message?: RegExp }[] = [
    { name: 'an empty string', input: () => '', message: /empty/ },
    { name: 'only whitespace', input: () => ' \n\t\r\n', message: /empty/ },
    { name: 'plain text', input: () => 'hello, I am a CSR', message: /must start with/ },
    { name: 'base64 without armor', input: body, message: /must start with/ },
    { name: 'a BEGIN line without an END line', input: () => `-----BEGIN CERTIFICATE REQUEST-----\n${body()}\n`, message: /END line is missing/ },
    { name: 'an END line with another label', input: () => `-----BEGIN CERTIFICATE REQUEST-----\n${body()}\n-----END CERTIFICATE-----\n`, message: /does not match/ },
    { name: 'an incomplete BEGIN line', input: () => '-----BEGIN CERTIFICATE REQUEST', message: /BEGIN line is incomplete/ },
    { name: 'an empty PEM block', input: () => wrap(''), message: /block is empty/ },
    { name: 'invalid base64 characters', input: () => wrap(body().replace(/^(.{10})./, '$1*')), message: /not valid base64/ },
    { name: 'base64 of the wrong length', input: () => wrap(body().slice(0, -1)), message: /not valid base64/ },
    { name: 'PEM headers', input: () => wrap(`Proc-Type: 4,ENCRYPTED\n\n${body()}`), message: /not valid base64/ },
    { name: 'a truncated PEM body', input: () => wrap(body().slice(0, 200)), message: /truncated|longer than/ },
    { name: 'two PEM blocks', input: () => valid.pem + valid.pem, message: /more than one PEM block/ },
    { name: 'a CSR nested inside another block', input: () => `-----BEGIN CERTIFICATE REQUEST-----\n${valid.pem}-----END CERTIFICATE REQUEST-----\n`, message: /no END line/ },
    { name: 'text after the END line', input: () => `${valid.pem}trailing words`, message: /unexpected text after the END line/ },
    { name: 'a certificate', input: () => certPem, message: /this is a certificate, not a CERTIFICATE REQUEST/ },
    { name: 'a certificate relabelled as a CSR', input: () => certPem.replace(/CERTIFICATE/g, 'CERTIFICATE REQUEST'), message: /X.509 certificate, not a certificate request/ },
    { name: 'a private key', input: () => derToPem(Buffer.from('not really a key'), 'PRIVATE KEY'), message: /private key/ },
    { name: 'an unknown PEM label', input: () => derToPem(valid.der, 'SOMETHING ELSE'), message: /not a CERTIFICATE REQUEST/ },
    { name: 'base64 of random bytes', input: () => derToPem(Buffer.from('0123456789abcdef0123456789')), message: /malformed/ },
    { name: 'a DER CSR followed by garbage', input: () => derToPem(Buffer.concat([valid.der, Buffer.from([0])])), message: /unexpected data after the CertificationRequest/ },
    {
      name: 'a DER CSR with an indefinite length',
      input: () => derToPem(seqWithHeader([0x30, 0x80], outerContent(valid.der), [0, 0])),
      message: /indefinite length/,
    },
    {
      name: 'a DER CSR with a non-minimal length',
      input: () => {
        const c = outerContent(valid.der);
        return derToPem(seqWithHeader([0x30, 0x83, 0, c.length >> 8, c.length & 0xff], c));
      },
      message: /non-minimal length/,
    },
    { name: 'a PEM larger than 64 KiB', input: () => wrap('A'.repeat(MAX_CSR_SIZE)), message: /larger than 64 KiB/ },
  ];

  it.each(cases)('rejects $name as CSR_MALFORMED', ({ input, message }) => {
    expectCaError(() => parseCsrPem(input()), 'CSR_MALFORMED', message);
  });

  it('rejects an empty or oversized DER buffer', () => {
    expectCaError(() => parseCsrDer(Buffer.alloc(0)), 'CSR_MALFORMED', /empty/);
    expectCaError(() => parseCsrDer(Buffer.alloc(MAX_CSR_SIZE + 1, 0x30)), 'CSR_MALFORMED', /larger than/);
  });

  it('rejects a non-string PEM as CSR_MALFORMED', () => {
    expectCaError(() => parseCsrPem(undefined as unknown as string), 'CSR_MALFORMED');
    expectCaError(() => parseCsrDer('abc' as unknown as Buffer), 'CSR_MALFORMED');
  });

  it('rejects every truncation of a valid CSR', () => {
    for (let n = 0; n < valid.der.length; n++) {
      expectCaError(() => parseCsrDer(valid.der.subarray(0, n)), 'CSR_MALFORMED');
    }
  });

  it('never echoes the input in its messages', async () => {
    const secret = 'c2VjcmV0LXRva2VuLWRvLW5vdC1sb2c';
    const inputs = [
      secret,
      `-----BEGIN ${secret}-----\nAAAA\n-----END ${secret}-----`,
      wrap(secret),
      `${valid.pem}${secret}`,
      derToPem(Buffer.from(secret)),
      (await makeCsr({ key: 'rsa1024', uris: [`spiffe://${secret}/ns/a/sa/b`] })).pem,
    ];
    for (const input of inputs) {
      const err = caErrorOf(() => parseCsrPem(input));
      expect(err.message).not.toContain(secret);
      expect(err.message).not.toContain('secret');
    }
  });
});

describe('parseCsrPem: requested names and extensions', () => {
  it('extracts DNS, IP and email SANs alongside the URI', async () => {
    const { pem } = await makeCsr({
      uris: [SPIFFE, 'https://example.com/x'],
      dns: ['svc.default.svc.cluster.local', '*.example.com'],
      ips: ['10.1.2.3', '2001:db8::1', '::1'],
      emails: ['ops@example.com'],
    });
    const parsed = parseCsrPem(pem);
    expect(parsed.uris).toEqual([SPIFFE, 'https://example.com/x']);
    expect(parsed.dnsNames).toEqual(['svc.default.svc.cluster.local', '*.example.com']);
    expect(parsed.ipAddresses).toEqual(['10.1.2.3', '2001:db8::1', '::1']);
    expect(parsed.emails).toEqual(['ops@example.com']);
  });

  it('parses a CSR without any extensions', async () => {
    const parsed = parseCsrPem((await makeCsr({ uris: [] })).pem);
    expect(parsed.uris).toEqual([]);
    expect(parsed.requestsCa).toBe(false);
  });

  it('accepts a non-critical SAN', async () => {
    expect(parseCsrPem((await makeCsr({ sanCritical: false })).pem).uris).toHaveLength(1);
  });

  it('flags a CSR that asks for BasicConstraints CA:true', async () => {
    expect(parseCsrPem((await makeCsr({ ca: true })).pem).requestsCa).toBe(true);
  });

  it('flags a CSR that asks for keyCertSign', async () => {
    expect(parseCsrPem((await makeCsr({ keyCertSign: true })).pem).requestsCa).toBe(true);
  });

  it('flags a CSR that asks for cRLSign', async () => {
    const ku = new x509.KeyUsagesExtension(x509.KeyUsageFlags.cRLSign, true);
    expect(parseCsrPem((await makeCsr({ extensions: [ku] })).pem).requestsCa).toBe(true);
  });

  it('does not flag CA:false or leaf key usages', async () => {
    const exts = [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment | x509.KeyUsageFlags.decipherOnly, true),
      new x509.ExtendedKeyUsageExtension(['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2']),
      new x509.SubjectKeyIdentifierExtension('0102030405060708090a0b0c0d0e0f1011121314'),
    ];
    const parsed = parseCsrPem((await makeCsr({ extensions: exts })).pem);
    expect(parsed.requestsCa).toBe(false);
    expect(parsed.unknownExtensions).toEqual([]);
  });

  it('lists extensions it does not know', async () => {
    const exts = [
      new x509.Extension('1.2.3.4.5', false, new Uint8Array([0x05, 0x00])),
      new x509.Extension('2.5.29.32', false, new Uint8Array([0x30, 0x00])),
      new x509.Extension('1.3.6.1.4.1.99999.1', true, new Uint8Array([0x05, 0x00])),
    ];
    const parsed = parseCsrPem((await makeCsr({ extensions: exts })).pem);
    expect(parsed.unknownExtensions).toEqual(['1.2.3.4.5', '2.5.29.32', '1.3.6.1.4.1.99999.1']);
    expect(parsed.uris).toHaveLength(1);
  });

  it('rejects a CSR that requests the same extension twice', async () => {
    const dup = new x509.SubjectAlternativeNameExtension([{ type: 'dns', value: 'a.example' }]);
    const { pem } = await makeCsr({ extensions: [dup] });
    expectCaError(() => parseCsrPem(pem), 'CSR_MALFORMED', /requested twice/);
  });

  it('refuses SAN types it cannot represent', async () => {
    const san = new x509.SubjectAlternativeNameExtension([{ type: 'dn', value: 'CN=x' }], true);
    const { pem } = await makeCsr({ uris: [], extensions: [san] });
    expectCaError(() => parseCsrPem(pem), 'CSR_FORBIDDEN_EXTENSION', /directoryName/);
  });

  it('extracts the subject common name', async () => {
    expect(parseCsrPem((await makeCsr({ cn: 'workload.example' })).pem).subjectCommonName).toBe('workload.example');
    expect(parseCsrPem((await makeCsr({ subject: 'O=acme, CN=x\u00e9y' })).pem).subjectCommonName).toBe('x\u00e9y');
  });

  it('has no subject common name for the istio-agent subject O=', async () => {
    const parsed: ParsedCsr = parseCsrPem((await makeCsr({ subject: 'O=' })).pem);
    expect('subjectCommonName' in parsed).toBe(false);
  });
});

describe.runIf(hasOpenssl())('parseCsrPem: cross-check with the openssl CLI', () => {
  const accepted: { key: OpensslKeyType; algorithm: string; size: number }[] = [
    { key: 'ec256', algorithm: 'ECDSA', size: 256 },
    { key: 'ec384', algorithm: 'ECDSA', size: 384 },
    { key: 'rsa2048', algorithm: 'RSA', size: 2048 },
  ];
  it.each(accepted)('accepts an openssl $key CSR with a critical SPIFFE URI SAN', ({ key, algorithm, size }) => {
    const { pem } = makeOpensslCsr({ key, addext: [`subjectAltName=critical,URI:${SPIFFE}`] });
    const parsed = parseCsrPem(pem);
    expect(parsed.key.algorithm).toBe(algorithm);
    expect(parsed.key.size).toBe(size);
    expect(parsed.uris).toEqual([SPIFFE]);
    expect(parsed.subjectCommonName).toBeUndefined();
  });

  const refused: { key: OpensslKeyType; message: RegExp }[] = [
    { key: 'rsa1024', message: /RSA key of 1024 bits is too small/ },
    { key: 'ec521', message: /P-521 is not supported/ },
    { key: 'ed25519', message: /Ed25519 keys are not supported/ },
  ];
  it.each(refused)('rejects an openssl $key CSR as CSR_UNSUPPORTED_KEY', ({ key, message }) => {
    expectCaError(() => parseCsrPem(makeOpensslCsr({ key }).pem), 'CSR_UNSUPPORTED_KEY', message);
  });

  it('accepts an openssl RSA-PSS (SHA-256, salt 32) CSR', () => {
    const { pem } = makeOpensslCsr({ key: 'rsa2048', digest: '-sha256', sigopt: ['rsa_padding_mode:pss', 'rsa_pss_saltlen:32', 'rsa_mgf1_md:sha256'] });
    expect(parseCsrPem(pem).key).toEqual({ algorithm: 'RSA', size: 2048 });
  });

  it('rejects an openssl CSR signed with SHA-1 as CSR_UNSUPPORTED_KEY', () => {
    expectCaError(() => parseCsrPem(makeOpensslCsr({ key: 'ec256', digest: '-sha1' }).pem), 'CSR_UNSUPPORTED_KEY', /ecdsa-with-SHA1/);
  });

  it('agrees with openssl on names, CN and CA requests', () => {
    const { pem } = makeOpensslCsr({
      key: 'ec256',
      subject: '/O=acme/CN=legacy.example',
      addext: [
        'subjectAltName=URI:spiffe://td/ns/a/sa/b,DNS:a.example,IP:192.168.0.1,IP:fe80::1:2,IP:::ffff:192.0.2.1,email:x@y.example',
        'basicConstraints=critical,CA:TRUE',
        'keyUsage=critical,keyCertSign',
        'certificatePolicies=1.2.3.4',
        // the largest arc Go's encoding/asn1 reads, which must survive intact
        '1.3.6.1.4.1.99999.2147483647=critical,ASN1:NULL',
      ],
    });
    const parsed = parseCsrPem(pem);
    expect(parsed.uris).toEqual(['spiffe://td/ns/a/sa/b']);
    expect(parsed.dnsNames).toEqual(['a.example']);
    // The IPv4-mapped address is the IPv4 address it maps (policy judges it so; the leaf carries 4 octets).
    expect(parsed.ipAddresses).toEqual(['192.168.0.1', 'fe80::1:2', '192.0.2.1']);
    expect(parsed.emails).toEqual(['x@y.example']);
    expect(parsed.subjectCommonName).toBe('legacy.example');
    expect(parsed.requestsCa).toBe(true);
    expect(parsed.unknownExtensions).toEqual(['2.5.29.32', '1.3.6.1.4.1.99999.2147483647']);
  });

  it('accepts 100 subject alternative names and refuses 101 as CSR_FORBIDDEN_EXTENSION', () => {
    const sans = (n: number): string => `subjectAltName=URI:spiffe://td/ns/a/sa/b,${Array.from({ length: n - 1 }, (_, i) => `DNS:h${i}.example`).join(',')}`;
    expect(parseCsrPem(makeOpensslCsr({ key: 'ec256', addext: [sans(100)] }).pem).dnsNames).toHaveLength(99);
    const err = expectCaError(() => parseCsrPem(makeOpensslCsr({ key: 'ec256', addext: [sans(101)] }).pem), 'CSR_FORBIDDEN_EXTENSION');
    expect(err.message).toBe('the CSR asks for more than 100 subject alternative names; request at most 100');
  });

  it('refuses as CSR_MALFORMED an extension OID with an arc Go cannot read (above 2^31-1)', () => {
    const { pem } = makeOpensslCsr({ key: 'ec256', addext: ['1.3.6.1.4.1.99999.2147483648=ASN1:NULL'] });
    expectCaError(() => parseCsrPem(pem), 'CSR_MALFORMED');
  });

  it('rejects a tampered openssl CSR as CSR_BAD_SIGNATURE', () => {
    const { der } = makeOpensslCsr({ key: 'rsa2048' });
    expectCaError(() => parseCsrDer(tamperSignature(der)), 'CSR_BAD_SIGNATURE');
  });
});
