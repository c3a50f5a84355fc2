/**
 * A reload that changes the signing CA with a user-supplied serving certificate
 * (server.tls.certFile): the TLS listener must trust client certificates from the new
 * intermediate at once, though its own certificate (the operator's files) stays. And a reload
 * that waits on authentication does not put back a serving pair replaced meanwhile.
 */
import { X509Certificate } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { connect } from 'node:tls';
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

describe('a reload that builds authentication while the serving files change', () => {
  const dir = mkdtempSync(join(tmpdir(), 'meshcert-tls-race-'));
  let running: RunningMeshcert | undefined;
  const slow = createServer();
  afterAll(async () => {
    await running?.close();
    slow.closeAllConnections();
    await new Promise<void>((resolve) => slow.close(() => resolve()));
    rmSync(dir, { recursive: true, force: true });
  });

  /** The serial of the certificate the listener presents now. */
  const servedSerial = (port: number): Promise<string> =>
    new Promise((resolve, reject) => {
      const socket = connect({ host: '127.0.0.1', port, servername: 'localhost', ALPNProtocols: ['h2'], rejectUnauthorized: false }, () => {
        resolve(socket.getPeerCertificate().serialNumber);
        socket.destroy();
      });
      socket.on('error', reject);
    });

  it('keeps the pair the file watch put in force while the reload waited on a new key set', async () => {
    const caDir = join(dir, 'ca');
    await initCaDir({ dir: caDir });
    await writeTestJwks(join(dir, 'jwks.json'));
    const issue = localServingCertIssuer(() => new LocalIssuer('default', loadCaDir(caDir)));
    const first = await issue(['localhost'], 86_400);
    mkdirSync(join(dir, 'tls'));
    writeFileSync(join(dir, 'tls/crt.pem'), first.certChainPem);
    writeFileSync(join(dir, 'tls/key.pem'), first.keyPem, { mode: 0o600 });
    // A key-set endpoint that answers once released: the reload that adds it waits on its first read
    // (at most the 5 s fetch timeout).
    const jwks = readFileSync(join(dir, 'jwks.json'), 'utf8');
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    slow.on('request', (_req, res) => void released.then(() => res.writeHead(200, { 'content-type': 'application/json' }).end(jwks)));
    await new Promise<void>((resolve) => slow.listen(0, '127.0.0.1', resolve));
    const settings = (issuers: Array<{ issuer: string; jwksFile?: string; jwksUri?: string }>) =>
      parseConfig(
        {
          dataDir: dir,
          trustDomain: TRUST_DOMAIN,
          server: { listen: '127.0.0.1:0', shutdownGrace: '5s', tls: { certFile: join(dir, 'tls/crt.pem'), keyFile: join(dir, 'tls/key.pem') } },
          ca: { dir: caDir },
          auth: { clusters: [{ name: 'Kubernetes', jwt: issuers }] },
        },
        {},
        'test',
        dir,
      );
    const own = { issuer: TEST_ISSUER, jwksFile: join(dir, 'jwks.json') };
    running = await startMeshcert(settings([own]), { logger: createLogger('silent') });
    const firstSerial = new X509Certificate(first.certChainPem).serialNumber;
    expect(await servedSerial(running.port)).toBe(firstSerial);

    const reloaded = running.reload(settings([own, { issuer: 'https://slow.meshcert.test', jwksUri: `http://127.0.0.1:${(slow.address() as AddressInfo).port}/jwks` }]));
    let settled = false;
    void reloaded.finally(() => (settled = true)).catch(() => undefined);
    // The operator replaces the pair while the reload waits; the file watch (2 s poll) puts it in force.
    const second = await issue(['localhost'], 86_400);
    writeFileSync(join(dir, 'tls/crt.pem'), second.certChainPem);
    writeFileSync(join(dir, 'tls/key.pem'), second.keyPem, { mode: 0o600 });
    const secondSerial = new X509Certificate(second.certChainPem).serialNumber;
    await expect.poll(() => servedSerial(running!.port), { timeout: 4000, interval: 100 }).toBe(secondSerial);
    // Still waiting on the key set (the fetch's 5 s had not run out): the race the test is about.
    expect(settled).toBe(false);
    release();
    await reloaded;
    // The reload's swap took the pair in force after its wait, not the one before it.
    expect(await servedSerial(running.port)).toBe(secondSerial);
  });
});
