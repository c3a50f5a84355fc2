import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { resolveLifetimeSeconds, type LifetimeOptions } from '../../../src/authority/lifetime.js';
import { CaError } from '../../../src/errors/ca-error.js';

const DAY = 86_400;
const clamp: LifetimeOptions = { defaultTtl: DAY, maxTtl: 90 * DAY, onTtlAboveMax: 'clamp' };
const reject: LifetimeOptions = { ...clamp, onTtlAboveMax: 'reject' };

function ttlError(fn: () => unknown): CaError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(CaError);
    expect((e as CaError).code).toBe('TTL_INVALID');
    return e as CaError;
  }
  throw new Error('expected TTL_INVALID, but nothing was thrown');
}

describe('resolveLifetimeSeconds', () => {
  it.each<[string, string | number | bigint | undefined, LifetimeOptions, number]>([
    ['uses the default when nothing is asked', undefined, clamp, DAY],
    ['uses the default for zero', 0, clamp, DAY],
    ['uses the default for the string "0"', '0', clamp, DAY],
    ['uses the default for a negative number', -5, clamp, DAY],
    ['uses the default for a negative string', '-3600', reject, DAY],
    ['uses the default for the most negative int64', '-9223372036854775808', reject, DAY],
    ['uses the default for a negative bigint', -1n, clamp, DAY],
    ['gives what is asked within the maximum', 3_600, clamp, 3_600],
    ['gives what is asked as a string', '7200', reject, 7_200],
    ['gives what is asked as a bigint', 60n, reject, 60],
    ['gives one second when one second is asked', 1, reject, 1],
    ['gives exactly the maximum when the maximum is asked', 90 * DAY, reject, 90 * DAY],
    ['gives more than the default when asked', 30 * DAY, reject, 30 * DAY],
    ['clamps one second above the maximum', 90 * DAY + 1, clamp, 90 * DAY],
    ['clamps a year to the maximum', 365 * DAY, clamp, 90 * DAY],
    ['clamps the largest int64', '9223372036854775807', clamp, 90 * DAY],
    ['clamps a number beyond int64', '99999999999999999999999999999999999999', clamp, 90 * DAY],
    ['clamps a huge float that is an integer', 1e300, clamp, 90 * DAY],
    ['clamps a huge bigint', 2n ** 200n, clamp, 90 * DAY],
  ])('%s', (_name, requested, options, expected) => {
    expect(resolveLifetimeSeconds(requested, options)).toBe(expected);
  });

  it.each<[string, string | number | bigint]>([
    ['refuses one second above the maximum', 90 * DAY + 1],
    ['refuses a year', 365 * DAY],
    ['refuses the largest int64', '9223372036854775807'],
    ['refuses a number beyond int64', '99999999999999999999999999999999999999'],
    ['refuses a huge bigint', 2n ** 64n],
  ])('%s when set to reject', (_name, requested) => {
    const e = ttlError(() => resolveLifetimeSeconds(requested, reject));
    expect(e.message).toContain(`maximum of ${90 * DAY}s`);
  });

  it.each<[string, string | number]>([
    ['a decimal string', '1.5'],
    ['a fractional number', 1.5],
    ['a word', 'forever'],
    ['a duration string', '24h'],
    ['exponent notation', '1e3'],
    ['NaN', Number.NaN],
    ['infinity', Number.POSITIVE_INFINITY],
    ['a number followed by junk', '3600s'],
  ])('refuses %s with TTL_INVALID', (_name, requested) => {
    const e = ttlError(() => resolveLifetimeSeconds(requested, clamp));
    expect(e.message).toBe('validity_duration must be an integer number of seconds');
  });

  it('always returns a whole number of seconds between 1 and the maximum, or throws TTL_INVALID', () => {
    const requested = fc.oneof(
      fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }).map(String),
      fc.integer(),
      fc.double(),
      fc.string({ maxLength: 30 }),
    );
    const options = fc.record({
      defaultTtl: fc.integer({ min: 1, max: 1_000 }),
      maxTtl: fc.integer({ min: 1_000, max: 10_000_000 }),
      onTtlAboveMax: fc.constantFrom('clamp' as const, 'reject' as const),
    });
    fc.assert(
      fc.property(requested, options, (r, o) => {
        let result: number;
        try {
          result = resolveLifetimeSeconds(r, o);
        } catch (e) {
          expect(e).toBeInstanceOf(CaError);
          expect((e as CaError).code).toBe('TTL_INVALID');
          return;
        }
        expect(Number.isSafeInteger(result)).toBe(true);
        expect(result).toBeGreaterThanOrEqual(1);
        expect(result).toBeLessThanOrEqual(o.maxTtl);
      }),
      { numRuns: 2000 },
    );
  });
});
