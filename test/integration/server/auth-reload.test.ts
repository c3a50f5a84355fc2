import { status } from '@grpc/grpc-js';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CaClient } from '../../../src/client/ca-client.js';
import type { RunningServer } from '../../../src/runtime/serve.js';
import { makeCsr } from '../../fixtures/csr.js';
import { FakeKube, serviceAccountUser } from '../../support/fake-kube.js';
import { mintToken, TEST_ISSUER, writeTestJwks } from '../../support/harness.js';
import { serveFile, type ServedFile } from '../../support/serve-file.js';
import { makeCert } from '../../unit/auth/helpers.js';

const SECOND = 'https://second.meshcert.test';
const ID = 'spiffe://cluster.local/ns/shop/sa/web';

/** One process serving the cluster "Kubernetes" authenticated by `auth` (its settings, one line), and `extra` appended. */
function serveYaml(auth: string, extra = ''): string {
  return `dataDir: data
server: { listen: "127.0.0.1:0", workers: 1 }
admin: { enabled: false }
inventory: { store: none }
ca: { autoInit: true }
auth:
  clusters:
    - name: Kubernetes
      ${auth}
${extra}`;
}

/** A serve config with the Kubernetes cluster's JWT issuers (each verified with jwks.json unless given), and `extra` appended. */
function configYaml(issuers: Array<string | [string, string]>, extra = ''): string {
  const jwt = issuers.map((i) => (typeof i === 'string' ? `{ issuer: "${i}", jwksFile: jwks.json }` : `{ issuer: "${i[0]}", jwksFile: ${i[1]} }`));
  return serveYaml(`jwt: [${jwt.join(', ')}]`, extra);
}

describe('hot reload of authentication', () => {
  let dir: string;
  let file: string;
  let server: RunningServer;
  let client: CaClient;
  let serving: ServedFile;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'meshcert-auth-reload-'));
    await writeTestJwks(join(dir, 'jwks.json'));
    file = join(dir, 'meshcert.yaml');
    writeFileSync(file, configYaml([TEST_ISSUER, SECOND]));
    serving = await serveFile(file);
    ({ server, client } = serving);
  });
  afterAll(async () => {
    await serving?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const call = (csrPem: string, token: string): Promise<string | number> =>
    client.createCertificate({ csrPem, token }).then(
      () => 'ok',
      (e: { code: number }) => e.code,
    );

  it('stops trusting a removed issuer at once (its cached tokens too) without failing a call of the others, refuses a reload it cannot build, and keeps what is in force through a change only a restart applies', async () => {
    const csr = (await makeCsr({ uris: [ID] })).pem;
    const first = await mintToken({ ns: 'shop', sa: 'web' });
    const second = await mintToken({ ns: 'shop', sa: 'web', iss: SECOND });
    expect([await call(csr, first), await call(csr, second)]).toEqual(['ok', 'ok']); // both verified, and cached

    // Calls with the second issuer's token for the whole test: none may fail.
    let stop = false;
    let served = 0;
    const failures: unknown[] = [];
    const load = Promise.all(
      Array.from({ length: 4 }, async () => {
        while (!stop) await call(csr, second).then((r) => (r === 'ok' ? served++ : failures.push(r)));
      }),
    );
    try {
      writeFileSync(file, configYaml([SECOND]));
      expect(await server.reload('test')).toBe(true);
      expect(await call(csr, first)).toBe(status.UNAUTHENTICATED);
      expect(serving.logs()).toMatch(/"authentication":"rebuilt"[^\n]*"msg":"configuration reloaded"/);
      expect(serving.logs()).not.toMatch(/authentication settings changed in the config but are not in force/);

      // A new issuer whose key file is not there: rejected, nothing changes.
      writeFileSync(file, configYaml([SECOND, TEST_ISSUER.replace('issuer', 'third'), [TEST_ISSUER, 'missing.json']]));
      expect(await server.reload('test')).toBe(false);
      expect(serving.logs()).toMatch(/missing\.json[^\n]*"msg":"configuration reload rejected; the previous policy, CAs and authentication stay in force"/);
      expect(await call(csr, first)).toBe(status.UNAUTHENTICATED);

      // The removed issuer back, together with a second cluster (which only a restart applies):
      // what is in force stays, not the start's, which trusted it.
      writeFileSync(file, configYaml([SECOND, TEST_ISSUER], '    - name: east\n      jwt: [{ issuer: "https://east.test", jwksFile: jwks.json }]\n'));
      expect(await server.reload('test')).toBe(true);
      expect(serving.logs()).toMatch(/"settings":\["auth"\][^\n]*"msg":"authentication settings changed in the config but are not in force/);
      expect(await call(csr, first)).toBe(status.UNAUTHENTICATED);

      // Without the second cluster it applies: the start's settings again, rebuilt (not taken as still in force).
      writeFileSync(file, configYaml([TEST_ISSUER, SECOND]));
      expect(await server.reload('test')).toBe(true);
      expect(await call(csr, first)).toBe('ok');
    } finally {
      stop = true;
      await load;
    }
    expect(failures).toEqual([]);
    expect(served).toBeGreaterThan(0);
  }, 60_000);
});

describe("hot reload of a TokenReview cluster's CA file (the cluster's CA rotated)", () => {
  let dir: string;
  let fake: FakeKube;
  let server: RunningServer;
  let client: CaClient;
  let caFile: string;
  let serving: ServedFile;
  const b64 = (o: unknown): string => Buffer.from(JSON.stringify(o)).toString('base64url');
  // Shaped as a service-account token; the fake API server's review decides (no signature check here).
  const token = `${b64({ alg: 'RS256' })}.${b64({ sub: 'system:serviceaccount:default:app' })}.c2ln`;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'meshcert-tr-reload-'));
    fake = await FakeKube.start({ token: 'meshcert-own' });
    fake.tokenReviewer = (spec) => ({ authenticated: true, user: serviceAccountUser('default', 'app'), audiences: spec.audiences ?? [] });
    caFile = join(dir, 'ca.crt');
    // Before the rotation reaches this file: a CA the API server's certificate does not chain to.
    writeFileSync(caFile, (await makeCert({ name: 'the cluster CA before rotation', ca: true })).pem);
    writeFileSync(join(dir, 'token'), 'meshcert-own');
    const file = join(dir, 'meshcert.yaml');
    writeFileSync(file, serveYaml(`tokenReview: { apiServer: "${fake.url}", caFile: ca.crt, tokenFile: token, verifySignatures: false }`));
    serving = await serveFile(file);
    ({ server, client } = serving);
  });
  afterAll(async () => {
    await serving?.close();
    await fake?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('answers UNAVAILABLE while the API server cannot be trusted, issues once a reload reads the rotated bundle, and keeps that bundle through a reload of a broken file', async () => {
    const csrPem = (await makeCsr({ uris: ['spiffe://cluster.local/ns/default/sa/app'] })).pem;
    const call = (): Promise<string | number> =>
      client.createCertificate({ csrPem, token }).then(
        () => 'ok',
        (e: { code: number }) => e.code,
      );
    // UNAVAILABLE (retried by istio-agent), not UNAUTHENTICATED: the token was never judged.
    expect(await call()).toBe(status.UNAVAILABLE);

    writeFileSync(caFile, fake.caPem);
    expect(await server.reload('test')).toBe(true);
    expect(await call()).toBe('ok');

    // Half-written during the next rotation: the reload is refused, naming the file, and the bundle in force stays.
    writeFileSync(caFile, '-----BEGIN CERTIFICATE-----\n');
    expect(await server.reload('test')).toBe(false);
    expect(serving.logs()).toMatch(/tokenreview\.caFile [^"]*ca\.crt/);
    expect(await call()).toBe('ok');
  }, 60_000);
});
