import { chmodSync, copyFileSync, cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { beginCaCreation, CaDirTaken, endCaCreation } from '../../../src/ca/files.js';
import { loadCaDir } from '../../../src/ca/material.js';
import { ageCreationMarker } from '../../support/ca-creation.js';
import { initCaDir } from '../../../src/ca/init.js';
import { renewIntermediate } from '../../../src/ca/rotate.js';
import { caSnapshot, loadCaState, prepareSharedState } from '../../../src/ca/state.js';
import { parseConfig } from '../../../src/config/load.js';
import { createLogger } from '../../../src/log/logger.js';
import { nameConstraints, writeConstrainedCaDir } from '../../support/constrained-ca.js';
import { captureLogs } from '../../support/log-capture.js';
import { writeOpensslRootCaDir } from '../../support/openssl-ca.js';

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
    const { lines, logger } = captureLogs();
    const config = parseConfig({ dataDir: join(base, 'data'), ca: { dir: dirs[0] }, issuers: [{ name: 'extra', dir: dirs[1]! }] });
    const state = await loadCaState(config, logger);
    expect(state.issuers.all.map((i) => i.material.roots.length)).toEqual([1, 1]);
    const warned = lines.filter((l) => l.level === 40 && /expired root that anchors nothing/.test(String(l.msg)));
    expect(warned.map((l) => l.issuer)).toEqual(['default', 'extra']);
    expect(warned[0]).toMatchObject({ dir: dirs[0], subject: expect.stringMatching(/root CA/) });
    // A cluster worker loads the CAs its primary sent, which the primary has just warned about.
    const worker = captureLogs();
    const loaded = await loadCaState(config, worker.logger, { inForce: caSnapshot(state) });
    expect(loaded.issuers.all.map((i) => i.material.roots.length)).toEqual([1, 1]);
    expect(worker.lines.filter((l) => Number(l.level) >= 40)).toEqual([]);
  });

  it('warns at load about a CA certificate without a SubjectKeyIdentifier, for its issuer only', async () => {
    const bare = join(base, 'no-ski');
    writeOpensslRootCaDir(bare, '/CN=org root', ['subjectKeyIdentifier=none']);
    const own = join(base, 'with-ski');
    await initCaDir({ dir: own });
    const { lines, logger } = captureLogs();
    await loadCaState(parseConfig({ dataDir: join(base, 'data'), ca: { dir: own }, issuers: [{ name: 'org', dir: bare }] }), logger);
    const warned = lines.filter((l) => l.level === 40 && /KeyIdentifier/.test(String(l.msg)));
    expect(warned).toEqual([expect.objectContaining({ dir: bare, msg: expect.stringMatching(/^CA certificate "CN=org root" has no SubjectKeyIdentifier/) })]);
  });

  it('compiles the revoked client certificates, and warns about an entry more than a day ahead (not one minutes ahead)', async () => {
    const dir = join(base, 'revocations');
    await initCaDir({ dir });
    const { lines, logger } = captureLogs();
    const future = new Date(Date.now() + 365 * DAY_MS).toISOString();
    // Minutes ahead (to cover the time until the reload) is not worth a warning.
    const soon = new Date(Date.now() + 600_000).toISOString();
    const config = parseConfig({ dataDir: join(base, 'data'), ca: { dir }, auth: { revokedClientCertificates: [{ issuedBefore: soon, namespaces: ['web'] }, { issuedBefore: future, namespaces: ['vm-*'] }] } });
    const state = await loadCaState(config, logger);
    expect(state.revocations.size).toBe(2);
    expect(state.revocations.find('spiffe://cluster.local/ns/vm-a/sa/b', Date.now(), '1')?.index).toBe(1);
    const warned = lines.filter((l) => l.level === 40 && /^auth\.revokedClientCertificates\[1\]\.issuedBefore .* is more than a day ahead/.test(String(l.msg)));
    expect(warned).toEqual([expect.objectContaining({ entry: 1, issuedBefore: future })]);
    const worker = captureLogs();
    expect((await loadCaState(config, worker.logger, { inForce: caSnapshot(state) })).revocations.size).toBe(2);
    expect(worker.lines.filter((l) => Number(l.level) >= 40)).toEqual([]);
  });
});


describe('loadCaState and trust-domain aliases', () => {
  /** A CA directory whose intermediate's name constraints permit URIs in `permitted` only. */
  const constrainedCa = (dir: string, permitted: string): Promise<void> => writeConstrainedCaDir(dir, nameConstraints({ uri: [permitted] }));

  it('self-tests every alias too: a CA whose name constraints permit only the primary trust domain is refused with the alias named', async () => {
    const dir = join(base, 'constrained');
    await constrainedCa(dir, 'cluster.local');
    const quiet = createLogger('silent');
    await expect(loadCaState(parseConfig({ dataDir: join(base, 'data'), ca: { dir } }), quiet)).resolves.toBeDefined();
    const aliased = parseConfig({ dataDir: join(base, 'data'), ca: { dir }, trustDomainAliases: ['old.example'] });
    await expect(loadCaState(aliased, quiet)).rejects.toThrow(/spiffe:\/\/old\.example\/ns\/meshcert-self-test\/sa\/probe/);
  });

  it("loads a default CA that leaves out a cluster's own trust domain (a rule may send that cluster to another issuer), says so, and it refuses that trust domain's identities", async () => {
    const dir = join(base, 'constrained-clusters');
    await constrainedCa(dir, 'cluster.local');
    const clusters = (td: string): ReturnType<typeof parseConfig> =>
      parseConfig({ dataDir: join(base, 'data'), ca: { dir }, auth: { clusters: [{ name: 'Kubernetes', jwt: [{ issuer: 'https://a', jwksFile: 'j.json' }] }, { name: 'remote', trustDomain: td, jwt: [{ issuer: 'https://b', jwksFile: 'j.json' }] }] } });
    const same = captureLogs();
    await loadCaState(clusters('cluster.local'), same.logger);
    expect(same.lines.filter((l) => Number(l.level) >= 40)).toEqual([]);
    const { lines, logger } = captureLogs();
    const state = await loadCaState(clusters('remote.example'), logger);
    expect(lines.filter((l) => Number(l.level) === 40).map((l) => l.msg)).toEqual([expect.stringMatching(/^issuer "default" cannot certify trust domain remote\.example: .*spiffe:\/\/remote\.example\/ns\/meshcert-self-test\/sa\/probe.*refused \(UNAVAILABLE\)$/)]);
    expect(state.issuers.default.refusedUris(['spiffe://remote.example/ns/a/sa/b'])).not.toEqual([]);
  });

  it("loads a named issuer that leaves out a cluster's trust domain (a rule may give it other clusters only), says so, and it refuses that trust domain's identities", async () => {
    const open = join(base, 'open-default');
    await initCaDir({ dir: open });
    const narrow = join(base, 'narrow-issuer');
    await constrainedCa(narrow, 'cluster.local');
    const { lines, logger } = captureLogs();
    const config = parseConfig({
      dataDir: join(base, 'data'),
      ca: { dir: open },
      issuers: [{ name: 'narrow', dir: narrow }],
      auth: { clusters: [{ name: 'Kubernetes', jwt: [{ issuer: 'https://a', jwksFile: 'j.json' }] }, { name: 'remote', trustDomain: 'remote.example', jwt: [{ issuer: 'https://b', jwksFile: 'j.json' }] }] },
    });
    const state = await loadCaState(config, logger);
    expect(lines.filter((l) => Number(l.level) === 40).map((l) => l.msg)).toEqual([expect.stringMatching(/^issuer "narrow" cannot certify trust domain remote\.example: .*a caller of that trust domain whose policy rule uses this issuer is refused \(UNAVAILABLE\)$/)]);
    const issuer = state.issuers.get('narrow');
    expect(issuer.refusedUris(['spiffe://cluster.local/ns/a/sa/b'])).toEqual([]);
    expect(issuer.refusedUris(['spiffe://remote.example/ns/a/sa/b'])).not.toEqual([]);
    // As sign() refuses it: never a leaf every client would refuse.
    expect(() => issuer.sign({ spki: state.issuers.get('default').material.signingCert.publicKey.export({ type: 'spki', format: 'der' }), uris: ['spiffe://remote.example/ns/a/sa/b'], notBefore: new Date(), notAfter: new Date(Date.now() + 60_000) })).toThrow(/cannot sign these names/);
  });
});

describe('loadCaState and the serving certificate\'s names', () => {
  it('refuses a default CA whose name constraints leave out server.tls.dnsNames or ipAddresses, unless meshcert serves files', async () => {
    const dir = join(base, 'dns-constrained');
    await writeConstrainedCaDir(dir, nameConstraints({ uri: ['cluster.local'], dns: ['meshcert.svc'], ip: ['10.0.0.0/8'] }));
    const quiet = createLogger('silent');
    const config = (tls: Record<string, unknown>) => parseConfig({ dataDir: join(base, 'data'), ca: { dir }, server: { tls } });
    // The default names (localhost, 127.0.0.1, ::1) are outside the constraints.
    await expect(loadCaState(config({}), quiet)).rejects.toThrow(
      'server.tls.dnsNames/ipAddresses (by default localhost, 127.0.0.1 and ::1): the default CA cannot certify the serving certificate\'s names, so agents would refuse the TLS handshake: "CN=constrained intermediate" has name constraints that exclude DNS name localhost (permitted only: "meshcert.svc"); "CN=constrained intermediate" has name constraints that exclude IP address 127.0.0.1 (permitted only: "10.0.0.0/8"); "CN=constrained intermediate" has name constraints that exclude IP address ::1 (permitted only: "10.0.0.0/8"); set names the CA allows, or give server.tls.certFile and keyFile',
    );
    await expect(loadCaState(config({ dnsNames: ['meshcert.svc', 'ca.meshcert.svc'], ipAddresses: ['10.0.0.7'] }), quiet)).resolves.toBeDefined();
    await expect(loadCaState(config({ certFile: join(dir, 'serving.pem'), keyFile: join(dir, 'serving-key.pem') }), quiet)).resolves.toBeDefined();
  });

  it('refuses a default CA whose name constraints leave out istiod\'s names when istio.istiodTls is on, at start and on reload', async () => {
    const dir = join(base, 'istiod-constrained');
    await writeConstrainedCaDir(dir, nameConstraints({ uri: ['cluster.local'], dns: ['localhost', '.svc'], ip: ['127.0.0.0/8', '::1/128'] }));
    const quiet = createLogger('silent');
    const config = (istiodTls: Record<string, unknown>) => parseConfig({ dataDir: join(base, 'data'), ca: { dir }, istio: { istiodTls } });
    // Off (the default), the CA serves: meshcert's own names are permitted.
    await expect(loadCaState(config({}), quiet)).resolves.toBeDefined();
    // istiod and istiod.istio-system are not under ".svc" (a dotted constraint permits subdomains only).
    const refusal =
      'istio.istiodTls: the default CA cannot certify istiod\'s names (from istio.istiodTls.namespace "istio-system", revisions and extraDnsNames), so no istiod-tls Secret could be issued: "CN=constrained intermediate" has name constraints that exclude DNS name istiod (permitted only: "localhost", ".svc"); "CN=constrained intermediate" has name constraints that exclude DNS name istiod.istio-system (permitted only: "localhost", ".svc"); use a CA whose name constraints permit them, or turn istio.istiodTls off';
    await expect(loadCaState(config({ enabled: true }), quiet)).rejects.toThrow(refusal);
    await expect(loadCaState(config({ enabled: true }), quiet, { reload: true })).rejects.toThrow(refusal);
    await expect(prepareSharedState(config({ enabled: true }), quiet)).rejects.toThrow(refusal);
    // A revision's names are checked too.
    await expect(loadCaState(config({ enabled: true, revisions: ['1-24'] }), quiet)).rejects.toThrow(/exclude DNS name istiod-1-24 \(/);
    // And the extra names.
    await expect(loadCaState(config({ enabled: true, extraDnsNames: ['istiod.mesh.example.com'] }), quiet)).rejects.toThrow(/exclude DNS name istiod\.mesh\.example\.com \(/);
  });

  it('warns at load about a policy rule allowing names the CA cannot certify (said by the process that loads the files, not again by a worker loading what it was sent)', async () => {
    const dir = join(base, 'policy-constrained');
    await writeConstrainedCaDir(dir, nameConstraints({ uri: ['cluster.local'], dns: ['.svc.example.com'] }));
    const { lines, logger } = captureLogs();
    const config = parseConfig({
      dataDir: join(base, 'data'),
      ca: { dir },
      server: { tls: { dnsNames: ['meshcert.svc.example.com'], ipAddresses: [] } },
      policy: { rules: [{ name: 'fine', match: { namespaces: ['web'] }, extraSans: { dns: ['{serviceAccount}.{namespace}.svc.example.com'] } }, { name: 'wide', extraSans: { dns: ['{namespace}.example.org'] } }] },
    });
    const primary = await loadCaState(config, logger);
    expect(lines.filter((l) => l.level === 40).map((l) => l.msg)).toEqual([
      'policy rule "wide" allows names its CA "default" cannot certify: "CN=constrained intermediate" has name constraints that exclude DNS name ns.example.org (permitted only: ".svc.example.com"); requests for them are refused',
    ]);
    const worker = captureLogs();
    const loaded = await loadCaState(config, worker.logger, { inForce: caSnapshot(primary) });
    expect(loaded.issuers.all.map((i) => i.material.signingCert.fingerprint256)).toEqual(primary.issuers.all.map((i) => i.material.signingCert.fingerprint256));
    expect(worker.lines.filter((l) => Number(l.level) >= 40)).toEqual([]);
  });

  it('checks policy IP entries whole (an excluded range inside one), names a match value in the sample, and says a shared refusal once for the rules that share it', async () => {
    const dir = join(base, 'ip-constrained');
    await writeConstrainedCaDir(dir, nameConstraints({ uri: ['cluster.local'], dns: ['.svc.example.com'] }, { ip: ['10.1.0.0/16'], dns: ['kube-system.svc.example.com'] }));
    const { lines, logger } = captureLogs();
    const config = parseConfig({
      dataDir: join(base, 'data'),
      ca: { dir },
      server: { tls: { dnsNames: ['meshcert.svc.example.com'], ipAddresses: [] } },
      policy: {
        rules: [
          // Its first and last addresses are allowed; 10.1.0.0/16 inside it is not.
          { name: 'pods', match: { namespaces: ['web'] }, extraSans: { ip: ['10.0.0.0/8'] } },
          // Rendered for its own namespace, which the CA excludes.
          { name: 'system', match: { namespaces: ['kube-system'] }, extraSans: { dns: ['{namespace}.svc.example.com'] } },
          { name: 'a', match: { namespaces: ['a'] } },
          { name: 'b', match: { namespaces: ['b'] } },
        ],
        default: { extraSans: { ip: ['10.1.2.3'] } },
      },
    });
    await loadCaState(config, logger);
    expect(lines.filter((l) => l.level === 40).map((l) => l.msg)).toEqual([
      'policy rule "pods" allows names its CA "default" cannot certify: "CN=constrained intermediate" has name constraints that exclude IP range 10.0.0.0/8 (excluded: "10.1.0.0/16"); requests for them are refused',
      'policy rule "system" allows names its CA "default" cannot certify: "CN=constrained intermediate" has name constraints that exclude DNS name kube-system.svc.example.com (excluded: "kube-system.svc.example.com"); requests for them are refused',
      'policy rules "a", "b", "default" allow names its CA "default" cannot certify: "CN=constrained intermediate" has name constraints that exclude IP range 10.1.2.3/32 (excluded: "10.1.0.0/16"); requests for them are refused',
    ]);
  });

  it('refuses a CA whose critical name constraints hold a directoryName, which Go cannot read: it would refuse every leaf', async () => {
    const dir = join(base, 'dn-constrained');
    await writeConstrainedCaDir(dir, nameConstraints({ uri: ['cluster.local'], directoryName: ['O=Example'] }));
    await expect(loadCaState(parseConfig({ dataDir: join(base, 'data'), ca: { dir } }), createLogger('silent'))).rejects.toThrow(
      /^issuer default: its chain breaks constraints that Go's crypto\/x509 \(istio-agent\) enforces at every handshake, so clients would refuse every certificate it signs: "CN=constrained intermediate" has critical name constraints on directoryName, which Go's crypto\/x509 does not support: it refuses every certificate below that CA$/,
    );
  });
});

describe('loadCaState and a default CA that does not load', () => {
  it('names its directory, as a named issuer\'s errors do (ca.dir may come from MESHCERT_CA_DIR)', async () => {
    const dir = join(base, 'mismatched');
    const other = join(base, 'mismatched-other');
    await initCaDir({ dir });
    await initCaDir({ dir: other });
    copyFileSync(join(other, 'ca-key.pem'), join(dir, 'ca-key.pem'));
    await expect(loadCaState(parseConfig({ dataDir: join(base, 'data-mismatch'), ca: { dir } }), createLogger('silent'))).rejects.toThrow(
      /^CA directory .*\/mismatched: ca-key\.pem does not match the public key of ca-cert\.pem$/,
    );
  });
});

describe('loadCaState with ca.autoInit and a directory holding part of a CA', () => {
  it('creates no CA over a lone root key (or any other CA file): the directory is loaded and refused with what is missing', async () => {
    for (const file of ['root-key.pem', 'cert-chain.pem', 'rotation.json']) {
      const dir = join(base, `lone-${file}`);
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, file), 'precious\n', { mode: 0o600 });
      await expect(loadCaState(parseConfig({ dataDir: join(base, 'data-lone'), ca: { dir, autoInit: true } }), createLogger('silent')), file).rejects.toThrow(`CA directory ${dir} has no ca-cert.pem`);
      expect(readFileSync(join(dir, file), 'utf8')).toBe('precious\n');
    }
  });
});

describe('loadCaState with ca.autoInit on a directory another process creates a CA in', () => {
  const fingerprint = (s: Awaited<ReturnType<typeof loadCaState>>): string => s.issuers.default.material.signingCert.fingerprint256;

  it('two servers starting at once on one empty directory load the same CA, created once', async () => {
    const dir = join(base, 'race');
    const { lines, logger } = captureLogs();
    const [a, b] = await Promise.all([1, 2].map((n) => loadCaState(parseConfig({ dataDir: join(base, `data-race-${n}`), ca: { dir, autoInit: true } }), logger)));
    expect(fingerprint(a!)).toBe(fingerprint(b!));
    expect(loadCaDir(dir).signingCert.fingerprint256).toBe(fingerprint(a!));
    expect(lines.filter((l) => /^created a new root/.test(String(l.msg)))).toHaveLength(1);
    expect(lines.filter((l) => /another process is creating the CA/.test(String(l.msg))).length).toBeGreaterThanOrEqual(1);
  });

  it('waits while another creation is in progress (a fresh marker), touches none of its files, and loads what it made', async () => {
    const dir = join(base, 'in-progress');
    mkdirSync(dir);
    beginCaCreation(dir);
    writeFileSync(join(dir, 'root-key.pem'), 'partial\n', { mode: 0o600 });
    const made = join(base, 'made-elsewhere');
    await initCaDir({ dir: made });
    const loading = loadCaState(parseConfig({ dataDir: join(base, 'data-wait'), ca: { dir, autoInit: true } }), createLogger('silent'));
    await new Promise((r) => setTimeout(r, 400));
    expect(readFileSync(join(dir, 'root-key.pem'), 'utf8')).toBe('partial\n');
    // The other process finishes: its files, ca-cert.pem last, then the marker goes.
    const files = readdirSync(made).filter((f) => f !== 'ca-cert.pem');
    for (const f of [...files, 'ca-cert.pem']) copyFileSync(join(made, f), join(dir, f));
    endCaCreation(dir);
    expect(fingerprint(await loading)).toBe(loadCaDir(made).signingCert.fingerprint256);
  });

  it('claims a directory for one creation at a time', () => {
    const dir = join(base, 'claimed');
    mkdirSync(dir);
    beginCaCreation(dir);
    expect(() => beginCaCreation(dir)).toThrow(CaDirTaken);
    expect(() => beginCaCreation(dir)).toThrow(/another process is creating a CA in .*claimed/);
  });
});

describe('loadCaState on a directory a rotation step was killed in before it replaced any signing file', () => {
  it('serves the CA from before the step, whole, and warns to re-run it', async () => {
    const dir = join(base, 'pending-renewal');
    await initCaDir({ dir });
    // The set a renewal staged: a new intermediate under the same root.
    const donor = join(base, 'pending-renewal-donor');
    cpSync(dir, donor, { recursive: true });
    await renewIntermediate({ dir: donor });
    mkdirSync(join(dir, 'renewing'));
    for (const f of ['ca-cert.pem', 'ca-key.pem', 'cert-chain.pem']) copyFileSync(join(donor, f), join(dir, 'renewing', f));
    writeFileSync(join(dir, '.meshcert-replacing'), 'renewing\n');
    const { lines, logger } = captureLogs();
    const state = await loadCaState(parseConfig({ dataDir: join(base, 'data-pending'), ca: { dir } }), logger);
    expect(state.issuers.default.material.signingCert.fingerprint256).toBe(loadCaDir(dir).signingCert.fingerprint256);
    expect(lines.filter((l) => /^a "meshcert ca renew-intermediate" was interrupted before it replaced the signing files: this is still the CA from before it; run it again to complete it \(serving this CA meanwhile\)$/.test(String(l.msg)))).toHaveLength(1);
  });
});

describe('loadCaState on a directory whose signing key is open to all users', () => {
  it('serves it, and warns once, naming the file and its mode', async () => {
    const dir = join(base, 'exposed-key');
    await initCaDir({ dir });
    chmodSync(join(dir, 'ca-key.pem'), 0o644);
    const { lines, logger } = captureLogs();
    await loadCaState(parseConfig({ dataDir: join(base, 'data-exposed'), ca: { dir } }), logger);
    const warned = lines.filter((l) => String(l.msg).includes('a private key, is open to all users'));
    expect(warned.map((l) => l.msg)).toEqual([`${join(dir, 'ca-key.pem')}, a private key, is open to all users (mode 0644): chmod 600 it (meshcert writes its keys 0600)`]);
  });
});

describe('loadCaState with ca.autoInit after an interrupted creation', () => {
  it('creates the CA again (the partial files were never used) and says so', async () => {
    const dir = join(base, 'interrupted');
    mkdirSync(dir);
    beginCaCreation(dir);
    writeFileSync(join(dir, 'root-key.pem'), 'partial\n', { mode: 0o600 });
    writeFileSync(join(dir, 'root-cert.pem'), 'partial\n');
    ageCreationMarker(dir);
    const { lines, logger } = captureLogs();
    const state = await loadCaState(parseConfig({ dataDir: join(base, 'data2'), ca: { dir, autoInit: true } }), logger);
    expect(state.issuers.default.material.roots).toHaveLength(1);
    expect(lines.some((l) => /creation that was interrupted/.test(String(l.msg)))).toBe(true);
    // Without ca.autoInit nothing is created or removed: the directory is refused as it is.
    const other = join(base, 'interrupted-no-autoinit');
    mkdirSync(other);
    beginCaCreation(other);
    writeFileSync(join(other, 'root-cert.pem'), 'partial\n');
    await expect(loadCaState(parseConfig({ dataDir: join(base, 'data3'), ca: { dir: other, autoInit: false } }), logger)).rejects.toThrow(
      /ca-cert\.pem.* \(a CA creation in .*interrupted-no-autoinit was interrupted: run "meshcert ca init --dir .*" or "ca import-istiod" again, or set ca\.autoInit: true\)$/,
    );
    expect(readFileSync(join(other, 'root-cert.pem'), 'utf8')).toBe('partial\n');
  });
});
