/**
 * The serving certificate meshcert issues itself is recorded in the inventory when it is first
 * issued and at every renewal, as the certificate the gRPC port then presents.
 */
import { createHash } from 'node:crypto';
import { connect as tlsConnect } from 'node:tls';
import { afterAll, describe, expect, it } from 'vitest';
import { SERVING_CERT_REQUESTER, type RecordSink } from '../../../src/inventory/sink.js';
import type { CertificateRecord } from '../../../src/inventory/types.js';
import { startTestCa, type TestCa } from '../../support/harness.js';

/** The SHA-256 fingerprint (lowercase hex) of the certificate a TLS handshake with the port is given. */
function presented(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = tlsConnect({ host: '127.0.0.1', port, servername: 'localhost', ALPNProtocols: ['h2'], rejectUnauthorized: false }, () => {
      resolve(createHash('sha256').update(sock.getPeerCertificate().raw).digest('hex'));
      sock.destroy();
    });
    sock.on('error', reject);
  });
}

describe('the serving certificate in the inventory', () => {
  let ca: TestCa | undefined;
  afterAll(() => ca?.close());

  it('is recorded when issued and again at each renewal, as the certificate the port presents', async () => {
    const records: CertificateRecord[] = [];
    const sink: RecordSink = { record: (r) => void records.push(r), keep: () => Promise.resolve(), recordAudit: () => {}, accepting: () => true };
    // A lifetime of an hour renewed when 99.95 % of it is left: a renewal about 2 s after each issue.
    ca = await startTestCa({ server: { tls: { lifetime: '1h', renewBeforeRatio: 0.9995 } } }, undefined, { sink });
    const serving = (): CertificateRecord[] => records.filter((r) => r.requester === SERVING_CERT_REQUESTER);
    expect(serving()).toHaveLength(1);
    expect(serving()[0]).toMatchObject({ source: 'issued', issuer: 'default', spiffeId: null, dnsNames: ['localhost'] });
    expect(await presented(ca.port)).toBe(serving()[0]!.fingerprint);
    await expect.poll(() => serving().length, { timeout: 10_000, interval: 100 }).toBeGreaterThanOrEqual(2);
    // The port presents a renewed certificate, recorded (the latest one, or one renewed since).
    const now = await presented(ca.port);
    expect(now).not.toBe(serving()[0]!.fingerprint);
    expect(serving().map((r) => r.fingerprint)).toContain(now);
  }, 30_000);
});
