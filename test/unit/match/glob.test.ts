import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PatternSet, compileGlobs, globProblem } from '../../../src/match/glob.js';

/** The textbook recursive definition, as the oracle. */
function reference(pattern: string, value: string): boolean {
  if (pattern === '') return value === '';
  const [p, rest] = [pattern[0]!, pattern.slice(1)];
  if (p === '*') {
    for (let i = 0; i <= value.length; i++) if (reference(rest, value.slice(i))) return true;
    return false;
  }
  if (value === '') return false;
  return (p === '?' || p === value[0]) && reference(rest, value.slice(1));
}

describe('globs', () => {
  it('agree with the reference matcher on random patterns and values', () => {
    const alphabet = fc.constantFrom('a', 'b', '.', '-', '+', '(', '$');
    const pattern = fc.array(fc.oneof(alphabet, fc.constantFrom('*', '?')), { minLength: 1, maxLength: 8 }).map((cs) => cs.join(''));
    const value = fc.array(alphabet, { maxLength: 10 }).map((cs) => cs.join(''));
    fc.assert(
      fc.property(pattern, value, (p, v) => {
        expect(compileGlobs([p]).test(v)).toBe(reference(p, v));
        expect(new PatternSet([p]).test(v)).toBe(reference(p, v));
      }),
      { numRuns: 5000 },
    );
  });

  it('combine several patterns into one RegExp that matches any of them', () => {
    fc.assert(
      fc.property(
        fc.array(fc.stringMatching(/^[ab*?]{1,5}$/), { minLength: 1, maxLength: 4 }),
        fc.stringMatching(/^[ab]{0,6}$/),
        (patterns, v) => {
          const expected = patterns.some((p) => reference(p, v));
          expect(compileGlobs(patterns).test(v)).toBe(expected);
          expect(new PatternSet(patterns).test(v)).toBe(expected);
          expect(new PatternSet(patterns).firstMatch(v)).toBe(patterns.find((p) => reference(p, v)));
        },
      ),
      { numRuns: 2000 },
    );
  });

  it.each<[string, string, string]>([
    ['an empty pattern', '', 'pattern must not be empty'],
    ['a character class', 'team-[ab]', 'pattern may use only * and ? as wildcards ([ ] { } and \\ are not supported)'],
    ['braces', '{a,b}', 'pattern may use only * and ? as wildcards ([ ] { } and \\ are not supported)'],
    ['a backslash escape', 'a\\*', 'pattern may use only * and ? as wildcards ([ ] { } and \\ are not supported)'],
    ['negation', '!kube-system', 'negation ("!") is not supported; put a rule that matches the exceptions first'],
    ['a space', 'a b', 'pattern must not contain spaces or control characters'],
    ['a very long pattern', 'a'.repeat(256), 'pattern is longer than 255 characters'],
  ])('refuse %s', (_name, pattern, problem) => {
    expect(globProblem(pattern)).toBe(problem);
    expect(() => new PatternSet([pattern])).toThrow(problem);
  });
});
