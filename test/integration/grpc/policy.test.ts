import { status } from '@grpc/grpc-js';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initCaDir } from '../../../src/ca/init.js';
import { buildWorkloadCsr } from '../../../src/client/workload-csr.js';
import { verifyResponseChain } from '../../../src/x509/verify-chain.js';
import { makeCsr } from '../../fixtures/csr.js';
import { nameConstraints, writeConstrainedCaDir } from '../../support/constrained-ca.js';
import { mintToken, openssl, startTestCa, TEST_ISSUER, writeTestJwks, type TestCa } from '../../support/harness.js';

const ID = (ns: string, sa: string) => `spiffe://cluster.local/ns/${ns}/sa/${sa}`;

async function refused(p: Promise<unknown>): Promise<{ code: number; details: string }> {
  return p.then(
    () => {
      throw new Error('expected a refusal');
    },
    (e: { code: number; details: string }) => e,
  );
}

describe('mesh policy and several CAs over TLS', () => {
  let ca: TestCa;
  let dir: string;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'meshcert-policy-'));
    await initCaDir({ dir: join(dir, 'payments-ca'), organization: 'payments' });
    ca = await startTestCa({
      issuers: [{ name: 'payments-ca', dir: join(dir, 'payments-ca') }],
      trustDomainAliases: ['old.example'],
      policy: {
        rules: [
          { name: 'deny-kube-system', match: { namespaces: ['kube-system'] }, deny: 'kube-system workloads get their certificates from istiod' },
          { name: 'deny-secrets-here', match: { trustDomains: ['cluster.local'], namespaces: ['secrets'] }, deny: 'secrets workloads of cluster.local are not served here' },
          { name: 'deny-vault-old', match: { trustDomains: ['old.example'], namespaces: ['vault'] }, deny: 'no old.example identities for vault' },
          { name: 'old-domain-short', match: { trustDomains: ['old.example'], namespaces: ['shop'] }, lifetime: { default: '2h' } },
          { name: 'ingress-gateway', match: { namespaces: ['istio-ingress'], serviceAccounts: ['istio-ingressgateway'] }, extraSans: { dns: ['*.{namespace}.svc.cluster.local'] } },
          // The authenticated domain's cap holds under the alias; no lifetime fits both for "capped".
          { name: 'capped-here', match: { trustDomains: ['cluster.local'], namespaces: ['capped', 'capped-loose'] }, lifetime: { default: '1h', max: '2h' } },
          { name: 'capped-old', match: { trustDomains: ['old.example'], namespaces: ['capped'] }, lifetime: { default: '12h', min: '6h', max: '24h' } },
          { name: 'capped-loose-old', match: { trustDomains: ['old.example'], namespaces: ['capped-loose'] }, lifetime: { default: '12h', max: '24h' } },
          { name: 'payments', match: { namespaces: ['payments'] }, issuer: 'payments-ca', lifetime: { default: '30m', max: '1h', aboveMax: 'reject' } },
          { name: 'batch', match: { namespaces: ['batch-*'] }, lifetime: { default: '1h', max: '2h', aboveMax: 'clamp' }, keys: [{ type: 'ECDSA', minSize: 256 }] },
        ],
      },
    });
  });
  afterAll(async () => {
    await ca?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('refuses a denied namespace with PERMISSION_DENIED and the rule reason', async () => {
    const e = await refused(ca.request({ csrPem: (await makeCsr({ uris: [ID('kube-system', 'coredns')] })).pem, token: await mintToken({ ns: 'kube-system', sa: 'coredns' }) }));
    expect(e.code).toBe(status.PERMISSION_DENIED);
    expect(e.details).toContain('kube-system workloads get their certificates from istiod');
  });

  it('refuses a lifetime above the maximum where the rule says reject', async () => {
    const e = await refused(ca.request({ csrPem: (await makeCsr({ uris: [ID('payments', 'api')] })).pem, token: await mintToken({ ns: 'payments', sa: 'api' }), validitySeconds: 7200 }));
    expect(e.code).toBe(status.INVALID_ARGUMENT);
  });

  it('clamps a lifetime above the maximum where the rule says clamp', async () => {
    const chain = await ca.request({ csrPem: (await makeCsr({ uris: [ID('batch-nightly', 'job')] })).pem, token: await mintToken({ ns: 'batch-nightly', sa: 'job' }), validitySeconds: 36000 });
    const leaf = new X509Certificate(chain[0]!);
    expect(Math.abs(Date.parse(leaf.validTo) - Date.now() - 2 * 3600_000)).toBeLessThan(5000);
  });

  it('refuses a key type the rule does not allow', async () => {
    const csr = await buildWorkloadCsr(ID('batch-nightly', 'job'), 'rsa2048');
    const e = await refused(ca.request({ csrPem: csr.csrPem, token: await mintToken({ ns: 'batch-nightly', sa: 'job' }) }));
    expect(e.code).toBe(status.INVALID_ARGUMENT);
    expect(e.details).toMatch(/ECDSA/);
  });

  it('gives the ingress gateway its templated DNS SAN and refuses the same SAN to an ordinary service account', async () => {
    const dns = 'shop.istio-ingress.svc.cluster.local';
    const gw = await ca.request({ csrPem: (await makeCsr({ uris: [ID('istio-ingress', 'istio-ingressgateway')], dns: [dns] })).pem, token: await mintToken({ ns: 'istio-ingress', sa: 'istio-ingressgateway' }) });
    const leaf = new X509Certificate(gw[0]!);
    expect(leaf.subjectAltName).toContain(`DNS:${dns}`);
    expect(leaf.subjectAltName).toContain(`URI:${ID('istio-ingress', 'istio-ingressgateway')}`);
    expect(openssl(['verify', '-CAfile', 'r.pem', '-untrusted', 'i.pem', 'l.pem'], { 'r.pem': gw[2]!, 'i.pem': gw[1]!, 'l.pem': gw[0]! }).trim()).toBe('l.pem: OK');
    const e = await refused(ca.request({ csrPem: (await makeCsr({ uris: [ID('istio-ingress', 'other')], dns: [dns] })).pem, token: await mintToken({ ns: 'istio-ingress', sa: 'other' }) }));
    expect(e.code).toBe(status.INVALID_ARGUMENT);
    expect(e.details).toContain(dns);
  });

  it('issues a workload its own identity under a trust-domain alias, and nothing else', async () => {
    const chain = await ca.request({ csrPem: (await makeCsr({ uris: ['spiffe://old.example/ns/shop/sa/web'] })).pem, token: await mintToken({ ns: 'shop', sa: 'web' }) });
    expect(new X509Certificate(chain[0]!).subjectAltName).toBe('URI:spiffe://old.example/ns/shop/sa/web');
    const e = await refused(ca.request({ csrPem: (await makeCsr({ uris: ['spiffe://old.example/ns/shop/sa/admin'] })).pem, token: await mintToken({ ns: 'shop', sa: 'web' }) }));
    expect(e.code).toBe(status.PERMISSION_DENIED);
  });

  it('judges an alias request by the requested trust domain too: its deny rules hold, and its rules say how to issue', async () => {
    const e = await refused(ca.request({ csrPem: (await makeCsr({ uris: ['spiffe://old.example/ns/vault/sa/server'] })).pem, token: await mintToken({ ns: 'vault', sa: 'server' }) }));
    expect(e.code).toBe(status.PERMISSION_DENIED);
    expect(e.details).toContain('no old.example identities for vault');
    // Its own identity is not affected by the old.example rule.
    await ca.request({ csrPem: (await makeCsr({ uris: [ID('vault', 'server')] })).pem, token: await mintToken({ ns: 'vault', sa: 'server' }) });
    const chain = await ca.request({ csrPem: (await makeCsr({ uris: ['spiffe://old.example/ns/shop/sa/web'] })).pem, token: await mintToken({ ns: 'shop', sa: 'web' }), validitySeconds: 0 });
    const leaf = new X509Certificate(chain[0]!);
    expect(Math.round((Date.parse(leaf.validTo) - Date.now()) / 3_600_000)).toBe(2);
  });

  it('judges an alias request by the trust domain the caller authenticated in: a rule scoped to it cannot be stepped around', async () => {
    const token = await mintToken({ ns: 'secrets', sa: 'vault' });
    for (const uri of [ID('secrets', 'vault'), 'spiffe://old.example/ns/secrets/sa/vault']) {
      const e = await refused(ca.request({ csrPem: (await makeCsr({ uris: [uri] })).pem, token }));
      expect(e.code, uri).toBe(status.PERMISSION_DENIED);
      expect(e.details).toContain('secrets workloads of cluster.local are not served here');
    }
  });

  it("caps an alias request at the authenticated domain's maximum, and refuses with INVALID_ARGUMENT one no lifetime fits", async () => {
    const loose = await ca.request({ csrPem: (await makeCsr({ uris: ['spiffe://old.example/ns/capped-loose/sa/app'] })).pem, token: await mintToken({ ns: 'capped-loose', sa: 'app' }) });
    expect(Math.round((Date.parse(new X509Certificate(loose[0]!).validTo) - Date.now()) / 3_600_000)).toBe(2);
    const e = await refused(ca.request({ csrPem: (await makeCsr({ uris: ['spiffe://old.example/ns/capped/sa/app'] })).pem, token: await mintToken({ ns: 'capped', sa: 'app' }) }));
    expect(e.code).toBe(status.INVALID_ARGUMENT);
    expect(e.details).toBe(`no lifetime fits both trust domains' rules: rule "capped-here" for cluster.local allows at most 7200s, rule "capped-old" for old.example at least 21600s`);
  });

  it('signs two namespaces with two CAs whose chains both verify against the union root bundle', async () => {
    const a = await ca.request({ csrPem: (await makeCsr({ uris: [ID('shop', 'web')] })).pem, token: await mintToken({ ns: 'shop', sa: 'web' }) });
    const b = await ca.request({ csrPem: (await makeCsr({ uris: [ID('payments', 'api')] })).pem, token: await mintToken({ ns: 'payments', sa: 'api' }), validitySeconds: 0 });
    expect(a[1]).not.toBe(b[1]); // different intermediates
    expect(new X509Certificate(b[1]!).subject).toMatch(/payments/);
    expect(a[2]).toBe(b[2]); // the same union bundle for every workload
    expect(a[2]!.match(/BEGIN CERTIFICATE/g)).toHaveLength(2);
    const bundle = a[2]!;
    for (const chain of [a, b]) {
      expect(() => verifyResponseChain(chain, bundle)).not.toThrow();
      expect(openssl(['verify', '-CAfile', 'bundle.pem', '-untrusted', 'i.pem', 'l.pem'], { 'bundle.pem': bundle, 'i.pem': chain[1]!, 'l.pem': chain[0]! }).trim()).toBe('l.pem: OK');
    }
    // The payments lifetime default applies (30m) when the agent asks for <= 0.
    const lb = new X509Certificate(b[0]!);
    expect(Math.abs(Date.parse(lb.validTo) - Date.now() - 30 * 60_000)).toBeLessThan(5000);
  });
});

describe('a CA with name constraints over TLS', () => {
  let ca: TestCa;
  let dir: string;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'meshcert-policy-nc-'));
    await writeConstrainedCaDir(join(dir, 'partner-ca'), nameConstraints({ uri: ['cluster.local'], dns: ['.svc.partner.example'] }));
    await writeTestJwks(join(dir, 'jwks.json'));
    const jwt = [{ issuer: TEST_ISSUER, jwksFile: join(dir, 'jwks.json') }];
    ca = await startTestCa({
      issuers: [{ name: 'partner-ca', dir: join(dir, 'partner-ca') }],
      // Another cluster's trust domain, which partner-ca's name constraints leave out.
      auth: { clusters: [{ name: 'Kubernetes', jwt }, { name: 'remote', trustDomain: 'remote.example', jwt }] },
      // The policy allows more than its CA's name constraints do.
      policy: { rules: [{ name: 'partner', match: { namespaces: ['partner'] }, issuer: 'partner-ca', extraSans: { dns: ['{serviceAccount}.svc.partner.example', '{serviceAccount}.partner.example'] } }] },
    });
  });
  afterAll(async () => {
    await ca?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("refuses a DNS name the policy allows but the CA's name constraints exclude with INVALID_ARGUMENT naming it, and issues one they allow", async () => {
    const token = await mintToken({ ns: 'partner', sa: 'api' });
    const e = await refused(ca.request({ csrPem: (await makeCsr({ uris: [ID('partner', 'api')], dns: ['api.partner.example'] })).pem, token }));
    expect(e.code).toBe(status.INVALID_ARGUMENT);
    expect(e.details).toBe(
      'the CSR requests names that rule "partner" allows but the signing CA "partner-ca" cannot certify (clients would refuse the certificate): "CN=constrained intermediate" has name constraints that exclude DNS name api.partner.example (permitted only: ".svc.partner.example"); request without them',
    );
    const chain = await ca.request({ csrPem: (await makeCsr({ uris: [ID('partner', 'api')], dns: ['api.svc.partner.example'] })).pem, token });
    expect(new X509Certificate(chain[0]!).subjectAltName).toBe(`URI:${ID('partner', 'api')}, DNS:api.svc.partner.example`);
  });

  it("refuses a caller whose trust domain the rule's CA cannot certify with UNAVAILABLE naming the operator's fix, without internal detail", async () => {
    const remote = 'spiffe://remote.example/ns/partner/sa/api';
    const e = await refused(ca.request({ csrPem: (await makeCsr({ uris: [remote] })).pem, token: await mintToken({ ns: 'partner', sa: 'api' }), clusterId: 'remote' }));
    expect(e.code).toBe(status.UNAVAILABLE);
    expect(e.details).toBe(
      'the signing CA "partner-ca" (rule "partner") cannot certify trust domain remote.example: "CN=constrained intermediate" has name constraints that exclude spiffe://remote.example/ns/partner/sa/api (permitted only: "cluster.local"); an operator must sign this trust domain with a CA that permits it',
    );
    expect(e.details).not.toMatch(/\n\s+at |\.ts:\d+/);
    expect(ca.logs()).toMatch(/issuer \\"partner-ca\\" cannot certify trust domain remote\.example/);
    // The same namespace in the mesh's own trust domain is signed by the same CA.
    expect(await ca.request({ csrPem: (await makeCsr({ uris: [ID('partner', 'api')] })).pem, token: await mintToken({ ns: 'partner', sa: 'api' }) })).toHaveLength(3);
  });
});
