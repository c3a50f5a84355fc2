import { describe, expect, it } from 'vitest';
import { BUILTIN_DEFAULT, policySchema, type Policy } from '../../../src/policy/schema.js';
import { EXAMPLE_POLICY } from '../../fixtures/policy.js';

const H = 3600;
const D = 86_400;

/** [path, message] of every issue, or [] when valid. */
function issues(input: unknown): Array<[string, string]> {
  const r = policySchema.safeParse(input);
  return r.success ? [] : r.error.issues.map((i) => [i.path.join('.'), i.message]);
}

describe('policySchema: valid policies', () => {
  it('lets a default that denies carry the fields its rules inherit', () => {
    const p = policySchema.parse({
      default: { deny: 'not listed', lifetime: { default: '1h', max: '2h', aboveMax: 'reject' }, keys: [{ type: 'ECDSA' }] },
      rules: [{ name: 'apps', match: { namespaces: ['app-*'] } }, { name: 'long', match: { namespaces: ['batch'] }, lifetime: { max: '4h' } }],
    });
    expect(p.default).toEqual({ deny: 'not listed' });
    expect(p.rules[0]).toMatchObject({ lifetime: { default: H, min: 0, max: 2 * H, aboveMax: 'reject' }, keys: [{ type: 'ECDSA', minSize: 256 }] });
    expect(p.rules[1]).toMatchObject({ lifetime: { default: H, max: 4 * H, aboveMax: 'reject' } });
  });

  it('resolves the documented example completely', () => {
    expect(policySchema.parse(EXAMPLE_POLICY)).toEqual<Policy>({
      rules: [
        {
          name: 'deny-kube-system',
          match: { trustDomains: ['cluster.local'], clusters: ['Kubernetes'], namespaces: ['kube-system', 'team-*'], serviceAccounts: ['*'], impersonated: false },
          deny: 'kube-system workloads get certificates from istiod',
        },
        {
          name: 'gateways',
          match: { namespaces: ['istio-ingress'], serviceAccounts: ['istio-ingressgateway'] },
          lifetime: { default: 12 * H, min: H, max: 48 * H, aboveMax: 'clamp' },
          keys: [
            { type: 'ECDSA', minSize: 256 },
            { type: 'RSA', minSize: 3072 },
          ],
          extraSans: { dns: ['*.{namespace}.svc.cluster.local', '{serviceAccount}.example.com'], ip: [] },
          issuer: 'gateways-ca',
        },
      ],
      default: {
        lifetime: { default: D, min: 0, max: 90 * D, aboveMax: 'clamp' },
        keys: [
          { type: 'RSA', minSize: 2048 },
          { type: 'ECDSA', minSize: 256 },
        ],
        extraSans: { dns: [], ip: [] },
        issuer: 'default',
      },
    });
  });

  it('gives the built-in default rule for an empty policy', () => {
    expect(policySchema.parse({})).toEqual({ rules: [], default: BUILTIN_DEFAULT });
    expect(BUILTIN_DEFAULT).toEqual({
      lifetime: { default: D, min: 0, max: 90 * D, aboveMax: 'clamp' },
      keys: [
        { type: 'RSA', minSize: 2048 },
        { type: 'ECDSA', minSize: 256 },
      ],
      extraSans: { dns: [], ip: [] },
      issuer: 'default',
    });
  });

  it('turns authenticatedBy into a list without repeats', () => {
    const p = policySchema.parse({ rules: [{ name: 'r', match: { authenticatedBy: 'client-certificate' } }, { name: 's', match: { authenticatedBy: ['token', 'client-certificate', 'token'] } }] });
    expect(p.rules.map((r) => r.match.authenticatedBy)).toEqual([['client-certificate'], ['token', 'client-certificate']]);
  });

  it('turns a single pattern into a list and leaves absent match fields out', () => {
    const p = policySchema.parse({ rules: [{ name: 'r', match: { namespaces: 'team-*' } }, { name: 's' }] });
    expect(p.rules[0]!.match).toEqual({ namespaces: ['team-*'] });
    expect(p.rules[1]!.match).toEqual({});
  });

  it('inherits lifetime fields one by one, and keys, SANs and issuer whole, from the default rule', () => {
    const p = policySchema.parse({
      rules: [{ name: 'r', lifetime: { max: '7d' } }],
      default: { lifetime: { default: '1h', min: '10m', aboveMax: 'reject' }, keys: [{ type: 'ECDSA' }], extraSans: { ip: ['10.0.0.0/8'] }, issuer: 'main' },
    });
    expect(p.rules[0]).toEqual({
      name: 'r',
      match: {},
      lifetime: { default: H, min: 600, max: 7 * D, aboveMax: 'reject' },
      keys: [{ type: 'ECDSA', minSize: 256 }],
      extraSans: { dns: [], ip: ['10.0.0.0/8'] },
      issuer: 'main',
    });
  });

  it('gives rules the built-in fields when the default rule denies', () => {
    const p = policySchema.parse({ rules: [{ name: 'r', lifetime: { max: '48h' } }], default: { deny: 'not in the mesh' } });
    expect(p.default).toEqual({ deny: 'not in the mesh' });
    expect(p.rules[0]).toMatchObject({ lifetime: { default: D, min: 0, max: 48 * H, aboveMax: 'clamp' }, issuer: 'default' });
  });

  it.each<[string, unknown]>([
    ['durations as numbers of seconds', { default: { lifetime: { default: 3600, max: 7200 } } }],
    ['min equal to default equal to max', { default: { lifetime: { default: '1h', min: '1h', max: '1h' } } }],
    ['IPv6 addresses and ranges', { default: { extraSans: { ip: ['::1', 'fd00::/8', '10.0.0.0/0'] } } }],
    ['every placeholder', { default: { extraSans: { dns: ['{serviceAccount}.{namespace}.{cluster}-{trustDomain}'] } } }],
    ['ECDSA P-384 and RSA 8192 minimums', { default: { keys: [{ type: 'ECDSA', minSize: 384 }, { type: 'RSA', minSize: 8192 }] } }],
    ['globs with regex metacharacters', { rules: [{ name: 'r', match: { clusters: ['east+1', 'a.(b)|$', 'c?*'] } }] }],
    ['a deny rule without match (deny everything)', { rules: [{ name: 'closed', deny: 'maintenance' }] }],
  ])('accepts %s', (_name, input) => {
    expect(issues(input)).toEqual([]);
  });
});

describe('policySchema: problems, each with its path', () => {
  it.each<[string, unknown, Array<[string, string]>]>([
    ['an unknown top-level key', { rule: [] }, [['', 'Unrecognized key: "rule"']]],
    ['an unknown rule key', { rules: [{ name: 'r', ttl: '1h' }] }, [['rules.0', 'Unrecognized key: "ttl"']]],
    ['an unknown match key', { rules: [{ name: 'r', match: { namespace: 'a' } }] }, [['rules.0.match', 'Unrecognized key: "namespace"']]],
    ['a rule without a name', { rules: [{ match: {} }] }, [['rules.0.name', 'Invalid input: expected string, received undefined']]],
    [
      'a duplicate rule name',
      { rules: [{ name: 'a' }, { name: 'b' }, { name: 'a' }] },
      [['rules.2.name', 'rule name "a" is already used by rules.0']],
    ],
    [
      'a duplicate name next to another problem',
      { rules: [{ name: 'a', match: { namespaces: ['[x]'] } }, { name: 'a' }] },
      [
        ['rules.0.match.namespaces.0', 'pattern may use only * and ? as wildcards ([ ] { } and \\ are not supported)'],
        ['rules.1.name', 'rule name "a" is already used by rules.0'],
      ],
    ],
    ['a rule named "default"', { rules: [{ name: 'default' }] }, [['rules.0.name', '"default" is the name of the default rule; choose another']]],
    [
      'a rule name with a space',
      { rules: [{ name: 'my rule' }] },
      [['rules.0.name', 'rule name must be letters, digits, ".", "-" and "_", starting with a letter or digit']],
    ],
    ['an invalid glob in a list', { rules: [{ name: 'r', match: { namespaces: ['ok', 'team-[ab]'] } }] }, [['rules.0.match.namespaces.1', 'pattern may use only * and ? as wildcards ([ ] { } and \\ are not supported)']]],
    ['an invalid single glob', { rules: [{ name: 'r', match: { serviceAccounts: '!admin' } }] }, [['rules.0.match.serviceAccounts', 'negation ("!") is not supported; put a rule that matches the exceptions first']]],
    ['an empty pattern', { rules: [{ name: 'r', match: { clusters: [''] } }] }, [['rules.0.match.clusters.0', 'pattern must not be empty']]],
    ['an empty pattern list', { rules: [{ name: 'r', match: { trustDomains: [] } }] }, [['rules.0.match.trustDomains', 'an empty list matches nothing; leave the field out to match any value']]],
    ['impersonated as a string', { rules: [{ name: 'r', match: { impersonated: 'no' } }] }, [['rules.0.match.impersonated', 'Invalid input: expected boolean, received string']]],
    ['an unknown credential', { rules: [{ name: 'r', match: { authenticatedBy: 'jwt' } }] }, [['rules.0.match.authenticatedBy', '"jwt" is not a credential: use token or client-certificate']]],
    ['an unknown credential in a list', { rules: [{ name: 'r', match: { authenticatedBy: ['token', 'mtls'] } }] }, [['rules.0.match.authenticatedBy.1', '"mtls" is not a credential: use token or client-certificate']]],
    ['an empty credential list', { rules: [{ name: 'r', match: { authenticatedBy: [] } }] }, [['rules.0.match.authenticatedBy', 'an empty list matches nothing; leave the field out to match any credential']]],
    ['an empty deny reason', { rules: [{ name: 'r', deny: '  ' }] }, [['rules.0.deny', 'the deny reason must not be empty: it is what the caller is told']]],
    [
      'deny together with decision fields',
      { rules: [{ name: 'r', deny: 'no', lifetime: { max: '1h' }, issuer: 'x' }] },
      [['rules.0.deny', 'a deny rule cannot also set lifetime, issuer']],
    ],
    ['a lifetime above 36500d', { rules: [{ name: 'r', lifetime: { max: '100000000000d' } }] }, [['rules.0.lifetime.max', 'invalid duration 100000000000d: at most 36500d']]],
    ['match in the default rule', { default: { match: {} } }, [['default', 'Unrecognized key: "match"']]],
    ['a bad duration', { rules: [{ name: 'r', lifetime: { max: '2w' } }] }, [['rules.0.lifetime.max', 'invalid duration "2w": use a number followed by s, m, h or d (e.g. 24h)']]],
    ['a fractional number of seconds', { default: { lifetime: { default: 1.5 } } }, [['default.lifetime.default', 'invalid duration 1.5: must be a whole number of seconds']]],
    ['an unknown aboveMax', { default: { lifetime: { aboveMax: 'truncate' } } }, [['default.lifetime.aboveMax', 'Invalid option: expected one of "clamp"|"reject"']]],
    ['default above max', { rules: [{ name: 'r', lifetime: { default: '2d', max: '1d' } }] }, [['rules.0.lifetime.default', 'default 2d must be <= max 1d']]],
    ['default below min', { rules: [{ name: 'r', lifetime: { default: '1h', min: '2h' } }] }, [['rules.0.lifetime.default', 'default 1h must be >= min 2h']]],
    [
      'min above max',
      { default: { lifetime: { default: '1h', min: '3h', max: '2h' } } },
      [
        ['default.lifetime.min', 'min 3h must be <= max 2h'],
        ['default.lifetime.default', 'default 1h must be >= min 3h'],
      ],
    ],
    [
      'a rule max below the inherited default',
      { rules: [{ name: 'r', lifetime: { max: '12h' } }] },
      [['rules.0.lifetime.max', 'default 1d (inherited from policy.default or issuance.*) must be <= max 12h']],
    ],
    [
      'a default rule max below the built-in default',
      { default: { lifetime: { max: '1h' } } },
      [['default.lifetime.max', 'default 1d (inherited from the built-in default) must be <= max 1h']],
    ],
    ['a zero max', { default: { lifetime: { default: '0s', max: '0s' } } }, [['default.lifetime.max', 'max must be more than 0'], ['default.lifetime.default', 'default must be more than 0']]],
    ['an unknown key type', { default: { keys: [{ type: 'Ed25519' }] } }, [['default.keys.0.type', 'Invalid option: expected one of "RSA"|"ECDSA"']]],
    ['an RSA minimum below 2048', { default: { keys: [{ type: 'RSA', minSize: 1024 }] } }, [['default.keys.0.minSize', 'RSA minSize must be 2048-8192 (meshcert never accepts smaller or larger RSA keys)']]],
    ['an ECDSA minimum that is no curve', { default: { keys: [{ type: 'ECDSA', minSize: 521 }] } }, [['default.keys.0.minSize', 'ECDSA minSize must be 256 (P-256) or 384 (P-384)']]],
    ['a key type listed twice', { default: { keys: [{ type: 'RSA' }, { type: 'RSA', minSize: 4096 }] } }, [['default.keys.1.type', 'RSA is listed twice']]],
    ['an empty key list', { rules: [{ name: 'r', keys: [] }] }, [['rules.0.keys', 'an empty key list would refuse every request; use deny instead']]],
    [
      'an unknown placeholder',
      { rules: [{ name: 'r', extraSans: { dns: ['{ns}.example.com'] } }] },
      [['rules.0.extraSans.dns.0', 'unknown placeholder {ns}; use {namespace}, {serviceAccount}, {trustDomain}, {cluster}']],
    ],
    ['an unbalanced brace', { rules: [{ name: 'r', extraSans: { dns: ['{namespace.example.com'] } }] }, [['rules.0.extraSans.dns.0', 'DNS template has an unbalanced "{" or "}"']]],
    ...[['{namespace}-{serviceAccount}.mesh.example.com', 'namespace'], ['{serviceAccount}x.example.com', 'serviceAccount'], ['web-{namespace}.example.com', 'namespace'], ['*.{namespace}-svc.example.com', 'namespace']].map(
      ([dns, placeholder]): [string, unknown, Array<[string, string]>] => [
        `{${placeholder}} joined to other text in a label (${dns})`,
        { rules: [{ name: 'r', extraSans: { dns: [dns!] } }] },
        [['rules.0.extraSans.dns.0', `{${placeholder}} must be a whole label ("{serviceAccount}.{namespace}.svc"): joined to other text in one label, two callers can render the same name (namespace "team" with service account "a-web" and namespace "team-a" with "web" in "{namespace}-{serviceAccount}")`]],
      ],
    ),
    ['a wildcard that is not the first label', { rules: [{ name: 'r', extraSans: { dns: ['a.*.example.com'] } }] }, [['rules.0.extraSans.dns.0', 'a wildcard is allowed only as the whole first label ("*.example.com")']]],
    ['a partial wildcard label', { rules: [{ name: 'r', extraSans: { dns: ['web-*.example.com'] } }] }, [['rules.0.extraSans.dns.0', 'a wildcard is allowed only as the whole first label ("*.example.com")']]],
    [
      'a DNS template that is not a name',
      { rules: [{ name: 'r', extraSans: { dns: ['a..example.com'] } }] },
      [['rules.0.extraSans.dns.0', 'DNS template must be a DNS name: labels of letters, digits and "-", separated by "."']],
    ],
    ['an unknown extraSans key', { default: { extraSans: { uri: [] } } }, [['default.extraSans', 'Unrecognized key: "uri"']]],
    ['an IP that is not an address', { default: { extraSans: { ip: ['10.0.0'] } } }, [['default.extraSans.ip.0', 'expected an IP address or a CIDR range (10.0.0.0/8, fd00::/64)']]],
    ['an IPv4 prefix above 32', { default: { extraSans: { ip: ['10.0.0.0/33'] } } }, [['default.extraSans.ip.0', 'CIDR prefix length must be 0-32']]],
    ['an IPv6 prefix that is not a number', { default: { extraSans: { ip: ['fd00::/x'] } } }, [['default.extraSans.ip.0', 'CIDR prefix length must be 0-128']]],
    ['an IPv6 entry with a zone index', { default: { extraSans: { ip: ['fe80::1%eth0'] } } }, [['default.extraSans.ip.0', 'a zone index (%...) is not part of an address a certificate can name']]],
    ...['::ffff:10.0.0.0/104', '::ffff:a00:1', '0:0:0:0:0:ffff:10.0.0.1'].map((ip): [string, unknown, Array<[string, string]>] => [
      `an IPv4-mapped IPv6 entry (${ip})`,
      { default: { extraSans: { ip: [ip] } } },
      [['default.extraSans.ip.0', 'an IPv4-mapped IPv6 entry: write it as IPv4 (::ffff:10.0.0.0/104 is 10.0.0.0/8); requested mapped addresses are compared as IPv4']],
    ]),
    ['an empty issuer', { rules: [{ name: 'r', issuer: '' }] }, [['rules.0.issuer', 'issuer must be a name of letters, digits, ".", "-" and "_"']]],
  ])('reports %s', (_name, input, expected) => {
    expect(issues(input)).toEqual(expected);
  });
});

describe('policySchema: a match pattern that can never match is refused (a deny rule written so would do nothing)', () => {
  const nsWhat = 'a namespace is lowercase letters, digits and "-" (list several as separate items)';
  const saWhat = 'a service account name is lowercase letters, digits, "-" and "." (the name alone, not system:serviceaccount:NS:NAME)';
  const tdWhat = 'a trust domain is lowercase letters, digits, ".", "-" and "_", without "spiffe://"';
  it.each<[string, Record<string, unknown>, string, string]>([
    ['an uppercase namespace', { namespaces: ['Kube-System'] }, 'namespaces.0', `"Kube-System" can never match: ${nsWhat} (found "K")`],
    ['two namespaces in one item', { namespaces: 'kube-system,istio-system' }, 'namespaces', `"kube-system,istio-system" can never match: ${nsWhat} (found ",")`],
    ['an underscore in a namespace', { namespaces: ['foo_bar'] }, 'namespaces.0', `"foo_bar" can never match: ${nsWhat} (found "_")`],
    ['a dot in a namespace', { namespaces: ['a.b'] }, 'namespaces.0', `"a.b" can never match: ${nsWhat} (found ".")`],
    ['a service account given as its username', { serviceAccounts: ['system:serviceaccount:default:default'] }, 'serviceAccounts.0', `"system:serviceaccount:default:default" can never match: ${saWhat} (found ":")`],
    ['an uppercase trust domain', { trustDomains: ['Cluster.Local'] }, 'trustDomains.0', `"Cluster.Local" can never match: ${tdWhat} (found "C")`],
    ['a trust domain as a SPIFFE ID', { trustDomains: ['spiffe://old.local'] }, 'trustDomains.0', `"spiffe://old.local" can never match: ${tdWhat} (found ":")`],
  ])('%s', (_name, match, path, message) => {
    expect(issues({ rules: [{ name: 'r', match, deny: 'no' }] })).toEqual([[`rules.0.match.${path}`, message]]);
  });

  it('accepts what can match: globs over those characters, dotted service accounts, underscores in trust domains', () => {
    expect(issues({ rules: [{ name: 'r', match: { namespaces: ['kube-*', 'team-?', '*'], serviceAccounts: ['build.bot', 'a-*'], trustDomains: ['*.example_1.org'] }, deny: 'no' }] })).toEqual([]);
  });
});
