import { execFileSync } from 'node:child_process';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { beginCaCreation, CA_FILES, recoverInterruptedCreation } from '../../../src/ca/files.js';
import { ageCreationMarker } from '../../support/ca-creation.js';
import { caSubjectName } from '../../../src/ca/generate.js';
import { initCaDir } from '../../../src/ca/init.js';
import { isCaDirEmpty, loadCaDir, type CaMaterial } from '../../../src/ca/material.js';
import { ConfigError } from '../../../src/errors/ca-error.js';

const DAY_MS = 86_400_000;
const YEAR_MS = 365 * DAY_MS;
/** Whole seconds, as X.509 stores them. */
const NOW = new Date(Math.floor(Date.now() / 1000) * 1000);

let base: string;
let n = 0;
const freshDir = (): string => join(base, `ca-${++n}`);
const cert = (dir: string, file: string): X509Certificate => new X509Certificate(readFileSync(join(dir, file)));
const openssl = (args: string[], cwd: string): string => execFileSync('openssl', args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

beforeAll(() => {
  base = mkdtempSync(join(tmpdir(), 'meshcert-ca-init-'));
});
afterAll(() => {
  rmSync(base, { recursive: true, force: true });
});

describe('initCaDir with defaults', () => {
  let dir: string;
  let material: CaMaterial;

  beforeAll(async () => {
    dir = freshDir();
    material = await initCaDir({ dir, now: NOW });
  });

  it('creates exactly the five files of the layout', () => {
    expect(readdirSync(dir).sort()).toEqual(['ca-cert.pem', 'ca-key.pem', 'cert-chain.pem', 'root-cert.pem', 'root-key.pem']);
    expect(Object.values(CA_FILES).sort()).toEqual(readdirSync(dir).sort());
  });

  it.each([
    ['gives the intermediate key mode 0600', 'ca-key.pem', 0o600],
    ['gives the root key mode 0600', 'root-key.pem', 0o600],
    ['leaves the signing certificate readable', 'ca-cert.pem', 0o644],
    ['leaves the chain readable', 'cert-chain.pem', 0o644],
    ['leaves the root certificate readable', 'root-cert.pem', 0o644],
  ])('%s', (_name, file, mode) => {
    expect(statSync(join(dir, file)).mode & 0o777).toBe(mode);
  });

  it('creates the directory private to its owner', () => {
    expect(statSync(dir).mode & 0o777).toBe(0o700);
  });

  it('makes a self-signed root valid for ten years', () => {
    const root = cert(dir, 'root-cert.pem');
    expect(root.ca).toBe(true);
    expect(root.subject).toBe(root.issuer);
    expect(root.verify(root.publicKey)).toBe(true);
    expect(Date.parse(root.validTo)).toBe(NOW.getTime() + 10 * YEAR_MS);
    expect(Date.parse(root.validFrom)).toBe(NOW.getTime() - 5 * 60_000);
  });

  it('makes an intermediate signed by the root, valid for one year', () => {
    const root = cert(dir, 'root-cert.pem');
    const inter = cert(dir, 'ca-cert.pem');
    expect(inter.ca).toBe(true);
    expect(inter.checkIssued(root)).toBe(true);
    expect(inter.verify(root.publicKey)).toBe(true);
    expect(Date.parse(inter.validTo)).toBe(NOW.getTime() + YEAR_MS);
    expect(Date.parse(inter.validFrom)).toBe(NOW.getTime() - 5 * 60_000);
  });

  it('names the certificates after the organization and the date', () => {
    const stamp = NOW.toISOString().slice(0, 10);
    expect(cert(dir, 'root-cert.pem').subject).toBe(`O=meshcert\nCN=meshcert root CA ${stamp}`);
    expect(cert(dir, 'ca-cert.pem').subject).toBe(`O=meshcert\nCN=meshcert intermediate CA ${stamp}`);
  });

  it('uses EC P-256 keys by default', () => {
    for (const file of ['root-cert.pem', 'ca-cert.pem']) {
      const key = cert(dir, file).publicKey;
      expect(key.asymmetricKeyType).toBe('ec');
      expect(key.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    }
    expect(readFileSync(join(dir, 'ca-key.pem'), 'utf8')).toMatch(/^-----BEGIN PRIVATE KEY-----\n/);
  });

  it('writes the chain as intermediate then root, and the root file as the root alone', () => {
    const inter = readFileSync(join(dir, 'ca-cert.pem'), 'utf8');
    const root = readFileSync(join(dir, 'root-cert.pem'), 'utf8');
    expect(readFileSync(join(dir, 'cert-chain.pem'), 'utf8')).toBe(inter + root);
    expect(inter.match(/BEGIN CERTIFICATE/g)).toHaveLength(1);
    expect(root.match(/BEGIN CERTIFICATE/g)).toHaveLength(1);
  });

  it('pairs each key with its certificate', () => {
    const inter = cert(dir, 'ca-cert.pem');
    const root = cert(dir, 'root-cert.pem');
    expect(inter.checkPrivateKey(createPrivateKey(readFileSync(join(dir, 'ca-key.pem'))))).toBe(true);
    expect(root.checkPrivateKey(createPrivateKey(readFileSync(join(dir, 'root-key.pem'))))).toBe(true);
  });

  it('returns the same material loadCaDir reads back', () => {
    const loaded = loadCaDir(dir);
    expect(material.signingCert.fingerprint256).toBe(loaded.signingCert.fingerprint256);
    expect(material.roots.map((r) => r.fingerprint256)).toEqual(loaded.roots.map((r) => r.fingerprint256));
    expect(material.intermediatesPem).toEqual(loaded.intermediatesPem);
    expect(material.rootBundlePem).toBe(loaded.rootBundlePem);
    expect(material.notAfter.getTime()).toBe(NOW.getTime() + YEAR_MS);
  });

  it('passes openssl verify -CAfile root-cert.pem ca-cert.pem', () => {
    expect(openssl(['verify', '-CAfile', 'root-cert.pem', 'ca-cert.pem'], dir).trim()).toBe('ca-cert.pem: OK');
  });

  it('passes openssl verify of the chain file against the root', () => {
    expect(openssl(['verify', '-CAfile', 'root-cert.pem', '-untrusted', 'cert-chain.pem', 'ca-cert.pem'], dir).trim()).toBe('ca-cert.pem: OK');
  });

  it('writes keys openssl reads as the certificates\' keys', () => {
    expect(openssl(['pkey', '-in', 'ca-key.pem', '-pubout'], dir)).toBe(openssl(['x509', '-in', 'ca-cert.pem', '-noout', '-pubkey'], dir));
    expect(openssl(['pkey', '-in', 'root-key.pem', '-pubout'], dir)).toBe(openssl(['x509', '-in', 'root-cert.pem', '-noout', '-pubkey'], dir));
  });

  it('gives the intermediate a zero path length and the right key usages (openssl view)', () => {
    const text = openssl(['x509', '-in', 'ca-cert.pem', '-noout', '-text'], dir);
    expect(text).toMatch(/Basic Constraints: critical\s+CA:TRUE, pathlen:0/);
    // SPIFFE X509-SVID Appendix A: digitalSignature only on leaves.
    expect(text).toMatch(/Key Usage: critical\s+Certificate Sign, CRL Sign\n/);
    expect(text).toContain('Authority Key Identifier');
    expect(text).toContain('Signature Algorithm: ecdsa-with-SHA256');
  });

  it('leaves no temporary files behind', () => {
    expect(readdirSync(dir).filter((f) => f.endsWith('.tmp'))).toEqual([]);
  });
});

describe('initCaDir options', () => {
  it('makes RSA 2048 keys when asked', async () => {
    const dir = freshDir();
    await initCaDir({ dir, keyType: 'rsa2048', now: NOW });
    for (const file of ['root-cert.pem', 'ca-cert.pem']) {
      const key = cert(dir, file).publicKey;
      expect(key.asymmetricKeyType).toBe('rsa');
      expect(key.asymmetricKeyDetails?.modulusLength).toBe(2048);
    }
    expect(openssl(['x509', '-in', 'ca-cert.pem', '-noout', '-text'], dir)).toContain('Signature Algorithm: sha256WithRSAEncryption');
    expect(openssl(['verify', '-CAfile', 'root-cert.pem', 'ca-cert.pem'], dir).trim()).toBe('ca-cert.pem: OK');
    expect(() => loadCaDir(dir)).not.toThrow();
  });

  it('makes EC P-384 keys signed with SHA-384 when asked', async () => {
    const dir = freshDir();
    await initCaDir({ dir, keyType: 'ec384', now: NOW });
    expect(cert(dir, 'ca-cert.pem').publicKey.asymmetricKeyDetails?.namedCurve).toBe('secp384r1');
    expect(openssl(['x509', '-in', 'ca-cert.pem', '-noout', '-text'], dir)).toContain('Signature Algorithm: ecdsa-with-SHA384');
    expect(openssl(['verify', '-CAfile', 'root-cert.pem', 'ca-cert.pem'], dir).trim()).toBe('ca-cert.pem: OK');
  });

  it('uses the organization and lifetimes it is given', async () => {
    const dir = freshDir();
    const m = await initCaDir({ dir, organization: 'acme', rootLifetimeMs: 2 * YEAR_MS, intermediateLifetimeMs: 30 * DAY_MS, now: NOW });
    expect(cert(dir, 'root-cert.pem').subject).toMatch(/^O=acme\nCN=acme root CA /);
    expect(Date.parse(cert(dir, 'root-cert.pem').validTo)).toBe(NOW.getTime() + 2 * YEAR_MS);
    expect(Date.parse(cert(dir, 'ca-cert.pem').validTo)).toBe(NOW.getTime() + 30 * DAY_MS);
    expect(m.notAfter.getTime()).toBe(NOW.getTime() + 30 * DAY_MS);
  });

  it.each([
    ['a comma', 'Acme, Inc.'],
    ['what would inject an attribute', 'Acme, CN=evil'],
    ['every RFC 4514 special character and a leading #', '#a+b;c"d\\e<f>g=h'],
  ])('keeps an organization with %s whole, in O and CN, with no attribute added', async (_what, org) => {
    const dir = freshDir();
    await initCaDir({ dir, organization: org, now: NOW });
    for (const [file, label] of [['root-cert.pem', 'root CA'], ['ca-cert.pem', 'intermediate CA']] as const) {
      // openssl prints one attribute per line, unescaped.
      const lines = openssl(['x509', '-in', file, '-noout', '-subject', '-nameopt', 'sep_multiline,utf8,-esc_msb'], dir).trim().split('\n').slice(1).map((l) => l.trim());
      expect(lines).toEqual([`O=${org}`, expect.stringMatching(new RegExp(`^CN=${org.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} ${label} \\d{4}-\\d{2}-\\d{2}$`))]);
    }
    expect(() => loadCaDir(dir)).not.toThrow();
  });

  it("keeps O and CN within X.520's 64 characters: a long organization is cut short in CN, a longer one refused", async () => {
    const dir = freshDir();
    const org = `${'Ä'.repeat(40)} Holdings`;
    await initCaDir({ dir, organization: org, now: NOW });
    for (const [file, label] of [['root-cert.pem', 'root CA 2026'], ['ca-cert.pem', 'intermediate CA 2026']] as const) {
      const lines = openssl(['x509', '-in', file, '-noout', '-subject', '-nameopt', 'sep_multiline,utf8,-esc_msb'], dir).trim().split('\n').slice(1).map((l) => l.trim());
      expect(lines[0]).toBe(`O=${org}`);
      const cn = lines[1]!.slice('CN='.length);
      expect([...cn].length).toBeLessThanOrEqual(64);
      expect(cn).toMatch(new RegExp(`^Ä+( Hold)? ${label}-\\d{2}-\\d{2}$`));
    }
    const tooLong = freshDir();
    await expect(initCaDir({ dir: tooLong, organization: 'x'.repeat(65), now: NOW })).rejects.toThrow('the organization name must be at most 64 characters');
    // One read from an existing CA (a renewal keeps its organization) is cut short, not refused.
    expect(caSubjectName('y'.repeat(70), 'intermediate CA 2026-11-30T00:00:00Z')).toBe(`O=${'y'.repeat(64)}, CN=${'y'.repeat(27)} intermediate CA 2026-11-30T00:00:00Z`);
  });

  it('refuses an organization that is empty or holds a control character', async () => {
    for (const org of ['', ' ', 'a\nCN=x']) {
      const dir = freshDir();
      await expect(initCaDir({ dir, organization: org, now: NOW })).rejects.toThrow(ConfigError);
      expect(readdirSync(base)).not.toContain(dir.split('/').pop());
    }
  });

  it('uses the current time when none is given', async () => {
    const dir = freshDir();
    const before = Date.now();
    await initCaDir({ dir });
    const validTo = Date.parse(cert(dir, 'ca-cert.pem').validTo);
    expect(validTo).toBeGreaterThanOrEqual(Math.floor(before / 1000) * 1000 + YEAR_MS);
    expect(validTo).toBeLessThanOrEqual(Date.now() + YEAR_MS);
  });

  it('initialises an existing empty directory', async () => {
    const dir = freshDir();
    mkdirSync(dir);
    await expect(initCaDir({ dir, now: NOW })).resolves.toBeDefined();
    expect(readdirSync(dir)).toHaveLength(5);
  });
});

describe('initCaDir refusals', () => {
  it('refuses to overwrite an existing CA and leaves its files untouched', async () => {
    const dir = freshDir();
    await initCaDir({ dir, now: NOW });
    const before = Object.fromEntries(readdirSync(dir).map((f) => [f, readFileSync(join(dir, f), 'utf8')]));
    const error = await initCaDir({ dir, now: NOW }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as Error).message).toBe(`CA directory ${dir} already holds a CA; refusing to overwrite it`);
    expect(Object.fromEntries(readdirSync(dir).map((f) => [f, readFileSync(join(dir, f), 'utf8')]))).toEqual(before);
  });

  it.each([
    ['refuses a directory holding only ca-cert.pem', 'ca-cert.pem'],
    ['refuses a directory holding only ca-key.pem', 'ca-key.pem'],
    ['refuses a directory holding only root-cert.pem', 'root-cert.pem'],
    ['refuses a directory holding only cert-chain.pem', 'cert-chain.pem'],
    ['refuses a directory holding only root-key.pem (the offline root key, never to be replaced)', 'root-key.pem'],
    ['refuses a directory holding only a rotation\'s state', 'rotation.json'],
  ])('%s', async (_name, file) => {
    const dir = freshDir();
    mkdirSync(dir);
    writeFileSync(join(dir, file), 'user data\n');
    await expect(initCaDir({ dir, now: NOW })).rejects.toThrow(ConfigError);
    expect(readFileSync(join(dir, file), 'utf8')).toBe('user data\n');
    expect(readdirSync(dir)).toEqual([file]);
  });
});


describe('initCaDir after an interrupted creation', () => {
  it('makes the CA again when a creation was killed before ca-cert.pem (its files were never used)', async () => {
    const dir = freshDir();
    mkdirSync(dir);
    // What a `ca init` killed after its third file leaves behind.
    beginCaCreation(dir);
    writeFileSync(join(dir, 'root-key.pem'), 'partial\n', { mode: 0o600 });
    writeFileSync(join(dir, 'ca-key.pem'), 'partial\n', { mode: 0o600 });
    writeFileSync(join(dir, 'root-cert.pem'), 'partial\n');
    ageCreationMarker(dir);
    expect(isCaDirEmpty(dir)).toBe(false);
    const m = await initCaDir({ dir, now: NOW });
    expect(readdirSync(dir).sort()).toEqual(['ca-cert.pem', 'ca-key.pem', 'cert-chain.pem', 'root-cert.pem', 'root-key.pem']);
    expect(loadCaDir(dir, NOW).signingCert.fingerprint256).toBe(m.signingCert.fingerprint256);
    expect(readFileSync(join(dir, 'root-key.pem'), 'utf8')).not.toBe('partial\n');
  });

  it('keeps a creation that was killed after ca-cert.pem (complete), dropping only the marker', async () => {
    const dir = freshDir();
    await initCaDir({ dir, now: NOW });
    const before = Object.fromEntries(readdirSync(dir).map((f) => [f, readFileSync(join(dir, f), 'utf8')]));
    beginCaCreation(dir);
    ageCreationMarker(dir);
    expect(recoverInterruptedCreation(dir)).toBe('completed');
    expect(Object.fromEntries(readdirSync(dir).map((f) => [f, readFileSync(join(dir, f), 'utf8')]))).toEqual(before);
    await expect(initCaDir({ dir, now: NOW })).rejects.toThrow(/already holds a CA/);
  });

  it('leaves no marker behind after a creation that completes', async () => {
    const dir = freshDir();
    await initCaDir({ dir, now: NOW });
    expect(recoverInterruptedCreation(dir)).toBe('none');
    expect(readdirSync(dir)).toHaveLength(5);
  });
});
