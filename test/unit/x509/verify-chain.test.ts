import { X509Certificate, generateKeyPairSync, webcrypto } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initCaDir } from '../../../src/ca/init.js';
import type { CaMaterial } from '../../../src/ca/material.js';
import { LocalIssuer, type SignedLeaf } from '../../../src/issuer/local.js';
import { signedBy, verifyResponseChain } from '../../../src/x509/verify-chain.js';
import { x509 } from '../../fixtures/csr.js';
import { caCert, leafCert, nameConstraints } from '../../support/constrained-ca.js';

const ID = 'spiffe://cluster.local/ns/default/sa/sleep';
const HOUR_MS = 3_600_000;

let base: string;
let a: CaMaterial;
let b: CaMaterial;
let leafA: SignedLeaf;
let leafB: SignedLeaf;
/** [leaf, intermediate, root bundle] from CA A. */
let good: string[];

function sign(ca: CaMaterial, notBefore = new Date(Date.now() - 60_000), notAfter = new Date(Date.now() + HOUR_MS)): SignedLeaf {
  const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return new LocalIssuer('test', ca).sign({ spki: publicKey.export({ type: 'spki', format: 'der' }), uris: [ID], notBefore, notAfter });
}

beforeAll(async () => {
  base = mkdtempSync(join(tmpdir(), 'meshcert-verify-chain-'));
  a = await initCaDir({ dir: join(base, 'a') });
  b = await initCaDir({ dir: join(base, 'b') });
  leafA = sign(a);
  leafB = sign(b);
  good = [leafA.pem, ...leafA.chainPem];
});
afterAll(() => {
  rmSync(base, { recursive: true, force: true });
});

describe('verifyResponseChain accepts', () => {
  it('a leaf, its intermediate and the root bundle', () => {
    expect(good).toHaveLength(3);
    const check = verifyResponseChain(good, a.rootBundlePem);
    expect(check.leaf.serialNumber.toLowerCase().replace(/^0+/, '')).toBe(leafA.serial);
    expect(check.intermediates.map((c) => c.fingerprint256)).toEqual([a.signingCert.fingerprint256]);
    expect(check.root.fingerprint256).toBe(a.roots[0]!.fingerprint256);
  });

  it('a response whose root bundle holds a second root (rotation)', () => {
    expect(() => verifyResponseChain([leafA.pem, a.intermediatesPem[0]!, b.rootBundlePem + a.rootBundlePem], a.rootBundlePem)).not.toThrow();
  });

  it('trusted roots that include others', () => {
    expect(verifyResponseChain(good, b.rootBundlePem + a.rootBundlePem).root.fingerprint256).toBe(a.roots[0]!.fingerprint256);
  });

  it('a leaf signed directly by the root (two elements)', () => {
    // The intermediate plays "leaf" here: it is signed by the root.
    const check = verifyResponseChain([a.intermediatesPem[0]!, a.rootBundlePem], a.rootBundlePem);
    expect(check.intermediates).toEqual([]);
  });
});

describe('verifyResponseChain refuses', () => {
  it.each<[string, () => string[], () => string, RegExp]>([
    ['an empty response', () => [], () => a.rootBundlePem, /has 0 element\(s\); istio-agent needs at least 2/],
    ['a lone leaf', () => [leafA.pem], () => a.rootBundlePem, /has 1 element\(s\)/],
    ['a middle element holding two certificates', () => [leafA.pem, a.intermediatesPem[0]! + a.rootBundlePem, a.rootBundlePem], () => a.rootBundlePem, /each non-root element must hold exactly one certificate/],
    ['a leaf element holding the whole chain', () => [leafA.pem + a.intermediatesPem[0]!, a.intermediatesPem[0]!, a.rootBundlePem], () => a.rootBundlePem, /exactly one certificate/],
    ['an empty middle element', () => [leafA.pem, '', a.rootBundlePem], () => a.rootBundlePem, /exactly one certificate/],
    ['a root bundle of another CA', () => [leafA.pem, a.intermediatesPem[0]!, b.rootBundlePem], () => a.rootBundlePem, /holds none of the trusted roots/],
    ['a chain trusted by no one (wrong trusted root)', () => good, () => b.rootBundlePem, /holds none of the trusted roots/],
    ['an empty root element', () => [leafA.pem, a.intermediatesPem[0]!, ''], () => a.rootBundlePem, /holds none of the trusted roots/],
    ['a leaf not signed by the intermediate (broken link)', () => [leafB.pem, a.intermediatesPem[0]!, a.rootBundlePem], () => a.rootBundlePem, /element 0 is not signed by element 1/],
    ['an intermediate of another CA in the middle (broken link)', () => [leafA.pem, b.intermediatesPem[0]!, a.rootBundlePem], () => a.rootBundlePem, /element 0 is not signed by element 1/],
    ['a chain that ends at a root other than the one named', () => [leafB.pem, b.intermediatesPem[0]!, a.rootBundlePem], () => a.rootBundlePem, /does not end at a trusted root/],
    ['a chain that ends at an offered root that is trusted but not its own', () => [leafB.pem, b.intermediatesPem[0]!, a.rootBundlePem + b.rootBundlePem], () => a.rootBundlePem, /does not end at a trusted root/],
    ['elements in the wrong order', () => [a.intermediatesPem[0]!, leafA.pem, a.rootBundlePem], () => a.rootBundlePem, /element 0 is not signed by element 1/],
  ])('%s', (_name, chain, trusted, message) => {
    expect(() => verifyResponseChain(chain(), trusted())).toThrow(message);
  });

  it('an expired leaf', () => {
    const old = sign(a, new Date(Date.now() - 3 * HOUR_MS), new Date(Date.now() - HOUR_MS));
    expect(() => verifyResponseChain([old.pem, ...old.chainPem], a.rootBundlePem)).toThrow(/is not valid now/);
  });

  it('a leaf that is not valid yet', () => {
    const future = sign(a, new Date(Date.now() + HOUR_MS), new Date(Date.now() + 2 * HOUR_MS));
    expect(() => verifyResponseChain([future.pem, ...future.chainPem], a.rootBundlePem)).toThrow(/is not valid now/);
  });

  it('a chain whose root has expired', async () => {
    const stale = await initCaDir({ dir: join(base, 'stale-root'), now: new Date(Date.now() - 3 * 24 * HOUR_MS), rootLifetimeMs: 24 * HOUR_MS, intermediateLifetimeMs: 30 * 24 * HOUR_MS });
    // The issuer itself refuses to sign past its root, so sign while the root was still valid.
    const leaf = sign(stale, new Date(Date.now() - 3 * 24 * HOUR_MS), new Date(Date.now() - 2.5 * 24 * HOUR_MS + HOUR_MS));
    expect(() => verifyResponseChain([leaf.pem, ...leaf.chainPem], stale.rootBundlePem)).toThrow(/is not valid now$/);
  });

  it('a good chain judged at a time after it expires', () => {
    expect(() => verifyResponseChain(good, a.rootBundlePem, new Date(Date.now() + 2 * HOUR_MS))).toThrow(/is not valid now/);
  });
});

describe('signedBy', () => {
  it('needs the parent\'s signature, not only its name and key identifier', async () => {
    // A forgery: it names A's intermediate as its issuer, with that intermediate's key identifier,
    // but is signed with another key. OpenSSL's issuer check (checkIssued) compares only those.
    const parent = new x509.X509Certificate(a.signingCert.raw);
    const ski = parent.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId;
    const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
    const forger = await webcrypto.subtle.generateKey(alg, false, ['sign', 'verify']);
    const forged = await x509.X509CertificateGenerator.create({
      serialNumber: '0102',
      subject: 'CN=forged',
      issuer: parent.subject,
      notBefore: new Date(Date.now() - 60_000),
      notAfter: new Date(Date.now() + HOUR_MS),
      publicKey: forger.publicKey,
      signingKey: forger.privateKey,
      signingAlgorithm: alg,
      extensions: ski ? [new x509.AuthorityKeyIdentifierExtension(ski)] : [],
    });
    const cert = new X509Certificate(Buffer.from(forged.rawData));
    expect(cert.checkIssued(a.signingCert), 'the forgery passes the name and key-identifier check').toBe(true);
    expect(signedBy(cert, a.signingCert)).toBe(false);
    expect(signedBy(new X509Certificate(leafA.pem), a.signingCert)).toBe(true);
    expect(() => verifyResponseChain([forged.toString('pem'), a.intermediatesPem[0]!, a.rootBundlePem], a.rootBundlePem)).toThrow(/element 0 is not signed by element 1/);
  });
});

describe('verifyResponseChain, as Go verifies past the signatures', () => {
  it("refuses a leaf whose names the intermediate's name constraints leave out, and accepts one they permit (URIs, DNS names, IP addresses)", async () => {
    const root = await caCert(undefined, 'CN=nc root');
    const intermediate = await caCert(root, 'CN=nc intermediate', [nameConstraints({ uri: ['cluster.local'], dns: ['.svc.example.com'], ip: ['10.0.0.0/8'] })]);
    const response = async (sans: Parameters<typeof leafCert>[1]): Promise<string[]> => [(await leafCert(intermediate, sans)).toString('pem'), intermediate.cert.toString('pem'), root.cert.toString('pem')];
    const rootPem = root.cert.toString('pem');
    expect(verifyResponseChain(await response({ uris: [ID], dnsNames: ['a.svc.example.com'], ipAddresses: ['10.1.2.3'] }), rootPem).root.subject).toBe('CN=nc root');
    const cases: Array<[Parameters<typeof leafCert>[1], string]> = [
      [{ uris: ['spiffe://remote.example/ns/a/sa/b'] }, 'spiffe://remote.example/ns/a/sa/b'],
      [{ uris: [ID], dnsNames: ['a.example.org'] }, 'DNS name a.example.org'],
      [{ uris: [ID], ipAddresses: ['192.168.0.1'] }, 'IP address 192.168.0.1'],
    ];
    for (const [sans, excluded] of cases) {
      await expect((async () => verifyResponseChain(await response(sans), rootPem))()).rejects.toThrow(new RegExp(`^the chain breaks constraints Go's crypto/x509 enforces: "CN=nc intermediate" has name constraints that exclude ${excluded.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
    }
  });
});
