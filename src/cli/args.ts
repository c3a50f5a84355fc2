import { parseArgs, type ParseArgsConfig } from 'node:util';
import { bareSpanProblem, parseDurationArg } from '../config/duration.js';

/** Usage errors exit with code 2 and a one-line message. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

export function parse<T extends NonNullable<ParseArgsConfig['options']>>(argv: string[], options: T, allowPositionals = false) {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals, strict: true, tokens: true });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  // node:util keeps the last of an option given twice: `--dir a --dir b` would act on b unsaid.
  const seen = new Set<string>();
  for (const t of parsed.tokens) {
    if (t.kind !== 'option' || options[t.name]?.multiple) continue;
    if (seen.has(t.name)) throw new UsageError(`option --${t.name} is given more than once`);
    seen.add(t.name);
  }
  return parsed;
}

/** Refuses options that are alternatives given together (`--token` and `--token-file`). */
export function exclusive(values: Record<string, unknown>, ...names: string[]): void {
  const given = names.filter((n) => values[n] !== undefined && values[n] !== false);
  if (given.length > 1) throw new UsageError(`${given.map((n) => `--${n}`).join(' and ')} are alternatives: give one`);
}

/** A span of days or hours given on the command line (see bareSpanProblem), in seconds. */
export function spanFlag(value: string, flag: string): number {
  const bare = bareSpanProblem(value);
  if (bare !== null) throw new UsageError(`${flag} ${bare}`);
  try {
    return parseDurationArg(value.trim());
  } catch (e) {
    throw new UsageError(`${flag}: ${(e as Error).message}`);
  }
}
