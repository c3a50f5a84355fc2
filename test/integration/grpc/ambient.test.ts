/**
 * Ambient mode (ztunnel impersonation) with Kubernetes node authorization. A real Kubernetes API
 * server was not available here: the API is served in the test on loopback (test/support/fake-kube.ts)
 * with real Kubernetes JSON shapes (Pod, PodList, watch events).
 */
import { status } from '@grpc/grpc-js';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCsr } from '../../fixtures/csr.js';
import { FakeKube, fakePod } from '../../support/fake-kube.js';
import { mintToken, startTestCa, type TestCa } from '../../support/harness.js';

const ID = (ns: string, sa: string) => `spiffe://cluster.local/ns/${ns}/sa/${sa}`;

function ztunnelToken(o: { podName?: string; podUid?: string; node?: string; ns?: string; sa?: string } = {}): Promise<string> {
  const ns = o.ns ?? 'istio-system';
  const sa = o.sa ?? 'ztunnel';
  return mintToken({
    ns,
    sa,
    claims: {
      'kubernetes.io': {
        namespace: ns,
        serviceaccount: { name: sa, uid: 'sa-uid' },
        pod: { name: o.podName ?? 'ztunnel-abc', uid: o.podUid ?? 'uid-ztunnel-abc' },
        node: { name: o.node ?? 'node-1', uid: 'node-uid-1' },
      },
    },
  });
}

describe('ambient mode: ztunnel impersonation with node authorization', () => {
  let fake: FakeKube;
  let ca: TestCa;
  let dir: string;
  beforeAll(async () => {
    fake = await FakeKube.start({ token: 'meshcert-sa-token' });
    fake.put('pods', fakePod({ namespace: 'istio-system', name: 'ztunnel-abc', uid: 'uid-ztunnel-abc', node: 'node-1', serviceAccount: 'ztunnel' }));
    fake.put('pods', fakePod({ namespace: 'shop', name: 'web-1', uid: 'uid-web-1', node: 'node-1', serviceAccount: 'web' }));
    fake.put('pods', fakePod({ namespace: 'shop', name: 'db-1', uid: 'uid-db-1', node: 'node-2', serviceAccount: 'db' }));
    dir = mkdtempSync(join(tmpdir(), 'meshcert-ambient-'));
    writeFileSync(join(dir, 'kube-ca.pem'), fake.caPem);
    writeFileSync(join(dir, 'kube-token'), 'meshcert-sa-token');
    ca = await startTestCa({
      ambient: { enabled: true },
      kubernetes: { server: fake.url, caFile: join(dir, 'kube-ca.pem'), tokenFile: join(dir, 'kube-token') },
    });
  });
  afterAll(async () => {
    await ca?.close();
    await fake?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const ask = async (identity: string, token: Promise<string>) =>
    ca.request({ csrPem: (await makeCsr({ uris: [identity] })).pem, token: await token, metadata: { ImpersonatedIdentity: identity } });

  it('issues the workload identity when a matching pod runs on the caller node', async () => {
    const chain = await ask(ID('shop', 'web'), ztunnelToken());
    expect(new X509Certificate(chain[0]!).subjectAltName).toBe(`URI:${ID('shop', 'web')}`);
    // ztunnel's expectations: middle elements hold one certificate each; the last holds the roots.
    expect(chain).toHaveLength(3);
    expect(chain[1]!.match(/BEGIN CERTIFICATE/g)).toHaveLength(1);
  });

  it('refuses when no pod of that identity runs on the caller node', async () => {
    await expect(ask(ID('shop', 'db'), ztunnelToken())).rejects.toMatchObject({ code: status.UNAUTHENTICATED });
  });

  it('refuses an untrusted caller', async () => {
    fake.put('pods', fakePod({ namespace: 'shop', name: 'web-2', uid: 'uid-web-2', node: 'node-1', serviceAccount: 'web' }));
    await expect(ask(ID('shop', 'web'), ztunnelToken({ ns: 'shop', sa: 'web', podName: 'web-2', podUid: 'uid-web-2' }))).rejects.toMatchObject({ code: status.UNAUTHENTICATED });
  });

  it('refuses a stale pod UID', async () => {
    await expect(ask(ID('shop', 'web'), ztunnelToken({ podUid: 'uid-of-a-deleted-pod' }))).rejects.toMatchObject({ code: status.UNAUTHENTICATED });
  });

  it('follows the watch: a workload pod deleted from the node stops being authorized', async () => {
    fake.put('pods', fakePod({ namespace: 'shop', name: 'cart-1', uid: 'uid-cart-1', node: 'node-1', serviceAccount: 'cart' }));
    await expect.poll(() => ask(ID('shop', 'cart'), ztunnelToken()).then(() => 'ok', () => 'no'), { timeout: 5000 }).toBe('ok');
    fake.delete('pods', 'shop', 'cart-1');
    await expect.poll(() => ask(ID('shop', 'cart'), ztunnelToken()).then(() => 'ok', (e: { code: number }) => e.code), { timeout: 5000 }).toBe(status.UNAUTHENTICATED);
  });

  it('confirms with the API server a pod its watch has not delivered yet (a pod just started, a ztunnel just replaced): issued, not refused for good', async () => {
    fake.holdWatchEvents();
    try {
      fake.put('pods', fakePod({ namespace: 'istio-system', name: 'ztunnel-new', uid: 'uid-ztunnel-new', node: 'node-1', serviceAccount: 'ztunnel' }));
      fake.put('pods', fakePod({ namespace: 'shop', name: 'api-1', uid: 'uid-api-1', node: 'node-1', serviceAccount: 'api' }));
      const chain = await ask(ID('shop', 'api'), ztunnelToken({ podName: 'ztunnel-new', podUid: 'uid-ztunnel-new' }));
      expect(new X509Certificate(chain[0]!).subjectAltName).toBe(`URI:${ID('shop', 'api')}`);
      // What the API server does not have either is refused, saying it asked.
      await expect(ask(ID('shop', 'search'), ztunnelToken())).rejects.toMatchObject({ code: status.UNAUTHENTICATED, details: expect.stringContaining('confirmed with the Kubernetes API server') });
    } finally {
      fake.releaseWatchEvents();
    }
  });

  it('takes a new list of trusted node accounts from a reload: a node proxy removed is refused from the next call on', async () => {
    expect(await ask(ID('shop', 'web'), ztunnelToken()).then(() => 'ok')).toBe('ok');
    const { config } = ca;
    await ca.running.reload({ ...config, ambient: { ...config.ambient, trustedNodeAccounts: ['kube-system/node-proxy'] } });
    try {
      await expect(ask(ID('shop', 'web'), ztunnelToken())).rejects.toMatchObject({ code: status.UNAUTHENTICATED, details: expect.stringContaining('only trusted node accounts may: kube-system/node-proxy') });
    } finally {
      await ca.running.reload(config);
    }
    expect(await ask(ID('shop', 'web'), ztunnelToken()).then(() => 'ok')).toBe('ok');
  });

  it('never lets a workload impersonate through its own token', async () => {
    // Refused for the account, before anything else is looked at: a plain token and one bound to a pod on the node alike.
    const refusal = { code: status.UNAUTHENTICATED, details: expect.stringContaining('service account shop/web may not request certificates for other workloads') };
    await expect(ask(ID('shop', 'db'), mintToken({ ns: 'shop', sa: 'web' }))).rejects.toMatchObject(refusal);
    fake.put('pods', fakePod({ namespace: 'shop', name: 'web-3', uid: 'uid-web-3', node: 'node-1', serviceAccount: 'web' }));
    fake.put('pods', fakePod({ namespace: 'shop', name: 'db-2', uid: 'uid-db-2', node: 'node-1', serviceAccount: 'db' }));
    await expect(ask(ID('shop', 'db'), ztunnelToken({ ns: 'shop', sa: 'web', podName: 'web-3', podUid: 'uid-web-3' }))).rejects.toMatchObject(refusal);
  });
});
