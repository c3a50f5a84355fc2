import { describe, expect, it } from 'vitest';
import { IdentityRateLimiter, InFlightLimiter } from '../../../src/authority/overload.js';
import { CaError } from '../../../src/errors/ca-error.js';

describe('InFlightLimiter', () => {
  it('admits up to the bound, then refuses with OVERLOADED, and admits again after a release', () => {
    const l = new InFlightLimiter(2);
    const a = l.admit();
    l.admit();
    expect(() => l.admit()).toThrow(expect.objectContaining({ code: 'OVERLOADED' }));
    expect(l.shed).toBe(1);
    a();
    a(); // releasing twice frees one slot only
    expect(l.current).toBe(1);
    expect(() => l.admit()).not.toThrow();
  });
});

describe('IdentityRateLimiter', () => {
  it('allows a burst, then refuses with RATE_LIMITED until tokens refill at the rate', () => {
    let now = 0;
    const r = new IdentityRateLimiter({ rate: 2, burst: 3, now: () => now });
    for (let i = 0; i < 3; i++) r.take('spiffe://td/ns/a/sa/b');
    expect(() => r.take('spiffe://td/ns/a/sa/b')).toThrow(CaError);
    expect(() => r.take('spiffe://td/ns/other/sa/b')).not.toThrow(); // per identity
    now += 500; // one token at 2/s
    expect(() => r.take('spiffe://td/ns/a/sa/b')).not.toThrow();
    expect(() => r.take('spiffe://td/ns/a/sa/b')).toThrow(expect.objectContaining({ code: 'RATE_LIMITED' }));
  });

  it('forgets the least recently seen identity beyond maxKeys', () => {
    let now = 0;
    const r = new IdentityRateLimiter({ rate: 1, burst: 1, maxKeys: 2, now: () => now });
    r.take('a');
    r.take('b');
    r.take('c'); // evicts a
    expect(() => r.take('a')).not.toThrow(); // a fresh bucket
    expect(() => r.take('c')).toThrow();
    now += 0;
  });
});
