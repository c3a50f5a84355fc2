import { describe, expect, it } from 'vitest';
import { ClientCertRevocations } from '../../../src/auth/revocations.js';

const T = Date.parse('2026-11-29T22:00:00Z');
const W = 'spiffe://cluster.local/ns/vm-db/sa/postgres';
/** A serial no entry lists. */
const S = '1a22a1b268b3d800dfb5990d871e611';

describe('ClientCertRevocations', () => {
  it('refuses certificates whose notBefore is before issuedBefore, and none at or after it', () => {
    const r = new ClientCertRevocations([{ issuedBefore: '2026-11-29T22:00:00Z' }]);
    expect(r.find(W, T - 1, S)).toEqual({ index: 0, issuedBefore: new Date(T) });
    expect(r.find(W, T, S)).toBeUndefined();
    expect(r.find(W, T + 1, S)).toBeUndefined();
  });

  it('reads the zone of issuedBefore', () => {
    const r = new ClientCertRevocations([{ issuedBefore: '2026-11-29T23:00:00+01:00' }]);
    expect(r.find(W, T - 1, S)?.issuedBefore?.toISOString()).toBe('2026-11-29T22:00:00.000Z');
    expect(r.find(W, T, S)).toBeUndefined();
  });

  it('matches every selector an entry sets, with globs', () => {
    const r = new ClientCertRevocations([{ issuedBefore: '2026-11-29T22:00:00Z', trustDomains: ['cluster.local'], namespaces: ['vm-*'], serviceAccounts: ['postgres', 'redis'] }]);
    expect(r.find(W, T - 1, S)?.index).toBe(0);
    expect(r.find('spiffe://cluster.local/ns/vm-cache/sa/redis', T - 1, S)?.index).toBe(0);
    expect(r.find('spiffe://cluster.local/ns/default/sa/postgres', T - 1, S)).toBeUndefined();
    expect(r.find('spiffe://cluster.local/ns/vm-db/sa/app', T - 1, S)).toBeUndefined();
    expect(r.find('spiffe://example.org/ns/vm-db/sa/postgres', T - 1, S)).toBeUndefined();
  });

  it('returns the first entry that refuses, in config order', () => {
    const r = new ClientCertRevocations([
      { issuedBefore: '2026-11-28T00:00:00Z', namespaces: ['vm-db'] },
      { issuedBefore: '2026-11-29T22:00:00Z', namespaces: ['vm-*'] },
      { issuedBefore: '2026-11-30T00:00:00Z' },
    ]);
    expect(r.find(W, Date.parse('2026-11-27T00:00:00Z'), S)?.index).toBe(0);
    expect(r.find(W, T - 1, S)?.index).toBe(1);
    expect(r.find(W, T, S)?.index).toBe(2);
    expect(r.size).toBe(3);
  });

  it('matches namespace and service-account selectors only on Istio workload IDs; a trust-domain-only entry matches any SPIFFE ID', () => {
    const byNs = new ClientCertRevocations([{ issuedBefore: '2026-11-29T22:00:00Z', namespaces: ['*'] }]);
    const bySa = new ClientCertRevocations([{ issuedBefore: '2026-11-29T22:00:00Z', serviceAccounts: ['*'] }]);
    const byTd = new ClientCertRevocations([{ issuedBefore: '2026-11-29T22:00:00Z', trustDomains: ['cluster.local'] }]);
    const other = 'spiffe://cluster.local/vm/host-1';
    expect(byNs.find(other, T - 1, S)).toBeUndefined();
    expect(bySa.find(other, T - 1, S)).toBeUndefined();
    expect(byTd.find(other, T - 1, S)?.index).toBe(0);
    expect(byNs.find(W, T - 1, S)?.index).toBe(0);
  });

  it('refuses nothing without entries, or for what is not a SPIFFE ID', () => {
    expect(ClientCertRevocations.none.find(W, 0, S)).toBeUndefined();
    expect(ClientCertRevocations.none.size).toBe(0);
    expect(new ClientCertRevocations([{ issuedBefore: '2026-11-29T22:00:00Z' }]).find('https://example.com/x', T - 1, S)).toBeUndefined();
  });

  it('lists the entries more than a day ahead', () => {
    const r = new ClientCertRevocations([{ issuedBefore: '2026-11-29T22:00:00Z' }, { issuedBefore: '2027-01-01T00:00:00Z' }]);
    expect(r.farAhead(T)).toEqual([{ index: 1, issuedBefore: new Date('2027-01-01T00:00:00Z') }]);
    expect(r.farAhead(T - 86_400_000)).toEqual([{ index: 1, issuedBefore: new Date('2027-01-01T00:00:00Z') }]);
    expect(r.farAhead(T - 86_400_001)).toHaveLength(2);
  });

  it('refuses an entry whose time is not a date, or with neither a time nor serials (a caller that skipped the schema)', () => {
    expect(() => new ClientCertRevocations([{ issuedBefore: 'yesterday' }])).toThrow(/revokedClientCertificates\[0\]\.issuedBefore is not a date/);
    expect(() => new ClientCertRevocations([{ namespaces: ['vm-*'] }])).toThrow('auth.revokedClientCertificates[0] has neither issuedBefore nor serials');
  });

  it('refuses the certificates whose serial an entry lists, whatever their notBefore, within its selectors', () => {
    const leaked = '1a22a1b268b3d800dfb5990d8700001';
    const r = new ClientCertRevocations([{ serials: [leaked, '2b'], namespaces: ['vm-*'] }]);
    expect(r.find(W, T + 86_400_000, leaked)).toEqual({ index: 0, serial: leaked });
    expect(r.find(W, T, '2b')).toEqual({ index: 0, serial: '2b' });
    expect(r.find(W, T, S)).toBeUndefined();
    expect(r.find('spiffe://cluster.local/ns/default/sa/postgres', T, leaked)).toBeUndefined();
    expect(r.farAhead(T)).toEqual([]);
  });

  it('with both a time and serials, refuses only a listed serial issued before the time', () => {
    const r = new ClientCertRevocations([{ issuedBefore: '2026-11-29T22:00:00Z', serials: ['abc'] }]);
    expect(r.find(W, T - 1, 'abc')).toEqual({ index: 0, issuedBefore: new Date(T), serial: 'abc' });
    expect(r.find(W, T, 'abc')).toBeUndefined();
    expect(r.find(W, T - 1, S)).toBeUndefined();
  });
});
