import { describe, expect, it } from 'vitest';
import { auditProblem } from '../../../src/inventory/common.js';
import { inventoryObserver, type RecordSink } from '../../../src/inventory/sink.js';
import type { AuditEvent } from '../../../src/inventory/types.js';

describe('inventoryObserver', () => {
  it('audits a refusal whose text carries a NUL with the NUL replaced, so the store takes it', () => {
    const audit: AuditEvent[] = [];
    const sink: RecordSink = { record: () => {}, recordAudit: (e) => void audit.push(e), accepting: () => true };
    inventoryObserver(sink).refused('AUTH_INVALID', 'bad \u0000 token', { clusterId: 'k\u0000', latencyMs: 1, peer: 'p', caller: 'spiffe://td/ns/a/sa/\u0000' });
    expect(audit).toHaveLength(1);
    expect(auditProblem(audit[0]!)).toBeNull();
    expect(audit[0]).toMatchObject({ decision: 'refused', code: 'AUTH_INVALID', reason: 'bad \uFFFD token', cluster: 'k\uFFFD', requester: 'spiffe://td/ns/a/sa/\uFFFD' });
  });
});
