import { describe, expect, it } from 'vitest';
import { exclusive, parse, UsageError } from '../../../src/cli/args.js';

describe('parse', () => {
  const options = { dir: { type: 'string' }, tag: { type: 'string', multiple: true }, json: { type: 'boolean' } } as const;

  it('refuses an option given twice (node:util would keep the last, unsaid), but not one that may repeat', () => {
    expect(() => parse(['--dir', 'a', '--dir', 'b'], options)).toThrow(new UsageError('option --dir is given more than once'));
    expect(() => parse(['--dir=a', '--json', '--dir=b'], options)).toThrow(/--dir is given more than once/);
    expect(() => parse(['--json', '--json'], options)).toThrow(/--json is given more than once/);
    expect(parse(['--dir', 'a', '--tag', 'x', '--tag', 'y'], options).values).toEqual({ dir: 'a', tag: ['x', 'y'] });
  });

  it('still refuses an unknown option and a positional where none is taken, as usage errors', () => {
    expect(() => parse(['--nope'], options)).toThrow(UsageError);
    expect(() => parse(['stray'], options)).toThrow(UsageError);
    expect(parse(['stray'], options, true).positionals).toEqual(['stray']);
  });
});

describe('exclusive', () => {
  it('refuses alternatives given together, naming them', () => {
    expect(() => exclusive({ token: 't', 'token-file': 'f' }, 'token', 'token-file')).toThrow(new UsageError('--token and --token-file are alternatives: give one'));
    expect(() => exclusive({ token: 't' }, 'token', 'token-file')).not.toThrow();
    expect(() => exclusive({ force: false, dev: true }, 'force', 'dev')).not.toThrow();
  });
});
