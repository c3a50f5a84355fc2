import { execFileSync } from 'node:child_process';
import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initCaDir } from '../../../src/ca/init.js';
import { createIntermediateCert, createRootCert, generateKey, type GeneratedKey } from '../../../src/ca/generate.js';
import { caTexts, loadCaDir, materialFromTexts, type CaMaterial } from '../../../src/ca/material.js';
import { anchorOf } from '../../../src/ca/rotate.js';
import { ConfigError } from '../../../src/errors/ca-error.js';
import { LocalIssuer } from '../../../src/issuer/local.js';
import { x509 } from '../../fixtures/csr.js';

const DAY_MS = 86_400_000;

let base: string;
/** A good CA and an unrelated one, both made by initCaDir. */
let caA: string;
let caB: string;
let n = 0;

const read = (dir: string, file: string): string => readFileSync(join(dir, file), 'utf8');

/** A copy of `from` in a new directory. */
function copyCa(from: string): string {
  const dir = join(base, `copy-${++n}`);
  mkdirSync(dir);
  for (const f of readdirSync(from)) copyFileSync(join(from, f), join(dir, f));
  return dir;
}

function loadError(dir: string, now?: Date): ConfigError {
  try {
    loadCaDir(dir, now);
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return e as ConfigError;
  }
  throw new Error(`expected loadCaDir(${dir}) to throw a ConfigError`);
}

const pem = (c: x509.X509Certificate): string => `${c.toString('pem')}\n`;

/** Writes a CA directory: the signing certificate and its key, cert-chain.pem (the signing certificate, then `above`) and root-cert.pem. */
function writeCa(dir: string, signing: x509.X509Certificate, keyPem: string, above: readonly x509.X509Certificate[], roots: string): void {
  writeFileSync(join(dir, 'ca-cert.pem'), pem(signing));
  writeFileSync(join(dir, 'ca-key.pem'), keyPem);
  writeFileSync(join(dir, 'cert-chain.pem'), [signing, ...above].map(pem).join(''));
  writeFileSync(join(dir, 'root-cert.pem'), roots);
}

beforeAll(async () => {
  base = mkdtempSync(join(tmpdir(), 'meshcert-ca-material-'));
  caA = join(base, 'a');
  caB = join(base, 'b');
  await initCaDir({ dir: caA });
  await initCaDir({ dir: caB });
});
afterAll(() => {
  rmSync(base, { recursive: true, force: true });
});

describe('loadCaDir on a directory made by initCaDir', () => {
  it('loads the signing certificate, key, intermediates and root', () => {
    const m = loadCaDir(caA);
    const inter = new X509Certificate(read(caA, 'ca-cert.pem'));
    const root = new X509Certificate(read(caA, 'root-cert.pem'));
    expect(m.signingCert.fingerprint256).toBe(inter.fingerprint256);
    expect(inter.checkPrivateKey(m.signingKey)).toBe(true);
    expect(m.intermediates.map((c) => c.fingerprint256)).toEqual([inter.fingerprint256]);
    expect(m.roots.map((c) => c.fingerprint256)).toEqual([root.fingerprint256]);
    expect(m.intermediatesPem).toEqual([read(caA, 'ca-cert.pem')]);
    expect(m.rootBundlePem).toBe(read(caA, 'root-cert.pem'));
    expect(m.notAfter.getTime()).toBe(Date.parse(inter.validTo));
  });

  it('loads without cert-chain.pem (it is optional)', () => {
    const dir = copyCa(caA);
    unlinkSync(join(dir, 'cert-chain.pem'));
    expect(loadCaDir(dir).intermediatesPem).toEqual([read(caA, 'ca-cert.pem')]);
  });

  it('loads a root bundle of two roots (rotation) and keeps both, in file order', () => {
    const dir = copyCa(caA);
    writeFileSync(join(dir, 'root-cert.pem'), read(caB, 'root-cert.pem') + read(caA, 'root-cert.pem'));
    const m = loadCaDir(dir);
    expect(m.roots).toHaveLength(2);
    expect(m.rootBundlePem).toBe(read(caB, 'root-cert.pem') + read(caA, 'root-cert.pem'));
    expect(m.rootBundlePem.match(/-----BEGIN CERTIFICATE-----/g)).toHaveLength(2);
    expect(m.intermediatesPem).toEqual([read(caA, 'ca-cert.pem')]);
  });

  it('normalises PEM without a final newline and with CRLF line ends', () => {
    const dir = copyCa(caA);
    writeFileSync(join(dir, 'root-cert.pem'), read(caA, 'root-cert.pem').trimEnd().replace(/\n/g, '\r\n'));
    writeFileSync(join(dir, 'ca-cert.pem'), `# comment\n${read(caA, 'ca-cert.pem').trimEnd()}`);
    const m = loadCaDir(dir);
    expect(m.rootBundlePem.endsWith('\n')).toBe(true);
    expect(m.intermediatesPem.every((p) => p.endsWith('-----END CERTIFICATE-----\n'))).toBe(true);
  });
});

describe('caTexts and materialFromTexts (the CA in force, as a cluster primary hands it to its workers)', () => {
  /** What a process serves and signs with: equal material serves alike. */
  const served = (m: CaMaterial) => ({
    signing: m.signingCert.fingerprint256,
    key: m.signingKey.export({ type: 'pkcs8', format: 'der' }).toString('hex'),
    intermediates: m.intermediates.map((c) => c.fingerprint256),
    intermediatesPem: m.intermediatesPem,
    roots: m.roots.map((c) => c.fingerprint256),
    expiredRoots: m.expiredRoots.map((c) => c.fingerprint256),
    rootBundlePem: m.rootBundlePem,
    notAfter: m.notAfter.getTime(),
  });

  it('give back the material loaded from the files: a rotation bundle, an expired root, and a self-signed signing CA', async () => {
    const stale = join(base, `texts-stale-${++n}`);
    await initCaDir({ dir: stale, now: new Date(Date.now() - 3 * DAY_MS), rootLifetimeMs: DAY_MS, intermediateLifetimeMs: 10 * DAY_MS });
    const bundle = copyCa(caA);
    writeFileSync(join(bundle, 'root-cert.pem'), read(caB, 'root-cert.pem') + read(caA, 'root-cert.pem') + read(stale, 'root-cert.pem'));
    // istiod's own CA: the root signs, and is its own chain.
    const selfSigned = join(base, `texts-self-${++n}`);
    mkdirSync(selfSigned);
    writeFileSync(join(selfSigned, 'ca-cert.pem'), read(caA, 'root-cert.pem'));
    writeFileSync(join(selfSigned, 'ca-key.pem'), read(caA, 'root-key.pem'));
    writeFileSync(join(selfSigned, 'root-cert.pem'), read(caA, 'root-cert.pem'));
    for (const dir of [caA, bundle, selfSigned]) {
      const loaded = loadCaDir(dir);
      expect(served(materialFromTexts(caTexts(loaded))), dir).toEqual(served(loaded));
    }
    expect(loadCaDir(bundle).expiredRoots).toHaveLength(1);
  });

  it('refuse texts as loadCaDir refuses files', () => {
    const texts = caTexts(loadCaDir(caA));
    expect(() => materialFromTexts({ ...texts, key: caTexts(loadCaDir(caB)).key })).toThrow('ca-key.pem does not match the public key of ca-cert.pem');
  });
});

describe('loadCaDir refusals', () => {
  it.each([
    ['refuses a directory without ca-cert.pem', 'ca-cert.pem', /has no ca-cert\.pem \(expected Istio's cacerts layout/],
    ['refuses a directory without ca-key.pem', 'ca-key.pem', /has no ca-key\.pem/],
    ['refuses a directory without root-cert.pem', 'root-cert.pem', /has no root-cert\.pem/],
  ])('%s', (_name, file, message) => {
    const dir = copyCa(caA);
    unlinkSync(join(dir, file));
    expect(loadError(dir).message).toMatch(message);
  });

  it('refuses a directory that does not exist', () => {
    expect(loadError(join(base, 'nowhere')).message).toMatch(/has no ca-cert\.pem/);
  });

  it('refuses a key that does not match its certificate (root key as ca-key.pem)', () => {
    const dir = copyCa(caA);
    copyFileSync(join(dir, 'root-key.pem'), join(dir, 'ca-key.pem'));
    expect(loadError(dir).message).toBe('ca-key.pem does not match the public key of ca-cert.pem');
  });

  it('refuses the key of another CA', () => {
    const dir = copyCa(caA);
    copyFileSync(join(caB, 'ca-key.pem'), join(dir, 'ca-key.pem'));
    expect(loadError(dir).message).toBe('ca-key.pem does not match the public key of ca-cert.pem');
  });

  it('refuses a chain that does not verify (root-cert.pem of another CA)', () => {
    const dir = copyCa(caA);
    copyFileSync(join(caB, 'root-cert.pem'), join(dir, 'root-cert.pem'));
    expect(loadError(dir).message).toMatch(/^CA chain does not verify: ".*meshcert intermediate CA.*" is not signed by any certificate in root-cert\.pem$/);
  });

  it('refuses a cert-chain.pem holding another CA\'s intermediate', () => {
    const dir = copyCa(caA);
    writeFileSync(join(dir, 'cert-chain.pem'), read(caB, 'ca-cert.pem') + read(caA, 'root-cert.pem'));
    expect(loadError(dir).message).toMatch(/is not signed by the next certificate in cert-chain\.pem/);
  });

  it('refuses an expired intermediate', async () => {
    const dir = join(base, `expired-${++n}`);
    await initCaDir({ dir, now: new Date(Date.now() - 3 * DAY_MS), intermediateLifetimeMs: DAY_MS });
    expect(loadError(dir).message).toMatch(/^CA certificate ".*intermediate CA.*" expired on \d{4}-/);
  });

  it('refuses an expired root', async () => {
    const dir = join(base, `expired-root-${++n}`);
    await initCaDir({ dir, now: new Date(Date.now() - 3 * DAY_MS), rootLifetimeMs: DAY_MS, intermediateLifetimeMs: 10 * DAY_MS });
    expect(loadError(dir).message).toMatch(/^CA certificate ".*root CA.*" expired on/);
  });

  it('loads beside an expired root that anchors nothing, leaving that root out of the bundle', async () => {
    const stale = join(base, `stale-root-${++n}`);
    await initCaDir({ dir: stale, now: new Date(Date.now() - 3 * DAY_MS), rootLifetimeMs: DAY_MS, intermediateLifetimeMs: 10 * DAY_MS });
    const dir = copyCa(caA);
    writeFileSync(join(dir, 'root-cert.pem'), read(caA, 'root-cert.pem') + read(stale, 'root-cert.pem'));
    const m = loadCaDir(dir);
    const current = new X509Certificate(read(caA, 'root-cert.pem'));
    const expired = new X509Certificate(read(stale, 'root-cert.pem'));
    expect(m.roots.map((r) => r.fingerprint256)).toEqual([current.fingerprint256]);
    expect(m.expiredRoots.map((r) => r.fingerprint256)).toEqual([expired.fingerprint256]);
    expect(m.rootBundlePem).toBe(read(caA, 'root-cert.pem'));
    // The CA still signs chains that verify against what it serves.
    new LocalIssuer('a', m).selfTest(generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'der' }), 'spiffe://cluster.local/ns/a/sa/b');
  });

  it('loads beside an expired copy of its root re-issued from the same key, serving only the current one', async () => {
    // Istio's self-signed root rotation re-issues the root from its key and keeps the old one in the bundle.
    const dir = join(base, `same-key-${++n}`);
    mkdirSync(dir);
    const now = Date.now();
    const rootKey = await generateKey('ec256');
    const subject = 'O=acme, CN=acme root CA';
    const old = await createRootCert(rootKey, { subject, keyType: 'ec256', notBefore: new Date(now - 10 * DAY_MS), notAfter: new Date(now - DAY_MS) });
    const fresh = await createRootCert(rootKey, { subject, keyType: 'ec256', notBefore: new Date(now - DAY_MS), notAfter: new Date(now + 300 * DAY_MS) });
    const key = await generateKey('ec256');
    const inter = await createIntermediateCert(key.keys.publicKey, { cert: fresh, key: rootKey.keys.privateKey, keyType: 'ec256' }, { subject: 'O=acme, CN=acme intermediate', notBefore: new Date(now - 60_000), notAfter: new Date(now + 30 * DAY_MS) });
    writeCa(dir, inter, key.privateKeyPem, [], pem(old) + pem(fresh));
    const m = loadCaDir(dir);
    expect(m.roots.map((r) => r.serialNumber)).toEqual([new X509Certificate(pem(fresh)).serialNumber]);
    expect(m.expiredRoots.map((r) => r.serialNumber)).toEqual([new X509Certificate(pem(old)).serialNumber]);
    // Only the expired copy left: that is the anchor, and it has expired.
    writeFileSync(join(dir, 'root-cert.pem'), pem(old));
    expect(loadError(dir).message).toMatch(/^CA certificate "O=acme, CN=acme root CA" expired on/);
  });

  for (const oldFirst of [true, false]) {
    it(`caps leaves by the copy of a root re-issued from the same key that lasts, not the first listed (old copy ${oldFirst ? 'first' : 'last'})`, async () => {
      // Both copies current: verifiers build the path through either, so the one ending soonest
      // must neither cap leaves nor, once it expires, stop issuance until a reload.
      const dir = join(base, `same-key-current-${++n}`);
      mkdirSync(dir);
      const now = Date.now();
      const rootKey = await generateKey('ec256');
      const subject = 'O=acme, CN=acme root CA';
      const old = await createRootCert(rootKey, { subject, keyType: 'ec256', notBefore: new Date(now - DAY_MS), notAfter: new Date(now + 2 * DAY_MS) });
      const fresh = await createRootCert(rootKey, { subject, keyType: 'ec256', notBefore: new Date(now - DAY_MS), notAfter: new Date(now + 3650 * DAY_MS) });
      const key = await generateKey('ec256');
      const inter = await createIntermediateCert(key.keys.publicKey, { cert: fresh, key: rootKey.keys.privateKey, keyType: 'ec256' }, { subject: 'O=acme, CN=acme intermediate', notBefore: new Date(now - 60_000), notAfter: new Date(now + 365 * DAY_MS) });
      writeCa(dir, inter, key.privateKeyPem, [], oldFirst ? pem(old) + pem(fresh) : pem(fresh) + pem(old));
      const m = loadCaDir(dir);
      expect(m.roots).toHaveLength(2);
      expect(m.notAfter.getTime()).toBe(inter.notAfter.getTime());
      expect(anchorOf(m).serialNumber).toBe(new X509Certificate(pem(fresh)).serialNumber); // what `ca rotate start` weighs
    });
  }

  it('refuses a CA certificate whose notAfter cannot be read, rather than taking it as never expiring', async () => {
    const dir = copyCa(caA);
    const rootKey = await generateKey('ec256');
    const root = await createRootCert(rootKey, { subject: 'O=acme, CN=acme root CA', keyType: 'ec256', notBefore: new Date(Date.now() - DAY_MS), notAfter: new Date(Date.now() + 300 * DAY_MS) });
    const key = await generateKey('ec256');
    // What an unbounded lifetime gave `ca renew-intermediate`: a time openssl prints as "Bad time value".
    const inter = await createIntermediateCert(key.keys.publicKey, { cert: root, key: rootKey.keys.privateKey, keyType: 'ec256' }, { subject: 'O=acme, CN=acme intermediate', notBefore: new Date(Date.now() - 60_000), notAfter: new Date(Number.NaN) });
    expect(new X509Certificate(pem(inter)).validTo).toBe('Bad time value');
    writeCa(dir, inter, key.privateKeyPem, [], pem(root));
    expect(loadError(dir).message).toBe('CA certificate "O=acme, CN=acme intermediate" has a validity date that cannot be read (notBefore "' + new X509Certificate(pem(inter)).validFrom + '", notAfter "Bad time value"): re-issue it');
  });

  it('refuses a CA that is not valid yet', async () => {
    const dir = join(base, `future-${++n}`);
    await initCaDir({ dir, now: new Date(Date.now() + 3 * DAY_MS) });
    expect(loadError(dir).message).toMatch(/^CA certificate ".*" is not valid before \d{4}-/);
  });

  it('judges validity at the time it is given', () => {
    expect(loadError(caA, new Date(Date.now() + 400 * DAY_MS)).message).toMatch(/expired on/);
    expect(loadError(caA, new Date(Date.now() - DAY_MS)).message).toMatch(/is not valid before/);
  });

  it('refuses a ca-cert.pem that is not a CA certificate', () => {
    const dir = copyCa(caA);
    const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const now = new Date();
    const leaf = new LocalIssuer('a', loadCaDir(caA)).sign({
      spki: publicKey.export({ type: 'spki', format: 'der' }),
      uris: ['spiffe://cluster.local/ns/default/sa/sneaky'],
      notBefore: new Date(now.getTime() - 60_000),
      notAfter: new Date(now.getTime() + DAY_MS),
    });
    writeFileSync(join(dir, 'ca-cert.pem'), leaf.pem);
    writeFileSync(join(dir, 'ca-key.pem'), privateKey.export({ type: 'pkcs8', format: 'pem' }));
    expect(loadError(dir).message).toBe('ca-cert.pem is not a CA certificate (BasicConstraints CA:true is missing)');
  });

  it('refuses a ca-cert.pem whose KeyUsage lacks keyCertSign, naming that as the cause', async () => {
    const dir = join(base, `no-cert-sign-${++n}`);
    mkdirSync(dir);
    const validity = { notBefore: new Date(Date.now() - 60_000), notAfter: new Date(Date.now() + DAY_MS) };
    const rootKey = await generateKey('ec256');
    const root = await createRootCert(rootKey, { subject: 'CN=r', keyType: 'ec256', ...validity });
    const key = await generateKey('ec256');
    const ca = await x509.X509CertificateGenerator.create({
      serialNumber: '0b',
      subject: 'CN=signs nothing',
      issuer: root.subject,
      publicKey: key.keys.publicKey,
      signingKey: rootKey.keys.privateKey,
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } as EcdsaParams,
      extensions: [new x509.BasicConstraintsExtension(true, undefined, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true)],
      ...validity,
    });
    writeCa(dir, ca, key.privateKeyPem, [], pem(root));
    expect(loadError(dir).message).toBe('ca-cert.pem is not a CA certificate (its KeyUsage lacks keyCertSign)');
  });

  it.each([
    ['refuses a ca-cert.pem without any PEM block', 'ca-cert.pem', 'this is not a certificate\n', /^ca-cert\.pem must hold exactly one certificate, found 0$/],
    ['refuses a ca-cert.pem whose PEM block is garbage', 'ca-cert.pem', '-----BEGIN CERTIFICATE-----\nAAAAbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n', /^ca-cert\.pem holds a PEM block that is not a valid X\.509 certificate$/],
    ['refuses a root-cert.pem whose PEM block is garbage', 'root-cert.pem', '-----BEGIN CERTIFICATE-----\nZ2FyYmFnZQ==\n-----END CERTIFICATE-----\n', /^root-cert\.pem holds a PEM block that is not a valid X\.509 certificate$/],
    ['refuses a cert-chain.pem whose PEM block is garbage', 'cert-chain.pem', '-----BEGIN CERTIFICATE-----\nZ2FyYmFnZQ==\n-----END CERTIFICATE-----\n', /^cert-chain\.pem holds a PEM block/],
    ['refuses an empty root-cert.pem', 'root-cert.pem', '', /^root-cert\.pem holds no certificate$/],
    ['refuses a garbage ca-key.pem', 'ca-key.pem', 'not a key\n', /^ca-key\.pem is not a readable PEM private key/],
    ['refuses a ca-key.pem whose PEM block is garbage', 'ca-key.pem', '-----BEGIN PRIVATE KEY-----\nZ2FyYmFnZQ==\n-----END PRIVATE KEY-----\n', /^ca-key\.pem is not a readable PEM private key/],
  ])('%s', (_name, file, content, message) => {
    const dir = copyCa(caA);
    writeFileSync(join(dir, file), content);
    expect(loadError(dir).message).toMatch(message);
  });

  it('refuses a ca-cert.pem holding two certificates', () => {
    const dir = copyCa(caA);
    writeFileSync(join(dir, 'ca-cert.pem'), read(caA, 'cert-chain.pem'));
    expect(loadError(dir).message).toBe('ca-cert.pem must hold exactly one certificate, found 2');
  });

  it('refuses a root-cert.pem holding the intermediate instead of a root', () => {
    const dir = copyCa(caA);
    copyFileSync(join(dir, 'ca-cert.pem'), join(dir, 'root-cert.pem'));
    expect(loadError(dir).message).toMatch(/^root-cert\.pem holds ".*intermediate CA.*", which is not a self-signed CA certificate$/);
  });

  it('refuses a key type other than RSA and ECDSA', async () => {
    const dir = join(base, `ed25519-${++n}`);
    mkdirSync(dir);
    const alg = { name: 'Ed25519' };
    const keys = (await crypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as CryptoKeyPair;
    const now = Date.now();
    const root = await x509.X509CertificateGenerator.createSelfSigned({
      name: 'CN=ed root',
      notBefore: new Date(now - 60_000),
      notAfter: new Date(now + DAY_MS),
      keys,
      signingAlgorithm: alg,
      extensions: [new x509.BasicConstraintsExtension(true, undefined, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true)],
    });
    const pkcs8 = Buffer.from(await crypto.subtle.exportKey('pkcs8', keys.privateKey)).toString('base64');
    writeFileSync(join(dir, 'ca-cert.pem'), pem(root));
    writeFileSync(join(dir, 'root-cert.pem'), pem(root));
    writeFileSync(join(dir, 'ca-key.pem'), `-----BEGIN PRIVATE KEY-----\n${pkcs8}\n-----END PRIVATE KEY-----\n`);
    expect(loadError(dir).message).toBe('CA key type ed25519 is not supported: use RSA or ECDSA (P-256/P-384)');
  });
});

describe('loadCaDir with a three-level chain', () => {
  let dir: string;
  let root: x509.X509Certificate;
  let inter1: x509.X509Certificate;
  let inter2: x509.X509Certificate;
  let k1: GeneratedKey;
  let k2: GeneratedKey;

  beforeAll(async () => {
    dir = join(base, 'three-level');
    mkdirSync(dir);
    const now = Date.now();
    const validity = { notBefore: new Date(now - 60_000), notAfter: new Date(now + 30 * DAY_MS) };
    const rootKey = await generateKey('ec256');
    root = await createRootCert(rootKey, { subject: 'O=test, CN=three-level root', keyType: 'ec256', ...validity });
    k1 = await generateKey('ec256');
    inter1 = await createIntermediateCert(k1.keys.publicKey, { cert: root, key: rootKey.keys.privateKey, keyType: 'ec256' }, { subject: 'O=test, CN=inter1', pathLength: 1, ...validity });
    k2 = await generateKey('ec256');
    inter2 = await createIntermediateCert(k2.keys.publicKey, { cert: inter1, key: k1.keys.privateKey, keyType: 'ec256' }, { subject: 'O=test, CN=inter2', ...validity });
    writeCa(dir, inter2, k2.privateKeyPem, [inter1, root], pem(root));
  });

  it('gives two intermediates, signing certificate first', () => {
    const m = loadCaDir(dir);
    expect(m.intermediatesPem).toHaveLength(2);
    expect(new X509Certificate(m.intermediatesPem[0]!).subject).toBe('O=test\nCN=inter2');
    expect(new X509Certificate(m.intermediatesPem[1]!).subject).toBe('O=test\nCN=inter1');
    expect(m.intermediatesPem).toEqual([pem(inter2), pem(inter1)]);
    expect(m.rootBundlePem).toBe(pem(root));
  });

  it('is accepted by openssl as a chain', () => {
    expect(execFileSync('openssl', ['verify', '-CAfile', 'root-cert.pem', '-untrusted', 'cert-chain.pem', 'ca-cert.pem'], { cwd: dir, encoding: 'utf8' }).trim()).toBe('ca-cert.pem: OK');
  });

  it('signs leaves that verify through both intermediates', () => {
    const issuer = new LocalIssuer('three', loadCaDir(dir));
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    expect(() => issuer.selfTest(publicKey.export({ type: 'spki', format: 'der' }), 'spiffe://cluster.local/ns/a/sa/b')).not.toThrow();
  });

  /**
   * A directory holding root → `mid` (made by the caller) → CN=top, the signing CA; the chain
   * file lists top and mid.
   */
  async function withMiddle(name: string, makeMid: (root: x509.X509Certificate, rootKey: GeneratedKey, midKey: GeneratedKey, validity: { notBefore: Date; notAfter: Date }) => Promise<x509.X509Certificate>): Promise<string> {
    const d = join(base, name);
    mkdirSync(d);
    const now = Date.now();
    const validity = { notBefore: new Date(now - 60_000), notAfter: new Date(now + DAY_MS) };
    const rootKey = await generateKey('ec256');
    const r = await createRootCert(rootKey, { subject: 'CN=r', keyType: 'ec256', ...validity });
    const midKey = await generateKey('ec256');
    const mid = await makeMid(r, rootKey, midKey, validity);
    const topKey = await generateKey('ec256');
    const top = await createIntermediateCert(topKey.keys.publicKey, { cert: mid, key: midKey.keys.privateKey, keyType: 'ec256' }, { subject: 'CN=top', ...validity });
    writeCa(d, top, topKey.privateKeyPem, [mid], pem(r));
    return d;
  }

  it('refuses at the self-test a chain whose middle CA allows no CA below it (pathLenConstraint 0), as Go and openssl do', async () => {
    const d = await withMiddle('path-len-0', (r, rootKey, midKey, validity) =>
      createIntermediateCert(midKey.keys.publicKey, { cert: r, key: rootKey.keys.privateKey, keyType: 'ec256' }, { subject: 'CN=mid', pathLength: 0, ...validity }),
    );
    // Signatures and names are fine, so loading succeeds; the constraint shows on a signed leaf.
    const issuer = new LocalIssuer('tight', loadCaDir(d));
    const spki = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'der' });
    expect(() => issuer.selfTest(spki, 'spiffe://cluster.local/ns/a/sa/b')).toThrow(
      /issuer tight: its chain breaks constraints .* "CN=mid" allows 0 CA certificate\(s\) below it \(pathLenConstraint\) but the chain has 1/,
    );
    expect(() => execFileSync('openssl', ['verify', '-CAfile', 'root-cert.pem', '-untrusted', 'cert-chain.pem', 'ca-cert.pem'], { cwd: d, stdio: 'pipe' })).not.toThrow();
  });

  it('refuses the chain when the middle intermediate is missing', () => {
    const d = copyCa(dir);
    writeFileSync(join(d, 'cert-chain.pem'), pem(inter2) + pem(root));
    expect(loadError(d).message).toMatch(/"O=test, CN=inter2" is not signed by any certificate in root-cert\.pem/);
  });

  it('accepts at the self-test a signing CA that is its own root, even with pathLenConstraint 0 (it is in the path once)', async () => {
    const d = join(base, 'self-signed-signer');
    mkdirSync(d);
    const now = Date.now();
    const key = await generateKey('ec256');
    const root = await createRootCert(key, { subject: 'CN=selfroot', keyType: 'ec256', pathLength: 0, notBefore: new Date(now - 60_000), notAfter: new Date(now + DAY_MS) });
    writeFileSync(join(d, 'ca-cert.pem'), pem(root));
    writeFileSync(join(d, 'ca-key.pem'), key.privateKeyPem);
    writeFileSync(join(d, 'root-cert.pem'), pem(root));
    const issuer = new LocalIssuer('self', loadCaDir(d));
    const spki = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'der' });
    expect(() => issuer.selfTest(spki, 'spiffe://cluster.local/ns/a/sa/b')).not.toThrow();
    // It is not repeated as an intermediate: the response is [leaf, root bundle], as istiod's.
    const m = loadCaDir(d);
    expect(m.intermediatesPem).toEqual([]);
    expect(m.intermediates.map((c) => c.fingerprint256)).toEqual([new X509Certificate(pem(root)).fingerprint256]);
    expect(m.rootBundlePem).toBe(pem(root));
  });

  it.each([
    ['BasicConstraints CA:false', [new x509.BasicConstraintsExtension(false, undefined, true)], 'BasicConstraints CA:true is missing'],
    // OpenSSL (and Go, verifying the leaves) refuse a CA whose KeyUsage lacks keyCertSign: named as the cause, not BasicConstraints.
    ['a KeyUsage without keyCertSign', [new x509.BasicConstraintsExtension(true, undefined, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true)], 'its KeyUsage lacks keyCertSign'],
  ])('refuses a chain whose middle certificate is not a CA (%s), saying why', async (_label, extensions, why) => {
    const d = await withMiddle(`not-ca-middle-${++n}`, (r, rootKey, midKey, validity) =>
      x509.X509CertificateGenerator.create({
        serialNumber: '0a',
        subject: 'CN=not a ca',
        issuer: r.subject,
        publicKey: midKey.keys.publicKey,
        signingKey: rootKey.keys.privateKey,
        signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } as EcdsaParams,
        extensions,
        ...validity,
      }),
    );
    expect(loadError(d).message).toBe(`cert-chain.pem holds "CN=not a ca", which is not a CA certificate (${why})`);
  });
});

describe('loadCaDir refuses chains the mesh would refuse though OpenSSL accepts them', () => {
  const ossl = (cwd: string, ...args: string[]): void => void execFileSync('openssl', args, { cwd, stdio: 'pipe' });
  /** A CA directory made with the openssl CLI: a root (key `rootKey`, self-signed with `rootMd`) and, unless `inter` is null, an intermediate signing CA. */
  function opensslCa(name: string, o: { rootKey: string[]; rootMd?: string; inter?: { key: string[]; md: string; sigopt?: string[] } | null }): string {
    const d = join(base, name);
    mkdirSync(d);
    const ext = join(d, 'ca.ext');
    writeFileSync(ext, 'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\n');
    ossl(d, 'genpkey', ...o.rootKey, '-out', 'root.key');
    ossl(d, 'req', '-x509', '-new', '-key', 'root.key', `-${o.rootMd ?? 'sha256'}`, '-subj', '/O=test/CN=root', '-days', '30', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign', '-out', 'root-cert.pem');
    if (o.inter === null) {
      copyFileSync(join(d, 'root-cert.pem'), join(d, 'ca-cert.pem'));
      copyFileSync(join(d, 'root.key'), join(d, 'ca-key.pem'));
      return d;
    }
    const inter = o.inter ?? { key: ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256'], md: 'sha256' };
    ossl(d, 'genpkey', ...inter.key, '-out', 'ca-key.pem');
    ossl(d, 'req', '-new', '-key', 'ca-key.pem', '-subj', '/O=test/CN=inter', '-out', 'inter.csr');
    ossl(d, 'x509', '-req', '-in', 'inter.csr', '-CA', 'root-cert.pem', '-CAkey', 'root.key', '-CAcreateserial', `-${inter.md}`, ...(inter.sigopt ?? []).flatMap((o) => ['-sigopt', o]), '-days', '20', '-extfile', ext, '-out', 'ca-cert.pem');
    copyFileSync(join(d, 'ca-cert.pem'), join(d, 'cert-chain.pem'));
    return d;
  }
  const rsa = (bits: number): string[] => ['-algorithm', 'RSA', '-pkeyopt', `rsa_keygen_bits:${bits}`];
  const ec = (curve: string): string[] => ['-algorithm', 'EC', '-pkeyopt', `ec_paramgen_curve:${curve}`];

  it('accepts the control: an RSA-2048 root and a P-256 intermediate, SHA-256 throughout', () => {
    expect(() => loadCaDir(opensslCa('alg-control', { rootKey: rsa(2048) }))).not.toThrow();
  });

  it('refuses an intermediate signed with SHA-1 (Go refuses SHA-1 signatures, webpki has none)', () => {
    const d = opensslCa('alg-sha1-inter', { rootKey: rsa(2048), inter: { key: ec('P-256'), md: 'sha1' } });
    expect(() => execFileSync('openssl', ['verify', '-CAfile', 'root-cert.pem', 'ca-cert.pem'], { cwd: d, stdio: 'pipe' })).not.toThrow();
    expect(loadError(d).message).toBe(
      'CA certificate "O=test, CN=inter" has a signature made with sha1WithRSAEncryption (accepted: RSA or RSA-PSS with SHA-256/384/512, ECDSA with SHA-256/384, Ed25519), which istio-agent (Go) or ztunnel (rustls) refuses: every certificate issued under it would be refused. Re-issue it',
    );
  });

  it('refuses an intermediate signed with ECDSA and SHA-512 (webpki has no such algorithm)', () => {
    const d = opensslCa('alg-ecdsa-sha512', { rootKey: ec('P-256'), inter: { key: ec('P-256'), md: 'sha512' } });
    expect(loadError(d).message).toMatch(/^CA certificate "O=test, CN=inter" has a signature made with ecdsa-with-SHA512 /);
  });

  it('refuses a self-signed signing CA with an RSA-1024 key', () => {
    const d = opensslCa('alg-rsa1024', { rootKey: rsa(1024), inter: null });
    expect(loadError(d).message).toMatch(/^CA certificate "O=test, CN=root" has an RSA key of 1024 bits \(ztunnel's rustls accepts 2048 to 8192\), which/);
  });

  it('refuses a root whose RSA-1024 key signs the intermediate', () => {
    const d = opensslCa('alg-root1024', { rootKey: rsa(1024) });
    expect(loadError(d).message).toMatch(/^CA certificate "O=test, CN=root" has an RSA key of 1024 bits/);
  });

  it('refuses an intermediate with a P-521 key', () => {
    const d = opensslCa('alg-p521', { rootKey: ec('P-384'), inter: { key: ec('P-521'), md: 'sha384' } });
    expect(loadError(d).message).toMatch(/^CA certificate "O=test, CN=inter" has an ECDSA key on secp521r1 \(accepted: P-256, P-384\)/);
  });

  it('accepts a P-384 root and intermediate (ECDSA with SHA-384)', () => {
    const d = opensslCa('alg-p384-ok', { rootKey: ec('P-384'), inter: { key: ec('P-384'), md: 'sha384' } });
    expect(() => loadCaDir(d)).not.toThrow();
  });

  it('accepts an intermediate signed with RSASSA-PSS as Go and webpki take it (SHA-256, MGF1-SHA-256, 32-byte salt)', () => {
    const d = opensslCa('alg-pss-ok', { rootKey: rsa(2048), inter: { key: ec('P-256'), md: 'sha256', sigopt: ['rsa_padding_mode:pss', 'rsa_pss_saltlen:digest', 'rsa_mgf1_md:sha256'] } });
    expect(() => loadCaDir(d)).not.toThrow();
  });

  it.each([
    ['a 20-byte salt', ['rsa_padding_mode:pss', 'rsa_pss_saltlen:20', 'rsa_mgf1_md:sha256'], 'sha256', /RSASSA-PSS signature with a 20-byte salt \(accepted: the hash length, 32 for SHA-256\)/],
    ['SHA-1', ['rsa_padding_mode:pss', 'rsa_pss_saltlen:digest', 'rsa_mgf1_md:sha1'], 'sha1', /RSASSA-PSS signature with the hash 1\.3\.14\.3\.2\.26/],
    ['MGF1 with another hash', ['rsa_padding_mode:pss', 'rsa_pss_saltlen:digest', 'rsa_mgf1_md:sha1'], 'sha256', /mask generation is not MGF1 with SHA-256/],
  ])('refuses an intermediate signed with RSASSA-PSS with %s', (_what, sigopt, md, message) => {
    const d = opensslCa(`alg-pss-${md}-${sigopt[1]!.replace(/\W/g, '')}-${sigopt[2]!.replace(/\W/g, '')}`, { rootKey: rsa(2048), inter: { key: ec('P-256'), md, sigopt } });
    expect(loadError(d).message).toMatch(message);
  });

  it('refuses a root whose key is an RSA-PSS-only key (id-RSASSA-PSS), which Go cannot verify with', () => {
    const d = opensslCa('alg-rsapss-key', {
      rootKey: ['-algorithm', 'RSA-PSS', '-pkeyopt', 'rsa_keygen_bits:2048'],
      // The intermediate's own signature as Go takes it, so that the root's key is what is refused.
      inter: { key: ec('P-256'), md: 'sha256', sigopt: ['rsa_padding_mode:pss', 'rsa_pss_saltlen:digest', 'rsa_mgf1_md:sha256'] },
    });
    expect(loadError(d).message).toMatch(/has an RSA key restricted to PSS/);
  });

  it("does not judge a root's own signature (no verifier checks a trust anchor's): a SHA-1 self-signed root loads", () => {
    expect(() => loadCaDir(opensslCa('alg-sha1-root', { rootKey: rsa(2048), rootMd: 'sha1' }))).not.toThrow();
  });
});
