/**
 * The policy engine: a pure function from a request (who is asking, for what) to a decision (allow
 * with lifetime, SANs and issuer, or deny with a code and a reason for the caller). No I/O, no
 * clock: the signing CA's NotAfter bound is applied by the caller.
 *
 * Evaluation:
 *   1. Rules are tried in order; the first whose `match` matches decides (later rules, however
 *      broad, are not consulted). When none matches, the default rule decides (name "default").
 *      A match matches when every field it sets matches: trustDomains, clusters, namespaces and
 *      serviceAccounts are glob lists (see ../match/glob.ts), `impersonated` a boolean, `authenticatedBy`
 *      a list of credential kinds (token, client-certificate).
 *   2. A deny rule refuses with POLICY_DENIED and its configured reason, verbatim.
 *   3. The CSR key must meet one of the rule's `keys` (same type, size >= minSize), else
 *      CSR_UNSUPPORTED_KEY.
 *   4. Email SANs are always refused; each requested DNS name and IP address must be allowed by
 *      the rule's `extraSans` (see ./sans.ts), else CSR_FORBIDDEN_EXTENSION naming the SAN. URI
 *      SANs are not the engine's business (the caller has already checked them against the
 *      identity). The allowed names are returned lowercased, duplicates removed.
 *   5. Lifetime: a request <= 0 (or absent) gets `default`; below `min` it is raised to `min`;
 *      above `max` it is clamped to `max` (aboveMax: clamp) or refused with TTL_INVALID (reject); a
 *      value that is not an integer is TTL_INVALID. `ttlClamped` is true when the lifetime issued
 *      differs from a positive lifetime requested (raised to min or lowered to max).
 */
import type { CsrKeyInfo } from '../csr/types.js';
import { isGlob, PatternSet } from '../match/glob.js';
import type { IpPrefix } from '../net/ip-text.js';
import { DnsTemplate, IpAllowList, dnsNameAllowed, type TemplateValues } from './sans.js';
import { DEFAULT_RULE_NAME, type CredentialKind, type KeyRequirement, type LifetimePolicy, type Policy, type RuleAction, type RuleMatch } from './schema.js';

export interface PolicyRequest {
  /** The trust domain of the identity requested. */
  readonly trustDomain: string;
  /**
   * The trust domain the caller authenticated in, when it asks for its identity under an alias in
   * another (trustDomainAliases): the request must then pass that domain's rules too, so that
   * neither domain's deny rules can be stepped around by asking for the other. The requested
   * domain's decision says how to issue.
   */
  readonly authenticatedTrustDomain?: string;
  /** The cluster the caller authenticated against (empty/absent clusterid already replaced by the default cluster). */
  readonly clusterId: string;
  /**
   * What `{cluster}` in a DNS template stands for, when not `clusterId`: for a client-certificate
   * caller, the cluster its certificate's trust domain tells, or '' when it tells none (then a
   * template with `{cluster}` allows no name).
   */
  readonly templateCluster?: string;
  readonly namespace: string;
  readonly serviceAccount: string;
  /** The request is made on behalf of another identity (ImpersonatedIdentity). */
  readonly impersonated: boolean;
  /** The caller's credential: a token (JWT or TokenReview) or a client certificate (mTLS). */
  readonly authenticatedBy: CredentialKind;
  /** From the CSR. */
  readonly key: CsrKeyInfo;
  /** The proto int64 validity_duration as received; <= 0 or absent means the rule's default. */
  readonly requestedTtlSeconds: string | number | bigint | undefined;
  /** Extra SANs requested by the CSR. */
  readonly dnsNames: readonly string[];
  readonly ipAddresses: readonly string[];
  readonly emails: readonly string[];
  /** Already checked to be the caller's identity or empty; not used by the engine. */
  readonly uris: readonly string[];
}

export interface ExtraSanSample {
  readonly rule: string;
  readonly issuer: string;
  /** The rule's DNS templates rendered for each sample caller. */
  readonly rendered: ReadonlyArray<{ readonly caller: TemplateValues; readonly dnsNames: readonly string[] }>;
  readonly ipRanges: readonly IpPrefix[];
}

export type PolicyDenialCode = 'POLICY_DENIED' | 'TTL_INVALID' | 'CSR_UNSUPPORTED_KEY' | 'CSR_FORBIDDEN_EXTENSION';

export type PolicyDecision =
  | {
      allowed: true;
      rule: string;
      ttlSeconds: number;
      ttlClamped: boolean;
      /** Extra SANs to issue besides the SPIFFE ID (the requested ones, all allowed). */
      dnsNames: string[];
      ipAddresses: string[];
      issuer: string;
    }
  | { allowed: false; rule: string; code: PolicyDenialCode; reason: string };

export interface RuleEvaluation {
  rule: string;
  matched: boolean;
  why: string;
}

export interface PolicyExplanation {
  decision: PolicyDecision;
  /** The rule that decided ("default" when no rule matched). */
  matchedRule: string;
  /** Each rule tried, in order, up to and including the one that matched (or the default rule). */
  evaluated: RuleEvaluation[];
  /** Allowed in the requested trust domain but refused by the rules of the authenticated one. */
  refusedInAuthenticatedDomain?: true;
}

type MatchField = 'trustDomain' | 'clusterId' | 'namespace' | 'serviceAccount';

interface FieldCheck {
  readonly field: MatchField;
  readonly label: string;
  readonly set: PatternSet;
}

interface CompiledAllow {
  readonly deny: undefined;
  readonly lifetime: LifetimePolicy;
  readonly minBig: bigint;
  readonly maxBig: bigint;
  readonly keys: readonly KeyRequirement[];
  readonly keysText: string;
  readonly dns: readonly DnsTemplate[];
  readonly ip: IpAllowList;
  readonly issuer: string;
}

interface CompiledDeny {
  readonly deny: string;
}

interface CompiledRule {
  readonly name: string;
  readonly checks: readonly FieldCheck[];
  readonly impersonated: boolean | undefined;
  readonly authenticatedBy: readonly CredentialKind[] | undefined;
  readonly action: CompiledAllow | CompiledDeny;
}

const MATCH_FIELDS: ReadonlyArray<readonly [keyof RuleMatch, MatchField, string]> = [
  ['trustDomains', 'trustDomain', 'trust domain'],
  ['clusters', 'clusterId', 'cluster'],
  ['namespaces', 'namespace', 'namespace'],
  ['serviceAccounts', 'serviceAccount', 'service account'],
];

/** Sentinel: the request does not match because of `impersonated`. */
const IMPERSONATED_MISMATCH = -2;
/** Sentinel: the request does not match because of `authenticatedBy`. */
const CREDENTIAL_MISMATCH = -3;
/** Sentinel: the request matches. */
const MATCHES = -1;

export class PolicyEngine {
  private readonly rules: readonly CompiledRule[];
  private readonly fallback: CompiledRule;

  constructor(policy: Policy) {
    this.rules = policy.rules.map((r) => compileRule(r.name, r.match, r));
    this.fallback = compileRule(DEFAULT_RULE_NAME, {}, policy.default);
  }

  /** Rule names in evaluation order, then "default". */
  get ruleNames(): string[] {
    return [...this.rules.map((r) => r.name), DEFAULT_RULE_NAME];
  }

  /**
   * For each rule that allows extra SANs (the default rule included): its CA, its DNS templates
   * rendered for sample callers, and its IP entries. The callers take the literal values of the
   * rule's own match lists (up to 3 of each), else those of `defaults`. For load-time checks
   * against what the CA can certify.
   */
  extraSanSamples(defaults: TemplateValues): ExtraSanSample[] {
    const out: ExtraSanSample[] = [];
    for (const rule of [...this.rules, this.fallback]) {
      const a = rule.action;
      if (a.deny !== undefined || (a.dns.length === 0 && a.ip.entries.length === 0)) continue;
      const literal = (field: MatchField, otherwise: string): string[] => {
        const found = rule.checks.find((c) => c.field === field)?.set.patterns.filter((p) => !isGlob(p)).slice(0, 3) ?? [];
        return found.length > 0 ? found : [otherwise];
      };
      const callers: TemplateValues[] = [];
      for (const trustDomain of literal('trustDomain', defaults.trustDomain))
        for (const cluster of literal('clusterId', defaults.cluster))
          for (const namespace of literal('namespace', defaults.namespace))
            for (const serviceAccount of literal('serviceAccount', defaults.serviceAccount)) callers.push({ trustDomain, cluster, namespace, serviceAccount });
      out.push({
        rule: rule.name,
        issuer: a.issuer,
        rendered: callers.map((caller) => ({ caller, dnsNames: a.dns.map((t) => t.render(caller)).filter((n): n is string => n !== null) })),
        ipRanges: a.ip.prefixes,
      });
    }
    return out;
  }

  /** The decision for one request. Pure; called once per certificate request. */
  evaluate(req: PolicyRequest): PolicyDecision {
    const decision = this.decideIn(req);
    const own = authenticatedDomainRequest(req);
    if (!decision.allowed || own === undefined) return decision;
    return this.withinAuthenticated(req, decision, this.decideIn(own));
  }

  /** The decision and why: each rule tried and why it did or did not match. */
  explain(req: PolicyRequest): PolicyExplanation {
    const explanation = this.explainIn(req);
    const own = authenticatedDomainRequest(req);
    if (!explanation.decision.allowed || own === undefined) return explanation;
    const asAuthenticated = this.explainIn(own);
    if (!asAuthenticated.decision.allowed) return { ...asAuthenticated, refusedInAuthenticatedDomain: true };
    return { ...explanation, decision: this.withinAuthenticated(req, explanation.decision, asAuthenticated.decision) };
  }

  /**
   * A request under an alias, allowed by the requested domain's rules (which say how to issue it:
   * SANs, CA, lifetime) and by the authenticated domain's, whose `max` caps it too: asking under an
   * alias must not step around their lifetime cap (a `reject` there has refused already). Lowered to
   * that cap, never below the requested rule's `min` (refused then, as no lifetime fits both).
   */
  private withinAuthenticated(req: PolicyRequest, requested: PolicyDecision, authenticated: PolicyDecision): PolicyDecision {
    if (!requested.allowed || !authenticated.allowed) return requested.allowed ? authenticated : requested;
    const cap = this.lifetimeOf(authenticated.rule)?.max;
    if (cap === undefined || requested.ttlSeconds <= cap) return requested;
    const floor = this.lifetimeOf(requested.rule)?.min ?? 0;
    if (cap < floor) {
      return deny(requested.rule, 'TTL_INVALID', `no lifetime fits both trust domains' rules: rule "${authenticated.rule}" for ${req.authenticatedTrustDomain} allows at most ${cap}s, rule "${requested.rule}" for ${req.trustDomain} at least ${floor}s`);
    }
    // As decide() says it: the lifetime issued differs from a positive one asked for. The requested
    // rule accepted the request as an integer, so it converts.
    const asked = req.requestedTtlSeconds === undefined ? 0 : Number(req.requestedTtlSeconds);
    return { ...requested, ttlSeconds: cap, ttlClamped: asked > 0 && asked !== cap };
  }

  /** The lifetime limits of the rule named `name` ("default" included); undefined for a deny rule. */
  private lifetimeOf(name: string): LifetimePolicy | undefined {
    const rule = name === DEFAULT_RULE_NAME ? this.fallback : this.rules.find((r) => r.name === name);
    return rule?.action.deny === undefined ? rule?.action.lifetime : undefined;
  }

  private decideIn(req: PolicyRequest): PolicyDecision {
    for (const rule of this.rules) {
      if (firstMismatch(rule, req) === MATCHES) return decide(rule, req);
    }
    return decide(this.fallback, req);
  }

  private explainIn(req: PolicyRequest): PolicyExplanation {
    const evaluated: RuleEvaluation[] = [];
    for (const rule of this.rules) {
      const mismatch = firstMismatch(rule, req);
      evaluated.push({ rule: rule.name, matched: mismatch === MATCHES, why: describeMatch(rule, req, mismatch) });
      if (mismatch === MATCHES) return { decision: decide(rule, req), matchedRule: rule.name, evaluated };
    }
    evaluated.push({
      rule: DEFAULT_RULE_NAME,
      matched: true,
      why: this.rules.length === 0 ? 'there are no rules; the default rule applies' : 'no rule matched; the default rule applies',
    });
    return { decision: decide(this.fallback, req), matchedRule: DEFAULT_RULE_NAME, evaluated };
  }
}

/**
 * The request as judged in the authenticated trust domain, when that is another than the requested
 * one: its deny rules, keys and lifetime gate it. Without its extra SANs, which the requested
 * domain's rule says (a `{trustDomain}` template renders there as the requested domain, so a
 * name it allows could never pass a second judgement in the authenticated one).
 */
function authenticatedDomainRequest(req: PolicyRequest): PolicyRequest | undefined {
  const td = req.authenticatedTrustDomain;
  return td === undefined || td === req.trustDomain ? undefined : { ...req, trustDomain: td, authenticatedTrustDomain: undefined, dnsNames: [], ipAddresses: [] };
}

/* ------------------------------------------------------------------------------------------------
 * Compilation
 * ---------------------------------------------------------------------------------------------- */

function compileRule(name: string, match: RuleMatch, action: RuleAction): CompiledRule {
  const checks: FieldCheck[] = [];
  for (const [key, field, label] of MATCH_FIELDS) {
    const list = match[key] as readonly string[] | undefined;
    if (list !== undefined) checks.push({ field, label, set: new PatternSet(list) });
  }
  return {
    name,
    checks,
    impersonated: match.impersonated,
    authenticatedBy: match.authenticatedBy,
    action:
      action.deny !== undefined
        ? { deny: action.deny }
        : {
            deny: undefined,
            lifetime: action.lifetime,
            minBig: BigInt(action.lifetime.min),
            maxBig: BigInt(action.lifetime.max),
            keys: action.keys,
            keysText: action.keys.map((k) => `${k.type} >= ${k.minSize} bits`).join(' or '),
            dns: action.extraSans.dns.map((t) => new DnsTemplate(t)),
            ip: new IpAllowList(action.extraSans.ip),
            issuer: action.issuer,
          },
  };
}

/* ------------------------------------------------------------------------------------------------
 * Matching
 * ---------------------------------------------------------------------------------------------- */

/** Index of the first check that fails, IMPERSONATED_MISMATCH, CREDENTIAL_MISMATCH, or MATCHES. */
function firstMismatch(rule: CompiledRule, req: PolicyRequest): number {
  const checks = rule.checks;
  for (let i = 0; i < checks.length; i++) {
    const c = checks[i]!;
    if (!c.set.test(req[c.field])) return i;
  }
  if (rule.impersonated !== undefined && rule.impersonated !== req.impersonated) return IMPERSONATED_MISMATCH;
  if (rule.authenticatedBy !== undefined && !rule.authenticatedBy.includes(req.authenticatedBy)) return CREDENTIAL_MISMATCH;
  return MATCHES;
}

function describeMatch(rule: CompiledRule, req: PolicyRequest, mismatch: number): string {
  if (mismatch === IMPERSONATED_MISMATCH) {
    return req.impersonated
      ? 'the request is on behalf of another identity, and the rule requires impersonated: false'
      : 'the request is not on behalf of another identity, and the rule requires impersonated: true';
  }
  if (mismatch === CREDENTIAL_MISMATCH) {
    return `the caller authenticated with ${describeCredential(req.authenticatedBy)}, and the rule requires authenticatedBy: ${rule.authenticatedBy!.join(', ')}`;
  }
  if (mismatch >= 0) {
    const c = rule.checks[mismatch]!;
    return `${c.label} ${JSON.stringify(req[c.field])} matches none of ${c.set.patterns.join(', ')}`;
  }
  const parts = rule.checks.map((c) => {
    const value = req[c.field];
    const by = c.set.firstMatch(value);
    return by === value ? `${c.label} is ${JSON.stringify(value)}` : `${c.label} ${JSON.stringify(value)} matches ${JSON.stringify(by)}`;
  });
  if (rule.impersonated !== undefined) parts.push(rule.impersonated ? 'impersonated' : 'not impersonated');
  if (rule.authenticatedBy !== undefined) parts.push(`authenticated with ${describeCredential(req.authenticatedBy)}`);
  return parts.length === 0 ? 'the rule matches every request' : parts.join('; ');
}

function describeCredential(kind: CredentialKind): string {
  return kind === 'token' ? 'a token' : 'a client certificate';
}

/* ------------------------------------------------------------------------------------------------
 * Decision
 * ---------------------------------------------------------------------------------------------- */

function deny(rule: string, code: PolicyDenialCode, reason: string): PolicyDecision {
  return { allowed: false, rule, code, reason };
}

/** A SAN from the CSR, quoted for a message (CSR parsing already limits them to printable ASCII). */
function quote(s: string): string {
  return JSON.stringify(s.length > 100 ? `${s.slice(0, 100)}...` : s);
}

function describeKey(key: CsrKeyInfo): string {
  if (key.algorithm === 'ECDSA') return key.curve ? `an ECDSA ${key.curve} key` : `an ECDSA ${key.size}-bit key`;
  return `an ${key.algorithm} ${key.size}-bit key`;
}

function decide(rule: CompiledRule, req: PolicyRequest): PolicyDecision {
  const a = rule.action;
  const name = rule.name;
  if (a.deny !== undefined) return deny(name, 'POLICY_DENIED', a.deny);

  const key = req.key;
  let keyOk = false;
  for (const k of a.keys) {
    if (k.type === key.algorithm && key.size >= k.minSize) {
      keyOk = true;
      break;
    }
  }
  if (!keyOk) return deny(name, 'CSR_UNSUPPORTED_KEY', `rule "${name}" allows only ${a.keysText}; the CSR has ${describeKey(key)}`);

  if (req.emails.length > 0) {
    return deny(name, 'CSR_FORBIDDEN_EXTENSION', `the CSR requests email address ${quote(req.emails[0]!)} as a SAN; workload certificates never carry email addresses`);
  }

  const dnsNames: string[] = [];
  if (req.dnsNames.length > 0) {
    const values: TemplateValues = {
      namespace: req.namespace,
      serviceAccount: req.serviceAccount,
      trustDomain: req.trustDomain,
      cluster: req.templateCluster ?? req.clusterId,
    };
    const rendered = a.dns.map((t) => t.render(values));
    for (const requested of req.dnsNames) {
      const lower = requested.toLowerCase();
      let ok = false;
      for (let i = 0; i < rendered.length; i++) {
        const r = rendered[i];
        if (r !== null && r !== undefined && dnsNameAllowed(lower, r, a.dns[i]!.wildcard)) {
          ok = true;
          break;
        }
      }
      if (!ok) {
        const names = rendered.filter((r): r is string => r !== null);
        const why = req.templateCluster === '' ? "its namespace and service account must each be one DNS label, and {cluster} names nothing for a client certificate whose trust domain does not tell the cluster" : 'its namespace and service account must each be one DNS label';
        const shown = names.length > 0 ? `it allows ${names.join(', ')}` : rendered.length > 0 ? `its DNS templates give this caller no name (${why})` : 'it allows no DNS names';
        return deny(name, 'CSR_FORBIDDEN_EXTENSION', `the CSR requests DNS name ${quote(requested)}, which rule "${name}" does not allow; ${shown}`);
      }
      if (!dnsNames.includes(lower)) dnsNames.push(lower);
    }
  }

  const ipAddresses: string[] = [];
  for (const ip of req.ipAddresses) {
    if (!a.ip.allows(ip)) {
      const allowed = a.ip.entries.length > 0 ? `it allows ${a.ip.entries.join(', ')}` : 'it allows no IP addresses';
      return deny(name, 'CSR_FORBIDDEN_EXTENSION', `the CSR requests IP address ${quote(ip)}, which rule "${name}" does not allow; ${allowed}`);
    }
    if (!ipAddresses.includes(ip)) ipAddresses.push(ip);
  }

  const l = a.lifetime;
  let secs: bigint;
  try {
    secs = BigInt(req.requestedTtlSeconds ?? 0);
  } catch {
    return deny(name, 'TTL_INVALID', 'validity_duration must be an integer number of seconds');
  }
  let ttlSeconds: number;
  let ttlClamped = false;
  if (secs <= 0n) {
    ttlSeconds = l.default;
  } else if (secs < a.minBig) {
    ttlSeconds = l.min;
    ttlClamped = true;
  } else if (secs > a.maxBig) {
    if (l.aboveMax === 'reject') {
      return deny(name, 'TTL_INVALID', `requested lifetime ${secs}s exceeds the maximum of ${l.max}s (rule "${name}"); ask for ${l.max}s or less`);
    }
    ttlSeconds = l.max;
    ttlClamped = true;
  } else {
    ttlSeconds = Number(secs);
  }
  return { allowed: true, rule: name, ttlSeconds, ttlClamped, dnsNames, ipAddresses, issuer: a.issuer };
}
