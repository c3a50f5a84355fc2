import { status } from '@grpc/grpc-js';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CaClient } from '../../../src/client/ca-client.js';
import { loadConfigFile } from '../../../src/config/load.js';
import { createLogger } from '../../../src/log/logger.js';
import { runServer, type RunningServer } from '../../../src/runtime/serve.js';
import { makeCsr } from '../../fixtures/csr.js';
import { mintToken, TEST_ISSUER, writeTestJwks } from '../../support/harness.js';

const SECOND = 'https://second.meshcert.test';
const ID = 'spiffe://cluster.local/ns/shop/sa/web';

/** A serve config with the Kubernetes cluster's JWT issuers (each verified with jwks.json unless given), and `extra` appended. */
function configYaml(issuers: Array<string | [string, string]>, extra = ''): string {
  const jwt = issuers.map((i) => (typeof i === 'string' ? `{ issuer: "${i}", jwksFile: jwks.json }` : `{ issuer: "${i[0]}", jwksFile: ${i[1]} }`));
  return `dataDir: data
server: { listen: "127.0.0.1:0", workers: 1 }
admin: { enabled: false }
inventory: { store: none }
ca: { autoInit: true }
auth:
  clusters:
    - name: Kubernetes
      jwt: [${jwt.join(', ')}]
${extra}`;
}

describe('hot reload of authentication', () => {
  let dir: string;
  let file: string;
  let server: RunningServer;
  let client: CaClient;
  let logs = '';
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'meshcert-auth-reload-'));
    await writeTestJwks(join(dir, 'jwks.json'));
    file = join(dir, 'meshcert.yaml');
    writeFileSync(file, configYaml([TEST_ISSUER, SECOND]));
    const sink = new Writable({ write: (c, _e, cb) => ((logs += c.toString()), cb()) });
    server = await runServer(loadConfigFile(file).config, createLogger('info', sink), { configFile: file });
    client = new CaClient({ address: `127.0.0.1:${server.port}`, rootPem: readFileSync(join(dir, 'data/ca/root-cert.pem'), 'utf8') });
  });
  afterAll(async () => {
    client?.close();
    await server?.close();
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
      expect(logs).toMatch(/"authentication":"rebuilt"[^\n]*"msg":"configuration reloaded"/);
      expect(logs).not.toMatch(/authentication settings changed in the config but are not in force/);

      // A new issuer whose key file is not there: rejected, nothing changes.
      writeFileSync(file, configYaml([SECOND, TEST_ISSUER.replace('issuer', 'third'), [TEST_ISSUER, 'missing.json']]));
      expect(await server.reload('test')).toBe(false);
      expect(logs).toMatch(/missing\.json[^\n]*"msg":"configuration reload rejected; the previous policy, CAs and authentication stay in force"/);
      expect(await call(csr, first)).toBe(status.UNAUTHENTICATED);

      // The removed issuer back, together with a second cluster (which only a restart applies):
      // what is in force stays, not the start's, which trusted it.
      writeFileSync(file, configYaml([SECOND, TEST_ISSUER], '    - name: east\n      jwt: [{ issuer: "https://east.test", jwksFile: jwks.json }]\n'));
      expect(await server.reload('test')).toBe(true);
      expect(logs).toMatch(/"settings":\["auth"\][^\n]*"msg":"authentication settings changed in the config but are not in force/);
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
