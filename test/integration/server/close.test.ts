import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../../src/config/load.js';
import { createLogger } from '../../../src/log/logger.js';
import { runServer } from '../../../src/runtime/serve.js';
import { grpcRequestFrame } from '../../../bench/lib/grpc-frame.js';
import { makeCsr } from '../../fixtures/csr.js';
import { mintToken, startTestCa, TEST_ISSUER, writeTestJwks } from '../../support/harness.js';
import { connectTls, startCall } from '../../support/raw-grpc.js';

const CREATE = '/istio.v1.auth.IstioCertificateService/CreateCertificate';

describe('RunningServer.close with server.shutdownDelay', () => {
  const dir = mkdtempSync(join(tmpdir(), 'meshcert-close-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('shuts down once: a second close during the delay ends the delay and shares the same shutdown', async () => {
    await writeTestJwks(join(dir, 'jwks.json'));
    const config = parseConfig(
      {
        dataDir: dir,
        server: { listen: '127.0.0.1:0', workers: 1, shutdownDelay: '5m', shutdownGrace: '5s' },
        admin: { listen: '127.0.0.1:0' },
        ca: { autoInit: true },
        auth: { clusters: [{ name: 'Kubernetes', jwt: [{ issuer: TEST_ISSUER, jwksFile: join(dir, 'jwks.json') }] }] },
      },
      {},
      'test',
      dir,
    );
    let logs = '';
    const server = await runServer(config, createLogger('info', new Writable({ write: (c, _e, cb) => ((logs += String(c)), cb()) })));
    const first = server.close();
    const second = server.close();
    expect(second).toBe(first);
    await first; // the delay is 5 minutes: only the second close lets this resolve
    await new Promise((r) => setTimeout(r, 300)); // the logger flushes on a timer
    expect(logs.match(/"msg":"shutdown delay: reporting not ready, still serving"/g)).toHaveLength(1);
    expect(logs).not.toMatch(/"level":50/); // no error while stopping (twice would close the admin server twice)
  }, 30_000);
});

describe('a call admitted before shutdown whose request ends after it', () => {
  it('is refused UNAVAILABLE, saying the process is shutting down (not that the CA is not ready yet)', async () => {
    const ca = await startTestCa();
    const session = connectTls(ca.port, ca.rootPem);
    try {
      const body = grpcRequestFrame((await makeCsr({ uris: ['spiffe://cluster.local/ns/default/sa/app'] })).pem);
      const { stream, reply } = startCall(session, CREATE, { authorization: `Bearer ${await mintToken({ ns: 'default', sa: 'app' })}`, clusterid: 'Kubernetes' });
      stream.write(body.subarray(0, 10));
      const goaway = new Promise<void>((resolve) => session.once('goaway', () => resolve()));
      // Let the server see the call's headers first: only then is it admitted.
      await new Promise((r) => setTimeout(r, 200));
      const closed = ca.running.close();
      await goaway;
      stream.end(body.subarray(10));
      const r = await reply;
      expect(r.grpcStatus).toBe(14);
      expect(r.grpcMessage).toBe('this meshcert process is shutting down; retry on a new connection');
      await closed;
    } finally {
      session.destroy();
      await ca.close().catch(() => {});
    }
  }, 30_000);
});
