/**
 * Refusals of unauthenticated calls, through the real server into an inventory sink: the first
 * of a flood get audit rows, the rest one counted row, which a shutdown writes before it returns.
 */
import { status } from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import { ANONYMOUS_AUDIT_BURST } from '../../../src/inventory/sink.js';
import type { RecordSink } from '../../../src/inventory/sink.js';
import type { AuditEvent } from '../../../src/inventory/types.js';
import { makeCsr } from '../../fixtures/csr.js';
import { startTestCa } from '../../support/harness.js';

describe('audit rows of unauthenticated refusals', () => {
  it('are bounded, and the count of the rest is written at shutdown', async () => {
    const audit: AuditEvent[] = [];
    const sink: RecordSink = { record: () => {}, recordAudit: (e) => void audit.push(e), accepting: () => true };
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
