import { credentials } from '@grpc/grpc-js';
import { execFileSync, spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { X509Certificate } from 'node:crypto';
import { open } from 'node:fs/promises';
import { initCaDir } from '../../src/ca/init.js';
import { loadCaDir } from '../../src/ca/material.js';
import { parseConfig } from '../../src/config/load.js';
import { localServingCertIssuer } from '../../src/controllers/serving-issuer.js';
import { LocalIssuer } from '../../src/issuer/local.js';
import { createLogger } from '../../src/log/logger.js';
import { startMeshcert } from '../../src/main.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CaClient } from '../../src/client/ca-client.js';
import { loadProtos } from '../../src/client/protos.js';
import { makeCsr } from '../fixtures/csr.js';
import { openStore } from '../../src/inventory/open.js';
import { makeRecord } from '../unit/inventory/fixtures.js';
import { canRunAsNobody, killIfRunning, ROOT, runCli, startServe, type ServerProcess } from '../support/cli.js';
import { writeUnreadableInventory } from '../support/unreadable-inventory.js';
import { nameConstraints, writeConstrainedCaDir } from '../support/constrained-ca.js';
import { freePort } from '../support/postgres.js';
import { mintToken, openssl, TEST_ISSUER, TRUST_DOMAIN, writeTestJwks } from '../support/harness.js';
import { ageCreationMarker } from '../support/ca-creation.js';
import { writeOpensslRootCaDir } from '../support/openssl-ca.js';
import { servingShape } from '../../src/runtime/auto-shape.js';

/** Whether the tests that run the CLI as another user can (see canRunAsNobody). */
const asNobody = canRunAsNobody();

describe('the meshcert CLI, as a user runs it', () => {
  let dir: string;
  let server: ServerProcess;
  let configFile: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'meshcert-e2e-'));
    await writeTestJwks(join(dir, 'jwks.json'));
    configFile = join(dir, 'meshcert.yaml');
    writeFileSync(
      configFile,
      [
        'dataDir: data',
        'server:',
        '  listen: 127.0.0.1:0',
        '  shutdownGrace: 10s',
        // Not the default 9402: a meshcert running on this machine (the quick start) holds it.
        'admin:',
        '  listen: 127.0.0.1:0',
        'ca:',
        '  dir: ca',
        'auth:',
        '  clusters:',
        '    - name: Kubernetes',
        '      jwt:',
        `        - issuer: ${TEST_ISSUER}`,
        '          jwksFile: jwks.json',
        '',
      ].join('\n'),
    );
  });
  /** A CA root for `request` (made once): its checks of later inputs need a root that reads. */
  const requestRoot = async (): Promise<string> => {
    const requestCa = join(dir, 'request-ca');
    if (!existsSync(requestCa)) await initCaDir({ dir: requestCa });
    return join(requestCa, 'root-cert.pem');
  };
  afterAll(async () => {
    killIfRunning(server);
    rmSync(dir, { recursive: true, force: true });
  });

  it('ca check warns about an expired root that anchors nothing, which meshcert does not serve', async () => {
    const caDir = join(dir, 'ca-stale');
    const stale = join(dir, 'ca-stale-old');
    expect((await runCli(['ca', 'init', '--dir', caDir])).code).toBe(0);
    await initCaDir({ dir: stale, now: new Date(Date.now() - 3 * 86_400_000), rootLifetimeMs: 86_400_000, intermediateLifetimeMs: 86_400_000 });
    writeFileSync(join(caDir, 'root-cert.pem'), readFileSync(join(caDir, 'root-cert.pem'), 'utf8') + readFileSync(join(stale, 'root-cert.pem'), 'utf8'));
    const r = await runCli(['ca', 'check', '--dir', caDir]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^CA OK: .*, 1 root\(s\), usable until/);
    expect(r.stderr).toMatch(/^warning: root-cert\.pem also holds "O=meshcert, CN=meshcert root CA [\d-]+", which expired on .* anchors nothing this CA signs; meshcert leaves it out of the trust bundle \(remove it from the file\)\n$/);
  });

  it('ca check warns about a CA certificate without a SubjectKeyIdentifier (strict OpenSSL refuses its leaves)', async () => {
    const caDir = join(dir, 'ca-no-ski');
    writeOpensslRootCaDir(caDir, '/O=org/CN=org root', ['subjectKeyIdentifier=none']);
    const r = await runCli(['ca', 'check', '--dir', caDir]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^CA OK: signs as "O=org, CN=org root"/);
    expect(r.stderr).toMatch(/^warning: CA certificate "O=org, CN=org root" has no SubjectKeyIdentifier \(RFC 5280 requires it of a CA\): .*openssl verify -x509_strict.*\n$/);
  });

  it('ca check warns about a private key file or a CA directory open to all users, and is quiet about a Secret volume\'s 0440', async () => {
    const caDir = join(dir, 'ca-exposed');
    expect((await runCli(['ca', 'init', '--dir', caDir])).code).toBe(0);
    chmodSync(join(caDir, 'ca-key.pem'), 0o440); // a Secret volume's defaultMode with fsGroup: group, not others
    expect((await runCli(['ca', 'check', '--dir', caDir])).stderr).toBe('');
    chmodSync(join(caDir, 'ca-key.pem'), 0o644);
    chmodSync(join(caDir, 'root-key.pem'), 0o604);
    chmodSync(caDir, 0o777);
    const r = await runCli(['ca', 'check', '--dir', caDir]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toBe(
      [
        `warning: ${caDir} is writable by all users (mode 0777): anyone on this machine can replace the CA's files; chmod o-w it (meshcert makes its CA directories 0700)`,
        `warning: ${join(caDir, 'ca-key.pem')}, a private key, is open to all users (mode 0644): chmod 600 it (meshcert writes its keys 0600)`,
        `warning: ${join(caDir, 'root-key.pem')}, a private key, is open to all users (mode 0604): chmod 600 it (meshcert writes its keys 0600)`,
        '',
      ].join('\n'),
    );
    chmodSync(caDir, 0o700);
    // ca init into a directory open to all says so at once.
    const openDir = join(dir, 'ca-open');
    mkdirSync(openDir, { mode: 0o777 });
    chmodSync(openDir, 0o777);
    const init = await runCli(['ca', 'init', '--dir', openDir]);
    expect(init.code, init.stderr).toBe(0);
    expect(init.stderr).toBe(`warning: ${openDir} is writable by all users (mode 0777): anyone on this machine can replace the CA's files; chmod o-w it (meshcert makes its CA directories 0700)\n`);
    expect((await runCli(['ca', 'init', '--dir', join(dir, 'ca-closed')])).stderr).toBe('');
  });

  // Root may not be refused: only a root test run can try this as another user (who can read the checkout).
  it.skipIf(!asNobody)("a CA directory another user made and this one may not look into is said so, not taken for an empty one ('run ca init')", async () => {
    const base = mkdtempSync(join(tmpdir(), 'meshcert-ca-perm-'));
    try {
      chmodSync(base, 0o755);
      const caDir = join(base, 'ca');
      expect((await runCli(['ca', 'init', '--dir', caDir])).code).toBe(0); // 0700, root's
      const r = await runCli(['ca', 'check', '--dir', caDir], { uid: 65534, gid: 65534 });
      expect(r.code, r.stderr).toBe(1);
      expect(r.stderr).toBe(`meshcert: CA directory ${caDir}: cannot look for ca-cert.pem: EACCES (permission denied to uid 65534, gid 65534)\n`);
      // The key alone unreadable: named too.
      chmodSync(caDir, 0o755);
      const key = await runCli(['ca', 'check', '--dir', caDir], { uid: 65534, gid: 65534 });
      expect(key.code, key.stderr).toBe(1);
      expect(key.stderr).toContain(`CA directory ${caDir}: cannot read ca-key.pem: EACCES (permission denied to uid 65534, gid 65534)`);
    } finally {
      rmSync(base, { recursive: true, force: true });
    }
  });

  it.skipIf(!asNobody)('discover --files says which directory below a given one it could not read, and exits 1, reading the rest', async () => {
    const base = mkdtempSync(join(tmpdir(), 'meshcert-discover-perm-'));
    try {
      chmodSync(base, 0o777);
      for (const sub of ['ok', 'locked']) {
        mkdirSync(join(base, 'certs', sub), { recursive: true });
        execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', '/dev/null', '-subj', `/CN=${sub}`, '-days', '1', '-out', join(base, 'certs', sub, 'x.pem')], { stdio: 'ignore' });
      }
      chmodSync(join(base, 'certs'), 0o755);
      chmodSync(join(base, 'certs', 'ok'), 0o755);
      chmodSync(join(base, 'certs', 'ok', 'x.pem'), 0o644);
      chmodSync(join(base, 'certs', 'locked'), 0o700); // root's: uid 65534 may not read it
      const r = await runCli(['discover', '--files', join(base, 'certs'), '--db', `sqlite:${join(base, 'inv.db')}`], { uid: 65534, gid: 65534 });
      expect(r.code, r.stderr).toBe(1);
      const out = r.stdout + r.stderr;
      expect(out).toContain(`${join(base, 'certs', 'locked')}: cannot read directory: EACCES (permission denied to uid 65534, gid 65534)`);
      expect(out).toMatch(/ok\/x\.pem: 1 certificate/);
    } finally {
      rmSync(base, { recursive: true, force: true });
    }
  });

  it.skipIf(!asNobody)('config check refuses a file whose SQLite inventory or autoInit CA directory serve, run as another user, could not create', async () => {
    const base = mkdtempSync(join(tmpdir(), 'meshcert-write-perm-'));
    try {
      chmodSync(base, 0o755); // root's: others may look, not write
      await writeTestJwks(join(base, 'jwks.json'));
      chmodSync(join(base, 'jwks.json'), 0o644);
      const file = join(base, 'meshcert.yaml');
      writeFileSync(
        file,
        [
          `dataDir: ${join(base, 'state')}`,
          'ca:',
          `  dir: ${join(base, 'ca')}`,
          '  autoInit: true',
          'inventory:',
          `  path: ${join(base, 'inv', 'inventory.db')}`,
          'auth:',
          '  clusters:',
          '    - name: Kubernetes',
          '      jwt:',
          `        - { issuer: "${TEST_ISSUER}", jwksFile: "${join(base, 'jwks.json')}" }`,
          '',
        ].join('\n'),
        { mode: 0o644 },
      );
      expect((await runCli(['config', 'check', file])).code).toBe(0); // root may write there
      const r = await runCli(['config', 'check', file], { uid: 65534, gid: 65534 });
      expect(r.code, r.stdout + r.stderr).toBe(1);
      const refused = `cannot create it in ${base}: EACCES (permission denied to uid 65534, gid 65534)`;
      expect(r.stderr).toContain(`  - ca.dir ${join(base, 'ca')}: ${refused} (ca.autoInit creates the CA there)\n`);
      expect(r.stderr).toContain(`  - inventory.path ${join(base, 'inv', 'inventory.db')}: ${refused}\n`);
    } finally {
      rmSync(base, { recursive: true, force: true });
    }
  });

  it('ca check and ca import-istiod run the self-test serve runs at load, refusing a CA whose intermediate only allows serverAuth', async () => {
    const src = join(dir, 'ca-eku');
    const sh = (cmd: string): void => void execFileSync('sh', ['-c', cmd], { cwd: src, stdio: 'pipe' });
    mkdirSync(src);
    sh('openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out root-key.pem');
    sh("openssl req -x509 -new -key root-key.pem -subj '/O=t/CN=root' -days 30 -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign -out root-cert.pem");
    sh('openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca-key.pem');
    sh("openssl req -new -key ca-key.pem -subj '/O=t/CN=inter' -out inter.csr");
    writeFileSync(join(src, 'ext'), 'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nextendedKeyUsage=serverAuth\n');
    sh('openssl x509 -req -in inter.csr -CA root-cert.pem -CAkey root-key.pem -CAcreateserial -days 20 -extfile ext -out ca-cert.pem && cp ca-cert.pem cert-chain.pem');
    const check = await runCli(['ca', 'check', '--dir', src]);
    expect(check.code).toBe(1);
    expect(check.stderr).toMatch(/extended key usage/);
    const badTd = await runCli(['ca', 'check', '--dir', src, '--trust-domain', 'Not A Domain']);
    // The option's value is the mistake (usage, 2), said before the CA is read.
    expect(badTd.code).toBe(2);
    expect(badTd.stderr).toMatch(/^meshcert: --trust-domain "Not A Domain": /);
    const imported = await runCli(['ca', 'import-istiod', '--from', src, '--dir', join(dir, 'ca-eku-imported')]);
    expect(imported.code).toBe(1);
    expect(imported.stderr).toMatch(/^meshcert: cannot import from .*extended key usage/m);
    expect(existsSync(join(dir, 'ca-eku-imported'))).toBe(false);
  });

  it('ca init creates a root and an intermediate in the cacerts layout with private keys 0600', async () => {
    const r = await runCli(['ca', 'init', '--dir', join(dir, 'ca')]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/created a CA/);
    for (const f of ['ca-key.pem', 'root-key.pem']) expect(statSync(join(dir, 'ca', f)).mode & 0o777).toBe(0o600);
    expect(openssl(['verify', '-CAfile', 'r.pem', 'c.pem'], { 'r.pem': readFileSync(join(dir, 'ca/root-cert.pem'), 'utf8'), 'c.pem': readFileSync(join(dir, 'ca/ca-cert.pem'), 'utf8') }).trim()).toBe('c.pem: OK');
    const root = new X509Certificate(readFileSync(join(dir, 'ca/root-cert.pem')));
    expect((Date.parse(root.validTo) - Date.now()) / (365 * 86400_000)).toBeGreaterThan(9.9);
    const again = await runCli(['ca', 'init', '--dir', join(dir, 'ca')]);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/refusing to overwrite/);
  });

  it("config check says what serve would refuse of the development token issuer's files (dev.tokenIssuer)", async () => {
    const devData = join(dir, 'dev-check');
    const devConfig = join(dir, 'dev-check.yaml');
    writeFileSync(devConfig, `dataDir: ${devData}\nca: { dir: ${join(devData, 'ca')}, autoInit: true }\ndev: { tokenIssuer: true }\n`);
    mkdirSync(join(devData, 'dev'), { recursive: true });
    writeFileSync(join(devData, 'dev', 'token-signing-key.pem'), 'key');
    writeFileSync(join(devData, 'dev', 'jwks.json'), 'garbage');
    const bad = await runCli(['config', 'check', devConfig]);
    expect(bad.code, bad.stdout).toBe(1);
    expect(bad.stderr + bad.stdout).toMatch(new RegExp(`dev\\.tokenIssuer: the development token issuer's key set: .*jwks\\.json.* \\(remove ${join(devData, 'dev').replaceAll('/', '\\/')} and serve makes a new one\\)`));
    rmSync(join(devData, 'dev'), { recursive: true });
    writeFileSync(join(devData, 'dev'), 'a file');
    const file = await runCli(['config', 'check', devConfig]);
    expect(file.code).toBe(1);
    expect(file.stderr + file.stdout).toContain(`dev.tokenIssuer: ${join(devData, 'dev')} is not a directory`);
    rmSync(join(devData, 'dev'));
    const fresh = await runCli(['config', 'check', devConfig]);
    expect(fresh.code, fresh.stderr + fresh.stdout).toBe(0); // serve makes them at start
  });

  it('config check accepts the file and names every problem of a bad one with exit code 1', async () => {
    const ok = await runCli(['config', 'check', configFile]);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toMatch(/^ {2}lifetime default 1d, max 90d \(clamp above max\); 0 rule\(s\)$/m);
    // 'auto' as this machine resolves it (the test runs where the CLI does), and said to be 'auto'.
    const here = servingShape({ workers: 'auto', maxConcurrentStreams: 'auto' });
    const processes = here.workers === 1 ? 'one process serving alone' : `a primary and ${here.workers} workers`;
    expect(ok.stdout).toContain(`\n  serving: ${processes} (server.workers auto on this machine), ${here.maxConcurrentStreams} streams per connection (server.maxConcurrentStreams auto on this machine)\n`);
    const shaped = join(dir, 'shaped.yaml');
    writeFileSync(shaped, readFileSync(configFile, 'utf8').replace('server:\n', 'server:\n  workers: 3\n  maxConcurrentStreams: 40\n'));
    expect((await runCli(['config', 'check', shaped])).stdout).toContain('\n  serving: a primary and 3 workers, 40 streams per connection\n');
    // What it prints is the default rule as resolved, wherever the file sets it.
    const viaPolicy = join(dir, 'via-policy.yaml');
    writeFileSync(viaPolicy, `${readFileSync(configFile, 'utf8')}policy:\n  default:\n    lifetime: { default: 1h, max: 1h, aboveMax: reject }\n`);
    expect((await runCli(['config', 'check', viaPolicy])).stdout).toMatch(/^ {2}lifetime default 1h, max 1h \(reject above max\); 0 rule\(s\)$/m);
    const denying = join(dir, 'denying.yaml');
    writeFileSync(denying, `${readFileSync(configFile, 'utf8')}policy:\n  default: { deny: not listed }\n`);
    expect((await runCli(['config', 'check', denying])).stdout).toMatch(/^ {2}default rule: deny \(not listed\); 0 rule\(s\)$/m);
    // Valid rules that cannot do what they say are warned about: a cluster named in the wrong case.
    const shadowed = join(dir, 'shadowed.yaml');
    writeFileSync(shadowed, `${readFileSync(configFile, 'utf8')}policy:\n  rules:\n    - name: k8s\n      match: { clusters: [kubernetes] }\n      deny: no\n`);
    const sh = await runCli(['config', 'check', shadowed]);
    expect(sh.code, sh.stderr).toBe(0);
    expect(sh.stderr).toContain('meshcert: warning: policy rule "k8s": clusters pattern "kubernetes" matches none of the clusters this CA serves');
    expect(ok.stdout).not.toMatch(/revoked client certificates/);
    // Revoked client certificates: counted, and one more than a day ahead (a typo in the year) is warned about.
    const revoking = join(dir, 'revoking.yaml');
    writeFileSync(revoking, readFileSync(configFile, 'utf8').replace(/^auth:\n/m, 'auth:\n  revokedClientCertificates:\n    - issuedBefore: "2026-11-29T22:00:00Z"\n    - issuedBefore: "2999-01-01T00:00:00Z"\n'));
    const rv = await runCli(['config', 'check', revoking]);
    expect(rv.code, rv.stderr).toBe(0);
    expect(rv.stdout).toMatch(/^ {2}revoked client certificates: 2 entries$/m);
    expect(rv.stderr.trim()).toBe('meshcert: warning: auth.revokedClientCertificates[1].issuedBefore 2999-01-01T00:00:00.000Z is more than a day ahead: client certificates issued until then are refused as credentials too');
    // Revoked serials are looked up in the inventory: one mistyped, or whose certificate the entry does not select, refuses nothing.
    const inventory = join(dir, 'serials-inventory.db');
    const store = await openStore({ kind: 'sqlite', path: inventory });
    // Serials as meshcert writes them (serialHex).
    const vm = makeRecord('vm', { serial: '1a22a1b268b3d800dfb5990d871e611', spiffeId: 'spiffe://cluster.local/ns/vm-db/sa/postgres', namespace: 'vm-db', serviceAccount: 'postgres' });
    const web = makeRecord('web', { serial: '1a22a1b268b3d800dfb5990d871e612', spiffeId: 'spiffe://cluster.local/ns/web/sa/app', namespace: 'web', serviceAccount: 'app' });
    await store.insertMany([vm, web]);
    await store.close();
    const serials = join(dir, 'serials.yaml');
    writeFileSync(
      serials,
      readFileSync(configFile, 'utf8').replace(/^auth:\n/m, `inventory:\n  path: ${inventory}\nauth:\n  revokedClientCertificates:\n    - serials: ["${vm.serial.toUpperCase()}", "${web.serial}", "abcdef"]\n      namespaces: [vm-*]\n`),
    );
    const sv = await runCli(['config', 'check', serials]);
    expect(sv.code, sv.stderr).toBe(0);
    expect(sv.stderr.trim().split('\n')).toEqual([
      `meshcert: warning: auth.revokedClientCertificates[0].serials[1] ${web.serial} is a certificate for spiffe://cluster.local/ns/web/sa/app that no entry refuses (its selectors or time do not match it)`,
      'meshcert: warning: auth.revokedClientCertificates[0].serials[2] abcdef is no certificate in the inventory: a mistyped serial refuses nothing',
    ]);
    // A file read from a pipe is read once: the inventory looked up is the one it names, not the defaults'.
    const fifo = join(dir, 'serials.fifo');
    execFileSync('mkfifo', [fifo]);
    const piped = runCli(['config', 'check', fifo], { timeoutMs: 15_000 });
    // Opening a FIFO to write waits for its reader (on libuv's pool, not this thread).
    const writer = await open(fifo, 'w');
    await writer.writeFile(readFileSync(serials, 'utf8'));
    await writer.close();
    const pipedResult = await piped;
    expect([pipedResult.code, pipedResult.stderr]).toEqual([0, sv.stderr]);
    // --no-files reads no inventory either (a CI job has none at hand): nothing said of the serials.
    const noFiles = await runCli(['config', 'check', '--no-files', serials]);
    expect([noFiles.code, noFiles.stderr.trim()]).toEqual([0, '']);
    // An inventory that opens but cannot be read: the file is still valid (0), and the lookup said not made.
    await writeUnreadableInventory(join(dir, 'corrupt-inventory.db'));
    const corruptConfig = join(dir, 'serials-corrupt.yaml');
    writeFileSync(corruptConfig, readFileSync(serials, 'utf8').replace(`path: ${inventory}`, `path: ${join(dir, 'corrupt-inventory.db')}`));
    const unreadable = await runCli(['config', 'check', corruptConfig]);
    expect([unreadable.code, unreadable.stderr.trim()]).toEqual([0, 'meshcert: warning: cannot look the revoked serials up in the inventory: database disk image is malformed']);
    // Without an inventory to read, it says so.
    rmSync(inventory);
    expect((await runCli(['config', 'check', serials])).stderr.trim()).toBe(`meshcert: warning: cannot look the revoked serials up in the inventory: no inventory at sqlite:${inventory} (the file's inventory section)`);
    const disabled = join(dir, 'serials-no-inventory.yaml');
    writeFileSync(disabled, readFileSync(serials, 'utf8').replace(/^inventory:\n {2}path: .*\n/m, 'inventory:\n  store: none\n'));
    expect((await runCli(['config', 'check', disabled])).stderr.trim()).toBe('meshcert: warning: cannot look the revoked serials up in the inventory: the inventory is disabled in this file (inventory.store: none)');
    const bad = join(dir, 'bad.yaml');
    writeFileSync(bad, 'server:\n  listen: nowhere\n  colour: blue\nissuance:\n  maxTtl: forever\n');
    const r = await runCli(['config', 'check', bad]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/server\.listen/);
    expect(r.stderr).toMatch(/server\.colour: unknown setting/);
    expect(r.stderr).toMatch(/issuance\.maxTtl/);
    expect(r.stderr).not.toMatch(/\bat .*\.(ts|js):\d+/);
    // Valid by the schema but refused by serve (nobody could authenticate): check refuses it too.
    const noAuth = join(dir, 'no-auth.yaml');
    writeFileSync(noAuth, 'dataDir: data\nca:\n  dir: ca\n');
    const na = await runCli(['config', 'check', noAuth]);
    expect(na.code).toBe(1);
    expect(na.stderr).toMatch(/no-auth\.yaml cannot be served:\n {2}- auth\.clusters: no authentication configured/);
  }, 120_000);

  it('config check refuses a CA whose name constraints leave out the serving names, and warns about policy names the CA cannot certify', async () => {
    await writeConstrainedCaDir(join(dir, 'constrained-ca'), nameConstraints({ uri: ['cluster.local'], dns: ['.svc.example.com'], ip: ['10.0.0.0/8'] }));
    const base = readFileSync(configFile, 'utf8').replace('  dir: ca\n', '  dir: constrained-ca\n');
    const defaults = join(dir, 'constrained-defaults.yaml');
    writeFileSync(defaults, base);
    const refused = await runCli(['config', 'check', defaults]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('\n  - server.tls.dnsNames/ipAddresses (by default localhost, 127.0.0.1 and ::1): the default CA cannot certify the serving certificate');
    const named = join(dir, 'constrained-named.yaml');
    const policy = ['policy:', '  rules:', '    - name: svc', '      match: { namespaces: [web] }', '      extraSans: { dns: ["{serviceAccount}.{namespace}.svc.example.com"], ip: ["10.1.0.0/16"] }', '    - name: wide', '      extraSans: { dns: ["{namespace}.example.org"], ip: ["10.0.0.0/7"] }', ''].join('\n');
    writeFileSync(named, base.replace('  shutdownGrace: 10s\n', '  shutdownGrace: 10s\n  tls: { dnsNames: [meshcert.svc.example.com], ipAddresses: [10.0.0.7] }\n') + policy);
    const r = await runCli(['config', 'check', named]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr.trim().split('\n')).toEqual([
      'meshcert: warning: policy rule "wide" allows names its CA "default" cannot certify: "CN=constrained intermediate" has name constraints that exclude DNS name ns.example.org (permitted only: ".svc.example.com"); "CN=constrained intermediate" has name constraints that exclude IP range 10.0.0.0/7 (permitted only: "10.0.0.0/8"); requests for them are refused',
    ]);
    // istiod's names (istiod.istio-system.svc, …) are not under .svc.example.com either.
    const istiod = join(dir, 'constrained-istiod.yaml');
    writeFileSync(istiod, readFileSync(named, 'utf8') + 'istio:\n  istiodTls: { enabled: true }\n');
    const ri = await runCli(['config', 'check', istiod]);
    expect(ri.code).toBe(1);
    expect(ri.stderr).toContain(
      '\n  - istio.istiodTls: the default CA cannot certify istiod\'s names (from istio.istiodTls.namespace "istio-system", revisions and extraDnsNames), so no istiod-tls Secret could be issued: "CN=constrained intermediate" has name constraints that exclude DNS name istio-pilot.istio-system.svc (permitted only: ".svc.example.com"); "CN=constrained intermediate" has name constraints that exclude DNS name istiod (permitted only: ".svc.example.com");',
    );
    expect(ri.stderr).not.toContain('server.tls.dnsNames');
  });

  it('config check reads the files serve would (CA directories with their self-test, serving certificate, jwksFile), listing every problem; --no-files skips them', async () => {
    const ok = await runCli(['config', 'check', configFile]);
    expect(ok.stdout).toContain(`  CA ${join(dir, 'ca')}: loads and signs a chain that verifies`);
    const broken = join(dir, 'broken-files.yaml');
    writeFileSync(
      broken,
      readFileSync(configFile, 'utf8')
        .replace('dir: ca', 'dir: empty-ca')
        .replace('jwksFile: jwks.json', 'jwksFile: missing-jwks.json')
        .replace('  shutdownGrace: 10s\n', '  shutdownGrace: 10s\n  tls: { certFile: missing.crt, keyFile: missing.key }\n') + `issuers:\n  - { name: other, dir: ${join(dir, 'nowhere')} }\n`,
    );
    const r = await runCli(['config', 'check', broken]);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    const lines = r.stderr.trim().split('\n');
    expect(lines[0]).toBe(`meshcert: ${broken} cannot be served with the files it names:`);
    expect(lines.slice(1)).toEqual([
      expect.stringMatching(new RegExp(`^ {2}- ca\\.dir: CA directory ${join(dir, 'empty-ca')} is empty: run "meshcert ca init`)),
      expect.stringMatching(/^ {2}- issuer "other" \(.*nowhere\): /),
      '  - cannot read the serving certificate or key (server.tls.certFile/keyFile): ENOENT',
      expect.stringMatching(/^ {2}- auth\.clusters\.0\.jwt\.0: jwksFile .*missing-jwks\.json: cannot read JSON: ENOENT/),
    ]);
    expect(r.stderr).not.toMatch(/\bat .*\.(ts|js):\d+/);
    expect(existsSync(join(dir, 'empty-ca', 'ca-cert.pem')), 'check creates no CA').toBe(false);
    // Where the files are not at hand (a CI job before deploying): the schema and servability only.
    const skipped = await runCli(['config', 'check', '--no-files', broken]);
    expect(skipped.code, skipped.stderr).toBe(0);
    expect(skipped.stdout).toContain('  files not read (--no-files)');
    // With ca.autoInit, an empty CA directory is what serve fills at its first start.
    const autoInit = join(dir, 'auto-init.yaml');
    writeFileSync(autoInit, readFileSync(configFile, 'utf8').replace('  dir: ca\n', '  dir: fresh-ca\n  autoInit: true\n'));
    const ai = await runCli(['config', 'check', autoInit]);
    expect(ai.code, ai.stderr).toBe(0);
    expect(ai.stdout).toContain(`  CA directory ${join(dir, 'fresh-ca')} is empty: serve creates a CA there when it starts (ca.autoInit; a hot reload does not, and refuses the file)`);
    expect(existsSync(join(dir, 'fresh-ca', 'ca-cert.pem')), 'check creates no CA').toBe(false);
    // A creation serve was killed in the middle of: serve clears and creates it again; check says so and touches nothing.
    mkdirSync(join(dir, 'fresh-ca'), { recursive: true });
    writeFileSync(join(dir, 'fresh-ca', '.meshcert-creating'), 'interrupted\n');
    writeFileSync(join(dir, 'fresh-ca', 'root-cert.pem'), readFileSync(join(dir, 'ca', 'root-cert.pem')));
    ageCreationMarker(join(dir, 'fresh-ca'));
    const interrupted = await runCli(['config', 'check', autoInit]);
    expect(interrupted.code, interrupted.stderr).toBe(0);
    expect(interrupted.stdout).toContain(`  CA directory ${join(dir, 'fresh-ca')} holds a CA creation that was interrupted: serve clears it and creates the CA again (ca.autoInit)`);
    expect(existsSync(join(dir, 'fresh-ca', '.meshcert-creating'))).toBe(true);
  });

  it("config check reads the Kubernetes credentials serve reads, and says a config for the pod's own API server needs a pod", async () => {
    const base = readFileSync(configFile, 'utf8');
    const withKube = join(dir, 'kube-files.yaml');
    writeFileSync(
      withKube,
      base +
        [
          '    - name: remote',
          '      tokenReview: { apiServer: "https://127.0.0.1:6443", caFile: no-such-ca.crt, tokenFile: no-such-token }',
          'ambient: { enabled: true }',
          'kubernetes: { server: "https://127.0.0.1:6443", caFile: no-such-kube-ca.crt, tokenFile: no-such-kube-token }',
          '',
        ].join('\n'),
    );
    const r = await runCli(['config', 'check', withKube], { env: { KUBERNETES_SERVICE_HOST: '' } });
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n').slice(1)).toEqual([
      `  - kubernetes.caFile ${join(dir, 'no-such-kube-ca.crt')}: ENOENT`,
      `  - auth.clusters.1.tokenReview.caFile ${join(dir, 'no-such-ca.crt')}: ENOENT`,
    ]);
    // The kubernetes section is built as serve builds it: its token file must be there at start.
    const ca = join(dir, 'ca', 'root-cert.pem');
    writeFileSync(withKube, readFileSync(withKube, 'utf8').replaceAll('no-such-kube-ca.crt', ca).replaceAll('no-such-ca.crt', ca));
    const t = await runCli(['config', 'check', withKube], { env: { KUBERNETES_SERVICE_HOST: '' } });
    expect(t.code).toBe(1);
    expect(t.stderr.trim().split('\n').slice(1)).toEqual([`  - kubernetes: Kubernetes API token file ${join(dir, 'no-such-kube-token')} does not exist`]);
    // TokenReview reads its token file again every minute: serve starts, so a warning.
    writeFileSync(join(dir, 'kube-token'), 'token\n');
    writeFileSync(withKube, readFileSync(withKube, 'utf8').replaceAll('no-such-kube-token', 'kube-token'));
    const w = await runCli(['config', 'check', withKube], { env: { KUBERNETES_SERVICE_HOST: '' } });
    expect(w.code, w.stderr).toBe(0);
    expect(w.stderr.trim().split('\n')).toEqual([
      `meshcert: warning: auth.clusters.1.tokenReview.tokenFile ${join(dir, 'no-such-token')}: ENOENT: serve starts, but every review fails until it can be read`,
    ]);
    // A CA file that holds no certificate: serve refuses it (Node's TLS would trust nothing, silently).
    writeFileSync(join(dir, 'empty-ca.crt'), '');
    writeFileSync(withKube, readFileSync(withKube, 'utf8').replace(`caFile: ${ca}, tokenFile: no-such-token`, 'caFile: empty-ca.crt, tokenFile: kube-token'));
    const e = await runCli(['config', 'check', withKube], { env: { KUBERNETES_SERVICE_HOST: '' } });
    expect(e.code).toBe(1);
    expect(e.stderr.trim().split('\n').slice(1)).toEqual([`  - auth.clusters.1.tokenReview.caFile ${join(dir, 'empty-ca.crt')}: holds no PEM certificate`]);
    // The pod's own API server (tokenReview {} here) is there only in a pod.
    const inCluster = join(dir, 'in-cluster.yaml');
    writeFileSync(inCluster, `${base}    - name: remote\n      tokenReview: {}\n`);
    const ic = await runCli(['config', 'check', inCluster], { env: { KUBERNETES_SERVICE_HOST: '' } });
    expect(ic.code).toBe(1);
    expect(ic.stderr).toContain('  - auth.clusters.1.tokenReview uses the API server of the pod serve runs in, and KUBERNETES_SERVICE_HOST is not set: serve runs with this file only in a Kubernetes pod (check it there, or with --no-files elsewhere)');
    expect((await runCli(['config', 'check', '--no-files', inCluster], { env: { KUBERNETES_SERVICE_HOST: '' } })).code).toBe(0);
  });

  it('serve refuses to start on an empty CA directory without autoInit, saying what to do', async () => {
    const cfg = join(dir, 'empty-ca.yaml');
    writeFileSync(cfg, readFileSync(configFile, 'utf8').replace('dir: ca', 'dir: empty-ca'));
    const r = await runCli(['serve', '--config', cfg]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/meshcert ca init/);
  });

  it('a reader that stops early (| head) ends a command quietly (status 141, as on SIGPIPE), without a stack trace', async () => {
    const caDir = join(dir, 'ca');
    for (let i = 0; i < 3; i++) {
      const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'ca', 'rotate', 'status', '--dir', caDir], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
      // The read end closed before the command writes: its first line meets a closed pipe.
      child.stdout.destroy();
      let stderr = '';
      child.stderr.on('data', (d) => (stderr += d));
      const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
      expect(stderr).toBe('');
      // As a Unix tool killed by SIGPIPE: its output was cut, so it claims no success.
      expect(code).toBe(141);
    }
  });

  it('unknown commands and flags are usage errors (exit 2)', async () => {
    expect((await runCli(['frobnicate'])).code).toBe(2);
    expect((await runCli(['request', '--bogus'])).code).toBe(2);
    // Nothing listening: a refusal (exit 1) saying so, without grpc-js's resolver notes; the --out
    // directory it made for the files is taken back (nothing was written).
    const root = await requestRoot();
    const outDir = join(dir, 'out-refused', 'deeper');
    const closed = await runCli(['request', '--ns', 'a', '--sa', 'b', '--ca-root', root, '--token', 't', '--out', outDir, '--address', `127.0.0.1:${await freePort()}`]);
    expect(closed.code).toBe(1);
    expect(closed.stderr).toMatch(/^refused: UNAVAILABLE: .*ECONNREFUSED/);
    expect(closed.stderr).not.toMatch(/Resolution note/);
    expect(existsSync(join(dir, 'out-refused'))).toBe(false);
    // A --ca-root that holds no certificate is said so (exit 2), not left to fail the TLS handshake.
    const notRoot = await runCli(['request', '--ns', 'a', '--sa', 'b', '--ca-root', configFile, '--token', 't', '--address', `127.0.0.1:${await freePort()}`]);
    expect(notRoot.code, notRoot.stderr).toBe(2);
    expect(notRoot.stderr.trim()).toBe(`meshcert: the root certificate file ${configFile} holds no PEM certificate: pass --ca-root the CA's root-cert.pem`);
    for (const [address, why] of [['127.0.0.1:99999', '"127.0.0.1:99999": port must be 1-65535'], ['localhost', '"localhost" is not host:port (use [addr]:port for IPv6)']]) {
      const bad = await runCli(['request', '--ns', 'a', '--sa', 'b', '--address', address!]);
      expect(bad.code, bad.stderr).toBe(2);
      expect(bad.stderr.trim()).toBe(`meshcert: --address: ${why}`);
    }
    const noToken = await runCli(['request', '--ns', 'a', '--sa', 'b', '--ca-root', root, '--token-file', join(dir, 'missing-token')]);
    expect(noToken.code).toBe(2);
    expect(noToken.stderr).toContain(`cannot read the token file ${join(dir, 'missing-token')}: ENOENT`);
    // No token given and no dev issuer to mint one: what to pass, not an "unexpected error".
    const devless = await runCli(['request', '--ns', 'a', '--sa', 'b', '--ca-root', root, '--data-dir', join(dir, 'no-dev-issuer')]);
    expect(devless.code).toBe(2);
    expect(devless.stderr.trim()).toMatch(/^meshcert: no token: pass --token or --token-file \(no dev token issuer under .* to mint one: "meshcert serve --dev" creates it\)$/);
    // An empty token (a `kubectl create token` that failed into the file) is said here, not sent
    // as no credential for the server to refuse.
    const emptyFile = join(dir, 'empty-token');
    writeFileSync(emptyFile, '\n');
    const empty = await runCli(['request', '--ns', 'a', '--sa', 'b', '--ca-root', root, '--token-file', emptyFile, '--address', `127.0.0.1:${await freePort()}`]);
    expect(empty.code, empty.stderr).toBe(2);
    expect(empty.stderr.trim()).toBe(`meshcert: the token file ${emptyFile} is empty (did the command that writes it fail?)`);
    const emptyFlag = await runCli(['request', '--ns', 'a', '--sa', 'b', '--ca-root', root, '--token', '', '--address', `127.0.0.1:${await freePort()}`]);
    expect(emptyFlag.code, emptyFlag.stderr).toBe(2);
    expect(emptyFlag.stderr.trim()).toBe('meshcert: --token is empty');
    // The dev issuer's key there but unusable: named, with what is wrong (exit 1), not an "unexpected error".
    const brokenDev = join(dir, 'broken-dev');
    mkdirSync(join(brokenDev, 'dev'), { recursive: true });
    const keyFile = join(brokenDev, 'dev', 'token-signing-key.pem');
    for (const [make, why] of [
      [() => writeFileSync(keyFile, 'junk\n'), 'not a PEM private key'],
      [() => (rmSync(keyFile), mkdirSync(keyFile)), 'not a regular file (a directory)'],
    ] as const) {
      make();
      const broken = await runCli(['request', '--ns', 'a', '--sa', 'b', '--ca-root', root, '--data-dir', brokenDev, '--address', `127.0.0.1:${await freePort()}`]);
      expect(broken.code, broken.stderr).toBe(1);
      expect(broken.stderr.trim()).toBe(`meshcert: the dev token issuer's signing key ${keyFile} cannot be used: ${why} (remove ${join(brokenDev, 'dev')} and start "meshcert serve --dev" again to make a new one)`);
    }
  }, 120_000);

  it('refuses a device, a named pipe or an oversized file where a file is named (and a file where a directory is), at once, with what it is', async () => {
    const fifoDir = join(dir, 'fifo-ca');
    await initCaDir({ dir: fifoDir });
    rmSync(join(fifoDir, 'ca-key.pem'));
    execFileSync('mkfifo', [join(fifoDir, 'ca-key.pem')]);
    const big = join(dir, 'big.yaml');
    writeFileSync(big, `# ${'x'.repeat(5 * 1024 * 1024)}\n`);
    const root = await requestRoot();
    const cases: Array<[string[], number, string]> = [
      // Read as a stream (a command line's <(...) is a pipe), within the bound.
      [['config', 'check', '/dev/zero'], 1, 'cannot read config file /dev/zero: larger than 4194304 bytes'],
      [['config', 'check', big], 1, `cannot read config file ${big}: larger than 4194304 bytes`],
      [['ca', 'check', '--dir', fifoDir], 1, `cannot read ca-key.pem: not a regular file (a named pipe)`],
      [['request', '--ns', 'a', '--sa', 'b', '--ca-root', root, '--token-file', '/dev/zero'], 2, 'cannot read the token file /dev/zero: larger than 65536 bytes'],
      [['request', '--ns', 'a', '--sa', 'b', '--ca-root', '/dev/zero', '--token', 't'], 2, 'cannot read the root certificate /dev/zero (larger than 1048576 bytes)'],
      [['request', '--ns', 'a', '--sa', 'b', '--ca-root', root, '--token-file', dir], 2, `cannot read the token file ${dir}: not a regular file (a directory)`],
    ];
    // A file where a directory is wanted.
    cases.push([['ca', 'init', '--dir', big], 1, `${big} exists and is not a directory: give the CA a directory of its own`]);
    cases.push([['request', '--ns', 'a', '--sa', 'b', '--ca-root', root, '--out', big, '--token', 't'], 2, `--out ${big} exists and is not a directory`]);
    cases.push([['request', '--ns', 'a', '--sa', 'b', '--ca-root', root, '--out', join(big, 'under'), '--token', 't'], 2, `--out ${join(big, 'under')}: cannot create the directory: ENOTDIR`]);
    // A CA's directory: the workload's cert-chain.pem and root-cert.pem would replace the CA's (serve would no longer load it).
    cases.push([['request', '--ns', 'a', '--sa', 'b', '--ca-root', root, '--out', fifoDir, '--token', 't'], 2, `--out ${fifoDir} holds a CA's files (ca-key.pem): the workload's cert-chain.pem and root-cert.pem would replace the CA's; give a directory of its own`]);
    // A directory with no CA: nothing to rotate, and said as a failure (as ca check says it).
    cases.push([['ca', 'rotate', 'status', '--dir', join(dir, 'nowhere-to-rotate')], 1, 'step: idle: no rotation in progress, and no CA that loads here']);
    // A path through a file: what is wrong with it, not an "unexpected error".
    cases.push([['ca', 'init', '--dir', join(big, 'sub')], 1, `meshcert: cannot mkdir ${join(big, 'sub')}: a part of the path is a file, not a directory (ENOTDIR)`]);
    // What no gRPC header carries is refused before dialling, without repeating the token.
    const oddToken = join(dir, 'odd-token');
    writeFileSync(oddToken, 'eyJsecret\u0007part\n');
    cases.push([['request', '--ns', 'a', '--sa', 'b', '--ca-root', root, '--token-file', oddToken], 2, `the token in ${oddToken} holds a character a gRPC header cannot carry (only printable ASCII): is it a bare JWT?`]);
    cases.push([['request', '--ns', 'a', '--sa', 'b', '--ca-root', root, '--token', 't', '--cluster', 'clüster'], 2, '--cluster must be printable ASCII']);
    // A bad option value is the command line's mistake (2), said before anything is read.
    cases.push([['ca', 'check', '--dir', join(dir, 'no-ca-here'), '--trust-domain', 'Bad'], 2, '--trust-domain "Bad": SPIFFE trust domain may hold only lowercase letters']);
    cases.push([['ca', 'import-istiod', '--from', join(dir, 'no-source'), '--dir', join(dir, 'no-import'), '--trust-domain', 'a..b'], 2, '--trust-domain "a..b": SPIFFE trust domain must not start or end with "."']);
    cases.push([['ca', 'init', '--dir', join(dir, 'long-org'), '--org', 'o'.repeat(65)], 2, '--org: the organization name must be at most 64 characters']);
    cases.push([['ca', 'rotate', 'start', '--dir', join(dir, 'long-org'), '--org', 'o'.repeat(65)], 2, '--org: the organization name must be at most 64 characters']);
    cases.push([['discover', '--files', root, '--endpoint-timeout', '5s'], 2, '--endpoint-timeout goes with --endpoints']);
    for (const [args, code, message] of cases) {
      const r = await runCli(args, { timeoutMs: 60_000 });
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(code);
      expect(r.stderr + r.stdout).toContain(message);
      expect(r.stderr + r.stdout).not.toContain('eyJsecret');
    }
    expect(existsSync(join(dir, 'long-org'))).toBe(false);
    // A bare `meshcert` is a usage error: the usage on stderr, nothing on stdout.
    const bare = await runCli([]);
    expect([bare.code, bare.stdout]).toEqual([2, '']);
    expect(bare.stderr).toContain('meshcert request');
  }, 120_000);

  it('each command answers --help with its own usage (exit 0), as does "help COMMAND"', async () => {
    for (const [cmd, first] of [['serve', 'meshcert serve --config FILE'], ['request', 'meshcert request --ns'], ['discover', 'meshcert discover'], ['certs', 'meshcert certs list'], ['ca', 'meshcert ca init'], ['policy', 'meshcert policy explain']]) {
      const r = await runCli([cmd!, '--help']);
      expect(r.code, `${cmd} --help: ${r.stderr}`).toBe(0);
      expect(r.stdout.startsWith(first!), r.stdout).toBe(true);
    }
    const h = await runCli(['help', 'request']);
    expect(h.code).toBe(0);
    expect(h.stdout).toMatch(/^meshcert request --ns/);
    expect(h.stdout).not.toContain('meshcert serve');
    for (const name of ['bogus', 'constructor', '__proto__']) {
      const bogus = await runCli(['help', name]);
      expect([bogus.code, bogus.stdout, bogus.stderr.trim()]).toEqual([2, '', `meshcert: unknown command "${name}"; run "meshcert help"`]);
      const run = await runCli([name]);
      expect([run.code, run.stderr.trim()]).toEqual([2, `meshcert: unknown command "${name}"; run "meshcert help"`]);
    }
    const general = await runCli(['help', '--help']);
    expect(general.code).toBe(0);
    expect(general.stdout).toContain('meshcert serve');
  }, 120_000);

  it('serve answers gRPC health and request gets a verified chain written to --out', async () => {
    server = await startServe(['--config', configFile]);
    const Health = loadProtos().health;
    const root = readFileSync(join(dir, 'ca/root-cert.pem'));
    const health = new Health(`127.0.0.1:${server.port}`, credentials.createSsl(root)) as unknown as {
      Check(req: object, cb: (e: Error | null, r: { status: string }) => void): void;
      close(): void;
    };
    const st = await new Promise<string>((res, rej) => health.Check({ service: 'istio.v1.auth.IstioCertificateService' }, (e, r) => (e ? rej(e) : res(r.status))));
    health.close();
    expect(st).toBe('SERVING');

    const out = join(dir, 'out', 'certs');
    const r = await runCli([
      'request', '--ns', 'default', '--sa', 'default', '--key', 'ec256', '--json',
      '--address', `127.0.0.1:${server.port}`, '--ca-root', join(dir, 'ca/root-cert.pem'),
      '--token', await mintToken(), '--out', out,
    ]);
    expect(r.code, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j).toMatchObject({ spiffeId: 'spiffe://cluster.local/ns/default/sa/default', chainVerified: true, chainElements: 3 });
    expect(statSync(join(out, 'key.pem')).mode & 0o777).toBe(0o600);
    // The directories it made for the key (the missing parent too) are private, whatever the umask.
    for (const d of [out, join(dir, 'out')]) expect(statSync(d).mode & 0o777).toBe(0o700);
    const verified = openssl(['verify', '-CAfile', 'root.pem', '-untrusted', 'chain.pem', 'chain.pem'], {
      'root.pem': readFileSync(join(out, 'root-cert.pem'), 'utf8'),
      'chain.pem': readFileSync(join(out, 'cert-chain.pem'), 'utf8'),
    });
    expect(verified).toMatch(/OK/);
    // The serial as the inventory stores it (and looks it up): OpenSSL's form without the leading zero digit.
    const printed = /serial=([0-9A-F]+)/.exec(openssl(['x509', '-noout', '-serial', '-in', 'chain.pem'], { 'chain.pem': readFileSync(join(out, 'cert-chain.pem'), 'utf8') }))![1]!;
    expect(printed).toMatch(/^01/);
    expect(j.serial).toBe(printed.toLowerCase().replace(/^0+/, ''));
  }, 120_000);

  it('request writes the key before the certificates, and says so (exit 1) when --out takes no key', async () => {
    const out = join(dir, 'out-keyless');
    // key.pem cannot be written (a directory holds its name): nothing else is written either.
    mkdirSync(join(out, 'key.pem'), { recursive: true });
    const args = ['request', '--ns', 'default', '--sa', 'default', '--key', 'ec256', '--address', `127.0.0.1:${server.port}`, '--ca-root', join(dir, 'ca/root-cert.pem'), '--out', out];
    const r = await runCli([...args, '--token', await mintToken()]);
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr.trim()).toMatch(new RegExp(`^meshcert: certificate [0-9a-f]+ was issued, but writing it to ${out} failed \\(EISDIR\\): the files there do not make a pair; request again once the directory takes them$`));
    expect(readdirSync(out)).toEqual(['key.pem']);
    const j = await runCli([...args, '--token', await mintToken(), '--json']);
    expect(j.code).toBe(1);
    expect(JSON.parse(j.stdout)).toEqual({ unwritten: { details: expect.stringMatching(/^certificate [0-9a-f]+ was issued, but writing it to /) } });
  }, 120_000);

  it('request reports a refusal with its gRPC code and exit code 1', async () => {
    const r = await runCli([
      'request', '--ns', 'kube-system', '--sa', 'admin', '--address', `127.0.0.1:${server.port}`,
      '--ca-root', join(dir, 'ca/root-cert.pem'), '--token', await mintToken({ ns: 'default', sa: 'default' }),
    ]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/refused: PERMISSION_DENIED/);
    // With --json, the refusal is JSON on stdout too.
    const j = await runCli([
      'request', '--ns', 'kube-system', '--sa', 'admin', '--json', '--address', `127.0.0.1:${server.port}`,
      '--ca-root', join(dir, 'ca/root-cert.pem'), '--token', await mintToken({ ns: 'default', sa: 'default' }),
    ]);
    expect(j.code).toBe(1);
    expect(JSON.parse(j.stdout)).toMatchObject({ refused: { code: 'PERMISSION_DENIED', details: expect.stringContaining('kube-system') } });
  });

  it('request refuses a chain that does not verify against --ca-root (exit 1, "unverified"), and writes no key', async () => {
    // TLS from the operator's serving certificate under another CA, leaves from this one: the
    // connection verifies against that CA's root, the issued chain does not.
    const tlsCa = join(dir, 'tls-ca');
    await initCaDir({ dir: tlsCa });
    const serving = await localServingCertIssuer(() => new LocalIssuer('default', loadCaDir(tlsCa)))(['localhost'], 86_400);
    mkdirSync(join(dir, 'tls-files'));
    writeFileSync(join(dir, 'tls-files/crt.pem'), serving.certChainPem);
    writeFileSync(join(dir, 'tls-files/key.pem'), serving.keyPem, { mode: 0o600 });
    const running = await startMeshcert(
      parseConfig(
        {
          dataDir: join(dir, 'unverified-data'),
          trustDomain: TRUST_DOMAIN,
          server: { listen: '127.0.0.1:0', shutdownGrace: '5s', tls: { certFile: join(dir, 'tls-files/crt.pem'), keyFile: join(dir, 'tls-files/key.pem') } },
          admin: { listen: '127.0.0.1:0' },
          ca: { dir: join(dir, 'unverified-ca'), autoInit: true },
          auth: { clusters: [{ name: 'Kubernetes', jwt: [{ issuer: TEST_ISSUER, jwksFile: join(dir, 'jwks.json') }] }] },
        },
        {},
        'test',
        dir,
      ),
      { logger: createLogger('silent') },
    );
    try {
      const args = ['request', '--ns', 'default', '--sa', 'default', '--address', `127.0.0.1:${running.port}`, '--server-name', 'localhost', '--ca-root', join(tlsCa, 'root-cert.pem')];
      const out = join(dir, 'unverified-out');
      const r = await runCli([...args, '--token', await mintToken(), '--out', out]);
      expect(r.code, r.stderr).toBe(1);
      expect(r.stderr.trim()).toBe(`meshcert: a certificate was issued, but its chain does not verify against --ca-root ${join(tlsCa, 'root-cert.pem')}: the root bundle in the response holds none of the trusted roots`);
      expect(r.stdout).toBe('');
      // --out was made for this call and is taken back empty: no key for a chain not trusted here.
      expect(existsSync(out)).toBe(false);
      const j = await runCli([...args, '--token', await mintToken(), '--json']);
      expect(j.code).toBe(1);
      expect(JSON.parse(j.stdout)).toEqual({ unverified: { details: expect.stringMatching(/^a certificate was issued, but its chain does not verify against --ca-root /) } });
      // A --ca-root that does not sign the server's TLS certificate: the handshake refused, not the CA.
      const wrongRoot = join(dir, 'unverified-ca', 'root-cert.pem');
      const tls = await runCli(['request', '--ns', 'default', '--sa', 'default', '--address', `127.0.0.1:${running.port}`, '--server-name', 'localhost', '--ca-root', wrongRoot, '--token', await mintToken()]);
      expect(tls.code, tls.stderr).toBe(1);
      expect(tls.stderr.trim()).toBe(`meshcert: the server's TLS certificate was not accepted (unable to get local issuer certificate.): it does not chain to --ca-root ${wrongRoot}, or does not name 127.0.0.1:${running.port} (see --server-name); nothing was asked of the CA`);
      expect(tls.stderr).not.toContain('refused');
    } finally {
      await running.close();
    }
  });

  it('SIGTERM drains in-flight calls and exits 0', async () => {
    const client = new CaClient({ address: `127.0.0.1:${server.port}`, rootPem: readFileSync(join(dir, 'ca/root-cert.pem'), 'utf8') });
    const token = await mintToken();
    const csr = await makeCsr();
    await client.createCertificate({ csrPem: csr.pem, token }); // connection up
    const inflight = Array.from({ length: 300 }, () => client.createCertificate({ csrPem: csr.pem, token }).then(() => 'ok', (e: { code: number }) => `err ${e.code}`));
    await Promise.race(inflight); // the server is busy with the rest now
    server.child.kill('SIGTERM');
    const results = await Promise.all(inflight);
    const code = await server.exited;
    client.close();
    expect(code).toBe(0);
    // Calls that reached the server before SIGTERM finished; none failed with an internal error.
    expect(results.filter((r) => r === 'ok').length).toBeGreaterThan(0);
    expect(results.filter((r) => r.startsWith('err') && r !== 'err 14')).toEqual([]);
    expect(server.output()).toMatch(/"msg":"stopped"/);
  });
});
