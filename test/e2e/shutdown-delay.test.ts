/**
 * server.shutdownDelay as Kubernetes meets it: after SIGTERM the pod reports not ready (/readyz,
 * gRPC health) while its endpoints are being removed, and still serves the clients sent to it,
 * on connections old and new; a second signal ends the delay. In one process and with workers.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { grpcRequestFrame } from '../../bench/lib/grpc-frame.js';
import { makeCsr } from '../fixtures/csr.js';
import { adminPort, serveRuns } from '../support/cli.js';
import { mintToken, TEST_ISSUER } from '../support/harness.js';
import { connectTls, grpcFrame, unaryCall } from '../support/raw-grpc.js';

const CREATE = '/istio.v1.auth.IstioCertificateService/CreateCertificate';
const HEALTH_CHECK = '/grpc.health.v1.Health/Check';
/** HealthCheckResponse.status as encoded: field 1, varint (SERVING 1, NOT_SERVING 2). */
const SERVING = '0801';
const NOT_SERVING = '0802';

const yaml = (workers: number): string => `dataDir: data
server: { listen: "127.0.0.1:0", workers: ${workers}, shutdownDelay: 5m }
admin: { listen: "127.0.0.1:0" }
ca: { autoInit: true }
auth:
  clusters:
    - name: Kubernetes
      jwt: [{ issuer: "${TEST_ISSUER}", jwksFile: jwks.json }]
`;

describe.each([1, 2])('server.shutdownDelay with server.workers: %i', (workers) => {
  const serve = serveRuns();

  it('after SIGTERM reports not ready and keeps serving, until a second signal', async () => {
    const { s, dir } = await serve('meshcert-shutdown-delay-', yaml(workers), { MESHCERT_LOG_LEVEL: 'info' });
    const admin = await adminPort(s);
    const readyz = async (): Promise<{ status: number; checks: Array<{ name: string; ok: boolean }> }> => {
      const r = await fetch(`http://127.0.0.1:${admin}/readyz`);
      return { status: r.status, checks: ((await r.json()) as { checks: Array<{ name: string; ok: boolean }> }).checks };
    };
    await vi.waitFor(async () => expect((await readyz()).status).toBe(200), { timeout: 30_000 });

    const rootPem = readFileSync(join(dir, 'data/ca/root-cert.pem'), 'utf8');
    const body = grpcRequestFrame((await makeCsr({ uris: ['spiffe://cluster.local/ns/default/sa/app'] })).pem);
    const headers = { authorization: `Bearer ${await mintToken({ ns: 'default', sa: 'app' })}`, clusterid: 'Kubernetes' };
    const health = async (session: ReturnType<typeof connectTls>): Promise<string> => (await unaryCall(session, HEALTH_CHECK, grpcFrame(Buffer.alloc(0)))).body.subarray(5).toString('hex');
    const before = connectTls(s.port, rootPem);
    try {
      expect((await unaryCall(before, CREATE, body, headers)).grpcStatus).toBe(0);
      expect(await health(before)).toBe(SERVING);

      s.child.kill('SIGTERM');
      await vi.waitFor(() => expect(s.output()).toMatch(/"msg":"shutdown delay: reporting not ready, still serving"/), { timeout: 30_000 });
      const notReady = await readyz();
      expect(notReady.status).toBe(503);
      expect(notReady.checks).toContainEqual(expect.objectContaining({ name: 'shutdown', ok: false }));
      // Workers hear of it over IPC: wait for every one a health check may reach.
      await vi.waitFor(async () => {
        for (let i = 0; i < 4; i++) {
          const fresh = connectTls(s.port, rootPem);
          try {
            expect(await health(fresh)).toBe(NOT_SERVING);
          } finally {
            fresh.destroy();
          }
        }
      }, { timeout: 30_000, interval: 200 });

      // Still serving: on the connection open before SIGTERM, and on new ones.
      expect((await unaryCall(before, CREATE, body, headers)).grpcStatus).toBe(0);
      for (let i = 0; i < 4; i++) {
        const during = connectTls(s.port, rootPem);
        try {
          const r = await unaryCall(during, CREATE, body, headers);
          expect(r.grpcStatus, r.grpcMessage).toBe(0);
        } finally {
          during.destroy();
        }
      }
    } finally {
      before.destroy();
    }

    // The delay is 5 minutes: only the second signal lets the test end.
    s.child.kill('SIGTERM');
    expect(await s.exited).toBe(0);
    expect(s.output()).toMatch(/"msg":"shutdown delay ended early"/);
    expect(s.output()).toMatch(/"msg":"stopped"/);
  }, 60_000);
});
