import { describe, expect, it } from 'vitest';
import { admitUnlessShortOfMemory, IdentityRateLimiter, InFlightLimiter } from '../../../src/authority/overload.js';
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

  it('holds the request bytes in flight to the byte budget, always admitting a call when none is in flight', () => {
    const l = new InFlightLimiter(100, 10_000);
    const big = l.admit(50_000); // larger than the whole budget, but alone: admitted
    expect(l.currentBytes).toBe(50_000);
    expect(() => l.admit(1)).toThrow(expect.objectContaining({ code: 'OVERLOADED' }));
    big();
    big(); // releasing twice frees its bytes once
    expect(l.currentBytes).toBe(0);
    const a = l.admit(6_000);
    l.admit(4_000); // exactly at the budget
    expect(() => l.admit(1)).toThrow(expect.objectContaining({ code: 'OVERLOADED' }));
    expect(l.shed).toBe(2);
    a();
    expect(l.currentBytes).toBe(4_000);
    expect(() => l.admit(6_000)).not.toThrow();
    expect(l.current).toBe(2);
  });

  it('applies the call bound whatever the bytes', () => {
    const l = new InFlightLimiter(2, 1_000_000);
    l.admit(10);
    l.admit(10);
    expect(() => l.admit(10)).toThrow(expect.objectContaining({ code: 'OVERLOADED' }));
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

  it('gives each workload instance asking for an identity its own bucket, and one without an instance the identity\'s', () => {
    const r = new IdentityRateLimiter({ rate: 1, burst: 1, now: () => 0 });
    const id = 'spiffe://td/ns/shop/sa/web';
    r.take(id, 'pod-uid-1');
    expect(() => r.take(id, 'pod-uid-1')).toThrow(expect.objectContaining({ code: 'RATE_LIMITED', message: expect.stringContaining(id) }));
    expect(() => r.take(id, 'pod-uid-2')).not.toThrow(); // another replica of the same Deployment
    r.take(id); // no instance known: the identity's own bucket
    expect(() => r.take(id)).toThrow(expect.objectContaining({ code: 'RATE_LIMITED' }));
  });

  it('refills no more than the burst, however long an identity was idle', () => {
    let now = 0;
    const r = new IdentityRateLimiter({ rate: 1, burst: 2, now: () => now });
    const id = 'spiffe://td/ns/a/sa/b';
    r.take(id);
    now += 3_600_000; // an hour idle: 3,600 tokens at 1/s, but the bucket holds 2
    r.take(id);
    r.take(id);
    expect(() => r.take(id)).toThrow(expect.objectContaining({ code: 'RATE_LIMITED' }));
  });

  it('counts an identity seen again as recently seen: beyond maxKeys the one idle longest is forgotten, not the oldest inserted', () => {
    const r = new IdentityRateLimiter({ rate: 1, burst: 1, maxKeys: 2, now: () => 0 });
    r.take('a');
    r.take('b');
    expect(() => r.take('a')).toThrow(); // a is seen again: b is now the least recently seen
    r.take('c'); // evicts b, not a
    expect(() => r.take('a')).toThrow(expect.objectContaining({ code: 'RATE_LIMITED' })); // a kept its empty bucket
    expect(() => r.take('b')).not.toThrow(); // b got a fresh one
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

describe('admitUnlessShortOfMemory', () => {
  it('refuses with OVERLOADED while memory is short, without touching the call budget, and admits again after', () => {
    const limiter = new InFlightLimiter(10);
    const memory = { high: true };
    const admit = admitUnlessShortOfMemory(memory, (bytes) => limiter.admit(bytes));
    let refusal: unknown;
    try {
      admit(100);
    } catch (e) {
      refusal = e;
    }
    expect(refusal).toBeInstanceOf(CaError);
    expect((refusal as CaError).code).toBe('OVERLOADED');
    expect((refusal as CaError).message).toMatch(/short of memory; retry/);
    expect(limiter.current).toBe(0);
    memory.high = false;
    const release = admit(100);
    expect(limiter.current).toBe(1);
    release();
    expect(limiter.current).toBe(0);
  });

  it('is the plain admission when no memory signal is configured (overload.heapLimitRatio 0)', () => {
    const plain = (): (() => void) => () => undefined;
    expect(admitUnlessShortOfMemory(undefined, plain)).toBe(plain);
  });
});
