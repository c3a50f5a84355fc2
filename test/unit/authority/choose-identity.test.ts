import { generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { chooseIdentity } from '../../../src/authority/authority.js';
import type { Caller } from '../../../src/auth/types.js';
import type { ParsedCsr } from '../../../src/csr/types.js';
import { CaError, type CaErrorCode } from '../../../src/errors/ca-error.js';

const SLEEP = 'spiffe://cluster.local/ns/default/sa/sleep';
const HTTPBIN = 'spiffe://cluster.local/ns/default/sa/httpbin';
const ISTIOD = 'spiffe://cluster.local/ns/istio-system/sa/istiod';

const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });

/** A CSR as parseCsrPem returns it: defaults (one URI, nothing else) plus overrides. */
function csr(overrides: Partial<ParsedCsr> = {}): ParsedCsr {
  return {
    spki: publicKey.export({ type: 'spki', format: 'der' }),
    publicKey,
    key: { algorithm: 'ECDSA', size: 256, curve: 'P-256' },
    uris: [SLEEP],
    dnsNames: [],
    ipAddresses: [],
    emails: [],
    requestsCa: false,
    unknownExtensions: [],
    ...overrides,
  };
}

function caller(overrides: Partial<Caller> = {}): Caller {
  return { method: 'jwt', identities: [SLEEP], namespace: 'default', serviceAccount: 'sleep', ...overrides };
}

const clientCert = (identities: string[]): Caller => ({ method: 'client-cert', identities });

describe('chooseIdentity', () => {
  it.each<[string, Caller, ParsedCsr, string]>([
    ['gives the caller identity when the CSR has no URI SAN', caller(), csr({ uris: [] }), SLEEP],
    ['gives the identity the CSR names when it is the caller', caller(), csr(), SLEEP],
    ['gives a token caller identity regardless of method', caller({ method: 'tokenreview' }), csr(), SLEEP],
    ['picks the requested identity of a client certificate with several', clientCert([ISTIOD, HTTPBIN, SLEEP]), csr({ uris: [HTTPBIN] }), HTTPBIN],
    ['picks the last identity of a client certificate when asked', clientCert([ISTIOD, SLEEP]), csr({ uris: [SLEEP] }), SLEEP],
    ['gives the first identity of a client certificate when the CSR has no URI', clientCert([ISTIOD, SLEEP]), csr({ uris: [] }), ISTIOD],
    ['ignores an unknown extension (parseCsr decides on those)', caller(), csr({ unknownExtensions: ['1.2.3.4'] }), SLEEP],
    ['ignores a subject common name (parseCsr decides on those)', caller(), csr({ subjectCommonName: 'sleep' }), SLEEP],
    // DNS, IP and email SANs are the policy's to allow or refuse (test/unit/policy), not identity's.
    ['leaves a DNS SAN to the policy', caller(), csr({ dnsNames: ['sleep.default.svc'] }), SLEEP],
    ['leaves IP and email SANs to the policy', caller(), csr({ ipAddresses: ['10.0.0.1'], emails: ['a@example.com'] }), SLEEP],
    ['leaves a DNS SAN without a URI to the policy', caller(), csr({ uris: [], dnsNames: ['a.example'] }), SLEEP],
  ])('%s', (_name, who, request, expected) => {
    expect(chooseIdentity(who, request)).toBe(expected);
  });

  it.each<[string, Caller, ParsedCsr, CaErrorCode, RegExp]>([
    ['refuses another workload identity with IDENTITY_MISMATCH', caller(), csr({ uris: [HTTPBIN] }), 'IDENTITY_MISMATCH', /requests identity .*httpbin, but the caller is .*sleep/],
    ['refuses an identity that differs only in case', caller(), csr({ uris: [SLEEP.replace('sleep', 'Sleep')] }), 'IDENTITY_MISMATCH', /requests identity/],
    ['refuses an identity in another trust domain', caller(), csr({ uris: ['spiffe://evil.local/ns/default/sa/sleep'] }), 'IDENTITY_MISMATCH', /requests identity/],
    ['refuses a URI that is not a SPIFFE ID', caller(), csr({ uris: ['https://example.com/'] }), 'IDENTITY_MISMATCH', /requests identity/],
    ['refuses two URI SANs with IDENTITY_MISMATCH', caller(), csr({ uris: [SLEEP, HTTPBIN] }), 'IDENTITY_MISMATCH', /more than one URI SAN/],
    ['refuses the caller identity twice', caller(), csr({ uris: [SLEEP, SLEEP] }), 'IDENTITY_MISMATCH', /more than one URI SAN/],
    ['refuses two URIs even when the client certificate holds both', clientCert([SLEEP, HTTPBIN]), csr({ uris: [SLEEP, HTTPBIN] }), 'IDENTITY_MISMATCH', /more than one URI SAN/],
    ['refuses an identity the client certificate does not hold', clientCert([ISTIOD, HTTPBIN]), csr({ uris: [SLEEP] }), 'IDENTITY_MISMATCH', /but the caller is .*istiod.*httpbin/],
    ['refuses a CA request with CSR_FORBIDDEN_EXTENSION', caller(), csr({ requestsCa: true }), 'CSR_FORBIDDEN_EXTENSION', /CA certificate/],
    ['refuses a CA request before looking at identities', caller(), csr({ requestsCa: true, uris: [HTTPBIN] }), 'CSR_FORBIDDEN_EXTENSION', /CA certificate/],
    ['still refuses two URIs when DNS SANs are present too', caller(), csr({ dnsNames: ['x'], uris: [SLEEP, HTTPBIN] }), 'IDENTITY_MISMATCH', /more than one URI SAN/],
    ['refuses a caller without any identity with AUTH_INVALID', clientCert([]), csr({ uris: [] }), 'AUTH_INVALID', /no workload identity/],
  ])('%s', (_name, who, request, code, message) => {
    let error: unknown;
    try {
      chooseIdentity(who, request);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(CaError);
    expect((error as CaError).code).toBe(code);
    expect((error as CaError).message).toMatch(message);
  });
});

describe('trust-domain aliases', () => {
  const base = {
    method: 'jwt' as const,
    identities: ['spiffe://cluster.local/ns/default/sa/sleep'],
  };
  const csrFor = (uri: string): ParsedCsr =>
    ({ spki: Buffer.alloc(0), publicKey: undefined as never, key: { algorithm: 'ECDSA', size: 256, curve: 'P-256' }, uris: [uri], dnsNames: [], ipAddresses: [], emails: [], requestsCa: false, unknownExtensions: [] }) as ParsedCsr;

  it.each([
    ['accepts the same namespace and service account under an alias', 'spiffe://old.example/ns/default/sa/sleep', ['cluster.local', 'old.example'], 'ok'],
    ['refuses an alias for another service account', 'spiffe://old.example/ns/default/sa/other', ['cluster.local', 'old.example'], 'IDENTITY_MISMATCH'],
    ['refuses a trust domain that is not an alias', 'spiffe://evil.example/ns/default/sa/sleep', ['cluster.local', 'old.example'], 'IDENTITY_MISMATCH'],
    ['refuses an alias for another namespace', 'spiffe://old.example/ns/other/sa/sleep', ['cluster.local', 'old.example'], 'IDENTITY_MISMATCH'],
    ['refuses any other trust domain when no alias is configured', 'spiffe://old.example/ns/default/sa/sleep', [], 'IDENTITY_MISMATCH'],
  ])('%s', (_name, uri, aliases, expected) => {
    let result: string;
    try {
      result = chooseIdentity(base, csrFor(uri), aliases) === uri ? 'ok' : 'other';
    } catch (e) {
      result = (e as CaError).code;
    }
    expect(result).toBe(expected);
  });

  it('lets a caller authenticated under an alias ask for its identity in the primary trust domain', () => {
    const caller = { method: 'client-cert' as const, identities: ['spiffe://old.example/ns/default/sa/sleep'] };
    expect(chooseIdentity(caller, csrFor('spiffe://cluster.local/ns/default/sa/sleep'), ['cluster.local', 'old.example'])).toBe('spiffe://cluster.local/ns/default/sa/sleep');
  });

  it('does not make a caller in a trust domain outside the group an alias of the same workload in the group', () => {
    const caller = { method: 'client-cert' as const, identities: ['spiffe://evil.example/ns/default/sa/sleep'] };
    expect(() => chooseIdentity(caller, csrFor('spiffe://cluster.local/ns/default/sa/sleep'), ['cluster.local', 'old.example'])).toThrow(
      expect.objectContaining({ code: 'IDENTITY_MISMATCH' }),
    );
  });
});
