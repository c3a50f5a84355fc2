import https from 'node:https';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ApiException, V1MicroTime, type V1Namespace } from '@kubernetes/client-node';
import { TokenReviewAuthenticator } from '../../../src/auth/tokenreview.js';
import { createKubeClient, describeKubeError, kubeStatusCode, type KubeClient } from '../../../src/k8s/client.js';
import { FakeKube, fakePod, serviceAccountUser } from '../../support/fake-kube.js';

const TOKEN = 'fake-kube-test-token';

let fake: FakeKube;
let client: KubeClient;

beforeEach(async () => {
  fake = await FakeKube.start({ token: TOKEN });
  client = createKubeClient({ server: fake.url, caPem: fake.caPem, token: TOKEN });
});

afterEach(async () => {
  await fake.close();
});

/** A raw request to the fake (for shapes the typed client hides). */
function raw(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<{ status: number; json: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = https.request(
      `${fake.url}${path}`,
      {
        method,
        ca: fake.caPem,
        headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json', ...headers, ...(data ? { 'content-length': Buffer.byteLength(data) } : {}) },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown> }));
      },
    );
    req.on('error', reject);
    req.end(data);
  });
}

async function apiError(p: Promise<unknown>): Promise<{ code: number; status: Record<string, unknown> }> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(ApiException);
    const e = err as ApiException<unknown>;
    return { code: e.code, status: JSON.parse(String(e.body)) as Record<string, unknown> };
  }
  throw new Error('expected the call to fail');
}

describe('fake-kube: ConfigMaps, Secrets, Leases through @kubernetes/client-node', () => {
  it('creates, reads, lists by label across namespaces, replaces and deletes ConfigMaps', async () => {
    const created = await client.core.createNamespacedConfigMap({
      namespace: 'a',
      body: { metadata: { name: 'istio-ca-root-cert', labels: { 'istio.io/config': 'true' } }, data: { 'root-cert.pem': 'x' } },
    });
    expect(created.metadata?.uid).toMatch(/^[0-9a-f-]{36}$/);
    expect(created.metadata?.resourceVersion).toMatch(/^\d+$/);
    await client.core.createNamespacedConfigMap({ namespace: 'b', body: { metadata: { name: 'istio-ca-root-cert', labels: { 'istio.io/config': 'true' } }, data: {} } });
    await client.core.createNamespacedConfigMap({ namespace: 'b', body: { metadata: { name: 'other' } } });

    const read = await client.core.readNamespacedConfigMap({ namespace: 'a', name: 'istio-ca-root-cert' });
    expect(read.data).toEqual({ 'root-cert.pem': 'x' });
    expect(read.kind).toBe('ConfigMap');

    const list = await client.core.listConfigMapForAllNamespaces({ labelSelector: 'istio.io/config=true' });
    expect(list.items.map((c) => `${c.metadata?.namespace}/${c.metadata?.name}`).sort()).toEqual(['a/istio-ca-root-cert', 'b/istio-ca-root-cert']);
    expect(list.metadata?.resourceVersion).toBe(fake.resourceVersion);
    expect(fake.requests.at(-1)).toMatchObject({ method: 'GET', path: '/api/v1/configmaps', query: { labelSelector: 'istio.io/config=true' }, authorization: `Bearer ${TOKEN}` });

    const replaced = await client.core.replaceNamespacedConfigMap({ namespace: 'a', name: 'istio-ca-root-cert', body: { ...read, data: { 'root-cert.pem': 'y' } } });
    expect(Number(replaced.metadata?.resourceVersion)).toBeGreaterThan(Number(read.metadata?.resourceVersion));
    expect(replaced.metadata?.uid).toBe(created.metadata?.uid);
    expect(fake.get('configmaps', 'a', 'istio-ca-root-cert')?.data).toEqual({ 'root-cert.pem': 'y' });

    await client.core.deleteNamespacedConfigMap({ namespace: 'a', name: 'istio-ca-root-cert' });
    expect(fake.get('configmaps', 'a', 'istio-ca-root-cert')).toBeUndefined();
  });

  it('answers a stale resourceVersion on replace with 409 Conflict (a Status object)', async () => {
    const cm = await client.core.createNamespacedConfigMap({ namespace: 'a', body: { metadata: { name: 'c' }, data: { v: '1' } } });
    await client.core.replaceNamespacedConfigMap({ namespace: 'a', name: 'c', body: { ...cm, data: { v: '2' } } });
    const { code, status } = await apiError(client.core.replaceNamespacedConfigMap({ namespace: 'a', name: 'c', body: { ...cm, data: { v: '3' } } }));
    expect(code).toBe(409);
    expect(status).toMatchObject({ kind: 'Status', status: 'Failure', reason: 'Conflict', code: 409 });
    expect(String(status.message)).toContain('the object has been modified');
    expect(fake.get('configmaps', 'a', 'c')?.data).toEqual({ v: '2' });
  });

  it('answers a duplicate create with 409 AlreadyExists and a missing object with 404 NotFound', async () => {
    await client.core.createNamespacedSecret({ namespace: 'istio-system', body: { metadata: { name: 'istiod-tls' }, type: 'kubernetes.io/tls', data: {} } });
    const dup = await apiError(client.core.createNamespacedSecret({ namespace: 'istio-system', body: { metadata: { name: 'istiod-tls' } } }));
    expect(dup).toMatchObject({ code: 409, status: { reason: 'AlreadyExists' } });
    const missing = await apiError(client.core.readNamespacedSecret({ namespace: 'istio-system', name: 'cacerts' }));
    expect(missing).toMatchObject({ code: 404, status: { kind: 'Status', reason: 'NotFound', message: 'secrets "cacerts" not found', details: { name: 'cacerts', kind: 'secrets' } } });
    expect(describeKubeError(await client.core.readNamespacedSecret({ namespace: 'x', name: 'y' }).catch((e: unknown) => e))).toBe('HTTP 404: secrets "y" not found');
  });

  it('supports Lease create/read/replace with resourceVersion conflicts (leader election)', async () => {
    // MicroTime needs six fractional digits: a plain Date is refused, as by a real API server.
    const refused = await apiError(
      client.coordination.createNamespacedLease({ namespace: 'istio-system', body: { metadata: { name: 'meshcert-leader' }, spec: { holderIdentity: 'pod-a', renewTime: new Date() } } }),
    );
    expect(refused.code).toBe(400);
    expect(String(refused.status.message)).toMatch(/^Lease in version "v1" cannot be handled as a Lease: parsing time ".*" as "2006-01-02T15:04:05.000000Z07:00": cannot parse "\.\d{3}Z" as "\.000000"$/);

    const now = new V1MicroTime();
    const body = { metadata: { name: 'meshcert-leader' }, spec: { holderIdentity: 'pod-a', leaseDurationSeconds: 15, acquireTime: now, renewTime: now, leaseTransitions: 0 } };
    const lease = await client.coordination.createNamespacedLease({ namespace: 'istio-system', body });
    expect(lease.spec?.holderIdentity).toBe('pod-a');
    expect(fake.requests.at(-1)?.path).toBe('/apis/coordination.k8s.io/v1/namespaces/istio-system/leases');
    // 1.4 does not turn MicroTime back into a Date: it reads back as the RFC 3339 string.
    expect(lease.spec?.renewTime as unknown).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);

    const takeover = await client.coordination.replaceNamespacedLease({
      namespace: 'istio-system',
      name: 'meshcert-leader',
      body: { ...lease, spec: { ...lease.spec, holderIdentity: 'pod-b', renewTime: new V1MicroTime() } },
    });
    expect(takeover.spec?.holderIdentity).toBe('pod-b');
    // pod-a still holds the old resourceVersion: its renewal loses.
    const lost = await apiError(
      client.coordination.replaceNamespacedLease({ namespace: 'istio-system', name: 'meshcert-leader', body: { ...lease, spec: { ...lease.spec, renewTime: new V1MicroTime() } } }),
    );
    expect(lost.code).toBe(409);
    expect(String(lost.status.message)).toBe(
      'Operation cannot be fulfilled on leases.coordination.k8s.io "meshcert-leader": the object has been modified; please apply your changes to the latest version and try again',
    );
    const read = await client.coordination.readNamespacedLease({ namespace: 'istio-system', name: 'meshcert-leader' });
    expect(read.spec?.holderIdentity).toBe('pod-b');
  });

  it('applies merge and JSON patches, and refuses a patch with a stale resourceVersion', async () => {
    fake.put('configmaps', { metadata: { name: 'p', namespace: 'n', labels: { a: '1' } }, data: { x: '1', y: '2' } });
    const merged = await raw('PATCH', '/api/v1/namespaces/n/configmaps/p', { data: { y: null, z: '3' } }, { 'content-type': 'application/merge-patch+json' });
    expect(merged.status).toBe(200);
    expect(merged.json.data).toEqual({ x: '1', z: '3' });
    const patched = await raw('PATCH', '/api/v1/namespaces/n/configmaps/p', [{ op: 'replace', path: '/data/x', value: '9' }, { op: 'add', path: '/metadata/labels/b', value: '2' }], {
      'content-type': 'application/json-patch+json',
    });
    expect(patched.json).toMatchObject({ data: { x: '9', z: '3' }, metadata: { labels: { a: '1', b: '2' } } });
    const stale = await raw('PATCH', '/api/v1/namespaces/n/configmaps/p', { metadata: { resourceVersion: '1' }, data: { x: '0' } }, { 'content-type': 'application/merge-patch+json' });
    expect(stale.status).toBe(409);
  });

  it('refuses a missing or wrong bearer token with 401', async () => {
    const other = createKubeClient({ server: fake.url, caPem: fake.caPem, token: 'wrong' });
    const err = await other.core.listNamespace().catch((e: unknown) => e);
    expect(kubeStatusCode(err)).toBe(401);
    const noToken = await raw('GET', '/api/v1/namespaces', undefined, { authorization: '' });
    expect(noToken).toMatchObject({ status: 401, json: { kind: 'Status', reason: 'Unauthorized' } });
  });

  it('paginates lists with limit/continue', async () => {
    for (let i = 0; i < 5; i++) fake.put('pods', fakePod({ namespace: 'n', name: `p${i}`, node: 'node-a' }));
    const first = await client.core.listPodForAllNamespaces({ limit: 2 });
    expect(first.items.map((p) => p.metadata?.name)).toEqual(['p0', 'p1']);
    expect(first.metadata?._continue).toBeTruthy();
    const second = await client.core.listPodForAllNamespaces({ limit: 2, _continue: first.metadata!._continue! });
    expect(second.items.map((p) => p.metadata?.name)).toEqual(['p2', 'p3']);
    expect(second.metadata?.resourceVersion).toBe(first.metadata?.resourceVersion);
  });

  it('filters pods by field selector and rejects unsupported field labels', async () => {
    fake.put('pods', fakePod({ namespace: 'n', name: 'a', node: 'node-a' }));
    fake.put('pods', fakePod({ namespace: 'n', name: 'b', node: 'node-b' }));
    const onA = await client.core.listPodForAllNamespaces({ fieldSelector: 'spec.nodeName=node-a' });
    expect(onA.items.map((p) => p.metadata?.name)).toEqual(['a']);
    const bad = await apiError(client.core.listPodForAllNamespaces({ fieldSelector: 'spec.hostname=x' }));
    expect(bad).toMatchObject({ code: 400, status: { reason: 'BadRequest', message: 'field label not supported: spec.hostname' } });
  });
});

describe('fake-kube: watches', () => {
  it('streams namespace events to an informer, resumes after a cut, and re-lists after 410', async () => {
    fake.put('namespaces', { metadata: { name: 'kube-system' } });
    const informer = client.makeInformer('namespaces');
    const seen: string[] = [];
    informer.on('add', (ns: V1Namespace) => seen.push(`add ${ns.metadata?.name}`));
    informer.on('delete', (ns: V1Namespace) => seen.push(`delete ${ns.metadata?.name}`));
    const errors: unknown[] = [];
    informer.on('error', (e: unknown) => errors.push(e));
    await informer.start();
    try {
      expect(seen).toEqual(['add kube-system']);
      fake.put('namespaces', { metadata: { name: 'team-a' } });
      await vi.waitFor(() => expect(seen).toContain('add team-a'));

      // A clean end of the stream (server timeout): ListWatch re-watches from its resourceVersion.
      const rvBefore = informer.latestResourceVersion();
      fake.endWatches('namespaces');
      await vi.waitFor(() => expect(fake.watchCount('namespaces')).toBe(1));
      expect(fake.requests.filter((r) => r.watch).at(-1)?.query.resourceVersion).toBe(rvBefore);
      fake.delete('namespaces', undefined, 'team-a');
      await vi.waitFor(() => expect(seen).toContain('delete team-a'));

      // Expired: an ERROR 410 event, then the informer lists again.
      const lists = fake.requests.filter((r) => !r.watch && r.path === '/api/v1/namespaces').length;
      fake.expireWatches('namespaces');
      await vi.waitFor(() => expect(fake.requests.filter((r) => !r.watch && r.path === '/api/v1/namespaces').length).toBe(lists + 1));
      expect(errors).toEqual([]);
    } finally {
      await informer.stop();
    }
    await vi.waitFor(() => expect(fake.watchCount()).toBe(0));
  });

  it('sends DELETED when an object stops matching the watch selector and ADDED when it starts', async () => {
    const informer = client.makeInformer('configmaps', { labelSelector: 'istio.io/config=true' });
    const seen: string[] = [];
    informer.on('add', (c) => seen.push(`add ${c.metadata?.name}`));
    informer.on('delete', (c) => seen.push(`delete ${c.metadata?.name}`));
    await informer.start();
    try {
      fake.put('configmaps', { metadata: { name: 'x', namespace: 'n' } });
      fake.put('configmaps', { metadata: { name: 'x', namespace: 'n', labels: { 'istio.io/config': 'true' } } });
      await vi.waitFor(() => expect(seen).toEqual(['add x']));
      fake.put('configmaps', { metadata: { name: 'x', namespace: 'n', labels: {} } });
      await vi.waitFor(() => expect(seen).toEqual(['add x', 'delete x']));
    } finally {
      await informer.stop();
    }
  });
});

describe('fake-kube: TokenReview', () => {
  it('answers with the configured responder (cross-checked with the TokenReview authenticator)', async () => {
    // Shaped like service-account tokens (the authenticator refuses anything else unasked); unsigned: the responder decides.
    const shaped = (sa: string): string => `${Buffer.from('{"alg":"RS256"}').toString('base64url')}.${Buffer.from(JSON.stringify({ sub: `system:serviceaccount:istio-system:${sa}` })).toString('base64url')}.c2ln`;
    const good = shaped('ztunnel');
    const bad = shaped('other');
    fake.tokenReviewer = (spec) =>
      spec.token === good
        ? {
            authenticated: true,
            audiences: spec.audiences ?? [],
            user: serviceAccountUser('istio-system', 'ztunnel', { 'authentication.kubernetes.io/pod-name': ['ztunnel-abc'], 'authentication.kubernetes.io/pod-uid': ['uid-1'], 'authentication.kubernetes.io/node-name': ['node-a'] }),
          }
        : { authenticated: false, error: 'invalid bearer token' };
    const auth = new TokenReviewAuthenticator({ apiServer: fake.url, caPem: fake.caPem, bearerToken: TOKEN, trustDomain: 'cluster.local', env: {} });
    try {
      const caller = await auth.authenticate({ bearerToken: good });
      expect(caller).toMatchObject({ namespace: 'istio-system', serviceAccount: 'ztunnel', pod: { name: 'ztunnel-abc', uid: 'uid-1' }, node: { name: 'node-a' } });
      await expect(auth.authenticate({ bearerToken: bad })).rejects.toMatchObject({ code: 'AUTH_INVALID' });
      fake.tokenReviewer = () => ({ httpStatus: 503 });
      await expect(auth.authenticate({ bearerToken: good })).rejects.toMatchObject({ code: 'AUTH_BACKEND_UNAVAILABLE' });
      expect(fake.requests.at(-1)).toMatchObject({ method: 'POST', path: '/apis/authentication.k8s.io/v1/tokenreviews', body: { spec: { token: good, audiences: ['istio-ca'] } } });
    } finally {
      auth.close();
    }
  });
});
