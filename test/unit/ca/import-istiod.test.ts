import { execFileSync } from 'node:child_process';
import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { beginCaCreation } from '../../../src/ca/files.js';
import { ageCreationMarker } from '../../support/ca-creation.js';
import { createRootCert, generateKey } from '../../../src/ca/generate.js';
import { importIstiod } from '../../../src/ca/import-istiod.js';
import { initCaDir } from '../../../src/ca/init.js';
import { loadCaDir } from '../../../src/ca/material.js';
import { rotateFinish, rotateStart, rotateSwitch } from '../../../src/ca/rotate.js';
import { ConfigError } from '../../../src/errors/ca-error.js';
import { LocalIssuer } from '../../../src/issuer/local.js';
import { parsePemBundle } from '../../../src/x509/pem.js';
import { verifyResponseChain } from '../../../src/x509/verify-chain.js';

const DAY_MS = 86_400_000;
const NOW = new Date(Math.floor(Date.now() / 1000) * 1000);

let base: string;
let n = 0;
/** A `cacerts`-style source: made by initCaDir, root key removed (istiod never has it). */
let cacerts: string;
/** istiod's self-signed CA as `istio-ca-secret` holds it: RSA 2048, PKCS#1 key, O=cluster.local. */
let selfSigned: string;

const fresh = (): string => join(base, `d-${++n}`);
const read = (dir: string, file: string): string => readFileSync(join(dir, file), 'utf8');
const mode = (path: string): number => statSync(path).mode & 0o777;
const fps = (pem: string): string[] => parsePemBundle(pem).map((c) => c.fingerprint256);

function source(files: Record<string, string>): string {
  const dir = fresh();
  mkdirSync(dir);
  for (const [name, content] of Object.entries(files)) writeFileSync(join(dir, name), content);
  return dir;
}
function copyOf(from: string, only?: string[]): string {
  const dir = fresh();
  mkdirSync(dir);
  for (const f of readdirSync(from)) if (!only || only.includes(f)) copyFileSync(join(from, f), join(dir, f));
  return dir;
}
function importError(o: Parameters<typeof importIstiod>[0]): ConfigError {
  try {
    importIstiod(o);
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return e as ConfigError;
  }
  throw new Error('expected a ConfigError');
}
function issue(dir: string, at = NOW): { pem: string; chainPem: readonly string[] } {
  const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return new LocalIssuer('t', loadCaDir(dir, at)).sign({
    spki: publicKey.export({ type: 'spki', format: 'der' }),
    uris: ['spiffe://cluster.local/ns/default/sa/a'],
    notBefore: new Date(at.getTime() - 120_000),
    notAfter: new Date(at.getTime() + DAY_MS),
  });
}

beforeAll(async () => {
  base = mkdtempSync(join(tmpdir(), 'meshcert-import-istiod-'));
  cacerts = fresh();
  await initCaDir({ dir: cacerts, now: NOW });
  rmSync(join(cacerts, 'root-key.pem'));

  const key = await generateKey('rsa2048');
  const root = await createRootCert(key, { subject: 'O=cluster.local', notBefore: new Date(NOW.getTime() - 60_000), notAfter: new Date(NOW.getTime() + 3650 * DAY_MS), keyType: 'rsa2048' });
  selfSigned = source({
    'ca-cert.pem': `${root.toString('pem')}\n`,
    'ca-key.pem': key.privateKey.export({ type: 'pkcs1', format: 'pem' }).toString(),
  });
});
afterAll(() => {
  rmSync(base, { recursive: true, force: true });
});

describe('import-istiod from a cacerts (plug-in CA) export', () => {
  let dir: string;
  let r: ReturnType<typeof importIstiod>;

  beforeAll(() => {
    dir = fresh();
    r = importIstiod({ from: cacerts, dir, now: NOW });
  });

  it('copies the four files, keys 0600, directory 0700', () => {
    expect(readdirSync(dir).sort()).toEqual(['ca-cert.pem', 'ca-key.pem', 'cert-chain.pem', 'root-cert.pem']);
    for (const f of readdirSync(dir)) expect(read(dir, f)).toBe(read(cacerts, f));
    expect(mode(join(dir, 'ca-key.pem'))).toBe(0o600);
    expect(mode(dir)).toBe(0o700);
    expect(r.kind).toBe('cacerts');
  });

  it('is a CA meshcert loads, signing under the same root, so existing workloads keep trusting it', () => {
    expect(r.material.signingCert.fingerprint256).toBe(new X509Certificate(read(cacerts, 'ca-cert.pem')).fingerprint256);
    const leaf = issue(dir);
    expect(() => verifyResponseChain([leaf.pem, ...leaf.chainPem], read(cacerts, 'root-cert.pem'), NOW)).not.toThrow();
  });

  it('refuses to overwrite the CA it made, leaving it untouched', () => {
    const before = readdirSync(dir).map((f) => read(dir, f));
    expect(importError({ from: cacerts, dir, now: NOW }).message).toBe(`CA directory ${dir} already holds a CA; refusing to overwrite it`);
    expect(readdirSync(dir).map((f) => read(dir, f))).toEqual(before);
  });
});

describe('import-istiod from istiod self-signed istio-ca-secret', () => {
  it('imports again into a directory an interrupted import left half written', () => {
    const dir = fresh();
    mkdirSync(dir);
    beginCaCreation(dir);
    writeFileSync(join(dir, 'ca-key.pem'), 'partial\n', { mode: 0o600 });
    writeFileSync(join(dir, 'root-cert.pem'), 'partial\n');
    ageCreationMarker(dir);
    importIstiod({ from: selfSigned, dir, now: NOW });
    expect(read(dir, 'root-cert.pem')).toBe(read(selfSigned, 'ca-cert.pem'));
    expect(readdirSync(dir).sort()).toEqual(['ca-cert.pem', 'ca-key.pem', 'cert-chain.pem', 'root-cert.pem']);
  });

  it('uses ca-cert.pem as the root and as the signing certificate', () => {
    const dir = fresh();
    const r = importIstiod({ from: selfSigned, dir, now: NOW });
    expect(r.kind).toBe('istiod-self-signed');
    expect(read(dir, 'root-cert.pem')).toBe(read(selfSigned, 'ca-cert.pem'));
    expect(read(dir, 'cert-chain.pem')).toBe(read(selfSigned, 'ca-cert.pem'));
    expect(read(dir, 'ca-key.pem')).toMatch(/^-----BEGIN RSA PRIVATE KEY-----/);
    expect(mode(join(dir, 'ca-key.pem'))).toBe(0o600);
    const m = loadCaDir(dir, NOW);
    expect(m.signingCert.fingerprint256).toBe(m.roots[0]!.fingerprint256);
    expect(r.notes.join('\n')).toMatch(/root-cert\.pem = ca-cert\.pem/);
  });

  it('issues leaves that verify against the istiod root with Node and openssl', () => {
    const dir = fresh();
    importIstiod({ from: selfSigned, dir, now: NOW });
    const leaf = issue(dir);
    expect(leaf.chainPem).toEqual([read(dir, 'root-cert.pem')]); // the signing CA is the root: sent once, in the bundle, as istiod does
    expect(verifyResponseChain([leaf.pem, ...leaf.chainPem], read(selfSigned, 'ca-cert.pem'), NOW).root.fingerprint256).toBe(fps(read(selfSigned, 'ca-cert.pem'))[0]);
    writeFileSync(join(dir, 'leaf.pem'), leaf.pem);
    expect(execFileSync('openssl', ['verify', '-CAfile', 'root-cert.pem', 'leaf.pem'], { cwd: dir, encoding: 'utf8' }).trim()).toBe('leaf.pem: OK');
  });

  it('treats the empty cert-chain.pem and root-cert.pem keys of istio-ca-secret as absent', () => {
    const src = copyOf(selfSigned);
    writeFileSync(join(src, 'cert-chain.pem'), '');
    writeFileSync(join(src, 'root-cert.pem'), '\n');
    const dir = fresh();
    importIstiod({ from: src, dir, now: NOW });
    expect(read(dir, 'root-cert.pem')).toBe(read(selfSigned, 'ca-cert.pem'));
  });

  it('keeps other roots of root-cert.pem (istiod after its own root rotation) and adds ca-cert.pem', () => {
    const src = copyOf(selfSigned);
    writeFileSync(join(src, 'root-cert.pem'), read(cacerts, 'root-cert.pem'));
    const dir = fresh();
    const r = importIstiod({ from: src, dir, now: NOW });
    expect(fps(read(dir, 'root-cert.pem'))).toEqual([...fps(read(cacerts, 'root-cert.pem')), ...fps(read(selfSigned, 'ca-cert.pem'))]);
    expect(r.notes.join('\n')).toMatch(/added ca-cert\.pem .* to root-cert\.pem/);
  });

  it('can then be rotated to a meshcert root and intermediate', async () => {
    const dir = fresh();
    importIstiod({ from: selfSigned, dir, now: NOW });
    await rotateStart({ dir, now: NOW });
    rotateSwitch({ dir, now: NOW, force: true });
    rotateFinish({ dir, now: NOW, force: true });
    const m = loadCaDir(dir, NOW);
    expect(m.roots).toHaveLength(1);
    expect(m.roots[0]!.fingerprint256).not.toBe(fps(read(selfSigned, 'ca-cert.pem'))[0]);
    expect(m.signingCert.fingerprint256).not.toBe(m.roots[0]!.fingerprint256);
  });
});

describe('import-istiod other inputs', () => {
  it('writes cert-chain.pem from ca-cert.pem and its root when it was not exported', () => {
    const src = copyOf(cacerts, ['ca-cert.pem', 'ca-key.pem', 'root-cert.pem']);
    const dir = fresh();
    const r = importIstiod({ from: src, dir, now: NOW });
    expect(read(dir, 'cert-chain.pem')).toBe(read(cacerts, 'ca-cert.pem') + read(cacerts, 'root-cert.pem'));
    expect(r.notes.join('\n')).toMatch(/cert-chain\.pem was not exported/);
  });

  it('copies a matching root-key.pem (0600) so the intermediate can be renewed', async () => {
    const withKey = fresh();
    await initCaDir({ dir: withKey, now: NOW });
    const dir = fresh();
    const r = importIstiod({ from: withKey, dir, now: NOW });
    expect(r.files).toContain('root-key.pem');
    expect(read(dir, 'root-key.pem')).toBe(read(withKey, 'root-key.pem'));
    expect(mode(join(dir, 'root-key.pem'))).toBe(0o600);
  });

  it('refuses a root-key.pem of another root', async () => {
    const other = fresh();
    await initCaDir({ dir: other, now: NOW });
    const src = copyOf(cacerts);
    copyFileSync(join(other, 'root-key.pem'), join(src, 'root-key.pem'));
    expect(importError({ from: src, dir: fresh(), now: NOW }).message).toMatch(/root-key\.pem matches none of the roots/);
  });

  it('refuses a key that does not match, without creating the directory', () => {
    const src = copyOf(cacerts);
    copyFileSync(join(selfSigned, 'ca-key.pem'), join(src, 'ca-key.pem'));
    const dir = fresh();
    expect(importError({ from: src, dir, now: NOW }).message).toMatch(/^cannot import from .*: the resulting CA directory would not load: ca-key\.pem does not match/);
    expect(existsSync(dir)).toBe(false);
    // Nor its parents, which mkdir -p would have made.
    const deep = join(fresh(), 'a', 'b', 'ca');
    expect(importError({ from: src, dir: deep, now: NOW }).message).toMatch(/ca-key\.pem does not match/);
    expect(existsSync(join(deep, '..', '..'))).toBe(false);
  });

  it('refuses a CA that has expired', () => {
    const dir = fresh();
    expect(importError({ from: cacerts, dir, now: new Date(NOW.getTime() + 400 * DAY_MS) }).message).toMatch(/expired on/);
  });

  it('says how to export when ca-cert.pem is missing', () => {
    const src = copyOf(cacerts, ['ca-key.pem']);
    expect(importError({ from: src, dir: fresh(), now: NOW }).message).toMatch(/has no ca-cert\.pem .*kubectl -n istio-system get secret istio-ca-secret -o jsonpath='\{\.data\.ca-cert\\\.pem\}' \| base64 -d > ca-cert\.pem/s);
  });

  it('recognises files still base64-encoded as in the Secret', () => {
    const src = copyOf(cacerts);
    writeFileSync(join(src, 'ca-cert.pem'), Buffer.from(read(cacerts, 'ca-cert.pem')).toString('base64'));
    expect(importError({ from: src, dir: fresh(), now: NOW }).message).toMatch(/ca-cert\.pem is still base64-encoded .*base64 -d/);
  });

  it('needs root-cert.pem when ca-cert.pem is not self-signed', () => {
    const src = copyOf(cacerts, ['ca-cert.pem', 'ca-key.pem', 'cert-chain.pem']);
    expect(importError({ from: src, dir: fresh(), now: NOW }).message).toMatch(/no root-cert\.pem and ca-cert\.pem is not self-signed/);
  });

  it('refuses a certificate file that holds a private key (certificate files are written readable by all), creating nothing', () => {
    const src = copyOf(cacerts);
    writeFileSync(join(src, 'cert-chain.pem'), read(cacerts, 'cert-chain.pem') + read(cacerts, 'ca-key.pem'));
    const dir = fresh();
    expect(importError({ from: src, dir, now: NOW }).message).toBe(
      `${join(src, 'cert-chain.pem')} holds a private key (PRIVATE KEY): it may hold certificates only; export the key into its own file and remove it from this one`,
    );
    expect(existsSync(dir)).toBe(false);
    const other = copyOf(cacerts);
    writeFileSync(join(other, 'root-cert.pem'), read(cacerts, 'root-cert.pem') + '-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n');
    expect(importError({ from: other, dir: fresh(), now: NOW }).message).toMatch(/root-cert\.pem holds a PEM block other than a certificate \(X509 CRL\): it may hold certificates only; remove that block$/);
  });

  it('writes cert-chain.pem from its certificates: text around them (openssl x509 -text output) is not carried over', () => {
    const src = copyOf(cacerts);
    const chain = read(cacerts, 'cert-chain.pem');
    writeFileSync(join(src, 'cert-chain.pem'), `subject=O=meshcert, CN=intermediate\nissuer=O=meshcert, CN=root\n${chain}`);
    const dir = fresh();
    importIstiod({ from: src, dir, now: NOW });
    expect(read(dir, 'cert-chain.pem')).toBe(chain);
  });

  it('refuses a source that is not a directory', () => {
    expect(importError({ from: join(base, 'nope'), dir: fresh(), now: NOW }).message).toMatch(/is not a directory/);
  });

  it('refuses a directory holding a CA in the middle of a rotation', async () => {
    const dir = fresh();
    await initCaDir({ dir, now: NOW });
    await rotateStart({ dir, now: NOW });
    expect(importError({ from: cacerts, dir, now: NOW }).message).toMatch(/already holds a CA/);
  });
});
