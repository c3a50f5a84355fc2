import { X509Certificate } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import { CaError } from '../../../src/errors/ca-error.js';
import { ClientCertAuthenticator, uriSans } from '../../../src/auth/client-cert.js';
import { serialHex } from '../../../src/x509/serial-hex.js';
import { parseConfig } from '../../../src/config/load.js';
import { ClientCertRevocations } from '../../../src/auth/revocations.js';
import type { Caller } from '../../../src/auth/types.js';
import { makeCert } from './helpers.js';
import type { TestCert } from './helpers.js';

const ID = 'spiffe://cluster.local/ns/default/sa/sleep';
const HOUR = 3_600_000;

let root: TestCert;
let inter: TestCert;
let leaf: TestCert;
let directLeaf: TestCert;
let otherRoot: TestCert;
let otherLeaf: TestCert;
let expiredLeaf: TestCert;
let futureLeaf: TestCert;
let caLeaf: TestCert;
let noSpiffeLeaf: TestCert;
let notWorkloadLeaf: TestCert;
let legacyNsLeaf: TestCert;
let serverOnlyLeaf: TestCert;
let twoIdLeaf: TestCert;
let expiredInter: TestCert;
let leafOfExpiredInter: TestCert;
let notCaInter: TestCert;
let leafOfNotCaInter: TestCert;
let bareLeaf: TestCert;
let forgedByLeaf: TestCert;
let expiredRoot: TestCert;
let leafOfExpiredRoot: TestCert;

beforeAll(async () => {
  root = await makeCert({ name: 'mesh root', ca: true });
  inter = await makeCert({ name: 'mesh intermediate', ca: true, issuer: root });
  leaf = await makeCert({ name: 'sleep', issuer: inter, uris: [ID] });
  directLeaf = await makeCert({ name: 'direct', issuer: root, uris: ['spiffe://cluster.local/ns/a/sa/b'] });
  otherRoot = await makeCert({ name: 'mesh root', ca: true }); // same name, different key
  otherLeaf = await makeCert({ name: 'sleep', issuer: otherRoot, uris: [ID] });
  expiredLeaf = await makeCert({ name: 'old', issuer: inter, uris: [ID], notBefore: new Date(Date.now() - 3 * HOUR), notAfter: new Date(Date.now() - HOUR) });
  futureLeaf = await makeCert({ name: 'future', issuer: inter, uris: [ID], notBefore: new Date(Date.now() + HOUR), notAfter: new Date(Date.now() + 2 * HOUR) });
  caLeaf = await makeCert({ name: 'sneaky', issuer: inter, ca: true, uris: [ID] });
  noSpiffeLeaf = await makeCert({ name: 'web', issuer: inter, uris: ['https://example.com/x'] });
  notWorkloadLeaf = await makeCert({ name: 'svc', issuer: inter, uris: ['spiffe://cluster.local/foo'] });
  legacyNsLeaf = await makeCert({ name: 'legacy', issuer: inter, uris: ['spiffe://cluster.local/ns/Legacy_NS/sa/app'] });
  serverOnlyLeaf = await makeCert({ name: 'server', issuer: inter, uris: [ID], eku: ['1.3.6.1.5.5.7.3.1'] });
  twoIdLeaf = await makeCert({ name: 'two', issuer: inter, uris: [ID, 'spiffe://cluster.local/ns/other/sa/x', 'urn:x'] });
  expiredInter = await makeCert({ name: 'old intermediate', ca: true, issuer: root, notBefore: new Date(Date.now() - 3 * HOUR), notAfter: new Date(Date.now() - HOUR) });
  leafOfExpiredInter = await makeCert({ name: 'orphan', issuer: expiredInter, uris: [ID] });
  notCaInter = await makeCert({ name: 'not a ca', issuer: root });
  leafOfNotCaInter = await makeCert({ name: 'bad', issuer: notCaInter, uris: [ID] });
  // Without keyUsage, so OpenSSL's issuer check alone would let its key sign: only its CA flag refuses the forgery.
  bareLeaf = await makeCert({ name: 'sleep', issuer: inter, uris: [ID], keyUsage: false });
  forgedByLeaf = await makeCert({ name: 'admin', issuer: bareLeaf, uris: ['spiffe://cluster.local/ns/kube-system/sa/admin'] });
  expiredRoot = await makeCert({ name: 'old root', ca: true, notBefore: new Date(Date.now() - 3 * HOUR), notAfter: new Date(Date.now() - HOUR) });
  leafOfExpiredRoot = await makeCert({ name: 'sleep', issuer: expiredRoot, uris: [ID] });
});

function auth(roots: () => TestCert[] = () => [root]): ClientCertAuthenticator {
  return new ClientCertAuthenticator({ roots: () => roots().map((r) => new X509Certificate(r.der)), revocations: () => ClientCertRevocations.none });
}

async function outcome(p: Promise<Caller | null>): Promise<{ caller?: Caller | null; code?: string; message?: string }> {
  try {
    return { caller: await p };
  } catch (err) {
    if (!(err instanceof CaError)) throw err;
    return { code: err.code, message: err.message };
  }
}

describe('ClientCertAuthenticator', () => {
  type Case = { name: string; chain: () => Buffer[]; roots?: () => TestCert[]; identities?: string[]; message?: RegExp };
  const cases: Case[] = [
    { name: 'accepts a leaf chained through a presented intermediate to a root', chain: () => [leaf.der, inter.der], identities: [ID] },
    { name: 'accepts a leaf issued directly by a root', chain: () => [directLeaf.der], identities: ['spiffe://cluster.local/ns/a/sa/b'] },
    { name: 'accepts a chain that also carries the root itself', chain: () => [leaf.der, inter.der, root.der], identities: [ID] },
    { name: 'accepts intermediates in any order', chain: () => [leaf.der, root.der, inter.der], identities: [ID] },
    { name: 'accepts an intermediate configured as a trust anchor', chain: () => [leaf.der], roots: () => [inter], identities: [ID] },
    { name: 'refuses a leaf with several URI SANs (an X509-SVID has exactly one)', chain: () => [twoIdLeaf.der, inter.der], message: /more than one URI SAN/ },
    { name: 'refuses a chain to another root with the same name', chain: () => [otherLeaf.der], message: /not issued by a trusted root/ },
    { name: 'refuses a leaf whose intermediate was not presented', chain: () => [leaf.der], message: /not issued by a trusted root/ },
    { name: 'refuses an expired leaf', chain: () => [expiredLeaf.der, inter.der], message: /expired or not yet valid/ },
    { name: 'refuses a leaf that is not yet valid', chain: () => [futureLeaf.der, inter.der], message: /expired or not yet valid/ },
    { name: 'refuses a CA certificate as the leaf', chain: () => [caLeaf.der, inter.der], message: /is a CA certificate/ },
    { name: 'refuses a root presented as the leaf', chain: () => [root.der], message: /is a CA certificate/ },
    { name: 'refuses a leaf whose URI SAN is not a SPIFFE ID', chain: () => [noSpiffeLeaf.der, inter.der], message: /not a workload SPIFFE ID/ },
    {
      name: 'refuses a SPIFFE ID without a namespace and service account (rules keyed on them would not see it)',
      chain: () => [notWorkloadLeaf.der, inter.der],
      message: /URI SAN spiffe:\/\/cluster\.local\/foo is not an Istio workload identity \(spiffe:\/\/<trust domain>\/ns\/<namespace>\/sa\/<service account>, with Kubernetes names\)/,
    },
    {
      name: 'refuses a namespace that is not a Kubernetes name (policy patterns are written for those)',
      chain: () => [legacyNsLeaf.der, inter.der],
      message: /spiffe:\/\/cluster\.local\/ns\/Legacy_NS\/sa\/app is not an Istio workload identity/,
    },
    { name: 'refuses a leaf without the clientAuth usage', chain: () => [serverOnlyLeaf.der, inter.der], message: /client authentication/ },
    { name: 'refuses an expired intermediate', chain: () => [leafOfExpiredInter.der, expiredInter.der], message: /expired or not yet valid intermediate/ },
    { name: 'refuses an intermediate that is not a CA', chain: () => [leafOfNotCaInter.der, notCaInter.der], message: /not issued by a trusted root/ },
    { name: 'accepts a leaf without keyUsage', chain: () => [bareLeaf.der, inter.der], identities: [ID] },
    { name: 'refuses a leaf for another identity signed with a workload certificate\'s key', chain: () => [forgedByLeaf.der, bareLeaf.der, inter.der], message: /not issued by a trusted root/ },
    { name: 'refuses a leaf that chains only to an expired root', chain: () => [leafOfExpiredRoot.der], roots: () => [expiredRoot], message: /chains to an expired root/ },
    { name: 'refuses bytes that are not a certificate', chain: () => [Buffer.from('not a certificate')], message: /could not be parsed/ },
    { name: 'refuses when no roots are configured', chain: () => [leaf.der, inter.der], roots: () => [], message: /no trusted roots/ },
  ];

  for (const c of cases) {
    it(c.name, async () => {
      const r = await outcome(auth(c.roots).authenticate({ peerCertificates: c.chain() }));
      if (c.identities) {
        expect(r.code).toBeUndefined();
        expect(r.caller?.identities).toEqual(c.identities);
        expect(r.caller?.method).toBe('client-cert');
      } else {
        expect(r.code).toBe('AUTH_INVALID');
        expect(r.message).toMatch(c.message as RegExp);
      }
    });
  }

  it('returns null when no certificate is presented', async () => {
    expect(await auth().authenticate({})).toBeNull();
    expect(await auth().authenticate({ peerCertificates: [] })).toBeNull();
    expect(await auth().authenticate({ bearerToken: 'x' })).toBeNull();
  });

  it('fills namespace, service account and expiresAt for a single Istio identity', async () => {
    const caller = await auth().authenticate({ peerCertificates: [leaf.der, inter.der] });
    expect(caller?.namespace).toBe('default');
    expect(caller?.serviceAccount).toBe('sleep');
    expect(caller?.expiresAt).toBe(Math.floor(leaf.cert.notAfter.getTime() / 1000));
  });

  it('refuses a certificate in a trust domain the CA does not serve, whoever signed it under its roots', async () => {
    const served = (tds: string[]): ClientCertAuthenticator =>
      new ClientCertAuthenticator({ roots: () => [new X509Certificate(root.der)], revocations: () => ClientCertRevocations.none, trustDomains: new Set(tds) });
    expect((await served(['cluster.local', 'old.example']).authenticate({ peerCertificates: [leaf.der, inter.der] }))?.identities).toEqual([ID]);
    expect(await outcome(served(['east.example']).authenticate({ peerCertificates: [leaf.der, inter.der] }))).toEqual({
      code: 'AUTH_INVALID',
      message: 'client certificate is in trust domain cluster.local, which this CA does not serve (east.example)',
    });
  });

  it('reads the roots on every request so a rotation takes effect', async () => {
    let current: TestCert[] = [root];
    const a = auth(() => current);
    expect((await a.authenticate({ peerCertificates: [leaf.der, inter.der] }))?.identities).toEqual([ID]);
    expect((await outcome(a.authenticate({ peerCertificates: [otherLeaf.der] }))).code).toBe('AUTH_INVALID');
    current = [root, otherRoot];
    expect((await a.authenticate({ peerCertificates: [otherLeaf.der] }))?.identities).toEqual([ID]);
    current = [otherRoot];
    expect((await outcome(a.authenticate({ peerCertificates: [leaf.der, inter.der] }))).code).toBe('AUTH_INVALID');
  });

  it('uses the injected clock for validity', async () => {
    const later = new ClientCertAuthenticator({ roots: () => [new X509Certificate(root.der)], revocations: () => ClientCertRevocations.none, now: () => new Date(Date.now() + 2 * HOUR) });
    expect((await outcome(later.authenticate({ peerCertificates: [leaf.der, inter.der] }))).code).toBe('AUTH_INVALID');
  });

  it('refuses a revoked certificate after checking its chain, and reads the revocations on every request', async () => {
    const nb = leaf.cert.notBefore.getTime();
    let current = ClientCertRevocations.none;
    const a = new ClientCertAuthenticator({ roots: () => [new X509Certificate(root.der)], revocations: () => current });
    expect((await a.authenticate({ peerCertificates: [leaf.der, inter.der] }))?.identities).toEqual([ID]);
    // Issued before the cutoff: refused, saying which entry and what to do.
    current = new ClientCertRevocations([{ issuedBefore: '2020-01-01T00:00:00Z' }, { issuedBefore: new Date(nb + 1000).toISOString(), namespaces: ['def*'] }]);
    const r = await outcome(a.authenticate({ peerCertificates: [leaf.der, inter.der] }));
    expect(r.code).toBe('AUTH_INVALID');
    expect(r.message).toBe(
      `client certificate for ${ID} is revoked: its notBefore ${new Date(nb).toISOString()} is before ${new Date(nb + 1000).toISOString()} ` +
        '(auth.revokedClientCertificates[1]); authenticate with a service-account token to get a new certificate',
    );
    // The refusal carries the verified identity, for the audit trail.
    const err = await a.authenticate({ peerCertificates: [leaf.der, inter.der] }).then(() => undefined, (e: unknown) => e as CaError);
    expect(err?.caller).toBe(ID);
    // A certificate from another CA, of the same notBefore, is refused for its chain, not reported as revoked.
    const foreign = await makeCert({ name: 'sleep', issuer: otherRoot, uris: [ID], notBefore: leaf.cert.notBefore });
    expect((await outcome(a.authenticate({ peerCertificates: [foreign.der] }))).message).toMatch(/not issued by a trusted root/);
    // Issued at the cutoff, or for an identity the entry does not select: accepted.
    current = new ClientCertRevocations([{ issuedBefore: new Date(nb).toISOString() }]);
    expect((await a.authenticate({ peerCertificates: [leaf.der, inter.der] }))?.identities).toEqual([ID]);
    current = new ClientCertRevocations([{ issuedBefore: new Date(nb + 1000).toISOString(), serviceAccounts: ['other'] }]);
    expect((await a.authenticate({ peerCertificates: [leaf.der, inter.der] }))?.identities).toEqual([ID]);
  });

  it('refuses a certificate whose serial is listed, whatever its notBefore, and says so', async () => {
    const serial = serialHex(new X509Certificate(leaf.der).serialNumber);
    const a = new ClientCertAuthenticator({ roots: () => [new X509Certificate(root.der)], revocations: () => new ClientCertRevocations([{ serials: ['ffff', serial] }]) });
    const r = await outcome(a.authenticate({ peerCertificates: [leaf.der, inter.der] }));
    expect(r.code).toBe('AUTH_INVALID');
    expect(r.message).toBe(`client certificate for ${ID} is revoked: its serial ${serial} is listed (auth.revokedClientCertificates[0]); authenticate with a service-account token to get a new certificate`);
    // Both conditions, when the entry sets both.
    const nb = leaf.cert.notBefore.getTime();
    const both = new ClientCertAuthenticator({ roots: () => [new X509Certificate(root.der)], revocations: () => new ClientCertRevocations([{ serials: [serial], issuedBefore: new Date(nb + 1000).toISOString() }]) });
    expect((await outcome(both.authenticate({ peerCertificates: [leaf.der, inter.der] }))).message).toBe(
      `client certificate for ${ID} is revoked: its serial ${serial} is listed and its notBefore ${new Date(nb).toISOString()} is before ${new Date(nb + 1000).toISOString()} ` +
        '(auth.revokedClientCertificates[0]); authenticate with a service-account token to get a new certificate',
    );
    // As an operator copies it from openssl (whole octets, uppercase, colons), through the config schema.
    const octets = new X509Certificate(leaf.der).serialNumber.match(/../g)!.join(':');
    const copied = parseConfig({ auth: { revokedClientCertificates: [{ serials: [octets] }] } }, {});
    const fromConfig = new ClientCertAuthenticator({ roots: () => [new X509Certificate(root.der)], revocations: () => new ClientCertRevocations(copied.auth.revokedClientCertificates) });
    expect((await outcome(fromConfig.authenticate({ peerCertificates: [leaf.der, inter.der] }))).message).toMatch(new RegExp(`its serial ${serial} is listed`));
    // Another serial: accepted.
    const other = new ClientCertAuthenticator({ roots: () => [new X509Certificate(root.der)], revocations: () => new ClientCertRevocations([{ serials: ['ffff'] }]) });
    expect((await other.authenticate({ peerCertificates: [leaf.der, inter.der] }))?.identities).toEqual([ID]);
  });

  it('refuses to be built without a roots or a revocations function', () => {
    expect(() => new ClientCertAuthenticator({} as never)).toThrow(/roots/);
    expect(() => new ClientCertAuthenticator({ roots: () => [] } as never)).toThrow(/revocations/);
  });
});

describe('uriSans', () => {
  it('reads URI SANs from DER', async () => {
    expect(await uriSans(twoIdLeaf.der)).toEqual([ID, 'spiffe://cluster.local/ns/other/sa/x', 'urn:x']);
    expect(await uriSans(root.der)).toEqual([]);
  });
});
