/**
 * Interop with the stacks istio-agent is built on: grpc-go over TLS and Go's crypto/x509 (see
 * test/interop/go-client/main.go for what the client checks). The same calls through grpc-js
 * must be refused with the same code and message, so both decode grpc-status and grpc-message
 * alike.
 */
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildWorkloadCsr } from '../../src/client/workload-csr.js';
import { makeCsr } from '../fixtures/csr.js';
import { startServe, type ServerProcess } from '../support/cli.js';
import { buildGoClient, goClientUnavailable, type GoClient } from '../support/go-client.js';
import { mintToken, serveConfigYaml, startTestCa, TRUST_DOMAIN, type TestCa, writeServeDir } from '../support/harness.js';

const SERVER_NAME = 'meshcert.meshcert.svc';
const ID = (ns = 'default', sa = 'default') => `spiffe://${TRUST_DOMAIN}/ns/${ns}/sa/${sa}`;

const unavailable = goClientUnavailable();
let go: GoClient;
beforeAll(async () => {
  if (!unavailable) go = await buildGoClient();
}, 300_000);
afterAll(() => go?.remove());

describe.skipIf(unavailable)('grpc-go and Go crypto/x509 against a real meshcert', () => {
  let ca: TestCa;
  let root: string;
  const call = (args: Record<string, string | number>) => go.run({ addr: ca.address, root, 'server-name': SERVER_NAME, ...args });

  beforeAll(async () => {
    ca = await startTestCa({ server: { tls: { dnsNames: [SERVER_NAME] } } });
    root = join(ca.dir, 'trusted-root.pem');
    writeFileSync(root, ca.rootPem);
  });
  afterAll(async () => {
    await ca?.close();
  });

  it.each([
    ['istio-agent default: RSA-2048 key, subject O=, RS256 token', 'rsa2048', 'o-empty', 'RS256' as const, 'payments', 'api'],
    ["ztunnel's CSR shape: ECDSA P-256 key, empty subject (ES256 token)", 'ec256', 'empty', 'ES256' as const, 'default', 'default'],
    ['ECDSA P-384 key (istio-agent with ECC_CURVE=P384)', 'ec384', 'o-empty', 'RS256' as const, 'shop', 'cart'],
  ])('%s: issued, and the chain passes Go verification and the X509-SVID checks', async (_name, key, subject, alg, ns, sa) => {
    const { ok, result } = await call({ token: await mintToken({ alg, ns, sa }), key, subject, id: ID(ns, sa), ttl: 86400 });
    expect(result.error).toBeUndefined();
    expect(ok).toBe(true);
    expect(result).toMatchObject({ code: 'OK', alpn: 'h2', tlsVersion: 'TLS1.3', chainElements: 3, roots: 1, leafUris: [ID(ns, sa)] });
    // Verified for serverAuth and clientAuth, against the response's roots and the configured root.
    expect(result.verifiedPaths).toBe(4);
    expect(result.lifetimeSeconds).toBeGreaterThan(86400 - 120);
  });

  it('validity_duration 0 gets the default lifetime (24h)', async () => {
    const { ok, result } = await call({ token: await mintToken(), id: ID(), ttl: 0 });
    expect(ok, result.error).toBe(true);
    expect(result.lifetimeSeconds).toBeGreaterThan(86400 - 120);
    expect(result.lifetimeSeconds).toBeLessThanOrEqual(86400);
  });

  it('a shorter lifetime than the default is honoured', async () => {
    const { ok, result } = await call({ token: await mintToken(), id: ID(), ttl: 3600 });
    expect(ok, result.error).toBe(true);
    expect(result.lifetimeSeconds).toBeGreaterThan(3600 - 120);
    expect(result.lifetimeSeconds).toBeLessThanOrEqual(3600);
  });

  it('a client limited to TLS 1.2 (Go\'s default cipher suites) is served', async () => {
    const { ok, result } = await call({ token: await mintToken(), id: ID(), tls12: 'true' });
    expect(ok, result.error).toBe(true);
    expect(result).toMatchObject({ code: 'OK', tlsVersion: 'TLS1.2', alpn: 'h2', chainElements: 3 });
  });

  it('a client certificate meshcert issued authenticates a renewal without a token (mTLS from Go)', async () => {
    const first = await buildWorkloadCsr(ID('vm', 'legacy'), 'ec256');
    const chain = await ca.request({ csrPem: first.csrPem, token: await mintToken({ ns: 'vm', sa: 'legacy' }) });
    const cert = join(ca.dir, 'client-chain.pem');
    const key = join(ca.dir, 'client-key.pem');
    writeFileSync(cert, chain[0]! + chain[1]!);
    writeFileSync(key, first.privateKeyPem, { mode: 0o600 });
    const renewed = await call({ token: '', cert, 'key-file': key, key: 'ec256', id: ID('vm', 'legacy') });
    expect(renewed.ok, renewed.result.error).toBe(true);
    expect(renewed.result).toMatchObject({ code: 'OK', leafUris: [ID('vm', 'legacy')] });
    // The certificate's identity is all it may ask for.
    const other = await call({ token: '', cert, 'key-file': key, id: ID('vm', 'other'), expect: 'PermissionDenied' });
    expect(other.ok, other.result.error).toBe(true);
  });

  it('a gzip-compressed request (grpc-encoding: gzip) is read and answered', async () => {
    const { ok, result } = await call({ token: await mintToken({ alg: 'ES256' }), key: 'ec256', id: ID(), gzip: 'true' });
    expect(ok, result.error).toBe(true);
    expect(result).toMatchObject({ code: 'OK', chainElements: 3 });
  });

  it('headers over 64 KiB fail at once in grpc-go, which reads the advertised limit, instead of a call hanging with no deadline until the idle timeout', async () => {
    // nghttp2 refuses a header field over about 100 KB with a GOAWAY that leaves the stream open;
    // istio-agent sets no deadline. Under the limit, the call is served.
    const served = await call({ token: await mintToken(), id: ID(), 'header-bytes': 30_000 });
    expect(served.ok, served.result.error).toBe(true);
    const t0 = Date.now();
    const { ok, result } = await call({ token: await mintToken(), id: ID(), 'header-bytes': 110_000, expect: 'Internal' });
    expect(ok, JSON.stringify(result)).toBe(true);
    expect(result.message).toMatch(/header list size .* violates the maximum size \(65536 bytes\) set by server/);
    expect(Date.now() - t0).toBeLessThan(20_000);
  });

  it('two calls get different serial numbers', async () => {
    const [a, b] = await Promise.all([call({ token: await mintToken(), id: ID() }), call({ token: await mintToken(), id: ID() })]);
    expect(a.ok && b.ok).toBe(true);
    expect(a.result.leafSerial).not.toBe(b.result.leafSerial);
  });

  it('grpc.health.v1 Check through grpc-go\'s generated client answers SERVING', async () => {
    const { ok, result } = await call({ health: 'true' });
    expect(ok, result.error).toBe(true);
    expect(result).toMatchObject({ code: 'OK', health: 'SERVING' });
  });

  // Each refusal as grpc-go sees it, then the same request through grpc-js.
  it.each([
    ['no token', 'Unauthenticated', async () => ({ token: '' }), 16],
    ['a token signed by an unknown key', 'Unauthenticated', async () => ({ token: await mintToken({ foreignKey: true }) }), 16],
    ['an unknown clusterid', 'Unauthenticated', async () => ({ cluster: 'other-cluster' }), 16],
    ['text that is not a CSR', 'InvalidArgument', async () => ({ 'csr-text': 'this is not a CSR' }), 3],
    ['a CSR naming another service account', 'PermissionDenied', async () => ({ id: ID('kube-system', 'admin') }), 7],
    ['a request larger than server.maxRequestBytes (64 KiB)', 'ResourceExhausted', async () => ({ 'csr-text': 'A'.repeat(80_000) }), 8],
  ])('refuses %s with %s, and grpc-js reads the same status', async (_name, code, args, grpcJsCode) => {
    const extra = await args();
    const token = 'token' in extra ? extra.token : await mintToken();
    const { ok, result } = await call({ id: ID(), ...extra, token, expect: code });
    expect(result.error).toBeUndefined();
    expect(ok).toBe(true);
    expect(result.code).toBe(code);
    expect(result.message).toBeTruthy();
    // Nothing internal reaches the client: no paths, stack frames, error class names or tokens.
    expect(result.message).not.toMatch(/\/work\/|\/tmp\/|node_modules|\bat .*\.[jt]s:|Error:|eyJ/);

    const csrPem = 'csr-text' in extra ? (extra['csr-text'] as string) : (await makeCsr({ uris: [String('id' in extra ? extra.id : ID())] })).pem;
    const err = (await ca
      .client()
      .createCertificate({ csrPem, ...(token ? { token } : {}), clusterId: 'cluster' in extra ? (extra.cluster as string) : 'Kubernetes' })
      .then(
        () => undefined,
        (e: unknown) => e,
      )) as { code: number; details: string } | undefined;
    expect(err?.code).toBe(grpcJsCode);
    expect(err?.details).toBe(result.message);
  });
});

describe.skipIf(unavailable)('grpc-go against `meshcert serve` with two cluster workers', () => {
  let dir: string;
  let server: ServerProcess | undefined;
  beforeAll(async () => {
    let configFile: string;
    ({ dir, config: configFile } = await writeServeDir('meshcert-go-serve-', serveConfigYaml({ workers: 2 })));
    server = await startServe(['--config', configFile]);
  }, 90_000);
  afterAll(async () => {
    if (server && server.child.exitCode === null) {
      server.child.kill('SIGTERM');
      await server.exited;
    }
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('calls on connections served by both workers all get chains Go verifies', async () => {
    const root = join(dir, 'data/ca/root-cert.pem');
    // One process, hence one connection, per call: the primary spreads them over the workers.
    const runs = await Promise.all(
      Array.from({ length: 6 }, async (_, i) => {
        const [ns, sa, key, alg] = i % 2 ? ['team-a', `svc-${i}`, 'ec256', 'ES256' as const] : ['team-b', `svc-${i}`, 'rsa2048', 'RS256' as const];
        return go.run({ addr: `127.0.0.1:${server!.port}`, root, 'server-name': 'localhost', token: await mintToken({ ns, sa, alg }), key, id: ID(ns, sa) });
      }),
    );
    for (const { ok, result } of runs) {
      expect(result.error).toBeUndefined();
      expect(ok).toBe(true);
      expect(result).toMatchObject({ code: 'OK', alpn: 'h2', chainElements: 3, verifiedPaths: 4 });
    }
    expect(new Set(runs.map((r) => r.result.leafSerial)).size).toBe(6);
    // Each issuance is logged by the worker that served it (logs are flushed every 250 ms).
    const workers = () => new Set([...server!.output().matchAll(/"worker":(\d+)[^\n]*"msg":"certificate issued"/g)].map((m) => m[1]));
    await expect.poll(() => workers().size, { timeout: 5_000 }).toBe(2);
  });
});
