/**
 * Discovery against real sources made in the test: a folder of PEM files, a node:tls server
 * presenting a chain, a closed loopback port, and a loopback HTTPS "API server" answering the
 * TLS Secret list with a real SecretList.
 */
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi, type MockInstance } from 'vitest';
import { UsageError } from '../../../src/cli/args.js';
import { discoverCommand, parseDiscoverArgs } from '../../../src/cli/discover.js';
import { discover, discoveryExitCode } from '../../../src/discovery/discover.js';
import { discoverEndpoint } from '../../../src/discovery/endpoint.js';
import { expandFileArg, globToRegExp, readPemFile } from '../../../src/discovery/files.js';
import { discoverK8sSecrets, secretItem } from '../../../src/discovery/k8s-secrets.js';
import { openStore } from '../../../src/inventory/open.js';
import type { InventoryStore } from '../../../src/inventory/types.js';
import { freePort } from '../../support/postgres.js';
import { DAY, makeChain, makeTestCert, type TestCert } from './helpers.js';

const fpOf = (c: TestCert): string => c.cert.fingerprint256.replace(/:/g, '').toLowerCase();

let dir: string;
let certsDir: string;
let chain: Awaited<ReturnType<typeof makeChain>>;
let expired: TestCert;
let nested: TestCert;
let tlsServer: tls.Server;
let tlsPort: number;
let closedPort: number;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'meshcert-discover-'));
  certsDir = join(dir, 'certs');
  mkdirSync(join(certsDir, 'sub'), { recursive: true });
  chain = await makeChain({ uris: ['spiffe://cluster.local/ns/shop/sa/web'], dns: ['localhost'], ips: ['127.0.0.1'] });
  expired = await makeTestCert({ subject: 'CN=expired.example', dns: ['expired.example'], notBefore: new Date(Date.now() - 30 * DAY), notAfter: new Date(Date.now() - DAY) });
  nested = await makeTestCert({ subject: 'CN=nested.example' });
  writeFileSync(join(certsDir, 'good.pem'), chain.leaf.pem + chain.intermediate.pem);
  writeFileSync(join(certsDir, 'expired.crt'), expired.pem);
  writeFileSync(join(certsDir, 'malformed.pem'), '-----BEGIN CERTIFICATE-----\nTm90IGEgY2VydGlmaWNhdGUgYXQgYWxs\n-----END CERTIFICATE-----\n');
  writeFileSync(join(certsDir, 'binary.crt'), Buffer.from([0x30, 0x82, 0x01, 0x00, 0xde, 0xad, 0xbe, 0xef]));
  writeFileSync(join(certsDir, 'key.pem'), await chain.leaf.keyPem());
  writeFileSync(join(certsDir, 'README.txt'), 'not looked at');
  writeFileSync(join(certsDir, 'sub', 'nested.pem'), nested.pem);

  tlsServer = tls.createServer({ key: await chain.leaf.keyPem(), cert: chain.leaf.pem + chain.intermediate.pem, ALPNProtocols: ['h2'] }, (s) => s.end());
  tlsServer.on('tlsClientError', () => undefined);
  await new Promise<void>((resolve) => tlsServer.listen(0, '127.0.0.1', resolve));
  tlsPort = (tlsServer.address() as AddressInfo).port;
  closedPort = await freePort();
});

afterAll(async () => {
  await new Promise((resolve) => tlsServer.close(resolve));
  rmSync(dir, { recursive: true, force: true });
});

describe('PEM files', () => {
  it('reads every certificate of a good file', () => {
    const item = readPemFile(join(certsDir, 'good.pem'));
    expect(item.status).toBe('ok');
    expect(item.source).toBe(`discovered:file:${join(certsDir, 'good.pem')}`);
    expect(item.status === 'ok' && item.certificates.map((c) => c.fingerprint256)).toEqual([chain.leaf.cert.fingerprint256, chain.intermediate.cert.fingerprint256]);
  });

  it('reports a broken PEM, a non-PEM file and an unterminated block as errors, and skips key files', () => {
    expect(readPemFile(join(certsDir, 'malformed.pem'))).toMatchObject({ status: 'error', error: expect.stringMatching(/broken PEM/) });
    expect(readPemFile(join(certsDir, 'binary.crt'))).toMatchObject({ status: 'error', error: expect.stringMatching(/not a PEM file/) });
    expect(readPemFile(join(certsDir, 'key.pem'))).toMatchObject({ status: 'skipped', reason: expect.stringMatching(/PRIVATE KEY/) });
    const cut = join(dir, 'cut.pem');
    writeFileSync(cut, chain.leaf.pem.slice(0, 200));
    expect(readPemFile(cut)).toMatchObject({ status: 'error', error: expect.stringMatching(/without a matching END/) });
    const mixed = join(dir, 'mixed.pem');
    writeFileSync(mixed, `${chain.leaf.pem}-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n`);
    const m = readPemFile(mixed);
    expect(m).toMatchObject({ status: 'error', error: expect.stringMatching(/1 good certificate/) });
    expect(m.status === 'error' && m.certificates?.length).toBe(1);
    expect(readPemFile(join(dir, 'nope.pem'))).toMatchObject({ status: 'error', error: expect.stringMatching(/cannot read: ENOENT/) });
  });

  it("reads a kubelet-mounted Secret once, through its key's symlink, not its ..<timestamp> directory", () => {
    const mount = join(dir, 'mounted-secret');
    const real = join(mount, '..2026_11_29_10_00_00.123456789');
    mkdirSync(real, { recursive: true });
    copyFileSync(join(certsDir, 'good.pem'), join(real, 'tls.crt'));
    symlinkSync('..2026_11_29_10_00_00.123456789', join(mount, '..data'));
    symlinkSync('..data/tls.crt', join(mount, 'tls.crt'));
    // A key mounted at a nested path (items: [{ key, path: certs/ca.crt }]) is a symlinked directory.
    mkdirSync(join(real, 'certs'));
    copyFileSync(join(certsDir, 'good.pem'), join(real, 'certs', 'ca.crt'));
    symlinkSync('..data/certs', join(mount, 'certs'));
    // A symlink loop does not hang the walk, and a link out of the tree is not followed.
    symlinkSync('.', join(real, 'certs', 'loop'));
    symlinkSync(certsDir, join(mount, 'elsewhere'));
    expect(expandFileArg(mount).files).toEqual([join(mount, 'certs', 'ca.crt'), join(mount, 'tls.crt')]);
  });

  it('walks directories recursively for *.pem and *.crt, and expands basename globs', () => {
    expect(expandFileArg(certsDir).files.map((f) => f.slice(certsDir.length + 1))).toEqual(['binary.crt', 'expired.crt', 'good.pem', 'key.pem', 'malformed.pem', 'sub/nested.pem']);
    expect(expandFileArg(join(certsDir, '*.crt')).files.map((f) => f.slice(certsDir.length + 1))).toEqual(['binary.crt', 'expired.crt']);
    expect(expandFileArg(join(certsDir, 'g??d.*')).files).toEqual([join(certsDir, 'good.pem')]);
    expect(expandFileArg(join(certsDir, '*.der')).error).toMatchObject({ status: 'error', error: 'no file matches' });
    expect(expandFileArg(join(dir, '*', 'good.pem')).error).toMatchObject({ status: 'error', error: expect.stringMatching(/last path component/) });
    expect(expandFileArg(join(dir, 'missing')).error).toMatchObject({ status: 'error', error: 'no such file or directory' });
    expect(globToRegExp('a.*').test('a.pem')).toBe(true);
    expect(globToRegExp('a.*').test('abpem')).toBe(false);
  });
});

describe('TLS endpoints', () => {
  it('records every certificate of the presented chain', async () => {
    const item = await discoverEndpoint(`127.0.0.1:${tlsPort}`);
    expect(item).toMatchObject({ status: 'ok', source: `discovered:endpoint:127.0.0.1:${tlsPort}` });
    const fps = item.status === 'ok' ? item.certificates.map((c) => c.fingerprint256) : [];
    expect(fps.slice(0, 2)).toEqual([chain.leaf.cert.fingerprint256, chain.intermediate.cert.fingerprint256]);
  });

  it('reports a closed port, a silent server and a bad address', async () => {
    expect(await discoverEndpoint(`127.0.0.1:${closedPort}`)).toMatchObject({ status: 'error', error: 'connection refused' });
    const silent = (await import('node:net')).createServer(() => undefined);
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    try {
      const t0 = Date.now();
      const item = await discoverEndpoint(`127.0.0.1:${(silent.address() as AddressInfo).port}`, { timeoutMs: 300 });
      expect(item).toMatchObject({ status: 'error', error: 'no TLS handshake within 300 ms' });
      expect(Date.now() - t0).toBeLessThan(5000);
    } finally {
      silent.close();
    }
    expect(await discoverEndpoint('no-port')).toMatchObject({ status: 'error', error: expect.stringMatching(/host:port/) });
  });
});

describe('discover() into a store', () => {
  let store: InventoryStore;
  beforeEach(async () => {
    store = await openStore({ kind: 'sqlite', path: join(mkdtempSync(join(dir, 'db-')), 'inventory.db') });
  });
  afterEach(async () => store.close());

  it('records files and endpoints, reports failures per item, and is idempotent', async () => {
    const opts = { files: [certsDir], endpoints: [`127.0.0.1:${tlsPort}`, `127.0.0.1:${closedPort}`] };
    const r = await discover(store, opts);
    const byTarget = Object.fromEntries(r.items.map((i) => [i.target, i]));
    expect(byTarget[join(certsDir, 'good.pem')]).toMatchObject({ status: 'ok', certificates: 2 });
    expect(byTarget[join(certsDir, 'expired.crt')]).toMatchObject({ status: 'ok', certificates: 1 });
    expect(byTarget[join(certsDir, 'sub', 'nested.pem')]).toMatchObject({ status: 'ok', certificates: 1 });
    expect(byTarget[join(certsDir, 'malformed.pem')]).toMatchObject({ status: 'error' });
    expect(byTarget[join(certsDir, 'binary.crt')]).toMatchObject({ status: 'error' });
    expect(byTarget[join(certsDir, 'key.pem')]).toMatchObject({ status: 'skipped' });
    expect(byTarget[`127.0.0.1:${tlsPort}`]).toMatchObject({ status: 'ok', kind: 'endpoint' });
    expect(byTarget[`127.0.0.1:${closedPort}`]).toMatchObject({ status: 'error', error: 'connection refused' });
    expect(r).toMatchObject({ ok: 4, skipped: 1, failed: 3 });
    expect(discoveryExitCode(r)).toBe(1);

    // leaf + intermediate (file, then the same from the endpoint), expired, nested
    expect(r.newRecords).toBe(4);
    expect(await store.count()).toBe(4);
    const leaf = await store.get(fpOf(chain.leaf));
    expect(leaf).toMatchObject({
      source: `discovered:file:${join(certsDir, 'good.pem')}`,
      spiffeId: 'spiffe://cluster.local/ns/shop/sa/web',
      namespace: 'shop',
      serviceAccount: 'web',
      issuer: 'O=meshcert-test, CN=Test Intermediate',
    });
    const exp = await store.get(fpOf(expired));
    expect(exp!.notAfter.getTime()).toBeLessThan(Date.now());
    expect(exp!.source).toBe(`discovered:file:${join(certsDir, 'expired.crt')}`);

    const again = await discover(store, opts);
    expect(again.newRecords).toBe(0);
    expect(again.found).toBe(r.found);
    expect(await store.count()).toBe(4);
  });

  it('tags endpoint certificates with the endpoint source when first seen there', async () => {
    const r = await discover(store, { endpoints: [`127.0.0.1:${tlsPort}`] });
    expect(discoveryExitCode(r)).toBe(0);
    expect((await store.get(fpOf(chain.intermediate)))!.source).toBe(`discovered:endpoint:127.0.0.1:${tlsPort}`);
  });

  it('exits 1 when nothing was found', async () => {
    const empty = mkdtempSync(join(dir, 'empty-'));
    const r = await discover(store, { files: [empty] });
    expect(r.items).toEqual([expect.objectContaining({ status: 'error', error: expect.stringMatching(/no \*\.pem or \*\.crt/) })]);
    expect(discoveryExitCode(r)).toBe(1);
    expect(discoveryExitCode({ items: [], found: 0, newRecords: 0, ok: 0, skipped: 1, failed: 0 })).toBe(1);
  });
});

/** A loopback HTTPS server standing in for the Kubernetes API server. */
async function fakeApiServer(secrets: unknown[], token: string): Promise<{ url: string; caPem: string; requests: string[]; close(): Promise<void> }> {
  const apiChain = await makeChain({ subject: 'CN=kube-apiserver', dns: ['localhost'], ips: ['127.0.0.1'] });
  const requests: string[] = [];
  const server = https.createServer({ key: await apiChain.leaf.keyPem(), cert: apiChain.leaf.pem + apiChain.intermediate.pem }, (req, res) => {
    requests.push(req.url ?? '');
    const url = new URL(req.url ?? '/', 'https://x');
    if (req.headers.authorization === 'Bearer forbidden') {
      res.writeHead(403, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ kind: 'Status', apiVersion: 'v1', status: 'Failure', message: 'secrets is forbidden: User "system:serviceaccount:meshcert:meshcert" cannot list resource "secrets"', reason: 'Forbidden', code: 403 }));
      return;
    }
    if (req.headers.authorization !== `Bearer ${token}`) {
      res.writeHead(401, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ kind: 'Status', apiVersion: 'v1', status: 'Failure', message: 'Unauthorized', reason: 'Unauthorized', code: 401 }));
      return;
    }
    if (req.method !== 'GET' || url.pathname !== '/api/v1/secrets' || url.searchParams.get('fieldSelector') !== 'type=kubernetes.io/tls') {
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ kind: 'Status', apiVersion: 'v1', status: 'Failure', message: 'not found', code: 404 }));
      return;
    }
    // Paging as the API server does it: `limit`, and an opaque `continue` token.
    const limit = Number(url.searchParams.get('limit') ?? secrets.length) || secrets.length;
    const start = Number(url.searchParams.get('continue') ?? 0);
    const rest = secrets.length - start - limit;
    const metadata = { resourceVersion: '12345', ...(rest > 0 ? { continue: String(start + limit), remainingItemCount: rest } : {}) };
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ kind: 'SecretList', apiVersion: 'v1', metadata, items: secrets.slice(start, start + limit) }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `https://127.0.0.1:${(server.address() as AddressInfo).port}`,
    caPem: apiChain.root.pem,
    requests,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

function tlsSecret(ns: string, name: string, crt: string | undefined): unknown {
  return {
    metadata: { name, namespace: ns, uid: `uid-${ns}-${name}`, resourceVersion: '1', creationTimestamp: '2030-01-01T00:00:00Z' },
    type: 'kubernetes.io/tls',
    data: { ...(crt !== undefined ? { 'tls.crt': Buffer.from(crt).toString('base64') } : {}), 'tls.key': Buffer.from('key').toString('base64') },
  };
}

function writeKubeconfig(path: string, server: string, caPem: string, token: string): void {
  writeFileSync(
    path,
    [
      'apiVersion: v1',
      'kind: Config',
      'clusters:',
      '- name: test',
      '  cluster:',
      `    server: ${server}`,
      `    certificate-authority-data: ${Buffer.from(caPem).toString('base64')}`,
      'users:',
      '- name: meshcert',
      '  user:',
      `    token: ${token}`,
      'contexts:',
      '- name: test',
      '  context: { cluster: test, user: meshcert }',
      'current-context: test',
      '',
    ].join('\n'),
  );
}

describe('Kubernetes TLS Secrets', () => {
  it('classifies Secrets: good, empty tls.crt, garbage', () => {
    expect(secretItem(tlsSecret('a', 'good', chain.leaf.pem) as never)).toMatchObject({ status: 'ok', target: 'a/good', source: 'discovered:k8s-secret:a/good' });
    expect(secretItem(tlsSecret('a', 'pending', '') as never)).toMatchObject({ status: 'skipped' });
    expect(secretItem(tlsSecret('a', 'none', undefined) as never)).toMatchObject({ status: 'skipped' });
    expect(secretItem(tlsSecret('a', 'junk', 'hello') as never)).toMatchObject({ status: 'error', error: 'tls.crt holds no PEM certificate' });
  });
});

describe('meshcert discover (CLI)', () => {
  let out: MockInstance;
  let err: MockInstance;
  const stdout = (): string => out.mock.calls.map((c) => c.join(' ')).join('\n');
  const stderr = (): string => err.mock.calls.map((c) => c.join(' ')).join('\n');
  beforeEach(() => {
    out = vi.spyOn(console, 'log').mockImplementation(() => undefined);
    err = vi.spyOn(console, 'error').mockImplementation(() => undefined);
  });
  afterEach(() => vi.restoreAllMocks());

  it('records the folder and endpoints, prints per-item lines, and exits 1 on failed items', async () => {
    const db = `sqlite:${join(dir, 'cli-1', 'inventory.db')}`;
    const code = await discoverCommand(['--files', certsDir, '--endpoints', `127.0.0.1:${tlsPort}`, `127.0.0.1:${closedPort}`, '--db', db]);
    expect(code).toBe(1);
    expect(stdout()).toContain(`file ${join(certsDir, 'good.pem')}: 2 certificate(s)`);
    expect(stdout()).toContain(`endpoint 127.0.0.1:${tlsPort}: `);
    expect(stdout()).toMatch(/discovered 6 certificate\(s\) in 4 item\(s\), 1 skipped, 3 failed; 4 new in sqlite:/);
    expect(stderr()).toContain(`meshcert discover: endpoint 127.0.0.1:${closedPort}: connection refused`);
    expect(stderr()).toContain(`meshcert discover: file ${join(certsDir, 'malformed.pem')}: broken PEM`);
    expect(stderr()).not.toMatch(/\n\s+at /);
  });

  it('prints JSON with items and errors[], exits 0 when everything succeeded, and is idempotent', async () => {
    const db = `sqlite:${join(dir, 'cli-2', 'inventory.db')}`;
    const args = ['--files', join(certsDir, 'good.pem'), join(certsDir, 'expired.crt'), '--endpoints', `127.0.0.1:${tlsPort}`, '--db', db, '--json'];
    expect(await discoverCommand(args)).toBe(0);
    const r = JSON.parse(stdout()) as { found: number; newRecords: number; items: Array<{ target: string; status: string; fingerprints: string[] }>; errors: unknown[] };
    expect(r.errors).toEqual([]);
    expect(r.items.map((i) => [i.target, i.status])).toEqual([
      [join(certsDir, 'good.pem'), 'ok'],
      [join(certsDir, 'expired.crt'), 'ok'],
      [`127.0.0.1:${tlsPort}`, 'ok'],
    ]);
    expect(r.items[0]!.fingerprints).toEqual([fpOf(chain.leaf), fpOf(chain.intermediate)]);
    expect(r.newRecords).toBe(3);
    out.mockClear();
    expect(await discoverCommand(args)).toBe(0);
    expect((JSON.parse(stdout()) as { newRecords: number }).newRecords).toBe(0);
  });

  it('lists errors[] in JSON for failed items', async () => {
    const db = `sqlite:${join(dir, 'cli-3', 'inventory.db')}`;
    expect(await discoverCommand(['--endpoints', `127.0.0.1:${closedPort}`, '--files', join(certsDir, 'binary.crt'), '--db', db, '--json'])).toBe(1);
    const r = JSON.parse(stdout()) as { errors: Array<{ kind: string; target: string; error: string }> };
    expect(r.errors).toEqual([
      { kind: 'file', target: join(certsDir, 'binary.crt'), error: expect.stringMatching(/not a PEM file/) },
      { kind: 'endpoint', target: `127.0.0.1:${closedPort}`, error: 'connection refused' },
    ]);
  });

  it('records tls.crt of every kubernetes.io/tls Secret through the API server', async () => {
    const other = await makeTestCert({ subject: 'CN=ingress.example', dns: ['ingress.example'] });
    const api = await fakeApiServer(
      [tlsSecret('istio-system', 'cacerts-mirror', chain.leaf.pem + chain.intermediate.pem), tlsSecret('web', 'ingress-tls', other.pem), tlsSecret('web', 'pending', '')],
      'tok-123',
    );
    try {
      const kubeconfig = join(dir, 'kubeconfig');
      writeKubeconfig(kubeconfig, api.url, api.caPem, 'tok-123');
      const dbPath = join(dir, 'cli-k8s', 'inventory.db');
      expect(await discoverCommand(['--k8s-secrets', '--kubeconfig', kubeconfig, '--db', `sqlite:${dbPath}`, '--json'])).toBe(0);
      const r = JSON.parse(stdout()) as { items: Array<{ target: string; status: string; source: string }>; newRecords: number };
      expect(r.items.map((i) => [i.target, i.status, i.source])).toEqual([
        ['istio-system/cacerts-mirror', 'ok', 'discovered:k8s-secret:istio-system/cacerts-mirror'],
        ['web/ingress-tls', 'ok', 'discovered:k8s-secret:web/ingress-tls'],
        ['web/pending', 'skipped', 'discovered:k8s-secret:web/pending'],
      ]);
      expect(r.newRecords).toBe(3);
      expect(new URL(api.requests[0]!, 'https://x').searchParams.get('fieldSelector')).toBe('type=kubernetes.io/tls');
      expect(api.requests[0]).toContain('fieldSelector=type%3Dkubernetes.io%2Ftls');
      const store = await openStore({ kind: 'sqlite', path: dbPath });
      try {
        expect((await store.get(fpOf(other)))!.source).toBe('discovered:k8s-secret:web/ingress-tls');
      } finally {
        await store.close();
      }

      // KUBECONFIG through loadFromDefault(), and a wrong token: one error item, exit 1
      out.mockClear();
      writeKubeconfig(kubeconfig, api.url, api.caPem, 'wrong');
      vi.stubEnv('KUBECONFIG', kubeconfig);
      try {
        expect(await discoverCommand(['--k8s-secrets', '--db', `sqlite:${dbPath}`])).toBe(1);
      } finally {
        vi.unstubAllEnvs();
      }
      expect(stderr()).toMatch(/meshcert discover: k8s kubernetes: cannot list TLS Secrets: API server answered HTTP 401: Unauthorized/);
    } finally {
      await api.close();
    }
  });

  it('follows continue tokens across pages and reports a 403 with the API server message', async () => {
    const secrets = await Promise.all(
      Array.from({ length: 5 }, async (_, i) => tlsSecret('ns', `s${i}`, (await makeTestCert({ subject: `CN=s${i}` })).pem)),
    );
    const api = await fakeApiServer(secrets, 't');
    try {
      const kubeconfig = join(dir, 'kubeconfig-paging');
      writeKubeconfig(kubeconfig, api.url, api.caPem, 't');
      const items = await discoverK8sSecrets({ kubeconfig, pageSize: 2 });
      expect(items.map((i) => [i.target, i.status])).toEqual([0, 1, 2, 3, 4].map((i) => [`ns/s${i}`, 'ok']));
      expect(api.requests.map((r) => new URL(r, 'https://x').searchParams.get('continue'))).toEqual([null, '2', '4']);
      writeKubeconfig(kubeconfig, api.url, api.caPem, 'forbidden');
      expect(await discoverK8sSecrets({ kubeconfig })).toEqual([
        { kind: 'k8s', target: 'kubernetes', source: null, status: 'error', error: expect.stringMatching(/HTTP 403: secrets is forbidden: User/) },
      ]);
      expect(await discoverK8sSecrets({ kubeconfig: join(dir, 'no-such-kubeconfig') })).toEqual([
        expect.objectContaining({ status: 'error', error: expect.stringMatching(/cannot load Kubernetes credentials/) }),
      ]);
    } finally {
      await api.close();
    }
  });

  it('refuses an API server whose certificate the kubeconfig CA does not sign', async () => {
    const api = await fakeApiServer([], 't');
    try {
      const kubeconfig = join(dir, 'kubeconfig-wrong-ca');
      writeKubeconfig(kubeconfig, api.url, chain.root.pem, 't');
      expect(await discoverCommand(['--k8s-secrets', '--kubeconfig', kubeconfig, '--db', `sqlite:${join(dir, 'cli-k8s-2', 'inventory.db')}`])).toBe(1);
      expect(stderr()).toMatch(/cannot list TLS Secrets/);
      expect(api.requests).toEqual([]);
    } finally {
      await api.close();
    }
  });

  it('parses arguments: values after --files/--endpoints, usage errors', () => {
    expect(parseDiscoverArgs(['--files', 'a.pem', 'b.pem', '--endpoints', 'h:1', 'h:2', '--files', 'c'])).toMatchObject({
      files: ['a.pem', 'b.pem', 'c'],
      endpoints: ['h:1', 'h:2'],
      k8sSecrets: false,
      json: false,
    });
    expect(parseDiscoverArgs(['--endpoints', 'h:1', '--endpoint-timeout', '500ms']).endpointTimeoutMs).toBe(500);
    expect(() => parseDiscoverArgs([])).toThrow(UsageError);
    expect(() => parseDiscoverArgs(['stray'])).toThrow(/unexpected argument "stray"/);
    expect(() => parseDiscoverArgs(['--json', 'x.pem'])).toThrow(UsageError);
    expect(() => parseDiscoverArgs(['--files'])).toThrow(UsageError);
    expect(() => parseDiscoverArgs(['--kubeconfig', 'k', '--files', 'a'])).toThrow(/--k8s-secrets/);
    expect(() => parseDiscoverArgs(['--files', 'a', '--endpoint-timeout', '0'])).toThrow(UsageError);
  });
});
