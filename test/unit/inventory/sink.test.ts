import { afterEach, describe, expect, it, vi } from 'vitest';
import { auditProblem } from '../../../src/inventory/common.js';
import { ANONYMOUS_AUDIT_PER_SECOND, inventoryObserver, type RecordSink } from '../../../src/inventory/sink.js';
import type { AuditEvent } from '../../../src/inventory/types.js';

function auditSink(): { sink: RecordSink; audit: AuditEvent[] } {
  const audit: AuditEvent[] = [];
  return { audit, sink: { record: () => {}, recordAudit: (e) => void audit.push(e), accepting: () => true } };
}

describe('inventoryObserver', () => {
  afterEach(() => vi.useRealTimers());

  it('audits a refusal whose text carries a NUL with the NUL replaced, so the store takes it', () => {
    const { sink, audit } = auditSink();
    inventoryObserver(sink).refused('AUTH_INVALID', 'bad \u0000 token', { clusterId: 'k', latencyMs: 1, peer: 'p', caller: 'spiffe://td/ns/a/sa/\u0000' });
    expect(audit).toHaveLength(1);
    expect(auditProblem(audit[0]!)).toBeNull();
    expect(audit[0]).toMatchObject({ decision: 'refused', code: 'AUTH_INVALID', reason: 'bad \uFFFD token', cluster: 'k', requester: 'spiffe://td/ns/a/sa/\uFFFD' });
  });

  it('stores a clusterid only when it could be a cluster name, and cuts long refusal text', () => {
    const { sink, audit } = auditSink();
    const o = inventoryObserver(sink);
    for (const clusterId of ['Kubernetes', 'k\u0000', 'x'.repeat(64), 'a b', '']) o.refused('AUTH_INVALID', 'no', { clusterId, latencyMs: 1, peer: 'p' });
    expect(audit.map((e) => e.cluster)).toEqual(['Kubernetes', null, null, null, null]);
    o.refused('CSR_MALFORMED', 'y'.repeat(5000), { clusterId: 'k', latencyMs: 1, peer: 'p' });
    expect(audit.at(-1)!.reason).toBe(`${'y'.repeat(1024)}...`);
  });

  it('records each second the first unauthenticated refusals one by one and the rest as one counted row', () => {
    vi.useFakeTimers();
    let t = 1_800_000_000_000;
    const { sink, audit } = auditSink();
    const o = inventoryObserver(sink, () => t);
    const ctx = { clusterId: 'k', latencyMs: 1, peer: 'p' };
    for (let i = 0; i < ANONYMOUS_AUDIT_PER_SECOND + 10; i++) o.refused(i % 2 ? 'AUTH_INVALID' : 'AUTH_MISSING', 'no', ctx);
    // Authenticated callers are never summed.
    for (let i = 0; i < 5; i++) o.refused('POLICY_DENIED', 'no', { ...ctx, caller: 'spiffe://td/ns/a/sa/b' });
    expect(audit).toHaveLength(ANONYMOUS_AUDIT_PER_SECOND + 5);
    // The next second rolls the count into its row.
    t += 1000;
    o.refused('AUTH_MISSING', 'no', ctx);
    expect(audit).toHaveLength(ANONYMOUS_AUDIT_PER_SECOND + 7);
    expect(audit[ANONYMOUS_AUDIT_PER_SECOND + 5]).toMatchObject({
      at: new Date(1_800_000_000_000),
      requester: null,
      cluster: null,
      code: 'AUTH_INVALID,AUTH_MISSING',
      reason: `10 more refusals of unauthenticated calls in this second, not recorded one by one (over ${ANONYMOUS_AUDIT_PER_SECOND} a second)`,
    });
    expect(auditProblem(audit[ANONYMOUS_AUDIT_PER_SECOND + 5]!)).toBeNull();
    // A flood that stops: its count is written when its second is over, with no refusal to roll it.
    t += 1000;
    for (let i = 0; i < ANONYMOUS_AUDIT_PER_SECOND + 3; i++) o.refused('AUTH_INVALID', 'no', ctx);
    const before = audit.length;
    t += 1100;
    vi.advanceTimersByTime(1100);
    expect(audit).toHaveLength(before + 1);
    expect(audit.at(-1)!.reason).toMatch(/^3 more refusals/);
  });
});
