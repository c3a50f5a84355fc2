import 'reflect-metadata';
import { execFile } from 'node:child_process';
import { createHash, generateKeyPairSync, KeyObject, webcrypto, X509Certificate } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import * as x509 from '@peculiar/x509';
import { AsnConvert } from '@peculiar/asn1-schema';
import { Certificate } from '@peculiar/asn1-x509';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readChildren, readElement } from '../../../src/x509/der.js';
import {
  buildLeaf,
  buildLeafAsync,
  derToPem,
  prepareLeafSigner,
  newSerial,
} from '../../../src/x509/leaf.js';
import type { LeafParams, LeafSigner } from '../../../src/x509/leaf.js';

x509.cryptoProvider.set(webcrypto as unknown as Crypto);
const subtle = webcrypto.subtle;
const run = promisify(execFile);

type KeyKind = 'EC P-256' | 'EC P-384' | 'RSA-2048';
const KEY_KINDS: readonly KeyKind[] = ['EC P-256', 'EC P-384', 'RSA-2048'];

const GEN_ALG: Record<KeyKind, RsaHashedKeyGenParams | EcKeyGenParams> = {
  'EC P-256': { name: 'ECDSA', namedCurve: 'P-256' },
  'EC P-384': { name: 'ECDSA', namedCurve: 'P-384' },
  'RSA-2048': { name: 'RSASSA-PKCS1-v1_5', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' },
};
// What the fast path picks for each CA key, expressed for @peculiar/x509.
const SIGN_ALG: Record<KeyKind, Algorithm | EcdsaParams> = {
  'EC P-256': { name: 'ECDSA', hash: 'SHA-256' } as EcdsaParams,
  'EC P-384': { name: 'ECDSA', hash: 'SHA-384' } as EcdsaParams,
  'RSA-2048': { name: 'RSASSA-PKCS1-v1_5' },
};
const SIG_OID: Record<KeyKind, string> = {
  'EC P-256': '1.2.840.10045.4.3.2',
  'EC P-384': '1.2.840.10045.4.3.3',
  'RSA-2048': '1.2.840.113549.1.1.11',
};
const SIG_ALG_DER: Record<KeyKind, string> = {
  'EC P-256': '300a06082a8648ce3d040302',
  'EC P-384': '300a06082a8648ce3d040303',
  'RSA-2048': '300d06092a864886f70d01010b0500',
};

const SPIFFE_ID = 'spiffe://cluster.local/ns/default/sa/httpbin';
const SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
const CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';

/** @peculiar/x509 wants ArrayBuffer-backed views; Node Buffers are typed as ArrayBufferLike-backed. */
const u8 = (b: Buffer): Uint8Array<ArrayBuffer> => Uint8Array.from(b);

const keys = new Map<KeyKind, CryptoKeyPair>();
const cas = new Map<KeyKind, x509.X509Certificate>();
let dir: string;

async function genKeys(kind: KeyKind): Promise<CryptoKeyPair> {
  return (await subtle.generateKey(GEN_ALG[kind], true, ['sign', 'verify'])) as CryptoKeyPair;
}

async function makeRoot(kind: KeyKind, pair: CryptoKeyPair, name: string, withSki = true): Promise<x509.X509Certificate> {
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(true, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
  ];
  if (withSki) extensions.push(await x509.SubjectKeyIdentifierExtension.create(pair.publicKey));
  return x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: '01',
    name,
    notBefore: new Date(Date.now() - 3600_000),
    notAfter: new Date(Date.now() + 365 * 86400_000),
    keys: pair,
    signingAlgorithm: SIGN_ALG[kind],
    extensions,
  });
}

function spkiOf(pair: CryptoKeyPair): Promise<Buffer> {
  return subtle.exportKey('spki', pair.publicKey).then((ab) => Buffer.from(ab));
}

function signerFor(ca: x509.X509Certificate, pair: CryptoKeyPair): LeafSigner {
  return prepareLeafSigner(Buffer.from(ca.rawData), KeyObject.from(pair.privateKey));
}

function baseParams(spki: Buffer, over: Partial<LeafParams> = {}): LeafParams {
  const now = Date.now();
  return {
    serial: newSerial(),
    notBefore: new Date(now - 120_000),
    notAfter: new Date(now + 86400_000),
    spki,
    uris: [SPIFFE_ID],
    ...over,
  };
}

/** The same leaf through @peculiar/x509, extension for extension. */
async function referenceLeaf(
  ca: x509.X509Certificate,
  caKind: KeyKind,
  caPair: CryptoKeyPair,
  p: LeafParams,
): Promise<x509.X509Certificate> {
  const caSki = ca.getExtension(x509.SubjectKeyIdentifierExtension);
  const aki = caSki
    ? new x509.AuthorityKeyIdentifierExtension(caSki.keyId)
    : await x509.AuthorityKeyIdentifierExtension.create(ca.publicKey);
  const eku = [...(p.serverAuth === false ? [] : [SERVER_AUTH]), ...(p.clientAuth === false ? [] : [CLIENT_AUTH])];
  const names: x509.JsonGeneralName[] = [
    ...p.uris.map((value) => ({ type: 'url' as const, value })),
    ...(p.dnsNames ?? []).map((value) => ({ type: 'dns' as const, value })),
    ...(p.ipAddresses ?? []).map((value) => ({ type: 'ip' as const, value })),
  ];
  return x509.X509CertificateGenerator.create({
    serialNumber: p.serial.toString('hex'),
    issuer: ca.subjectName,
    notBefore: p.notBefore,
    notAfter: p.notAfter,
    publicKey: u8(p.spki),
    signingKey: caPair.privateKey,
    signingAlgorithm: SIGN_ALG[caKind],
    extensions: [
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
      ...(eku.length ? [new x509.ExtendedKeyUsageExtension(eku, false)] : []),
      new x509.BasicConstraintsExtension(false, undefined, true),
      await x509.SubjectKeyIdentifierExtension.create(u8(p.spki)),
      aki,
      new x509.SubjectAlternativeNameExtension(names, true),
    ],
  });
}

function tbsOf(der: Buffer): Buffer {
  const tbs = readChildren(der, readElement(der))[0];
  if (!tbs) throw new Error('no TBSCertificate');
  return der.subarray(tbs.offset, tbs.end);
}

/** Every field the brief lists, as seen by both parsers. */
function describeCert(der: Buffer) {
  const p = new x509.X509Certificate(u8(der));
  const n = new X509Certificate(der);
  const asn = AsnConvert.parse(der, Certificate);
  return {
    version: asn.tbsCertificate.version,
    serial: p.serialNumber,
    nodeSerial: n.serialNumber,
    issuer: p.issuer,
    nodeIssuer: n.issuer,
    issuerDer: Buffer.from(AsnConvert.serialize(asn.tbsCertificate.issuer)).toString('hex'),
    subject: p.subject,
    nodeSubject: n.subject,
    notBefore: p.notBefore.getTime(),
    notAfter: p.notAfter.getTime(),
    nodeValidity: [n.validFrom, n.validTo],
    spki: Buffer.from(p.publicKey.rawData).toString('hex'),
    nodeSpki: n.publicKey.export({ type: 'spki', format: 'der' }).toString('hex'),
    extensions: p.extensions.map((e) => ({ oid: e.type, critical: e.critical, value: Buffer.from(e.value).toString('hex') })),
    signatureAlgorithm: p.signatureAlgorithm,
    sigAlgOid: asn.signatureAlgorithm.algorithm,
    tbsSigAlg: asn.tbsCertificate.signature.algorithm,
    nodeSan: n.subjectAltName,
    nodeEku: n.keyUsage,
    nodeCa: n.ca,
  };
}

async function openssl(...args: string[]): Promise<string> {
  const { stdout } = await run('openssl', args);
  return stdout;
}

async function writePem(name: string, der: Buffer): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, derToPem(der));
  return path;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'meshcert-leaf-'));
  await Promise.all(KEY_KINDS.map(async (k) => keys.set(k, await genKeys(k))));
  for (const k of KEY_KINDS) cas.set(k, await makeRoot(k, keys.get(k)!, `CN=meshcert test ${k} root, O=meshcert`));
});

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

const MATRIX = KEY_KINDS.flatMap((ca) => KEY_KINDS.map((leaf) => ({ ca, leaf })));

describe('buildLeaf against @peculiar/x509', () => {
  it.each(MATRIX)('an $ca CA signs an $leaf leaf identical to the reference encoder', async ({ ca: caKind, leaf: leafKind }) => {
    const ca = cas.get(caKind)!;
    const caPair = keys.get(caKind)!;
    const spki = await spkiOf(keys.get(leafKind)!);
    const p = baseParams(spki);
    const fast = buildLeaf(signerFor(ca, caPair), p);
    const ref = Buffer.from((await referenceLeaf(ca, caKind, caPair, p)).rawData);

    // The to-be-signed bytes must match exactly; RSA PKCS#1 v1.5 is deterministic, so there the
    // whole certificate must too (ECDSA signatures are randomized).
    expect(tbsOf(fast).toString('hex')).toBe(tbsOf(ref).toString('hex'));
    if (caKind === 'RSA-2048') expect(fast.toString('hex')).toBe(ref.toString('hex'));

    const f = describeCert(fast);
    expect(f).toEqual(describeCert(ref));
    expect(f.version).toBe(2);
    expect(f.subject).toBe('');
    expect(f.serial).toBe(p.serial.toString('hex').replace(/^(00)+/, ''));
    expect(f.issuerDer).toBe(Buffer.from(ca.subjectName.toArrayBuffer()).toString('hex'));
    expect(f.notBefore).toBe(Math.floor(p.notBefore.getTime() / 1000) * 1000);
    expect(f.spki).toBe(spki.toString('hex'));
    expect(f.sigAlgOid).toBe(SIG_OID[caKind]);
    expect(f.tbsSigAlg).toBe(SIG_OID[caKind]);
    // Raw AlgorithmIdentifier bytes, inner and outer: RSA carries an explicit NULL, ECDSA nothing.
    const [tbsEl, outerAlg] = readChildren(fast, readElement(fast));
    const innerAlg = readChildren(fast, tbsEl!)[2]!;
    expect(fast.subarray(innerAlg.offset, innerAlg.end).toString('hex')).toBe(SIG_ALG_DER[caKind]);
    expect(fast.subarray(outerAlg!.offset, outerAlg!.end).toString('hex')).toBe(SIG_ALG_DER[caKind]);
    expect(f.extensions.map((e) => [e.oid, e.critical])).toEqual([
      ['2.5.29.15', true],
      ['2.5.29.37', false],
      ['2.5.29.19', true],
      ['2.5.29.14', false],
      ['2.5.29.35', false],
      ['2.5.29.17', true],
    ]);
    expect(f.nodeSan).toBe(`URI:${SPIFFE_ID}`);
    expect(f.nodeEku).toEqual([SERVER_AUTH, CLIENT_AUTH]);
    expect(f.nodeCa).toBe(false);

    const caNode = new X509Certificate(Buffer.from(ca.rawData));
    for (const der of [fast, ref]) {
      const leaf = new X509Certificate(der);
      expect(leaf.verify(caNode.publicKey)).toBe(true);
      expect(leaf.checkIssued(caNode)).toBe(true);
    }

    const caPem = await writePem(`ca-${caKind}.pem`, Buffer.from(ca.rawData));
    const fastPem = await writePem(`fast-${caKind}-${leafKind}.pem`, fast);
    const refPem = await writePem(`ref-${caKind}-${leafKind}.pem`, ref);
    for (const purpose of ['sslserver', 'sslclient']) {
      expect(await openssl('verify', '-x509_strict', '-purpose', purpose, '-CAfile', caPem, fastPem, refPem)).toBe(
        `${fastPem}: OK\n${refPem}: OK\n`,
      );
    }
    const text = await openssl('x509', '-noout', '-text', '-in', fastPem);
    expect(text).toContain(`URI:${SPIFFE_ID}`);
    expect(text).toMatch(/X509v3 Key Usage: critical\s+Digital Signature, Key Encipherment/);
    expect(text).toMatch(/X509v3 Basic Constraints: critical\s+CA:FALSE/);
    expect(text).toMatch(/X509v3 Subject Alternative Name: critical/);
    expect(text).toMatch(/Subject: *\n/);
  });

  it.each(KEY_KINDS)('an %s CA signs on the thread pool (buildLeafAsync) exactly what buildLeaf encodes', async (caKind) => {
    const ca = cas.get(caKind)!;
    const signer = signerFor(ca, keys.get(caKind)!);
    const p = baseParams(await spkiOf(keys.get('EC P-256')!));
    const pooled = await buildLeafAsync(signer, p);
    const inline = buildLeaf(signer, p);
    expect(tbsOf(pooled).toString('hex')).toBe(tbsOf(inline).toString('hex'));
    if (caKind === 'RSA-2048') expect(pooled.toString('hex')).toBe(inline.toString('hex'));
    expect(describeCert(pooled)).toEqual(describeCert(inline));
    const caPem = await writePem(`ca-${caKind}.pem`, Buffer.from(ca.rawData));
    const pooledPem = await writePem(`pooled-${caKind}.pem`, pooled);
    expect(await openssl('verify', '-x509_strict', '-purpose', 'sslclient', '-CAfile', caPem, pooledPem)).toBe(`${pooledPem}: OK\n`);
  });

  it.each([
    {
      name: 'DNS and IP SANs with server auth only',
      over: { dnsNames: ['istio-ingressgateway.istio-system.svc'], ipAddresses: ['10.1.2.3', '2001:db8::1'], clientAuth: false },
      san: `URI:${SPIFFE_ID}, DNS:istio-ingressgateway.istio-system.svc, IP Address:10.1.2.3, IP Address:2001:DB8:0:0:0:0:0:1`,
      eku: [SERVER_AUTH],
    },
    { name: 'client auth only', over: { serverAuth: false }, san: `URI:${SPIFFE_ID}`, eku: [CLIENT_AUTH] },
    { name: 'neither auth (no EKU extension at all)', over: { serverAuth: false, clientAuth: false }, san: `URI:${SPIFFE_ID}`, eku: undefined },
    {
      name: 'a notAfter in 2050 (GeneralizedTime)',
      over: { notAfter: new Date('2050-06-01T12:00:00Z') },
      san: `URI:${SPIFFE_ID}`,
      eku: [SERVER_AUTH, CLIENT_AUTH],
    },
  ])('a leaf with $name matches the reference encoder', async (c) => {
    const ca = cas.get('EC P-256')!;
    const caPair = keys.get('EC P-256')!;
    const p = baseParams(await spkiOf(keys.get('EC P-256')!), c.over);
    const fast = buildLeaf(signerFor(ca, caPair), p);
    const ref = Buffer.from((await referenceLeaf(ca, 'EC P-256', caPair, p)).rawData);
    expect(tbsOf(fast).toString('hex')).toBe(tbsOf(ref).toString('hex'));
    const f = describeCert(fast);
    expect(f).toEqual(describeCert(ref));
    expect(f.nodeSan).toBe(c.san);
    expect(f.nodeEku).toEqual(c.eku);
    const caPem = await writePem('ca-variant.pem', Buffer.from(ca.rawData));
    const leafPem = await writePem('leaf-variant.pem', fast);
    expect(await openssl('verify', '-x509_strict', '-CAfile', caPem, leafPem)).toBe(`${leafPem}: OK\n`);
  });
});

describe('chains and issuer details', () => {
  it('a leaf from an intermediate verifies through root -> intermediate -> leaf', async () => {
    const root = cas.get('EC P-384')!;
    const rootPair = keys.get('EC P-384')!;
    const interPair = await genKeys('EC P-256');
    const inter = await x509.X509CertificateGenerator.create({
      serialNumber: '02',
      subject: 'CN=meshcert test intermediate, O=meshcert',
      issuer: root.subjectName,
      notBefore: new Date(Date.now() - 3600_000),
      notAfter: new Date(Date.now() + 30 * 86400_000),
      publicKey: interPair.publicKey,
      signingKey: rootPair.privateKey,
      signingAlgorithm: SIGN_ALG['EC P-384'],
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(interPair.publicKey),
        new x509.AuthorityKeyIdentifierExtension(root.getExtension(x509.SubjectKeyIdentifierExtension)!.keyId),
      ],
    });
    const leaf = buildLeaf(signerFor(inter, interPair), baseParams(await spkiOf(keys.get('RSA-2048')!)));

    const leafNode = new X509Certificate(leaf);
    const interNode = new X509Certificate(Buffer.from(inter.rawData));
    expect(leafNode.checkIssued(interNode)).toBe(true);
    expect(leafNode.verify(interNode.publicKey)).toBe(true);
    expect(leafNode.issuer).toBe(interNode.subject);

    const rootPem = await writePem('chain-root.pem', Buffer.from(root.rawData));
    const interPem = await writePem('chain-inter.pem', Buffer.from(inter.rawData));
    const leafPem = await writePem('chain-leaf.pem', leaf);
    expect(await openssl('verify', '-x509_strict', '-CAfile', rootPem, '-untrusted', interPem, leafPem)).toBe(`${leafPem}: OK\n`);
    // Without the intermediate the chain must not build: the leaf really names the intermediate.
    await expect(openssl('verify', '-CAfile', rootPem, leafPem)).rejects.toThrow();
  });

  it('the AKI falls back to the SHA-1 of the CA public key when the CA has no SKI', async () => {
    const pair = await genKeys('EC P-256');
    const ca = await makeRoot('EC P-256', pair, 'CN=meshcert no-ski root', false);
    expect(ca.getExtension(x509.SubjectKeyIdentifierExtension)).toBeNull();
    const signer = signerFor(ca, pair);
    const expected = Buffer.from(await ca.publicKey.getKeyIdentifier('SHA-1'));
    expect(signer.authorityKeyId.toString('hex')).toBe(expected.toString('hex'));

    const p = baseParams(await spkiOf(keys.get('EC P-256')!));
    const fast = buildLeaf(signer, p);
    const ref = Buffer.from((await referenceLeaf(ca, 'EC P-256', pair, p)).rawData);
    expect(tbsOf(fast).toString('hex')).toBe(tbsOf(ref).toString('hex'));
    const aki = new x509.X509Certificate(u8(fast)).getExtension(x509.AuthorityKeyIdentifierExtension);
    expect(aki?.keyId).toBe(expected.toString('hex'));
    const caPem = await writePem('noski-ca.pem', Buffer.from(ca.rawData));
    const leafPem = await writePem('noski-leaf.pem', fast);
    expect(await openssl('verify', '-CAfile', caPem, leafPem)).toBe(`${leafPem}: OK\n`);
  });

  it('the AKI copies the CA SKI verbatim even when it is not a SHA-1 of the key', async () => {
    const pair = await genKeys('EC P-256');
    const customId = 'c0ffee00112233445566778899aabbccddeeff0011';
    const ca = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: '03',
      name: 'CN=meshcert custom-ski root',
      keys: pair,
      signingAlgorithm: SIGN_ALG['EC P-256'],
      extensions: [
        new x509.BasicConstraintsExtension(true, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true),
        new x509.SubjectKeyIdentifierExtension(customId),
      ],
    });
    const leaf = buildLeaf(signerFor(ca, pair), baseParams(await spkiOf(keys.get('EC P-256')!)));
    expect(new x509.X509Certificate(u8(leaf)).getExtension(x509.AuthorityKeyIdentifierExtension)?.keyId).toBe(customId);
  });

  it('the issuer Name is copied byte for byte, string types included', async () => {
    // BMPString CN and PrintableString O: anything that re-encoded the Name could change them.
    const pair = await genKeys('EC P-256');
    const ca = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: '04',
      name: new x509.Name([{ CN: [{ bmpString: 'Mesh Root' }] }, { O: [{ printableString: 'meshcert' }] }]),
      keys: pair,
      signingAlgorithm: SIGN_ALG['EC P-256'],
      extensions: [new x509.BasicConstraintsExtension(true, undefined, true)],
    });
    const caDer = Buffer.from(ca.rawData);
    const signer = signerFor(ca, pair);
    const tbs = readChildren(caDer, readElement(caDer))[0]!;
    const subject = readChildren(caDer, tbs)[5]!; // [0] version, serial, sigalg, issuer, validity, subject
    expect(signer.issuerName.toString('hex')).toBe(caDer.subarray(subject.offset, subject.end).toString('hex'));
    expect(signer.issuerName.includes(Buffer.from('1e12', 'hex'))).toBe(true); // BMPString, 18 octets

    const leaf = buildLeaf(signer, baseParams(await spkiOf(keys.get('EC P-256')!)));
    expect(new X509Certificate(leaf).checkIssued(new X509Certificate(caDer))).toBe(true);
    const caPem = await writePem('bmp-ca.pem', caDer);
    const leafPem = await writePem('bmp-leaf.pem', leaf);
    expect(await openssl('verify', '-CAfile', caPem, leafPem)).toBe(`${leafPem}: OK\n`);
  });
});

describe('prepareLeafSigner', () => {
  it.each([
    { name: 'an Ed25519 key', key: () => generateKeyPairSync('ed25519').privateKey, err: /unsupported CA key type/ },
    { name: 'a P-521 key', key: () => generateKeyPairSync('ec', { namedCurve: 'P-521' }).privateKey, err: /unsupported CA key curve/ },
    { name: 'a public key', key: () => KeyObject.from(keys.get('EC P-256')!.publicKey), err: /private/ },
    { name: 'a key that does not match the certificate', key: () => generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey, err: /does not match/ },
  ])('refuses $name', (c) => {
    expect(() => prepareLeafSigner(Buffer.from(cas.get('EC P-256')!.rawData), c.key())).toThrow(c.err);
  });

  it('refuses a certificate that is not a CA', async () => {
    const ca = cas.get('EC P-256')!;
    const caPair = keys.get('EC P-256')!;
    const leafPair = await genKeys('EC P-256');
    const leaf = buildLeaf(signerFor(ca, caPair), baseParams(await spkiOf(leafPair)));
    expect(() => prepareLeafSigner(leaf, KeyObject.from(leafPair.privateKey))).toThrow(/CA:true/);
  });

  it('refuses bytes that are not a certificate', () => {
    expect(() => prepareLeafSigner(Buffer.from('3000', 'hex'), KeyObject.from(keys.get('EC P-256')!.privateKey))).toThrow();
  });
});

describe('buildLeaf input checks', () => {
  let signer: LeafSigner;
  let spki: Buffer;
  beforeAll(async () => {
    signer = signerFor(cas.get('EC P-256')!, keys.get('EC P-256')!);
    spki = await spkiOf(keys.get('EC P-256')!);
  });

  it.each([
    { name: 'a zero serial', over: () => ({ serial: Buffer.from([0, 0]) }), err: /serial/ },
    { name: 'a serial longer than 20 octets', over: () => ({ serial: Buffer.alloc(21, 1) }), err: /serial/ },
    { name: 'notAfter before notBefore', over: () => ({ notBefore: new Date(2000), notAfter: new Date(1000) }), err: /notAfter/ },
    { name: 'an invalid Date', over: () => ({ notAfter: new Date('x') }), err: /notAfter/ },
    { name: 'no SAN at all', over: () => ({ uris: [] }), err: /SAN/ },
    { name: 'an empty URI', over: () => ({ uris: [''] }), err: /URI/ },
    { name: 'a non-ASCII URI', over: () => ({ uris: ['spiffe://td/ns/ü/sa/x'] }), err: /ASCII/ },
    { name: 'an empty DNS name', over: () => ({ dnsNames: [''] }), err: /DNS/ },
    { name: 'an unparsable IP', over: () => ({ ipAddresses: ['10.0.0.256'] }), err: /IP/ },
    { name: 'an IPv6 zone id', over: () => ({ ipAddresses: ['fe80::1%eth0'] }), err: /IP/ },
    { name: 'an SPKI with trailing bytes', over: () => ({ spki: Buffer.concat([spki, Buffer.from([0])]) }), err: /spki/ },
    { name: 'an SPKI that is not a SEQUENCE', over: () => ({ spki: Buffer.from('0400', 'hex') }), err: /spki/ },
  ])('refuses $name', (c) => {
    expect(() => buildLeaf(signer, baseParams(spki, c.over()))).toThrow(c.err);
  });

  it('accepts a 20-octet serial and strips leading zeros from shorter ones', () => {
    const long = new X509Certificate(buildLeaf(signer, baseParams(spki, { serial: Buffer.alloc(20, 0x11) })));
    expect(long.serialNumber).toBe('11'.repeat(20));
    const short = new X509Certificate(buildLeaf(signer, baseParams(spki, { serial: Buffer.from('000000ff', 'hex') })));
    expect(short.serialNumber).toBe('FF');
  });
});

describe('newSerial', () => {
  it('is positive, 16 octets and distinct across 1000 calls in the same millisecond', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 1000; i++) {
      const s = newSerial(1_798_500_000_000);
      expect(s.length).toBe(16);
      expect((s[0] as number) & 0x80).toBe(0);
      expect(s[0]).not.toBe(0);
      seen.add(s.toString('hex'));
    }
    expect(seen.size).toBe(1000);
  });

  it('starts with the time in milliseconds and ends with 80 bits that vary', () => {
    const now = Date.UTC(2026, 10, 29, 3, 0, 0, 123);
    const a = newSerial(now);
    const b = newSerial(now);
    expect(a.readUIntBE(0, 6)).toBe(now);
    expect(b.readUIntBE(0, 6)).toBe(now);
    // Every one of the ten random octets differs somewhere across 64 serials.
    const tails = Array.from({ length: 64 }, () => newSerial(now).subarray(6));
    for (let i = 0; i < 10; i++) expect(new Set(tails.map((t) => t[i])).size).toBeGreaterThan(1);
  });

  it('sorts in issuance order, as numbers and as the lowercase hex the inventory stores', () => {
    const hex = (b: Buffer) => b.toString('hex').replace(/^0+(?=.)/, '');
    const times = [Date.UTC(2005, 0, 1), Date.UTC(2026, 10, 29), Date.UTC(2026, 10, 29) + 1, Date.UTC(2039, 8, 1)];
    const serials = times.map((t) => newSerial(t));
    for (let i = 1; i < serials.length; i++) {
      expect(BigInt('0x' + hex(serials[i]!)) > BigInt('0x' + hex(serials[i - 1]!))).toBe(true);
      expect(hex(serials[i]!).length).toBe(hex(serials[i - 1]!).length);
      expect(hex(serials[i]!) > hex(serials[i - 1]!)).toBe(true);
    }
  });

  it('stays positive and 16 octets whatever the clock says', () => {
    for (const t of [-5, 0, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 60]) {
      const s = newSerial(t);
      expect(s.length).toBe(16);
      expect((s[0] as number) & 0x80).toBe(0);
    }
  });

  it('returns independent buffers', () => {
    const a = newSerial();
    const copy = Buffer.from(a);
    newSerial().fill(0xff);
    expect(a.equals(copy)).toBe(true);
  });
});

describe('derToPem', () => {
  it('writes 64-column base64 lines between the markers and ends with a newline', () => {
    const der = Buffer.from(cas.get('RSA-2048')!.rawData);
    const pem = derToPem(der);
    const lines = pem.split('\n');
    expect(lines[0]).toBe('-----BEGIN CERTIFICATE-----');
    expect(pem.endsWith('-----END CERTIFICATE-----\n')).toBe(true);
    const body = lines.slice(1, -2);
    expect(body.slice(0, -1).every((l) => l.length === 64)).toBe(true);
    expect(body.at(-1)!.length).toBeLessThanOrEqual(64);
    expect(new X509Certificate(pem).raw.equals(der)).toBe(true);
  });
});

describe('SubjectKeyIdentifier', () => {
  it('the SKI of a leaf is the SHA-1 of its subjectPublicKey bits (RFC 5280 method 1)', async () => {
    const spki = await spkiOf(keys.get('EC P-384')!);
    const leaf = buildLeaf(signerFor(cas.get('EC P-256')!, keys.get('EC P-256')!), baseParams(spki));
    const bits = readChildren(spki, readElement(spki))[1]!;
    const want = createHash('sha1').update(spki.subarray(bits.start + 1, bits.end)).digest('hex');
    expect(new x509.X509Certificate(u8(leaf)).getExtension(x509.SubjectKeyIdentifierExtension)?.keyId).toBe(want);
  });
});
