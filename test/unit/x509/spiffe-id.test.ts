import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseSpiffeId, parseWorkloadSpiffeId, spiffeIdProblem, workloadSpiffeId } from '../../../src/x509/spiffe-id.js';

const TD_255 = `${'a'.repeat(251)}.com`;
/** Trust domains of the allowed characters, as dot-separated non-empty labels. */
const trustDomainArb = (maxLabels: number) =>
  fc.array(fc.stringMatching(/^[a-z0-9_-]{1,12}$/), { minLength: 1, maxLength: maxLabels }).map((labels) => labels.join('.'));
/** An ID of exactly `bytes` bytes: spiffe://td/ + 'a' padding. */
const idOfBytes = (bytes: number): string => `spiffe://td/${'a'.repeat(bytes - 'spiffe://td/'.length)}`;

describe('spiffeIdProblem accepts', () => {
  it.each([
    ['an Istio workload identity', 'spiffe://cluster.local/ns/default/sa/default'],
    ['a trust domain without a path', 'spiffe://cluster.local'],
    ['a trust domain of digits, dots, dashes and underscores', 'spiffe://my-mesh_1.example.org/x'],
    ['a path with uppercase letters', 'spiffe://example.org/Service/API'],
    ['a path with dashes, underscores and dots inside segments', 'spiffe://example.org/a-b_c.d/.hidden/x..y'],
    ['a segment of three dots', 'spiffe://example.org/.../x'],
    ['a single-character trust domain and segment', 'spiffe://t/s'],
    ['a trust domain of exactly 255 characters', `spiffe://${TD_255}/x`],
    ['an ID of exactly 2048 bytes', idOfBytes(2048)],
  ])('%s (%s)', (_name, id) => {
    expect(spiffeIdProblem(id)).toBeNull();
    expect(() => parseSpiffeId(id)).not.toThrow();
  });
});

describe('spiffeIdProblem rejects', () => {
  it.each([
    ['a trust domain with uppercase letters', 'spiffe://Cluster.local/ns/a/sa/b', /trust domain may hold only/],
    ['a trust domain with a port', 'spiffe://cluster.local:8080/ns/a/sa/b', /trust domain may hold only/],
    ['a trust domain with userinfo', 'spiffe://user@cluster.local/ns/a/sa/b', /trust domain may hold only/],
    ['a trust domain with user and password', 'spiffe://user:pw@cluster.local/x', /trust domain may hold only/],
    ['a query after the path', 'spiffe://cluster.local/ns/a/sa/b?x=1', /path segments may hold only/],
    ['a query after the trust domain', 'spiffe://cluster.local?x=1', /trust domain may hold only/],
    ['an empty query', 'spiffe://cluster.local/x?', /path segments may hold only/],
    ['a fragment after the path', 'spiffe://cluster.local/ns/a/sa/b#frag', /path segments may hold only/],
    ['a fragment after the trust domain', 'spiffe://cluster.local#frag', /trust domain may hold only/],
    ['percent-encoding in the path', 'spiffe://cluster.local/ns/a%2Fb', /path segments may hold only/],
    ['percent-encoding in the trust domain', 'spiffe://cluster%2elocal/x', /trust domain may hold only/],
    // Go's X.509 parser refuses a URI SAN whose host has an empty label.
    ['a trust domain ending with a dot', 'spiffe://cluster.local./ns/a/sa/b', /must not start or end with "\."/],
    ['a trust domain starting with a dot', 'spiffe://.cluster.local/ns/a/sa/b', /must not start or end with "\."/],
    ['a trust domain with an empty label', 'spiffe://cluster..local/ns/a/sa/b', /contain "\.\."/],
    ['a trust domain that is a dot', 'spiffe://./x', /must not start or end with "\."/],
    ['an empty path segment', 'spiffe://cluster.local/ns//sa/b', /empty segment/],
    ['a leading empty segment', 'spiffe://cluster.local//ns', /empty segment/],
    ['a dot segment', 'spiffe://cluster.local/ns/./sa', /"\." or "\.\." segments/],
    ['a dot-dot segment', 'spiffe://cluster.local/ns/../sa', /"\." or "\.\." segments/],
    ['a final dot-dot segment', 'spiffe://cluster.local/..', /"\." or "\.\." segments/],
    ['a trailing slash after the path', 'spiffe://cluster.local/ns/a/', /empty segment|must not end/],
    ['a trailing slash after the trust domain', 'spiffe://cluster.local/', /must not end with "\/"/],
    ['an ID longer than 2048 bytes', idOfBytes(2049), /longer than 2048 bytes/],
    ['an ID under 2048 characters but over 2048 bytes', `spiffe://td/${'é'.repeat(1019)}`, /longer than 2048 bytes/],
    ['a trust domain longer than 255 characters', `spiffe://a${TD_255}/x`, /longer than 255/],
    ['an empty trust domain', 'spiffe:///ns/a/sa/b', /trust domain is empty/],
    ['nothing after the scheme', 'spiffe://', /trust domain is empty/],
    ['the https scheme', 'https://cluster.local/ns/a/sa/b', /must start with spiffe:\/\//],
    ['an uppercase scheme', 'SPIFFE://cluster.local/ns/a/sa/b', /must start with spiffe:\/\//],
    ['a scheme with one slash', 'spiffe:/cluster.local/ns/a', /must start with spiffe:\/\//],
    ['a scheme without slashes', 'spiffe:cluster.local', /must start with spiffe:\/\//],
    ['a missing scheme', 'cluster.local/ns/a/sa/b', /must start with spiffe:\/\//],
    ['an empty string', '', /must start with spiffe:\/\//],
    ['leading whitespace', ' spiffe://cluster.local/x', /must start with spiffe:\/\//],
    ['trailing whitespace', 'spiffe://cluster.local/x ', /path segments may hold only/],
    ['a space inside a segment', 'spiffe://cluster.local/a b', /path segments may hold only/],
    ['a non-ASCII trust domain', 'spiffe://clüster.local/x', /trust domain may hold only/],
    ['a non-ASCII path', 'spiffe://cluster.local/ns/café', /path segments may hold only/],
    ['a backslash in the path', 'spiffe://cluster.local/ns\\a', /path segments may hold only/],
    ['a NUL byte', 'spiffe://cluster.local/ns/a\u0000b', /path segments may hold only/],
  ])('%s', (_name, id, reason) => {
    const problem = spiffeIdProblem(id);
    expect(problem).toMatch(reason);
    expect(() => parseSpiffeId(id)).toThrow(problem!);
  });
});

describe('parseSpiffeId', () => {
  it.each([
    ['splits trust domain and path', 'spiffe://cluster.local/ns/a/sa/b', { trustDomain: 'cluster.local', path: '/ns/a/sa/b' }],
    ['gives an empty path for a bare trust domain', 'spiffe://example.org', { trustDomain: 'example.org', path: '' }],
  ])('%s', (_name, id, expected) => {
    expect(parseSpiffeId(id)).toEqual(expected);
  });
});

describe('workloadSpiffeId', () => {
  it.each([
    ['builds the Istio identity of a service account', ['cluster.local', 'default', 'sleep'], 'spiffe://cluster.local/ns/default/sa/sleep'],
    ['keeps dots and dashes in names', ['example.org', 'istio-system', 'istio.ingress-gw'], 'spiffe://example.org/ns/istio-system/sa/istio.ingress-gw'],
  ])('%s', (_name, [td, ns, sa], expected) => {
    expect(workloadSpiffeId(td!, ns!, sa!)).toBe(expected);
  });

  it.each([
    ['refuses an uppercase trust domain', ['Cluster.local', 'default', 'sleep']],
    ['refuses an empty namespace', ['cluster.local', '', 'sleep']],
    ['refuses an empty service account', ['cluster.local', 'default', '']],
    ['refuses a namespace with a slash', ['cluster.local', 'a/b', 'sleep']],
    ['refuses a service account with a slash', ['cluster.local', 'default', 'sleep/x']],
    ['refuses a namespace that smuggles another workload path', ['cluster.local', 'a/sa/b/ns/c', 'd']],
    ['refuses a dot-dot service account', ['cluster.local', 'default', '..']],
    ['refuses a service account with a query', ['cluster.local', 'default', 'sleep?x']],
    ['refuses an empty trust domain', ['', 'default', 'sleep']],
  ])('%s', (_name, [td, ns, sa]) => {
    expect(() => workloadSpiffeId(td!, ns!, sa!)).toThrow();
  });
});

describe('parseWorkloadSpiffeId', () => {
  it('reads trust domain, namespace and service account', () => {
    expect(parseWorkloadSpiffeId('spiffe://cluster.local/ns/default/sa/sleep')).toEqual({
      trustDomain: 'cluster.local',
      namespace: 'default',
      serviceAccount: 'sleep',
    });
  });

  it.each([
    ['a bare trust domain', 'spiffe://cluster.local'],
    ['a namespace without a service account', 'spiffe://cluster.local/ns/default'],
    ['an extra segment after the service account', 'spiffe://cluster.local/ns/default/sa/sleep/extra'],
    ['segments in the wrong order', 'spiffe://cluster.local/sa/sleep/ns/default'],
    ['other segment names', 'spiffe://cluster.local/namespace/default/sa/sleep'],
    ['an invalid SPIFFE ID of the right shape', 'spiffe://Cluster.local/ns/default/sa/sleep'],
    ['a trailing slash', 'spiffe://cluster.local/ns/default/sa/sleep/'],
    ['another scheme', 'https://cluster.local/ns/default/sa/sleep'],
  ])('returns null for %s', (_name, id) => {
    expect(parseWorkloadSpiffeId(id)).toBeNull();
  });

  it('inverts workloadSpiffeId', () => {
    const name = fc.stringMatching(/^[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?$/);
    fc.assert(
      fc.property(trustDomainArb(3), name, name, (trustDomain, namespace, serviceAccount) => {
        expect(parseWorkloadSpiffeId(workloadSpiffeId(trustDomain, namespace, serviceAccount))).toEqual({ trustDomain, namespace, serviceAccount });
      }),
    );
  });
});

describe('spiffeIdProblem properties', () => {
  const check = (id: string): void => {
    let problem: string | null = null;
    expect(() => {
      problem = spiffeIdProblem(id);
    }).not.toThrow();
    if (problem === null) {
      const { trustDomain, path } = parseSpiffeId(id);
      expect(`spiffe://${trustDomain}${path}`).toBe(id);
    } else {
      expect(typeof problem).toBe('string');
      expect((problem as string).length).toBeGreaterThan(0);
      expect(() => parseSpiffeId(id)).toThrow();
    }
  };

  it('never throws on any string: it either accepts it or gives a reason', () => {
    fc.assert(fc.property(fc.string({ unit: 'binary', maxLength: 300 }), check), { numRuns: 2000 });
  });

  it('never throws on strings that start like a SPIFFE ID', () => {
    const tail = fc.string({ unit: fc.constantFrom('a', 'Z', '0', '.', '-', '_', '/', ':', '@', '%', '?', '#', ' ', 'é', '\uD800'), maxLength: 60 });
    fc.assert(fc.property(tail, (t) => check(`spiffe://${t}`)), { numRuns: 2000 });
  });

  it('never throws on very long strings', () => {
    fc.assert(fc.property(fc.string({ unit: 'grapheme', minLength: 2040, maxLength: 2100 }), (t) => check(`spiffe://td/${t}`)), { numRuns: 50 });
  });

  it('accepts every ID built from the allowed characters', () => {
    const td = trustDomainArb(4);
    const segment = fc.stringMatching(/^[a-zA-Z0-9._-]{1,30}$/).filter((s) => s !== '.' && s !== '..');
    fc.assert(
      fc.property(td, fc.array(segment, { maxLength: 8 }), (t, segs) => {
        const id = `spiffe://${t}${segs.map((s) => `/${s}`).join('')}`;
        expect(spiffeIdProblem(id)).toBeNull();
        expect(parseSpiffeId(id)).toEqual({ trustDomain: t, path: segs.map((s) => `/${s}`).join('') });
      }),
    );
  });
});
