import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { formatDuration, parseDurationArg, parseDurationSeconds } from '../../../src/config/duration.js';

describe('parseDurationSeconds', () => {
  it.each([
    ['reads seconds', '90s', 90],
    ['reads minutes', '15m', 900],
    ['reads hours', '24h', 86_400],
    ['reads days', '90d', 7_776_000],
    ['reads zero', '0s', 0],
    ['reads a fractional value', '1.5h', 5_400],
    ['keeps a fraction of a second (a lifetime refuses it; a timeout takes it)', '2.6s', 2.6],
    ['keeps milliseconds, not binary fractions', '0.7h', 2_520],
    ['rounds below the millisecond', '0.0004s', 0],
    ['ignores surrounding whitespace', ' 24h\n', 86_400],
  ])('%s (%j)', (_name, input, expected) => {
    expect(parseDurationSeconds(input)).toBe(expected);
  });

  it.each([
    ['takes a number as seconds', 3_600, 3_600],
    ['takes zero', 0, 0],
    ['takes a fractional number of seconds as is', 1.5, 1.5],
  ])('%s (%j)', (_name, input, expected) => {
    expect(parseDurationSeconds(input)).toBe(expected);
  });

  it.each([
    ['rejects an empty string', ''],
    ['rejects a bare number in a string', '24'],
    ['rejects a unit without a number', 'h'],
    ['rejects a negative duration', '-1h'],
    ['rejects an unknown unit', '1w'],
    ['rejects an uppercase unit', '24H'],
    ['rejects Go-style compound durations', '1h30m'],
    ['rejects exponent notation', '1e3s'],
    ['rejects a unit spelled out', '24 hours'],
    ['rejects a leading dot', '.5h'],
  ])('%s (%j)', (_name, input) => {
    expect(() => parseDurationSeconds(input)).toThrow(/invalid duration/);
  });

  it.each([
    ['rejects a negative number', -1],
    ['rejects NaN', Number.NaN],
    ['rejects infinity', Number.POSITIVE_INFINITY],
  ])('%s (%j)', (_name, input) => {
    expect(() => parseDurationSeconds(input)).toThrow(/invalid duration/);
  });

  it('says how to write a duration', () => {
    expect(() => parseDurationSeconds('soon')).toThrow('use a number followed by s, m, h or d (e.g. 24h)');
  });
});

describe('parseDurationArg (command lines and queries)', () => {
  it('reads a bare number as seconds, as the config does, and anything else as a duration', () => {
    expect(parseDurationArg('3600')).toBe(3600);
    expect(parseDurationArg(' 90 ')).toBe(90);
    expect(parseDurationArg('24h')).toBe(86_400);
    expect(() => parseDurationArg('-5')).toThrow(/invalid duration/);
    expect(() => parseDurationArg('1 day')).toThrow(/invalid duration/);
  });

  it('takes at most a century (36500d), beyond which dates are no Date, store or certificate can hold', () => {
    expect(parseDurationArg('36500d')).toBe(3_153_600_000);
    expect(parseDurationArg('3153600000')).toBe(3_153_600_000);
    expect(() => parseDurationArg('36501d')).toThrow('invalid duration "36501d": at most 36500d');
    expect(() => parseDurationArg('99999999999d')).toThrow('invalid duration "99999999999d": at most 36500d');
    expect(() => parseDurationArg('3153600001')).toThrow(/at most 36500d/);
  });
});

describe('formatDuration', () => {
  it.each([
    ['uses days when whole', 86_400, '1d'],
    ['uses days for 90 days', 7_776_000, '90d'],
    ['uses hours when not a whole number of days', 3_600 * 30, '30h'],
    ['uses minutes when not a whole number of hours', 5_400, '90m'],
    ['uses seconds otherwise', 90, '90s'],
    ['writes zero as seconds', 0, '0s'],
  ])('%s (%j)', (_name, seconds, expected) => {
    expect(formatDuration(seconds)).toBe(expected);
  });

  it('round-trips any whole number of seconds through parseDurationSeconds', () => {
    fc.assert(
      fc.property(fc.nat({ max: 100 * 365 * 86_400 }), (seconds) => {
        expect(parseDurationSeconds(formatDuration(seconds))).toBe(seconds);
      }),
    );
  });
});
