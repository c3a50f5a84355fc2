import { describe, expect, it } from 'vitest';
import { ceilingFor, counterRise, FLATNESS_LIMIT, h2loadRowErrors, soakFlatness, validateResults, type MemorySample, type ResultsToValidate } from '../../../bench/lib/checks.js';

describe('ceilingFor', () => {
  it('is the measured ceiling for one key type and the harmonic mean for the 50/50 mix', () => {
    const c = { rsa2048: 20000, ec256: 5000 };
    expect(ceilingFor('rsa2048', c)).toBe(20000);
    expect(ceilingFor('ec256', c)).toBe(5000);
    // 10,000 calls, half each: 5,000/20,000 + 5,000/5,000 = 1.25 s, i.e. 8,000/s (not 12,500/s).
    expect(ceilingFor('mix', c)).toBeCloseTo(8000, 9);
  });
});

describe('h2loadRowErrors', () => {
  const clean = { failed: 0, non2xx: 0, errorStatuses: {} };
  it('is zero when h2load failed nothing and the server sent no status but OK', () => {
    expect(h2loadRowErrors(clean)).toEqual({ errors: 0, statusErrors: 0 });
  });
  it('counts every status but OK the server sent, which h2load took for successes (HTTP 200)', () => {
    // An unknown method's UNIMPLEMENTED writes no refusal line: the log could not count it.
    expect(h2loadRowErrors({ ...clean, errorStatuses: { UNIMPLEMENTED: 40, UNAVAILABLE: 2 } })).toEqual({ errors: 42, statusErrors: 42 });
  });
  it("adds h2load's failed once (its non-2xx answers are part of it)", () => {
    expect(h2loadRowErrors({ ...clean, failed: 3, non2xx: 2 }).errors).toBe(3);
    expect(h2loadRowErrors({ failed: 3, non2xx: 2, errorStatuses: { INTERNAL: 1 } }).errors).toBe(4);
  });
});

describe('counterRise', () => {
  it('is each series\' rise, a new series counted from 0, the unchanged left out', () => {
    expect(counterRise({ UNAVAILABLE: 5, INTERNAL: 1, UNIMPLEMENTED: 0 }, { UNAVAILABLE: 7, INTERNAL: 1, UNIMPLEMENTED: 0, DEADLINE_EXCEEDED: 3 })).toEqual({ UNAVAILABLE: 2, DEADLINE_EXCEEDED: 3 });
  });
});

const series = (n: number, f: (t: number) => number): MemorySample[] => Array.from({ length: n }, (_, i) => ({ t: 5 * (i + 1), rssMb: f(5 * (i + 1)), pssMb: f(5 * (i + 1)) - 100 }));

describe('soakFlatness', () => {
  it('is flat for memory that grows during warm-up and then stays level', () => {
    const v = soakFlatness(series(120, (t) => (t < 100 ? 300 + t : 400 + (t % 10 === 0 ? 1 : -1))));
    expect(v.flat).toBe(true);
    expect(v.warmupSeconds).toBe(120);
    expect(v.samplesJudged).toBe(96);
    expect(Math.abs(v.rss!.growthMb)).toBeLessThan(1);
    expect(Math.abs(v.rss!.slopeMbPerHour)).toBeLessThan(5);
    expect(v.verdict).toMatch(/^flat/);
  });

  it('reports the slope in MB per hour and fails growth beyond the smaller of the two limits', () => {
    // 400 MB growing 0.06 MB/s = 216 MB/h: 23 MB from the first fifth after warm-up to the last.
    const v = soakFlatness(series(120, (t) => 400 + 0.06 * t));
    expect(v.rss!.slopeMbPerHour).toBeCloseTo(216, 0);
    expect(v.rss!.limitMb).toBe(FLATNESS_LIMIT.mb);
    expect(v.rss!.growthMb).toBeGreaterThan(FLATNESS_LIMIT.mb);
    expect(v.flat).toBe(false);
    expect(v.verdict).toMatch(/^GROWING/);
  });

  it('says the steady growth it would fail: a leak below it passes, as one of 180 MB/h passes a 600 s soak', () => {
    // 600 s, 5 s apart: judged from 120 s, fifths centred about 384 s apart, so 20 MB allows ~187 MB/h.
    const v = soakFlatness(series(120, (t) => 400 + (180 / 3600) * t));
    expect(v.flat).toBe(true);
    expect(v.rss!.failsGrowthAboveMbPerHour).toBeCloseTo((20 / 384) * 3600, -1);
    expect(v.verdict).toContain(`fails steady growth above ${v.rss!.failsGrowthAboveMbPerHour} MB/h only`);
    // An hour at the same leak is judged growing.
    expect(soakFlatness(series(720, (t) => 400 + (180 / 3600) * t)).flat).toBe(false);
  });

  it('uses 10 % when that is less than 20 MB', () => {
    // 150 MB RSS (50 MB PSS) stepping up 12 MB: under 20 MB and 10 % of RSS, over 10 % of PSS.
    const v = soakFlatness(series(120, (t) => (t < 300 ? 150 : 162)));
    expect(v.rss!.flat).toBe(true);
    expect(v.pss!.limitMb).toBe(5);
    expect(v.pss!.flat).toBe(false);
    expect(v.flat).toBe(false);
  });

  it('takes at least the first minute as warm-up, and cannot call a soak too short to judge flat', () => {
    const v = soakFlatness(series(14, () => 400));
    expect(v.warmupSeconds).toBe(60);
    expect(v.samplesJudged).toBe(2);
    expect(v.flat).toBe(false);
    expect(v.verdict).toMatch(/too short/);
    // 120 s: warm-up to 60 s, 12 samples judged; growing during warm-up only.
    const w = soakFlatness(series(24, (t) => (t <= 60 ? 300 + t : 360)));
    expect(w.samplesJudged).toBe(12);
    expect(w.flat).toBe(true);
  });
});

describe('validateResults', () => {
  const lat = { p50: 10, p90: 20, p99: 30, max: 40, mean: 12 };
  const good = (): ResultsToValidate => ({
    rows: [
      { scenario: 'RSA', driver: 'node', requests: 300, perSecond: 1000, latency: { ...lat }, errors: 0, ceilingRatio: 0.1 },
      { scenario: 'RSA', driver: 'h2load half', requests: 300, perSecond: 500, latency: { ...lat }, errors: 0, rateLimited: true, ceilingRatio: null },
    ],
    ceilings: { rsa2048: 20000, ec256: 7000 },
    storm: { identities: 1000, served: 1000, latency: { ...lat } },
  });
  const all = { rows: true, storm: true, soak: false };

  it('accepts well-formed results', () => {
    expect(validateResults(good(), all)).toEqual([]);
  });

  it('rejects a row without requests, latencies out of order or not finite, and a bad ratio', () => {
    const r = good();
    r.rows[0]!.requests = 0;
    expect(validateResults(r, all)).toEqual([expect.stringMatching(/RSA \(node\): 0 requests/)]);
    const o = good();
    o.rows[0]!.latency.p90 = 35;
    expect(validateResults(o, all)).toEqual([expect.stringMatching(/p50 ≤ p90 ≤ p99 ≤ max/)]);
    const n = good();
    n.rows[0]!.latency.max = NaN;
    expect(validateResults(n, all)).toEqual([expect.stringMatching(/not finite/)]);
    const q = good();
    q.rows[0]!.ceilingRatio = undefined;
    expect(validateResults(q, all)).toEqual([expect.stringMatching(/ceiling ratio undefined/)]);
    const h = good();
    h.rows[1]!.ceilingRatio = 0.05;
    expect(validateResults(h, all)).toEqual([expect.stringMatching(/rate-limited row has a ceiling ratio/)]);
  });

  it('rejects a missing or non-finite ceiling, a storm not fully served, and missing parts', () => {
    const c = good();
    c.ceilings.ec256 = Infinity;
    expect(validateResults(c, all)).toEqual([expect.stringMatching(/ceiling ec256/)]);
    const s = good();
    s.storm!.served = 999;
    expect(validateResults(s, all)).toEqual([expect.stringMatching(/storm: 999 served of 1000/)]);
    expect(validateResults({ rows: [], ceilings: { rsa2048: 1, ec256: 1 } }, { rows: true, storm: true, soak: true })).toEqual([
      expect.stringMatching(/no rows/),
      expect.stringMatching(/no storm/),
      expect.stringMatching(/no soak/),
    ]);
  });
});
