import { status } from '@grpc/grpc-js';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { Caller } from '../../../src/auth/types.js';
import { CaError } from '../../../src/errors/ca-error.js';
import { toGrpcFailure } from '../../../src/grpc/status.js';
import { createKubeClient } from '../../../src/k8s/client.js';
import { NodeAuthorizer } from '../../../src/k8s/node-authorizer.js';
import { KubeLivePods, MIN_LIST_INTERVAL_MS } from '../../../src/k8s/live-pods.js';
import { PodCache, PodCacheNotReadyError, podCounts, type PodInfo, type PodLookup } from '../../../src/k8s/pod-cache.js';
import { FakeKube, fakePod } from '../../support/fake-kube.js';

const TD = 'cluster.local';
const id = (ns: string, sa: string): string => `spiffe://${TD}/ns/${ns}/sa/${sa}`;

let fake: FakeKube;
let pods: PodCache;
let authz: NodeAuthorizer;

function ztunnel(over: Partial<Caller> = {}): Caller {
  return {
    method: 'tokenreview',
    identities: [id('istio-system', 'ztunnel')],
    namespace: 'istio-system',
    serviceAccount: 'ztunnel',
    pod: { name: 'ztunnel-a', uid: 'uid-ztunnel-a' },
    node: { name: 'node-a', uid: 'uid-node-a' },
    ...over,
  };
}

/** Runs authorize and returns the CaError (or null when allowed). */
async function outcome(a: NodeAuthorizer, caller: Caller, requested: string): Promise<CaError | null> {
  try {
    await a.authorize(caller, requested);
    return null;
  } catch (err) {
    expect(err).toBeInstanceOf(CaError);
    return err as CaError;
  }
}

async function expectDenied(caller: Caller, requested: string, message: RegExp, a: NodeAuthorizer = authz): Promise<void> {
  const err = await outcome(a, caller, requested);
  expect(err?.code).toBe('IMPERSONATION_DENIED');
  expect(err?.message).toMatch(message);
  expect(toGrpcFailure(err).code).toBe(status.UNAUTHENTICATED);
}

beforeEach(async () => {
  fake = await FakeKube.start({ token: 't' });
  fake.put('pods', fakePod({ namespace: 'istio-system', name: 'ztunnel-a', node: 'node-a', serviceAccount: 'ztunnel', uid: 'uid-ztunnel-a' }));
  fake.put('pods', fakePod({ namespace: 'istio-system', name: 'ztunnel-b', node: 'node-b', serviceAccount: 'ztunnel', uid: 'uid-ztunnel-b' }));
  fake.put('pods', fakePod({ namespace: 'app', name: 'web-1', node: 'node-a', serviceAccount: 'web', uid: 'uid-web-1' }));
  fake.put('pods', fakePod({ namespace: 'app', name: 'db-1', node: 'node-b', serviceAccount: 'db', uid: 'uid-db-1' }));
  fake.put('pods', fakePod({ namespace: 'app', name: 'job-1', node: 'node-a', serviceAccount: 'batch', phase: 'Succeeded' }));
  fake.put('pods', fakePod({ namespace: 'kube-system', name: 'proxy-a', node: 'node-a', serviceAccount: 'node-proxy', uid: 'uid-proxy-a' }));
  const client = createKubeClient({ server: fake.url, caPem: fake.caPem, token: 't' });
  pods = new PodCache({ client, backoffInitialMs: 20, backoffMaxMs: 100 });
  await pods.start();
  authz = new NodeAuthorizer({ pods, trustDomain: TD });
});

afterEach(async () => {
  await pods.stop();
  await fake.close();
});

describe('NodeAuthorizer (PROTOCOL §3)', () => {
  it('allows a trusted node proxy to request the identity of a pod on its node', async () => {
    expect(await outcome(authz, ztunnel(), id('app', 'web'))).toBeNull();
    expect(await outcome(authz, ztunnel({ pod: { name: 'ztunnel-b', uid: 'uid-ztunnel-b' }, node: { name: 'node-b' } }), id('app', 'db'))).toBeNull();
    // Its own identity is fine too: the ztunnel pod itself runs on the node. caller.node is optional.
    expect(await outcome(authz, ztunnel({ node: undefined }), id('istio-system', 'ztunnel'))).toBeNull();
  });

  it('refuses an identity whose pods are all on other nodes', async () => {
    await expectDenied(ztunnel(), id('app', 'db'), /^no running pod with service account app\/db is on node node-a \(the caller's node\)/);
    await expectDenied(ztunnel(), id('app', 'nobody'), /no running pod with service account app\/nobody is on node node-a/);
  });

  it('refuses an identity whose only pod on the node has terminated', async () => {
    await expectDenied(ztunnel(), id('app', 'batch'), /no running pod with service account app\/batch/);
  });

  it('refuses callers that are not trusted node accounts', async () => {
    const web: Caller = { method: 'tokenreview', identities: [id('app', 'web')], namespace: 'app', serviceAccount: 'web', pod: { name: 'web-1', uid: 'uid-web-1' } };
    await expectDenied(web, id('app', 'web'), /^service account app\/web may not request certificates for other workloads \(ImpersonatedIdentity\); only trusted node accounts may: istio-system\/ztunnel$/);
    const client: Caller = { method: 'client-cert', identities: [id('istio-system', 'ztunnel')] };
    await expectDenied(client, id('app', 'web'), /requires a Kubernetes service-account token/);
  });

  it('uses the configured trusted node accounts instead of the default', async () => {
    const custom = new NodeAuthorizer({ pods, trustDomain: TD, trustedNodeAccounts: ['kube-system/node-proxy'] });
    const proxy = ztunnel({ namespace: 'kube-system', serviceAccount: 'node-proxy', pod: { name: 'proxy-a', uid: 'uid-proxy-a' }, identities: [id('kube-system', 'node-proxy')] });
    expect(await outcome(custom, proxy, id('app', 'web'))).toBeNull();
    await expectDenied(ztunnel(), id('app', 'web'), /istio-system\/ztunnel may not request certificates.*only trusted node accounts may: kube-system\/node-proxy/, custom);
    expect(() => new NodeAuthorizer({ pods, trustedNodeAccounts: ['ztunnel'] })).toThrow(/must be "namespace\/serviceAccount"/);
  });

  it('takes a new list of trusted node accounts from a reload once committed, and refuses a malformed one changing nothing', async () => {
    const proxy = ztunnel({ namespace: 'kube-system', serviceAccount: 'node-proxy', pod: { name: 'proxy-a', uid: 'uid-proxy-a' }, identities: [id('kube-system', 'node-proxy')] });
    expect(() => authz.prepareTrustedNodeAccounts(['kube-system/node-proxy', 'ztunnel'])).toThrow(/entry "ztunnel" must be "namespace\/serviceAccount"/);
    const commit = authz.prepareTrustedNodeAccounts(['kube-system/node-proxy']);
    // Not before the commit.
    expect(await outcome(authz, ztunnel(), id('app', 'web'))).toBeNull();
    commit();
    expect(await outcome(authz, proxy, id('app', 'web'))).toBeNull();
    await expectDenied(ztunnel(), id('app', 'web'), /istio-system\/ztunnel may not request certificates.*only trusted node accounts may: kube-system\/node-proxy$/);
    expect(authz.isTrustedNodeAccount(ztunnel())).toBe(false);
  });

  it("refuses a node proxy of another cluster than the one whose pods it watches (their pods and nodes are not this cluster's)", async () => {
    const ours = new NodeAuthorizer({ pods, trustDomain: TD, cluster: 'Kubernetes' });
    const inCluster = async (cluster: string | undefined): Promise<CaError | null> => {
      try {
        await ours.authorize(ztunnel(), id('app', 'web'), cluster);
        return null;
      } catch (e) {
        return e as CaError;
      }
    };
    expect(await inCluster('Kubernetes')).toBeNull();
    for (const other of ['east', 'kubernetes', '', undefined]) {
      const e = await inCluster(other);
      expect(e?.code, String(other)).toBe('IMPERSONATION_DENIED');
      expect(toGrpcFailure(e).code).toBe(status.UNAUTHENTICATED);
      expect(e?.message).toMatch(/^the caller authenticated in cluster ".*", but this CA checks node proxies only in cluster "Kubernetes", whose pods it watches/);
    }
  });

  it('refuses a token that is not bound to a pod', async () => {
    await expectDenied(ztunnel({ pod: undefined }), id('app', 'web'), /^the caller's token is not bound to a pod/);
    await expectDenied(ztunnel({ pod: { name: 'ztunnel-a', uid: '' } }), id('app', 'web'), /not bound to a pod/);
  });

  it('refuses a token bound to a pod that has been replaced (stale UID) or is gone', async () => {
    await expectDenied(ztunnel({ pod: { name: 'ztunnel-a', uid: 'uid-old' } }), id('app', 'web'), /^.*bound to pod istio-system\/ztunnel-a with UID uid-old, but the pod of that name now has another UID: the token belongs to a pod that has been replaced$/);
    await expectDenied(ztunnel({ pod: { name: 'ztunnel-zz', uid: 'uid-zz' } }), id('app', 'web'), /the caller's pod istio-system\/ztunnel-zz does not exist/);
  });

  it('refuses a caller pod stuck deleting over a minute past its deletionTimestamp, as the API server refuses its token; honours it until then', async () => {
    const deletingSince = (ms: number): void =>
      void fake.put('pods', fakePod({ namespace: 'istio-system', name: 'ztunnel-a', node: 'node-a', serviceAccount: 'ztunnel', uid: 'uid-ztunnel-a', deletionTimestamp: new Date(Date.now() - ms).toISOString() }));
    deletingSince(30_000);
    await vi.waitFor(() => expect(pods.getPod('istio-system', 'ztunnel-a')?.deletionTimestamp).toBeDefined());
    expect(await outcome(authz, ztunnel(), id('app', 'web'))).toBeNull();
    deletingSince(61_000);
    await vi.waitFor(() => expectDenied(ztunnel(), id('app', 'web'), /^the caller's pod istio-system\/ztunnel-a is being deleted \(since \S+, past its grace period\): its token no longer speaks for its node$/));
  });

  it('refuses a caller whose own pod has terminated (Succeeded or Failed): it can no longer act for its node', async () => {
    for (const phase of ['Succeeded', 'Failed']) {
      fake.put('pods', fakePod({ namespace: 'istio-system', name: 'ztunnel-a', node: 'node-a', serviceAccount: 'ztunnel', uid: 'uid-ztunnel-a', phase }));
      await vi.waitFor(() => expectDenied(ztunnel(), id('app', 'web'), new RegExp(`^the caller's pod istio-system/ztunnel-a has terminated \\(phase ${phase}\\)$`)));
    }
  });

  it('refuses when the caller pod runs as another service account or on another node than the token says', async () => {
    fake.put('pods', fakePod({ namespace: 'istio-system', name: 'imposter', node: 'node-a', serviceAccount: 'default', uid: 'uid-imposter' }));
    return vi.waitFor(async () => {
      await expectDenied(ztunnel({ pod: { name: 'imposter', uid: 'uid-imposter' } }), id('app', 'web'), /runs as service account istio-system\/default, not istio-system\/ztunnel/);
      await expectDenied(ztunnel({ node: { name: 'node-b' } }), id('app', 'web'), /token is bound to node node-b, but its pod istio-system\/ztunnel-a runs on node node-a/);
    });
  });

  it('refuses requested identities that are not spiffe://<td>/ns/<ns>/sa/<sa>', async () => {
    for (const bad of ['spiffe://cluster.local/workload/web', `${id('app', 'web')}/extra`, 'spiffe://cluster.local/ns/app/sa/', 'https://cluster.local/ns/app/sa/web', 'app/web', '']) {
      await expectDenied(ztunnel(), bad, /^ImpersonatedIdentity must be a workload identity spiffe:\/\/<trust-domain>\/ns\/<namespace>\/sa\/<service-account>/);
    }
    await expectDenied(ztunnel(), 'spiffe://other.td/ns/app/sa/web', /^ImpersonatedIdentity is in trust domain other.td, but this CA issues for cluster.local$/);
    // Without a configured trust domain, any trust domain is accepted (istiod's behaviour).
    expect(await outcome(new NodeAuthorizer({ pods }), ztunnel(), 'spiffe://other.td/ns/app/sa/web')).toBeNull();
  });

  it('stops authorizing once the pod is deleted (seen through the watch)', async () => {
    expect(await outcome(authz, ztunnel(), id('app', 'web'))).toBeNull();
    fake.delete('pods', 'app', 'web-1');
    await vi.waitFor(async () => await expectDenied(ztunnel(), id('app', 'web'), /no running pod with service account app\/web is on node node-a/));
    // A new pod of that identity scheduled on the node: allowed again.
    fake.put('pods', fakePod({ namespace: 'app', name: 'web-2', node: 'node-a', serviceAccount: 'web' }));
    await vi.waitFor(async () => expect(await outcome(authz, ztunnel(), id('app', 'web'))).toBeNull());
  });

  it('answers AUTH_BACKEND_UNAVAILABLE (retryable) while the pod cache is not synced, never a denial', async () => {
    const client = createKubeClient({ server: fake.url, caPem: fake.caPem, token: 't' });
    const cold = new PodCache({ client });
    const a = new NodeAuthorizer({ pods: cold, trustDomain: TD });
    try {
      const err = await outcome(a, ztunnel(), id('app', 'web'));
      expect(err?.code).toBe('AUTH_BACKEND_UNAVAILABLE');
      expect(err?.message).toBe("the CA cannot check which workloads run on the caller's node yet (its pod cache is not synced with the Kubernetes API server); retry later");
      expect(toGrpcFailure(err).code).toBe(status.UNAVAILABLE);
      // Checks that need no cache still deny at once.
      expect((await outcome(a, ztunnel({ namespace: 'app', serviceAccount: 'web' }), id('app', 'web')))?.code).toBe('IMPERSONATION_DENIED');
      expect((await outcome(a, ztunnel({ pod: undefined }), id('app', 'web')))?.code).toBe('IMPERSONATION_DENIED');
      expect((await outcome(a, ztunnel(), 'spiffe://cluster.local/x'))?.code).toBe('IMPERSONATION_DENIED');
      await cold.start();
      expect(await outcome(a, ztunnel(), id('app', 'web'))).toBeNull();
    } finally {
      await cold.stop();
    }
  });

  it('answers a refusal by a cache whose watch is down (within its grace, possibly stale) AUTH_BACKEND_UNAVAILABLE, and allows what it still sees', async () => {
    const client = createKubeClient({ server: fake.url, caPem: fake.caPem, token: 't' });
    const c = new PodCache({ client, maxStaleMs: 3_600_000 });
    const a = new NodeAuthorizer({ pods: c, trustDomain: TD });
    try {
      await c.start();
      await vi.waitFor(() => expect(fake.watchCount('pods')).toBe(1));
      fake.fail({ path: '/api/v1/pods' }, { status: 503 }, 1_000_000);
      fake.cutWatches('pods');
      await vi.waitFor(() => expect(c.connected).toBe(false));
      expect(c.synced).toBe(true);
      // A pod the cache has seen: allowed, as within the grace period before.
      expect(await outcome(a, ztunnel(), id('app', 'web'))).toBeNull();
      // A workload the cache has not seen may have started since the watch went down.
      const err = await outcome(a, ztunnel(), id('app', 'started-since'));
      expect(err?.code).toBe('AUTH_BACKEND_UNAVAILABLE');
      expect(err?.message).toBe(
        "the CA's pod cache is reconnecting to the Kubernetes API server and may be stale (no running pod with service account app/started-since is on node node-a (the caller's node); a node proxy may only request certificates for workloads on its own node); retry later",
      );
      expect(toGrpcFailure(err).code).toBe(status.UNAVAILABLE);
      // Refusals that need no cache stay refusals.
      expect((await outcome(a, ztunnel({ pod: undefined }), id('app', 'web')))?.code).toBe('IMPERSONATION_DENIED');
      fake.clearFaults();
      await vi.waitFor(() => expect(c.connected).toBe(true));
      expect((await outcome(a, ztunnel(), id('app', 'started-since')))?.code).toBe('IMPERSONATION_DENIED');
    } finally {
      await c.stop();
    }
  });

  it('turns a cache that becomes not ready during the lookup into AUTH_BACKEND_UNAVAILABLE', async () => {
    const flaky: PodLookup = {
      synced: true,
      connected: true,
      getPod: () => {
        throw new PodCacheNotReadyError('the pod cache is not ready');
      },
      getPodByUid: () => undefined,
      hasServiceAccountOnNode: () => false,
    };
    const err = await outcome(new NodeAuthorizer({ pods: flaky }), ztunnel(), id('app', 'web'));
    expect(err?.code).toBe('AUTH_BACKEND_UNAVAILABLE');
    expect(err?.cause).toBeInstanceOf(PodCacheNotReadyError);
  });
});

describe('NodeAuthorizer.authorizeConfirmed: a pod the cache does not show yet', () => {
  /** A cache that lags behind the API server: it holds only `seen`. */
  function lagging(seen: PodInfo[]): PodLookup {
    return {
      synced: true,
      connected: true,
      getPod: (ns, name) => seen.find((p) => p.namespace === ns && p.name === name),
      getPodByUid: (uid) => seen.find((p) => p.uid === uid),
      hasServiceAccountOnNode: (node, ns, sa) => seen.some((p) => p.nodeName === node && p.namespace === ns && p.serviceAccount === sa && podCounts(p, Date.now())),
    };
  }
  const info = (o: Partial<PodInfo> & Pick<PodInfo, 'namespace' | 'name'>): PodInfo => ({ uid: '', serviceAccount: 'default', nodeName: '', phase: 'Running', deletionTimestamp: undefined, resourceVersion: '1', ...o });
  const zt = info({ namespace: 'istio-system', name: 'ztunnel-a', uid: 'uid-ztunnel-a', serviceAccount: 'ztunnel', nodeName: 'node-a' });
  const live = () => new KubeLivePods(createKubeClient({ server: fake.url, caPem: fake.caPem, token: 't' }).core);
  const listed = () => fake.requests.filter((r) => r.method === 'GET' && !r.watch && r.path.endsWith('/pods'));

  it('allows a workload the API server has on the node although the cache has not seen it, asking only then', async () => {
    const a = new NodeAuthorizer({ pods: lagging([zt]), live: live(), trustDomain: TD });
    // From the cache alone (no API server to ask): refused, what the client would never retry.
    expect((await outcome(new NodeAuthorizer({ pods: lagging([zt]), trustDomain: TD }), ztunnel(), id('app', 'web')))?.code).toBe('IMPERSONATION_DENIED');
    const before = listed().length;
    expect(await outcome(a, ztunnel(), id('app', 'web'))).toBeNull();
    expect(listed().slice(before).map((r) => r.query.fieldSelector)).toEqual(['spec.nodeName=node-a']);
    // What the cache shows needs no question.
    const asked = listed().length;
    expect(await outcome(new NodeAuthorizer({ pods: lagging([zt, info({ namespace: 'app', name: 'web-1', serviceAccount: 'web', nodeName: 'node-a' })]), live: live(), trustDomain: TD }), ztunnel(), id('app', 'web'))).toBeNull();
    expect(listed().length).toBe(asked);
  });

  it("allows a caller whose own pod the cache has not seen (a ztunnel just restarted), checked as the cache would", async () => {
    const a = new NodeAuthorizer({ pods: lagging([]), live: live(), trustDomain: TD });
    expect(await outcome(a, ztunnel(), id('app', 'web'))).toBeNull();
    expect(listed().some((r) => r.path === '/api/v1/namespaces/istio-system/pods' && r.query.fieldSelector === 'metadata.name=ztunnel-a')).toBe(true);
    // The API server's pod is held to the token as the cache's is: another UID is refused.
    const replaced = await outcome(a, ztunnel({ pod: { name: 'ztunnel-a', uid: 'uid-old' } }), id('app', 'web'));
    expect(replaced?.message).toMatch(/the token belongs to a pod that has been replaced/);
  });

  it("asks the API server when the cache's pod of the caller's name has another UID (replaced under the same name, the successor not yet delivered)", async () => {
    const stale = info({ namespace: 'istio-system', name: 'ztunnel-a', uid: 'uid-before-restart', serviceAccount: 'ztunnel', nodeName: 'node-a' });
    const a = new NodeAuthorizer({ pods: lagging([stale, info({ namespace: 'app', name: 'web-1', serviceAccount: 'web', nodeName: 'node-a' })]), live: live(), trustDomain: TD });
    const byName = (): number => listed().filter((r) => r.query.fieldSelector === 'metadata.name=ztunnel-a').length;
    const before = byName();
    // The API server has the pod the token is bound to (uid-ztunnel-a): allowed.
    expect(await outcome(a, ztunnel(), id('app', 'web'))).toBeNull();
    expect(byName() - before).toBe(1);
    // A UID neither has: refused as replaced, and not asked about again (a UID is never reused).
    for (let i = 0; i < 2; i++) await expectDenied(ztunnel({ pod: { name: 'ztunnel-a', uid: 'uid-neither' } }), id('app', 'web'), /the token belongs to a pod that has been replaced$/, a);
    expect(byName() - before).toBe(2);
  });

  it("asks the API server when the cache's pod of the caller has no node yet (a DaemonSet pod's binding not yet delivered)", async () => {
    // A ztunnel pod is created unscheduled and bound by the scheduler: the watch may still hold
    // the binding when the ztunnel, already running, asks. The API server has it on node-a.
    const unbound = info({ namespace: 'istio-system', name: 'ztunnel-a', uid: 'uid-ztunnel-a', serviceAccount: 'ztunnel', nodeName: '', phase: 'Pending' });
    const byName = (): number => listed().filter((r) => r.query.fieldSelector === 'metadata.name=ztunnel-a').length;
    const before = byName();
    expect(await outcome(new NodeAuthorizer({ pods: lagging([unbound]), live: live(), trustDomain: TD }), ztunnel(), id('app', 'web'))).toBeNull();
    expect(byName() - before).toBe(1);
    // From the cache alone it stays a refusal (nothing fresher to ask).
    expect((await outcome(new NodeAuthorizer({ pods: lagging([unbound]), trustDomain: TD }), ztunnel(), id('app', 'web')))?.message).toMatch(/is not scheduled on a node$/);
  });

  it('refuses when the only pod of the identity the API server has on the node has terminated', async () => {
    // The cache has not seen app/batch; the API server lists job-1 on node-a, Succeeded.
    const err = await outcome(new NodeAuthorizer({ pods: lagging([zt]), live: live(), trustDomain: TD }), ztunnel(), id('app', 'batch'));
    expect(err?.code).toBe('IMPERSONATION_DENIED');
    expect(err?.message).toMatch(/^no running pod with service account app\/batch is on node node-a \(the caller's node; confirmed with the Kubernetes API server\)/);
  });

  it('refuses, saying it asked, when the API server has no such pod either', async () => {
    const a = new NodeAuthorizer({ pods: lagging([zt]), live: live(), trustDomain: TD });
    const err = await outcome(a, ztunnel(), id('app', 'db'));
    expect(err?.code).toBe('IMPERSONATION_DENIED');
    expect(err?.message).toBe("no running pod with service account app/db is on node node-a (the caller's node; confirmed with the Kubernetes API server); a node proxy may only request certificates for workloads on its own node");
    expect(toGrpcFailure(err).code).toBe(status.UNAUTHENTICATED);
    const gone = await outcome(new NodeAuthorizer({ pods: lagging([]), live: live(), trustDomain: TD }), ztunnel({ pod: { name: 'ztunnel-gone', uid: 'u' } }), id('app', 'web'));
    expect(gone?.message).toBe("the caller's pod istio-system/ztunnel-gone does not exist (confirmed with the Kubernetes API server) (its token is bound to a pod that is gone)");
    // A UID is never reused: the token of a pod confirmed gone is refused again without a list.
    const goneAuthz = new NodeAuthorizer({ pods: lagging([]), live: live(), trustDomain: TD });
    const asked = listed().length;
    for (let i = 0; i < 3; i++) expect((await outcome(goneAuthz, ztunnel({ pod: { name: 'ztunnel-gone', uid: 'u' } }), id('app', 'web')))?.code).toBe('IMPERSONATION_DENIED');
    expect(listed().length - asked).toBe(1);
    // Refusals that are no cache's (not a trusted account) ask nothing.
    const before = listed().length;
    expect((await outcome(a, ztunnel({ serviceAccount: 'web', namespace: 'app' }), id('app', 'web')))?.code).toBe('IMPERSONATION_DENIED');
    expect(listed().length).toBe(before);
  });

  it('asks nothing while the watch reconnects: such a refusal is UNAVAILABLE (retried) anyway', async () => {
    const a = new NodeAuthorizer({ pods: { ...lagging([zt]), connected: false }, live: live(), trustDomain: TD });
    const before = listed().length;
    expect((await outcome(a, ztunnel(), id('app', 'web')))?.code).toBe('AUTH_BACKEND_UNAVAILABLE');
    expect(listed().length).toBe(before);
  });

  it('answers UNAVAILABLE (retried) when the API server cannot be asked', async () => {
    const a = new NodeAuthorizer({ pods: lagging([zt]), live: live(), trustDomain: TD });
    fake.fail({ method: 'GET', path: '/api/v1/pods', watch: false }, { status: 503 }, 1);
    const err = await outcome(a, ztunnel(), id('app', 'web'));
    expect(err?.code).toBe('AUTH_BACKEND_UNAVAILABLE');
    // Retried, and it says what it could not do: nothing of the API server's answer (address, status) reaches the client.
    expect(toGrpcFailure(err)).toMatchObject({
      code: status.UNAVAILABLE,
      details: "the CA's pod cache does not show a pod this request needs, and the Kubernetes API server could not be asked to confirm; retry later",
    });
    // A failure is not remembered: the next call asks again, and is allowed.
    expect(await outcome(a, ztunnel(), id('app', 'web'))).toBeNull();
  });

  it('shares one list among calls asking at once, and answers a later call from a list begun after it', async () => {
    const a = new NodeAuthorizer({ pods: lagging([zt]), live: live(), trustDomain: TD });
    const before = listed().length;
    const results = await Promise.all(Array.from({ length: 20 }, () => outcome(a, ztunnel(), id('app', 'db'))));
    expect(results.every((e) => e?.code === 'IMPERSONATION_DENIED')).toBe(true);
    expect(listed().length - before).toBe(1);
    // A pod created since is seen: the answer before is not reused.
    fake.put('pods', fakePod({ namespace: 'app', name: 'db-2', node: 'node-a', serviceAccount: 'db' }));
    expect(await outcome(a, ztunnel(), id('app', 'db'))).toBeNull();
    expect(listed().length - before).toBe(2);
  });

  it('answers a question asked while a list is under way from the next list, shared by all who asked meanwhile', async () => {
    const started: Array<(items: unknown[]) => void> = [];
    const core = {
      listPodForAllNamespaces: () => new Promise<{ items: never[] }>((resolve) => started.push((items) => resolve({ items: items as never[] }))),
      listNamespacedPod: () => Promise.reject(new Error('not used')),
    };
    const l = new KubeLivePods(core as never);
    const first = l.onNode('node-a');
    await vi.waitFor(() => expect(started).toHaveLength(1));
    // Asked while the first list runs: it may predate their pods, so they wait for the next.
    const meanwhile = [l.onNode('node-a'), l.onNode('node-a'), l.onNode('node-a')];
    await new Promise((r) => setImmediate(r));
    expect(started).toHaveLength(1);
    started[0]!([]);
    expect(await first).toEqual([]);
    // The next list begins a second after the one before began (MIN_LIST_INTERVAL_MS).
    await vi.waitFor(() => expect(started).toHaveLength(2), { timeout: 5_000 });
    started[1]!([fakePod({ namespace: 'app', name: 'new', node: 'node-a', serviceAccount: 'new' })]);
    for (const answer of await Promise.all(meanwhile)) expect(answer.map((p) => p.name)).toEqual(['new']);
    expect(started).toHaveLength(2);
    // Another node is another question.
    void l.onNode('node-b');
    await vi.waitFor(() => expect(started).toHaveLength(3));
  });

  it('begins the lists of one node at least MIN_LIST_INTERVAL_MS apart, however often a refusal is asked again; another node is not held up', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'Date'] });
    try {
      const started: string[] = [];
      const core = {
        listPodForAllNamespaces: ({ fieldSelector }: { fieldSelector: string }) => (started.push(fieldSelector), Promise.resolve({ items: [] })),
        listNamespacedPod: () => Promise.reject(new Error('not used')),
      };
      const l = new KubeLivePods(core as never);
      expect(await l.onNode('node-a')).toEqual([]);
      expect(started).toEqual(['spec.nodeName=node-a']);
      // Asked again at once (ztunnel retrying a refusal): the list waits for the interval.
      const again = l.onNode('node-a');
      const other = l.onNode('node-b');
      await vi.advanceTimersByTimeAsync(MIN_LIST_INTERVAL_MS - 1);
      expect(started).toEqual(['spec.nodeName=node-a', 'spec.nodeName=node-b']);
      await vi.advanceTimersByTimeAsync(1);
      expect(started).toEqual(['spec.nodeName=node-a', 'spec.nodeName=node-b', 'spec.nodeName=node-a']);
      expect(await again).toEqual([]);
      expect(await other).toEqual([]);
    } finally {
      vi.useRealTimers();
    }
  });

  it('never puts a name that is not a Kubernetes name into a field selector', async () => {
    const l = live();
    const before = listed().length;
    expect(await l.pod('istio-system', 'x,spec.nodeName=node-b')).toBeUndefined();
    expect(await l.onNode('node-a,metadata.namespace=app')).toEqual([]);
    expect(listed().length).toBe(before);
  });
});
