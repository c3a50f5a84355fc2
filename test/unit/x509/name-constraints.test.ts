/**
 * meshcert's verdict on a leaf's names under a CA's name constraints, against Go's crypto/x509
 * (test/interop/go-verify) and `openssl verify` on the same chain. The leaves are built with
 * @peculiar/x509, so the verifiers judge names meshcert did not encode.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { explicitTag, implicitPrimitive, sequence } from '../../../src/x509/der.js';
import { ipToBytes } from '../../../src/net/ip-text.js';
import { x509 } from '../../fixtures/csr.js';
import { pathConstraintProblems, pathNameConstraints, pathRangeRefusals, type PathCert } from '../../../src/x509/path-constraints.js';
import { caCert, leafCert, nameConstraints, type CaNode, type Subtrees } from '../../support/constrained-ca.js';
import { buildGoVerifier, goVerifierUnavailable, refusesWildcardsOverExclusions, type GoVerifier } from '../../support/go-verify.js';

const URI = 'spiffe://cluster.local/ns/a/sa/b';

type Verdict = 'ok' | 'refused';

interface Case {
  readonly what: string;
  readonly permitted?: Subtrees;
  readonly excluded?: Subtrees;
  readonly critical?: boolean;
  /** The constraints on the root instead of the intermediate (Go checks them there too). */
  readonly onRoot?: boolean;
  /** The leaf's URI SANs: URI unless given. */
  readonly uris?: string[];
  readonly dnsNames?: string[];
  readonly ipAddresses?: string[];
  /** meshcert's verdict; Go's and OpenSSL's are the same unless given. */
  readonly ours: Verdict;
  /** 'since-cve-2025-61727': refused by Go releases with that fix, accepted by older ones. */
  readonly go?: Verdict | 'since-cve-2025-61727';
  readonly openssl?: Verdict;
}

const CASES: Case[] = [
  { what: 'DNS: a subdomain of a permitted domain', permitted: { dns: ['example.com'] }, dnsNames: ['a.example.com'], ours: 'ok' },
  { what: 'DNS: the permitted domain itself', permitted: { dns: ['example.com'] }, dnsNames: ['example.com'], ours: 'ok' },
  { what: 'DNS: labels compare case-insensitively', permitted: { dns: ['EXAMPLE.com'] }, dnsNames: ['a.Example.COM'], ours: 'ok' },
  { what: 'DNS: another domain', permitted: { dns: ['example.com'] }, dnsNames: ['example.org'], ours: 'refused' },
  { what: 'DNS: a suffix that is not a label boundary', permitted: { dns: ['example.com'] }, dnsNames: ['badexample.com'], ours: 'refused' },
  { what: 'DNS: one allowed name and one not', permitted: { dns: ['example.com'] }, dnsNames: ['a.example.com', 'a.example.org'], ours: 'refused' },
  { what: 'DNS: ".domain" does not permit the domain itself', permitted: { dns: ['.example.com'] }, dnsNames: ['example.com'], ours: 'refused' },
  { what: 'DNS: ".domain" permits deeper subdomains', permitted: { dns: ['.example.com'] }, dnsNames: ['a.b.example.com'], ours: 'ok' },
  { what: 'DNS: below an excluded subdomain', permitted: { dns: ['example.com'] }, excluded: { dns: ['bad.example.com'] }, dnsNames: ['x.bad.example.com'], ours: 'refused' },
  { what: 'DNS: beside an excluded subdomain', permitted: { dns: ['example.com'] }, excluded: { dns: ['bad.example.com'] }, dnsNames: ['good.example.com'], ours: 'ok' },
  { what: 'DNS: a wildcard under a permitted domain', permitted: { dns: ['example.com'] }, dnsNames: ['*.example.com'], ours: 'ok' },
  // CVE-2025-61727: Go 1.24.11 / 1.25.5 and later refuse it, older Go and OpenSSL accept it.
  { what: 'DNS: a wildcard covering an excluded subdomain', permitted: { dns: ['example.com'] }, excluded: { dns: ['bad.example.com'] }, dnsNames: ['*.example.com'], ours: 'refused', go: 'since-cve-2025-61727', openssl: 'ok' },
  { what: 'DNS: an empty constraint permits every name', permitted: { dns: [''] }, dnsNames: ['a.example.com'], ours: 'ok' },
  { what: 'DNS: constraints on the root apply as on an intermediate', onRoot: true, permitted: { dns: ['example.com'] }, dnsNames: ['a.example.org'], ours: 'refused' },
  { what: 'DNS: a name Go cannot parse (trailing dot) under DNS constraints', permitted: { dns: ['example.com'] }, dnsNames: ['a.example.com.'], ours: 'refused' },
  // Go refuses it under any constraint it reads; OpenSSL checks DNS names against DNS constraints only.
  { what: 'DNS: a name Go cannot parse (trailing dot) under URI constraints only', permitted: { uri: ['cluster.local'] }, dnsNames: ['a.example.com.'], ours: 'refused', openssl: 'ok' },
  { what: 'DNS: only URI constraints (another type) leave DNS names free', permitted: { uri: ['cluster.local'] }, dnsNames: ['anything.example.org'], ours: 'ok' },
  { what: 'DNS and URI permitted together', permitted: { uri: ['cluster.local'], dns: ['example.com'] }, dnsNames: ['a.example.com'], ours: 'ok' },
  { what: 'URI: the permitted host itself', permitted: { uri: ['cluster.local'] }, ours: 'ok' },
  // RFC 5280: a URI constraint without a leading "." names one host. OpenSSL (and BoringSSL, in
  // Envoy) hold to that; Go matches subdomains too. A permitted one is read as the hosts all allow.
  { what: 'URI: a subdomain of a permitted host', permitted: { uri: ['cluster.local'] }, uris: ['spiffe://prod.cluster.local/ns/a/sa/b'], ours: 'refused', go: 'ok' },
  { what: 'URI: ".domain" permits its subdomains', permitted: { uri: ['.cluster.local'] }, uris: ['spiffe://prod.cluster.local/ns/a/sa/b'], ours: 'ok' },
  { what: 'URI: ".domain" does not permit the domain itself', permitted: { uri: ['.cluster.local'] }, ours: 'refused' },
  // ... and an excluded one as the widest reading (Go's): excluded if any verifier excludes it.
  { what: 'URI: a subdomain of an excluded host', excluded: { uri: ['cluster.local'] }, uris: ['spiffe://prod.cluster.local/ns/a/sa/b'], ours: 'refused', openssl: 'ok' },
  { what: 'IP: inside a permitted IPv4 range', permitted: { ip: ['10.0.0.0/8'] }, ipAddresses: ['10.1.2.3'], ours: 'ok' },
  { what: 'IP: outside a permitted IPv4 range', permitted: { ip: ['10.0.0.0/8'] }, ipAddresses: ['192.168.1.1'], ours: 'refused' },
  // 32.1.0.0/16 is 0x2001 as the first octets of 2001:db8::1: only the length tells them apart.
  { what: 'IP: an IPv6 address under IPv4 ranges only', permitted: { ip: ['32.1.0.0/16'] }, ipAddresses: ['2001:db8::1'], ours: 'refused' },
  { what: 'IP: inside an excluded range', excluded: { ip: ['10.0.0.0/8'] }, ipAddresses: ['10.0.0.1'], ours: 'refused' },
  { what: 'IP: outside an excluded range', excluded: { ip: ['10.0.0.0/8'] }, ipAddresses: ['192.168.0.1'], ours: 'ok' },
  { what: 'IP: inside a permitted IPv6 range', permitted: { ip: ['2001:db8::/32'] }, ipAddresses: ['2001:db8::5'], ours: 'ok' },
  { what: 'IP: outside a permitted IPv6 range', permitted: { ip: ['2001:db8::/32'] }, ipAddresses: ['2001:db9::1'], ours: 'refused' },
  { what: 'IP: DNS constraints (another type) leave addresses free', permitted: { dns: ['example.com'] }, ipAddresses: ['10.0.0.1'], ours: 'ok' },
  // Go reads no directoryName constraint: a critical extension holding one refuses every leaf.
  { what: 'critical directoryName constraints (Go does not support them)', permitted: { directoryName: ['O=Example'] }, dnsNames: ['a.example.com'], ours: 'refused', openssl: 'ok' },
  { what: 'non-critical directoryName constraints (Go ignores them)', permitted: { directoryName: ['O=Example'] }, critical: false, dnsNames: ['a.example.com'], ours: 'ok' },
  // Go parses a leaf's names under any CA with the extension, whatever constraints it holds.
  { what: 'non-critical directoryName constraints: a DNS name Go cannot parse is refused all the same', permitted: { directoryName: ['O=Example'] }, critical: false, dnsNames: ['a.example.com.'], ours: 'refused', openssl: 'ok' },
];

const unavailable = goVerifierUnavailable();
let go: GoVerifier | undefined;
let dir: string;
let root: CaNode;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'meshcert-nc-'));
  root = await caCert(undefined, 'CN=nc root');
  if (!unavailable) go = await buildGoVerifier();
}, 300_000);
afterAll(() => {
  go?.remove();
  rmSync(dir, { recursive: true, force: true });
});

function openssl(rootPem: string, chainPem: string, leafPem: string, name: string): Verdict {
  const f = (part: string, pem: string): string => {
    const file = join(dir, `${name}-${part}.pem`);
    writeFileSync(file, pem);
    return file;
  };
  try {
    execFileSync('openssl', ['verify', '-purpose', 'sslclient', '-CAfile', f('root', rootPem), '-untrusted', f('chain', chainPem), f('leaf', leafPem)], { stdio: 'pipe' });
    return 'ok';
  } catch {
    return 'refused';
  }
}

describe('name constraints on DNS names, URIs and IP addresses: meshcert, Go and OpenSSL', () => {
  it.each(CASES.map((c, i) => [c.what, c, i] as const))('%s', async (_what, c, i) => {
    const constraints = nameConstraints(c.permitted ?? {}, c.excluded ?? {}, c.critical ?? true);
    const top = c.onRoot ? await caCert(undefined, `CN=nc root ${i}`, [constraints]) : root;
    const inter = await caCert(top, `CN=nc ${i}`, c.onRoot ? [] : [constraints], 0);
    const uris = c.uris ?? [URI];
    const leaf = await leafCert(inter, { uris, dnsNames: c.dnsNames, ipAddresses: c.ipAddresses });
    const path: PathCert[] = [leaf, inter.cert, top.cert].map((x) => ({ der: new Uint8Array(x.rawData), name: x.subject }));
    const problems = pathConstraintProblems(path, { uris, dnsNames: c.dnsNames ?? [], ipAddresses: (c.ipAddresses ?? []).map(ipToBytes) });
    expect(problems.length === 0 ? 'ok' : 'refused', problems.join('; ')).toBe(c.ours);
    expect(openssl(top.cert.toString('pem'), inter.cert.toString('pem'), leaf.toString('pem'), `case-${i}`)).toBe(c.openssl ?? c.ours);
    if (go) {
      const [verdict] = go.verify([{ root: top.cert.toString('pem'), intermediates: inter.cert.toString('pem'), leaf: leaf.toString('pem') }]);
      const expected = c.go === 'since-cve-2025-61727' ? (refusesWildcardsOverExclusions(go.version) ? 'refused' : 'ok') : (c.go ?? c.ours);
      expect(verdict!.ok ? 'ok' : 'refused', `go${go.version.join('.')}: ${verdict!.error}`).toBe(expected);
    }
  });

  it('names every name refused and why, with the CA that refuses it', async () => {
    const inter = await caCert(root, 'CN=nc messages', [nameConstraints({ dns: ['.example.com'], ip: ['10.0.0.0/8'] }, { dns: ['bad.example.com'] })], 0);
    const leaf = await leafCert(inter, { uris: [URI], dnsNames: ['a.bad.example.com', 'ok.example.com', 'example.org'], ipAddresses: ['192.168.0.1'] });
    const path: PathCert[] = [leaf, inter.cert, root.cert].map((x) => ({ der: new Uint8Array(x.rawData), name: x.subject }));
    expect(pathConstraintProblems(path, { uris: [URI], dnsNames: ['a.bad.example.com', 'ok.example.com', 'example.org'], ipAddresses: [ipToBytes('192.168.0.1')] })).toEqual([
      '"CN=nc messages" has name constraints that exclude DNS name a.bad.example.com (excluded: "bad.example.com")',
      '"CN=nc messages" has name constraints that exclude DNS name example.org (permitted only: ".example.com")',
      '"CN=nc messages" has name constraints that exclude IP address 192.168.0.1 (permitted only: "10.0.0.0/8")',
    ]);
  });
});

describe("a policy's IP ranges under a CA's IP constraints (load-time checks)", () => {
  it('refuses a range wider than every permitted one, or overlapping an excluded one, and accepts one a permitted range holds whole', async () => {
    const inter = await caCert(root, 'CN=nc ranges', [nameConstraints({ ip: ['10.0.0.0/16', '192.168.0.0/16'] }, { ip: ['192.168.5.0/24'] })], 0);
    const cas = pathNameConstraints([inter.cert, root.cert].map((x) => ({ der: new Uint8Array(x.rawData), name: x.subject })));
    const range = (text: string): { ip: Uint8Array; bits: number } => ({ ip: ipToBytes(text.split('/')[0]!), bits: Number(text.split('/')[1]) });
    // 10.0.0.0/8 shares the permitted range's first 16 bits but holds addresses beyond it.
    expect(pathRangeRefusals(cas, [range('10.0.0.0/8')])).toEqual(['"CN=nc ranges" has name constraints that exclude IP range 10.0.0.0/8 (permitted only: "10.0.0.0/16", "192.168.0.0/16")']);
    // 192.168.0.0/20 lies inside a permitted range, and around the excluded one.
    expect(pathRangeRefusals(cas, [range('192.168.0.0/20')])).toEqual(['"CN=nc ranges" has name constraints that exclude IP range 192.168.0.0/20 (excluded: "192.168.5.0/24")']);
    expect(pathRangeRefusals(cas, [range('10.0.128.0/17'), range('192.168.1.2/32')])).toEqual([]);
  });
});

describe('name constraints Go cannot parse: refused as Go refuses the CA certificate', () => {
  // Excluded subtrees that the leaf (a.example.com, a URI under cluster.local, no IP) is outside
  // of: were they parsed, Go would accept the leaf, so Go's refusal is the parse's.
  const excluded = (base: Buffer): Buffer => sequence(explicitTag(1, sequence(base)));
  const ip = (...octets: number[]): Buffer => implicitPrimitive(7, Buffer.from(octets));
  /**
   * [what, the extension's value, why, which Go refuses it: 'any' release, 'current' (those with
   * the CVE-2025-61727 fix and later), or 'some' (a recent parser; not asserted here)]
   */
  const malformed: Array<[string, Buffer, RegExp, 'any' | 'current' | 'some']> = [
    ['an IP mask that is not a prefix', excluded(ip(10, 0, 0, 0, 255, 0, 255, 0)), /IP mask ff00ff00 is not a prefix/, 'any'],
    ['an IP range of 5 octets', excluded(ip(10, 0, 0, 0, 255)), /an IP range of 5 octets/, 'any'],
    ['an IP range written as an IPv4-mapped IPv6 address', excluded(ip(...Array<number>(10).fill(0), 255, 255, 10, 0, 0, 0, ...Array<number>(12).fill(255), 255, 0, 0, 0)), /an IP range written as an IPv4-mapped IPv6 address/, 'some'],
    ['no subtree at all', sequence(), /empty name constraints \(RFC 5280: a permitted or excluded subtree must be present\)/, 'any'],
    ['a DNS constraint with a trailing dot', excluded(implicitPrimitive(2, Buffer.from('example.org.'))), /DNS constraint "example\.org\." is not a domain name/, 'any'],
    ['a DNS constraint with an empty label', excluded(implicitPrimitive(2, Buffer.from('bad..x'))), /DNS constraint "bad\.\.x" is not a domain name/, 'any'],
    // Older Go read "." as "" under a leading dot (every name); current Go refuses it.
    ['the DNS constraint "."', excluded(implicitPrimitive(2, Buffer.from('.'))), /DNS constraint "\." is not a domain name/, 'current'],
    // Go reads permittedSubtrees [0] then excludedSubtrees [1], and nothing else after them.
    ['excluded subtrees before permitted ones', sequence(explicitTag(1, sequence(implicitPrimitive(2, Buffer.from('example.org')))), explicitTag(0, sequence(implicitPrimitive(2, Buffer.from('example.com'))))), /malformed name constraints/, 'any'],
    // RFC 5280: present but empty is as absent; Go refuses it as empty name constraints.
    ['an empty permitted subtree list', sequence(explicitTag(0)), /empty name constraints \(RFC 5280: a permitted or excluded subtree must be present\)/, 'any'],
    ['a URI constraint that is an IP address', excluded(implicitPrimitive(6, Buffer.from('10.0.0.1'))), /URI constraint "10\.0\.0\.1" is an IP address/, 'any'],
  ];

  it.each(malformed)('%s', async (_what, value, why, refusedBy) => {
    const inter = await caCert(root, 'CN=nc malformed', [new x509.Extension('2.5.29.30', true, new Uint8Array(value))], 0);
    const leaf = await leafCert(inter, { uris: [URI], dnsNames: ['a.example.com'] });
    const path: PathCert[] = [leaf, inter.cert, root.cert].map((x) => ({ der: new Uint8Array(x.rawData), name: x.subject }));
    expect(() => pathConstraintProblems(path, { uris: [URI], dnsNames: ['a.example.com'] })).toThrow(
      new RegExp(`^"CN=nc malformed" has name constraints Go's crypto/x509 cannot parse, so it refuses every chain through that CA: (malformed name constraints: )?${why.source}$`),
    );
    // Go refuses the chain (releases with the stricter parser for the newer checks).
    if (go && (refusedBy === 'any' || (refusedBy === 'current' && refusesWildcardsOverExclusions(go.version)))) {
      const [verdict] = go.verify([{ root: root.cert.toString('pem'), intermediates: inter.cert.toString('pem'), leaf: leaf.toString('pem') }]);
      expect(verdict!.error).toBeDefined();
    }
  });

  it('a critical flag that is not one octet 0x00 or 0xff is a malformed extension', async () => {
    const inter = await caCert(root, 'CN=nc flag', [nameConstraints({ dns: ['example.com'] })], 0);
    const der = Buffer.from(inter.cert.rawData);
    // OID 2.5.29.30, then BOOLEAN TRUE: written 0x01 instead of 0xff.
    const at = der.indexOf(Buffer.from([0x06, 0x03, 0x55, 0x1d, 0x1e, 0x01, 0x01, 0xff]));
    expect(at).toBeGreaterThan(0);
    der[at + 7] = 0x01;
    const leaf = await leafCert(inter, { uris: [URI] });
    expect(() => pathConstraintProblems([{ der: new Uint8Array(leaf.rawData), name: '' }, { der, name: 'CN=nc flag' }], { uris: [URI] })).toThrow('"CN=nc flag": malformed certificate extension');
  });
});
