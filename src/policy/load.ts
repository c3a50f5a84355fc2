import { readFileSync } from 'node:fs';
import { parseDocument } from 'yaml';
import type { z } from 'zod';
import { ConfigError } from '../errors/ca-error.js';
import { policySchema, type Policy } from './schema.js';

/**
 * Validates a policy section (already read from YAML or JSON). Throws ConfigError listing every
 * problem with its path; `pathPrefix` is put before each path (e.g. "policy" for the config file).
 */
export function parsePolicy(raw: unknown, source = 'policy', pathPrefix = ''): Policy {
  const result = policySchema.safeParse(raw ?? {});
  if (!result.success) throw new ConfigError(formatPolicyIssues(source, result.error.issues, pathPrefix));
  return result.data;
}

/**
 * Reads a policy from a YAML file. With `section` (e.g. "policy"), the file is a meshcert config
 * and the policy is that top-level key (absent: the default policy); without it, the whole file is
 * the policy (`rules:` and `default:` at the top).
 */
export function loadPolicyFile(path: string, section?: string): Policy {
  const raw = readYamlFile(path);
  if (section === undefined) return parsePolicy(raw, path);
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new ConfigError(`${path}: the top level must be a mapping of settings`);
  }
  return parsePolicy((raw as Record<string, unknown>)[section], path, section);
}

/** Reads and parses a YAML file (duplicate keys are errors); an empty file is `{}`. Throws ConfigError. */
export function readYamlFile(path: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new ConfigError(`cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? 'error'}`);
  }
  const doc = parseDocument(text, { uniqueKeys: true });
  if (doc.errors.length > 0) {
    throw new ConfigError(`${path} is not valid YAML:\n${doc.errors.map((e) => `  - ${e.message.split('\n')[0]}`).join('\n')}`);
  }
  return (doc.toJS() as unknown) ?? {};
}

/** One line per issue, "path: message", as `meshcert config check` prints them. */
export function formatPolicyIssues(source: string, issues: readonly z.core.$ZodIssue[], pathPrefix = ''): string {
  const lines = issues.map((i) => {
    const where = [pathPrefix, ...i.path.map(String)].filter((s) => s !== '').join('.') || '(top level)';
    if (i.code === 'unrecognized_keys') {
      return `  - ${i.keys.map((k) => (where === '(top level)' ? k : `${where}.${k}`)).join(', ')}: unknown setting`;
    }
    return `  - ${where}: ${i.message}`;
  });
  return `invalid policy in ${source}:\n${lines.join('\n')}`;
}
