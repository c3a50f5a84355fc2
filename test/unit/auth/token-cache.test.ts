import { describe, expect, it } from 'vitest';
import { TokenCache } from '../../../src/auth/token-cache.js';
import type { Caller } from '../../../src/auth/types.js';

const T0 = 1_700_000_000_000;

function caller(sa: string, expiresAt?: number): Caller {
  return { method: 'jwt', identities: [`spiffe://cluster.local/ns/default/sa/${sa}`], namespace: 'default', serviceAccount: sa, ...(expiresAt === undefined ? {} : { expiresAt }) };
}

function clocked(o: { maxEntries?: number; maxTtlMs?: number } = {}) {
  const clock = { now: T0 };
  return { cache: new TokenCache({ ...o, now: () => clock.now }), clock };
}

describe('TokenCache', () => {
  it('returns a cached caller for the same token and scope', () => {
    const { cache } = clocked();
    const c = caller('a', T0 / 1000 + 3600);
    cache.set('tok', c, 'Kubernetes');
    expect(cache.get('tok', 'Kubernetes')).toBe(c);
    expect(cache.hits).toBe(1);
  });

  it('keeps scopes apart (same token, another cluster)', () => {
    const { cache } = clocked();
    cache.set('tok', caller('a'), 'east');
    expect(cache.get('tok', 'west')).toBeUndefined();
    expect(cache.get('tok', 'east')).toBeDefined();
  });

  it('never keeps the raw token: keys are SHA-256 hex digests', () => {
    const key = TokenCache.keyFor('secret-token', 'Kubernetes');
    expect(key).toMatch(/^[0-9a-f]{64}$/);
    expect(key).not.toContain('secret');
    expect(TokenCache.keyFor('ab', 'c')).not.toBe(TokenCache.keyFor('b', 'ca'));
    // What set() stores: its keys are those digests, and nothing in the cache holds the token.
    const { cache } = clocked();
    cache.set('secret-token', caller('a'), 'Kubernetes');
    const stored = (cache as unknown as { entries: Map<string, unknown> }).entries;
    expect([...stored.keys()]).toEqual([key]);
    expect(JSON.stringify([...stored])).not.toContain('secret-token');
  });

  type ExpiryCase = { name: string; expiresAt?: number; maxTtlMs: number; aliveAtMs: number; deadAtMs: number };
  const expiry: ExpiryCase[] = [
    { name: 'expires an entry at the token exp when that comes first', expiresAt: T0 / 1000 + 10, maxTtlMs: 60_000, aliveAtMs: 9_999, deadAtMs: 10_000 },
    { name: 'expires an entry at maxTtl when that comes first', expiresAt: T0 / 1000 + 3600, maxTtlMs: 60_000, aliveAtMs: 59_999, deadAtMs: 60_000 },
    { name: 'expires an entry without exp at maxTtl', maxTtlMs: 5_000, aliveAtMs: 4_999, deadAtMs: 5_000 },
  ];
  for (const c of expiry) {
    it(c.name, () => {
      const { cache, clock } = clocked({ maxTtlMs: c.maxTtlMs });
      cache.set('tok', caller('a', c.expiresAt));
      clock.now = T0 + c.aliveAtMs;
      expect(cache.get('tok')).toBeDefined();
      clock.now = T0 + c.deadAtMs;
      expect(cache.get('tok')).toBeUndefined();
      expect(cache.size).toBe(0);
    });
  }

  it('does not store a caller whose credential has already expired', () => {
    const { cache } = clocked();
    cache.set('tok', caller('a', T0 / 1000 - 1));
    expect(cache.size).toBe(0);
  });

  it('enforces maxEntries by evicting the least recently used entry', () => {
    const { cache } = clocked({ maxEntries: 3 });
    cache.set('a', caller('a'));
    cache.set('b', caller('b'));
    cache.set('c', caller('c'));
    expect(cache.get('a')).toBeDefined(); // a is now most recent
    cache.set('d', caller('d'));
    expect(cache.size).toBe(3);
    expect(cache.get('b')).toBeUndefined();
    expect(cache.get('a')).toBeDefined();
    expect(cache.get('c')).toBeDefined();
    expect(cache.get('d')).toBeDefined();
  });

  it('stays bounded under many distinct tokens', () => {
    const { cache } = clocked({ maxEntries: 100 });
    for (let i = 0; i < 5_000; i++) cache.set(`t${i}`, caller('a'));
    expect(cache.size).toBe(100);
    expect(cache.get('t4999')).toBeDefined();
    expect(cache.get('t0')).toBeUndefined();
  });

  it('stores nothing when maxEntries is 0', () => {
    const { cache } = clocked({ maxEntries: 0 });
    cache.set('a', caller('a'));
    expect(cache.size).toBe(0);
  });

  it('refuses invalid options', () => {
    expect(() => new TokenCache({ maxEntries: -1 })).toThrow(/maxEntries/);
    expect(() => new TokenCache({ maxTtlMs: Number.NaN })).toThrow(/maxTtlMs/);
  });
});
