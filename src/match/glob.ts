/**
 * Glob patterns, for policy `match` fields and the selectors of `auth.revokedClientCertificates`
 * (a module of its own so that authentication does not depend on the policy engine): `*` matches
 * any run of characters (including none, and including dots), `?` matches exactly one character,
 * everything else matches itself (regex metacharacters such as `.`, `+`, `(` or `$` are literal).
 * Matching is whole-string and case-sensitive. No character classes, braces, escapes or negation:
 * those characters are refused so that nobody writes `[a-z]*` or `!kube-system` believing it does
 * something.
 *
 * Patterns are compiled once to a RegExp. A naive translation (`*` -> `.*`) backtracks
 * polynomially: `*a*a*b` against a 253-character service account name took 23 ms and one more `*`
 * 1.5 s. So each `*` except the last is compiled to an atomic lazy search
 * `(?=([\s\S]*?SEG))\N` (JavaScript lookaheads are atomic): the leftmost occurrence of each middle
 * segment is always the best choice for a glob, so committing to it loses no match, and the
 * pattern runs in about O(input x pattern) time whatever its shape.
 */

const MAX_PATTERN_LENGTH = 255;
const FORBIDDEN = /[[\]{}\\]/;
// eslint-disable-next-line no-control-regex
const SPACE_OR_CONTROL = /[\s\x00-\x1f\x7f]/;
const REGEX_SPECIAL = /[.*+?^${}()|[\]\\/-]/g;

/** Why `pattern` is not a valid glob, or null when it is. */
export function globProblem(pattern: string): string | null {
  if (pattern.length === 0) return 'pattern must not be empty';
  if (pattern.length > MAX_PATTERN_LENGTH) return `pattern is longer than ${MAX_PATTERN_LENGTH} characters`;
  if (SPACE_OR_CONTROL.test(pattern)) return 'pattern must not contain spaces or control characters';
  if (FORBIDDEN.test(pattern)) return 'pattern may use only * and ? as wildcards ([ ] { } and \\ are not supported)';
  if (pattern.startsWith('!')) return 'negation ("!") is not supported; put a rule that matches the exceptions first';
  return null;
}

/** True when the pattern has a wildcard (otherwise it is compared as an exact string). */
export function isGlob(pattern: string): boolean {
  return pattern.includes('*') || pattern.includes('?');
}

function literal(segment: string): string {
  return segment.replace(REGEX_SPECIAL, (c) => (c === '?' ? '[\\s\\S]' : `\\${c}`));
}

/**
 * RegExp source (no anchors at the start, `$` at the end) for one glob. `group` is the number of
 * capture groups already used in the RegExp this source is put into; returns the groups it used.
 */
function globSource(pattern: string, group: number): { source: string; groups: number } {
  const segments = pattern.split('*');
  if (segments.length === 1) return { source: `${literal(pattern)}$`, groups: 0 };
  // Empty segments come from leading, trailing or repeated stars; searching for them is a no-op.
  const first = segments[0]!;
  const last = segments[segments.length - 1]!;
  let source = literal(first);
  let used = 0;
  for (const mid of segments.slice(1, -1)) {
    if (mid === '') continue;
    used++;
    source += `(?=([\\s\\S]*?${literal(mid)}))\\${group + used}`;
  }
  source += `[\\s\\S]*${literal(last)}$`;
  return { source, groups: used };
}

/** One anchored RegExp matching any of the globs. */
export function compileGlobs(patterns: readonly string[]): RegExp {
  let group = 0;
  const alternatives: string[] = [];
  for (const p of patterns) {
    const problem = globProblem(p);
    if (problem) throw new Error(`invalid pattern ${JSON.stringify(p)}: ${problem}`);
    const { source, groups } = globSource(p, group);
    group += groups;
    alternatives.push(source);
  }
  return new RegExp(`^(?:${alternatives.join('|')})`);
}

/**
 * A list of patterns from a `match` field, compiled once: exact strings in a Set, globs in one
 * RegExp. `test` is the hot path; `firstMatch` names the pattern that matched (for explanations).
 */
export class PatternSet {
  readonly patterns: readonly string[];
  private readonly exact: ReadonlySet<string>;
  private readonly globs: RegExp | null;
  private readonly each: ReadonlyArray<readonly [string, RegExp | null]>;

  constructor(patterns: readonly string[]) {
    this.patterns = [...patterns];
    const globs = patterns.filter(isGlob);
    this.exact = new Set(patterns.filter((p) => !isGlob(p)));
    this.globs = globs.length > 0 ? compileGlobs(globs) : null;
    this.each = patterns.map((p) => [p, isGlob(p) ? compileGlobs([p]) : null] as const);
    for (const p of this.exact) {
      const problem = globProblem(p);
      if (problem) throw new Error(`invalid pattern ${JSON.stringify(p)}: ${problem}`);
    }
  }

  test(value: string): boolean {
    return this.exact.has(value) || (this.globs !== null && this.globs.test(value));
  }

  /** The first pattern (in configured order) that matches `value`, or undefined. */
  firstMatch(value: string): string | undefined {
    for (const [p, re] of this.each) {
      if (re === null ? p === value : re.test(value)) return p;
    }
    return undefined;
  }
}
