import { PatternSet } from './glob.js';
import { DnsTemplate, IpAllowList, dnsNameAllowed } from './sans.js';
import { DEFAULT_RULE_NAME } from './schema.js';
const MATCH_FIELDS = [
    ['trustDomains', 'trustDomain', 'trust domain'],
    ['clusters', 'clusterId', 'cluster'],
    ['namespaces', 'namespace', 'namespace'],
    ['serviceAccounts', 'serviceAccount', 'service account'],
];
/** Sentinel: the request does not match because of `impersonated`. */
const IMPERSONATED_MISMATCH = -2;
/** Sentinel: the request matches. */
const MATCHES = -1;
export class PolicyEngine {
    rules;
    fallback;
    constructor(policy) {
        this.rules = policy.rules.map((r) => compileRule(r.name, r.match, r));
        this.fallback = compileRule(DEFAULT_RULE_NAME, {}, policy.default);
    }
    /** Rule names in evaluation order, then "default". */
    get ruleNames() {
        return [...this.rules.map((r) => r.name), DEFAULT_RULE_NAME];
    }
    /** The decision for one request. Pure; called once per certificate request. */
    evaluate(req) {
        for (const rule of this.rules) {
            if (firstMismatch(rule, req) === MATCHES)
                return decide(rule, req);
        }
        return decide(this.fallback, req);
    }
    /** The decision and why: each rule tried and why it did or did not match. */
    explain(req) {
        const evaluated = [];
        for (const rule of this.rules) {
            const mismatch = firstMismatch(rule, req);
            evaluated.push({ rule: rule.name, matched: mismatch === MATCHES, why: describeMatch(rule, req, mismatch) });
            if (mismatch === MATCHES)
                return { decision: decide(rule, req), matchedRule: rule.name, evaluated };
        }
        evaluated.push({
            rule: DEFAULT_RULE_NAME,
            matched: true,
            why: this.rules.length === 0 ? 'there are no rules; the default rule applies' : 'no rule matched; the default rule applies',
        });
        return { decision: decide(this.fallback, req), matchedRule: DEFAULT_RULE_NAME, evaluated };
    }
}
/* ------------------------------------------------------------------------------------------------
 * Compilation
 * ---------------------------------------------------------------------------------------------- */
function compileRule(name, match, action) {
    const checks = [];
    for (const [key, field, label] of MATCH_FIELDS) {
        const list = match[key];
        if (list !== undefined)
            checks.push({ field, label, set: new PatternSet(list) });
    }
    return {
        name,
        checks,
        impersonated: match.impersonated,
        action: action.deny !== undefined
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
/** Index of the first check that fails, IMPERSONATED_MISMATCH, or MATCHES. */
function firstMismatch(rule, req) {
    const checks = rule.checks;
    for (let i = 0; i < checks.length; i++) {
        const c = checks[i];
        if (!c.set.test(req[c.field]))
            return i;
    }
    if (rule.impersonated !== undefined && rule.impersonated !== req.impersonated)
        return IMPERSONATED_MISMATCH;
    return MATCHES;
}
function describeMatch(rule, req, mismatch) {
    if (mismatch === IMPERSONATED_MISMATCH) {
        return req.impersonated
            ? 'the request is on behalf of another identity, and the rule requires impersonated: false'
            : 'the request is not on behalf of another identity, and the rule requires impersonated: true';
    }
    if (mismatch >= 0) {
        const c = rule.checks[mismatch];
        return `${c.label} ${JSON.stringify(req[c.field])} matches none of ${c.set.patterns.join(', ')}`;
    }
    const parts = rule.checks.map((c) => {
        const value = req[c.field];
        const by = c.set.firstMatch(value);
        return by === value ? `${c.label} is ${JSON.stringify(value)}` : `${c.label} ${JSON.stringify(value)} matches ${JSON.stringify(by)}`;
    });
    if (rule.impersonated !== undefined)
        parts.push(rule.impersonated ? 'impersonated' : 'not impersonated');
    return parts.length === 0 ? 'the rule matches every request' : parts.join('; ');
}
/* ------------------------------------------------------------------------------------------------
 * Decision
 * ---------------------------------------------------------------------------------------------- */
function deny(rule, code, reason) {
    return { allowed: false, rule, code, reason };
}
/** A SAN from the CSR, quoted for a message (CSR parsing already limits them to printable ASCII). */
function quote(s) {
    return JSON.stringify(s.length > 100 ? `${s.slice(0, 100)}...` : s);
}
function describeKey(key) {
    if (key.algorithm === 'ECDSA')
        return key.curve ? `an ECDSA ${key.curve} key` : `an ECDSA ${key.size}-bit key`;
    return `an ${key.algorithm} ${key.size}-bit key`;
}
function decide(rule, req) {
    const a = rule.action;
    const name = rule.name;
    if (a.deny !== undefined)
        return deny(name, 'POLICY_DENIED', a.deny);
    const key = req.key;
    let keyOk = false;
    for (const k of a.keys) {
        if (k.type === key.algorithm && key.size >= k.minSize) {
            keyOk = true;
            break;
        }
    }
    if (!keyOk)
        return deny(name, 'CSR_UNSUPPORTED_KEY', `rule "${name}" allows only ${a.keysText}; the CSR has ${describeKey(key)}`);
    if (req.emails.length > 0) {
        return deny(name, 'CSR_FORBIDDEN_EXTENSION', `the CSR requests email address ${quote(req.emails[0])} as a SAN; workload certificates never carry email addresses`);
    }
    const dnsNames = [];
    if (req.dnsNames.length > 0) {
        const values = {
            namespace: req.namespace,
            serviceAccount: req.serviceAccount,
            trustDomain: req.trustDomain,
            cluster: req.clusterId,
        };
        const rendered = a.dns.map((t) => t.render(values));
        for (const requested of req.dnsNames) {
            const lower = requested.toLowerCase();
            let ok = false;
            for (let i = 0; i < rendered.length; i++) {
                if (dnsNameAllowed(lower, rendered[i], a.dns[i].wildcard)) {
                    ok = true;
                    break;
                }
            }
            if (!ok) {
                const allowed = rendered.length > 0 ? `it allows ${rendered.join(', ')}` : 'it allows no DNS names';
                return deny(name, 'CSR_FORBIDDEN_EXTENSION', `the CSR requests DNS name ${quote(requested)}, which rule "${name}" does not allow; ${allowed}`);
            }
            if (!dnsNames.includes(lower))
                dnsNames.push(lower);
        }
    }
    const ipAddresses = [];
    for (const ip of req.ipAddresses) {
        if (!a.ip.allows(ip)) {
            const allowed = a.ip.entries.length > 0 ? `it allows ${a.ip.entries.join(', ')}` : 'it allows no IP addresses';
            return deny(name, 'CSR_FORBIDDEN_EXTENSION', `the CSR requests IP address ${quote(ip)}, which rule "${name}" does not allow; ${allowed}`);
        }
        if (!ipAddresses.includes(ip))
            ipAddresses.push(ip);
    }
    const l = a.lifetime;
    let secs;
    try {
        secs = BigInt(req.requestedTtlSeconds ?? 0);
    }
    catch {
        return deny(name, 'TTL_INVALID', 'validity_duration must be an integer number of seconds');
    }
    let ttlSeconds;
    let ttlClamped = false;
    if (secs <= 0n) {
        ttlSeconds = l.default;
    }
    else if (secs < a.minBig) {
        ttlSeconds = l.min;
        ttlClamped = true;
    }
    else if (secs > a.maxBig) {
        if (l.aboveMax === 'reject') {
            return deny(name, 'TTL_INVALID', `requested lifetime ${secs}s exceeds the maximum of ${l.max}s (rule "${name}"); ask for ${l.max}s or less`);
        }
        ttlSeconds = l.max;
        ttlClamped = true;
    }
    else {
        ttlSeconds = Number(secs);
    }
    return { allowed: true, rule: name, ttlSeconds, ttlClamped, dnsNames, ipAddresses, issuer: a.issuer };
}
//# sourceMappingURL=engine.js.map