import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi, type MockInstance } from 'vitest';
import { UsageError } from '../../../src/cli/args.js';
import { policyCommand, type PolicyExplainOutput } from '../../../src/cli/policy.js';
import { initCaDir } from '../../../src/ca/init.js';
import { makeCsr } from '../../fixtures/csr.js';
import { nameConstraints, writeConstrainedCaDir } from '../../support/constrained-ca.js';

const CONFIG = `
trustDomain: cluster.local
auth:
  clusters:
    - name: Kubernetes
      tokenReview: {}
    - name: east
      trustDomain: east.example
issuers:
  - name: gateways-ca
    dir: gateways-ca
policy:
  rules:
    - name: deny-kube-system
      match:
        namespaces: [kube-system, "team-*"]
      deny: kube-system workloads get certificates from istiod
    - name: gateways
      match: { namespaces: [istio-ingress], serviceAccounts: [istio-ingressgateway] }
      lifetime: { default: 12h, min: 1h, max: 48h, aboveMax: clamp }
      keys: [ { type: ECDSA, minSize: 256 }, { type: RSA, minSize: 3072 } ]
      extraSans:
        dns: ["*.{namespace}.svc.cluster.local", "{serviceAccount}.example.com"]
        ip: [10.0.0.0/8]
      issuer: gateways-ca
  default:
    lifetime: { default: 24h, max: 90d }
`;

const GW = ['--ns', 'istio-ingress', '--sa', 'istio-ingressgateway'];

let dir: string;
let config: string;
let n = 0;
let log: MockInstance<typeof console.log>;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'meshcert-policy-cli-'));
  config = file('meshcert.yaml', CONFIG);
  // The gateways rule's CA: explain checks the names it allows against its name constraints.
  await initCaDir({ dir: join(dir, 'gateways-ca') });
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});
beforeEach(() => {
  log = vi.spyOn(console, 'log').mockImplementation(() => {});
});
afterEach(() => {
  log.mockRestore();
});

function file(name: string, text: string): string {
  const path = join(dir, `${++n}-${name}`);
  writeFileSync(path, text);
  return path;
}

function stdout(): string {
  return log.mock.calls.map((c) => c.join(' ')).join('\n');
}

async function runJson(args: string[]): Promise<{ code: number; out: PolicyExplainOutput }> {
  const code = await policyCommand(['explain', '--config', config, '--json', ...args]);
  return { code, out: JSON.parse(stdout()) as PolicyExplainOutput };
}

describe('meshcert policy explain and the signing CA', () => {
  const CA_CONFIG = `
trustDomain: cluster.local
auth:
  clusters:
    - name: Kubernetes
      tokenReview: {}
issuers:
  - name: short-ca
    dir: short-ca
  - name: old-ca
    dir: old-ca
policy:
  rules:
    - name: short
      match: { namespaces: [short] }
      lifetime: { default: 10d, max: 30d }
      issuer: short-ca
    - name: old
      match: { namespaces: [old] }
      issuer: old-ca
`;
  let caConfig: string;
  beforeAll(async () => {
    caConfig = file('ca-ends.yaml', CA_CONFIG);
    // An intermediate that ends in 3 days, and one that ended a year ago (made two years ago).
    await initCaDir({ dir: join(dir, 'short-ca'), intermediateLifetimeMs: 3 * 86_400_000 });
    await initCaDir({ dir: join(dir, 'old-ca'), now: new Date(Date.now() - 2 * 365 * 86_400_000) });
  });

  it("cuts the lifetime short at the signing chain's end, as the server does, and says so", async () => {
    expect(await policyCommand(['explain', '--config', caConfig, '--ns', 'short', '--sa', 'w', '--ttl', '0', '--json'])).toBe(0);
    const out = JSON.parse(stdout()) as PolicyExplainOutput;
    expect(out.decision).toMatchObject({ allowed: true, ttlSeconds: 10 * 86_400 });
    expect(out.ttlSeconds).toBeGreaterThan(3 * 86_400 - 120);
    expect(out.ttlSeconds).toBeLessThanOrEqual(3 * 86_400);
    expect(Date.parse(out.caEnd!)).toBeGreaterThan(Date.now() + out.ttlSeconds! * 1000 - 2000);
    log.mockClear();
    expect(await policyCommand(['explain', '--config', caConfig, '--ns', 'short', '--sa', 'w', '--ttl', '20d'])).toBe(0);
    expect(stdout()).toMatch(/^lifetime: {2}2d\d*h?\d*m?\d*s?|^lifetime: {2}\d+s/m);
    expect(stdout()).toMatch(/, cut short at the signing CA's end \d{4}-.*; the policy gives 20d \(as requested\)$/m);
    // --no-ca: the policy alone.
    log.mockClear();
    expect(await policyCommand(['explain', '--config', caConfig, '--ns', 'short', '--sa', 'w', '--ttl', '0', '--no-ca', '--json'])).toBe(0);
    expect(JSON.parse(stdout())).toMatchObject({ ttlSeconds: 10 * 86_400 });
  });

  it('warns that the lifetime was not cut at the CA\'s end when the CA is there but does not load (serve refuses it too), and not when its files are not at hand', async () => {
    expect(await policyCommand(['explain', '--config', caConfig, '--ns', 'old', '--sa', 'w', '--json'])).toBe(0);
    const out = JSON.parse(stdout()) as PolicyExplainOutput;
    expect(out).toMatchObject({ allowed: true, ttlSeconds: 86_400 });
    expect(out).not.toHaveProperty('caEnd');
    expect(out.warnings).toEqual([expect.stringMatching(/^the CA "old-ca" could not be loaded, so the lifetime is the policy's, not cut short at the CA's end \(serve refuses a CA it cannot load\): issuer "old-ca" \(.*\): CA certificate .* expired on /)]);
    log.mockClear();
    const absent = file('absent.yaml', CA_CONFIG.replace('dir: old-ca', 'dir: not-made-yet'));
    expect(await policyCommand(['explain', '--config', absent, '--ns', 'old', '--sa', 'w', '--json'])).toBe(0);
    expect((JSON.parse(stdout()) as PolicyExplainOutput).warnings).toEqual([]);
  });
});

describe('meshcert policy explain (text)', () => {
  it('shows the rule, decision, lifetime, SANs, issuer and the rules tried for an allowed request', async () => {
    const code = await policyCommand(['explain', '--config', config, ...GW, '--key', 'ec256', '--dns', 'gw.istio-ingress.svc.cluster.local']);
    expect(code).toBe(0);
    expect(stdout()).toBe(
      [
        'policy explain for spiffe://cluster.local/ns/istio-ingress/sa/istio-ingressgateway',
        // Without --ttl, the 24h istio-agent and ztunnel ask for.
        '  cluster Kubernetes, key ECDSA P-256, lifetime 1d, DNS gw.istio-ingress.svc.cluster.local, IP none, not impersonated, authenticated by token',
        '',
        'rule:      gateways',
        'decision:  allow',
        'lifetime:  1d (as requested)',
        'SANs:      URI:spiffe://cluster.local/ns/istio-ingress/sa/istio-ingressgateway, DNS:gw.istio-ingress.svc.cluster.local',
        'issuer:    gateways-ca',
        '',
        'rules tried:',
        '  no match  deny-kube-system: namespace "istio-ingress" matches none of kube-system, team-*',
        '  match     gateways: namespace is "istio-ingress"; service account is "istio-ingressgateway"',
      ].join('\n'),
    );
  });

  it('shows a deny with its code and reason, and exits 1', async () => {
    const code = await policyCommand(['explain', '--config', config, '--ns', 'team-a', '--sa', 'web']);
    expect(code).toBe(1);
    expect(stdout()).toContain('rule:      deny-kube-system\ndecision:  deny (POLICY_DENIED): kube-system workloads get certificates from istiod');
    expect(stdout()).toContain('  match     deny-kube-system: namespace "team-a" matches "team-*"');
  });

  it.each<[string, string[], string]>([
    ['a clamped lifetime', ['--ttl', '100h'], 'lifetime:  2d (clamped to the maximum; requested 100h)'],
    ['a lifetime raised to the minimum', ['--ttl', '10m'], 'lifetime:  1h (raised to the minimum; requested 10m)'],
    ['a lifetime within bounds', ['--ttl', '7200'], 'lifetime:  2h (as requested)'],
    ['a zero lifetime', ['--ttl', '0'], "lifetime:  12h (the rule's default; no lifetime requested)"],
  ])('describes %s', async (_name, args, line) => {
    expect(await policyCommand(['explain', '--config', config, ...GW, '--key', 'ec384', ...args])).toBe(0);
    expect(stdout()).toContain(line);
  });

  it('shows the default rule when nothing matches', async () => {
    expect(await policyCommand(['explain', '--config', config, '--ns', 'shop', '--sa', 'web'])).toBe(0);
    expect(stdout()).toContain('rule:      default\ndecision:  allow\nlifetime:  1d');
    expect(stdout()).toContain('  match     default: no rule matched; the default rule applies');
  });

  it('refuses a key the rule does not allow', async () => {
    expect(await policyCommand(['explain', '--config', config, ...GW])).toBe(1);
    expect(stdout()).toContain(
      'decision:  deny (CSR_UNSUPPORTED_KEY): rule "gateways" allows only ECDSA >= 256 bits or RSA >= 3072 bits; the CSR has an RSA 2048-bit key',
    );
  });
});

describe('meshcert policy explain --json', () => {
  it('prints the request, decision, SANs and trace', async () => {
    const { code, out } = await runJson([...GW, '--key', 'rsa4096', '--dns', 'gw.istio-ingress.svc.cluster.local,Istio-IngressGateway.example.com', '--ip', '10.1.2.3', '--ttl', '24h']);
    expect(code).toBe(0);
    expect(out).toEqual<PolicyExplainOutput>({
      identity: 'spiffe://cluster.local/ns/istio-ingress/sa/istio-ingressgateway',
      request: {
        trustDomain: 'cluster.local',
        cluster: 'Kubernetes',
        namespace: 'istio-ingress',
        serviceAccount: 'istio-ingressgateway',
        impersonated: false,
        authenticatedBy: 'token',
        key: { algorithm: 'RSA', size: 4096 },
        requestedTtlSeconds: 86_400,
        dnsNames: ['gw.istio-ingress.svc.cluster.local', 'Istio-IngressGateway.example.com'],
        ipAddresses: ['10.1.2.3'],
        emails: [],
      },
      allowed: true,
      rule: 'gateways',
      decision: {
        allowed: true,
        rule: 'gateways',
        ttlSeconds: 86_400,
        ttlClamped: false,
        dnsNames: ['gw.istio-ingress.svc.cluster.local', 'istio-ingressgateway.example.com'],
        ipAddresses: ['10.1.2.3'],
        issuer: 'gateways-ca',
      },
      sans: {
        uris: ['spiffe://cluster.local/ns/istio-ingress/sa/istio-ingressgateway'],
        dnsNames: ['gw.istio-ingress.svc.cluster.local', 'istio-ingressgateway.example.com'],
        ipAddresses: ['10.1.2.3'],
      },
      // gateways-ca has no name constraints: it certifies them; it ends in a year, after the leaf.
      caRefusal: null,
      ttlSeconds: 86_400,
      caEnd: expect.stringMatching(/^\d{4}-\d\d-\d\dT/) as unknown as string,
      trace: [
        { rule: 'deny-kube-system', matched: false, why: 'namespace "istio-ingress" matches none of kube-system, team-*' },
        { rule: 'gateways', matched: true, why: 'namespace is "istio-ingress"; service account is "istio-ingressgateway"' },
      ],
      warnings: [],
    });
  });

  it("checks the names the policy allows against the CA's name constraints, as the server does before signing: a refusal is a denial (exit 1)", async () => {
    await writeConstrainedCaDir(join(dir, 'constrained-gateways-ca'), nameConstraints({ uri: ['cluster.local'], dns: ['.svc.cluster.local'] }));
    const constrained = file('constrained.yaml', CONFIG.replace('dir: gateways-ca', 'dir: constrained-gateways-ca'));
    const explain = (args: string[]) => policyCommand(['explain', '--config', constrained, ...GW, '--key', 'ec256', ...args]);
    expect(await explain(['--dns', 'gw.istio-ingress.svc.cluster.local'])).toBe(0);
    log.mockClear();
    expect(await explain(['--dns', 'istio-ingressgateway.example.com'])).toBe(1);
    expect(stdout()).toContain(
      'rule:      gateways\ndecision:  deny (CSR_FORBIDDEN_EXTENSION): the policy allows it, but the signing CA "gateways-ca" cannot certify its names: "CN=constrained intermediate" has name constraints that exclude DNS name istio-ingressgateway.example.com (permitted only: ".svc.cluster.local")',
    );
    log.mockClear();
    expect(await explain(['--dns', 'istio-ingressgateway.example.com', '--json'])).toBe(1);
    expect(JSON.parse(stdout())).toMatchObject({ allowed: false, sans: null, decision: { allowed: true, rule: 'gateways' }, caRefusal: expect.stringMatching(/exclude DNS name istio-ingressgateway\.example\.com/) });
    // --no-ca: the policy alone, as before the CA is at hand.
    log.mockClear();
    expect(await explain(['--dns', 'istio-ingressgateway.example.com', '--no-ca', '--json'])).toBe(0);
    expect(JSON.parse(stdout())).not.toHaveProperty('caRefusal');
    // A caller of a trust domain the CA leaves out is refused with or without names, as the server
    // refuses it (ISSUER_UNAVAILABLE), before its names.
    for (const names of [[], ['--dns', 'gw.istio-ingress.svc.cluster.local']]) {
      log.mockClear();
      expect(await explain(['--cluster', 'east', ...names])).toBe(1);
      expect(stdout()).toMatch(/^decision: {2}deny \(ISSUER_UNAVAILABLE\): the policy allows it, but the signing CA "gateways-ca" \(rule "gateways"\) cannot certify trust domain east\.example: .*exclude spiffe:\/\/east\.example\/ns\/istio-ingress\/sa\/istio-ingressgateway.*; an operator must sign this trust domain with a CA that permits it \(the server answers UNAVAILABLE, which clients retry, until then\)$/m);
      log.mockClear();
      expect(await explain(['--cluster', 'east', '--json', ...names])).toBe(1);
      const out = JSON.parse(stdout()) as PolicyExplainOutput;
      expect(out).toMatchObject({ allowed: false, sans: null, decision: { allowed: true, rule: 'gateways' }, issuerRefusal: expect.stringMatching(/cannot certify trust domain east\.example/) });
      expect(out).not.toHaveProperty('caRefusal');
    }
  });

  it('says when the CA cannot be read, so its name constraints went unchecked, and judges by the policy', async () => {
    const missing = file('missing-ca.yaml', CONFIG.replace('dir: gateways-ca', 'dir: no-such-ca'));
    const code = await policyCommand(['explain', '--config', missing, '--json', ...GW, '--key', 'ec256', '--dns', 'gw.istio-ingress.svc.cluster.local']);
    expect(code).toBe(0);
    const out = JSON.parse(stdout()) as PolicyExplainOutput;
    expect(out.caRefusal).toBeUndefined();
    expect(out.warnings).toEqual([expect.stringMatching(/^the CA "gateways-ca" could not be loaded, so its name constraints were not checked \(--no-ca: the policy alone\): issuer "gateways-ca" \(.*no-such-ca\): /)]);
    // The default CA, in a directory that holds none: said so, and nothing is created there.
    log.mockClear();
    const defaultSans = CONFIG.replace('    lifetime: { default: 24h, max: 90d }\n', '    lifetime: { default: 24h, max: 90d }\n    extraSans: { dns: ["{namespace}.example.org"] }\n');
    const viaDefault = file('default-ca.yaml', `${defaultSans}ca:\n  dir: ${join(dir, 'empty-default-ca')}\n`);
    expect(await policyCommand(['explain', '--config', viaDefault, '--json', '--ns', 'web', '--sa', 'api', '--dns', 'web.example.org'])).toBe(0);
    expect((JSON.parse(stdout()) as PolicyExplainOutput).warnings).toEqual([`the CA "default" could not be loaded, so its name constraints were not checked (--no-ca: the policy alone): CA directory ${join(dir, 'empty-default-ca')} holds no CA`]);
    expect(existsSync(join(dir, 'empty-default-ca'))).toBe(false);
  });

  it.each(['10.1.2.999', '10.1.2', 'gw.example.com'])('refuses an --ip that is not an address (%s) as a usage error, not a policy denial', async (ip) => {
    await expect(policyCommand(['explain', '--config', config, ...GW, '--key', 'ec256', '--ip', `10.0.0.1,${ip}`])).rejects.toThrow(new UsageError(`--ip ${ip} is not an IPv4 or IPv6 address`));
  });

  it('refuses an --ip with a zone index as a usage error: no certificate can name it', async () => {
    await expect(policyCommand(['explain', '--config', config, ...GW, '--key', 'ec256', '--ip', 'fe80::1%eth0'])).rejects.toThrow(new UsageError('--ip fe80::1%eth0: a zone index (%...) is not part of an address a certificate can name'));
  });

  it('prints a denial without SANs and exits 1', async () => {
    const { code, out } = await runJson([...GW, '--key', 'ec256', '--ip', '192.168.0.1']);
    expect(code).toBe(1);
    expect(out.allowed).toBe(false);
    expect(out.sans).toBeNull();
    expect(out.decision).toEqual({
      allowed: false,
      rule: 'gateways',
      code: 'CSR_FORBIDDEN_EXTENSION',
      reason: 'the CSR requests IP address "192.168.0.1", which rule "gateways" does not allow; it allows 10.0.0.0/8',
    });
  });

  it('takes the trust domain of the chosen cluster from the config, and --impersonated', async () => {
    const { out } = await runJson(['--ns', 'a', '--sa', 'b', '--cluster', 'east', '--impersonated']);
    expect(out.identity).toBe('spiffe://east.example/ns/a/sa/b');
    expect(out.request).toMatchObject({ cluster: 'east', trustDomain: 'east.example', impersonated: true });
  });

  it('denies --impersonated as node authorization does: with ambient mode off, and for a node proxy of another cluster than the default (IMPERSONATION_DENIED)', async () => {
    const off = await runJson(['--ns', 'a', '--sa', 'b', '--impersonated']);
    expect(off.code).toBe(1);
    expect(off.out).toMatchObject({ allowed: false, sans: null, decision: { allowed: true }, impersonationRefusal: expect.stringMatching(/ambient mode is off/) });
    const ambient = file('ambient.yaml', `${CONFIG}ambient: { enabled: true }\n`);
    log.mockClear();
    expect(await policyCommand(['explain', '--config', ambient, '--ns', 'a', '--sa', 'b', '--impersonated', '--json'])).toBe(0);
    expect(JSON.parse(stdout())).not.toHaveProperty('impersonationRefusal');
    log.mockClear();
    expect(await policyCommand(['explain', '--config', ambient, '--ns', 'a', '--sa', 'b', '--impersonated', '--cluster', 'east'])).toBe(1);
    expect(stdout()).toMatch(/^decision: {2}deny \(IMPERSONATION_DENIED\): the caller authenticated in cluster "east", but this CA checks node proxies only in cluster "Kubernetes", whose pods it watches; the server refuses the request before the policy/m);
    // The identity asked for must be in the default cluster's trust domain; its names are the workload's, not a token's.
    log.mockClear();
    expect(await policyCommand(['explain', '--config', ambient, '--ns', 'a', '--sa', 'b', '--impersonated', '--trust-domain', 'other.td', '--json'])).toBe(1);
    expect(JSON.parse(stdout())).toMatchObject({ impersonationRefusal: 'ImpersonatedIdentity is in trust domain other.td, but this CA issues for cluster.local' });
    log.mockClear();
    expect(await policyCommand(['explain', '--config', ambient, '--ns', 'Upper', '--sa', 'b', '--impersonated', '--json'])).toBe(0);
    expect(JSON.parse(stdout())).not.toHaveProperty('authRefusal');
  });

  it('denies a --cluster the CA does not serve, as authentication does before any rule (AUTH_INVALID), and takes an empty one as the default', async () => {
    const { code, out } = await runJson(['--ns', 'a', '--sa', 'b', '--cluster', 'nope']);
    expect(code).toBe(1);
    expect(out).toMatchObject({ allowed: false, sans: null, decision: { allowed: true }, clusterRefusal: expect.stringMatching(/^unknown cluster "nope" in the clusterid header \(this CA serves "[^"]+"(, "[^"]+")*\)$/) });
    log.mockClear();
    expect(await policyCommand(['explain', '--config', config, '--ns', 'a', '--sa', 'b', '--cluster', 'nope'])).toBe(1);
    expect(stdout()).toMatch(/decision: {2}deny \(AUTH_INVALID\): unknown cluster "nope" .*; the server refuses the caller before the policy \(the policy would allow\)/);
    log.mockClear();
    const empty = await runJson(['--ns', 'a', '--sa', 'b', '--cluster', '']);
    expect(empty.code).toBe(0);
    expect(empty.out).not.toHaveProperty('clusterRefusal');
  });

  it('judges a caller with a client certificate with --client-certificate, as serve does', async () => {
    const renewals = `    - name: vm-renewals
      match: { authenticatedBy: client-certificate, namespaces: ["vm-*"] }
    - name: no-other-renewals
      match: { authenticatedBy: [client-certificate] }
      deny: renew with a service-account token
`;
    const vms = file('vms.yaml', CONFIG.replace('  default:\n', `${renewals}  default:\n`));
    expect(await policyCommand(['explain', '--config', vms, '--ns', 'web', '--sa', 'b', '--client-certificate', '--json'])).toBe(1);
    const out = JSON.parse(stdout()) as PolicyExplainOutput;
    expect(out.request).toMatchObject({ cluster: 'Kubernetes', authenticatedBy: 'client-certificate' });
    expect(out.warnings).toEqual([]);
    expect(out.decision).toMatchObject({ allowed: false, rule: 'no-other-renewals', reason: 'renew with a service-account token' });
    expect(out.trace.slice(2)).toEqual([
      { rule: 'vm-renewals', matched: false, why: 'namespace "web" matches none of vm-*' },
      { rule: 'no-other-renewals', matched: true, why: 'authenticated with a client certificate' },
    ]);
    log.mockClear();
    expect(await policyCommand(['explain', '--config', vms, '--ns', 'vm-db', '--sa', 'b', '--client-certificate'])).toBe(0);
    expect(stdout()).toContain('not impersonated, authenticated by client certificate');
    // A token caller is not matched by either rule.
    log.mockClear();
    expect(await policyCommand(['explain', '--config', vms, '--ns', 'web', '--sa', 'b', '--json'])).toBe(0);
    const byToken = JSON.parse(stdout()) as PolicyExplainOutput;
    expect(byToken.trace.slice(2, 4).map((t) => t.why)).toEqual([
      'namespace "web" matches none of vm-*',
      'the caller authenticated with a token, and the rule requires authenticatedBy: client-certificate',
    ]);
  });

  it('warns that the server never judges a client-certificate caller when auth.clientCertificates is off', async () => {
    const off = file('off.yaml', CONFIG.replace('auth:\n', 'auth:\n  clientCertificates: false\n'));
    expect(await policyCommand(['explain', '--config', off, '--ns', 'a', '--sa', 'b', '--client-certificate', '--json'])).toBe(0);
    expect((JSON.parse(stdout()) as PolicyExplainOutput).warnings).toEqual(['auth.clientCertificates is off: the server accepts no client certificate, so it never judges such a caller']);
  });

  it("takes a token caller's --trust-domain as the one its CSR asks for, as `request --trust-domain` asks: a foreign one is refused, an alias judged by both domains' rules", async () => {
    // The token authenticates in its cluster's trust domain (cluster.local) whatever is asked for.
    const { code, out } = await runJson(['--ns', 'a', '--sa', 'b', '--trust-domain', 'other.td']);
    expect(code).toBe(1);
    expect(out).toMatchObject({ allowed: false, csrRefusal: { code: 'IDENTITY_MISMATCH' } });
    log.mockClear();
    const aliased = file('aliases-td.yaml', `${CONFIG.replace('policy:\n  rules:\n', 'policy:\n  rules:\n    - name: no-x-here\n      match: { trustDomains: [cluster.local], namespaces: [x] }\n      deny: x is not allowed in cluster.local\n')}trustDomainAliases: [old.local]\n`);
    expect(await policyCommand(['explain', '--config', aliased, '--ns', 'x', '--sa', 'b', '--trust-domain', 'old.local', '--json'])).toBe(1);
    const a = JSON.parse(stdout()) as PolicyExplainOutput;
    expect(a.identity).toBe('spiffe://old.local/ns/x/sa/b');
    expect(a.decision).toMatchObject({ allowed: false, rule: 'no-x-here' });
    log.mockClear();
    expect(await policyCommand(['explain', '--config', aliased, '--ns', 'y', '--sa', 'b', '--trust-domain', 'old.local', '--json'])).toBe(0);
    expect((JSON.parse(stdout()) as PolicyExplainOutput).identity).toBe('spiffe://old.local/ns/y/sa/b');
    // A client certificate's trust domain is the certificate's own: --trust-domain names it.
    log.mockClear();
    const cert = await runJson(['--ns', 'a', '--sa', 'b', '--client-certificate', '--trust-domain', 'cluster.local']);
    expect(cert.out.identity).toBe('spiffe://cluster.local/ns/a/sa/b');
  });

  it('takes, as serve does, the only configured cluster for an empty clusterid when auth.defaultCluster is not one', async () => {
    const single = file('single.yaml', 'auth:\n  clusters:\n    - name: prod\n      trustDomain: prod.example\n      tokenReview: {}\n');
    expect(await policyCommand(['explain', '--config', single, '--ns', 'a', '--sa', 'b', '--json'])).toBe(0);
    const out = JSON.parse(stdout()) as PolicyExplainOutput;
    expect(out.request).toMatchObject({ cluster: 'prod', trustDomain: 'prod.example' });
    expect(out.identity).toBe('spiffe://prod.example/ns/a/sa/b');
  });

  it('judges an IPv4-mapped --ip as the IPv4 address it maps, as the server reads it from a CSR', async () => {
    const { out } = await runJson([...GW, '--key', 'ec256', '--ip', '::ffff:10.1.2.3,::FFFF:a01:204,fd00::1']);
    expect(out.request.ipAddresses).toEqual(['10.1.2.3', '10.1.2.4', 'fd00::1']);
  });

  it('uses the built-in default policy for a config without a policy section', async () => {
    const bare = file('bare.yaml', 'trustDomain: bare.example\nauth:\n  defaultCluster: main\n');
    expect(await policyCommand(['explain', '--config', bare, '--ns', 'a', '--sa', 'b', '--json'])).toBe(0);
    const out = JSON.parse(stdout()) as PolicyExplainOutput;
    expect(out.identity).toBe('spiffe://bare.example/ns/a/sa/b');
    expect(out.request.cluster).toBe('main');
    expect(out.decision).toEqual({ allowed: true, rule: 'default', ttlSeconds: 86_400, ttlClamped: false, dnsNames: [], ipAddresses: [], issuer: 'default' });
  });
});

describe('meshcert policy explain --csr', () => {
  it('takes the identity, key and SANs from the CSR', async () => {
    const csr = await makeCsr({ key: 'ec256', uris: ['spiffe://cluster.local/ns/istio-ingress/sa/istio-ingressgateway'], dns: ['x.istio-ingress.svc.cluster.local'], ips: ['10.9.8.7'] });
    const { code, out } = await runJson(['--csr', file('gw.pem', csr.pem)]);
    expect(code).toBe(0);
    expect(out.identity).toBe('spiffe://cluster.local/ns/istio-ingress/sa/istio-ingressgateway');
    expect(out.request).toMatchObject({ key: { algorithm: 'ECDSA', size: 256, curve: 'P-256' }, dnsNames: ['x.istio-ingress.svc.cluster.local'], ipAddresses: ['10.9.8.7'] });
    expect(out.decision).toMatchObject({ allowed: true, rule: 'gateways', dnsNames: ['x.istio-ingress.svc.cluster.local'], ipAddresses: ['10.9.8.7'] });
    expect(out.warnings).toEqual([]);
  });

  it('refuses an RSA 2048 CSR for a rule that needs 3072', async () => {
    const csr = await makeCsr({ key: 'rsa2048', uris: ['spiffe://cluster.local/ns/istio-ingress/sa/istio-ingressgateway'] });
    const { code, out } = await runJson(['--csr', file('rsa.pem', csr.pem)]);
    expect(code).toBe(1);
    expect(out.decision).toMatchObject({ allowed: false, code: 'CSR_UNSUPPORTED_KEY' });
  });

  it('refuses a CSR with an email SAN', async () => {
    const csr = await makeCsr({ uris: [], emails: ['ops@example.com'] });
    const { code, out } = await runJson(['--csr', file('email.pem', csr.pem), '--ns', 'shop', '--sa', 'web']);
    expect(code).toBe(1);
    expect(out.request.emails).toEqual(['ops@example.com']);
    expect(out.decision).toMatchObject({ allowed: false, rule: 'default', code: 'CSR_FORBIDDEN_EXTENSION' });
  });

  it('denies, as the server does before the policy, a CSR naming another identity than the flags (IDENTITY_MISMATCH), and one with two URI SANs', async () => {
    const csr = await makeCsr({ uris: ['spiffe://cluster.local/ns/shop/sa/web'] });
    const { code, out } = await runJson(['--csr', file('other.pem', csr.pem), '--ns', 'shop', '--sa', 'api']);
    expect(code).toBe(1);
    expect(out).toMatchObject({
      identity: 'spiffe://cluster.local/ns/shop/sa/api',
      allowed: false,
      sans: null,
      decision: { allowed: true },
      csrRefusal: { code: 'IDENTITY_MISMATCH', reason: 'the CSR requests identity spiffe://cluster.local/ns/shop/sa/web, but the caller is spiffe://cluster.local/ns/shop/sa/api' },
      warnings: [],
    });
    expect(out).not.toHaveProperty('ttlSeconds');
    log.mockClear();
    const two = await makeCsr({ uris: ['spiffe://cluster.local/ns/shop/sa/web', 'spiffe://cluster.local/ns/shop/sa/api'] });
    expect(await policyCommand(['explain', '--config', config, '--csr', file('two.pem', two.pem), '--ns', 'shop', '--sa', 'web'])).toBe(1);
    expect(stdout()).toMatch(/^decision: {2}deny \(IDENTITY_MISMATCH\): the CSR requests more than one URI SAN.*; the server refuses the CSR before the policy \(the policy would allow\)$/m);
  });

  it("judges an alias by its own trust domain's rules and the caller's, as serve does", async () => {
    const aliased = file('aliases-deny.yaml', `${CONFIG.replace('policy:\n  rules:\n', 'policy:\n  rules:\n    - name: no-secrets-here\n      match: { trustDomains: [cluster.local], namespaces: [secrets] }\n      deny: not for cluster.local secrets\n')}trustDomainAliases: [old.example]\n`);
    const alias = await makeCsr({ uris: ['spiffe://old.example/ns/secrets/sa/vault'] });
    expect(await policyCommand(['explain', '--config', aliased, '--csr', file('alias-secrets.pem', alias.pem), '--json'])).toBe(1);
    const out = JSON.parse(stdout()) as PolicyExplainOutput;
    expect(out.request.trustDomain).toBe('old.example');
    expect(out.decision).toMatchObject({ allowed: false, rule: 'no-secrets-here' });
    expect(out.warnings).toEqual(["the alias is allowed in old.example, but the rules for the caller's own trust domain cluster.local refuse it"]);
  });

  it("judges the caller's trust domain, not one the CSR names: a foreign one is what the server refuses, an alias is issued under the caller's rules", async () => {
    const foreign = await makeCsr({ uris: ['spiffe://evil.example/ns/shop/sa/web'] });
    const { out } = await runJson(['--csr', file('evil.pem', foreign.pem)]);
    expect(out.request.trustDomain).toBe('cluster.local');
    expect(out).toMatchObject({ allowed: false, csrRefusal: { code: 'IDENTITY_MISMATCH' } });

    const aliased = file('aliases.yaml', `${CONFIG}trustDomainAliases: [old.example]\n`);
    const alias = await makeCsr({ uris: ['spiffe://old.example/ns/kube-system/sa/coredns'] });
    log.mockClear();
    expect(await policyCommand(['explain', '--config', aliased, '--csr', file('alias.pem', alias.pem), '--json'])).toBe(1);
    const a = JSON.parse(stdout()) as PolicyExplainOutput;
    expect(a.identity).toBe('spiffe://old.example/ns/kube-system/sa/coredns');
    expect(a.warnings).toEqual([]);
    expect(a.request.trustDomain).toBe('old.example');
    expect(a.decision).toMatchObject({ allowed: false, rule: 'deny-kube-system' });
  });

  it('denies a CA request as the server does, before the policy (CSR_FORBIDDEN_EXTENSION)', async () => {
    const csr = await makeCsr({ uris: ['spiffe://cluster.local/ns/shop/sa/web'], ca: true });
    expect(await policyCommand(['explain', '--config', config, '--csr', file('ca.pem', csr.pem)])).toBe(1);
    expect(stdout()).toMatch(/^decision: {2}deny \(CSR_FORBIDDEN_EXTENSION\): the CSR asks for a CA certificate .*; the server refuses the CSR before the policy \(the policy would allow\)$/m);
  });

  it('denies a namespace or service account that is not a Kubernetes name, as token and client-certificate authentication do (AUTH_INVALID)', async () => {
    for (const [ns, sa] of [['Upper', 'web'], ['a'.repeat(64), 'web'], ['shop', 'x'.repeat(254)], ['shop', 'Web']]) {
      log.mockClear();
      const { code, out } = await runJson(['--ns', ns!, '--sa', sa!]);
      expect(code, `${ns}/${sa}`).toBe(1);
      expect(out).toMatchObject({ allowed: false, sans: null, decision: { allowed: true }, authRefusal: expect.stringMatching(/^token names an invalid Kubernetes namespace or service account/) });
    }
    // The longest valid names are served.
    log.mockClear();
    expect((await runJson(['--ns', 'a'.repeat(63), '--sa', `${'x'.repeat(63)}.${'y'.repeat(63)}.${'z'.repeat(63)}.${'w'.repeat(61)}`])).code).toBe(0);
    log.mockClear();
    expect(await policyCommand(['explain', '--config', config, '--ns', 'Upper', '--sa', 'web'])).toBe(1);
    expect(stdout()).toMatch(/^decision: {2}deny \(AUTH_INVALID\): token names an invalid Kubernetes namespace or service account .*; the server refuses the caller before the policy/m);
    log.mockClear();
    // The client-certificate authenticator refuses such a SAN too.
    for (const [ns, sa] of [['Upper', 'web'], ['shop', 'a..b']]) {
      log.mockClear();
      const cert = await runJson(['--ns', ns!, '--sa', sa!, '--client-certificate']);
      expect(cert.code, `${ns}/${sa}`).toBe(1);
      expect(cert.out).toMatchObject({ allowed: false, authRefusal: `client certificate URI SAN spiffe://cluster.local/ns/${ns}/sa/${sa} is not an Istio workload identity (spiffe://<trust domain>/ns/<namespace>/sa/<service account>, with Kubernetes names)` });
    }
    // A client certificate in a trust domain this CA does not serve does not authenticate.
    log.mockClear();
    const foreign = await runJson(['--ns', 'shop', '--sa', 'web', '--client-certificate', '--trust-domain', 'other.td']);
    expect(foreign.code).toBe(1);
    expect(foreign.out).toMatchObject({ allowed: false, authRefusal: 'client certificate is in trust domain other.td, which this CA does not serve (cluster.local, east.example)' });
  });

  it('needs --ns and --sa when the CSR has no workload identity', async () => {
    const csr = await makeCsr({ uris: [] });
    await expect(policyCommand(['explain', '--config', config, '--csr', file('anon.pem', csr.pem)])).rejects.toThrow(
      'policy explain needs --ns and --sa (or --csr with a workload SPIFFE ID)',
    );
  });
});

describe('meshcert policy: usage and config errors', () => {
  it.each<[string, string[], string]>([
    ['no subcommand', [], 'usage: meshcert policy explain'],
    ['an unknown subcommand', ['check'], 'usage: meshcert policy explain'],
    ['no --config', ['explain', '--ns', 'a', '--sa', 'b'], 'policy explain needs --config FILE'],
    ['no --ns', ['explain', '--config', 'x.yaml', '--sa', 'b'], 'policy explain needs --ns and --sa'],
    ['an unknown key type', ['explain', '--config', 'x.yaml', '--ns', 'a', '--sa', 'b', '--key', 'ec521'], '--key must be one of rsa2048, rsa3072, rsa4096, ec256, ec384'],
    // An Object.prototype name is no key type either: it must not reach the policy as an "undefined undefined-bit key" and exit 1 (denied).
    ...['toString', 'constructor', '__proto__', 'hasOwnProperty'].map((k): [string, string[], string] => [`--key ${k}`, ['explain', '--config', 'x.yaml', '--ns', 'a', '--sa', 'b', '--key', k], '--key must be one of rsa2048, rsa3072, rsa4096, ec256, ec384']),
    ['a bad --ttl', ['explain', '--config', 'x.yaml', '--ns', 'a', '--sa', 'b', '--ttl', '2w'], '--ttl: invalid duration "2w"'],
    ['a --ttl that is not whole seconds', ['explain', '--config', 'x.yaml', '--ns', 'a', '--sa', 'b', '--ttl', '1.4s'], '--ttl: invalid duration "1.4s": a lifetime is a whole number of seconds'],
    ['--dns with --csr', ['explain', '--config', 'x.yaml', '--csr', 'c.pem', '--dns', 'a'], '--key, --dns and --ip cannot be used with --csr'],
    ['an unknown flag', ['explain', '--config', 'x.yaml', '--namespace', 'a'], "Unknown option '--namespace'"],
    ['--impersonated with --client-certificate', ['explain', '--config', 'x.yaml', '--ns', 'a', '--sa', 'b', '--client-certificate', '--impersonated'], 'the server refuses impersonation by a client certificate'],
    ['--cluster with --client-certificate', ['explain', '--config', 'x.yaml', '--ns', 'a', '--sa', 'b', '--client-certificate', '--cluster', 'east'], 'the server judges a client-certificate caller as the default cluster'],
    ['an invalid namespace', ['explain', '--config', '@CONFIG', '--ns', 'a/b', '--sa', 'b'], 'namespace and service account must each be one SPIFFE ID path segment'],
    ['an unreadable CSR', ['explain', '--config', '@CONFIG', '--csr', '/nonexistent/csr.pem'], 'cannot read the CSR /nonexistent/csr.pem: ENOENT'],
  ])('throws a UsageError for %s', async (_name, args, message) => {
    const p = policyCommand(args.map((a) => (a === '@CONFIG' ? config : a)));
    await expect(p).rejects.toThrow(UsageError);
    await expect(p).rejects.toThrow(message);
  });

  it('throws a UsageError for a CSR file that is not a CSR', async () => {
    const p = policyCommand(['explain', '--config', config, '--csr', file('junk.pem', 'not a csr')]);
    await expect(p).rejects.toThrow(UsageError);
    await expect(p).rejects.toThrow('(CSR_MALFORMED)');
  });

  it('exits 3, not 1 (denied), for an invalid or missing config, naming the path of the problem', async () => {
    const bad = file('bad.yaml', 'policy:\n  rules:\n    - name: r\n      match: { namespaces: ["[a]"] }\n');
    const errors: string[] = [];
    const spy = vi.spyOn(console, 'error').mockImplementation((m: unknown) => void errors.push(String(m)));
    try {
      expect(await policyCommand(['explain', '--config', bad, '--ns', 'a', '--sa', 'b'])).toBe(3);
      expect(errors.join('\n')).toContain('policy.rules.0.match.namespaces.0: pattern may use only * and ? as wildcards');
      expect(await policyCommand(['explain', '--config', join(dirname(bad), 'missing.yaml'), '--ns', 'a', '--sa', 'b'])).toBe(3);
      expect(errors.join('\n')).toContain('cannot read config file');
    } finally {
      spy.mockRestore();
    }
  });
});
