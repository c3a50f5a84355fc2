import { status } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCsr } from '../../fixtures/csr.js';
import { mintToken, startTestCa, type TestCa } from '../../support/harness.js';

describe('overload protection', () => {
  let ca: TestCa;
  beforeAll(async () => {
    ca = await startTestCa({ overload: { maxInFlight: 4, perIdentity: { rate: 1000, burst: 1000 } } });
  });
  afterAll(async () => ca?.close());

  it('sheds a burst beyond the in-flight bound with UNAVAILABLE only, and every retried request then succeeds', async () => {
    const clients = Array.from({ length: 4 }, () => ca.client());
    const token = await mintToken({ ns: 'storm', sa: 'pod' });
    const csr = await makeCsr({ uris: ['spiffe://cluster.local/ns/storm/sa/pod'] });
    const once = (i: number) =>
      clients[i % 4]!.createCertificate({ csrPem: csr.pem, token }).then(
        () => 'ok' as const,
        (e: { code: number }) => e.code,
      );
    const first = await Promise.all(Array.from({ length: 300 }, (_, i) => once(i)));
    const shed = first.filter((r) => r === status.UNAVAILABLE).length;
    expect(shed).toBeGreaterThan(0);
    expect(first.filter((r) => r !== 'ok' && r !== status.UNAVAILABLE)).toEqual([]);
    // Retry the shed ones as istio-agent does (backoff from 100 ms), a few at a time.
    let pending = first.map((r, i) => (r === 'ok' ? -1 : i)).filter((i) => i >= 0);
    for (let attempt = 0; pending.length > 0 && attempt < 8; attempt++) {
      await new Promise((r) => setTimeout(r, 100 * 2 ** Math.min(attempt, 3)));
      const next: number[] = [];
      for (let k = 0; k < pending.length; k += 4) {
        const batch = pending.slice(k, k + 4);
        const res = await Promise.all(batch.map(once));
        res.forEach((r, j) => {
          if (r !== 'ok') {
            expect(r).toBe(status.UNAVAILABLE);
            next.push(batch[j]!);
          }
        });
      }
      pending = next;
    }
    expect(pending).toEqual([]);
  });

  it('limits one identity with RESOURCE_EXHAUSTED while others are served', async () => {
    const limited = await startTestCa({ overload: { perIdentity: { rate: 1, burst: 2 } } });
    try {
      const csr = await makeCsr({ uris: ['spiffe://cluster.local/ns/noisy/sa/pod'] });
      const token = await mintToken({ ns: 'noisy', sa: 'pod' });
      const results = [];
      for (let i = 0; i < 4; i++) results.push(await limited.request({ csrPem: csr.pem, token }).then(() => 'ok', (e: { code: number }) => e.code));
      expect(results.slice(0, 2)).toEqual(['ok', 'ok']);
      expect(results.slice(2)).toEqual([status.RESOURCE_EXHAUSTED, status.RESOURCE_EXHAUSTED]);
      const other = await limited.request({ csrPem: (await makeCsr()).pem, token: await mintToken() });
      expect(other).toHaveLength(3);
    } finally {
      await limited.close();
    }
  });

  it("keys the limit on the pod as well when the token is bound to one: a Deployment's replicas restarting together each get their burst", async () => {
    const limited = await startTestCa({ overload: { perIdentity: { rate: 1, burst: 1 } } });
    try {
      const csr = await makeCsr({ uris: ['spiffe://cluster.local/ns/shop/sa/web'] });
      const replica = (n: number): Promise<string> =>
        mintToken({ ns: 'shop', sa: 'web', claims: { 'kubernetes.io': { namespace: 'shop', serviceaccount: { name: 'web', uid: 'u-1' }, pod: { name: `web-${n}`, uid: `pod-uid-${n}` } } } });
      const call = async (token: string) => limited.request({ csrPem: csr.pem, token }).then(() => 'ok', (e: { code: number }) => e.code);
      const first = await replica(1);
      expect([await call(first), await call(await replica(2)), await call(await replica(3))]).toEqual(['ok', 'ok', 'ok']);
      // The same pod again, within the second: its own bucket is empty.
      expect(await call(first)).toBe(status.RESOURCE_EXHAUSTED);
    } finally {
      await limited.close();
    }
  });

  it('bounds the request bytes in flight: large requests beyond the budget are shed (UNAVAILABLE), one alone is served', async () => {
    // A call bound far above the burst, so only the byte budget can shed.
    const bounded = await startTestCa({ overload: { maxInFlight: 10_000, maxInFlightBytes: 16_384 } });
    try {
      const token = await mintToken({ ns: 'big', sa: 'pod' });
      const csr = await makeCsr({ uris: ['spiffe://cluster.local/ns/big/sa/pod'] });
      const padding = { CertSigner: '', Padding: 'x'.repeat(20_000) }; // a 20 KB message, above the whole budget
      expect(await bounded.request({ csrPem: csr.pem, token, metadata: padding })).toHaveLength(3);
      const clients = Array.from({ length: 4 }, () => bounded.client());
      const burst = await Promise.all(
        Array.from({ length: 60 }, (_, i) =>
          clients[i % 4]!.createCertificate({ csrPem: csr.pem, token, metadata: padding }).then(
            () => 'ok' as const,
            (e: { code: number; details: string }) => {
              // The refusal says what to do and nothing of the server's internals.
              if (e.code === status.UNAVAILABLE) expect(e.details).toBe('the CA is busy (too many certificate requests in flight); retry with backoff');
              return e.code;
            },
          ),
        ),
      );
      expect(burst.filter((r) => r === status.UNAVAILABLE).length).toBeGreaterThan(0);
      expect(burst.filter((r) => r === 'ok').length).toBeGreaterThan(0);
      expect(burst.filter((r) => r !== 'ok' && r !== status.UNAVAILABLE)).toEqual([]);
    } finally {
      await bounded.close();
    }
  });
});
