/**
 * Leader election (src/controllers/leader.ts) against FakeKube: a real Kubernetes API server was
 * not available here, so these tests use the loopback fake (real JSON shapes, resourceVersion
 * conflicts, MicroTime validation, fault injection). Each replica uses its own bearer token, so
 * the fake's request log tells which replica made each write.
 */
import { V1MicroTime } from '@kubernetes/client-node';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DEFAULT_LEASE_NAME, LeaderElector, type LeaderElectorOptions } from '../../../src/controllers/leader.js';
import { RootCertDistributor } from '../../../src/controllers/root-distribution.js';
import { IstiodTlsController } from '../../../src/controllers/istiod-tls.js';
import { FakeKube } from '../../support/fake-kube.js';
import { asLog, clientFor, makeTestCa, recordingLog, until, writesTo, type TestCa } from './support.js';

const NS = 'meshcert';
const FAST = { leaseDurationMs: 3_000, renewDeadlineMs: 2_000, retryPeriodMs: 200 } as const;

let fake: FakeKube;
const cleanups: Array<() => Promise<void> | void> = [];

beforeEach(async () => {
  fake = await FakeKube.start();
});

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  await fake.close();
});

interface Replica {
  readonly token: string;
  readonly elector: LeaderElector;
  readonly events: string[];
}

function replica(identity: string, extra: Partial<LeaderElectorOptions> = {}): Replica {
  const token = `token-${identity}`;
  const events: string[] = [];
  const elector = new LeaderElector({
    kube: clientFor(fake, token),
    namespace: NS,
    identity,
    ...FAST,
    onStartedLeading: () => {
      events.push('started');
    },
    onStoppedLeading: () => {
      events.push('stopped');
    },
    ...extra,
  });
  cleanups.push(() => elector.stop());
  return { token, elector, events };
}

const lease = () => fake.get('leases', NS, DEFAULT_LEASE_NAME) as { spec?: Record<string, unknown>; metadata: { resourceVersion?: string } } | undefined;
const micro = (ms: number): string => new V1MicroTime(ms).toISOString();

describe('LeaderElector', () => {
  it('two replicas: exactly one leads, the Lease names it, and it keeps renewing', async () => {
    const a = replica('pod-a');
    const b = replica('pod-b');
    a.elector.start();
    b.elector.start();
    await until(() => a.elector.isLeader || b.elector.isLeader, 3_000, 'a leader');
    const [leader, follower] = a.elector.isLeader ? [a, b] : [b, a];
    // Over several retry periods there is never a second leader.
    for (let i = 0; i < 15; i++) {
      expect([a.elector.isLeader, b.elector.isLeader].filter(Boolean)).toHaveLength(1);
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(lease()?.spec).toMatchObject({ holderIdentity: leader.elector.identity, leaseDurationSeconds: 3 });
    expect(String(lease()?.spec?.renewTime)).toMatch(/\.\d{6}Z$/);
    expect(leader.events).toEqual(['started']);
    expect(follower.events).toEqual([]);
    expect(follower.elector.leader).toBe(leader.elector.identity);
    // The leader renews (PUTs with its token); the follower only reads.
    const rv = lease()!.metadata.resourceVersion;
    await until(() => lease()!.metadata.resourceVersion !== rv, 2_000, 'a renewal');
    expect(writesTo(fake, 'leases', follower.token).filter((r) => r.method === 'PUT')).toEqual([]);
  });

  it('elects and keeps a leader on a slow API server (a read and a write take longer than a retry period)', async () => {
    // 600 ms a request: an attempt takes 1.2 s, well within renewDeadline (4 s), over a second.
    fake.latencyMs = 600;
    const timing = { leaseDurationMs: 6_000, renewDeadlineMs: 4_000, retryPeriodMs: 200 };
    const a = replica('pod-a', timing);
    const b = replica('pod-b', timing);
    a.elector.start();
    b.elector.start();
    await until(() => a.elector.isLeader || b.elector.isLeader, 10_000, 'a leader on a slow API server');
    const leader = a.elector.isLeader ? a : b;
    // It renews, and nobody else takes the Lease, over several renewals.
    const renewals = () => writesTo(fake, 'leases', leader.token).filter((r) => r.method === 'PUT').length;
    const before = renewals();
    await until(() => renewals() >= before + 3, 10_000, 'three renewals');
    expect(lease()?.spec?.holderIdentity).toBe(leader.elector.identity);
    expect([a.events, b.events].flat().filter((e) => e === 'stopped')).toEqual([]);
  }, 30_000);

  /**
   * 1.5 s a request: pod-a's first attempt (a read, then a create or a takeover) is given up on
   * after 2 s (renewDeadline), with its write already sent; it lands at about 3 s. The next
   * attempt's read (in flight) fails: nothing has observed the write when stop() runs.
   */
  async function stopAfterLateWrite(): Promise<void> {
    fake.latencyMs = 1_500;
    const a = replica('pod-a');
    a.elector.start();
    await until(() => lease()?.spec?.holderIdentity === 'pod-a', 10_000, 'the late write');
    expect(a.elector.isLeader).toBe(false);
    fake.fail({ method: 'GET', path: `/apis/coordination.k8s.io/v1/namespaces/${NS}/leases/${DEFAULT_LEASE_NAME}` }, { status: 503 }, 1);
    fake.latencyMs = 0;
    await a.elector.stop();
  }

  it('stop() releases a Lease that an attempt given up on took after all (its write landed late)', async () => {
    await stopAfterLateWrite();
    expect(lease()?.spec?.holderIdentity ?? '').toBe('');
  }, 30_000);

  it('stop() releases such a Lease though the last one it saw was released by another (it reads again)', async () => {
    const t = new V1MicroTime(Date.now());
    fake.put('leases', { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name: DEFAULT_LEASE_NAME, namespace: NS }, spec: { holderIdentity: '', leaseDurationSeconds: 1, acquireTime: t, renewTime: t, leaseTransitions: 3 } } as never);
    await stopAfterLateWrite();
    expect(lease()?.spec?.holderIdentity ?? '').toBe('');
  }, 30_000);

  it('stop() leaves a Lease another replica took meanwhile: it gives up only a Lease that still names it', async () => {
    const a = replica('pod-a');
    a.elector.start();
    await until(() => a.elector.isLeader, 5_000, 'pod-a leading');
    const cur = lease()!;
    const t = new V1MicroTime(Date.now());
    fake.put('leases', { ...cur, spec: { ...cur.spec, holderIdentity: 'pod-b', acquireTime: t, renewTime: t } } as never);
    await a.elector.stop();
    expect(lease()?.spec?.holderIdentity).toBe('pod-b');
  });

  it('stop() releases the Lease and the other replica takes over within a couple of retry periods', async () => {
    let holderWhenStopped: unknown;
    const a = replica('pod-a', {
      // onStoppedLeading runs (and is awaited) before the release: the controllers stop writing first.
      onStoppedLeading: async () => {
        await new Promise((r) => setTimeout(r, 50));
        holderWhenStopped = lease()?.spec?.holderIdentity;
        a.events.push('stopped');
      },
    });
    a.elector.start();
    await until(() => a.elector.isLeader, 3_000, 'pod-a to lead');
    const b = replica('pod-b');
    b.elector.start();
    await new Promise((r) => setTimeout(r, 400));
    expect(b.elector.isLeader).toBe(false);

    await a.elector.stop();
    const stoppedAt = Date.now();
    expect(a.elector.isLeader).toBe(false);
    expect(a.events).toEqual(['started', 'stopped']);
    expect(holderWhenStopped).toBe('pod-a');
    const release = writesTo(fake, 'leases', a.token).at(-1)!;
    expect(release.body).toMatchObject({ spec: { holderIdentity: '', leaseDurationSeconds: 1 } });

    await until(() => b.elector.isLeader, 2_000, 'pod-b to take over');
    expect(Date.now() - stoppedAt).toBeLessThan(3 * FAST.retryPeriodMs + 300);
    expect(lease()?.spec).toMatchObject({ holderIdentity: 'pod-b', leaseTransitions: 1 });
  });

  it('takes over a Lease held by a dead replica once it has seen it unchanged for leaseDuration, but not a live one', async () => {
    const now = Date.now();
    fake.put('leases', {
      metadata: { name: DEFAULT_LEASE_NAME, namespace: NS },
      spec: { holderIdentity: 'dead-pod', leaseDurationSeconds: 1, acquireTime: micro(now - 120_000), renewTime: micro(now - 60_000), leaseTransitions: 4 },
    });
    const a = replica('pod-a');
    const t0 = Date.now();
    a.elector.start();
    await until(() => a.elector.isLeader, 4_000, 'takeover of the expired lease');
    // Not at once on its renewTime (another node's clock): after a leaseDuration of its own.
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1_000);
    expect(lease()?.spec).toMatchObject({ holderIdentity: 'pod-a', leaseTransitions: 5 });
    await a.elector.stop();

    // A live holder (renewed just now) is left alone.
    fake.put('leases', {
      metadata: { name: DEFAULT_LEASE_NAME, namespace: NS },
      spec: { holderIdentity: 'live-pod', leaseDurationSeconds: 15, acquireTime: micro(Date.now()), renewTime: micro(Date.now()), leaseTransitions: 0 },
    });
    const b = replica('pod-b');
    b.elector.start();
    await new Promise((r) => setTimeout(r, 800));
    expect(b.elector.isLeader).toBe(false);
    expect(b.elector.leader).toBe('live-pod');
    expect(writesTo(fake, 'leases', b.token)).toEqual([]);
  });

  it("expires a Lease by its own clock when the holder's renewTime is in the future but never changes", async () => {
    let offset = 0;
    fake.put('leases', {
      metadata: { name: DEFAULT_LEASE_NAME, namespace: NS },
      // A holder whose clock runs 60 s ahead, then died.
      spec: { holderIdentity: 'skewed-pod', leaseDurationSeconds: 3, renewTime: micro(Date.now() + 60_000), leaseTransitions: 0 },
    });
    const a = replica('pod-a', { now: () => Date.now() + offset });
    a.elector.start();
    await new Promise((r) => setTimeout(r, 500));
    expect(a.elector.isLeader).toBe(false);
    offset = 4_000; // the record has not changed for more than leaseDuration of our own clock
    await until(() => a.elector.isLeader, 2_000, 'takeover after observed expiry');
  });

  it("does not take a live holder's Lease when its own wall clock runs far ahead (renewTime is not compared with it)", async () => {
    const put = (): void => {
      fake.put('leases', {
        metadata: { name: DEFAULT_LEASE_NAME, namespace: NS },
        spec: { holderIdentity: 'live-pod', leaseDurationSeconds: 2, renewTime: micro(Date.now()), leaseTransitions: 0 },
      });
    };
    put();
    const renewing = setInterval(put, 500); // the live holder renews
    try {
      // 60 s ahead of the holder: by renewTime + leaseDuration the Lease always looks expired.
      const ahead = replica('pod-ahead', { now: () => Date.now() + 60_000, monotonic: () => performance.now() });
      ahead.elector.start();
      await new Promise((r) => setTimeout(r, 3_000));
      expect(ahead.elector.isLeader).toBe(false);
      expect(writesTo(fake, 'leases', ahead.token)).toEqual([]);
    } finally {
      clearInterval(renewing);
    }
  });

  it('handles 409 conflicts: concurrent creation, and a conflicting renewal is retried after a re-read', async () => {
    // Both start at once with no Lease: both try to create it, one gets 409 AlreadyExists.
    const a = replica('pod-a');
    const b = replica('pod-b');
    a.elector.start();
    b.elector.start();
    await until(() => a.elector.isLeader || b.elector.isLeader, 3_000, 'a leader');
    const leader = a.elector.isLeader ? a : b;
    const creates = fake.requests.filter((r) => r.method === 'POST' && r.path.endsWith('/leases'));
    expect(creates.filter((r) => r.status === 201)).toHaveLength(1);
    expect(creates.filter((r) => r.status !== 201).every((r) => r.status === 409)).toBe(true);
    await new Promise((r) => setTimeout(r, 300));
    expect(a.elector.isLeader && b.elector.isLeader).toBe(false);

    // The next two renewals are refused with 409: the leader reads again and renews.
    const before = fake.requests.length;
    fake.fail({ method: 'PUT', path: /\/leases\/meshcert-leader$/ }, { status: 409, message: 'the object has been modified' }, 2);
    await until(() => fake.requests.slice(before).filter((r) => r.method === 'PUT' && r.status === 200).length >= 1, 3_000, 'a renewal after the conflicts');
    const after = fake.requests.slice(before).filter((r) => r.path.endsWith('/leases/meshcert-leader'));
    expect(after.filter((r) => r.method === 'PUT' && r.status === 409)).toHaveLength(2);
    expect(leader.elector.isLeader).toBe(true);
    expect(leader.events).toEqual(['started']);
  });

  it('warns when the API server refuses the lease (RBAC for another name, say), where busy failures are debug', async () => {
    const log = recordingLog();
    fake.fail({ path: /\/leases/ }, { status: 403 }, 1_000_000);
    let offset = 0;
    const a = replica('pod-a', { log: asLog(log), now: () => Date.now() + offset });
    a.elector.start();
    await until(() => log.lines.some((l) => l.level === 'warn'), 3_000, 'a warning');
    expect(log.lines.find((l) => l.level === 'warn')!.msg).toBe('the API server refuses the leader lease to meshcert: no replica can lead');
    expect(a.elector.isLeader).toBe(false);
    // Said once, not at every retry...
    await until(() => log.lines.filter((l) => l.level === 'debug').length >= 3, 3_000, 'more refused attempts');
    expect(log.lines.filter((l) => l.level === 'warn')).toHaveLength(1);
    // ...and again ten minutes on, with how many went unsaid: a replica that can never lead keeps saying so.
    offset = 600_000;
    await until(() => log.lines.filter((l) => l.level === 'warn').length === 2, 3_000, 'the warning again');
    expect(log.lines.filter((l) => l.level === 'warn')[1]!.obj).toMatchObject({ refusalsUnsaid: expect.any(Number) });
    expect((log.lines.filter((l) => l.level === 'warn')[1]!.obj as { refusalsUnsaid: number }).refusalsUnsaid).toBeGreaterThanOrEqual(3);
  });

  it('keeps an unanswered or failing lease request at debug while not leading (another replica may simply lead)', async () => {
    const log = recordingLog();
    fake.fail({ path: /\/leases/ }, { status: 500 }, 1_000_000);
    const a = replica('pod-a', { log: asLog(log) });
    a.elector.start();
    await until(() => log.lines.filter((l) => l.msg === 'failed to acquire the leader lease').length >= 2, 3_000, 'two debug lines');
    expect(log.lines.filter((l) => l.level === 'warn')).toEqual([]);
  });

  it('loses leadership when it cannot renew within renewDeadline, and the other replica takes over after expiry', async () => {
    const a = replica('pod-a');
    a.elector.start();
    await until(() => a.elector.isLeader, 3_000, 'pod-a to lead');
    const b = replica('pod-b');
    b.elector.start();
    // The API server fails every Lease request for a while (an outage as seen by both replicas).
    fake.fail({ path: /\/leases/ }, { status: 500 }, 1_000_000);
    await until(() => !a.elector.isLeader, 3_000, 'pod-a to notice');
    await until(() => a.events.includes('stopped'), 3_000, 'onStoppedLeading');
    fake.clearFaults();
    // pod-a's renewTime was not updated since its last success: the lease expires for pod-b, or
    // pod-a renews first. Either way exactly one leads again.
    await until(() => a.elector.isLeader || b.elector.isLeader, 5_000, 'a new leader');
    expect(a.elector.isLeader && b.elector.isLeader).toBe(false);
  });

  it('isLeader turns false on its own when renewals stall past renewDeadline (stalled clock/event loop)', async () => {
    let offset = 0;
    const a = replica('pod-a', { now: () => Date.now() + offset });
    a.elector.start();
    await until(() => a.elector.isLeader, 3_000, 'pod-a to lead');
    offset = FAST.renewDeadlineMs + 100;
    expect(a.elector.isLeader).toBe(false);
  });
});

describe('leader election gating the controllers', () => {
  let ca: TestCa;
  beforeEach(async () => {
    ca = await makeTestCa();
    cleanups.push(() => ca.cleanup());
  });

  it("only the leader's controllers write; after the leader stops, the other replica's do", async () => {
    for (const n of ['default', 'team-a', 'istio-system']) fake.put('namespaces', { metadata: { name: n } });
    const replicas = ['pod-a', 'pod-b'].map((id) => {
      const token = `token-${id}`;
      const kube = clientFor(fake, token);
      const log = recordingLog();
      const ctl: { root?: RootCertDistributor; tls?: IstiodTlsController } = {};
      const elector = new LeaderElector({
        kube,
        namespace: NS,
        identity: id,
        ...FAST,
        onStartedLeading: () => {
          ctl.root?.onStartedLeading();
          ctl.tls?.onStartedLeading();
        },
        onStoppedLeading: () => undefined,
        log: asLog(log),
      });
      const root = new RootCertDistributor({ kube, rootBundle: () => ca.rootPem, isLeader: () => elector.isLeader, queue: { qps: 1000, burst: 1000 }, log: asLog(log) });
      const tls = new IstiodTlsController({ kube, issue: ca.issue(), rootBundle: () => ca.rootPem, isLeader: () => elector.isLeader, checkIntervalMs: 200, log: asLog(log) });
      ctl.root = root;
      ctl.tls = tls;
      cleanups.push(async () => {
        await root.stop();
        await tls.stop();
        await elector.stop();
      });
      return { id, token, elector, root, tls };
    });
    for (const r of replicas) {
      r.root.start();
      r.tls.start();
    }
    for (const r of replicas) r.elector.start();

    await until(() => replicas.some((r) => r.elector.isLeader), 3_000, 'a leader');
    const leader = replicas.find((r) => r.elector.isLeader)!;
    const follower = replicas.find((r) => r !== leader)!;
    await until(() => fake.list('configmaps').length === 3 && fake.get('secrets', 'istio-system', 'istiod-tls') !== undefined, 5_000, 'the leader to write');
    fake.put('namespaces', { metadata: { name: 'team-b' } });
    await until(() => fake.get('configmaps', 'team-b', 'istio-ca-root-cert') !== undefined, 3_000, 'team-b');

    expect(writesTo(fake, 'configmaps', follower.token)).toEqual([]);
    expect(writesTo(fake, 'secrets', follower.token)).toEqual([]);
    expect(writesTo(fake, 'configmaps', leader.token).length).toBe(4);
    expect(writesTo(fake, 'secrets', leader.token).length).toBe(1);

    // Hand over: the old leader releases, the other takes over and serves new namespaces.
    await leader.root.stop();
    await leader.tls.stop();
    await leader.elector.stop();
    await until(() => follower.elector.isLeader, 2_000, 'the follower to take over');
    const mark = fake.requests.length;
    fake.put('namespaces', { metadata: { name: 'team-c' } });
    fake.delete('secrets', 'istio-system', 'istiod-tls');
    await until(() => fake.get('configmaps', 'team-c', 'istio-ca-root-cert') !== undefined && fake.get('secrets', 'istio-system', 'istiod-tls') !== undefined, 5_000, 'the new leader to write');
    const later = fake.requests.slice(mark).filter((r) => r.method !== 'GET');
    expect(later.every((r) => r.authorization === `Bearer ${follower.token}`)).toBe(true);
  });
});
