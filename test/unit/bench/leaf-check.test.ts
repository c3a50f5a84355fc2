import { X509Certificate } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { sampleInto } from '../../../bench/lib/h2-client.js';
import { leafMismatch } from '../../../bench/lib/leaf-check.js';
import { caCert, leafCert } from '../../support/constrained-ca.js';

const spkiOf = (pem: string): Buffer => new X509Certificate(pem).publicKey.export({ type: 'spki', format: 'der' });

describe("the bench's check of a sampled leaf against the requests", () => {
  it('accepts the leaf for an identity asked for with its key, and names what is wrong otherwise', async () => {
    const ca = await caCert(undefined, 'CN=bench test root');
    const a = 'spiffe://cluster.local/ns/a/sa/one';
    const b = 'spiffe://cluster.local/ns/b/sa/two';
    const leafA = (await leafCert(ca, { uris: [a] })).toString('pem');
    const leafB = (await leafCert(ca, { uris: [b] })).toString('pem');
    const keyOf = new Map([
      [a, spkiOf(leafA)],
      [b, spkiOf(leafB)],
    ]);
    expect(leafMismatch(leafA, keyOf)).toBeUndefined();
    expect(leafMismatch(leafB, keyOf)).toBeUndefined();
    // B's identity certified with A's key: a leaf mixed up between callers.
    expect(leafMismatch(leafB, new Map([[b, spkiOf(leafA)]]))).toBe(`${b} certified with another key than its CSR's`);
    expect(leafMismatch(leafA, new Map([[b, spkiOf(leafB)]]))).toBe(`${a} was not asked for`);
    const two = (await leafCert(ca, { uris: [a, b] })).toString('pem');
    expect(leafMismatch(two, keyOf)).toBe(`2 URI SANs (${a} ${b})`);
    const none = (await leafCert(ca, { dnsNames: ['x.test'] })).toString('pem');
    expect(leafMismatch(none, keyOf)).toBe('0 URI SANs ()');
  });
});

describe("the bench's choice of responses to check", () => {
  it('keeps the first five and 45 drawn from the whole run, late ones included', () => {
    const samples: Buffer[] = [];
    let seed = 1;
    const random = (): number => ((seed = (seed * 48271) % 2147483647) / 2147483647);
    for (let ok = 1; ok <= 100_000; ok++) sampleInto(samples, Buffer.from(String(ok)), ok, random);
    const kept = samples.map((b) => Number(b.toString()));
    expect(kept).toHaveLength(50);
    expect(kept.slice(0, 5)).toEqual([1, 2, 3, 4, 5]);
    // Drawn across the run: some from its second half, none twice.
    expect(kept.filter((n) => n > 50_000).length).toBeGreaterThan(10);
    expect(new Set(kept).size).toBe(50);
  });
});
