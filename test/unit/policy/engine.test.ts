import { describe, expect, it } from 'vitest';
import type { CsrKeyInfo } from '../../../src/csr/types.js';
import { PolicyEngine, type PolicyDecision, type PolicyRequest } from '../../../src/policy/engine.js';
import { policySchema, type PolicyInput } from '../../../src/policy/schema.js';
import { EXAMPLE_POLICY } from '../../fixtures/policy.js';

const H = 3600;
const D = 86_400;

const EC256: CsrKeyInfo = { algorithm: 'ECDSA', size: 256, curve: 'P-256' };
const EC384: CsrKeyInfo = { algorithm: 'ECDSA', size: 384, curve: 'P-384' };
const RSA2048: CsrKeyInfo = { algorithm: 'RSA', size: 2048 };
const RSA3072: CsrKeyInfo = { algorithm: 'RSA', size: 3072 };
const RSA4096: CsrKeyInfo = { algorithm: 'RSA', size: 4096 };

type MatchInput = NonNullable<NonNullable<PolicyInput['rules']>[number]['match']>;

function engine(input: PolicyInput): PolicyEngine {
  return new PolicyEngine(policySchema.parse(input));
}

function req(over: Partial<PolicyRequest> = {}): PolicyRequest {
  return {
    trustDomain: 'cluster.local',
    clusterId: 'Kubernetes',
    namespace: 'default',
    serviceAccount: 'web',
    impersonated: false,
    authenticatedBy: 'token',
    key: EC256,
    requestedTtlSeconds: undefined,
    dnsNames: [],
    ipAddresses: [],
    emails: [],
    uris: [],
    ...over,
  };
}

/** A policy with one allow rule (issuer "matched") in front of the default, to see whether it matches. */
function single(match: MatchInput): PolicyEngine {
  return engine({ rules: [{ name: 'r', match, issuer: 'matched' }] });
}

function allowed(d: PolicyDecision): Extract<PolicyDecision, { allowed: true }> {
  if (!d.allowed) throw new Error(`expected an allow decision, got ${d.code}: ${d.reason}`);
  return d;
}

function denied(d: PolicyDecision): Extract<PolicyDecision, { allowed: false }> {
  if (d.allowed) throw new Error(`expected a deny decision, got allow by ${d.rule}`);
  return d;
}

describe('PolicyEngine match fields', () => {
  it.each<[string, MatchInput, Partial<PolicyRequest>, boolean]>([
    ['a rule without match fields matches every request', {}, {}, true],
    ['trustDomains matches an exact trust domain', { trustDomains: ['cluster.local'] }, {}, true],
    ['trustDomains refuses another trust domain', { trustDomains: ['cluster.local'] }, { trustDomain: 'example.org' }, false],
    ['trustDomains matches a glob', { trustDomains: ['*.example.org'] }, { trustDomain: 'prod.example.org' }, true],
    ['trustDomains globs match across dots', { trustDomains: ['*.example.org'] }, { trustDomain: 'a.b.example.org' }, true],
    ['clusters matches the cluster id', { clusters: ['Kubernetes'] }, {}, true],
    ['clusters is case-sensitive', { clusters: ['kubernetes'] }, {}, false],
    ['clusters refuses another cluster', { clusters: ['east', 'west'] }, { clusterId: 'north' }, false],
    ['clusters matches any listed cluster', { clusters: ['east', 'west'] }, { clusterId: 'west' }, true],
    ['namespaces accepts a single string', { namespaces: 'default' }, {}, true],
    ['namespaces refuses an unlisted namespace', { namespaces: ['kube-system'] }, {}, false],
    ['namespaces matches a prefix glob', { namespaces: ['team-*'] }, { namespace: 'team-a' }, true],
    ['a prefix glob matches the bare prefix too', { namespaces: ['team-*'] }, { namespace: 'team-' }, true],
    ['a prefix glob does not match without the prefix', { namespaces: ['team-*'] }, { namespace: 'teams' }, false],
    ['serviceAccounts matches an exact name', { serviceAccounts: ['web'] }, {}, true],
    ['serviceAccounts refuses another name', { serviceAccounts: ['api'] }, {}, false],
    ['serviceAccounts "*" matches any name', { serviceAccounts: ['*'] }, { serviceAccount: 'anything.at-all' }, true],
    ['impersonated: false matches a direct request', { impersonated: false }, {}, true],
    ['impersonated: false refuses an impersonated request', { impersonated: false }, { impersonated: true }, false],
    ['impersonated: true matches an impersonated request', { impersonated: true }, { impersonated: true }, true],
    ['impersonated: true refuses a direct request', { impersonated: true }, {}, false],
    ['an absent impersonated matches an impersonated request', { namespaces: ['default'] }, { impersonated: true }, true],
    ['authenticatedBy token matches a token caller', { authenticatedBy: 'token' }, {}, true],
    ['authenticatedBy token refuses a client-certificate caller', { authenticatedBy: 'token' }, { authenticatedBy: 'client-certificate' }, false],
    ['authenticatedBy client-certificate matches a client-certificate caller', { authenticatedBy: ['client-certificate'] }, { authenticatedBy: 'client-certificate' }, true],
    ['authenticatedBy client-certificate refuses a token caller', { authenticatedBy: 'client-certificate' }, {}, false],
    ['authenticatedBy both matches either', { authenticatedBy: ['token', 'client-certificate'] }, { authenticatedBy: 'client-certificate' }, true],
    ['an absent authenticatedBy matches a client-certificate caller', { namespaces: ['default'] }, { authenticatedBy: 'client-certificate' }, true],
    ['every given field must match', { namespaces: ['default'], serviceAccounts: ['api'] }, {}, false],
    ['all fields together match', { trustDomains: 'cluster.local', clusters: 'Kubernetes', namespaces: 'default', serviceAccounts: 'web', impersonated: false }, {}, true],
  ])('%s', (_name, match, over, matches) => {
    const d = allowed(single(match).evaluate(req(over)));
    expect(d.rule).toBe(matches ? 'r' : 'default');
    expect(d.issuer).toBe(matches ? 'matched' : 'default');
  });
});

describe('PolicyEngine globs', () => {
  it.each<[string, string, string, boolean]>([
    ['"?" matches exactly one character', 'ns-?', 'ns-a', true],
    ['"?" does not match zero characters', 'ns-?', 'ns-', false],
    ['"?" does not match two characters', 'ns-?', 'ns-ab', false],
    ['"*" in the middle matches any run', 'a*z', 'a-long-run-z', true],
    ['"*" in the middle needs both ends', 'a*z', 'a-long-run-y', false],
    ['several stars match in order', '*a*b*c*', 'xxaxxbxxcxx', true],
    ['several stars refuse the wrong order', '*a*b*c*', 'xxcxxbxxaxx', false],
    ['a suffix glob anchors at the end', '*-prod', 'web-prod', true],
    ['a suffix glob refuses a longer tail', '*-prod', 'web-prod-2', false],
    ['a literal dot is not a regex wildcard', 'a.b', 'axb', false],
    ['a literal dot matches a dot', 'a.b', 'a.b', true],
    ['a dot in a glob is literal', '*.b', 'ab', false],
    ['a plus is literal', 'a+', 'aa', false],
    ['a plus matches itself', 'a+', 'a+', true],
    ['parentheses and a pipe are literal', '(a|b)', 'a', false],
    ['parentheses and a pipe match themselves', '(a|b)', '(a|b)', true],
    ['a caret and a dollar are literal', '^a$', '^a$', true],
    ['a caret and a dollar do not anchor', '^a$', 'a', false],
    ['a pattern matches the whole value, not a part', 'team', 'my-team-a', false],
    ['matching is case-sensitive', 'Team-*', 'team-a', false],
    ['a star also matches a value with regex metacharacters', 'x*', 'x.+?()|$^', true],
  ])('%s (%s vs %s)', (_name, pattern, value, matches) => {
    // Over clusters, whose names are free-form (a namespace pattern may hold only a namespace's characters).
    expect(single({ clusters: [pattern] }).evaluate(req({ clusterId: value })).rule).toBe(matches ? 'r' : 'default');
  });

  // A ReDoS guard, not a speed test: naive backtracking on this input takes minutes, the compiled
  // glob a fraction of a millisecond; the bound is far above any machine's noise.
  it('does not backtrack catastrophically on a pathological pattern and a long name', () => {
    const e = single({ serviceAccounts: ['*a*a*a*a*a*a*b'] });
    const started = performance.now();
    expect(e.evaluate(req({ serviceAccount: 'a'.repeat(253) })).rule).toBe('default');
    expect(performance.now() - started).toBeLessThan(5000);
  });
});

describe('PolicyEngine precedence', () => {
  const p = engine({
    rules: [
      { name: 'narrow', match: { namespaces: ['payments'], serviceAccounts: ['api'] }, issuer: 'narrow-ca' },
      { name: 'deny-payments', match: { namespaces: ['payments'] }, deny: 'payments workloads need an exception' },
      { name: 'broad', match: {}, issuer: 'broad-ca' },
    ],
  });

  it.each<[string, Partial<PolicyRequest>, string]>([
    ['the first matching rule wins over a later deny', { namespace: 'payments', serviceAccount: 'api' }, 'narrow'],
    ['a later broader allow does not override an earlier deny', { namespace: 'payments', serviceAccount: 'worker' }, 'deny-payments'],
    ['the catch-all rule takes what no earlier rule matched', { namespace: 'shop' }, 'broad'],
  ])('%s', (_name, over, rule) => {
    expect(p.evaluate(req(over)).rule).toBe(rule);
  });

  it('never reaches the default rule after a catch-all rule', () => {
    expect(p.evaluate(req({ namespace: 'anything', trustDomain: 'other.td', impersonated: true })).rule).toBe('broad');
  });

  it('lists rule names in evaluation order, then the default rule', () => {
    expect(p.ruleNames).toEqual(['narrow', 'deny-payments', 'broad', 'default']);
  });
});

describe('PolicyEngine deny rules', () => {
  it('refuses with POLICY_DENIED and the configured reason, verbatim', () => {
    expect(engine(EXAMPLE_POLICY).evaluate(req({ namespace: 'kube-system' }))).toEqual({
      allowed: false,
      rule: 'deny-kube-system',
      code: 'POLICY_DENIED',
      reason: 'kube-system workloads get certificates from istiod',
    });
  });

  it('refuses before looking at the key, SANs or lifetime', () => {
    const d = denied(engine(EXAMPLE_POLICY).evaluate(req({ namespace: 'team-x', key: { algorithm: 'RSA', size: 1024 }, emails: ['a@b.c'], requestedTtlSeconds: 'junk' })));
    expect(d.code).toBe('POLICY_DENIED');
  });

  it('lets a deny default refuse everything no rule matched', () => {
    const p = engine({ rules: [{ name: 'mesh', match: { namespaces: ['mesh-*'] } }], default: { deny: 'only mesh-* namespaces get certificates' } });
    expect(p.evaluate(req({ namespace: 'mesh-a' })).allowed).toBe(true);
    expect(p.evaluate(req())).toEqual({ allowed: false, rule: 'default', code: 'POLICY_DENIED', reason: 'only mesh-* namespaces get certificates' });
  });

  it('gives rules after a deny default the built-in decision fields', () => {
    const p = engine({ rules: [{ name: 'mesh' }], default: { deny: 'no' } });
    expect(p.evaluate(req())).toEqual({ allowed: true, rule: 'mesh', ttlSeconds: D, ttlClamped: false, dnsNames: [], ipAddresses: [], issuer: 'default' });
  });
});

describe('PolicyEngine lifetime', () => {
  const clamp = engine({ rules: [{ name: 'r', lifetime: { default: '12h', min: '1h', max: '48h', aboveMax: 'clamp' } }] });
  const reject = engine({ rules: [{ name: 'r', lifetime: { default: '12h', min: '1h', max: '48h', aboveMax: 'reject' } }] });

  it.each<[string, PolicyEngine, PolicyRequest['requestedTtlSeconds'], number, boolean]>([
    ['gives the rule default when nothing is asked', clamp, undefined, 12 * H, false],
    ['gives the rule default for zero', clamp, 0, 12 * H, false],
    ['gives the rule default for the string "0"', clamp, '0', 12 * H, false],
    ['gives the rule default for a negative number', reject, -5, 12 * H, false],
    ['gives the rule default for the most negative int64', reject, '-9223372036854775808', 12 * H, false],
    ['gives the rule default for a negative bigint', reject, -1n, 12 * H, false],
    ['gives what is asked between min and max', clamp, 2 * H, 2 * H, false],
    ['gives what is asked as a string', reject, '7200', 2 * H, false],
    ['gives what is asked as a bigint', reject, 7200n, 2 * H, false],
    ['gives exactly the minimum when it is asked', reject, H, H, false],
    ['gives exactly the maximum when it is asked', reject, 48 * H, 48 * H, false],
    ['raises a request below the minimum to the minimum', clamp, 60, H, true],
    ['raises one second to the minimum even when rejecting above max', reject, 1, H, true],
    ['clamps one second above the maximum', clamp, 48 * H + 1, 48 * H, true],
    ['clamps the largest int64', clamp, '9223372036854775807', 48 * H, true],
    ['clamps a number beyond int64', clamp, '99999999999999999999999999999999', 48 * H, true],
  ])('%s', (_name, p, requested, ttl, clamped) => {
    const d = allowed(p.evaluate(req({ requestedTtlSeconds: requested })));
    expect(d.ttlSeconds).toBe(ttl);
    expect(d.ttlClamped).toBe(clamped);
  });

  it.each<[string, PolicyRequest['requestedTtlSeconds']]>([
    ['one second above the maximum', 48 * H + 1],
    ['a year', 365 * D],
    ['the largest int64', '9223372036854775807'],
  ])('refuses %s with TTL_INVALID when aboveMax is reject', (_name, requested) => {
    const d = denied(reject.evaluate(req({ requestedTtlSeconds: requested })));
    expect(d.code).toBe('TTL_INVALID');
    expect(d.reason).toContain(`maximum of ${48 * H}s`);
    expect(d.reason).toContain('rule "r"');
  });

  it.each<[string, PolicyRequest['requestedTtlSeconds']]>([
    ['a decimal string', '1.5'],
    ['a fractional number', 1.5],
    ['a duration string', '24h'],
    ['NaN', Number.NaN],
  ])('refuses %s with TTL_INVALID', (_name, requested) => {
    expect(denied(clamp.evaluate(req({ requestedTtlSeconds: requested })))).toMatchObject({
      code: 'TTL_INVALID',
      reason: 'validity_duration must be an integer number of seconds',
    });
  });

  it('inherits lifetime fields one by one from the default rule', () => {
    const p = engine({ rules: [{ name: 'r', lifetime: { max: '30d' } }], default: { lifetime: { default: '6h', min: '1h', aboveMax: 'reject' } } });
    expect(allowed(p.evaluate(req())).ttlSeconds).toBe(6 * H);
    expect(allowed(p.evaluate(req({ requestedTtlSeconds: 60 }))).ttlSeconds).toBe(H);
    expect(allowed(p.evaluate(req({ requestedTtlSeconds: 20 * D }))).ttlSeconds).toBe(20 * D);
    expect(denied(p.evaluate(req({ requestedTtlSeconds: 31 * D }))).code).toBe('TTL_INVALID');
  });
});

describe('PolicyEngine keys', () => {
  const gateways = engine(EXAMPLE_POLICY);
  const gw = { namespace: 'istio-ingress', serviceAccount: 'istio-ingressgateway' };

  it.each<[string, PolicyEngine, Partial<PolicyRequest>, CsrKeyInfo, boolean]>([
    ['the default rule allows RSA 2048', engine({}), {}, RSA2048, true],
    ['the default rule allows RSA 4096', engine({}), {}, RSA4096, true],
    ['the default rule allows ECDSA P-256', engine({}), {}, EC256, true],
    ['the default rule allows ECDSA P-384', engine({}), {}, EC384, true],
    ['a rule refuses RSA below its minimum', gateways, gw, RSA2048, false],
    ['a rule allows RSA at its minimum', gateways, gw, RSA3072, true],
    ['a rule allows RSA above its minimum', gateways, gw, RSA4096, true],
    ['a rule allows ECDSA at its minimum', gateways, gw, EC256, true],
    ['an ECDSA 384 minimum refuses P-256', engine({ default: { keys: [{ type: 'ECDSA', minSize: 384 }] } }), {}, EC256, false],
    ['an ECDSA 384 minimum allows P-384', engine({ default: { keys: [{ type: 'ECDSA', minSize: 384 }] } }), {}, EC384, true],
    ['an ECDSA-only rule refuses any RSA key', engine({ default: { keys: [{ type: 'ECDSA' }] } }), {}, RSA4096, false],
    ['an RSA-only rule refuses ECDSA', engine({ default: { keys: [{ type: 'RSA' }] } }), {}, EC384, false],
    ['an RSA entry without minSize means 2048', engine({ default: { keys: [{ type: 'RSA' }] } }), {}, RSA2048, true],
  ])('%s', (_name, p, over, key, ok) => {
    const d = p.evaluate(req({ ...over, key }));
    expect(d.allowed).toBe(ok);
    if (!ok) expect(denied(d).code).toBe('CSR_UNSUPPORTED_KEY');
  });

  it('says which keys the rule allows and which key the CSR has', () => {
    expect(denied(gateways.evaluate(req({ ...gw, key: RSA2048 }))).reason).toBe(
      'rule "gateways" allows only ECDSA >= 256 bits or RSA >= 3072 bits; the CSR has an RSA 2048-bit key',
    );
    expect(denied(engine({ default: { keys: [{ type: 'ECDSA', minSize: 384 }] } }).evaluate(req())).reason).toBe(
      'rule "default" allows only ECDSA >= 384 bits; the CSR has an ECDSA P-256 key',
    );
  });
});

describe('PolicyEngine extra SANs', () => {
  const all = engine({
    rules: [
      {
        name: 'sans',
        extraSans: {
          dns: ['{serviceAccount}.{namespace}.svc', '{namespace}.{trustDomain}', '{cluster}.example.com', 'fixed.example.com', '*.{namespace}.svc.cluster.local'],
          ip: ['10.1.2.3', '192.168.0.0/16', 'fd00::/64'],
        },
      },
    ],
  });

  it.each<[string, string[]]>([
    ['{serviceAccount} and {namespace} are the caller\'s', ['web.default.svc']],
    ['{trustDomain} is the caller\'s trust domain', ['default.cluster.local']],
    ['{cluster} is the caller\'s cluster, compared case-insensitively', ['kubernetes.example.com']],
    ['a template without placeholders allows itself', ['fixed.example.com']],
    ['requested names are compared case-insensitively', ['WEB.Default.SVC']],
    ['a wildcard template allows the wildcard name itself', ['*.default.svc.cluster.local']],
    ['a wildcard template allows one label in place of the star', ['api.default.svc.cluster.local']],
    ['several allowed names are all issued', ['web.default.svc', 'fixed.example.com']],
  ])('allows a DNS name when %s', (_name, dnsNames) => {
    const d = allowed(all.evaluate(req({ dnsNames })));
    expect(d.dnsNames).toEqual(dnsNames.map((n) => n.toLowerCase()));
  });

  it('issues each allowed name once, lowercased', () => {
    expect(allowed(all.evaluate(req({ dnsNames: ['Fixed.example.com', 'fixed.example.com'] }))).dnsNames).toEqual(['fixed.example.com']);
  });

  it.each<[string, string]>([
    ['another namespace', 'web.other.svc'],
    ['another service account', 'api.default.svc'],
    ['two labels in place of the star', 'a.b.default.svc.cluster.local'],
    ['an empty label in place of the star', '.default.svc.cluster.local'],
    ['a label with an invalid character in place of the star', 'a_b.default.svc.cluster.local'],
    ['a wildcard under a non-wildcard template', '*.fixed.example.com'],
    ['a name that merely ends like an allowed one', 'xfixed.example.com'],
    ['a parent of a wildcard template', 'default.svc.cluster.local'],
  ])('refuses a DNS name from %s', (_name, name) => {
    const d = denied(all.evaluate(req({ dnsNames: ['web.default.svc', name] })));
    expect(d.code).toBe('CSR_FORBIDDEN_EXTENSION');
    expect(d.reason).toContain(`DNS name ${JSON.stringify(name)}`);
    expect(d.reason).toContain('rule "sans" does not allow');
  });

  it('gives a service account with dots in its name nothing from a template that uses it', () => {
    // Kubernetes allows "payments.prod" as a service-account name in any namespace; rendered into
    // "{serviceAccount}.svc" it would be the name of service payments in namespace prod.
    const cluster = engine({ rules: [{ name: 'svc', extraSans: { dns: ['{serviceAccount}.svc.cluster.local', '{namespace}.example.com'] } }] });
    const d = denied(cluster.evaluate(req({ namespace: 'attacker', serviceAccount: 'payments.prod', dnsNames: ['payments.prod.svc.cluster.local'] })));
    expect(d.code).toBe('CSR_FORBIDDEN_EXTENSION');
    // The templates that do not use the dotted value still render.
    expect(d.reason).toMatch(/it allows attacker\.example\.com$/);
    expect(allowed(cluster.evaluate(req({ namespace: 'attacker', serviceAccount: 'payments.prod', dnsNames: ['attacker.example.com'] }))).dnsNames).toEqual(['attacker.example.com']);
    const only = engine({ rules: [{ name: 'svc', extraSans: { dns: ['{serviceAccount}.svc.cluster.local'] } }] });
    expect(denied(only.evaluate(req({ serviceAccount: 'payments.prod', dnsNames: ['payments.prod.svc.cluster.local'] }))).reason).toMatch(
      /its DNS templates give this caller no name \(its namespace and service account must each be one DNS label\)$/,
    );
    // A single-label service account still gets its name.
    expect(allowed(only.evaluate(req({ serviceAccount: 'payments', dnsNames: ['payments.svc.cluster.local'] }))).dnsNames).toEqual(['payments.svc.cluster.local']);
  });

  it('says which names the rule allows for this caller', () => {
    expect(denied(all.evaluate(req({ dnsNames: ['x.example.com'] }))).reason).toBe(
      'the CSR requests DNS name "x.example.com", which rule "sans" does not allow; it allows web.default.svc, default.cluster.local, ' +
        'kubernetes.example.com, fixed.example.com, *.default.svc.cluster.local',
    );
  });

  it('refuses every DNS name under the default rule', () => {
    expect(denied(engine({}).evaluate(req({ dnsNames: ['web.default.svc'] })))).toEqual({
      allowed: false,
      rule: 'default',
      code: 'CSR_FORBIDDEN_EXTENSION',
      reason: 'the CSR requests DNS name "web.default.svc", which rule "default" does not allow; it allows no DNS names',
    });
  });

  it.each<[string, string]>([
    ['a listed address', '10.1.2.3'],
    ['an address inside an IPv4 range', '192.168.44.5'],
    ['an address inside an IPv6 range', 'fd00::1234'],
  ])('allows %s', (_name, ip) => {
    expect(allowed(all.evaluate(req({ ipAddresses: [ip] }))).ipAddresses).toEqual([ip]);
  });

  it.each<[string, string]>([
    ['an unlisted address', '10.1.2.4'],
    ['an address outside the IPv4 range', '192.169.0.1'],
    ['an address outside the IPv6 range', 'fd00:0:0:1::1'],
    ['the loopback address', '127.0.0.1'],
  ])('refuses %s', (_name, ip) => {
    const d = denied(all.evaluate(req({ ipAddresses: [ip] })));
    expect(d.code).toBe('CSR_FORBIDDEN_EXTENSION');
    expect(d.reason).toBe(`the CSR requests IP address "${ip}", which rule "sans" does not allow; it allows 10.1.2.3, 192.168.0.0/16, fd00::/64`);
  });

  it('keeps IPv6 ranges to IPv6 addresses: ::/0 does not allow an IPv4 address, nor 0.0.0.0/0 an IPv6 one', () => {
    const v6 = engine({ rules: [{ name: 'v6', extraSans: { ip: ['::/0'] } }] });
    expect(allowed(v6.evaluate(req({ ipAddresses: ['2001:db8::1'] }))).ipAddresses).toEqual(['2001:db8::1']);
    expect(denied(v6.evaluate(req({ ipAddresses: ['10.0.0.1'] }))).code).toBe('CSR_FORBIDDEN_EXTENSION');
    const v4 = engine({ rules: [{ name: 'v4', extraSans: { ip: ['0.0.0.0/0'] } }] });
    expect(allowed(v4.evaluate(req({ ipAddresses: ['10.0.0.1'] }))).ipAddresses).toEqual(['10.0.0.1']);
    expect(denied(v4.evaluate(req({ ipAddresses: ['::ffff:a00:1'] }))).code).toBe('CSR_FORBIDDEN_EXTENSION');
  });

  it('refuses every IP address under the default rule', () => {
    expect(denied(engine({}).evaluate(req({ ipAddresses: ['10.0.0.1'] }))).reason).toBe(
      'the CSR requests IP address "10.0.0.1", which rule "default" does not allow; it allows no IP addresses',
    );
  });

  it('refuses email SANs even when everything else is allowed', () => {
    const d = denied(all.evaluate(req({ dnsNames: ['fixed.example.com'], emails: ['ops@example.com'] })));
    expect(d).toEqual({
      allowed: false,
      rule: 'sans',
      code: 'CSR_FORBIDDEN_EXTENSION',
      reason: 'the CSR requests email address "ops@example.com" as a SAN; workload certificates never carry email addresses',
    });
  });

  it('ignores URI SANs (checked against the identity before)', () => {
    expect(allowed(engine({}).evaluate(req({ uris: ['spiffe://cluster.local/ns/default/sa/web'] }))).dnsNames).toEqual([]);
  });

  it('shortens a very long SAN in the message', () => {
    const long = `${'a'.repeat(200)}.example.com`;
    const d = denied(engine({}).evaluate(req({ dnsNames: [long] })));
    expect(d.reason).toContain(`"${'a'.repeat(100)}..."`);
    expect(d.reason).not.toContain('a'.repeat(101));
  });

  it('an explicit extraSans replaces the default rule\'s, and a missing list means none', () => {
    const p = engine({ rules: [{ name: 'r', extraSans: { dns: ['a.example.com'] } }], default: { extraSans: { ip: ['10.0.0.1'], dns: ['b.example.com'] } } });
    expect(allowed(p.evaluate(req({ dnsNames: ['a.example.com'] }))).dnsNames).toEqual(['a.example.com']);
    expect(denied(p.evaluate(req({ dnsNames: ['b.example.com'] }))).code).toBe('CSR_FORBIDDEN_EXTENSION');
    expect(denied(p.evaluate(req({ ipAddresses: ['10.0.0.1'] }))).code).toBe('CSR_FORBIDDEN_EXTENSION');
  });
});

describe('PolicyEngine.extraSanSamples', () => {
  const fallback = { namespace: 'ns', serviceAccount: 'sa', trustDomain: 'td.example', cluster: 'east' };

  it('renders each allow rule\'s DNS templates for the literal values of its match lists (globs left out), else the fallback, with its IP entries and CA', () => {
    const p = engine({
      rules: [
        { name: 'deny', match: { namespaces: ['kube-system'] }, deny: 'no' },
        { name: 'svc', issuer: 'other', match: { namespaces: ['web', 'team-*', 'api'], clusters: ['west'] }, extraSans: { dns: ['{serviceAccount}.{namespace}.svc', 'x.{cluster}.{trustDomain}'], ip: ['10.1.2.3', '10.0.0.0/7'] } },
        { name: 'plain', match: { namespaces: ['quiet'] }, extraSans: { dns: [], ip: [] } },
      ],
    });
    expect(p.extraSanSamples(fallback)).toEqual([
      {
        rule: 'svc',
        issuer: 'other',
        rendered: [
          { caller: { trustDomain: 'td.example', cluster: 'west', namespace: 'web', serviceAccount: 'sa' }, dnsNames: ['sa.web.svc', 'x.west.td.example'] },
          { caller: { trustDomain: 'td.example', cluster: 'west', namespace: 'api', serviceAccount: 'sa' }, dnsNames: ['sa.api.svc', 'x.west.td.example'] },
        ],
        ipRanges: [
          { ip: Buffer.from([10, 1, 2, 3]), bits: 32 },
          { ip: Buffer.from([10, 0, 0, 0]), bits: 7 },
        ],
      },
    ]);
  });

  it('leaves out a template a dotted service account cannot render, and gives the default rule\'s extraSans to the rules that inherit them', () => {
    const p = engine({ rules: [{ name: 'dotted', match: { serviceAccounts: ['a.b'] } }], default: { extraSans: { dns: ['{serviceAccount}.example', 'fixed.example'] } } });
    expect(p.extraSanSamples(fallback).map((s) => [s.rule, s.rendered.map((x) => x.dnsNames)])).toEqual([
      ['dotted', [['fixed.example']]],
      ['default', [['sa.example', 'fixed.example']]],
    ]);
  });
});

describe('PolicyEngine issuer and default rule', () => {
  it('uses the matched rule\'s issuer', () => {
    expect(allowed(engine(EXAMPLE_POLICY).evaluate(req({ namespace: 'istio-ingress', serviceAccount: 'istio-ingressgateway' }))).issuer).toBe('gateways-ca');
  });

  it('inherits the default rule\'s issuer, keys and SANs when a rule does not set them', () => {
    const p = engine({ rules: [{ name: 'r', lifetime: { default: '1h' } }], default: { issuer: 'other', keys: [{ type: 'RSA', minSize: 4096 }], extraSans: { dns: ['x.example.com'] } } });
    const d = allowed(p.evaluate(req({ key: RSA4096, dnsNames: ['x.example.com'] })));
    expect(d).toEqual({ allowed: true, rule: 'r', ttlSeconds: H, ttlClamped: false, dnsNames: ['x.example.com'], ipAddresses: [], issuer: 'other' });
    expect(denied(p.evaluate(req({ key: RSA2048 }))).code).toBe('CSR_UNSUPPORTED_KEY');
  });

  it('allows with the built-in defaults when there is no policy at all', () => {
    const p = engine({});
    expect(p.evaluate(req())).toEqual({ allowed: true, rule: 'default', ttlSeconds: D, ttlClamped: false, dnsNames: [], ipAddresses: [], issuer: 'default' });
    expect(allowed(p.evaluate(req({ requestedTtlSeconds: 90 * D }))).ttlSeconds).toBe(90 * D);
    expect(allowed(p.evaluate(req({ requestedTtlSeconds: 91 * D })))).toMatchObject({ ttlSeconds: 90 * D, ttlClamped: true });
    expect(allowed(p.evaluate(req({ requestedTtlSeconds: 1 })))).toMatchObject({ ttlSeconds: 1, ttlClamped: false });
  });

  it('applies the default rule when no rule matches', () => {
    const d = allowed(engine(EXAMPLE_POLICY).evaluate(req({ namespace: 'shop' })));
    expect(d).toEqual({ allowed: true, rule: 'default', ttlSeconds: D, ttlClamped: false, dnsNames: [], ipAddresses: [], issuer: 'default' });
  });
});

describe('PolicyEngine.explain', () => {
  const p = engine(EXAMPLE_POLICY);

  it('lists each rule tried until the match, with why', () => {
    const e = p.explain(req({ namespace: 'istio-ingress', serviceAccount: 'istio-ingressgateway', dnsNames: ['gw.istio-ingress.svc.cluster.local'] }));
    expect(e.matchedRule).toBe('gateways');
    expect(e.evaluated).toEqual([
      { rule: 'deny-kube-system', matched: false, why: 'namespace "istio-ingress" matches none of kube-system, team-*' },
      { rule: 'gateways', matched: true, why: 'namespace is "istio-ingress"; service account is "istio-ingressgateway"' },
    ]);
    expect(e.decision).toEqual(p.evaluate(req({ namespace: 'istio-ingress', serviceAccount: 'istio-ingressgateway', dnsNames: ['gw.istio-ingress.svc.cluster.local'] })));
  });

  it('names the glob that matched and stops at the first match', () => {
    const e = p.explain(req({ namespace: 'team-a' }));
    expect(e.matchedRule).toBe('deny-kube-system');
    expect(e.evaluated).toEqual([
      {
        rule: 'deny-kube-system',
        matched: true,
        why: 'trust domain is "cluster.local"; cluster is "Kubernetes"; namespace "team-a" matches "team-*"; service account "web" matches "*"; not impersonated',
      },
    ]);
    expect(e.decision).toMatchObject({ allowed: false, code: 'POLICY_DENIED' });
  });

  it.each<[string, Partial<PolicyRequest>, string]>([
    ['the trust domain', { trustDomain: 'other.td', namespace: 'kube-system' }, 'trust domain "other.td" matches none of cluster.local'],
    ['the cluster', { clusterId: 'east', namespace: 'kube-system' }, 'cluster "east" matches none of Kubernetes'],
    ['impersonation', { impersonated: true, namespace: 'kube-system' }, 'the request is on behalf of another identity, and the rule requires impersonated: false'],
  ])('says when %s does not match', (_name, over, why) => {
    expect(p.explain(req(over)).evaluated[0]).toEqual({ rule: 'deny-kube-system', matched: false, why });
  });

  it('ends with the default rule when nothing matched', () => {
    const e = p.explain(req({ namespace: 'shop' }));
    expect(e.matchedRule).toBe('default');
    expect(e.evaluated.map((t) => [t.rule, t.matched])).toEqual([
      ['deny-kube-system', false],
      ['gateways', false],
      ['default', true],
    ]);
    expect(e.evaluated[1]!.why).toBe('namespace "shop" matches none of istio-ingress');
    expect(e.evaluated[2]!.why).toBe('no rule matched; the default rule applies');
  });

  it('explains a policy without rules', () => {
    expect(engine({}).explain(req()).evaluated).toEqual([{ rule: 'default', matched: true, why: 'there are no rules; the default rule applies' }]);
  });

  it('explains a rule on the credential, matched and not', () => {
    const e = engine({ rules: [{ name: 'renewals', match: { namespaces: ['vm-*'], authenticatedBy: 'client-certificate' }, deny: 'renew with a token' }] });
    expect(e.explain(req({ namespace: 'vm-db', authenticatedBy: 'client-certificate' })).evaluated[0]).toEqual({
      rule: 'renewals',
      matched: true,
      why: 'namespace "vm-db" matches "vm-*"; authenticated with a client certificate',
    });
    expect(e.explain(req({ namespace: 'vm-db' })).evaluated[0]).toEqual({
      rule: 'renewals',
      matched: false,
      why: 'the caller authenticated with a token, and the rule requires authenticatedBy: client-certificate',
    });
  });

  it('explains a rule that matches everything and one requiring impersonation', () => {
    const e = engine({ rules: [{ name: 'agents', match: { impersonated: true } }, { name: 'all' }] });
    expect(e.explain(req({ impersonated: true })).evaluated).toEqual([{ rule: 'agents', matched: true, why: 'impersonated' }]);
    expect(e.explain(req()).evaluated).toEqual([
      { rule: 'agents', matched: false, why: 'the request is not on behalf of another identity, and the rule requires impersonated: true' },
      { rule: 'all', matched: true, why: 'the rule matches every request' },
    ]);
  });
});

describe('a request under a trust-domain alias', () => {
  // Payments' certificates: 12 h at most, from the "second" CA; the alias domain has no such rule.
  const p = engine({
    rules: [{ name: 'payments', match: { trustDomains: ['cluster.local'], namespaces: ['payments-*'] }, issuer: 'second', lifetime: { default: '1h', max: '12h', aboveMax: 'clamp' } }],
    default: { lifetime: { default: '24h', max: '90d' } },
  });
  const asked = { namespace: 'payments-a', requestedTtlSeconds: 90 * D };

  it('is issued by the requested domain\'s rule, for no longer than the authenticated domain\'s allows', () => {
    expect(allowed(p.evaluate(req(asked)))).toMatchObject({ rule: 'payments', issuer: 'second', ttlSeconds: 12 * H, ttlClamped: true });
    const alias = allowed(p.evaluate(req({ ...asked, trustDomain: 'old.local', authenticatedTrustDomain: 'cluster.local' })));
    expect(alias).toMatchObject({ rule: 'default', ttlSeconds: 12 * H, ttlClamped: true });
    expect(allowed(p.explain(req({ ...asked, trustDomain: 'old.local', authenticatedTrustDomain: 'cluster.local' })).decision).ttlSeconds).toBe(12 * H);
    // Within both, the requested domain's lifetime stands.
    expect(allowed(p.evaluate(req({ ...asked, requestedTtlSeconds: 2 * H, trustDomain: 'old.local', authenticatedTrustDomain: 'cluster.local' })))).toMatchObject({ ttlSeconds: 2 * H, ttlClamped: false });
    // Nothing asked for: the requested rule's default (24 h), capped by the other's max, not its default (1 h); not "clamped".
    expect(allowed(p.evaluate(req({ namespace: 'payments-a', trustDomain: 'old.local', authenticatedTrustDomain: 'cluster.local' })))).toMatchObject({ rule: 'default', ttlSeconds: 12 * H, ttlClamped: false });
  });

  it("is refused when the authenticated domain's max is below the requested rule's min (no lifetime fits both)", () => {
    const floor = engine({
      rules: [
        { name: 'payments', match: { trustDomains: ['cluster.local'], namespaces: ['payments-*'] }, lifetime: { default: '10m', max: '30m', aboveMax: 'clamp' } },
        { name: 'alias', match: { trustDomains: ['old.local'] }, lifetime: { default: '24h', min: '1h', max: '48h' } },
      ],
    });
    const d = denied(floor.evaluate(req({ namespace: 'payments-a', trustDomain: 'old.local', authenticatedTrustDomain: 'cluster.local' })));
    expect(d).toMatchObject({ rule: 'alias', code: 'TTL_INVALID' });
    expect(d.reason).toBe('no lifetime fits both trust domains\' rules: rule "payments" for cluster.local allows at most 1800s, rule "alias" for old.local at least 3600s');
  });

  it("is issued at the authenticated domain's max when that equals the requested rule's min (one lifetime fits both)", () => {
    const edge = engine({
      rules: [
        { name: 'payments', match: { trustDomains: ['cluster.local'], namespaces: ['payments-*'] }, lifetime: { default: '10m', max: '1h', aboveMax: 'clamp' } },
        { name: 'alias', match: { trustDomains: ['old.local'] }, lifetime: { default: '24h', min: '1h', max: '48h' } },
      ],
    });
    expect(allowed(edge.evaluate(req({ namespace: 'payments-a', trustDomain: 'old.local', authenticatedTrustDomain: 'cluster.local' })))).toMatchObject({ rule: 'alias', ttlSeconds: H });
  });

  it("gets the SANs the requested domain's rule allows, {trustDomain} rendered as the requested domain; the authenticated domain's deny rules still refuse it", () => {
    const gw = engine({
      rules: [
        { name: 'no-team-x', match: { trustDomains: ['cluster.local'], namespaces: ['team-x'] }, deny: 'team-x gets no certificates' },
        { name: 'gateways', match: { namespaces: ['istio-ingress', 'team-x'] }, extraSans: { dns: ['{serviceAccount}.{namespace}.svc.{trustDomain}'] } },
      ],
    });
    const alias = { namespace: 'istio-ingress', serviceAccount: 'gw', trustDomain: 'old.local', authenticatedTrustDomain: 'cluster.local' };
    expect(allowed(gw.evaluate(req({ ...alias, dnsNames: ['gw.istio-ingress.svc.old.local'] })))).toMatchObject({ rule: 'gateways', dnsNames: ['gw.istio-ingress.svc.old.local'] });
    expect(allowed(gw.explain(req({ ...alias, dnsNames: ['gw.istio-ingress.svc.old.local'] })).decision).dnsNames).toEqual(['gw.istio-ingress.svc.old.local']);
    // The authenticated domain's name is not the requested domain's to give.
    expect(denied(gw.evaluate(req({ ...alias, dnsNames: ['gw.istio-ingress.svc.cluster.local'] }))).code).toBe('CSR_FORBIDDEN_EXTENSION');
    // A deny rule of the authenticated domain is not stepped around by asking under the alias, SANs or none.
    for (const dnsNames of [[], ['gw.team-x.svc.old.local']]) {
      const d = denied(gw.evaluate(req({ ...alias, namespace: 'team-x', dnsNames })));
      expect(d).toMatchObject({ rule: 'no-team-x', code: 'POLICY_DENIED' });
    }
  });

  it('is refused when the authenticated domain\'s rule rejects the lifetime', () => {
    const strict = engine({ rules: [{ name: 'payments', match: { trustDomains: ['cluster.local'], namespaces: ['payments-*'] }, lifetime: { default: '1h', max: '12h', aboveMax: 'reject' } }] });
    expect(denied(strict.evaluate(req({ ...asked, trustDomain: 'old.local', authenticatedTrustDomain: 'cluster.local' }))).rule).toBe('payments');
  });
});

describe('{cluster} for a client-certificate caller (templateCluster)', () => {
  const p = engine({ rules: [{ name: 'multi', match: { namespaces: ['multi'] }, extraSans: { dns: ['{serviceAccount}.{namespace}.svc.{cluster}.mesh'] } }] });
  const asked = (dns: string, templateCluster?: string) =>
    p.evaluate(req({ namespace: 'multi', clusterId: 'Kubernetes', authenticatedBy: 'client-certificate', dnsNames: [dns], ...(templateCluster === undefined ? {} : { templateCluster }) }));

  it('is the cluster the certificate names, not the default cluster the caller is judged as', () => {
    expect(allowed(asked('web.multi.svc.east.mesh', 'east')).dnsNames).toEqual(['web.multi.svc.east.mesh']);
    expect(denied(asked('web.multi.svc.kubernetes.mesh', 'east')).reason).toContain('it allows web.multi.svc.east.mesh');
    // Without it (a token caller), the cluster authenticated in.
    expect(allowed(asked('web.multi.svc.kubernetes.mesh')).dnsNames).toEqual(['web.multi.svc.kubernetes.mesh']);
  });

  it('names nothing when the certificate does not tell the cluster', () => {
    const d = denied(asked('web.multi.svc.kubernetes.mesh', ''));
    expect(d.code).toBe('CSR_FORBIDDEN_EXTENSION');
    expect(d.reason).toContain('{cluster} names nothing for a client certificate whose trust domain does not tell the cluster');
  });
});
