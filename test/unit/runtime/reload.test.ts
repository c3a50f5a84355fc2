import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { loadConfigFile } from '../../../src/config/load.js';
import { reloadedConfig, restartOnlyChanges } from '../../../src/config/restart-only.js';
import type { MeshcertConfig } from '../../../src/config/schema.js';
import { createLogger } from '../../../src/log/logger.js';
import { ReloadMetrics } from '../../../src/metrics/ca-metrics.js';
import { Reloader } from '../../../src/runtime/reload.js';
import { captureLogs } from '../../support/log-capture.js';

const dir = mkdtempSync(join(tmpdir(), 'meshcert-reload-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// A config `serve` accepts (authentication configured): a reload refuses one it would not.
const BASE = `dataDir: ${dir}/data\nca:\n  dir: ${dir}/ca\ndev:\n  tokenIssuer: true\n`;
function configFile(name: string, extra: string): string {
  const path = join(dir, name);
  writeFileSync(path, BASE + extra);
  return path;
}

/** A Reloader of the config file `name` (BASE + `extra`) whose apply puts each config in force and keeps it in `applied`. */
function applyingReloader(name: string, extra: string, pollIntervalMs: number): { file: string; reloader: Reloader; applied: MeshcertConfig[] } {
  const file = configFile(name, extra);
  let current: MeshcertConfig = loadConfigFile(file).config;
  const applied: MeshcertConfig[] = [];
  const reloader = new Reloader({ configFile: file, current: () => current, apply: async (next) => void applied.push((current = next)), logger: createLogger('silent'), pollIntervalMs });
  return { file, reloader, applied };
}

describe('restartOnlyChanges', () => {
  const start = loadConfigFile(configFile('a.yaml', '')).config;
  it.each<[string, string, string[]]>([
    ['nothing for the same config', '', []],
    ['nothing for what a reload applies: the policy, lifetimes, issuers, the monitor', 'policy:\n  rules:\n    - name: r\n      match: { namespaces: [a] }\n      deny: not here\nissuance:\n  defaultTtl: 12h\nmonitoring:\n  interval: 30s\nissuers:\n  - name: b\n    dir: /tmp/b\n', []],
    ['nothing for revoked client certificates, which a reload applies', 'auth:\n  revokedClientCertificates:\n    - issuedBefore: 2026-11-29T22:00:00Z\n', []],
    ['nothing for the rest of authentication while the clusters served stay the same', 'auth:\n  clientCertificates: false\n  clockSkew: 1m\n  revokedClientCertificates:\n    - issuedBefore: 2026-11-29T22:00:00Z\n', []],
    ['nothing for the trusted node accounts', 'ambient:\n  trustedNodeAccounts: [kube-system/ztunnel]\n', []],
    ['ambient mode turned on', 'ambient:\n  enabled: true\n', ['ambient']],
    ['authentication whose clusters served change (a cluster added)', 'auth:\n  clusters:\n    - name: east\n      jwt: [{ issuer: "https://east", jwksFile: /tmp/x.json }]\n', ['auth']],
    ["authentication whose cluster's trust domain changes", 'auth:\n  clusters:\n    - name: Kubernetes\n      trustDomain: east.local\n      jwt: [{ issuer: "https://east", jwksFile: /tmp/x.json }]\n', ['auth']],
    ['the server section', 'server:\n  maxConnections: 10\n', ['server']],
    ['authentication and the inventory', 'auth:\n  defaultCluster: other\ninventory:\n  store: none\n', ['auth', 'inventory']],
    ['the backdate, which the Authority takes at start', 'issuance:\n  backdate: 5m\n', ['issuance.backdate']],
    ['the trust domain', 'trustDomain: example.org\n', ['trustDomain']],
  ])('reports %s', (_name, extra, expected) => {
    expect(restartOnlyChanges(start, loadConfigFile(configFile('b.yaml', extra)).config)).toEqual(expected);
  });
});

describe('restartOnlyChanges, the clusters served', () => {
  const file = (name: string, text: string): MeshcertConfig => {
    const path = join(dir, name);
    writeFileSync(path, `dataDir: ${dir}/data\nca:\n  dir: ${dir}/ca\n${text}`);
    return loadConfigFile(path).config;
  };
  const jwt = (name: string, extra = ''): string => `    - name: ${name}\n${extra}      jwt: [{ issuer: "https://${name}.test", jwksFile: /tmp/k.json }]\n`;
  it('counts a cluster that takes the top-level trust domain, which a reload does not change, as changed when the file moves that trust domain', () => {
    const start = file('td1.yaml', `trustDomain: a.local\nauth:\n  clusters:\n${jwt('k', '      trustDomain: b.local\n')}`);
    const next = file('td2.yaml', `trustDomain: b.local\nauth:\n  clusters:\n${jwt('k')}`);
    expect(restartOnlyChanges(start, next)).toEqual(['auth', 'trustDomain']);
    expect(reloadedConfig(start, next).auth.clusters[0]!.trustDomain).toBe('b.local');
  });
  it('counts the development issuer turned on as a cluster added when it adds the default cluster', () => {
    const start = file('dev1.yaml', `auth:\n  clusters:\n${jwt('east')}`);
    expect(restartOnlyChanges(start, file('dev2.yaml', `auth:\n  clusters:\n${jwt('east')}dev:\n  tokenIssuer: true\n`))).toEqual(['dev']);
    // Where the default cluster is configured already, it is applied.
    const k8s = file('dev3.yaml', `auth:\n  clusters:\n${jwt('Kubernetes')}`);
    expect(restartOnlyChanges(k8s, file('dev4.yaml', `auth:\n  clusters:\n${jwt('Kubernetes')}dev:\n  tokenIssuer: true\n`))).toEqual([]);
  });
  it('counts another default cluster among the same clusters as changed', () => {
    const start = file('dc1.yaml', `auth:\n  defaultCluster: a\n  clusters:\n${jwt('a')}${jwt('b')}`);
    expect(restartOnlyChanges(start, file('dc2.yaml', `auth:\n  defaultCluster: b\n  clusters:\n${jwt('a')}${jwt('b')}`))).toEqual(['auth']);
  });
});

describe('reloadedConfig', () => {
  it("takes the new CAs, policy, lifetimes and monitoring, and everything else as started", () => {
    const start = loadConfigFile(configFile('s.yaml', '')).config;
    const next = loadConfigFile(configFile('n.yaml', 'server:\n  maxConnections: 10\nissuance:\n  defaultTtl: 12h\n  backdate: 9m\nmonitoring:\n  interval: 30s\nissuers:\n  - name: b\n    dir: /tmp/b\n')).config;
    const c = reloadedConfig(start, next);
    expect(c.server).toEqual(start.server);
    expect(c.issuance).toEqual({ ...next.issuance, backdate: start.issuance.backdate });
    expect(c.policy).toEqual(next.policy);
    expect(c.monitoring).toEqual(next.monitoring);
    expect(c.issuers).toEqual(next.issuers);
    expect(restartOnlyChanges(start, next)).toEqual(['issuance.backdate', 'server']);
  });

  it('takes the new authentication, development issuer and trusted node accounts while the clusters served stay the same', () => {
    const start = loadConfigFile(configFile('s2.yaml', 'auth:\n  clusters:\n    - name: Kubernetes\n      jwt: [{ issuer: "https://a", jwksFile: /tmp/a.json }]\n')).config;
    const next = loadConfigFile(configFile('n2.yaml', 'auth:\n  clientCertificates: false\n  clusters:\n    - name: Kubernetes\n      jwt: [{ issuer: "https://b", jwksFile: /tmp/b.json }]\n  revokedClientCertificates:\n    - issuedBefore: 2026-11-29T22:00:00+01:00\n      namespaces: [vm-*]\nambient:\n  trustedNodeAccounts: [kube-system/ztunnel]\n')).config;
    const c = reloadedConfig(start, next);
    expect(c.auth).toEqual(next.auth);
    expect(c.dev).toEqual(next.dev);
    expect(c.ambient).toEqual(next.ambient);
    expect(restartOnlyChanges(start, next)).toEqual([]);
  });

  it("keeps the authentication in force, not the start's, when the clusters served change (an issuer removed earlier stays removed), and takes the revocations", () => {
    const cluster = (name: string, issuer: string): string => `    - name: ${name}\n      jwt: [{ issuer: "${issuer}", jwksFile: /tmp/k.json }]\n`;
    const start = loadConfigFile(configFile('s3.yaml', `auth:\n  clusters:\n${cluster('Kubernetes', 'https://old')}`)).config;
    const first = loadConfigFile(configFile('n3.yaml', `auth:\n  clusters:\n${cluster('Kubernetes', 'https://new')}`)).config;
    const inForce = reloadedConfig(start, first);
    expect(inForce.auth.clusters[0]!.jwt[0]!.issuer).toBe('https://new');
    const second = loadConfigFile(configFile('n4.yaml', `auth:\n  revokedClientCertificates:\n    - issuedBefore: 2026-11-29T22:00:00Z\n  clusters:\n${cluster('Kubernetes', 'https://new')}${cluster('east', 'https://east')}ambient:\n  enabled: true\n  trustedNodeAccounts: [kube-system/ztunnel]\n`)).config;
    const c = reloadedConfig(start, second, inForce);
    expect(c.auth).toEqual({ ...inForce.auth, revokedClientCertificates: second.auth.revokedClientCertificates });
    expect(c.ambient).toEqual(start.ambient);
    expect(restartOnlyChanges(start, second)).toEqual(['ambient', 'auth']);
  });
});

describe('Reloader', () => {
  it('applies a reload and warns, at every reload until a restart, about settings it did not apply', async () => {
    const file = configFile('live.yaml', '');
    let current: MeshcertConfig = loadConfigFile(file).config;
    const { lines, logger } = captureLogs();
    const reloader = new Reloader({ configFile: file, current: () => current, apply: async (next) => void (current = next), logger });
    const warnings = (): unknown[] => lines.filter((l) => l.level === 40).map((l) => l.settings);

    writeFileSync(file, `${BASE}server:\n  maxConnections: 10\npolicy:\n  default:\n    lifetime: { default: 1h }\n`);
    expect(await reloader.reload('test')).toBe(true);
    expect(current.server.maxConnections).toBe(10);
    expect(warnings()).toEqual([['server']]);
    // Applied already, but the server still runs with what it started with: said again.
    expect(await reloader.reload('test')).toBe(true);
    expect(warnings()).toEqual([['server'], ['server']]);
    // Back to the start's values: nothing to say.
    writeFileSync(file, BASE);
    expect(await reloader.reload('test')).toBe(true);
    expect(warnings()).toHaveLength(2);
    reloader.stop();
  });

  it('says at error level, apart from the other pending settings, that changed authentication is not in force: a removed credential is still accepted', async () => {
    const file = configFile('auth-pending.yaml', '');
    let current: MeshcertConfig = loadConfigFile(file).config;
    const { lines, logger } = captureLogs();
    const reloader = new Reloader({ configFile: file, current: () => current, apply: async (next) => void (current = next), logger });
    // Authentication that a reload applies is not spoken of.
    writeFileSync(file, `${BASE}auth:\n  clientCertificates: false\nambient:\n  trustedNodeAccounts: [kube-system/ztunnel]\n`);
    expect(await reloader.reload('test')).toBe(true);
    expect(lines.filter((l) => (l.level as number) >= 40)).toEqual([]);
    writeFileSync(file, `${BASE}auth:\n  clientCertificates: false\n  defaultCluster: other\nambient:\n  enabled: true\nserver:\n  maxConnections: 10\n`);
    expect(await reloader.reload('test')).toBe(true);
    const errors = lines.filter((l) => l.level === 50);
    expect(errors.map((l) => [l.settings, l.msg])).toEqual([
      [['ambient', 'auth'], 'authentication settings changed in the config but are not in force: the clusters served (names, trust domains, the default cluster) changed and ambient mode was turned on or off, which only a restart applies, so the rest of these sections was not applied either and the running server still accepts every credential it accepted before this reload (an issuer, cluster or token issuer or a trusted node account removed is still trusted); restart meshcert to apply them'],
    ]);
    expect(lines.filter((l) => l.level === 40).map((l) => l.settings)).toEqual([['server']]);
    reloader.stop();
  });

  it('refuses a config the next start would refuse (no authentication), keeping the one in force', async () => {
    const file = configFile('no-auth.yaml', '');
    let current: MeshcertConfig = loadConfigFile(file).config;
    const applied: MeshcertConfig[] = [];
    const { lines, logger } = captureLogs();
    const reloader = new Reloader({ configFile: file, current: () => current, apply: async (next) => void applied.push((current = next)), logger });
    writeFileSync(file, `dataDir: ${dir}/data\nca:\n  dir: ${dir}/ca\n`);
    expect(await reloader.reload('test')).toBe(false);
    expect(applied).toEqual([]);
    const rejected = lines.find((l) => l.msg === 'configuration reload rejected; the previous policy, CAs and authentication stay in force');
    expect(JSON.stringify(rejected?.err)).toContain('no authentication configured');
    reloader.stop();
  });

  it('reloads at start a config file edited while the server started (the watch would compare with the edited file), and only then', async () => {
    for (const edited of [true, false]) {
      const file = configFile(`started-${edited}.yaml`, '');
      const loaded = loadConfigFile(file);
      let current: MeshcertConfig = loaded.config;
      const applied: MeshcertConfig[] = [];
      const { lines, logger } = captureLogs();
      if (edited) writeFileSync(file, `${BASE}issuance:\n  defaultTtl: 12h\n`);
      const reloader = new Reloader({ configFile: file, loadedText: loaded.text, current: () => current, apply: async (next) => void applied.push((current = next)), logger });
      reloader.start();
      try {
        if (edited) {
          await expect.poll(() => lines.find((l) => l.msg === 'configuration reload applied')?.reason, { timeout: 5_000 }).toMatch(/^config file changed during startup$/);
          expect(applied).toHaveLength(1);
          expect(current.issuance.defaultTtl).toBe(12 * 3600);
        } else {
          await new Promise((r) => setTimeout(r, 700)); // past the 300 ms debounce
          expect(applied).toEqual([]);
        }
      } finally {
        reloader.stop();
      }
    }
  });

  it("reloads at start a file edited after watch() began (a token issuer's jwksFile the workers read as they start), and only then", async () => {
    for (const edited of [true, false]) {
      const jwks = join(dir, `jwks-${edited}.json`);
      writeFileSync(jwks, '{"keys":[]}');
      const file = configFile(`watched-${edited}.yaml`, `auth:\n  clusters:\n    - name: k\n      jwt: [{ issuer: "https://issuer.test", jwksFile: ${jwks} }]\n`);
      const loaded = loadConfigFile(file);
      let current: MeshcertConfig = loaded.config;
      const applied: MeshcertConfig[] = [];
      const { lines, logger } = captureLogs();
      const reloader = new Reloader({ configFile: file, loadedText: loaded.text, current: () => current, apply: async (next) => void applied.push((current = next)), logger, pollIntervalMs: 50 });
      reloader.watch();
      try {
        // fs.watchFile takes its first look off the main thread: an edit before it is the baseline.
        await new Promise((r) => setTimeout(r, 500));
        if (edited) {
          writeFileSync(jwks, '{"keys":[],"x":1}');
          await expect.poll(() => reloader.changedWhileStarting, { timeout: 10_000 }).toBe(true);
        }
        await new Promise((r) => setTimeout(r, 500)); // several polls, and the debounce: nothing applied before start()
        expect(applied).toEqual([]);
        expect(reloader.changedWhileStarting).toBe(edited);
        reloader.start();
        if (edited) {
          await expect.poll(() => lines.find((l) => l.msg === 'configuration reload applied')?.reason, { timeout: 5_000 }).toBe('file change during startup');
          expect(applied).toHaveLength(1);
        } else {
          await new Promise((r) => setTimeout(r, 700)); // past the 300 ms debounce
          expect(applied).toEqual([]);
        }
      } finally {
        reloader.stop();
      }
    }
  });

  it('makes one reload of a SIGHUP and the edit it followed (the poll sees the edit after the reload read it), and reloads a later edit or a file renamed into place', async () => {
    const { file, reloader, applied } = applyingReloader('once.yaml', '', 1000);
    reloader.watch();
    reloader.start();
    try {
      await new Promise((r) => setTimeout(r, 1200)); // the watch has its first stats
      writeFileSync(file, `${readFileSync(file, 'utf8')}# edited\n`);
      reloader.trigger('SIGHUP');
      await expect.poll(() => applied.length, { timeout: 5_000 }).toBe(1);
      await new Promise((r) => setTimeout(r, 2500)); // the poll has seen the edit, and the debounce passed
      expect(applied.length).toBe(1);
      writeFileSync(file, `${readFileSync(file, 'utf8')}# again\n`);
      await expect.poll(() => applied.length, { timeout: 5_000 }).toBe(2);
      // A copy made earlier (an old mtime), renamed into place: its ctime is the rename's.
      const copy = `${file}.bak`;
      writeFileSync(copy, readFileSync(file, 'utf8'));
      utimesSync(copy, new Date(Date.now() - 3_600_000), new Date(Date.now() - 3_600_000));
      await new Promise((r) => setTimeout(r, 300));
      renameSync(copy, file);
      await expect.poll(() => applied.length, { timeout: 5_000 }).toBe(3);
    } finally {
      reloader.stop();
    }
  });

  it.each([
    ['rewritten in place (its ctime differs)', 'in-place'],
    ['replaced by a copy renamed into place (its inode and ctime differ)', 'rename'],
  ])('reloads a file of the same size and mtime as the version a reload read, %s', async (_name, how) => {
    const { file, reloader, applied } = applyingReloader(`same-stamp-${how}.yaml`, '', 100);
    reloader.watch();
    reloader.start();
    try {
      await new Promise((r) => setTimeout(r, 400)); // the watch has its first stats
      const text = readFileSync(file, 'utf8');
      // Whole seconds, so that the second version can be stamped with exactly the same mtime.
      const stamp = Math.floor(Date.now() / 1000) - 60;
      writeFileSync(file, `${text}# a\n`);
      utimesSync(file, stamp, stamp);
      reloader.trigger('SIGHUP');
      await expect.poll(() => applied.length, { timeout: 5_000 }).toBe(1);
      await new Promise((r) => setTimeout(r, 700)); // the poll has seen that version: no second reload
      expect(applied.length).toBe(1);
      const target = how === 'rename' ? `${file}.new` : file;
      writeFileSync(target, `${text}# b\n`);
      utimesSync(target, stamp, stamp);
      if (how === 'rename') renameSync(target, file);
      await expect.poll(() => applied.length, { timeout: 5_000 }).toBe(2);
    } finally {
      reloader.stop();
    }
  });

  it('reloads an edit made after a reload whatever this clock says of file times (a file server whose clock runs behind)', async () => {
    const { file, reloader, applied } = applyingReloader('skew.yaml', '', 200);
    // This host's clock an hour ahead of the times the file system stamps.
    const realNow = Date.now.bind(Date);
    const ahead = vi.spyOn(Date, 'now').mockImplementation(() => realNow() + 3_600_000);
    reloader.watch();
    reloader.start();
    try {
      expect(await reloader.reload('SIGHUP')).toBe(true);
      await new Promise((r) => setTimeout(r, 500));
      writeFileSync(file, `${readFileSync(file, 'utf8')}# edited after the reload\n`);
      await expect.poll(() => applied.length, { timeout: 5_000 }).toBe(2);
    } finally {
      ahead.mockRestore();
      reloader.stop();
    }
  });

  it('is not set off by a watched file that is missing (fs.watchFile reports one at once), only by one that appears', async () => {
    const caDir = join(dir, 'ca-missing');
    const { reloader, applied } = applyingReloader('missing.yaml', `issuers: [{ name: b, dir: ${caDir} }]\n`, 50);
    reloader.watch();
    try {
      expect(reloader.watchedFiles).toContain(join(caDir, 'cert-chain.pem'));
      await new Promise((r) => setTimeout(r, 500));
      expect(reloader.changedWhileStarting).toBe(false);
      reloader.start();
      await new Promise((r) => setTimeout(r, 700)); // past the 300 ms debounce
      expect(applied).toEqual([]);
      mkdirSync(caDir);
      writeFileSync(join(caDir, 'cert-chain.pem'), 'pem');
      await expect.poll(() => applied.length, { timeout: 10_000 }).toBe(1);
    } finally {
      reloader.stop();
    }
  });

  it('watches the files of a CA a rejected reload named: when they arrive (a Secret volume updated after the ConfigMap), they are reloaded', async () => {
    const caDir = join(dir, 'ca-later');
    const file = configFile('later.yaml', '');
    let current: MeshcertConfig = loadConfigFile(file).config;
    const applied: MeshcertConfig[] = [];
    // Refused while the CA has no files, as loading it would be.
    const apply = async (next: MeshcertConfig): Promise<void> => {
      if (next.issuers.length > 0 && !existsSync(join(caDir, 'ca-cert.pem'))) throw new Error('CA directory has no ca-cert.pem');
      applied.push((current = next));
    };
    const reloader = new Reloader({ configFile: file, current: () => current, apply, logger: createLogger('silent'), pollIntervalMs: 50 });
    reloader.start();
    try {
      writeFileSync(file, `${BASE}issuers: [{ name: b, dir: ${caDir} }]\n`);
      expect(await reloader.reload('test')).toBe(false);
      expect(reloader.watchedFiles).toContain(join(caDir, 'ca-cert.pem'));
      await new Promise((r) => setTimeout(r, 500)); // the watch's first look (off the main thread) is taken
      mkdirSync(caDir);
      writeFileSync(join(caDir, 'ca-cert.pem'), 'pem');
      await expect.poll(() => applied.length, { timeout: 10_000 }).toBe(1);
      expect(current.issuers.map((i) => i.name)).toEqual(['b']);
    } finally {
      reloader.stop();
    }
  });

  it("stops watching the files of a CA the config no longer names, and watches a new one's", async () => {
    const file = configFile('issuers.yaml', `issuers: [{ name: old, dir: ${dir}/old-ca }]\n`);
    let current: MeshcertConfig = loadConfigFile(file).config;
    const reloader = new Reloader({ configFile: file, current: () => current, apply: async (next) => void (current = next), logger: createLogger('silent') });
    reloader.start();
    try {
      expect(reloader.watchedFiles).toContain(join(dir, 'old-ca', 'ca-cert.pem'));
      writeFileSync(file, `${BASE}issuers: [{ name: new, dir: ${dir}/new-ca }]\n`);
      expect(await reloader.reload('test')).toBe(true);
      expect(reloader.watchedFiles.filter((f) => f.includes('old-ca'))).toEqual([]);
      expect(reloader.watchedFiles).toContain(join(dir, 'new-ca', 'root-cert.pem'));
      expect(reloader.watchedFiles).toContain(join(dir, 'ca', 'ca-key.pem'));
      expect(reloader.watchedFiles).toContain(file);
    } finally {
      reloader.stop();
    }
  });
});

describe('Reloader and token issuers', () => {
  it('runs reloads asked for at once one after the other, never two at the same time', async () => {
    const file = configFile('serial.yaml', '');
    let current: MeshcertConfig = loadConfigFile(file).config;
    let running = 0;
    let most = 0;
    const reloader = new Reloader({
      configFile: file,
      current: () => current,
      apply: async (next) => {
        most = Math.max(most, ++running);
        await new Promise((r) => setTimeout(r, 50));
        running--;
        current = next;
      },
      logger: createLogger('silent'),
    });
    expect(await Promise.all([reloader.reload('a'), reloader.reload('b'), reloader.reload('c')])).toEqual([true, true, true]);
    expect(most).toBe(1);
  });


  it("watches the key files of the issuers in force: a new issuer's once applied, a removed one's no more", async () => {
    const issuers = (...files: string[]): string => `auth:\n  clusters:\n    - name: Kubernetes\n      jwt: [${files.map((f, i) => `{ issuer: "https://i${i}.test", jwksFile: ${join(dir, f)} }`).join(', ')}]\n`;
    const file = configFile('issuer-files.yaml', issuers('old.json'));
    let current: MeshcertConfig = loadConfigFile(file).config;
    const reloader = new Reloader({ configFile: file, current: () => current, apply: async (next) => void (current = next), logger: createLogger('silent') });
    reloader.start();
    try {
      expect(reloader.watchedFiles).toContain(join(dir, 'old.json'));
      writeFileSync(file, BASE + issuers('new.json'));
      expect(await reloader.reload('test')).toBe(true);
      expect(reloader.watchedFiles).toContain(join(dir, 'new.json'));
      expect(reloader.watchedFiles).not.toContain(join(dir, 'old.json'));
    } finally {
      reloader.stop();
    }
  });

  it("watches each TokenReview's CA file, or the in-cluster one it may use, so that a rotated cluster CA is read again", async () => {
    const reviews = `auth:\n  clusters:\n    - name: Kubernetes\n      tokenReview: { apiServer: "https://127.0.0.1:6443", caFile: ${join(dir, 'apiserver-ca.crt')}, tokenFile: /dev/null }\n    - name: home\n      tokenReview: {}\n`;
    const file = configFile('tokenreview-files.yaml', reviews);
    const current: MeshcertConfig = loadConfigFile(file).config;
    const reloader = new Reloader({ configFile: file, current: () => current, apply: async () => undefined, logger: createLogger('silent') });
    reloader.start();
    try {
      expect(reloader.watchedFiles).toContain(join(dir, 'apiserver-ca.crt'));
      expect(reloader.watchedFiles).toContain('/var/run/secrets/kubernetes.io/serviceaccount/ca.crt');
    } finally {
      reloader.stop();
    }
  });
});

describe('Reloader once stopped', () => {
  it('runs no reload asked for before stop() that was still waiting its turn', async () => {
    const file = join(dir, 'stopping.yaml');
    writeFileSync(file, BASE);
    let current: MeshcertConfig = loadConfigFile(file).config;
    let release!: () => void;
    const first = new Promise<void>((r) => (release = r));
    const applied: string[] = [];
    // The first reload holds (a slow worker round); a second is asked for behind it.
    const reloader = new Reloader({
      configFile: file,
      current: () => current,
      apply: async (next) => {
        applied.push('start');
        if (applied.length === 1) await first;
        current = next;
      },
      logger: createLogger('silent'),
    });
    reloader.start();
    expect(reloader.trigger('one')).toBe(true);
    await expect.poll(() => applied.length, { timeout: 5_000 }).toBe(1);
    expect(reloader.trigger('two')).toBe(true);
    await new Promise((r) => setTimeout(r, 500)); // its debounce is over: it waits behind the first
    reloader.stop();
    expect(reloader.trigger('three')).toBe(false);
    release();
    await new Promise((r) => setTimeout(r, 300));
    expect(applied).toEqual(['start']);
  });
});

describe('Reloader, found by mutation testing', () => {
  const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

  it('makes one reload of triggers within the debounce, logged with every reason, and a later one with only its own', async () => {
    const file = configFile('burst.yaml', '');
    let current: MeshcertConfig = loadConfigFile(file).config;
    const { lines, logger } = captureLogs();
    const reloader = new Reloader({ configFile: file, current: () => current, apply: async (next) => void (current = next), logger });
    reloader.start();
    try {
      const applied = (): unknown[] => lines.filter((l) => l.msg === 'configuration reload applied').map((l) => l.reason);
      expect(reloader.trigger('SIGHUP')).toBe(true);
      await sleep(100);
      expect(reloader.trigger('file change')).toBe(true);
      await expect.poll(applied, { timeout: 5_000 }).toEqual(['SIGHUP, file change']);
      await sleep(500);
      expect(applied()).toEqual(['SIGHUP, file change']);
      reloader.trigger('later');
      await expect.poll(applied, { timeout: 5_000 }).toEqual(['SIGHUP, file change', 'later']);
    } finally {
      reloader.stop();
    }
  });

  it('does not reload at start() when it was not told the text the config was read from', async () => {
    const { reloader, applied } = applyingReloader('no-loaded-text.yaml', '', 2000);
    reloader.start();
    try {
      await sleep(700); // past the 300 ms debounce
      expect(applied).toEqual([]);
    } finally {
      reloader.stop();
    }
  });

  it('stop() ends every watch, a reload after it included: a file edited then is not even noted', async () => {
    const { file, reloader } = applyingReloader('stopped-watch.yaml', '', 50);
    reloader.start();
    expect(await reloader.reload('test')).toBe(true); // the files watched again (already watched: not twice)
    await sleep(300); // the watch's first look
    reloader.stop();
    expect(reloader.watchedFiles).toEqual([]);
    expect(await reloader.reload('after stop')).toBe(true);
    expect(reloader.watchedFiles).toEqual([]);
    writeFileSync(file, `${readFileSync(file, 'utf8')}# edited after stop\n`);
    await sleep(500);
    expect(reloader.changedWhileStarting).toBe(false);
  });

  it('keeps watching the files of the CAs in force when a reload naming others is rejected', async () => {
    const file = configFile('rejected-keeps.yaml', `issuers: [{ name: old, dir: ${dir}/kept-ca }]\n`);
    let current: MeshcertConfig = loadConfigFile(file).config;
    const reloader = new Reloader({
      configFile: file,
      current: () => current,
      apply: async (next) => {
        if (next.issuers.some((i) => i.name === 'new')) throw new Error('refused');
        current = next;
      },
      logger: createLogger('silent'),
    });
    reloader.start();
    try {
      writeFileSync(file, `${BASE}issuers: [{ name: new, dir: ${dir}/refused-ca }]\n`);
      expect(await reloader.reload('test')).toBe(false);
      expect(reloader.watchedFiles).toContain(join(dir, 'refused-ca', 'ca-cert.pem'));
      expect(reloader.watchedFiles).toContain(join(dir, 'kept-ca', 'ca-cert.pem'));
    } finally {
      reloader.stop();
    }
  });

  it('counts applied and rejected reloads', async () => {
    const file = configFile('counted.yaml', '');
    let current: MeshcertConfig = loadConfigFile(file).config;
    const metrics = new ReloadMetrics(new Registry());
    const reloader = new Reloader({ configFile: file, current: () => current, apply: async (next) => void (current = next), logger: createLogger('silent'), metrics });
    const count = async (result: string): Promise<number | undefined> => (await metrics.reloads.get()).values.find((v) => v.labels.result === result)?.value;
    expect(await reloader.reload('test')).toBe(true);
    writeFileSync(file, `dataDir: ${dir}/data\nca:\n  dir: ${dir}/ca\n`); // no authentication: refused
    expect(await reloader.reload('test')).toBe(false);
    expect(await count('applied')).toBe(1);
    expect(await count('rejected')).toBe(1);
    reloader.stop();
  });

  it('says at error level that the development issuer turned on is not in force when it adds a cluster (one section)', async () => {
    const path = join(dir, 'dev-pending.yaml');
    const head = `dataDir: ${dir}/data\nca:\n  dir: ${dir}/ca\nauth:\n  clusters:\n    - name: east\n      jwt: [{ issuer: "https://east.test", jwksFile: /tmp/k.json }]\n`;
    writeFileSync(path, head);
    let current: MeshcertConfig = loadConfigFile(path).config;
    const { lines, logger } = captureLogs();
    const reloader = new Reloader({ configFile: path, current: () => current, apply: async (next) => void (current = next), logger });
    writeFileSync(path, `${head}dev:\n  tokenIssuer: true\n`);
    expect(await reloader.reload('test')).toBe(true);
    expect(lines.filter((l) => l.level === 50).map((l) => [l.settings, l.msg])).toEqual([
      [['dev'], 'authentication settings changed in the config but are not in force: the clusters served (names, trust domains, the default cluster) changed, which only a restart applies, so the rest of this section was not applied either and the running server still accepts every credential it accepted before this reload (an issuer, cluster or token issuer removed is still trusted); restart meshcert to apply them'],
    ]);
    expect(lines.filter((l) => l.level === 40)).toEqual([]);
    reloader.stop();
  });

  it("keeps watching the in-force issuers' key files and TokenReview CA files when a reload's changed clusters are not applied", async () => {
    const clusters = (jwks: string, caFile: string, extra = ''): string =>
      `auth:\n  clusters:\n    - name: Kubernetes\n      jwt: [{ issuer: "https://k.test", jwksFile: ${join(dir, jwks)} }]\n    - name: home\n      tokenReview: { apiServer: "https://127.0.0.1:6443", caFile: ${join(dir, caFile)}, tokenFile: /dev/null }\n${extra}`;
    const file = configFile('in-force-files.yaml', clusters('in-force.json', 'in-force-ca.crt'));
    let current: MeshcertConfig = loadConfigFile(file).config;
    const reloader = new Reloader({ configFile: file, current: () => current, apply: async (next) => void (current = next), logger: createLogger('silent') });
    reloader.start();
    try {
      writeFileSync(file, BASE + clusters('next.json', 'next-ca.crt', '    - name: east\n      jwt: [{ issuer: "https://east.test", jwksFile: /tmp/east.json }]\n'));
      expect(await reloader.reload('test')).toBe(true);
      expect(reloader.watchedFiles).toEqual(expect.arrayContaining([join(dir, 'in-force.json'), join(dir, 'in-force-ca.crt'), join(dir, 'next.json'), join(dir, 'next-ca.crt')]));
    } finally {
      reloader.stop();
    }
  });

  it('logs a reload that fails outside the config checks, and reloads again afterwards', async () => {
    const file = configFile('throwing-log.yaml', '');
    let current: MeshcertConfig = loadConfigFile(file).config;
    const errors: unknown[] = [];
    let applied = 0;
    const logger = {
      info: () => {
        throw new Error('log sink broken');
      },
      warn: () => undefined,
      error: (_o: unknown, msg: string) => void errors.push(msg),
    };
    const reloader = new Reloader({ configFile: file, current: () => current, apply: async (next) => void (applied++, (current = next)), logger: logger as never });
    reloader.start();
    try {
      reloader.trigger('one');
      await expect.poll(() => errors, { timeout: 5_000 }).toEqual(['reload failed unexpectedly']);
      reloader.trigger('two');
      await expect.poll(() => applied, { timeout: 5_000 }).toBe(2);
    } finally {
      reloader.stop();
    }
  });
});
