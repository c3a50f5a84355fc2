/**
 * Root certificate distribution (src/controllers/root-distribution.ts) against FakeKube: a real
 * Kubernetes API server was not available here, so these tests use the loopback fake (real JSON
 * shapes, list+watch with selectors, 409 conflicts, fault injection).
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ISTIO_CONFIG_LABEL, ROOT_CERT_CONFIGMAP, ROOT_CERT_KEY, RootCertDistributor, type RootCertDistributorOptions } from '../../../src/controllers/root-distribution.js';
import { FakeKube, type FakeObject } from '../../support/fake-kube.js';
import { asLog, clientFor, makeTestCa, recordingLog, until, writesTo } from './support.js';

const ROOT_1 = '-----BEGIN CERTIFICATE-----\nMIIBroot1\n-----END CERTIFICATE-----\n';
const ROOT_2 = '-----BEGIN CERTIFICATE-----\nMIIBroot2\n-----END CERTIFICATE-----\n';
const TOKEN = 'token-distributor';

let fake: FakeKube;
let root: string;
let leader: boolean;
const stops: Array<() => Promise<void>> = [];

beforeEach(async () => {
  fake = await FakeKube.start();
  root = ROOT_1;
  leader = true;
});

afterEach(async () => {
  for (const s of stops.splice(0)) await s();
  await fake.close();
});

function distributor(extra: Partial<RootCertDistributorOptions> = {}): RootCertDistributor {
  const d = new RootCertDistributor({
    kube: clientFor(fake, TOKEN),
    rootBundle: () => root,
    isLeader: () => leader,
    queue: { qps: 1000, burst: 1000, retryBaseMs: 50, retryMaxMs: 400 },
    informerBackoffInitialMs: 50,
    informerBackoffMaxMs: 200,
    ...extra,
  });
  stops.push(() => d.stop());
  return d;
}

const ns = (name: string, extra: Partial<FakeObject['metadata']> = {}, status?: Record<string, unknown>): FakeObject => ({
  metadata: { name, ...extra },
  ...(status ? { status } : {}),
});
const cm = (namespace: string) => fake.get('configmaps', namespace, ROOT_CERT_CONFIGMAP) as (FakeObject & { data?: Record<string, string> }) | undefined;
const rootIn = (namespace: string): string | undefined => cm(namespace)?.data?.[ROOT_CERT_KEY];

/**
 * `count` namespaces, each given its ConfigMap by a distributor limited to 10 writes a second
 * (burst 10), which is then idle with its tokens back: a no-op queued after holds a new namespace
 * back by a tenth of a second each.
 */
async function writtenEverywhere(count: number): Promise<{ names: string[]; d: RootCertDistributor }> {
  const names = Array.from({ length: count }, (_, i) => `ns-${i}`);
  for (const n of names) fake.put('namespaces', ns(n));
  const d = distributor({ queue: { qps: 10, burst: 10, retryBaseMs: 50, retryMaxMs: 400 } });
  d.start();
  await until(() => names.every((n) => rootIn(n) === ROOT_1), 15_000, 'every namespace');
  await d.idle();
  await new Promise((r) => setTimeout(r, 1_100)); // the rate limit's tokens back
  return { names, d };
}

/** Milliseconds until a namespace created now has its ConfigMap with `bundle`. */
async function lateNamespaceWaits(bundle: string): Promise<number> {
  const t0 = Date.now();
  fake.put('namespaces', ns('late'));
  await until(() => rootIn('late') === bundle, 10_000, 'the late namespace');
  return Date.now() - t0;
}

describe('RootCertDistributor', () => {
  it('leaves a ConfigMap holding the same certificates written otherwise (as istiod writes its file), and rewrites other certificates', async () => {
    const ca = await makeTestCa();
    stops.push(async () => ca.cleanup());
    const other = await makeTestCa('other');
    stops.push(async () => other.cleanup());
    root = ca.rootPem;
    fake.put('namespaces', ns('default'));
    // The same root, as another writer formats it: a comment, CRLF line ends, no final newline.
    const istiodBytes = `# istiod's root-cert.pem\r\n${ca.rootPem.trim().replace(/\n/g, '\r\n')}`;
    fake.put('configmaps', { metadata: { name: ROOT_CERT_CONFIGMAP, namespace: 'default', labels: { [ISTIO_CONFIG_LABEL]: 'true' } }, data: { [ROOT_CERT_KEY]: istiodBytes } } as FakeObject);
    fake.put('namespaces', ns('team'));
    fake.put('configmaps', { metadata: { name: ROOT_CERT_CONFIGMAP, namespace: 'team', labels: { [ISTIO_CONFIG_LABEL]: 'true' } }, data: { [ROOT_CERT_KEY]: other.rootPem } } as FakeObject);
    const d = distributor();
    d.start();
    await until(() => rootIn('team') === ca.rootPem, 5_000, 'the other root replaced');
    await d.idle();
    expect(rootIn('default')).toBe(istiodBytes);
    expect(writesTo(fake, 'configmaps').map((w) => w.path)).toEqual([expect.stringContaining('/namespaces/team/')]);
  });

  it('a resync queues only namespaces whose ConfigMap is not up to date, so a new namespace does not wait behind the others', async () => {
    const { d } = await writtenEverywhere(60);
    d.resyncAll();
    expect(await lateNamespaceWaits(ROOT_1)).toBeLessThan(3_500); // queued behind the resync at 10 writes/s: about 5 s
  });

  it("a rotation's own writes, seen again through the watch, are not queued again, so a namespace created right after does not wait behind them", async () => {
    const { names, d } = await writtenEverywhere(40);
    root = ROOT_1 + ROOT_2;
    d.onRootBundleChanged();
    await until(() => names.every((n) => rootIn(n) === ROOT_1 + ROOT_2), 15_000, 'the rotation');
    // Each replace comes back as a watch update: 40 no-ops at 10 writes/s would hold it ~4 s.
    expect(await lateNamespaceWaits(ROOT_1 + ROOT_2)).toBeLessThan(2_000);
  });

  it('a label change on namespaces whose ConfigMap is up to date queues nothing, so a namespace created right after does not wait', async () => {
    const { names } = await writtenEverywhere(60);
    for (const n of names) fake.put('namespaces', ns(n, { labels: { team: 'relabelled' } }));
    await new Promise((r) => setTimeout(r, 200)); // the watch delivers the updates
    expect(await lateNamespaceWaits(ROOT_1)).toBeLessThan(2_000); // 60 no-op turns at 10 writes/s: about 5 s
  });

  it('creates the ConfigMap in every existing and new namespace, never in excluded or terminating ones', async () => {
    for (const n of ['default', 'team-a', 'kube-system', 'secret-team']) fake.put('namespaces', ns(n));
    fake.put('namespaces', ns('going', { deletionTimestamp: new Date().toISOString() }, { phase: 'Terminating' }));
    const d = distributor({ excludeNamespaces: ['secret-team'] });
    d.start();
    await until(() => ['default', 'team-a', 'kube-system'].every((n) => rootIn(n) === ROOT_1), 5_000, 'the first namespaces');
    expect(cm('default')).toMatchObject({ metadata: { labels: { [ISTIO_CONFIG_LABEL]: 'true' } }, data: { [ROOT_CERT_KEY]: ROOT_1 } });

    fake.put('namespaces', ns('team-b'));
    await until(() => rootIn('team-b') === ROOT_1, 3_000, 'the new namespace');
    // An excluded namespace that appears later is left alone too.
    fake.put('namespaces', ns('secret-team', { labels: { x: 'y' } }));
    await new Promise((r) => setTimeout(r, 300));
    await d.idle();
    expect(cm('secret-team')).toBeUndefined();
    expect(cm('going')).toBeUndefined();
    expect(fake.list('configmaps').map((c) => c.metadata.namespace).sort()).toEqual(['default', 'kube-system', 'team-a', 'team-b']);
    expect(writesTo(fake, 'configmaps').every((r) => r.authorization === `Bearer ${TOKEN}`)).toBe(true);
    expect(d.status()).toMatchObject({ synced: true, created: 4, updated: 0 });
  });

  it('with a namespace selector, writes only into matching namespaces, and into one that starts matching', async () => {
    fake.put('namespaces', ns('mesh-a', { labels: { 'istio-injection': 'enabled' } }));
    fake.put('namespaces', ns('plain'));
    const d = distributor({ namespaceSelector: 'istio-injection=enabled' });
    d.start();
    await until(() => rootIn('mesh-a') === ROOT_1, 5_000, 'mesh-a');
    await d.idle();
    expect(cm('plain')).toBeUndefined();
    expect(fake.requests.some((r) => r.path === '/api/v1/namespaces' && r.query.labelSelector === 'istio-injection=enabled')).toBe(true);

    fake.put('namespaces', ns('plain', { labels: { 'istio-injection': 'enabled' } }));
    await until(() => rootIn('plain') === ROOT_1, 3_000, 'plain after labelling');
  });

  it('repairs a user edit of root-cert.pem (keeping other keys and labels) and recreates a deleted ConfigMap', async () => {
    fake.put('namespaces', ns('a'));
    fake.put('namespaces', ns('b'));
    const d = distributor();
    d.start();
    await until(() => rootIn('a') === ROOT_1 && rootIn('b') === ROOT_1, 5_000, 'initial writes');

    const current = cm('a')!;
    fake.put('configmaps', {
      ...current,
      metadata: { ...current.metadata, labels: { ...current.metadata.labels, team: 'x' }, annotations: { note: 'keep me' } },
      data: { [ROOT_CERT_KEY]: 'tampered', 'extra.pem': 'user data' },
    });
    await until(() => rootIn('a') === ROOT_1, 3_000, 'the repair');
    expect(cm('a')).toMatchObject({
      metadata: { labels: { [ISTIO_CONFIG_LABEL]: 'true', team: 'x' }, annotations: { note: 'keep me' } },
      data: { [ROOT_CERT_KEY]: ROOT_1, 'extra.pem': 'user data' },
    });
    // A removed label is restored as well.
    const again = cm('a')!;
    fake.put('configmaps', { ...again, metadata: { ...again.metadata, labels: {} } });
    await until(() => cm('a')?.metadata.labels?.[ISTIO_CONFIG_LABEL] === 'true', 3_000, 'the label repair');

    fake.delete('configmaps', 'b', ROOT_CERT_CONFIGMAP);
    await until(() => rootIn('b') === ROOT_1, 3_000, 'the re-creation');
  });

  it('updates every namespace when the root bundle changes', async () => {
    const names = Array.from({ length: 12 }, (_, i) => `ns-${i}`);
    for (const n of names) fake.put('namespaces', ns(n));
    const d = distributor();
    d.start();
    await until(() => names.every((n) => rootIn(n) === ROOT_1), 5_000, 'initial writes');
    const uids = names.map((n) => cm(n)!.metadata.uid);

    root = ROOT_1 + ROOT_2; // rotation: both roots trusted
    d.onRootBundleChanged();
    await until(() => names.every((n) => rootIn(n) === ROOT_1 + ROOT_2), 5_000, 'the rotation');
    expect(names.map((n) => cm(n)!.metadata.uid)).toEqual(uids); // updated in place, not recreated
    await d.idle(); // the last answers may still be on their way back
    expect(d.status()).toMatchObject({ created: 12, updated: 12 });
  });

  it('a follower writes nothing, and writes everything missing once it leads', async () => {
    leader = false;
    fake.put('namespaces', ns('a'));
    fake.put('configmaps', { metadata: { name: ROOT_CERT_CONFIGMAP, namespace: 'a' }, data: { [ROOT_CERT_KEY]: 'stale' } });
    const d = distributor();
    d.start();
    await d.waitSynced();
    fake.put('namespaces', ns('b'));
    fake.delete('configmaps', 'a', ROOT_CERT_CONFIGMAP);
    await new Promise((r) => setTimeout(r, 400));
    await d.idle();
    expect(writesTo(fake, 'configmaps')).toEqual([]);

    leader = true;
    d.onStartedLeading();
    await until(() => rootIn('a') === ROOT_1 && rootIn('b') === ROOT_1, 3_000, 'writes after gaining leadership');
  });

  it('retries API errors with backoff, and re-reads after a 409 Conflict', async () => {
    const log = recordingLog();
    fake.put('namespaces', ns('a'));
    fake.fail({ method: 'POST', path: /\/configmaps$/ }, { status: 500, message: 'etcd is sad' }, 2);
    const d = distributor({ log: asLog(log) });
    d.start();
    await until(() => rootIn('a') === ROOT_1, 5_000, 'the write after two failures');
    const posts = writesTo(fake, 'configmaps').filter((r) => r.method === 'POST');
    expect(posts.map((r) => r.status)).toEqual([500, 500, 201]);
    expect(d.status().failures).toBe(2);
    expect(log.lines.filter((l) => l.level === 'warn' && l.msg?.includes('retrying'))).toHaveLength(2);

    // A conflicting replace: the distributor reads the ConfigMap again and writes once more.
    const before = fake.requests.length;
    fake.fail({ method: 'PUT', path: `/api/v1/namespaces/a/configmaps/${ROOT_CERT_CONFIGMAP}` }, { status: 409 }, 1);
    const cur = cm('a')!;
    fake.put('configmaps', { ...cur, data: { [ROOT_CERT_KEY]: 'tampered' } });
    await until(() => rootIn('a') === ROOT_1, 3_000, 'the repair after a conflict');
    const after = fake.requests.slice(before).filter((r) => r.path === `/api/v1/namespaces/a/configmaps/${ROOT_CERT_CONFIGMAP}`);
    expect(after.map((r) => `${r.method} ${r.status}`)).toEqual(['PUT 409', 'GET 200', 'PUT 200']);
  });

  it('creates the ConfigMap when a replace finds it deleted meanwhile (404), and gives up on a ConfigMap that keeps conflicting after 4 rounds (then retries it later)', async () => {
    fake.put('namespaces', ns('a'));
    const d = distributor();
    d.start();
    await until(() => rootIn('a') === ROOT_1, 5_000, 'initial write');
    await d.idle();
    const path = `/api/v1/namespaces/a/configmaps/${ROOT_CERT_CONFIGMAP}`;
    // The replace answered 404: created again at once (here answered 409, read back and replaced), not a failure.
    let before = fake.requests.length;
    fake.fail({ method: 'PUT', path }, { status: 404 }, 1);
    fake.put('configmaps', { ...cm('a')!, data: { [ROOT_CERT_KEY]: 'tampered' } });
    await until(() => rootIn('a') === ROOT_1, 3_000, 'the repair after a 404');
    await d.idle();
    const calls = (): string[] => fake.requests.slice(before).filter((r) => r.path === path || r.path === '/api/v1/namespaces/a/configmaps').map((r) => `${r.method} ${r.status}`);
    expect(calls()).toEqual(['PUT 404', 'POST 409', 'GET 200', 'PUT 200']);
    expect(d.status().failures).toBe(0);

    // Four conflicts in a row: that reconcile fails (and is retried), rather than looping on.
    before = fake.requests.length;
    fake.fail({ method: 'PUT', path }, { status: 409 }, 4);
    fake.put('configmaps', { ...cm('a')!, data: { [ROOT_CERT_KEY]: 'tampered again' } });
    await until(() => rootIn('a') === ROOT_1, 5_000, 'the repair after four conflicts');
    await d.idle();
    expect(d.status()).toMatchObject({ failures: 1, lastError: expect.stringMatching(/kept changing under meshcert/) });
    expect(calls().filter((c) => c.startsWith('PUT'))).toEqual(['PUT 409', 'PUT 409', 'PUT 409', 'PUT 409', 'PUT 200']);
  });

  it('skips a namespace whose create is refused because it is being terminated, without counting a failure or retrying', async () => {
    fake.fail({ method: 'POST', path: /\/namespaces\/a\/configmaps$/ }, { status: 403, message: 'configmaps "istio-ca-root-cert" is forbidden: unable to create new content in namespace a because it is being terminated' }, 1_000_000);
    fake.put('namespaces', ns('a'));
    fake.put('namespaces', ns('b'));
    const d = distributor();
    d.start();
    await until(() => rootIn('b') === ROOT_1, 5_000, 'namespace b');
    await new Promise((r) => setTimeout(r, 300));
    await d.idle();
    expect(d.status().failures).toBe(0);
    expect(writesTo(fake, 'configmaps').filter((r) => r.path === '/api/v1/namespaces/a/configmaps').map((r) => r.status)).toEqual([403]);
  });

  it('waits as a whole while the API server forbids the writes (RBAC), saying so once, not once per namespace per retry, and writes them all once allowed', async () => {
    const log = recordingLog();
    const names = Array.from({ length: 60 }, (_, i) => `ns-${i}`);
    for (const n of names) fake.put('namespaces', ns(n));
    fake.fail({ method: 'POST', path: /\/configmaps$/ }, { status: 403, message: 'configmaps is forbidden: User "system:serviceaccount:meshcert:meshcert" cannot create resource "configmaps"' }, 1_000_000);
    const d = distributor({ log: asLog(log), queue: { qps: 1000, burst: 1000, retryBaseMs: 100, retryMaxMs: 400 } });
    d.start();
    await until(() => d.status().failures > 0, 5_000, 'the first refusal');
    await new Promise((r) => setTimeout(r, 1_500));
    // At 1000 writes/s, 60 namespaces and their retries would make hundreds of refused POSTs.
    const refused = writesTo(fake, 'configmaps').filter((r) => r.method === 'POST' && r.status === 403).length;
    expect(refused).toBeLessThanOrEqual(10);
    const warned = log.lines.filter((l) => l.level === 'warn' && l.msg?.includes('ConfigMap'));
    expect(warned).toHaveLength(1);
    expect(warned[0]!.msg).toMatch(/not written, in any namespace: the API server refuses meshcert/);
    expect(warned[0]!.obj).toMatchObject({ error: expect.stringMatching(/HTTP 403: .*check its RBAC/) });
    fake.clearFaults();
    await until(() => names.every((n) => rootIn(n) === ROOT_1), 10_000, 'every namespace once allowed');
  });

  it('recovers when the namespace watch breaks, and re-reads after a create answered 409 AlreadyExists', async () => {
    fake.put('namespaces', ns('a'));
    const d = distributor();
    d.start();
    await until(() => rootIn('a') === ROOT_1, 5_000, 'initial write');
    fake.cutWatches('namespaces');
    fake.put('namespaces', ns('b'));
    await until(() => rootIn('b') === ROOT_1, 5_000, 'namespace b after the watch was cut');

    // A create answered 409 AlreadyExists: the distributor reads the ConfigMap (here: gone again) and
    // writes what it finds missing.
    const before = fake.requests.length;
    fake.fail({ method: 'POST', path: /\/namespaces\/c\/configmaps$/ }, { status: 409, message: 'configmaps "istio-ca-root-cert" already exists' }, 1);
    fake.put('namespaces', ns('c'));
    await until(() => rootIn('c') === ROOT_1, 3_000, 'namespace c');
    const calls = fake.requests.slice(before).filter((r) => r.path.startsWith('/api/v1/namespaces/c/'));
    expect(calls.map((r) => `${r.method} ${r.status}`)).toEqual(['POST 409', 'GET 404', 'POST 201']);
  });

  it('stop() ends the watches and leaves no timers behind', async () => {
    fake.put('namespaces', ns('a'));
    const d = distributor();
    d.start();
    await until(() => rootIn('a') === ROOT_1, 5_000, 'initial write');
    expect(fake.watchCount()).toBe(2);
    await d.stop();
    await until(() => fake.watchCount() === 0, 2_000, 'the watches to close');
    fake.put('namespaces', ns('b'));
    await new Promise((r) => setTimeout(r, 200));
    expect(cm('b')).toBeUndefined();
  });
});
