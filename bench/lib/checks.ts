/**
 * The bench's pure checks and derived figures: the mix's ceiling, the errors of an h2load row, the
 * soak's memory-flatness verdict, and the validation of a run's results before they are written.
 * Kept apart from bench/run.ts so that they are unit-tested (test/unit/bench/checks.test.ts).
 */
import type { LatencySummary } from './stats.js';

export type Workload = 'rsa2048' | 'ec256' | 'mix';

/**
 * The crypto ceiling of a workload. The mix is half RSA, half EC calls: a certificate of each
 * kind takes 1/R and 1/E seconds of the machine, so the 50/50 mix runs at 2 / (1/R + 1/E) (the
 * harmonic mean), not at the arithmetic mean, which overstates it.
 */
export function ceilingFor(workload: Workload, ceilings: { rsa2048: number; ec256: number }): number {
  if (workload === 'rsa2048') return ceilings.rsa2048;
  if (workload === 'ec256') return ceilings.ec256;
  return 2 / (1 / ceilings.rsa2048 + 1 / ceilings.ec256);
}

export interface H2loadRowCounts {
  /** h2load's own failed requests: transport failures and non-2xx HTTP answers. */
  failed: number;
  /** Answers with an HTTP status outside 2xx (part of `failed`). */
  non2xx: number;
  /**
   * Statuses other than OK the server sent during the row, by code name: the rise of its
   * meshcert_grpc_error_statuses_total{code}. Every one is an error h2load counted as a success
   * (HTTP 200) or did not see (its time was up): either way a call the server failed. Calls still in
   * flight when h2load closed its connections were sent nothing and are not among them.
   */
  errorStatuses: Readonly<Record<string, number>>;
}

/**
 * Errors of an h2load row, counted directly: h2load's failures (transport, and answers that were
 * not HTTP 2xx), and every status but OK the server sent, which h2load does not read. Both are
 * exact; nothing is inferred from h2load's done count against the server's issued count, which the
 * calls in flight at h2load's deadline (issued, never counted done) made able to hide errors.
 */
export function h2loadRowErrors(c: H2loadRowCounts): { errors: number; statusErrors: number } {
  const statusErrors = Object.values(c.errorStatuses).reduce((a, b) => a + b, 0);
  // h2load's `failed` includes answers with a non-2xx HTTP status (its manual): not added again.
  return { errors: c.failed + statusErrors, statusErrors };
}

/** The rise of each counter from `before` to `after` (series absent before count from 0), the unchanged left out. */
export function counterRise(before: Readonly<Record<string, number>>, after: Readonly<Record<string, number>>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(after)) {
    const d = v - (before[k] ?? 0);
    if (d !== 0) out[k] = d;
  }
  return out;
}

export interface MemorySample {
  /** Seconds since the soak started. */
  t: number;
  rssMb: number;
  pssMb: number;
}

/** The soak's memory is flat when its last fifth's mean exceeds its first fifth's (both after warm-up) by no more than this. */
export const FLATNESS_LIMIT = { mb: 20, fraction: 0.1 } as const;
/**
 * Warm-up is the first fifth of the soak, and at least its first minute: heaps and caches grow to
 * their working size first (a 70 s soak measured here grew 44 MB from its 15th second to its end).
 */
export const WARMUP_FRACTION = 0.2;
export const MIN_WARMUP_SECONDS = 60;
/** Fewer samples than this after warm-up (5 s apart: a soak shorter than about 110 s) cannot be judged. */
export const MIN_JUDGED_SAMPLES = 10;

export interface SeriesVerdict {
  /** Mean of the first fifth of the samples after warm-up. */
  afterWarmupMb: number;
  /** Mean of the last fifth of the samples. */
  lastFifthMb: number;
  growthMb: number;
  /** Least-squares slope over the samples after warm-up, MB per hour. */
  slopeMbPerHour: number;
  /** The largest growth allowed: the smaller of FLATNESS_LIMIT.mb and FLATNESS_LIMIT.fraction of afterWarmupMb. */
  limitMb: number;
  /**
   * The steady growth, MB per hour, above which this soak is judged growing: limitMb over the time
   * between the two fifths. A leak below it passes, so a short soak proves little (10 minutes: about
   * 190 MB/h; an hour: about 31); said with every verdict.
   */
  failsGrowthAboveMbPerHour: number;
  flat: boolean;
}

export interface FlatnessVerdict {
  /** Samples up to this many seconds into the soak are warm-up, not judged. */
  warmupSeconds: number;
  samplesJudged: number;
  rule: string;
  rss?: SeriesVerdict;
  pss?: SeriesVerdict;
  flat: boolean;
  verdict: string;
}

export function soakFlatness(samples: readonly MemorySample[]): FlatnessVerdict {
  const rule = `after warm-up (the first ${WARMUP_FRACTION * 100} % of the soak, at least ${MIN_WARMUP_SECONDS} s), the last fifth's mean may exceed the first fifth's by at most ${FLATNESS_LIMIT.mb} MB or ${FLATNESS_LIMIT.fraction * 100} % of it, whichever is smaller (RSS and PSS each)`;
  const warmupSeconds = Math.max(MIN_WARMUP_SECONDS, WARMUP_FRACTION * (samples.at(-1)?.t ?? 0));
  const judged = samples.filter((s) => s.t > warmupSeconds);
  if (judged.length < MIN_JUDGED_SAMPLES) {
    return { warmupSeconds, samplesJudged: judged.length, rule, flat: false, verdict: `too short to judge: ${judged.length} samples after warm-up, ${MIN_JUDGED_SAMPLES} needed` };
  }
  const k = Math.max(1, Math.floor(judged.length / 5));
  // A steady growth of r MB/s raises the last fifth's mean over the first's by r times this.
  const apartSeconds = mean(judged.slice(-k).map((s) => s.t)) - mean(judged.slice(0, k).map((s) => s.t));
  const series = (key: 'rssMb' | 'pssMb'): SeriesVerdict => {
    const afterWarmupMb = mean(judged.slice(0, k).map((s) => s[key]));
    const lastFifthMb = mean(judged.slice(-k).map((s) => s[key]));
    const growthMb = lastFifthMb - afterWarmupMb;
    const limitMb = Math.min(FLATNESS_LIMIT.mb, FLATNESS_LIMIT.fraction * afterWarmupMb);
    return {
      afterWarmupMb: r1(afterWarmupMb),
      lastFifthMb: r1(lastFifthMb),
      growthMb: r1(growthMb),
      slopeMbPerHour: r1(slope(judged.map((s) => [s.t, s[key]])) * 3600),
      limitMb: r1(limitMb),
      failsGrowthAboveMbPerHour: r1((limitMb / Math.max(1, apartSeconds)) * 3600),
      flat: growthMb <= limitMb,
    };
  };
  const rss = series('rssMb');
  const pss = series('pssMb');
  const flat = rss.flat && pss.flat;
  const show = (name: string, v: SeriesVerdict): string => `${name} ${v.afterWarmupMb} → ${v.lastFifthMb} MB (${v.growthMb >= 0 ? '+' : ''}${v.growthMb} MB, limit +${v.limitMb} MB, which fails steady growth above ${v.failsGrowthAboveMbPerHour} MB/h only; slope ${v.slopeMbPerHour} MB/h)`;
  return { warmupSeconds, samplesJudged: judged.length, rule, rss, pss, flat, verdict: `${flat ? 'flat' : 'GROWING'}: ${show('RSS', rss)}, ${show('PSS', pss)}` };
}

function mean(xs: readonly number[]): number {
  return xs.reduce((a, b) => a + b, 0) / xs.length;
}

/** Least-squares slope of y over x. */
function slope(points: ReadonlyArray<readonly [number, number]>): number {
  const mx = mean(points.map((p) => p[0]));
  const my = mean(points.map((p) => p[1]));
  let num = 0;
  let den = 0;
  for (const [x, y] of points) {
    num += (x - mx) * (y - my);
    den += (x - mx) ** 2;
  }
  return den === 0 ? 0 : num / den;
}

function r1(n: number): number {
  return Math.round(n * 10) / 10;
}

export interface ResultsToValidate {
  rows: ReadonlyArray<{ scenario: string; driver: string; requests: number; perSecond: number; latency: LatencySummary; errors: number; rateLimited?: boolean; ceilingRatio?: number | null }>;
  ceilings: Record<string, number>;
  storm?: { identities: number; served: number; latency: LatencySummary } | undefined;
  soak?: { served: number; latency: LatencySummary } | undefined;
}

/**
 * Every way a run's results can be malformed, as messages (none: well-formed). `expect` says which
 * parts this mode must have produced. Errors in the rows are reported where they are counted, not here.
 */
export function validateResults(out: ResultsToValidate, expect: { rows: boolean; storm: boolean; soak: boolean }): string[] {
  const problems: string[] = [];
  const latency = (what: string, l: LatencySummary | undefined): void => {
    const ps = l ? [l.p50, l.p90, l.p99, l.max] : [];
    if (!l || ps.some((p) => typeof p !== 'number' || !Number.isFinite(p) || p < 0)) problems.push(`${what}: latency is not finite: ${JSON.stringify(l)}`);
    else if (!(l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.max)) problems.push(`${what}: latency is not p50 ≤ p90 ≤ p99 ≤ max: ${JSON.stringify(l)}`);
  };
  const count = (n: unknown): boolean => typeof n === 'number' && Number.isInteger(n) && n >= 0;
  if (expect.rows && out.rows.length === 0) problems.push('no rows: the throughput runs produced nothing');
  for (const r of out.rows) {
    const what = `${r.scenario} (${r.driver})`;
    if (!count(r.requests) || r.requests <= 0) problems.push(`${what}: ${r.requests} requests`);
    if (!Number.isFinite(r.perSecond) || r.perSecond <= 0) problems.push(`${what}: ${r.perSecond} per second`);
    if (!count(r.errors)) problems.push(`${what}: error count ${r.errors}`);
    latency(what, r.latency);
    if (r.rateLimited) {
      if (r.ceilingRatio != null) problems.push(`${what}: a rate-limited row has a ceiling ratio (${r.ceilingRatio})`);
    } else if (typeof r.ceilingRatio !== 'number' || !Number.isFinite(r.ceilingRatio) || r.ceilingRatio < 0) {
      problems.push(`${what}: ceiling ratio ${r.ceilingRatio}`);
    }
  }
  for (const k of ['rsa2048', 'ec256']) {
    const c = out.ceilings[k];
    if (typeof c !== 'number' || !Number.isFinite(c) || c <= 0) problems.push(`crypto ceiling ${k}: ${c}`);
  }
  if (expect.storm) {
    const s = out.storm;
    if (!s) problems.push('no storm result');
    else {
      if (!count(s.identities) || s.identities <= 0) problems.push(`storm: ${s.identities} identities`);
      if (s.served !== s.identities) problems.push(`storm: ${s.served} served of ${s.identities} identities`);
      latency('storm', s.latency);
    }
  }
  if (expect.soak) {
    const s = out.soak;
    if (!s) problems.push('no soak result');
    else {
      if (!count(s.served) || s.served <= 0) problems.push(`soak: ${s.served} served`);
      latency('soak', s.latency);
    }
  }
  return problems;
}
