/**
 * TokenReview authentication through the real server: a bearer token that cannot be a
 * service-account token is refused UNAUTHENTICATED without a round trip to the API server, and
 * one that could be is asked about. With the API server's service-account keys readable
 * (tokenReview.verifySignatures, on by default), a token none of them signed is refused without
 * a review too.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { makeCsr } from '../../fixtures/csr.js';
import { FakeKube, serviceAccountUser } from '../../support/fake-kube.js';
import { startTestCa, type TestCa } from '../../support/harness.js';
import { k8sClaims, signingKey, signToken, type SigningKey } from '../../unit/auth/helpers.js';

const b64 = (o: unknown): string => Buffer.from(JSON.stringify(o)).toString('base64url');

/** A fake API server (requiring meshcert's own token) and a CA that reviews tokens with it. */
async function startWithFakeKube(prefix: string, configure: (fake: FakeKube) => void): Promise<{ fake: FakeKube; ca: TestCa; dir: string; csrPem: string }> {
  const fake = await FakeKube.start({ token: 'meshcert-own' });
  configure(fake);
  const dir = mkdtempSync(join(tmpdir(), prefix));
  writeFileSync(join(dir, 'ca.crt'), fake.caPem);
  writeFileSync(join(dir, 'token'), 'meshcert-own');
  const ca = await startTestCa({ auth: { clusters: [{ name: 'Kubernetes', tokenReview: { apiServer: fake.url, caFile: join(dir, 'ca.crt'), tokenFile: join(dir, 'token') } }] } });
  const csrPem = (await makeCsr({ uris: ['spiffe://cluster.local/ns/default/sa/app'] })).pem;
  return { fake, ca, dir, csrPem };
}

describe('TokenReview authentication over gRPC', () => {
  let fake: FakeKube;
  let ca: TestCa;
  let dir: string;
  let csrPem: string;
  beforeAll(async () => {
    ({ fake, ca, dir, csrPem } = await startWithFakeKube('meshcert-grpc-tr-', (f) => {
      f.tokenReviewer = () => ({ authenticated: false, error: 'invalid bearer token' });
    }));
  });
  afterAll(async () => {
    await ca?.close();
    await fake?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const reviews = (): number => fake.requests.filter((r) => r.path === '/apis/authentication.k8s.io/v1/tokenreviews').length;

  it.each([
    ['not a JWT', 'junk-token-value-1234', 'bearer token is not a Kubernetes service-account token (not a JWT)'],
    ['a JWT naming no service account', `${b64({ alg: 'RS256' })}.${b64({ sub: 'alice-secret-subject' })}.c2ln`, 'token does not belong to a Kubernetes service account'],
  ])('refuses a token that is %s as UNAUTHENTICATED without asking the API server', async (_name, token, details) => {
    const before = reviews();
    const err = (await ca.client().createCertificate({ csrPem, token }).then(
      () => undefined,
      (e: unknown) => e,
    )) as { code: number; details: string } | undefined;
    expect(err?.code).toBe(status.UNAUTHENTICATED);
    expect(err?.details).toBe(details);
    expect(err?.details).not.toContain(token);
    expect(reviews()).toBe(before);
  });

  it('asks the API server about a token that could be a service-account token (its keys are not served here: 404)', async () => {
    const before = reviews();
    const token = `${b64({ alg: 'RS256' })}.${b64({ sub: 'system:serviceaccount:default:app' })}.c2ln`;
    const err = (await ca.client().createCertificate({ csrPem, token }).then(
      () => undefined,
      (e: unknown) => e,
    )) as { code: number; details: string } | undefined;
    expect(err?.code).toBe(status.UNAUTHENTICATED);
    expect(err?.details).not.toContain(token);
    expect(err?.details).not.toContain('invalid bearer token');
    expect(reviews()).toBe(before + 1);
  });
});

describe('TokenReview authentication over gRPC, with the API server\'s service-account keys', () => {
  let fake: FakeKube;
  let ca: TestCa;
  let dir: string;
  let csrPem: string;
  let apiKey: SigningKey;
  beforeAll(async () => {
    apiKey = await signingKey('RS256', 'sa-key');
    ({ fake, ca, dir, csrPem } = await startWithFakeKube('meshcert-grpc-trk-', (f) => {
      f.serviceAccountKeys = [apiKey.jwk];
      f.tokenReviewer = (spec) => ({ authenticated: true, user: serviceAccountUser('default', 'app'), audiences: spec.audiences ?? [] });
    }));
  });
  afterAll(async () => {
    await ca?.close();
    await fake?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const reviews = (): number => fake.requests.filter((r) => r.path === '/apis/authentication.k8s.io/v1/tokenreviews').length;

  it('refuses a forged token UNAUTHENTICATED without a review, and issues for one the API server signed, after its review', async () => {
    const forger = await signingKey('RS256', 'sa-key');
    const forged = await signToken(forger, k8sClaims('default', 'app'));
    const attempt = (): Promise<{ code: number; details: string } | undefined> =>
      ca.client().createCertificate({ csrPem, token: forged }).then(
        () => undefined,
        (e: unknown) => e as { code: number; details: string },
      );
    // The keys are read at start, in the background; until then TokenReview decides alone (and this fake says yes).
    await vi.waitFor(async () => expect((await attempt())?.code).toBe(status.UNAUTHENTICATED), { timeout: 10_000, interval: 100 });
    const before = reviews();
    const err = await attempt();
    expect(err?.code).toBe(status.UNAUTHENTICATED);
    expect(err?.details).toBe("token signature does not verify with the Kubernetes API server's service-account keys");
    expect(reviews()).toBe(before);

    const chain = await ca.client().createCertificate({ csrPem, token: await signToken(apiKey, k8sClaims('default', 'app')) });
    expect(chain.length).toBeGreaterThan(1);
    expect(chain[0]).toContain('-----BEGIN CERTIFICATE-----');
    expect(reviews()).toBe(before + 1);
    // Read with meshcert's own credentials.
    expect(fake.requests.find((r) => r.path === '/openid/v1/jwks')?.authorization).toBe('Bearer meshcert-own');
  });
});
