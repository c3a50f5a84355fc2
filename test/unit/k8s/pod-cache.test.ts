import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createKubeClient, type KubeClient } from '../../../src/k8s/client.js';
import { PodCache, PodCacheNotReadyError, PodCacheStartError, podCounts, type PodCacheOptions, type PodInfo } from '../../../src/k8s/pod-cache.js';
import { FakeKube, fakePod } from '../../support/fake-kube.js';

const TOKEN = 'pod-cache-test-token';

let fake: FakeKube;
let client: KubeClient;
const caches: PodCache[] = [];

beforeEach(async () => {
  fake = await FakeKube.start({ token: TOKEN });
  client = createKubeClient({ server: fake.url, caPem: fake.caPem, token: TOKEN }, { requestTimeoutMs: 2_000, watch: { connectTimeoutMs: 2_000 } });
});

afterEach(async () => {
  for (const c of caches.splice(0)) await c.stop();
  await fake.close();
});

function cache(opts: Partial<PodCacheOptions> = {}): PodCache {
  const c = new PodCache({ client, backoffInitialMs: 20, backoffMaxMs: 100, startTimeoutMs: 5_000, ...opts });
  caches.push(c);
  return c;
}

function seed(): void {
  fake.put('pods', fakePod({ namespace: 'istio-system', name: 'ztunnel-a', node: 'node-a', serviceAccount: 'ztunnel', uid: 'uid-ztunnel-a' }));
  fake.put('pods', fakePod({ namespace: 'app', name: 'web-1', node: 'node-a', serviceAccount: 'web', uid: 'uid-web-1' }));
  fake.put('pods', fakePod({ namespace: 'app', name: 'web-2', node: 'node-b', serviceAccount: 'web', uid: 'uid-web-2' }));
  fake.put('pods', fakePod({ namespace: 'app', name: 'job-1', node: 'node-a', serviceAccount: 'batch', phase: 'Succeeded' }));
  fake.put('pods', fakePod({ namespace: 'app', name: 'failed-1', node: 'node-a', serviceAccount: 'broken', phase: 'Failed' }));
  fake.put('pods', fakePod({ namespace: 'app', name: 'starting', node: 'node-a', serviceAccount: 'starter', phase: 'Pending' }));
  fake.put('pods', fakePod({ namespace: 'app', name: 'unscheduled', serviceAccount: 'lonely', phase: 'Pending' }));
}

describe('PodCache: initial list', () => {
  it('syncs from the list and indexes pods by name, UID and node', async () => {
    seed();
    const c = cache();
    expect(c.synced).toBe(false);
    await c.start();
    expect(c.synced).toBe(true);
    expect(c.size).toBe(7);

    expect(c.getPod('app', 'web-1')).toMatchObject({ namespace: 'app', name: 'web-1', uid: 'uid-web-1', serviceAccount: 'web', nodeName: 'node-a', phase: 'Running' });
    expect(c.getPodByUid('uid-web-2')?.name).toBe('web-2');
    expect(c.getPod('app', 'nope')).toBeUndefined();

    expect(c.hasServiceAccountOnNode('node-a', 'app', 'web')).toBe(true);
    expect(c.hasServiceAccountOnNode('node-b', 'app', 'web')).toBe(true);
    expect(c.hasServiceAccountOnNode('node-c', 'app', 'web')).toBe(false);
    expect(c.hasServiceAccountOnNode('node-a', 'other', 'web')).toBe(false);
    // Terminal phases never count; Pending on a node does.
    expect(c.hasServiceAccountOnNode('node-a', 'app', 'batch')).toBe(false);
    expect(c.hasServiceAccountOnNode('node-a', 'app', 'broken')).toBe(false);
    expect(c.hasServiceAccountOnNode('node-a', 'app', 'starter')).toBe(true);
    expect(c.serviceAccountsOnNode('node-a')).toEqual(['app/starter', 'app/web', 'istio-system/ztunnel']);

    const list = fake.requests.find((r) => r.path === '/api/v1/pods' && !r.watch);
    expect(list).toMatchObject({ method: 'GET', query: { limit: '500' }, authorization: `Bearer ${TOKEN}` });
    await vi.waitFor(() => expect(fake.watchCount('pods')).toBe(1));
    const watch = fake.requests.find((r) => r.path === '/api/v1/pods' && r.watch)!;
    expect(watch.query).toMatchObject({ watch: 'true', allowWatchBookmarks: 'true', resourceVersion: fake.resourceVersion });
    expect(Number(watch.query.timeoutSeconds)).toBeGreaterThanOrEqual(300);
    expect(c.status()).toMatchObject({ synced: true, connected: true, pods: 7, listedResourceVersion: fake.resourceVersion });
  });

  it('pages through a large list (limit/continue)', async () => {
    for (let i = 0; i < 7; i++) fake.put('pods', fakePod({ namespace: 'n', name: `p${i}`, node: 'node-a', serviceAccount: `sa${i}` }));
    const c = cache({ pageSize: 3 });
    await c.start();
    expect(c.size).toBe(7);
    const lists = fake.requests.filter((r) => r.path === '/api/v1/pods' && !r.watch);
    expect(lists.map((r) => Boolean(r.query.continue))).toEqual([false, true, true]);
    expect(c.hasServiceAccountOnNode('node-a', 'n', 'sa6')).toBe(true);
  });

  it('passes a field selector to both the list and the watch', async () => {
    seed();
    const c = cache({ fieldSelector: 'spec.nodeName=node-a' });
    await c.start();
    expect(c.getPod('app', 'web-2')).toBeUndefined();
    expect(c.getPod('app', 'web-1')).toBeDefined();
    await vi.waitFor(() => expect(fake.watchCount('pods')).toBe(1));
    for (const r of fake.requests.filter((x) => x.path === '/api/v1/pods')) expect(r.query.fieldSelector).toBe('spec.nodeName=node-a');
    // A pod moving onto the node arrives as ADDED through the selector-filtered watch.
    fake.put('pods', fakePod({ namespace: 'app', name: 'late', node: 'node-a', serviceAccount: 'late' }));
    await vi.waitFor(() => expect(c.hasServiceAccountOnNode('node-a', 'app', 'late')).toBe(true));
  });

  it('rejects start() with a clear error when the API server is unreachable, and reports not ready', async () => {
    const gone = await FakeKube.start();
    const url = gone.url;
    await gone.close();
    const c = new PodCache({ client: createKubeClient({ server: url, caPem: fake.caPem, token: TOKEN }), backoffInitialMs: 50, startTimeoutMs: 5_000 });
    caches.push(c);
    const err = await c.start().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PodCacheStartError);
    expect((err as Error).message).toMatch(/^cannot list pods: .*ECONNREFUSED/);
    expect((err as Error).message).toContain(url);
    expect(c.synced).toBe(false);
    expect(() => c.getPod('a', 'b')).toThrow(PodCacheNotReadyError);
    expect(() => c.hasServiceAccountOnNode('n', 'a', 'b')).toThrow(/the first list of pods has not completed/);
  });

  it('explains RBAC when listing pods is forbidden, then syncs once the API server allows it', async () => {
    seed();
    fake.fail({ method: 'GET', path: '/api/v1/pods' }, { status: 403, message: 'pods is forbidden: User "system:serviceaccount:istio-system:meshcert" cannot list resource "pods" in API group "" at the cluster scope' });
    const c = cache();
    const err = await c.start().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PodCacheStartError);
    expect((err as Error).message).toContain('HTTP 403: pods is forbidden');
    expect((err as Error).message).toContain('needs RBAC to list and watch pods');
    // It keeps retrying in the background.
    await vi.waitFor(() => expect(c.synced).toBe(true));
    expect(c.size).toBe(7);
  });
});

describe('PodCache: watch events', () => {
  it('follows ADDED, MODIFIED and DELETED', async () => {
    seed();
    const c = cache();
    await c.start();
    await vi.waitFor(() => expect(fake.watchCount('pods')).toBe(1));

    fake.put('pods', fakePod({ namespace: 'app', name: 'api-1', node: 'node-c', serviceAccount: 'api', uid: 'uid-api-1' }));
    await vi.waitFor(() => expect(c.getPod('app', 'api-1')?.uid).toBe('uid-api-1'));
    expect(c.hasServiceAccountOnNode('node-c', 'app', 'api')).toBe(true);

    // MODIFIED: the pod finishes.
    fake.put('pods', fakePod({ namespace: 'app', name: 'api-1', node: 'node-c', serviceAccount: 'api', phase: 'Succeeded' }));
    await vi.waitFor(() => expect(c.getPod('app', 'api-1')?.phase).toBe('Succeeded'));
    expect(c.hasServiceAccountOnNode('node-c', 'app', 'api')).toBe(false);

    // DELETED, then re-created with the same name and a new UID.
    fake.delete('pods', 'app', 'api-1');
    await vi.waitFor(() => expect(c.getPod('app', 'api-1')).toBeUndefined());
    expect(c.getPodByUid('uid-api-1')).toBeUndefined();
    expect(c.serviceAccountsOnNode('node-c')).toEqual([]);
    fake.put('pods', fakePod({ namespace: 'app', name: 'api-1', node: 'node-d', serviceAccount: 'api', uid: 'uid-api-1b' }));
    await vi.waitFor(() => expect(c.getPod('app', 'api-1')?.uid).toBe('uid-api-1b'));
    expect(c.getPodByUid('uid-api-1')).toBeUndefined();
    expect(c.hasServiceAccountOnNode('node-d', 'app', 'api')).toBe(true);
  });

  it('counts a terminating pod only until its deletionTimestamp', async () => {
    let now = Date.parse('2030-01-01T00:00:00Z');
    fake.put('pods', fakePod({ namespace: 'app', name: 'leaving', node: 'node-a', serviceAccount: 'leaver', deletionTimestamp: '2030-01-01T00:00:30Z' }));
    const c = cache({ now: () => now });
    await c.start();
    expect(c.getPod('app', 'leaving')?.deletionTimestamp?.toISOString()).toBe('2030-01-01T00:00:30.000Z');
    expect(c.hasServiceAccountOnNode('node-a', 'app', 'leaver')).toBe(true);
    now += 31_000;
    expect(c.hasServiceAccountOnNode('node-a', 'app', 'leaver')).toBe(false);
  });

  it('resumes from the last resourceVersion after the watch stream is cut, replaying missed events', async () => {
    seed();
    const c = cache();
    await c.start();
    await vi.waitFor(() => expect(fake.watchCount('pods')).toBe(1));
    const rv = fake.resourceVersion;
    const listsBefore = fake.requests.filter((r) => r.path === '/api/v1/pods' && !r.watch).length;

    // The connection drops; the fake refuses the first two re-watches.
    fake.fail({ path: '/api/v1/pods', watch: true }, { status: 503 }, 2);
    fake.cutWatches('pods');
    fake.put('pods', fakePod({ namespace: 'app', name: 'while-away', node: 'node-a', serviceAccount: 'away' }));
    fake.delete('pods', 'app', 'web-1');

    await vi.waitFor(() => expect(c.getPod('app', 'while-away')).toBeDefined());
    await vi.waitFor(() => expect(c.getPod('app', 'web-1')).toBeUndefined());
    expect(c.synced).toBe(true); // a short outage does not make the cache "not ready"
    const watches = fake.requests.filter((r) => r.path === '/api/v1/pods' && r.watch);
    expect(watches.length).toBeGreaterThanOrEqual(4);
    expect(watches.slice(1).every((w) => w.query.resourceVersion === rv)).toBe(true);
    expect(fake.requests.filter((r) => r.path === '/api/v1/pods' && !r.watch).length).toBe(listsBefore); // no re-list needed
    expect(c.status().lastError).toMatch(/HTTP 503|reset|socket hang up/);
  });

  it('re-lists when its resourceVersion has expired (410), dropping pods deleted meanwhile', async () => {
    seed();
    const c = cache();
    await c.start();
    await vi.waitFor(() => expect(fake.watchCount('pods')).toBe(1));
    fake.fail({ path: '/api/v1/pods', watch: true }, { status: 503 }, 1);
    fake.cutWatches('pods');
    fake.delete('pods', 'app', 'web-2');
    fake.put('pods', fakePod({ namespace: 'app', name: 'new', node: 'node-b', serviceAccount: 'fresh' }));
    fake.compact();

    await vi.waitFor(() => expect(c.getPod('app', 'new')).toBeDefined());
    expect(c.getPod('app', 'web-2')).toBeUndefined();
    expect(c.hasServiceAccountOnNode('node-b', 'app', 'web')).toBe(false);
    expect(c.status().listedResourceVersion).toBe(fake.resourceVersion);
    expect(fake.requests.filter((r) => r.path === '/api/v1/pods' && !r.watch).length).toBe(2);
  });

  it('reports not ready while the watch stays broken past maxStaleMs, and recovers', async () => {
    seed();
    const c = cache({ maxStaleMs: 100 });
    await c.start();
    await vi.waitFor(() => expect(fake.watchCount('pods')).toBe(1));
    fake.fail({ path: '/api/v1/pods' }, { status: 503 }, 1_000_000);
    fake.cutWatches('pods');
    await vi.waitFor(() => expect(c.synced).toBe(false));
    expect(() => c.getPod('app', 'web-1')).toThrow(/watch on the Kubernetes API server has been broken/);
    fake.clearFaults();
    // A resumed watch counts once it has stayed up a second (or delivered an event).
    await vi.waitFor(() => expect(c.synced).toBe(true), { timeout: 3_000 });
    expect(c.getPod('app', 'web-1')).toBeDefined();
  });

  it('goes stale past maxStaleMs when every watch is accepted and cut at once: a flapping watch is a broken one', async () => {
    seed();
    const c = cache({ maxStaleMs: 300 });
    await c.start();
    await vi.waitFor(() => expect(fake.watchCount('pods')).toBe(1));
    const cutter = setInterval(() => fake.cutWatches('pods'), 5);
    try {
      await vi.waitFor(() => expect(c.synced).toBe(false), { timeout: 3_000 });
      expect(() => c.getPod('app', 'web-1')).toThrow(/watch on the Kubernetes API server has been broken/);
    } finally {
      clearInterval(cutter);
    }
    await vi.waitFor(() => expect(c.synced).toBe(true), { timeout: 3_000 });
  });

  it('stop() closes the watch and makes lookups not ready; a stopped cache cannot restart', async () => {
    seed();
    const c = cache();
    await c.start();
    await vi.waitFor(() => expect(fake.watchCount('pods')).toBe(1));
    await c.stop();
    expect(c.synced).toBe(false);
    expect(() => c.getPod('app', 'web-1')).toThrow(/not running/);
    await vi.waitFor(() => expect(fake.watchCount('pods')).toBe(0));
    await expect(c.start()).rejects.toThrow(/cannot be started again/);
  });
});

describe('podCounts', () => {
  const base: PodInfo = { namespace: 'n', name: 'p', uid: 'u', serviceAccount: 'sa', nodeName: 'node', phase: 'Running', deletionTimestamp: undefined, resourceVersion: '1' };
  it('counts Pending/Running pods bound to a node with a service account', () => {
    expect(podCounts(base, 0)).toBe(true);
    expect(podCounts({ ...base, phase: 'Pending' }, 0)).toBe(true);
    for (const phase of ['Succeeded', 'Failed', 'Unknown', '']) expect(podCounts({ ...base, phase }, 0)).toBe(false);
    expect(podCounts({ ...base, nodeName: '' }, 0)).toBe(false);
    expect(podCounts({ ...base, serviceAccount: '' }, 0)).toBe(false);
    expect(podCounts({ ...base, deletionTimestamp: new Date(1000) }, 999)).toBe(true);
    expect(podCounts({ ...base, deletionTimestamp: new Date(1000) }, 1000)).toBe(false);
  });
});
