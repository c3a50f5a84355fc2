/**
 * The `policy:` section: who may get which certificate, for how long, with which key, with which
 * extra SANs, signed by which CA. An ordered list of rules (first match wins) and a default rule for
 * requests no rule matches. See src/policy/engine.ts for the semantics and README "Policy".
 *
 * Inheritance: the default rule's fields that are not set take the built-in defaults (allow;
 * lifetime default 24h, min 0, max 90d, aboveMax clamp; keys RSA >= 2048 and ECDSA >= 256; no extra
 * SANs; issuer "default"). A rule's decision fields that are not set take the default rule's:
 * `lifetime` field by field, `keys`, `extraSans` and `issuer` as a whole. A default that denies may
 * still set them, for its rules to inherit (issuance.* lifetimes land there too). Within a given `extraSans`, a missing `dns` or `ip` means none. The
 * lifetimes are checked after inheritance (min <= default <= max).
 *
 * The parsed output is fully resolved: every allow rule carries all its decision fields, durations
 * are seconds, and `match` fields are lists.
 */
import { z } from 'zod';
import { formatDuration, MAX_SPAN_SECONDS, MAX_SPAN_TEXT, parseDurationSeconds } from '../config/duration.js';
import { globProblem } from '../match/glob.js';
import { dnsTemplateProblem, ipEntryProblem } from './sans.js';

/** How a caller authenticated, as policy `match.authenticatedBy` names it. */
export const CREDENTIAL_KINDS = ['token', 'client-certificate'] as const;
export type CredentialKind = (typeof CREDENTIAL_KINDS)[number];
const isCredentialKind = (k: string): k is CredentialKind => (CREDENTIAL_KINDS as readonly string[]).includes(k);

/** Name of the default rule in decisions, traces and logs; no rule may use it. */
export const DEFAULT_RULE_NAME = 'default';

/**
 * A certificate lifetime in whole seconds, at most a century (MAX_SPAN_SECONDS, as the other
 * duration settings: beyond, a NotAfter is no date); throws with the reason (issuance.* shares it).
 */
export function parseLifetimeSeconds(v: string | number): number {
  const s = parseDurationSeconds(v);
  if (!Number.isInteger(s)) throw new Error(`invalid duration ${v}: must be a whole number of seconds`);
  if (s > MAX_SPAN_SECONDS) throw new Error(`invalid duration ${v}: at most ${MAX_SPAN_TEXT}`);
  return s;
}

/** A certificate lifetime as a schema (parseLifetimeSeconds); the config's issuance.* lifetimes use it too. */
export const lifetimeDuration = z
  .union([z.string(), z.number()], { error: 'expected a lifetime such as "90s", "15m", "24h" or "90d", or a whole number of seconds' })
  .transform((v, ctx) => {
    try {
      return parseLifetimeSeconds(v);
    } catch (e) {
      ctx.addIssue({ code: 'custom', message: (e as Error).message });
      return z.NEVER;
    }
  });

/**
 * A string or a list of them, always a list after parsing: each item checked by `problemOf` (the
 * issue at the item's index, or at the field for a single string), and an empty list refused,
 * since it would match nothing.
 */
function oneOrList(problemOf: (item: string) => string | null, emptyMessage: string) {
  return z
    .union([z.string(), z.array(z.string())], { error: 'expected a name or pattern, or a list of them (quote a name YAML reads as a number, such as "0600" or "123")' })
    .superRefine((v, ctx) => {
      const list = typeof v === 'string' ? [v] : v;
      if (list.length === 0) ctx.addIssue({ code: 'custom', message: emptyMessage });
      list.forEach((item, i) => {
        const problem = problemOf(item);
        if (problem) ctx.addIssue({ code: 'custom', message: problem, path: typeof v === 'string' ? [] : [i] });
      });
    })
    .transform((v) => (typeof v === 'string' ? [v] : v));
}

/** A glob, or a list of them; always a list after parsing. An empty list would match nothing. */
export const globList = oneOrList(globProblem, 'an empty list matches nothing; leave the field out to match any value');

/**
 * A glob over values made only of `chars` (a character class body): one with any other character
 * could never match, and a deny rule or a revocation written so would silently do nothing.
 */
function valueGlobList(chars: string, what: string) {
  const outside = new RegExp(`[^*?${chars}]`);
  return oneOrList((p) => {
    const problem = globProblem(p);
    if (problem) return problem;
    const bad = outside.exec(p)?.[0];
    return bad === undefined ? null : `"${p}" can never match: ${what} (found ${JSON.stringify(bad)})`;
  }, 'an empty list matches nothing; leave the field out to match any value');
}

/** Kubernetes namespaces: DNS-1123 labels. */
export const namespaceGlobList = valueGlobList('a-z0-9-', 'a namespace is lowercase letters, digits and "-" (list several as separate items)');
/** Kubernetes service account names: DNS-1123 subdomains (the name alone, not system:serviceaccount:NS:NAME). */
export const serviceAccountGlobList = valueGlobList('a-z0-9.-', 'a service account name is lowercase letters, digits, "-" and "." (the name alone, not system:serviceaccount:NS:NAME)');
/** SPIFFE trust domains: lowercase letters, digits, ".", "-" and "_", without spiffe://. */
export const trustDomainGlobList = valueGlobList('a-z0-9._-', 'a trust domain is lowercase letters, digits, ".", "-" and "_", without "spiffe://"');

const match = z.strictObject({
  trustDomains: trustDomainGlobList.optional(),
  /** `clusterid` values (after the empty/absent one is replaced by auth.defaultCluster). */
  clusters: globList.optional(),
  namespaces: namespaceGlobList.optional(),
  serviceAccounts: serviceAccountGlobList.optional(),
  /** true: only requests on behalf of another identity; false: only direct ones; absent: either. */
  impersonated: z.boolean().optional(),
  /**
   * The caller's credential: `token` (a JWT or TokenReview, impersonated requests included) or
   * `client-certificate` (an mTLS renewal); one or a list; absent: any.
   */
  authenticatedBy: oneOrList(
    (k) => (isCredentialKind(k) ? null : `${JSON.stringify(k)} is not a credential: use ${CREDENTIAL_KINDS.join(' or ')}`),
    'an empty list matches nothing; leave the field out to match any credential',
  )
    .transform((list) => [...new Set(list)].filter(isCredentialKind))
    .optional(),
});

const denyReason = z.string().trim().min(1, 'the deny reason must not be empty: it is what the caller is told').max(512);

const lifetime = z.strictObject({
  /** Lifetime when the request asks for <= 0. */
  default: lifetimeDuration.optional(),
  /** Requests below this are raised to it. */
  min: lifetimeDuration.optional(),
  max: lifetimeDuration.optional(),
  /** Requests above max: issue max (clamp) or refuse with TTL_INVALID (reject). */
  aboveMax: z.enum(['clamp', 'reject']).optional(),
});

const keyRequirement = z
  .strictObject({
    type: z.enum(['RSA', 'ECDSA']),
    /** RSA modulus bits (2048-8192), or ECDSA curve size (256 = P-256, 384 = P-384). */
    minSize: z.number().int().optional(),
  })
  .superRefine((k, ctx) => {
    if (k.minSize === undefined) return;
    if (k.type === 'RSA' && (k.minSize < 2048 || k.minSize > 8192)) {
      ctx.addIssue({ code: 'custom', message: 'RSA minSize must be 2048-8192 (meshcert never accepts smaller or larger RSA keys)', path: ['minSize'] });
    }
    if (k.type === 'ECDSA' && k.minSize !== 256 && k.minSize !== 384) {
      ctx.addIssue({ code: 'custom', message: 'ECDSA minSize must be 256 (P-256) or 384 (P-384)', path: ['minSize'] });
    }
  })
  .transform((k) => ({ type: k.type, minSize: k.minSize ?? (k.type === 'RSA' ? 2048 : 256) }));

const keys = z
  .array(keyRequirement)
  .min(1, 'an empty key list would refuse every request; use deny instead')
  .superRefine((list, ctx) => {
    const seen = new Set<string>();
    list.forEach((k, i) => {
      if (seen.has(k.type)) ctx.addIssue({ code: 'custom', message: `${k.type} is listed twice`, path: [i, 'type'] });
      seen.add(k.type);
    });
  });

const dnsTemplate = z.string().superRefine((t, ctx) => {
  const problem = dnsTemplateProblem(t);
  if (problem) ctx.addIssue({ code: 'custom', message: problem });
});

const ipEntry = z.string().superRefine((e, ctx) => {
  const problem = ipEntryProblem(e);
  if (problem) ctx.addIssue({ code: 'custom', message: problem });
});

const extraSans = z.strictObject({
  dns: z.array(dnsTemplate).default([]),
  ip: z.array(ipEntry).default([]),
});

const issuer = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, 'issuer must be a name of letters, digits, ".", "-" and "_"').max(63);

const decisionFields = {
  /** Presence makes this a deny rule; the reason is shown to the caller. */
  deny: denyReason.optional(),
  lifetime: lifetime.optional(),
  keys: keys.optional(),
  extraSans: extraSans.optional(),
  issuer: issuer.optional(),
};

type DecisionFieldsInput = {
  deny?: string | undefined;
  lifetime?: unknown;
  keys?: unknown;
  extraSans?: unknown;
  issuer?: unknown;
};

function denyExclusive(v: DecisionFieldsInput, ctx: z.RefinementCtx): void {
  if (v.deny === undefined) return;
  const also = (['lifetime', 'keys', 'extraSans', 'issuer'] as const).filter((k) => v[k] !== undefined);
  if (also.length > 0) {
    ctx.addIssue({ code: 'custom', message: `a deny rule cannot also set ${also.join(', ')}`, path: ['deny'] });
  }
}

const ruleName = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, 'rule name must be letters, digits, ".", "-" and "_", starting with a letter or digit')
  .max(63)
  .refine((n) => n !== DEFAULT_RULE_NAME, `"${DEFAULT_RULE_NAME}" is the name of the default rule; choose another`);

const rule = z
  .strictObject({
    name: ruleName,
    /** All given fields must match; absent fields (or no match at all) match anything. */
    match: match.default({}),
    ...decisionFields,
  })
  .superRefine(denyExclusive);

// A default that denies may set the other fields too: its rules inherit them.
const defaultRule = z.strictObject(decisionFields);

/* ------------------------------------------------------------------------------------------------
 * Resolved (output) types
 * ---------------------------------------------------------------------------------------------- */

export interface LifetimePolicy {
  /** Seconds issued when the request asks for <= 0. */
  readonly default: number;
  /** Requests below this (in seconds) are raised to it; 0 means no minimum. */
  readonly min: number;
  readonly max: number;
  readonly aboveMax: 'clamp' | 'reject';
}

export interface KeyRequirement {
  readonly type: 'RSA' | 'ECDSA';
  /** RSA modulus bits, or ECDSA curve size in bits. */
  readonly minSize: number;
}

export interface ExtraSansPolicy {
  /** DNS templates (see src/policy/sans.ts). */
  readonly dns: readonly string[];
  /** IP addresses and CIDR ranges. */
  readonly ip: readonly string[];
}

export interface RuleMatch {
  readonly trustDomains?: readonly string[];
  readonly clusters?: readonly string[];
  readonly namespaces?: readonly string[];
  readonly serviceAccounts?: readonly string[];
  readonly impersonated?: boolean;
  readonly authenticatedBy?: readonly CredentialKind[];
}

export interface AllowAction {
  readonly deny?: undefined;
  readonly lifetime: LifetimePolicy;
  readonly keys: readonly KeyRequirement[];
  readonly extraSans: ExtraSansPolicy;
  readonly issuer: string;
}

export interface DenyAction {
  /** Shown to the caller. */
  readonly deny: string;
}

export type RuleAction = AllowAction | DenyAction;

export type PolicyRule = { readonly name: string; readonly match: RuleMatch } & RuleAction;

export interface Policy {
  readonly rules: readonly PolicyRule[];
  readonly default: RuleAction;
}

/** The built-in decision fields the default rule starts from. */
export const BUILTIN_DEFAULT: AllowAction = Object.freeze({
  lifetime: Object.freeze({ default: 24 * 3600, min: 0, max: 90 * 86400, aboveMax: 'clamp' as const }),
  keys: Object.freeze([Object.freeze({ type: 'RSA' as const, minSize: 2048 }), Object.freeze({ type: 'ECDSA' as const, minSize: 256 })]),
  extraSans: Object.freeze({ dns: Object.freeze([]) as readonly string[], ip: Object.freeze([]) as readonly string[] }),
  issuer: 'default',
});

type ParsedFields = z.output<typeof defaultRule>;

/** Fills `fields` over `base`; the caller checks the lifetime. */
function resolveAction(fields: ParsedFields, base: AllowAction): RuleAction {
  if (fields.deny !== undefined) return { deny: fields.deny };
  return {
    lifetime: {
      default: fields.lifetime?.default ?? base.lifetime.default,
      min: fields.lifetime?.min ?? base.lifetime.min,
      max: fields.lifetime?.max ?? base.lifetime.max,
      aboveMax: fields.lifetime?.aboveMax ?? base.lifetime.aboveMax,
    },
    keys: fields.keys ?? base.keys,
    extraSans: fields.extraSans ?? base.extraSans,
    issuer: fields.issuer ?? base.issuer,
  };
}

/** Problems with a resolved lifetime, with the field they belong to. */
function lifetimeProblems(l: LifetimePolicy, given: ParsedFields['lifetime'], inheritedFrom: string): Array<{ field: string; message: string }> {
  const show = (field: 'default' | 'min' | 'max'): string =>
    `${field} ${formatDuration(l[field])}${given?.[field] === undefined ? ` (inherited from ${inheritedFrom})` : ''}`;
  const out: Array<{ field: string; message: string }> = [];
  if (l.max <= 0) out.push({ field: 'max', message: 'max must be more than 0' });
  if (l.default <= 0) out.push({ field: 'default', message: 'default must be more than 0' });
  if (l.min > l.max) out.push({ field: given?.min !== undefined ? 'min' : 'max', message: `${show('min')} must be <= ${show('max')}` });
  if (l.default < l.min) {
    out.push({ field: given?.default !== undefined ? 'default' : 'min', message: `${show('default')} must be >= ${show('min')}` });
  }
  if (l.default > l.max) {
    out.push({ field: given?.default !== undefined ? 'default' : 'max', message: `${show('default')} must be <= ${show('max')}` });
  }
  return out;
}

/** Rule names are unique. Reads names defensively: it also runs on rules that failed to parse. */
function uniqueNames(rules: readonly unknown[], ctx: z.RefinementCtx): void {
  if (!Array.isArray(rules)) return;
  const seen = new Map<string, number>();
  rules.forEach((r: unknown, i) => {
    const name = typeof r === 'object' && r !== null ? (r as { name?: unknown }).name : undefined;
    if (typeof name !== 'string') return;
    const first = seen.get(name);
    if (first === undefined) seen.set(name, i);
    else ctx.addIssue({ code: 'custom', message: `rule name "${name}" is already used by rules.${first}`, path: [i, 'name'] });
  });
}

export const policySchema = z
  .strictObject({
    /** Tried in order; the first whose match matches decides. */
    rules: z
      .array(rule)
      // Runs even when a rule has other problems, so a duplicate name is reported with them.
      .superRefine(uniqueNames, { when: () => true })
      .default([]),
    /** Applies when no rule matches. */
    default: defaultRule.prefault({}),
  })
  .transform((p, ctx): Policy => {
    // What rules inherit: the default's fields over the built-ins, whether the default allows or denies.
    const base = resolveAction({ ...p.default, deny: undefined }, BUILTIN_DEFAULT) as AllowAction;
    for (const { field, message } of lifetimeProblems(base.lifetime, p.default.lifetime, 'the built-in default')) {
      ctx.addIssue({ code: 'custom', message, path: ['default', 'lifetime', field] });
    }
    const def: RuleAction = p.default.deny !== undefined ? { deny: p.default.deny } : base;
    // issuance.* lands in policy.default.lifetime (config/load.ts): name both, the user wrote one.
    const inheritedFrom = 'policy.default or issuance.*';
    const rules = p.rules.map((r, i): PolicyRule => {
      const action = resolveAction(r, base);
      if (action.deny === undefined) {
        for (const { field, message } of lifetimeProblems(action.lifetime, r.lifetime, inheritedFrom)) {
          ctx.addIssue({ code: 'custom', message, path: ['rules', i, 'lifetime', field] });
        }
      }
      return { name: r.name, match: r.match, ...action };
    });
    return { rules, default: def };
  });

/** What a config file may contain under `policy:`. */
export type PolicyInput = z.input<typeof policySchema>;
/** The parsed, fully resolved policy (what PolicyEngine takes); the same type as `Policy`. */
export type PolicyOutput = z.output<typeof policySchema>;
