/**
 * The CreateCertificate use case with both places for its signatures: 'pool' (libuv's thread
 * pool, a single process) and 'inline' (in the scheduled work, cluster workers). Both must refuse
 * and issue exactly alike.
 */
import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Authority, type AuthorityDeps, type CertificateRequest, type IssuedCertificate } from '../../../src/authority/authority.js';
import type { Caller } from '../../../src/auth/types.js';
import { loadCaDir } from '../../../src/ca/material.js';
import { initCaDir } from '../../../src/ca/init.js';
import { CaError } from '../../../src/errors/ca-error.js';
import { LocalIssuer, NameConstraintError } from '../../../src/issuer/local.js';
import { IssuerRegistry } from '../../../src/issuer/registry.js';
import { PolicyEngine } from '../../../src/policy/engine.js';
import { policySchema } from '../../../src/policy/schema.js';
import { derToPem, makeCsr, tamperSignature } from '../../fixtures/csr.js';
import { nameConstraints, writeConstrainedCaDir } from '../../support/constrained-ca.js';

const ID = 'spiffe://cluster.local/ns/default/sa/default';
const BOOM = new Error('HSM unplugged');
const caller: Caller = { method: 'jwt', identities: [ID], namespace: 'default', serviceAccount: 'default' };

let dir: string;
let registry: IssuerRegistry;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'meshcert-authority-'));
  await initCaDir({ dir, organization: 'authority-test' });
  registry = new IssuerRegistry([new LocalIssuer('default', loadCaDir(dir))]);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Where each signing call ran: inside the scheduled work or outside it (on the pool's continuation). */
interface Trace {
  inside: boolean;
  readonly signs: Array<{ method: 'sign' | 'signAsync'; inside: boolean }>;
  readonly policies: boolean[];
}

function authority(signatures: 'pool' | 'inline', over: Partial<AuthorityDeps> = {}): { authority: Authority; trace: Trace; signed: () => number } {
  const trace: Trace = { inside: false, signs: [], policies: [] };
  const counting = new Proxy(registry, {
    get(target, prop, receiver) {
      if (prop !== 'get') return Reflect.get(target, prop, receiver) as unknown;
      return (name: string) => {
        const issuer = target.get(name);
        return Object.assign(Object.create(issuer) as LocalIssuer, {
          sign: (...a: Parameters<LocalIssuer['sign']>) => (trace.signs.push({ method: 'sign', inside: trace.inside }), issuer.sign(...a)),
          signAsync: (...a: Parameters<LocalIssuer['signAsync']>) => (trace.signs.push({ method: 'signAsync', inside: trace.inside }), issuer.signAsync(...a)),
        });
      };
    },
  });
  const engine = new PolicyEngine(policySchema.parse({ default: { lifetime: { default: '1h', max: '24h' } } }));
  // The slicer's contract: the work runs later, synchronously, and settles the promise.
  const schedule = <T>(work: () => T): Promise<T> =>
    new Promise<T>((resolve, reject) =>
      setImmediate(() => {
        trace.inside = true;
        try {
          resolve(work());
        } catch (e) {
          reject(e);
        } finally {
          trace.inside = false;
        }
      }),
    );
  const a = new Authority({
    authenticate: () => Promise.resolve(caller),
    issuers: () => counting,
    policy: () => (trace.policies.push(trace.inside), engine),
    options: { backdate: 0, defaultCluster: 'Kubernetes' },
    schedule,
    signatures,
    ...over,
  });
  return { authority: a, trace, signed: () => trace.signs.length };
}

function request(csrPem: string): CertificateRequest {
  return { csrPem, validitySeconds: undefined, metadata: {}, auth: { bearerToken: 't', clusterId: '' } };
}

async function refusal(p: Promise<unknown>): Promise<CaError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(CaError);
  return e as CaError;
}

describe.each(['pool', 'inline'] as const)('Authority.issue with signatures: %s', (mode) => {
  it.each(['ec256', 'rsa2048'] as const)('issues a %s CSR: the leaf carries the identity and verifies against the CA', async (key) => {
    const { pem } = await makeCsr({ key });
    const { authority: a, trace } = authority(mode);
    const cert = await a.issue(request(pem));
    // Decoding and policy always run in the scheduled work; the leaf is signed there only inline.
    expect(trace.policies).toEqual([true]);
    expect(trace.signs).toEqual([mode === 'inline' ? { method: 'sign', inside: true } : { method: 'signAsync', inside: false }]);
    expect(cert.spiffeId).toBe(ID);
    const leaf = new X509Certificate(cert.leaf.der);
    expect(leaf.subjectAltName).toBe(`URI:${ID}`);
    const issuerCert = registry.default.material.signingCert;
    expect(leaf.checkIssued(issuerCert)).toBe(true);
    expect(leaf.verify(issuerCert.publicKey)).toBe(true);
    expect(cert.chain[0]).toBe(cert.leaf.pem);
    expect(cert.chain.at(-1)).toBe(registry.rootBundlePem);
    // An empty clusterid is the default cluster: the record says which one.
    expect(cert.cluster).toBe('Kubernetes');
  });

  it.each(['ec256', 'rsa2048'] as const)('refuses a %s CSR whose signature does not verify with CSR_BAD_SIGNATURE, and signs nothing', async (key) => {
    const { der } = await makeCsr({ key });
    const { authority: a, signed } = authority(mode);
    const e = await refusal(a.issue(request(derToPem(tamperSignature(der)))));
    expect(e.code).toBe('CSR_BAD_SIGNATURE');
    expect(e.caller).toBe(ID);
    expect(signed()).toBe(0);
  });

  it('names the workload a node agent asked for on a refusal once node authorization allowed it (the audit keys on it), not before', async () => {
    const web = 'spiffe://cluster.local/ns/shop/sa/web';
    const nodeAuthorizer = {
      authorize: (_c: Caller, id: string) => {
        if (id.endsWith('/elsewhere')) throw new CaError('IMPERSONATION_DENIED', `${id} runs on no pod of this node`);
      },
    };
    const { authority: a } = authority(mode, { nodeAuthorizer });
    const { der } = await makeCsr({ uris: [web] });
    const impersonating = (id: string, pem: string): CertificateRequest => ({ ...request(pem), metadata: { ImpersonatedIdentity: id } });
    // Refused after the decision (the CSR's signature): caller and workload.
    const late = await refusal(a.issue(impersonating(web, derToPem(tamperSignature(der)))));
    expect([late.code, late.caller, late.identity]).toEqual(['CSR_BAD_SIGNATURE', ID, web]);
    // Refused in the decision (the CSR asks for another identity than the one impersonated).
    const other = await refusal(a.issue(impersonating('spiffe://cluster.local/ns/shop/sa/db', derToPem(der))));
    expect([other.caller, other.identity]).toEqual([ID, 'spiffe://cluster.local/ns/shop/sa/db']);
    // Refused by node authorization: the workload named is the caller's claim, not an identity.
    const denied = await refusal(a.issue(impersonating('spiffe://cluster.local/ns/shop/sa/elsewhere', derToPem(der))));
    expect([denied.code, denied.caller, denied.identity]).toEqual(['IMPERSONATION_DENIED', ID, undefined]);
  });

  it('waits for a node authorization that asks the API server, and refuses as it says (nothing signed)', async () => {
    const web = 'spiffe://cluster.local/ns/shop/sa/web';
    const asked: string[] = [];
    const clusters: string[] = [];
    const nodeAuthorizer = {
      authorize: async (_c: Caller, id: string, cluster: string) => {
        asked.push(id);
        clusters.push(cluster);
        await new Promise((r) => setTimeout(r, 20));
        if (id.endsWith('/elsewhere')) throw new CaError('AUTH_BACKEND_UNAVAILABLE', 'the API server could not be asked');
      },
    };
    const { authority: a, signed } = authority(mode, { nodeAuthorizer });
    const { pem } = await makeCsr({ uris: [web] });
    const impersonating = (id: string): CertificateRequest => ({ ...request(pem), metadata: { ImpersonatedIdentity: id } });
    expect((await a.issue(impersonating(web))).spiffeId).toBe(web);
    const elsewhere = 'spiffe://cluster.local/ns/shop/sa/elsewhere';
    const { pem: elsewherePem } = await makeCsr({ uris: [elsewhere] });
    const e = await refusal(a.issue({ ...request(elsewherePem), metadata: { ImpersonatedIdentity: elsewhere } }));
    expect([e.code, e.caller, e.identity]).toEqual(['AUTH_BACKEND_UNAVAILABLE', ID, undefined]);
    expect(asked).toEqual([web, 'spiffe://cluster.local/ns/shop/sa/elsewhere']);
    expect(signed()).toBe(1);
    // What no retry can mend is not "retry later": a CSR for another identity, or no CSR at all.
    const { pem: otherPem } = await makeCsr({ uris: ['spiffe://cluster.local/ns/shop/sa/db'] });
    const mismatch = await refusal(a.issue({ ...request(otherPem), metadata: { ImpersonatedIdentity: 'spiffe://cluster.local/ns/shop/sa/elsewhere' } }));
    expect([mismatch.code, mismatch.caller]).toEqual(['IDENTITY_MISMATCH', ID]);
    const garbled = await refusal(a.issue({ ...request('not a CSR'), metadata: { ImpersonatedIdentity: 'spiffe://cluster.local/ns/shop/sa/elsewhere' } }));
    expect(garbled.code).toBe('CSR_MALFORMED');
    expect(signed()).toBe(1);
    // It is told the cluster the caller authenticated in: the header's, else the default.
    await a.issue({ ...impersonating(web), auth: { bearerToken: 't', clusterId: 'east' } });
    expect(clusters).toEqual(['Kubernetes', 'Kubernetes', 'Kubernetes', 'Kubernetes', 'east']);
  });

  it('tells the policy a node agent\'s request is impersonated, and a direct one is not', async () => {
    const web = 'spiffe://cluster.local/ns/shop/sa/web';
    const engine = new PolicyEngine(policySchema.parse({ rules: [{ name: 'no-ambient', match: { impersonated: true }, deny: 'no node agents here' }] }));
    const { authority: a, signed } = authority(mode, { nodeAuthorizer: { authorize: () => undefined }, policy: () => engine });
    const { pem: webPem } = await makeCsr({ uris: [web] });
    const e = await refusal(a.issue({ ...request(webPem), metadata: { ImpersonatedIdentity: web } }));
    expect([e.code, e.message]).toEqual(['POLICY_DENIED', 'no node agents here']);
    expect(signed()).toBe(0);
    const { pem } = await makeCsr();
    expect((await a.issue(request(pem))).spiffeId).toBe(ID);
  });

  it('refuses with ISSUER_UNAVAILABLE, signing nothing, once the signing CA has expired', async () => {
    const { pem } = await makeCsr();
    const { authority: a, signed } = authority(mode, { now: () => new Date(registry.default.notAfter.getTime() + 1000) });
    const e = await refusal(a.issue(request(pem)));
    expect(e.code).toBe('ISSUER_UNAVAILABLE');
    expect(e.message).toMatch(/the signing CA "default" has expired/);
    expect(signed()).toBe(0);
  });

  it('refuses a call whose client is already gone with CANCELLED before deciding anything', async () => {
    const { pem } = await makeCsr();
    const { authority: a, trace, signed } = authority(mode);
    const e = await refusal(a.issue({ ...request(pem), cancelled: () => true }));
    expect(e.code).toBe('CANCELLED');
    expect(trace.policies).toEqual([]);
    expect(signed()).toBe(0);
  });

  it('refuses with CANCELLED, signing nothing, when the client goes while the call is decided', async () => {
    const { pem } = await makeCsr();
    let gone = false;
    const engine = new PolicyEngine(policySchema.parse({}));
    const { authority: a, signed } = authority(mode, { policy: () => ((gone = true), engine) });
    const e = await refusal(a.issue({ ...request(pem), cancelled: () => gone }));
    expect(e.code).toBe('CANCELLED');
    expect(e.caller).toBe(ID);
    expect(signed()).toBe(0);
    // A live client is served as usual.
    expect((await a.issue({ ...request(pem), cancelled: () => false })).spiffeId).toBe(ID);
  });

  it('asks beforeSign after the proof of possession and signs nothing when it refuses', async () => {
    const { pem, der } = await makeCsr();
    let asked = 0;
    const refuse = (): void => {
      asked++;
      throw new CaError('ISSUER_UNAVAILABLE', 'inventory is down');
    };
    const { authority: a, signed } = authority(mode, { beforeSign: refuse });
    expect((await refusal(a.issue(request(pem)))).code).toBe('ISSUER_UNAVAILABLE');
    expect(signed()).toBe(0);
    // A forged CSR is refused before the inventory is even asked.
    expect((await refusal(a.issue(request(derToPem(tamperSignature(der)))))).code).toBe('CSR_BAD_SIGNATURE');
    expect(asked).toBe(1);
  });

  it.each([
    ['rejects', () => Promise.reject(BOOM)],
    ['throws instead of rejecting', () => {
      throw BOOM;
    }],
  ] as const)('reports a signer that %s as ISSUER_FAILED with the cause kept for the log', async (_how, signAsync) => {
    const { pem } = await makeCsr();
    const broken = Object.assign(Object.create(registry.default) as LocalIssuer, {
      sign: () => {
        throw BOOM;
      },
      signAsync,
    });
    const { authority: a } = authority(mode, { issuers: () => Object.assign(Object.create(registry) as IssuerRegistry, { get: () => broken }) });
    const e = await refusal(a.issue(request(pem)));
    expect(e.code).toBe('ISSUER_FAILED');
    expect(e.message).not.toContain('HSM');
    expect(e.cause).toBe(BOOM);
    expect(e.caller).toBe(ID);
  });
});

describe('Authority.issue with a CA whose name constraints limit DNS names and IP addresses', () => {
  let constrained: IssuerRegistry;
  beforeAll(async () => {
    const caDir = join(dir, 'constrained');
    await writeConstrainedCaDir(caDir, nameConstraints({ uri: ['cluster.local'], dns: ['.svc.example.com'], ip: ['10.0.0.0/8'] }));
    constrained = new IssuerRegistry([new LocalIssuer('default', loadCaDir(caDir))]);
  });

  // The policy allows more than the CA can certify: the CA's constraints still decide.
  const engine = new PolicyEngine(policySchema.parse({ default: { extraSans: { dns: ['{serviceAccount}.{namespace}.svc.example.com', '{namespace}.example.org'], ip: ['0.0.0.0/0'] } } }));
  const issue = (csrPem: string, mode: 'pool' | 'inline'): Promise<IssuedCertificate> =>
    new Authority({ authenticate: () => Promise.resolve(caller), issuers: () => constrained, policy: () => engine, options: { backdate: 0, defaultCluster: 'Kubernetes' }, signatures: mode }).issue(request(csrPem));

  it.each(['pool', 'inline'] as const)('issues names the constraints allow (signatures: %s)', async (mode) => {
    const { pem } = await makeCsr({ dns: ['default.default.svc.example.com'], ips: ['10.1.2.3'] });
    const leaf = new X509Certificate((await issue(pem, mode)).chain[0]!);
    expect(leaf.subjectAltName).toBe(`URI:${ID}, DNS:default.default.svc.example.com, IP Address:10.1.2.3`);
  });

  it.each([
    ['a DNS name', 'pool', { dns: ['default.example.org'] }, 'DNS name default.example.org (permitted only: ".svc.example.com")'],
    ['an IP address', 'pool', { ips: ['192.168.0.1'] }, 'IP address 192.168.0.1 (permitted only: "10.0.0.0/8")'],
    ['a DNS name', 'inline', { dns: ['default.example.org'] }, 'DNS name default.example.org (permitted only: ".svc.example.com")'],
  ] as Array<[string, 'pool' | 'inline', { dns?: string[]; ips?: string[] }, string]>)('refuses %s the policy allows but the CA cannot certify, as CSR_FORBIDDEN_EXTENSION naming it (signatures: %s)', async (_what, mode, sans, why) => {
    const { pem } = await makeCsr(sans);
    const e = await refusal(issue(pem, mode));
    expect(e.code).toBe('CSR_FORBIDDEN_EXTENSION');
    expect(e.message).toBe(
      `the CSR requests names that rule "default" allows but the signing CA "default" cannot certify (clients would refuse the certificate): "CN=constrained intermediate" has name constraints that exclude ${why}; request without them`,
    );
    expect(e.caller).toBe(ID);
  });

  it.each(['pool', 'inline'] as const)("refuses, as ISSUER_UNAVAILABLE for the operator to fix, a caller whose trust domain the CA's name constraints leave out (another cluster's) (signatures: %s)", async (mode) => {
    const remote = 'spiffe://remote.example/ns/default/sa/default';
    const remoteCaller: Caller = { method: 'jwt', identities: [remote], namespace: 'default', serviceAccount: 'default' };
    const { pem } = await makeCsr({ uris: [remote] });
    const a = new Authority({ authenticate: () => Promise.resolve(remoteCaller), issuers: () => constrained, policy: () => new PolicyEngine(policySchema.parse({})), options: { backdate: 0, defaultCluster: 'Kubernetes' }, signatures: mode });
    const e = await refusal(a.issue(request(pem)));
    expect(e.code).toBe('ISSUER_UNAVAILABLE');
    expect(e.message).toBe(
      'the signing CA "default" (rule "default") cannot certify trust domain remote.example: "CN=constrained intermediate" has name constraints that exclude spiffe://remote.example/ns/default/sa/default (permitted only: "cluster.local"); an operator must sign this trust domain with a CA that permits it',
    );
    // And the trust domain it permits still issues, with the verdict remembered per trust domain.
    const { pem: local } = await makeCsr();
    expect((await issue(local, mode)).chain).toHaveLength(3);
    expect(constrained.default.refusedUris([ID, 'spiffe://cluster.local/ns/other/sa/x'])).toEqual([]);
  });

  it('LocalIssuer.sign refuses such names too (a caller that skipped the check signs nothing)', () => {
    const issuer = constrained.default;
    const spki = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'der' });
    const req = { spki, uris: [ID], dnsNames: ['a.example.org'], notBefore: new Date(), notAfter: new Date(Date.now() + 60_000) };
    expect(() => issuer.sign(req)).toThrow(NameConstraintError);
    expect(() => issuer.sign(req)).toThrow(/issuer default cannot sign these names, clients would refuse the certificate: "CN=constrained intermediate" has name constraints that exclude DNS name a\.example\.org/);
    expect(issuer.sign({ ...req, dnsNames: ['a.svc.example.com'] }).serial).toMatch(/^[0-9a-f]+$/);
  });
});
