/**
 * A reload that changes the signing CA with a user-supplied serving certificate
 * (server.tls.certFile): the TLS listener must trust client certificates from the new
 * intermediate at once, though its own certificate (the operator's files) stays.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { initCaDir } from '../../../src/ca/init.js';
import { loadCaDir } from '../../../src/ca/material.js';
import { renewIntermediate } from '../../../src/ca/rotate.js';
import { CaClient } from '../../../src/client/ca-client.js';
import { buildWorkloadCsr } from '../../../src/client/workload-csr.js';
import { parseConfig } from '../../../src/config/load.js';
import { localServingCertIssuer } from '../../../src/controllers/serving-issuer.js';
import { LocalIssuer } from '../../../src/issuer/local.js';
import { createLogger } from '../../../src/log/logger.js';
import { startMeshcert, type RunningMeshcert } from '../../../src/main.js';
import { mintToken, TEST_ISSUER, TRUST_DOMAIN, writeTestJwks } from '../../support/harness.js';

const ID = `spiffe://${TRUST_DOMAIN}/ns/vm/sa/renewed`;

describe('a reload that changes the signing CA, with server.tls.certFile', () => {
  const dir = mkdtempSync(join(tmpdir(), 'meshcert-tls-reload-'));
  let running: RunningMeshcert | undefined;
  const clients: CaClient[] = [];
  afterAll(async () => {
    clients.forEach((c) => c.close());
    await running?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('trusts client certificates from the new intermediate (leaf alone) after the reload', async () => {
    const caDir = join(dir, 'ca');
    await initCaDir({ dir: caDir });
    await writeTestJwks(join(dir, 'jwks.json'));
    // The operator's serving certificate, from the same CA.
    const serving = await localServingCertIssuer(() => new LocalIssuer('default', loadCaDir(caDir)))(['localhost'], 86_400);
    mkdirSync(join(dir, 'tls'));
    writeFileSync(join(dir, 'tls/crt.pem'), serving.certChainPem);
    writeFileSync(join(dir, 'tls/key.pem'), serving.keyPem, { mode: 0o600 });
    const config = parseConfig(
      {
        dataDir: dir,
        trustDomain: TRUST_DOMAIN,
        server: { listen: '127.0.0.1:0', shutdownGrace: '5s', tls: { certFile: join(dir, 'tls/crt.pem'), keyFile: join(dir, 'tls/key.pem') } },
        ca: { dir: caDir },
        auth: { clusters: [{ name: 'Kubernetes', jwt: [{ issuer: TEST_ISSUER, jwksFile: join(dir, 'jwks.json') }] }] },
      },
      {},
      'test',
      dir,
    );
    running = await startMeshcert(config, { logger: createLogger('silent') });
    const rootPem = readFileSync(join(caDir, 'root-cert.pem'), 'utf8');
    const client = (extra: Partial<ConstructorParameters<typeof CaClient>[0]> = {}): CaClient => {
      const c = new CaClient({ address: `127.0.0.1:${running!.port}`, rootPem, serverName: 'localhost', ...extra });
      clients.push(c);
      return c;
    };

    await renewIntermediate({ dir: caDir });
    await running.reload(config);
    // A certificate from the new intermediate, presented alone (as the registry's anchors allow).
    const csr = await buildWorkloadCsr(ID, 'ec256');
    const issued = await client().createCertificate({ csrPem: csr.csrPem, token: await mintToken({ ns: 'vm', sa: 'renewed' }) });
    expect(issued[1]).toBe(readFileSync(join(caDir, 'ca-cert.pem'), 'utf8'));
    const mtls = client({ clientCert: { certPem: issued[0]!, keyPem: csr.privateKeyPem } });
    const chain = await mtls.createCertificate({ csrPem: (await buildWorkloadCsr(ID, 'ec256')).csrPem });
    expect(chain).toHaveLength(3);
  });
});
