/**
 * meshcert's Istio controllers as the server runs them (leader election, istio-ca-root-cert in every
 * namespace, istiod-tls). A real Kubernetes API server was not available here: the API is served in
 * the test on loopback (test/support/fake-kube.ts) with real Kubernetes JSON shapes.
 */
import Database from 'better-sqlite3';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initCaDir } from '../../../src/ca/init.js';
import { loadConfigFile } from '../../../src/config/load.js';
import { createLogger } from '../../../src/log/logger.js';
import { ISTIOD_TLS_REQUESTER } from '../../../src/inventory/sink.js';
import { runServer, type RunningServer } from '../../../src/runtime/serve.js';
import { FakeKube } from '../../support/fake-kube.js';
import { serveConfigYaml, writeTestJwks } from '../../support/harness.js';

const ns = (name: string) => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name }, status: { phase: 'Active' } });

describe('root distribution and istiod-tls, run by the server', () => {
  let fake: FakeKube;
  let dir: string;
  let file: string;
  let server: RunningServer;
  const yaml = (extra = '') =>
    serveConfigYaml({
      workers: 1,
      extra: `kubernetes: { server: "${fake.url}", caFile: kube-ca.pem, tokenFile: kube-token }
istio:
  rootCertConfigMap: { enabled: true, excludeNamespaces: [kube-system] }
  istiodTls: { enabled: true, extraDnsNames: [istiod.mesh.example.com] }
leaderElection: { namespace: meshcert, leaseDuration: 3s, renewDeadline: 2s, retryPeriod: 1s }
${extra}`,
    });

  beforeAll(async () => {
    fake = await FakeKube.start({ token: 'sa-token' });
    for (const n of ['default', 'shop', 'istio-system', 'kube-system', 'meshcert']) fake.put('namespaces', ns(n));
    dir = mkdtempSync(join(tmpdir(), 'meshcert-ctl-'));
    await writeTestJwks(join(dir, 'jwks.json'));
    writeFileSync(join(dir, 'kube-ca.pem'), fake.caPem);
    writeFileSync(join(dir, 'kube-token'), 'sa-token');
    file = join(dir, 'meshcert.yaml');
    writeFileSync(file, yaml());
    server = await runServer(loadConfigFile(file).config, createLogger('silent'), { configFile: file });
  });
  afterAll(async () => {
    await server?.close();
    await fake?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const rootIn = (n: string): string | undefined => (fake.get('configmaps', n, 'istio-ca-root-cert') as { data?: Record<string, string> } | undefined)?.data?.['root-cert.pem'];

  it('writes istio-ca-root-cert (labelled) into every namespace, new ones too, and not into excluded ones', async () => {
    const root = readFileSync(join(dir, 'data/ca/root-cert.pem'), 'utf8');
    await expect.poll(() => rootIn('shop'), { timeout: 10_000 }).toBe(root);
    expect(rootIn('default')).toBe(root);
    expect(rootIn('kube-system')).toBeUndefined();
    const cm = fake.get('configmaps', 'shop', 'istio-ca-root-cert') as { metadata: { labels?: Record<string, string> } };
    expect(cm.metadata.labels?.['istio.io/config']).toBe('true');
    fake.put('namespaces', ns('new-team'));
    await expect.poll(() => rootIn('new-team'), { timeout: 10_000 }).toBe(root);
    // Watches re-made every 1-2 minutes: one gone silent is noticed within ~2.5, not ~10.
    const watches = fake.requests.filter((r) => r.query.watch === 'true');
    expect(watches.length).toBeGreaterThan(0);
    for (const w of watches) expect(Number(w.query.timeoutSeconds), w.path).toBeLessThan(120);
  });

  it('issues istiod-tls for istiod.istio-system.svc, chaining to ca.crt', async () => {
    await expect.poll(() => fake.get('secrets', 'istio-system', 'istiod-tls'), { timeout: 10_000 }).toBeTruthy();
    const secret = fake.get('secrets', 'istio-system', 'istiod-tls') as unknown as { data: Record<string, string> };
    const crt = Buffer.from(secret.data['tls.crt']!, 'base64').toString();
    const ca = Buffer.from(secret.data['ca.crt']!, 'base64').toString();
    const leaf = new X509Certificate(crt);
    expect(leaf.subjectAltName).toContain('DNS:istiod.istio-system.svc');
    expect(leaf.subjectAltName).toContain('DNS:istiod-remote.istio-system.svc');
    expect(leaf.subjectAltName).toContain('DNS:istiod.mesh.example.com');
    expect(ca).toBe(readFileSync(join(dir, 'data/ca/root-cert.pem'), 'utf8'));
    // Recorded in the inventory like every certificate meshcert issues (written within 200 ms).
    const recorded = (): unknown => {
      const db = new Database(join(dir, 'data/inventory.db'), { readonly: true });
      try {
        return db.prepare('SELECT source, issuer, requester, spiffe_id FROM inventory_certificates WHERE fingerprint = ?').get(leaf.fingerprint256.replaceAll(':', '').toLowerCase());
      } finally {
        db.close();
      }
    };
    await expect.poll(recorded, { timeout: 5_000 }).toEqual({ source: 'issued', issuer: 'default', requester: ISTIOD_TLS_REQUESTER, spiffe_id: null });
  });

  it('says in /metrics that this replica leads, what it has still to write and what failed', async () => {
    const scrape = async (): Promise<string> => (await fetch(`http://127.0.0.1:${server.adminPort}/metrics`)).text();
    await expect.poll(async () => /^meshcert_leader 1$/m.test(await scrape()), { timeout: 10_000 }).toBe(true);
    await expect.poll(async () => /^meshcert_root_configmaps_pending 0$/m.test(await scrape()), { timeout: 10_000 }).toBe(true);
    const before = Number(/^meshcert_root_configmap_write_failures_total (\d+)$/m.exec(await scrape())?.[1]);
    expect(/^meshcert_istiod_tls_write_failures_total \d+$/m.test(await scrape())).toBe(true);
    // A write the API server refuses is counted.
    fake.fail({ method: 'POST', path: /\/namespaces\/refused\/configmaps$/ }, { status: 500, message: 'etcd is sad' }, 1);
    fake.put('namespaces', ns('refused'));
    await expect.poll(async () => Number(/^meshcert_root_configmap_write_failures_total (\d+)$/m.exec(await scrape())?.[1]), { timeout: 10_000 }).toBe(before + 1);
    await expect.poll(() => rootIn('refused'), { timeout: 10_000 }).toBeDefined();
  });

  it('pushes a new root bundle everywhere after a reload adds a CA (rotation-style)', async () => {
    await initCaDir({ dir: join(dir, 'second-ca'), organization: 'second' });
    writeFileSync(file, yaml(`issuers: [{ name: second, dir: second-ca }]`));
    expect(await server.reload('test')).toBe(true);
    await expect.poll(() => rootIn('shop')?.match(/BEGIN CERTIFICATE/g)?.length, { timeout: 10_000 }).toBe(2);
    await expect.poll(() => Buffer.from((fake.get('secrets', 'istio-system', 'istiod-tls') as unknown as { data: Record<string, string> }).data['ca.crt']!, 'base64').toString().match(/BEGIN CERTIFICATE/g)?.length, { timeout: 10_000 }).toBe(2);
  });
});

describe('shutdown while the API server is slow', () => {
  it('starts draining at once, not after the leader lease release (bounded by renewDeadline) gives up', async () => {
    const fake = await FakeKube.start({ token: 'sa-token' });
    const dir = mkdtempSync(join(tmpdir(), 'meshcert-ctl-slow-'));
    try {
      fake.put('namespaces', ns('meshcert'));
      await writeTestJwks(join(dir, 'jwks.json'));
      writeFileSync(join(dir, 'kube-ca.pem'), fake.caPem);
      writeFileSync(join(dir, 'kube-token'), 'sa-token');
      const file = join(dir, 'meshcert.yaml');
      writeFileSync(
        file,
        serveConfigYaml({
          workers: 1,
          inventory: false,
          extra: `kubernetes: { server: "${fake.url}", caFile: kube-ca.pem, tokenFile: kube-token }
istio: { rootCertConfigMap: { enabled: true } }
leaderElection: { namespace: meshcert, leaseDuration: 6s, renewDeadline: 4s, retryPeriod: 1s }
`,
        }),
      );
      const server = await runServer(loadConfigFile(file).config, createLogger('silent'), { configFile: file });
      await expect.poll(() => fake.get('leases', 'meshcert', 'meshcert-leader') !== undefined, { timeout: 10_000 }).toBe(true);
      // Every lease read or write from now on hangs: the release waits out its 4 s deadline.
      fake.fail({ path: /leases/ }, { hang: true }, 1000);
      const t0 = Date.now();
      const closed = server.close();
      // The gRPC listener is closed within moments, while the release still waits.
      await expect.poll(() => connects(server.port), { timeout: 2_000, interval: 50 }).toBe(false);
      expect(Date.now() - t0).toBeLessThan(2_000);
      await closed;
      expect(Date.now() - t0).toBeGreaterThanOrEqual(3_500);
    } finally {
      await fake.close();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 30_000);
});

/** Whether a TCP connection to 127.0.0.1:port is accepted. */
function connects(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection({ host: '127.0.0.1', port }, () => {
      s.destroy();
      resolve(true);
    });
    s.on('error', () => resolve(false));
  });
}
