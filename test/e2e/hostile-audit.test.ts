/**
 * A refusal's reason goes into the inventory's audit trail, shipped from a worker to the primary.
 * A token crafted so that the reason would carry a NUL (which the store refuses) once crashed the
 * primary, and with it every worker and the buffered records: unauthenticated. It must be refused,
 * audited with the NUL replaced, and the server must go on issuing.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { grpcRequestFrame } from '../../bench/lib/grpc-frame.js';
import { makeCsr } from '../fixtures/csr.js';
import Database from 'better-sqlite3';
import { serveRuns } from '../support/cli.js';
import { mintToken, serveConfigYaml, TEST_ISSUER } from '../support/harness.js';
import { connectTls, unaryCall } from '../support/raw-grpc.js';

const CREATE = '/istio.v1.auth.IstioCertificateService/CreateCertificate';
const b64url = (o: unknown): string => Buffer.from(JSON.stringify(o)).toString('base64url');

describe('a refusal whose reason would carry a NUL, in a server with workers', () => {
  const serve = serveRuns();

  it('is refused as UNAUTHENTICATED and audited, and the server goes on issuing', async () => {
    const { s, dir } = await serve('meshcert-hostile-', serveConfigYaml({ workers: 2 }));
    const rootPem = readFileSync(join(dir, 'data/ca/root-cert.pem'), 'utf8');
    const body = grpcRequestFrame((await makeCsr({ uris: ['spiffe://cluster.local/ns/default/sa/app'] })).pem);
    const now = Math.floor(Date.now() / 1000);
    // A shared-secret algorithm is refused by name, and the name came from the token.
    const hostile = `${b64url({ alg: 'HS\u0000x', typ: 'JWT' })}.${b64url({ iss: TEST_ISSUER, sub: 'system:serviceaccount:default:app', aud: 'istio-ca', iat: now, exp: now + 600 })}.c2ln`;
    const session = connectTls(s.port, rootPem);
    try {
      const refused = await unaryCall(session, CREATE, body, { authorization: `Bearer ${hostile}`, clusterid: 'Kubernetes' });
      expect(refused.grpcStatus).toBe(16);
      expect(refused.grpcMessage).not.toContain('\u0000');
      // Workers ship audit events every 100 ms; the primary must survive receiving this one.
      await new Promise((r) => setTimeout(r, 500));
      const token = await mintToken({ ns: 'default', sa: 'app' });
      const fresh = connectTls(s.port, rootPem);
      try {
        expect((await unaryCall(fresh, CREATE, body, { authorization: `Bearer ${token}`, clusterid: 'Kubernetes' })).grpcStatus).toBe(0);
      } finally {
        fresh.destroy();
      }
    } finally {
      session.destroy();
    }
    expect(s.child.exitCode).toBeNull();
    s.child.kill('SIGTERM');
    expect(await s.exited).toBe(0);
    // The refusal is in the audit trail, its reason without the NUL.
    const path = /"path":"([^"]+)","failClosed"[^\n]*"msg":"inventory store open"/.exec(s.output())?.[1];
    expect(path, 'the inventory path is logged').toBeDefined();
    const db = new Database(path!, { readonly: true });
    try {
      const rows = db.prepare("SELECT code, reason FROM inventory_audit_events WHERE decision = 'refused'").all() as Array<{ code: string; reason: string }>;
      expect(rows).toHaveLength(1);
      expect(rows[0]!.code).toBe('AUTH_INVALID');
      expect(rows[0]!.reason).toMatch(/shared-secret algorithm \(HS\?x\)/);
    } finally {
      db.close();
    }
  }, 60_000);
});
