/**
 * server.maxConnections with two worker processes: each worker keeps at most that many
 * connections, and one beyond the bound is closed at once, not held (Node's own
 * net.Server.maxConnections would hand it back to the primary, which offers it to the workers in
 * turn until one has room, spinning meanwhile).
 */
import { readFileSync, rmSync } from 'node:fs';
import type { ClientHttp2Session } from 'node:http2';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { makeCsr } from '../fixtures/csr.js';
import { killIfRunning, startServe, type ServerProcess } from '../support/cli.js';
import { mintToken, serveConfigYaml, writeServeDir } from '../support/harness.js';
import { grpcRequestFrame } from '../../bench/lib/grpc-frame.js';
import { connectTls, statusOf, unaryCall } from '../support/raw-grpc.js';

describe('server.maxConnections across worker processes', () => {
  let dir: string;
  let server: ServerProcess | undefined;
  const sessions: ClientHttp2Session[] = [];
  afterAll(() => {
    sessions.forEach((s) => s.destroy());
    killIfRunning(server);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('serves one connection per worker and closes one beyond at once', async () => {
    let file: string;
    ({ dir, config: file } = await writeServeDir('meshcert-maxconn-', serveConfigYaml({ workers: 2 }).replace('workers: 2 }', 'workers: 2, maxConnections: 1 }')));
    server = await startServe(['--config', file]);
    const rootPem = readFileSync(join(dir, 'data/ca/root-cert.pem'), 'utf8');
    const body = grpcRequestFrame((await makeCsr({ uris: ['spiffe://cluster.local/ns/default/sa/app'] })).pem);
    const token = await mintToken({ ns: 'default', sa: 'app' });
    /** One call on a new connection: its grpc-status, or 'no connection' when the connection is closed first. */
    const call = async (): Promise<{ session: ClientHttp2Session; status: string }> => {
      const session = connectTls(server!.port, rootPem);
      sessions.push(session);
      const r = await unaryCall(session, '/istio.v1.auth.IstioCertificateService/CreateCertificate', body, { authorization: `Bearer ${token}`, clusterid: 'Kubernetes' });
      return { session, status: statusOf(r) };
    };
    // Connections that stay open until two serve (the primary gives each to the worker with the
    // fewest, so the first two should; a loop, not an assumption about the primary).
    const serving: ClientHttp2Session[] = [];
    for (let i = 0; i < 10 && serving.length < 2; i++) {
      const r = await call();
      if (r.status === '0') serving.push(r.session);
      else expect(r.status).toBe('no connection');
    }
    expect(serving).toHaveLength(2);
    // Both workers are full: the next connection is closed (a held one would never answer).
    expect((await call()).status).toBe('no connection');
    expect(server.output()).not.toMatch(/worker died|unexpected error/);
  }, 60_000);
});
