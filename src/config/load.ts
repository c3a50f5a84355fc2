import { dirname, isAbsolute, resolve } from 'node:path';
import { parseDocument } from 'yaml';
import type { z } from 'zod';
import { ConfigError } from '../errors/ca-error.js';
import { MAX_CONFIG_BYTES, readProblem, readTextFile, type ReadOptions } from '../fs/read-file.js';
import { parseLifetimeSeconds } from '../policy/schema.js';
import { configSchema, type ConfigInput, type MeshcertConfig } from './schema.js';

/**
 * Environment variables that override the common settings (documented in the README). A third
 * element 'boolean' reads "true" and "false" as such (anything else is validated, and refused, as
 * written).
 */
export const ENV_OVERRIDES: ReadonlyArray<readonly [string, readonly string[], 'boolean'?]> = [
  ['MESHCERT_LISTEN', ['server', 'listen']],
  ['MESHCERT_TRUST_DOMAIN', ['trustDomain']],
  ['MESHCERT_DATA_DIR', ['dataDir']],
  ['MESHCERT_CA_DIR', ['ca', 'dir']],
  ['MESHCERT_LOG_LEVEL', ['log', 'level']],
  ['MESHCERT_ADMIN_LISTEN', ['admin', 'listen']],
  ['MESHCERT_INVENTORY_URL', ['inventory', 'url']],
  ['MESHCERT_INVENTORY_STORE', ['inventory', 'store']],
  // A switch a kustomize component can flip without a config file of its own (components/ambient).
  ['MESHCERT_AMBIENT_ENABLED', ['ambient', 'enabled'], 'boolean'],
];

export interface LoadedConfig {
  readonly config: MeshcertConfig;
  /** Directory relative paths in the file are resolved against. */
  readonly baseDir: string;
  /** The file's text as read: what a later read compares against to see a change. */
  readonly text: string;
}

/**
 * Reads, overrides, validates and freezes a config file. Throws ConfigError listing every problem.
 * `streams`: a pipe too (`config check <(helm template ...)`), for commands that read it once;
 * never for `serve`, which reads it again at every reload.
 */
export function loadConfigFile(path: string, env: NodeJS.ProcessEnv = process.env, o: ReadOptions = {}): LoadedConfig {
  let text: string;
  try {
    text = readTextFile(path, MAX_CONFIG_BYTES, o);
  } catch (e) {
    throw new ConfigError(`cannot read config file ${path}: ${readProblem(e)}`);
  }
  const doc = parseDocument(text, { uniqueKeys: true });
  // Warnings too: an unknown tag (`!env X`) would otherwise become the plain string "X".
  const problems = [...doc.errors, ...doc.warnings];
  if (problems.length > 0) {
    // The first line, without the excerpt it introduces: a config line may hold a secret (a database URL's password).
    throw new ConfigError(`${path} is not valid YAML:\n${problems.map((e) => `  - ${e.message.split('\n')[0]!.replace(/:$/, '')}`).join('\n')}`);
  }
  let raw: unknown;
  try {
    raw = doc.toJS({ maxAliasCount: 100 }) ?? {};
  } catch (e) {
    // The yaml library refuses alias expansion bombs here.
    throw new ConfigError(`${path} is not valid YAML: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new ConfigError(`${path}: the top level must be a mapping of settings`);
  }
  return { config: parseConfig(raw as ConfigInput, env, path, dirname(resolve(path))), baseDir: dirname(resolve(path)), text };
}

/** Validates an in-memory config (the embedded default, tests). */
export function parseConfig(input: ConfigInput, env: NodeJS.ProcessEnv = process.env, source = 'config', baseDir = process.cwd()): MeshcertConfig {
  const overridden: EnvOverride[] = [];
  const conflicts: Array<{ path: string[]; message: string }> = [];
  const withEnv = issuanceShorthands(applyEnv(structuredClone(input) as Record<string, unknown>, env, overridden), conflicts);
  const result = configSchema.safeParse(withEnv);
  // Every problem in one report: a conflict found before validation does not hide the others.
  if (!result.success || conflicts.length > 0) {
    const issues = [...conflicts.map((c) => ({ code: 'custom' as const, input: undefined, ...c })), ...(result.success ? [] : result.error.issues)];
    throw new ConfigError(formatIssues(source, issues, overridden));
  }
  return deepFreeze(resolvePaths(result.data, baseDir));
}

type EnvOverride = readonly [name: string, path: readonly string[]];

function applyEnv(input: Record<string, unknown>, env: NodeJS.ProcessEnv, applied: EnvOverride[]): Record<string, unknown> {
  for (const [name, path, type] of ENV_OVERRIDES) {
    const value = env[name];
    if (value === undefined || value === '') continue;
    let node: Record<string, unknown> | undefined = input;
    for (const key of path.slice(0, -1)) {
      const next: unknown = node[key];
      if (next === undefined) node = (node[key] = {}) as Record<string, unknown>;
      else if (typeof next === 'object' && next !== null && !Array.isArray(next)) node = next as Record<string, unknown>;
      else {
        // A section that is not a mapping stays as written, so validation reports it instead of the override hiding it.
        node = undefined;
        break;
      }
    }
    if (node !== undefined) {
      node[path[path.length - 1]!] = type === 'boolean' && (value === 'true' || value === 'false') ? value === 'true' : value;
      applied.push([name, path]);
    }
  }
  return input;
}

/**
 * issuance.defaultTtl/maxTtl/onTtlAboveMax are shorthands for policy.default.lifetime, kept so a
 * simple config needs no policy section. Setting both places is refused: one source of truth.
 */
function issuanceShorthands(input: Record<string, unknown>, conflicts: Array<{ path: string[]; message: string }>): Record<string, unknown> {
  const issuance = input.issuance as Record<string, unknown> | undefined;
  if (!issuance || typeof issuance !== 'object') return input;
  const lifetime: Record<string, unknown> = {};
  // An invalid value is reported once, under issuance.*, not again under policy.
  const valid = (v: unknown): boolean => {
    try {
      parseLifetimeSeconds(v as string | number);
      return true;
    } catch {
      return false;
    }
  };
  if (issuance.defaultTtl !== undefined && valid(issuance.defaultTtl)) lifetime.default = issuance.defaultTtl;
  if (issuance.maxTtl !== undefined && valid(issuance.maxTtl)) lifetime.max = issuance.maxTtl;
  if (issuance.onTtlAboveMax === 'clamp' || issuance.onTtlAboveMax === 'reject') lifetime.aboveMax = issuance.onTtlAboveMax;
  if (Object.keys(lifetime).length === 0) return input;
  const mapping = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
  // A policy or policy.default that is not a mapping (`default: deny`, say) stays as written, so validation
  // refuses it: replacing it with a mapping would turn a denying default into one that allows.
  if (input.policy !== undefined && !mapping(input.policy)) return input;
  const policy = (input.policy ??= {}) as Record<string, unknown>;
  if (policy.default !== undefined && !mapping(policy.default)) return input;
  const def = (policy.default ??= {}) as Record<string, unknown>;
  if (def.lifetime !== undefined) {
    // policy.default.lifetime is left as written, so it is still validated.
    conflicts.push({ path: ['issuance'], message: 'lifetimes are set in policy.default.lifetime too; set them in one place' });
    return input;
  }
  // Also under a default that denies: its rules inherit it.
  def.lifetime = lifetime;
  return input;
}

function formatIssues(source: string, issues: readonly z.core.$ZodIssue[], overridden: readonly EnvOverride[]): string {
  // A value that came from the environment is not in the file: say where it came from.
  const fromEnv = (path: readonly PropertyKey[]): string => {
    const prefix = (a: readonly PropertyKey[], b: readonly PropertyKey[]): boolean => a.length <= b.length && a.every((k, i) => b[i] === k);
    // The value itself (or a part of it), or a setting inside the section the problem is about.
    const hits = overridden.filter(([, p]) => prefix(p, path) || (path.length > 0 && prefix(path, p)));
    return hits.length ? ` (${hits.map(([name, p]) => `${p.join('.')} from ${name}`).join(', ')})` : '';
  };
  const lines = issues.map((i) => {
    const where = i.path.length ? i.path.join('.') : '(top level)';
    if (i.code === 'unrecognized_keys') {
      return `  - ${i.keys.map((k) => (i.path.length ? `${where}.${k}` : k)).join(', ')}: unknown setting`;
    }
    return `  - ${where}: ${i.message}${fromEnv(i.path)}`;
  });
  return `invalid configuration in ${source}:\n${lines.join('\n')}`;
}

function resolvePaths(c: MeshcertConfig, baseDir: string): MeshcertConfig {
  const abs = (p: string): string => (isAbsolute(p) ? p : resolve(baseDir, p));
  const dataDir = abs(c.dataDir);
  return {
    ...c,
    dataDir,
    server: {
      ...c.server,
      tls: {
        ...c.server.tls,
        certFile: c.server.tls.certFile && abs(c.server.tls.certFile),
        keyFile: c.server.tls.keyFile && abs(c.server.tls.keyFile),
      },
    },
    ca: { ...c.ca, dir: c.ca.dir ? abs(c.ca.dir) : resolve(dataDir, 'ca') },
    issuers: c.issuers.map((i) => ({ ...i, dir: abs(i.dir) })),
    kubernetes: {
      ...c.kubernetes,
      caFile: c.kubernetes.caFile && abs(c.kubernetes.caFile),
      tokenFile: c.kubernetes.tokenFile && abs(c.kubernetes.tokenFile),
      kubeconfig: c.kubernetes.kubeconfig && abs(c.kubernetes.kubeconfig),
    },
    inventory: {
      ...c.inventory,
      store: c.inventory.store ?? (c.inventory.url ? 'postgres' : 'sqlite'),
      path: c.inventory.path ? abs(c.inventory.path) : resolve(dataDir, 'inventory.db'),
    },
    auth: {
      ...c.auth,
      clusters: c.auth.clusters.map((cl) => ({
        ...cl,
        jwt: cl.jwt.map((j) => ({ ...j, jwksFile: j.jwksFile && abs(j.jwksFile) })),
        tokenReview: cl.tokenReview && {
          ...cl.tokenReview,
          caFile: cl.tokenReview.caFile && abs(cl.tokenReview.caFile),
          tokenFile: cl.tokenReview.tokenFile && abs(cl.tokenReview.tokenFile),
        },
      })),
    },
  };
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

/** Every CA directory a config names, the default (`ca.dir`, always set once parsed) first. */
export function caDirectories(config: MeshcertConfig): Array<{ readonly name: string; readonly dir: string }> {
  return [{ name: 'default', dir: config.ca.dir! }, ...config.issuers];
}
