import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { beginCaCreation } from '../../../src/ca/files.js';
import { initCaDir } from '../../../src/ca/init.js';
import { loadCaState } from '../../../src/ca/state.js';
import { parseConfig } from '../../../src/config/load.js';
import { createLogger } from '../../../src/log/logger.js';
import { explicitTag, implicitPrimitive, sequence } from '../../../src/x509/der.js';
import { x509 } from '../../fixtures/csr.js';

const DAY_MS = 86_400_000;
let base: string;

beforeAll(() => {
  base = mkdtempSync(join(tmpdir(), 'meshcert-ca-state-'));
});
afterAll(() => rmSync(base, { recursive: true, force: true }));

describe('loadCaState', () => {
  it('loads every issuer beside an expired root that anchors nothing, and warns about it for each', async () => {
    const stale = join(base, 'stale');
    await initCaDir({ dir: stale, now: new Date(Date.now() - 3 * DAY_MS), rootLifetimeMs: DAY_MS, intermediateLifetimeMs: DAY_MS });
    const dirs = [join(base, 'default'), join(base, 'extra')];
    for (const d of dirs) {
      await initCaDir({ dir: d });
      writeFileSync(join(d, 'root-cert.pem'), readFileSync(join(d, 'root-cert.pem'), 'utf8') + readFileSync(join(stale, 'root-cert.pem'), 'utf8'));
    }
    const lines: Array<Record<string, unknown>> = [];
    const logger = createLogger('info', new Writable({ write: (c: Buffer, _e, cb) => (lines.push(JSON.parse(c.toString()) as Record<string, unknown>), cb()) }));
    const config = parseConfig({ dataDir: join(base, 'data'), ca: { dir: dirs[0] }, issuers: [{ name: 'extra', dir: dirs[1]! }] });
    const state = await loadCaState(config, logger);
    expect(state.issuers.all.map((i) => i.material.roots.length)).toEqual([1, 1]);
    const warned = lines.filter((l) => l.level === 40 && /expired root that anchors nothing/.test(String(l.msg)));
    expect(warned.map((l) => l.issuer)).toEqual(['default', 'extra']);
    expect(warned[0]).toMatchObject({ dir: dirs[0], subject: expect.stringMatching(/root CA/) });
  });

  it('compiles the revoked client certificates, and warns about an entry more than a day ahead (not one minutes ahead)', async () => {
    const dir = join(base, 'revocations');
    await initCaDir({ dir });
    const lines: Array<Record<string, unknown>> = [];
    const logger = createLogger('info', new Writable({ write: (c: Buffer, _e, cb) => (lines.push(JSON.parse(c.toString()) as Record<string, unknown>), cb()) }));
    const future = new Date(Date.now() + 365 * DAY_MS).toISOString();
    // Minutes ahead (to cover the time until the reload) is not worth a warning.
    const soon = new Date(Date.now() + 600_000).toISOString();
    const config = parseConfig({ dataDir: join(base, 'data'), ca: { dir }, auth: { revokedClientCertificates: [{ issuedBefore: soon, namespaces: ['web'] }, { issuedBefore: future, namespaces: ['vm-*'] }] } });
    const state = await loadCaState(config, logger);
    expect(state.revocations.size).toBe(2);
    expect(state.revocations.find('spiffe://cluster.local/ns/vm-a/sa/b', Date.now(), '1')?.index).toBe(1);
    const warned = lines.filter((l) => l.level === 40 && /^auth\.revokedClientCertificates\[1\]\.issuedBefore .* is more than a day ahead/.test(String(l.msg)));
    expect(warned).toEqual([expect.objectContaining({ entry: 1, issuedBefore: future })]);
  });
});


describe('loadCaState and trust-domain aliases', () => {
  /** A CA directory whose intermediate's name constraints permit URIs in `permitted` only. */
  async function constrainedCa(dir: string, permitted: string): Promise<void> {
    const alg = { name: 'ECDSA', hash: 'SHA-256' } as EcdsaParams;
    const gen = { name: 'ECDSA', namedCurve: 'P-256' } as EcKeyGenParams;
    const validity = { notBefore: new Date(Date.now() - 60_000), notAfter: new Date(Date.now() + 30 * DAY_MS) };
    const caExtensions = [new x509.BasicConstraintsExtension(true, undefined, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true)];
    const rootKeys = (await crypto.subtle.generateKey(gen, true, ['sign', 'verify'])) as CryptoKeyPair;
    const root = await x509.X509CertificateGenerator.createSelfSigned({ serialNumber: '01', name: 'CN=constrained root', keys: rootKeys, signingAlgorithm: alg, extensions: [...caExtensions, await x509.SubjectKeyIdentifierExtension.create(rootKeys.publicKey)], ...validity });
    const keys = (await crypto.subtle.generateKey(gen, true, ['sign', 'verify'])) as CryptoKeyPair;
    // NameConstraints: permittedSubtrees [0] holding one uniformResourceIdentifier [6].
    const constraints = new x509.Extension('2.5.29.30', true, new Uint8Array(sequence(explicitTag(0, sequence(implicitPrimitive(6, Buffer.from(permitted, 'latin1')))))));
    const inter = await x509.X509CertificateGenerator.create({
      serialNumber: '02',
      subject: 'CN=constrained intermediate',
      issuer: root.subjectName,
      publicKey: keys.publicKey,
      signingKey: rootKeys.privateKey,
      signingAlgorithm: alg,
      extensions: [new x509.BasicConstraintsExtension(true, 0, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true), constraints, await x509.SubjectKeyIdentifierExtension.create(keys.publicKey), await x509.AuthorityKeyIdentifierExtension.create(root)],
      ...validity,
    });
    const pkcs8 = Buffer.from(await crypto.subtle.exportKey('pkcs8', keys.privateKey)).toString('base64');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'root-cert.pem'), `${root.toString('pem')}\n`);
    writeFileSync(join(dir, 'ca-cert.pem'), `${inter.toString('pem')}\n`);
    writeFileSync(join(dir, 'cert-chain.pem'), `${inter.toString('pem')}\n${root.toString('pem')}\n`);
    writeFileSync(join(dir, 'ca-key.pem'), `-----BEGIN PRIVATE KEY-----\n${pkcs8.match(/.{1,64}/g)!.join('\n')}\n-----END PRIVATE KEY-----\n`, { mode: 0o600 });
  }

  it('self-tests every alias too: a CA whose name constraints permit only the primary trust domain is refused with the alias named', async () => {
    const dir = join(base, 'constrained');
    await constrainedCa(dir, 'cluster.local');
    const quiet = createLogger('silent');
    await expect(loadCaState(parseConfig({ dataDir: join(base, 'data'), ca: { dir } }), quiet)).resolves.toBeDefined();
    const aliased = parseConfig({ dataDir: join(base, 'data'), ca: { dir }, trustDomainAliases: ['old.example'] });
    await expect(loadCaState(aliased, quiet)).rejects.toThrow(/spiffe:\/\/old\.example\/ns\/meshcert-self-test\/sa\/probe/);
  });
});

describe('loadCaState with ca.autoInit after an interrupted creation', () => {
  it('creates the CA again (the partial files were never used) and says so', async () => {
    const dir = join(base, 'interrupted');
    mkdirSync(dir);
    beginCaCreation(dir);
    writeFileSync(join(dir, 'root-key.pem'), 'partial\n', { mode: 0o600 });
    writeFileSync(join(dir, 'root-cert.pem'), 'partial\n');
    const lines: Array<Record<string, unknown>> = [];
    const logger = createLogger('info', new Writable({ write: (c: Buffer, _e, cb) => (lines.push(JSON.parse(c.toString()) as Record<string, unknown>), cb()) }));
    const state = await loadCaState(parseConfig({ dataDir: join(base, 'data2'), ca: { dir, autoInit: true } }), logger);
    expect(state.issuers.default.material.roots).toHaveLength(1);
    expect(lines.some((l) => /creation that was interrupted/.test(String(l.msg)))).toBe(true);
    // Without ca.autoInit nothing is created or removed: the directory is refused as it is.
    const other = join(base, 'interrupted-no-autoinit');
    mkdirSync(other);
    beginCaCreation(other);
    writeFileSync(join(other, 'root-cert.pem'), 'partial\n');
    await expect(loadCaState(parseConfig({ dataDir: join(base, 'data3'), ca: { dir: other, autoInit: false } }), logger)).rejects.toThrow(/ca-cert\.pem/);
    expect(readFileSync(join(other, 'root-cert.pem'), 'utf8')).toBe('partial\n');
  });
});
