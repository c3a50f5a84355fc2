/** Durations in config are strings such as "90s", "15m", "24h", "90d" (or a number of seconds). */
const UNIT_SECONDS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400 };
const DURATION = /^(\d+(?:\.\d+)?)(s|m|h|d)$/;

export function parseDurationSeconds(value: string | number): number {
  if (typeof value === 'number') {
    if (!Number.isFinite(value) || value < 0) throw new Error(`invalid duration ${value}: must be a non-negative number of seconds`);
    return value;
  }
  const m = DURATION.exec(value.trim());
  if (!m) throw new Error(`invalid duration "${value}": use a number followed by s, m, h or d (e.g. 24h)`);
  // Kept to the millisecond, not rounded to seconds: "1.4s" is not a lifetime (parseLifetimeSeconds
  // says so) and "0.5s" is a timeout; the rounding only undoes binary fractions (0.7h is 2520s).
  return Math.round(Number(m[1]) * UNIT_SECONDS[m[2]!]! * 1000) / 1000;
}

export function formatDuration(seconds: number): string {
  for (const [unit, size] of [['d', 86400], ['h', 3600], ['m', 60]] as const) {
    if (seconds >= size && seconds % size === 0) return `${seconds / size}${unit}`;
  }
  return `${seconds}s`;
}

/** About a century, in seconds: a window or lifetime past it puts dates beyond what stores and certificates hold. */
export const MAX_SPAN_SECONDS = 100 * 365 * 86_400;
/** MAX_SPAN_SECONDS as messages say it (36500d). */
export const MAX_SPAN_TEXT = formatDuration(MAX_SPAN_SECONDS);

/**
 * A duration typed on a command line or in a query: a bare number is seconds, as in the config.
 * At most a century: a longer one gives dates no Date, store or certificate holds (a CA renewed
 * "for 99999999999d" would get an unreadable notAfter).
 */
export function parseDurationArg(value: string): number {
  const v = value.trim();
  const seconds = parseDurationSeconds(/^\d+$/.test(v) ? Number(v) : v);
  if (seconds > MAX_SPAN_SECONDS) throw new Error(`invalid duration "${v}": at most ${MAX_SPAN_TEXT}`);
  return seconds;
}

/** A certificate lifetime typed on a command line (`--ttl`): parseDurationArg's, in whole seconds, as the protocol carries it. */
export function parseLifetimeArg(value: string): number {
  const seconds = parseDurationArg(value);
  if (!Number.isInteger(seconds)) throw new Error(`invalid duration "${value.trim()}": a lifetime is a whole number of seconds`);
  return seconds;
}

/**
 * What is wrong with a span of days or hours typed on a command line or in a query (a lifetime, a
 * wait, an expiry window) that is a bare number, or null. Such a span needs its unit: bare, it
 * would be seconds, and "13" or "30" is a typo for days far more often than a wish for seconds. 0
 * needs none.
 */
export function bareSpanProblem(value: string): string | null {
  const v = value.trim();
  return /^\d+$/.test(v) && Number(v) !== 0 ? `${v}: give a unit (${v}d, ${v}h, ${v}m or ${v}s); a bare number would be seconds` : null;
}
