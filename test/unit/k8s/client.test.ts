import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { KubeConfig, type V1Namespace } from '@kubernetes/client-node';
import { createKubeClient, createKubeConfig, describeKubeError, KubeInformer, kubeStatusCode, StreamingWatch } from '../../../src/k8s/client.js';
import { FakeKube } from '../../support/fake-kube.js';
import { x509 } from '../../fixtures/csr.js';

let fake: FakeKube;
let dir: string;

beforeEach(async () => {
  fake = await FakeKube.start();
  dir = mkdtempSync(join(tmpdir(), 'meshcert-k8s-'));
});

afterEach(async () => {
  await fake.close();
  rmSync(dir, { recursive: true, force: true });
});

/** A TCP server that accepts connections and never answers (TLS handshake hangs). */
async function blackHole(): Promise<{ url: string; close: () => Promise<void> }> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((s) => {
    sockets.add(s);
    s.on('error', () => undefined);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as { port: number }).port;
  return {
    url: `https://127.0.0.1:${port}`,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

describe('createKubeConfig', () => {
  it('explicit server + tokenFile: the token is read from the file and trimmed', async () => {
    const tokenFile = join(dir, 'token');
    writeFileSync(tokenFile, 'file-token\n');
    const client = createKubeClient({ server: fake.url, caPem: fake.caPem, tokenFile });
    await client.core.listNamespace();
    expect(fake.requests.at(-1)?.authorization).toBe('Bearer file-token');
  });

  it('in-cluster: KUBERNETES_SERVICE_HOST/PORT and the service-account files', async () => {
    writeFileSync(join(dir, 'token'), 'sa-token');
    writeFileSync(join(dir, 'ca.crt'), fake.caPem);
    writeFileSync(join(dir, 'namespace'), 'istio-system');
    const env = { KUBERNETES_SERVICE_HOST: '127.0.0.1', KUBERNETES_SERVICE_PORT: String(fake.port) };
    const client = createKubeClient({ inCluster: true, env, serviceAccountDir: dir });
    expect(client.server).toBe(fake.url);
    await client.core.listNamespace();
    expect(fake.requests.at(-1)?.authorization).toBe('Bearer sa-token');

    expect(() => createKubeConfig({ inCluster: true, env: {}, serviceAccountDir: dir })).toThrow(/KUBERNETES_SERVICE_HOST is not set/);
    expect(() => createKubeConfig({ inCluster: true, env, serviceAccountDir: join(dir, 'missing') })).toThrow(/in-cluster Kubernetes credentials not found: .*token is missing/);
  });

  it('kubeconfig file, with context selection; insecure-skip-tls-verify is refused', async () => {
    const ca = Buffer.from(fake.caPem).toString('base64');
    const file = join(dir, 'kubeconfig');
    writeFileSync(
      file,
      `apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster: { server: "${fake.url}", certificate-authority-data: "${ca}" }
- name: insecure
  cluster: { server: "${fake.url}", insecure-skip-tls-verify: true }
users:
- name: u
  user: { token: kubeconfig-token }
contexts:
- name: good
  context: { cluster: fake, user: u }
- name: bad
  context: { cluster: insecure, user: u }
current-context: good
`,
    );
    const client = createKubeClient({ kubeconfig: file });
    await client.core.listNamespace();
    expect(fake.requests.at(-1)?.authorization).toBe('Bearer kubeconfig-token');
    expect(() => createKubeConfig({ kubeconfig: file, context: 'bad' })).toThrow(/sets insecure-skip-tls-verify, which meshcert refuses/);
    expect(() => createKubeConfig({ kubeconfig: file, context: 'nope' })).toThrow(/has no context "nope"/);
    expect(() => createKubeConfig({ kubeconfig: join(dir, 'absent') })).toThrow(/cannot load kubeconfig/);
    // A kubeconfig that is not YAML: where, not its text (js-yaml quotes the lines around, token and all).
    const broken = join(dir, 'broken-kubeconfig');
    writeFileSync(broken, 'users:\n- name: u\n  user: { token: SECRETTOKEN123\n  : : :\n');
    let message = '';
    try {
      createKubeConfig({ kubeconfig: broken });
    } catch (e) {
      message = (e as Error).message;
    }
    expect(message).toMatch(new RegExp(`^cannot load kubeconfig ${broken}: .* \\(line \\d+, column \\d+\\)$`));
    expect(message).not.toContain('SECRETTOKEN123');
  });

  it('refuses plain http, skipTLSVerify and conflicting credentials', () => {
    expect(() => createKubeConfig({ server: 'http://127.0.0.1:8080' })).toThrow(/must be an https:\/\/ URL/);
    expect(() => createKubeConfig({ server: fake.url, skipTLSVerify: true } as unknown as { server: string })).toThrow(/skipTLSVerify is not supported/);
    expect(() => createKubeConfig({ server: fake.url, token: 'a', tokenFile: '/x' })).toThrow(/either token or tokenFile/);
    expect(() => createKubeConfig({ server: fake.url, caPem: fake.caPem, caFile: '/x' })).toThrow(/either caPem or caFile/);
    expect(() => createKubeConfig({ server: fake.url, tokenFile: join(dir, 'none') })).toThrow(/does not exist/);
  });

  it("explicit server + caFile: the CA file is read again for every request, so a rotated cluster CA is used without a new client", async () => {
    const caFile = join(dir, 'kube-ca.crt');
    writeFileSync(caFile, fake.caPem);
    const client = createKubeClient({ server: fake.url, caFile });
    await client.core.listNamespace();
    // Another CA: the API server's certificate no longer chains to the file.
    const keys = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
    const otherCa = `${(await x509.X509CertificateGenerator.createSelfSigned({ serialNumber: '01', name: 'CN=another cluster', keys, signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } })).toString('pem')}\n`;
    writeFileSync(caFile, otherCa);
    expect(describeKubeError(await client.core.listNamespace().catch((e: unknown) => e))).toMatch(/certificate|self-signed|issuer/i);
    writeFileSync(caFile, `${otherCa}${fake.caPem}`);
    await client.core.listNamespace();
  });

  it('verifies the API server certificate (no CA given: the fake is not trusted)', async () => {
    const client = createKubeClient({ server: fake.url });
    const err = await client.core.listNamespace().catch((e: unknown) => e);
    expect(kubeStatusCode(err)).toBeUndefined();
    expect(describeKubeError(err)).toMatch(/certificate|self-signed|issuer/i);
    const watchErr = await new Promise<unknown>((resolve) => {
      const inf = client.makeInformer('namespaces');
      inf.on('error', resolve);
      void inf.start();
    });
    expect(describeKubeError(watchErr)).toMatch(/certificate|self-signed|issuer/i);
  });
});

describe('timeouts', () => {
  it('bounds API requests and the watch/list with timeouts when the server never answers', async () => {
    const hole = await blackHole();
    try {
      const client = createKubeClient({ server: hole.url, caPem: fake.caPem }, { requestTimeoutMs: 200, watch: { connectTimeoutMs: 200 } });
      const started = Date.now();
      const err = await client.core.listNamespace().catch((e: unknown) => e);
      expect(Date.now() - started).toBeLessThan(5_000);
      expect(describeKubeError(err)).toMatch(/abort/i);

      const inf = client.makeInformer('namespaces');
      const listErr = await new Promise<unknown>((resolve) => {
        inf.on('error', resolve);
        void inf.start();
      });
      expect(describeKubeError(listErr)).toMatch(/abort/i);
      await inf.stop();
    } finally {
      await hole.close();
    }
  });

  it('gives up on a watch whose response never comes', async () => {
    const client = createKubeClient({ server: fake.url, caPem: fake.caPem }, { watch: { connectTimeoutMs: 200 } });
    fake.fail({ path: '/api/v1/namespaces', watch: true }, { hang: true });
    const inf = client.makeInformer('namespaces');
    const err = await new Promise<unknown>((resolve) => {
      inf.on('error', resolve);
      void inf.start();
    });
    expect(describeKubeError(err)).toBe('watch /api/v1/namespaces: no answer from the API server within 200 ms');
    await inf.stop();
  });
});

/** `srv` listening on loopback, and a kubeconfig for it (plain HTTP: the watch transport only; createKubeClient refuses http). */
async function plainHttpKubeConfig(srv: http.Server): Promise<KubeConfig> {
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  const kc = new KubeConfig();
  kc.loadFromOptions({ clusters: [{ name: 'c', server: `http://127.0.0.1:${port}`, skipTLSVerify: true }], users: [{ name: 'u' }], contexts: [{ name: 'x', cluster: 'c', user: 'u' }], currentContext: 'x' });
  return kc;
}

/** A namespaces informer over the watch transport (an empty list at resourceVersion 10), and the errors it emits. */
function namespaceInformer(kc: KubeConfig): { informer: KubeInformer<V1Namespace>; errors: string[] } {
  const informer = new KubeInformer<V1Namespace>('/api/v1/namespaces', new StreamingWatch(kc), async () => ({ metadata: { resourceVersion: '10' }, items: [] }));
  const errors: string[] = [];
  informer.on('error', (e: unknown) => void errors.push(String(e)));
  return { informer, errors };
}

describe('a watch the API server ends at once', () => {
  it("is an error (client-go's very short watch), so its owner backs off, not a clean end re-watched at once in a loop", async () => {
    let watches = 0;
    let slow = false;
    const srv = http.createServer((_req, res) => {
      watches++;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.flushHeaders();
      if (slow) setTimeout(() => res.end(), 1_100);
      else res.end();
    });
    const kc = await plainHttpKubeConfig(srv);
    const { informer, errors } = namespaceInformer(kc);
    try {
      await informer.start();
      await expect.poll(() => errors, { timeout: 3_000 }).toEqual(['Error: watch /api/v1/namespaces: the API server ended the watch at once with no event (a very short watch)']);
      // Not re-watched in a loop meanwhile (the owner restarts it, with its backoff).
      await new Promise((r) => setTimeout(r, 300));
      expect(watches).toBe(1);
    } finally {
      await informer.stop();
    }
    // A watch that lasted (its timeout reached, say) ends cleanly and is re-watched.
    slow = true;
    watches = 0;
    const { informer: lasting, errors: lastingErrors } = namespaceInformer(kc);
    try {
      await lasting.start();
      await expect.poll(() => watches, { timeout: 5_000 }).toBeGreaterThanOrEqual(2);
      expect(lastingErrors).toEqual([]);
    } finally {
      await lasting.stop();
      srv.closeAllConnections();
      srv.close();
    }
  });
});

describe('watch event handlers', () => {
  it("ends the stream with the error when an (async) handler throws, so its owner restarts it, and nothing is left unhandled", async () => {
    const srv = http.createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write(`${JSON.stringify({ type: 'ADDED', object: { metadata: { name: 'ns-a', resourceVersion: '11' } } })}\n`);
    });
    const kc = await plainHttpKubeConfig(srv);
    const { informer, errors } = namespaceInformer(kc);
    informer.on('add', (o: V1Namespace) => {
      if (o.metadata?.name === 'ns-a') throw new Error('handler failed');
    });
    try {
      await informer.start();
      await expect.poll(() => errors, { timeout: 3_000 }).toEqual(['Error: handler failed']);
    } finally {
      await informer.stop();
      srv.closeAllConnections();
      srv.close();
    }
  });
});
