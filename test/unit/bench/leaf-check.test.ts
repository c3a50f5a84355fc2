import { X509Certificate } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { keepSample } from '../../../bench/lib/h2-client.js';
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
  it('keeps the first five, then one in 500 across the run, at most 50', () => {
    let kept = 0;
    const keptAt: number[] = [];
    for (let ok = 1; ok <= 100_000; ok++) {
      if (keepSample(ok, kept)) {
        kept++;
        keptAt.push(ok);
      }
    }
    expect(keptAt.slice(0, 7)).toEqual([1, 2, 3, 4, 5, 500, 1000]);
    expect(kept).toBe(50);
    expect(keptAt.at(-1)).toBe(22_500);
  });
});
