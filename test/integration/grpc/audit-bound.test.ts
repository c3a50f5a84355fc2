/**
 * Refusals through the real server into an inventory sink: the first of a flood (unauthenticated,
 * or by one authenticated caller) get audit rows, the rest one counted row, which a shutdown
 * writes before it returns. And revoked client certificates refused through the real server: their
 * audit rows, and the gRPC status a revoked serial gets.
 */
import { X509Certificate } from 'node:crypto';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import { buildWorkloadCsr } from '../../../src/client/workload-csr.js';
import { parseConfig } from '../../../src/config/load.js';
import { serialHex } from '../../../src/x509/serial-hex.js';
import { ANONYMOUS_AUDIT_BURST, CALLER_AUDIT_BURST } from '../../../src/inventory/sink.js';
import type { RecordSink } from '../../../src/inventory/sink.js';
import type { AuditEvent } from '../../../src/inventory/types.js';
import { makeCsr } from '../../fixtures/csr.js';
import { mintToken, startTestCa, TEST_ISSUER } from '../../support/harness.js';
import { JwksServer, k8sClaims, signingKey, signToken } from '../../unit/auth/helpers.js';

describe('audit rows of unauthenticated refusals', () => {
  it('are bounded, and the count of the rest is written at shutdown', async () => {
    const audit: AuditEvent[] = [];
    const sink: RecordSink = { record: () => {}, keep: () => Promise.resolve(), recordAudit: (e) => void audit.push(e), accepting: () => true };
    const ca = await startTestCa({}, undefined, { sink });
    try {
      const csrPem = (await makeCsr({ uris: ['spiffe://cluster.local/ns/default/sa/app'] })).pem;
      const client = ca.client();
      const calls = Array.from({ length: ANONYMOUS_AUDIT_BURST + 20 }, () => client.createCertificate({ csrPem }).then(() => 0, (e: { code: number }) => e.code));
      expect(new Set(await Promise.all(calls))).toEqual(new Set([status.UNAUTHENTICATED]));
      // The burst, and perhaps a row refilled while the calls ran; not 70.
      expect(audit.length).toBeGreaterThanOrEqual(ANONYMOUS_AUDIT_BURST);
      expect(audit.length).toBeLessThan(ANONYMOUS_AUDIT_BURST + 3);
    } finally {
      await ca.close();
    }
    const summary = audit.at(-1)!;
    expect(summary).toMatchObject({ requester: null, code: 'AUTH_MISSING' });
    expect(summary.reason).toMatch(/^\d+ more refusals of unauthenticated calls from this time on, not recorded one by one/);
    expect(audit.length - 1 + Number(/^(\d+)/.exec(summary.reason!)![1])).toBe(ANONYMOUS_AUDIT_BURST + 20);
  });
});

describe('audit rows of one authenticated caller refused in a loop', () => {
  it('are bounded per caller, another caller keeps its rows, and the count of the rest is written at shutdown', async () => {
    const audit: AuditEvent[] = [];
    const sink: RecordSink = { record: () => {}, keep: () => Promise.resolve(), recordAudit: (e) => void audit.push(e), accepting: () => true };
    const ca = await startTestCa({}, undefined, { sink });
    const loud = 'spiffe://cluster.local/ns/default/sa/app';
    try {
      // A valid token for ns/default/sa/app asking for another identity: refused, under its caller.
      const csrPem = (await makeCsr({ uris: ['spiffe://cluster.local/ns/default/sa/other'] })).pem;
      const token = await mintToken({ ns: 'default', sa: 'app' });
      const client = ca.client();
      const started = Date.now();
      const calls = Array.from({ length: CALLER_AUDIT_BURST + 20 }, () => client.createCertificate({ csrPem, token }).then(() => 0, (e: { code: number }) => e.code));
      expect(new Set(await Promise.all(calls))).toEqual(new Set([status.PERMISSION_DENIED]));
      // The burst, and a row a second refilled while the calls ran (a slow machine takes seconds).
      const refilled = Math.ceil((Date.now() - started) / 1000);
      const quietToken = await mintToken({ ns: 'default', sa: 'quiet' });
      expect(await client.createCertificate({ csrPem, token: quietToken }).then(() => 0, (e: { code: number }) => e.code)).toBe(status.PERMISSION_DENIED);
      expect(audit.filter((e) => e.requester === loud).length).toBeGreaterThanOrEqual(CALLER_AUDIT_BURST);
      expect(audit.filter((e) => e.requester === loud).length).toBeLessThanOrEqual(CALLER_AUDIT_BURST + refilled);
      expect(audit.filter((e) => e.requester === 'spiffe://cluster.local/ns/default/sa/quiet')).toHaveLength(1);
    } finally {
      await ca.close();
    }
    const summary = audit.at(-1)!;
    expect(summary).toMatchObject({ requester: loud, decision: 'refused' });
    expect(summary.reason).toMatch(/^\d+ more refusals of calls by this caller from this time on, not recorded one by one/);
    expect(audit.filter((e) => e.requester === loud).length - 1 + Number(/^(\d+)/.exec(summary.reason!)![1])).toBe(CALLER_AUDIT_BURST + 20);
  });
});

describe('audit rows of refused revoked client certificates', () => {
  it('name the certificate\'s identity, also when a token beside it ends the call as UNAVAILABLE', async () => {
    const audit: AuditEvent[] = [];
    const sink: RecordSink = { record: () => {}, keep: () => Promise.resolve(), recordAudit: (e) => void audit.push(e), accepting: () => true };
    // A second issuer whose keys come from a URL: a token naming a key it has not published yet is retried (UNAVAILABLE).
    const published = await signingKey('ES256', 'published');
    const jwks = await new JwksServer([published.jwk]).start();
    // Every certificate issued until an hour from now is revoked for ns/vm.
    const ca = await startTestCa(
      {
        auth: {
          clusters: [{ name: 'Kubernetes', jwt: [{ issuer: TEST_ISSUER, jwksFile: 'jwks.json' }, { issuer: 'https://idp.example', jwksUri: jwks.url }] }],
          revokedClientCertificates: [{ issuedBefore: new Date(Date.now() + 3_600_000).toISOString(), namespaces: ['vm'] }],
        },
      },
      undefined,
      { sink },
    );
    try {
      const id = 'spiffe://cluster.local/ns/vm/sa/db';
      const csr = await buildWorkloadCsr(id, 'ec256');
      const chain = await ca.request({ csrPem: csr.csrPem, token: await mintToken({ ns: 'vm', sa: 'db' }) });
      const mtls = ca.client({ clientCert: { certPem: chain[0]! + chain[1]!, keyPem: csr.privateKeyPem } });
      const renew = async (token?: string): Promise<number> =>
        mtls.createCertificate({ csrPem: (await buildWorkloadCsr(id, 'ec256')).csrPem, ...(token ? { token } : {}) }).then(() => 0, (e: { code: number }) => e.code);
      expect(await renew()).toBe(status.UNAUTHENTICATED);
      // A token beside the certificate, naming a key its issuer has "not published yet": UNAVAILABLE, retried.
      const unpublished = await signingKey('ES256', 'not-published');
      const forged = await signToken(unpublished, k8sClaims('vm', 'db'), { iss: 'https://idp.example' });
      expect(await renew(forged)).toBe(status.UNAVAILABLE);
      const refusals = audit.filter((e) => e.decision === 'refused');
      expect(refusals.map((e) => [e.requester, e.code])).toEqual([
        [id, 'AUTH_INVALID'],
        [id, 'AUTH_BACKEND_UNAVAILABLE'],
      ]);
      expect(refusals[0]!.reason).toMatch(new RegExp(`^client certificate for ${id} is revoked`));
    } finally {
      await ca.close();
      await jwks.stop();
    }
  });
});

describe('a client certificate revoked by serial, over gRPC', () => {
  it('is refused UNAUTHENTICATED with a message naming only the identity, the serial and the entry; another certificate of the same identity renews', async () => {
    const ca = await startTestCa();
    try {
      const id = 'spiffe://cluster.local/ns/vm/sa/db';
      const token = await mintToken({ ns: 'vm', sa: 'db' });
      const issue = async (): Promise<{ chain: string[]; keyPem: string }> => {
        const csr = await buildWorkloadCsr(id, 'ec256');
        return { chain: await ca.request({ csrPem: csr.csrPem, token }), keyPem: csr.privateKeyPem };
      };
      const [leaked, other] = [await issue(), await issue()];
      const serial = serialHex(new X509Certificate(leaked.chain[0]!).serialNumber);
      // Revoked as an operator copies it from openssl: whole octets, uppercase, colons.
      const octets = new X509Certificate(leaked.chain[0]!).serialNumber.match(/../g)!.join(':');
      await ca.running.reload(
        parseConfig(
          {
            dataDir: ca.dir,
            trustDomain: 'cluster.local',
            server: { listen: '127.0.0.1:0', shutdownGrace: '5s' },
            ca: { autoInit: true },
            auth: { clusters: [{ name: 'Kubernetes', jwt: [{ issuer: TEST_ISSUER, jwksFile: join(ca.dir, 'jwks.json') }] }], revokedClientCertificates: [{ serials: [octets] }] },
          },
          {},
          'test',
          ca.dir,
        ),
      );
      const renew = async (held: { chain: string[]; keyPem: string }): Promise<string> =>
        ca
          .client({ clientCert: { certPem: held.chain[0]! + held.chain[1]!, keyPem: held.keyPem } })
          .createCertificate({ csrPem: (await buildWorkloadCsr(id, 'ec256')).csrPem })
          .then(
            () => 'ok',
            (e: { code: number; details: string }) => `${e.code} ${e.details}`,
          );
      expect(await renew(leaked)).toBe(
        `${status.UNAUTHENTICATED} client certificate for ${id} is revoked: its serial ${serial} is listed (auth.revokedClientCertificates[0]); authenticate with a service-account token to get a new certificate`,
      );
      expect(await renew(other)).toBe('ok');
    } finally {
      await ca.close();
    }
  });
});
