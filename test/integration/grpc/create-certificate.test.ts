import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import { status } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildWorkloadCsr } from '../../../src/client/workload-csr.js';
import { loadCaDir } from '../../../src/ca/material.js';
import { renewIntermediate } from '../../../src/ca/rotate.js';
import { LocalIssuer } from '../../../src/issuer/local.js';
import { makeCsr, makeOpensslCsr, tamperSignature, derToPem, x509 } from '../../fixtures/csr.js';
import { mintToken, openssl, startTestCa, TEST_ISSUER, TRUST_DOMAIN, type TestCa } from '../../support/harness.js';

const ID = (ns = 'default', sa = 'default') => `spiffe://${TRUST_DOMAIN}/ns/${ns}/sa/${sa}`;

/** Asserts a refusal's code and that its details carry nothing internal. */
async function expectRefused(p: Promise<unknown>, code: status, detail?: RegExp): Promise<string> {
  const err = (await p.then(
    () => {
      throw new Error('expected a refusal');
    },
    (e: unknown) => e,
  )) as { code: number; details: string };
  expect(err.code, `details: ${err.details}`).toBe(code);
  if (detail) expect(err.details).toMatch(detail);
  expect(err.details).not.toMatch(/\/work\/|\/tmp\/|node_modules|\bat .*\.ts:|Error:|-----BEGIN [A-Z ]+-----\s*[A-Za-z0-9+/=]{16}|eyJ/);
  return err.details;
}

describe('CreateCertificate over TLS (istio-agent shaped requests)', () => {
  let ca: TestCa;
  beforeAll(async () => {
    ca = await startTestCa();
  });
  afterAll(async () => {
    await ca?.close();
  });

  it('issues an RSA-2048 workload certificate for an O= subject CSR, shaped as istiod shapes it', async () => {
    const csr = await buildWorkloadCsr(ID(), 'rsa2048');
    const before = Date.now();
    const chain = await ca.request({ csrPem: csr.csrPem, token: await mintToken(), validitySeconds: 0 });

    expect(chain).toHaveLength(3);
    for (const el of chain) expect(el.endsWith('\n')).toBe(true);
    for (const el of chain.slice(0, -1)) expect(el.match(/BEGIN CERTIFICATE/g)).toHaveLength(1);
    const [leafPem, interPem, rootPem] = chain as [string, string, string];
    expect(rootPem).toBe(ca.rootPem);

    const leaf = new X509Certificate(leafPem);
    const inter = new X509Certificate(interPem);
    expect(leaf.subject ?? '').toBe('');
    expect(leaf.subjectAltName).toBe(`URI:${ID()}`);
    expect(leaf.ca).toBe(false);
    expect(leaf.keyUsage).toEqual(expect.arrayContaining(['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2']));
    expect(leaf.checkIssued(inter) && leaf.verify(inter.publicKey)).toBe(true);
    expect(leaf.publicKey.asymmetricKeyDetails?.modulusLength).toBe(2048);
    // Serial: positive, < 2^128.
    expect(BigInt(`0x${leaf.serialNumber}`) > 0n && BigInt(`0x${leaf.serialNumber}`) < 2n ** 128n).toBe(true);
    // NotBefore backdated about 2 minutes; default lifetime 24h.
    const nb = Date.parse(leaf.validFrom);
    const na = Date.parse(leaf.validTo);
    expect(before - nb).toBeGreaterThan(100_000);
    expect(before - nb).toBeLessThan(140_000);
    expect(Math.abs(na - before - 24 * 3600_000)).toBeLessThan(10_000);

    // Extensions and criticality as a Go / openssl validator sees them.
    const text = openssl(['x509', '-noout', '-text', '-in', 'leaf.pem'], { 'leaf.pem': leafPem });
    expect(text).toMatch(/X509v3 Key Usage: critical\s+Digital Signature, Key Encipherment/);
    expect(text).toMatch(/X509v3 Extended Key Usage:\s+TLS Web Server Authentication, TLS Web Client Authentication/);
    expect(text).toMatch(/X509v3 Basic Constraints: critical\s+CA:FALSE/);
    expect(text).toMatch(/X509v3 Subject Alternative Name: critical\s+URI:spiffe:\/\/cluster.local\/ns\/default\/sa\/default/);
    expect(text).toMatch(/X509v3 Authority Key Identifier/);
    expect(text).toMatch(/X509v3 Subject Key Identifier/);
    expect(text).toMatch(/Subject: *\n/);
    const interText = openssl(['x509', '-noout', '-text', '-in', 'i.pem'], { 'i.pem': interPem });
    const ski = /Subject Key Identifier:\s+([0-9A-F:]+)/.exec(interText)![1];
    expect(text).toContain(ski);

    const verified = openssl(['verify', '-x509_strict', '-purpose', 'sslclient', '-CAfile', 'root.pem', '-untrusted', 'inter.pem', 'leaf.pem'], {
      'root.pem': rootPem,
      'inter.pem': interPem,
      'leaf.pem': leafPem,
    });
    expect(verified.trim()).toBe('leaf.pem: OK');
  });

  it('issues an ECDSA P-256 certificate for an empty-subject CSR (ztunnel shape) with an ES256 token', async () => {
    const csr = await buildWorkloadCsr(ID('apps', 'web'), 'ec256', { emptySubject: true });
    const chain = await ca.request({ csrPem: csr.csrPem, token: await mintToken({ ns: 'apps', sa: 'web', alg: 'ES256' }) });
    const leaf = new X509Certificate(chain[0]!);
    expect(leaf.subjectAltName).toBe(`URI:${ID('apps', 'web')}`);
    expect(leaf.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    const out = openssl(['verify', '-purpose', 'sslserver', '-CAfile', 'root.pem', '-untrusted', 'inter.pem', 'leaf.pem'], {
      'root.pem': chain[2]!,
      'inter.pem': chain[1]!,
      'leaf.pem': chain[0]!,
    });
    expect(out.trim()).toBe('leaf.pem: OK');
  });

  it('issues for a CSR without URI SANs, using the caller identity', async () => {
    const csr = await makeCsr({ uris: [] });
    const chain = await ca.request({ csrPem: csr.pem, token: await mintToken({ ns: 'a', sa: 'b' }) });
    expect(new X509Certificate(chain[0]!).subjectAltName).toBe(`URI:${ID('a', 'b')}`);
  });

  it("issues to a caller that names a signer (CertSigner), from the policy's CA, and says once per name that the name does not choose the CA", async () => {
    const csr = await makeCsr({ uris: [] });
    const token = await mintToken({ ns: 'a', sa: 'signer' });
    const warned = (): number => (ca.logs().match(/"certSigner":"istio-system-clusterissuer"[^\n]*does not choose the CA/g) ?? []).length;
    for (let i = 0; i < 2; i++) await ca.request({ csrPem: csr.pem, token, metadata: { CertSigner: 'istio-system-clusterissuer' } });
    expect(warned()).toBe(1);
    // The empty value istio-agent sends by default says nothing.
    await ca.request({ csrPem: csr.pem, token, metadata: { CertSigner: '' } });
    expect(ca.logs()).not.toMatch(/"certSigner":""/);
  });

  it('clamps a lifetime above the maximum to the maximum (the default)', async () => {
    const csr = await makeCsr();
    const chain = await ca.request({ csrPem: csr.pem, token: await mintToken(), validitySeconds: 10 ** 12 });
    const leaf = new X509Certificate(chain[0]!);
    const lifetimeDays = (Date.parse(leaf.validTo) - Date.now()) / 86400_000;
    expect(lifetimeDays).toBeGreaterThan(89.9);
    expect(lifetimeDays).toBeLessThanOrEqual(90);
  });

  it('honours a shorter requested lifetime', async () => {
    const csr = await makeCsr();
    const chain = await ca.request({ csrPem: csr.pem, token: await mintToken(), validitySeconds: 3600 });
    const leaf = new X509Certificate(chain[0]!);
    expect(Math.abs(Date.parse(leaf.validTo) - Date.now() - 3600_000)).toBeLessThan(5000);
  });

  it('negotiates ALPN h2 and TLS 1.2+ (openssl s_client)', async () => {
    const out = await new Promise<string>((resolve) => {
      const child = execFile('openssl', ['s_client', '-alpn', 'h2', '-connect', ca.address, '-servername', 'localhost'], { timeout: 10_000 }, (_e, stdout) => resolve(stdout));
      child.stdin?.end();
    });
    expect(out).toMatch(/ALPN protocol: h2/);
    expect(out).toMatch(/TLSv1\.[23]/);
  });

  it('offers only ECDHE with AEAD over TLS 1.2 (openssl s_client): no CBC suite, which HTTP/2 forbids', async () => {
    const handshake = (cipher: string): Promise<string> =>
      new Promise<string>((resolve) => {
        const child = execFile('openssl', ['s_client', '-tls1_2', '-cipher', cipher, '-alpn', 'h2', '-connect', ca.address, '-servername', 'localhost'], { timeout: 10_000 }, (_e, stdout, stderr) => resolve(stdout + stderr));
        child.stdin?.end();
      });
    expect(await handshake('ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256')).toMatch(/Cipher is ECDHE-(ECDSA|RSA)-AES128-GCM-SHA256/);
    for (const cbc of ['ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES256-SHA', 'ECDHE-ECDSA-AES128-SHA256:ECDHE-RSA-AES128-SHA256']) {
      expect(await handshake(cbc), cbc).toMatch(/Cipher is \(NONE\)|handshake failure/);
    }
  });

  it('answers 200 concurrent requests over several connections with 200 distinct serials', async () => {
    const clients = Array.from({ length: 5 }, () => ca.client());
    const token = await mintToken({ ns: 'load', sa: 'worker' });
    const csr = await makeCsr({ uris: [ID('load', 'worker')] });
    const chains = await Promise.all(Array.from({ length: 200 }, (_, i) => clients[i % 5]!.createCertificate({ csrPem: csr.pem, token })));
    const serials = new Set(chains.map((c) => new X509Certificate(c[0]!).serialNumber));
    expect(serials.size).toBe(200);
  });

  describe('refusals: each gets the right status and the server keeps serving', () => {
    const cases: Array<[string, () => Promise<{ csr?: string; token?: string; ttl?: number; md?: Record<string, string>; cluster?: string }>, status, RegExp?]> = [
      ['refuses a request without a token as UNAUTHENTICATED', async () => ({ token: undefined }), status.UNAUTHENTICATED, /no credential/],
      ['refuses an expired token as UNAUTHENTICATED', async () => ({ token: await mintToken({ expiresIn: -600 }) }), status.UNAUTHENTICATED],
      ['refuses a not-yet-valid token as UNAUTHENTICATED', async () => ({ token: await mintToken({ notBeforeIn: 600 }) }), status.UNAUTHENTICATED],
      ['refuses a token for another audience as UNAUTHENTICATED', async () => ({ token: await mintToken({ aud: 'kubernetes' }) }), status.UNAUTHENTICATED],
      ['refuses a token from an unknown issuer as UNAUTHENTICATED', async () => ({ token: await mintToken({ iss: 'https://evil.example' }) }), status.UNAUTHENTICATED],
      ['refuses a token signed by an unknown key as UNAUTHENTICATED', async () => ({ token: await mintToken({ foreignKey: true }) }), status.UNAUTHENTICATED],
      ['refuses an unsigned (alg none) token as UNAUTHENTICATED', async () => ({ token: unsigned() }), status.UNAUTHENTICATED],
      ['refuses a garbage token as UNAUTHENTICATED', async () => ({ token: 'not-a-jwt' }), status.UNAUTHENTICATED],
      ['refuses an unknown cluster as UNAUTHENTICATED', async () => ({ cluster: 'other-cluster' }), status.UNAUTHENTICATED],
      ['refuses a garbage CSR as INVALID_ARGUMENT', async () => ({ csr: 'hello' }), status.INVALID_ARGUMENT],
      ['refuses an empty CSR as INVALID_ARGUMENT', async () => ({ csr: '' }), status.INVALID_ARGUMENT],
      ['refuses a CSR whose signature was tampered with as INVALID_ARGUMENT', async () => ({ csr: derToPem(tamperSignature((await makeCsr()).der)) }), status.INVALID_ARGUMENT, /signature/],
      ['refuses an RSA-1024 key as INVALID_ARGUMENT', async () => ({ csr: (await makeCsr({ key: 'rsa1024' })).pem }), status.INVALID_ARGUMENT, /1024/],
      ['refuses a P-521 key as INVALID_ARGUMENT', async () => ({ csr: (await makeCsr({ key: 'ec521' })).pem }), status.INVALID_ARGUMENT],
      ['refuses a CSR for another identity as PERMISSION_DENIED', async () => ({ csr: (await makeCsr({ uris: [ID('kube-system', 'admin')] })).pem }), status.PERMISSION_DENIED, /kube-system/],
      ['refuses a CSR for another trust domain as PERMISSION_DENIED', async () => ({ csr: (await makeCsr({ uris: ['spiffe://other.td/ns/default/sa/default'] })).pem }), status.PERMISSION_DENIED],
      ['refuses a CSR with DNS SANs as INVALID_ARGUMENT', async () => ({ csr: (await makeCsr({ dns: ['evil.example.com'] })).pem }), status.INVALID_ARGUMENT, /DNS/],
      ['refuses a CSR with IP SANs as INVALID_ARGUMENT', async () => ({ csr: (await makeCsr({ ips: ['10.0.0.1'] })).pem }), status.INVALID_ARGUMENT, /IP/],
      ['refuses a CSR with email SANs as INVALID_ARGUMENT', async () => ({ csr: (await makeCsr({ emails: ['a@b.c'] })).pem }), status.INVALID_ARGUMENT, /email/],
      ['refuses a CSR asking to be a CA as INVALID_ARGUMENT', async () => ({ csr: (await makeCsr({ ca: true })).pem }), status.INVALID_ARGUMENT, /CA/],
      ['refuses a CSR asking for keyCertSign as INVALID_ARGUMENT', async () => ({ csr: (await makeCsr({ keyCertSign: true })).pem }), status.INVALID_ARGUMENT],
      [
        'refuses a CSR with more than 100 SANs as INVALID_ARGUMENT',
        async () => ({ csr: (await makeCsr({ dns: Array.from({ length: 101 }, (_, i) => `h${i}.example`) })).pem }),
        status.INVALID_ARGUMENT,
        /more than 100 subject alternative names/,
      ],
      [
        'refuses a CSR with an OID arc Go cannot read as INVALID_ARGUMENT',
        async () => ({ csr: makeOpensslCsr({ addext: [`subjectAltName=critical,URI:${ID('default', 'default')}`, '1.3.6.1.4.1.99999.2147483648=ASN1:NULL'] }).pem }),
        status.INVALID_ARGUMENT,
        /arc above 2147483647/,
      ],
      ['refuses ImpersonatedIdentity metadata (ambient mode off) as UNAUTHENTICATED, as istiod does', async () => ({ md: { ImpersonatedIdentity: ID('x', 'y') } }), status.UNAUTHENTICATED],
      ['refuses an oversized request as RESOURCE_EXHAUSTED', async () => ({ csr: 'A'.repeat(200 * 1024) }), status.RESOURCE_EXHAUSTED],
    ];
    it.each(cases)('%s', async (_name, build, code, detail) => {
      const c = await build();
      const defaults = { csr: (await makeCsr()).pem, token: await mintToken() };
      const args = {
        csrPem: c.csr ?? defaults.csr,
        ...('token' in c ? (c.token === undefined ? {} : { token: c.token }) : { token: defaults.token }),
        ...(c.ttl !== undefined ? { validitySeconds: c.ttl } : {}),
        ...(c.md ? { metadata: c.md } : {}),
        ...(c.cluster ? { clusterId: c.cluster } : {}),
      };
      await expectRefused(ca.request(args), code, detail);
      // Still healthy: a good request right after succeeds.
      const ok = await ca.request({ csrPem: defaults.csr, token: defaults.token });
      expect(ok).toHaveLength(3);
    });
  });

  it('never logs tokens, CSRs or keys, and logs one line per decision', () => {
    const logs = ca.logs();
    expect(logs).not.toMatch(/eyJ[A-Za-z0-9_-]{10,}/);
    expect(logs).not.toMatch(/-----BEGIN [A-Z ]+-----\s*[A-Za-z0-9+/=]{16}/);
    const decisions = logs.split('\n').filter((l) => l.includes('"decision"'));
    expect(decisions.length).toBeGreaterThan(20);
    for (const l of decisions) {
      const j = JSON.parse(l);
      if (j.decision === 'issued') expect(j).toMatchObject({ identity: expect.any(String), serial: expect.any(String), notAfter: expect.any(String), latencyMs: expect.any(Number) });
      else expect(j).toMatchObject({ code: expect.any(String), reason: expect.any(String) });
    }
  });
});

describe('lifetime policy set to reject', () => {
  let ca: TestCa;
  beforeAll(async () => {
    ca = await startTestCa({ issuance: { onTtlAboveMax: 'reject', maxTtl: '48h' } });
  });
  afterAll(async () => ca?.close());

  it('refuses an absurd lifetime as INVALID_ARGUMENT naming the maximum', async () => {
    const csr = await makeCsr();
    await expectRefused(ca.request({ csrPem: csr.pem, token: await mintToken(), validitySeconds: 9_000_000_000_000 }), status.INVALID_ARGUMENT, /172800s/);
  });

  it('accepts the maximum itself', async () => {
    const csr = await makeCsr();
    const chain = await ca.request({ csrPem: csr.pem, token: await mintToken(), validitySeconds: 172800 });
    expect(chain).toHaveLength(3);
  });
});

describe('client certificate (mTLS) authentication', () => {
  let ca: TestCa;
  beforeAll(async () => {
    ca = await startTestCa();
  });
  afterAll(async () => ca?.close());

  it('authenticates a caller by a client certificate meshcert issued, without a token', async () => {
    const csr = await buildWorkloadCsr(ID('vm', 'legacy'), 'ec256');
    const first = await ca.request({ csrPem: csr.csrPem, token: await mintToken({ ns: 'vm', sa: 'legacy' }) });
    const mtls = ca.client({ clientCert: { certPem: first[0]! + first[1]!, keyPem: csr.privateKeyPem } });
    const next = await buildWorkloadCsr(ID('vm', 'legacy'), 'ec256');
    const chain = await mtls.createCertificate({ csrPem: next.csrPem });
    expect(new X509Certificate(chain[0]!).subjectAltName).toBe(`URI:${ID('vm', 'legacy')}`);
    // The certificate's identity is all it may ask for.
    const other = await makeCsr({ uris: [ID('vm', 'other')] });
    await expectRefused(mtls.createCertificate({ csrPem: other.pem }), status.PERMISSION_DENIED);
  });

  it('renews over mTLS whatever cluster the clusterid header names, as istiod (a client certificate carries no cluster)', async () => {
    const csr = await buildWorkloadCsr(ID('vm', 'roaming'), 'ec256');
    const first = await ca.request({ csrPem: csr.csrPem, token: await mintToken({ ns: 'vm', sa: 'roaming' }) });
    const mtls = ca.client({ clientCert: { certPem: first[0]! + first[1]!, keyPem: csr.privateKeyPem } });
    const chain = await mtls.createCertificate({ csrPem: (await buildWorkloadCsr(ID('vm', 'roaming'), 'ec256')).csrPem, clusterId: 'cluster-not-configured-here' });
    expect(new X509Certificate(chain[0]!).subjectAltName).toBe(`URI:${ID('vm', 'roaming')}`);
    // A token still needs a cluster this CA knows.
    await expectRefused(ca.request({ csrPem: (await makeCsr()).pem, token: await mintToken(), clusterId: 'cluster-not-configured-here' }), status.UNAUTHENTICATED, /unknown cluster/);
  });

  it('refuses a client certificate of this CA whose SPIFFE ID is not an Istio workload identity with UNAUTHENTICATED, saying so', async () => {
    // Signed by the CA itself (another CA under a shared root could issue such a certificate).
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const spki = publicKey.export({ type: 'spki', format: 'der' });
    for (const uri of ['spiffe://cluster.local/legacy/app', 'spiffe://cluster.local/ns/Shop/sa/web']) {
      const now = Date.now();
      const leaf = ca.running.issuer().sign({ spki, uris: [uri], notBefore: new Date(now - 60_000), notAfter: new Date(now + 3600_000) });
      const mtls = ca.client({ clientCert: { certPem: leaf.pem + leaf.chainPem.slice(0, -1).join(''), keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string } });
      await expectRefused(mtls.createCertificate({ csrPem: (await makeCsr({ uris: [uri] })).pem }), status.UNAUTHENTICATED, /is not an Istio workload identity \(spiffe:\/\/<trust domain>\/ns\/<namespace>\/sa\/<service account>, with Kubernetes names\)$/);
    }
  });

  it('judges a client-certificate caller as the default cluster, whatever its clusterid header says', async () => {
    const edge = await startTestCa({
      auth: { clusters: [{ name: 'Kubernetes', jwt: [{ issuer: TEST_ISSUER, jwksFile: 'jwks.json' }] }, { name: 'edge', jwt: [{ issuer: TEST_ISSUER, jwksFile: 'jwks.json' }] }] },
      policy: { rules: [{ name: 'edge-short', match: { clusters: ['edge'] }, lifetime: { default: '1h', max: '1h' } }] },
    });
    try {
      const csr = await buildWorkloadCsr(ID('vm', 'pick'), 'ec256');
      const first = await edge.request({ csrPem: csr.csrPem, token: await mintToken({ ns: 'vm', sa: 'pick' }) });
      const mtls = edge.client({ clientCert: { certPem: first[0]! + first[1]!, keyPem: csr.privateKeyPem } });
      const hours = (pem: string): number => (Date.parse(new X509Certificate(pem).validTo) - Date.now()) / 3600_000;
      // With a token, the header's cluster decides (edge: 1 hour).
      const byToken = await edge.request({ csrPem: (await makeCsr({ uris: [ID('vm', 'pick')] })).pem, token: await mintToken({ ns: 'vm', sa: 'pick' }), clusterId: 'edge' });
      expect(hours(byToken[0]!)).toBeLessThanOrEqual(1);
      // With the client certificate alone, naming edge changes nothing: the default rule (24h).
      const byCert = await mtls.createCertificate({ csrPem: (await buildWorkloadCsr(ID('vm', 'pick'), 'ec256')).csrPem, clusterId: 'edge' });
      expect(hours(byCert[0]!)).toBeGreaterThan(23);
    } finally {
      await edge.close();
    }
  });

  it("gives a client-certificate caller the {cluster} its certificate's trust domain names, not the default cluster's names", async () => {
    const multi = await startTestCa({
      auth: { clusters: [{ name: 'Kubernetes', jwt: [{ issuer: TEST_ISSUER, jwksFile: 'jwks.json' }] }, { name: 'east', trustDomain: 'east.local', jwt: [{ issuer: TEST_ISSUER, jwksFile: 'jwks.json' }] }] },
      policy: { rules: [{ name: 'multi', match: { namespaces: ['multi'] }, extraSans: { dns: ['{serviceAccount}.{namespace}.svc.{cluster}.mesh'] } }] },
    });
    try {
      const id = 'spiffe://east.local/ns/multi/sa/web';
      const first = await makeCsr({ uris: [id], dns: ['web.multi.svc.east.mesh'] });
      const chain = await multi.request({ csrPem: first.pem, token: await mintToken({ ns: 'multi', sa: 'web' }), clusterId: 'east' });
      const mtls = multi.client({ clientCert: { certPem: chain[0]! + chain[1]!, keyPem: first.privateKeyPem } });
      // Judged as the default cluster for matching, but its names are east's, not the default cluster's.
      const theirs = await makeCsr({ uris: [id], dns: ['web.multi.svc.kubernetes.mesh'] });
      await expectRefused(mtls.createCertificate({ csrPem: theirs.pem }), status.INVALID_ARGUMENT);
      const own = await makeCsr({ uris: [id], dns: ['web.multi.svc.east.mesh'] });
      expect(new X509Certificate((await mtls.createCertificate({ csrPem: own.pem }))[0]!).subjectAltName).toBe(`URI:${id}, DNS:web.multi.svc.east.mesh`);
    } finally {
      await multi.close();
    }
  });

  it('lets policy tell client-certificate callers from token callers (authenticatedBy)', async () => {
    const vms = await startTestCa({
      policy: {
        rules: [
          { name: 'vm-renewals', match: { authenticatedBy: 'client-certificate', namespaces: ['vm-*'] } },
          { name: 'no-other-renewals', match: { authenticatedBy: ['client-certificate'] }, deny: 'renew with a service-account token' },
        ],
      },
    });
    try {
      const mtlsFor = async (ns: string): Promise<ReturnType<TestCa['client']>> => {
        const csr = await buildWorkloadCsr(ID(ns, 'app'), 'ec256');
        const first = await vms.request({ csrPem: csr.csrPem, token: await mintToken({ ns, sa: 'app' }) });
        return vms.client({ clientCert: { certPem: first[0]! + first[1]!, keyPem: csr.privateKeyPem } });
      };
      const vm = await mtlsFor('vm-db');
      expect(new X509Certificate((await vm.createCertificate({ csrPem: (await buildWorkloadCsr(ID('vm-db', 'app'), 'ec256')).csrPem }))[0]!).subjectAltName).toBe(`URI:${ID('vm-db', 'app')}`);
      // Its token got the first certificate; its client certificate gets nothing more.
      const web = await mtlsFor('web');
      await expectRefused(web.createCertificate({ csrPem: (await buildWorkloadCsr(ID('web', 'app'), 'ec256')).csrPem }), status.PERMISSION_DENIED, /^renew with a service-account token$/);
      // The client certificate is tried first: sent beside it, a token changes nothing.
      const token = await mintToken({ ns: 'web', sa: 'app' });
      await expectRefused(web.createCertificate({ csrPem: (await buildWorkloadCsr(ID('web', 'app'), 'ec256')).csrPem, token }), status.PERMISSION_DENIED);
      // The token alone is a token caller's request.
      expect(await vms.request({ csrPem: (await buildWorkloadCsr(ID('web', 'app'), 'ec256')).csrPem, token })).toHaveLength(3);
    } finally {
      await vms.close();
    }
  });

  it('authenticates a client that presents its leaf alone (no intermediate)', async () => {
    const csr = await buildWorkloadCsr(ID('vm', 'leafonly'), 'ec256');
    const first = await ca.request({ csrPem: csr.csrPem, token: await mintToken({ ns: 'vm', sa: 'leafonly' }) });
    const mtls = ca.client({ clientCert: { certPem: first[0]!, keyPem: csr.privateKeyPem } });
    const chain = await mtls.createCertificate({ csrPem: (await buildWorkloadCsr(ID('vm', 'leafonly'), 'ec256')).csrPem });
    expect(new X509Certificate(chain[0]!).subjectAltName).toBe(`URI:${ID('vm', 'leafonly')}`);
  });

  it("authenticates a certificate from another intermediate under a trusted root (another cluster's, under a shared root) through the intermediate the client sends", async () => {
    const other = mkdtempSync(join(tmpdir(), 'meshcert-other-intermediate-'));
    try {
      cpSync(join(ca.dir, 'ca'), other, { recursive: true });
      await renewIntermediate({ dir: other });
      const issuer = new LocalIssuer('other', loadCaDir(other));
      const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
      const leaf = issuer.sign({ spki: publicKey.export({ type: 'spki', format: 'der' }), uris: [ID('vm', 'elsewhere')], notBefore: new Date(Date.now() - 60_000), notAfter: new Date(Date.now() + 3600_000) });
      const mtls = ca.client({ clientCert: { certPem: leaf.pem + issuer.material.intermediatesPem.join(''), keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() } });
      const chain = await mtls.createCertificate({ csrPem: (await buildWorkloadCsr(ID('vm', 'elsewhere'), 'ec256')).csrPem });
      expect(new X509Certificate(chain[0]!).subjectAltName).toBe(`URI:${ID('vm', 'elsewhere')}`);
      // What that CA signs for a trust domain this one does not serve is not a credential here.
      const foreign = issuer.sign({ spki: publicKey.export({ type: 'spki', format: 'der' }), uris: ['spiffe://other.td/ns/vm/sa/elsewhere'], notBefore: new Date(Date.now() - 60_000), notAfter: new Date(Date.now() + 3600_000) });
      const foreignMtls = ca.client({ clientCert: { certPem: foreign.pem + issuer.material.intermediatesPem.join(''), keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() } });
      await expectRefused(foreignMtls.createCertificate({ csrPem: (await buildWorkloadCsr('spiffe://other.td/ns/vm/sa/elsewhere', 'ec256')).csrPem }), status.UNAUTHENTICATED, /trust domain other\.td, which this CA does not serve/);
    } finally {
      rmSync(other, { recursive: true, force: true });
    }
  });

  it('refuses a client certificate from a foreign CA as UNAUTHENTICATED', async () => {
    const keys = (await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify'])) as CryptoKeyPair;
    const self = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: '01',
      name: 'CN=foreign',
      notBefore: new Date(Date.now() - 60_000),
      notAfter: new Date(Date.now() + 3600_000),
      keys,
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
      extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'url', value: ID('vm', 'legacy') }])],
    });
    const pkcs8 = Buffer.from(await crypto.subtle.exportKey('pkcs8', keys.privateKey)).toString('base64');
    const keyPem = `-----BEGIN PRIVATE KEY-----\n${pkcs8.match(/.{1,64}/g)!.join('\n')}\n-----END PRIVATE KEY-----\n`;
    const mtls = ca.client({ clientCert: { certPem: self.toString('pem'), keyPem } });
    const csr = await makeCsr({ uris: [ID('vm', 'legacy')] });
    // Its holder is told why, not "no credential".
    await expectRefused(mtls.createCertificate({ csrPem: csr.pem }), status.UNAUTHENTICATED, /^client certificate not accepted: it is self-signed, not issued by this CA; send a service-account token/);
  });

  it('says why an expired client certificate of this CA is refused, and lets a token beside it decide', async () => {
    const issuer = new LocalIssuer('default', loadCaDir(join(ca.dir, 'ca')));
    const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const expired = issuer.sign({ spki: publicKey.export({ type: 'spki', format: 'der' }), uris: [ID('vm', 'lapsed')], notBefore: new Date(Date.now() - 7200_000), notAfter: new Date(Date.now() - 3600_000) });
    const mtls = ca.client({ clientCert: { certPem: expired.pem + issuer.material.intermediatesPem.join(''), keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() } });
    const csr = await buildWorkloadCsr(ID('vm', 'lapsed'), 'ec256');
    await expectRefused(mtls.createCertificate({ csrPem: csr.csrPem }), status.UNAUTHENTICATED, /^client certificate not accepted: it has expired; /);
    const chain = await mtls.createCertificate({ csrPem: csr.csrPem, token: await mintToken({ ns: 'vm', sa: 'lapsed' }) });
    expect(new X509Certificate(chain[0]!).subjectAltName).toBe(`URI:${ID('vm', 'lapsed')}`);
  });
});

function unsigned(): string {
  const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const now = Math.floor(Date.now() / 1000);
  return `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ iss: 'https://issuer.meshcert.test', aud: 'istio-ca', sub: 'system:serviceaccount:default:default', exp: now + 600, iat: now })}.`;
}
