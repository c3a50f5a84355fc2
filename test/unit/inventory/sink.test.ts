import { afterEach, describe, expect, it, vi } from 'vitest';
import { auditProblem } from '../../../src/inventory/common.js';
import { ANONYMOUS_AUDIT_BURST, AUDIT_SUMMARY_SECONDS, CALLER_AUDIT_BURST, MAX_TRACKED_CALLERS, inventoryObserver, recordFromIssued, type RecordSink } from '../../../src/inventory/sink.js';
import type { AuditEvent } from '../../../src/inventory/types.js';
import { issuedCertificate } from './fixtures.js';

function auditSink(): { sink: RecordSink; audit: AuditEvent[] } {
  const audit: AuditEvent[] = [];
  return { audit, sink: { record: () => {}, keep: () => Promise.resolve(), recordAudit: (e) => void audit.push(e), accepting: () => true } };
}

const ctx = { clusterId: 'k', latencyMs: 1, peer: 'p' };

describe('inventoryObserver', () => {
  afterEach(() => vi.useRealTimers());

  it('audits a refusal whose text carries a NUL or an unpaired surrogate with it replaced, so the store takes it', () => {
    const { sink, audit } = auditSink();
    inventoryObserver(sink).refused('AUTH_INVALID', 'bad \u0000 token \ud800 \ud83d\ude00', { ...ctx, caller: 'spiffe://td/ns/a/sa/\u0000\udc00' });
    expect(audit).toHaveLength(1);
    expect(auditProblem(audit[0]!)).toBeNull();
    expect(audit[0]).toMatchObject({ decision: 'refused', code: 'AUTH_INVALID', reason: 'bad \uFFFD token \uFFFD \ud83d\ude00', cluster: 'k', requester: 'spiffe://td/ns/a/sa/\uFFFD\uFFFD' });
  });

  it('audits a certificate signed, then refused (inventory.failClosed), with its serial, however many rows its caller had', () => {
    const { sink, audit } = auditSink();
    const o = inventoryObserver(sink);
    const caller = { ...ctx, caller: 'spiffe://td/ns/ztunnel/sa/ztunnel', identity: 'spiffe://td/ns/a/sa/b' };
    for (let i = 0; i < CALLER_AUDIT_BURST; i++) o.refused('POLICY_DENIED', 'no', caller);
    o.refused('POLICY_DENIED', 'no', caller); // over the bucket: counted, not a row
    expect(audit).toHaveLength(CALLER_AUDIT_BURST);
    o.refused('ISSUER_UNAVAILABLE', 'could not record certificate 0a', { ...caller, serial: '0a' });
    expect(audit).toHaveLength(CALLER_AUDIT_BURST + 1);
    expect(audit.at(-1)).toMatchObject({ decision: 'refused', code: 'ISSUER_UNAVAILABLE', serial: '0a', requester: caller.caller, identity: caller.identity });
    expect(auditProblem(audit.at(-1)!)).toBeNull();
    expect(audit.slice(0, -1).every((e) => e.serial === undefined)).toBe(true);
  });

  it("stores an unauthenticated call's clusterid only when it could be a cluster name, an authenticated caller's as it is, and cuts long text", () => {
    const { sink, audit } = auditSink();
    const o = inventoryObserver(sink);
    for (const clusterId of ['Kubernetes', 'k\u0000', 'x'.repeat(64), 'a b', '']) o.refused('AUTH_INVALID', 'no', { ...ctx, clusterId });
    expect(audit.map((e) => e.cluster)).toEqual(['Kubernetes', null, null, null, null]);
    o.refused('POLICY_DENIED', 'no', { ...ctx, clusterId: 'east/prod:1', caller: 'spiffe://td/ns/a/sa/b' });
    expect(audit.at(-1)!.cluster).toBe('east/prod:1');
    o.refused('CSR_MALFORMED', 'y'.repeat(5000), ctx);
    expect(audit.at(-1)!.reason).toBe(`${'y'.repeat(1024)}...`);
  });

  it('gives unauthenticated refusals rows from a token bucket and counts the rest in one row a minute', () => {
    vi.useFakeTimers();
    let t = 1_800_000_000_000;
    const { sink, audit } = auditSink();
    const o = inventoryObserver(sink, () => t);
    for (let i = 0; i < ANONYMOUS_AUDIT_BURST + 10; i++) o.refused(i % 2 ? 'AUTH_INVALID' : 'AUTH_MISSING', 'no', ctx);
    // An authenticated caller has a bucket of its own, untouched by the flood.
    for (let i = 0; i < 5; i++) o.refused('POLICY_DENIED', 'no', { ...ctx, caller: 'spiffe://td/ns/a/sa/b' });
    expect(audit).toHaveLength(ANONYMOUS_AUDIT_BURST + 5);
    // Then one a second: 30 s of a flood give 30 rows.
    for (let s = 1; s <= 30; s++) {
      t += 1000;
      for (let i = 0; i < 100; i++) o.refused('AUTH_INVALID', 'no', ctx);
    }
    expect(audit).toHaveLength(ANONYMOUS_AUDIT_BURST + 5 + 30);
    // The minute ends: one row counts what was not recorded.
    t += AUDIT_SUMMARY_SECONDS * 1000;
    vi.advanceTimersByTime(AUDIT_SUMMARY_SECONDS * 1000);
    expect(audit).toHaveLength(ANONYMOUS_AUDIT_BURST + 5 + 31);
    const summary = audit.at(-1)!;
    expect(summary).toMatchObject({ at: new Date(1_800_000_000_000), requester: null, cluster: null, code: 'AUTH_INVALID,AUTH_MISSING' });
    // 10 beyond the burst, then 99 of every 100 for 30 s.
    expect(summary.reason).toMatch(/^2980 more refusals of unauthenticated calls from this time on, not recorded one by one/);
    expect(auditProblem(summary)).toBeNull();
  });

  it('gives each authenticated caller a bucket of its own: one workload refusing itself in a loop neither fills the store nor uses up another\'s rows', () => {
    vi.useFakeTimers();
    let t = 1_800_000_000_000;
    const { sink, audit } = auditSink();
    const o = inventoryObserver(sink, () => t);
    const loud = 'spiffe://td/ns/vm/sa/db';
    const quiet = 'spiffe://td/ns/a/sa/b';
    for (let i = 0; i < CALLER_AUDIT_BURST + 25; i++) o.refused(i % 5 ? 'AUTH_INVALID' : 'RATE_LIMITED', 'revoked', { ...ctx, caller: loud });
    expect(audit).toHaveLength(CALLER_AUDIT_BURST);
    for (let i = 0; i < 3; i++) o.refused('POLICY_DENIED', 'no', { ...ctx, caller: quiet });
    o.refused('AUTH_MISSING', 'no', ctx);
    expect(audit.slice(CALLER_AUDIT_BURST).map((e) => [e.requester, e.code])).toEqual([
      [quiet, 'POLICY_DENIED'],
      [quiet, 'POLICY_DENIED'],
      [quiet, 'POLICY_DENIED'],
      [null, 'AUTH_MISSING'],
    ]);
    // Then one a second for that caller: 10 s of its loop give 10 rows.
    for (let s = 1; s <= 10; s++) {
      t += 1000;
      for (let i = 0; i < 50; i++) o.refused('AUTH_INVALID', 'revoked', { ...ctx, caller: loud });
    }
    expect(audit.filter((e) => e.requester === loud)).toHaveLength(CALLER_AUDIT_BURST + 10);
    // The minute ends: one row, under the caller, counts what was not recorded.
    t += AUDIT_SUMMARY_SECONDS * 1000;
    vi.advanceTimersByTime(AUDIT_SUMMARY_SECONDS * 1000);
    const summary = audit.at(-1)!;
    expect(summary).toMatchObject({ at: new Date(1_800_000_000_000), requester: loud, identity: null, cluster: null, decision: 'refused', code: 'AUTH_INVALID,RATE_LIMITED' });
    // 25 beyond the burst, then 49 of every 50 for 10 s.
    expect(summary.reason).toBe(`515 more refusals of calls by this caller from this time on, not recorded one by one (over ${CALLER_AUDIT_BURST} at once or 1 a second)`);
    expect(auditProblem(summary)).toBeNull();
    expect(audit.filter((e) => e.reason?.includes('more refusals'))).toHaveLength(1);
  });

  it('gives a node agent (ztunnel) a bucket for each workload it asks for, and records the workload with the refusal', () => {
    const { sink, audit } = auditSink();
    const o = inventoryObserver(sink, () => 1_800_000_000_000);
    const ztunnel = 'spiffe://td/ns/istio-system/sa/ztunnel';
    const web = 'spiffe://td/ns/shop/sa/web';
    const db = 'spiffe://td/ns/shop/sa/db';
    for (let i = 0; i < CALLER_AUDIT_BURST + 4; i++) o.refused('POLICY_DENIED', 'no', { ...ctx, caller: ztunnel, identity: web });
    o.refused('POLICY_DENIED', 'no', { ...ctx, caller: ztunnel, identity: db });
    o.refused('IMPERSONATION_DENIED', 'no', { ...ctx, caller: ztunnel });
    expect(audit).toHaveLength(CALLER_AUDIT_BURST + 2);
    expect(audit.slice(-3).map((e) => [e.requester, e.identity])).toEqual([
      [ztunnel, web],
      [ztunnel, db],
      [ztunnel, null],
    ]);
    o.flush();
    expect(audit.at(-1)).toMatchObject({ requester: ztunnel, identity: web });
    expect(audit.at(-1)!.reason).toMatch(/^4 more refusals of calls by this caller for this identity from this time on/);
  });

  it(`keeps the buckets of at most ${MAX_TRACKED_CALLERS} callers, writing out the count of the one it drops`, () => {
    const { sink, audit } = auditSink();
    const o = inventoryObserver(sink, () => 1_800_000_000_000);
    const first = 'spiffe://td/ns/a/sa/first\u0000';
    for (let i = 0; i < CALLER_AUDIT_BURST + 7; i++) o.refused('POLICY_DENIED', 'no', { ...ctx, caller: first });
    // Refused again later than the others: the least recently refused is another one.
    for (let i = 1; i < MAX_TRACKED_CALLERS; i++) o.refused('POLICY_DENIED', 'no', { ...ctx, caller: `spiffe://td/ns/a/sa/s${i}` });
    o.refused('POLICY_DENIED', 'no', { ...ctx, caller: first });
    const rows = audit.length;
    o.refused('POLICY_DENIED', 'no', { ...ctx, caller: 'spiffe://td/ns/a/sa/one-more' });
    expect(audit.slice(rows).map((e) => e.requester)).toEqual(['spiffe://td/ns/a/sa/one-more']);
    // Refused again in the same order, the callers dropped in turn drop the first too, its count written.
    for (let i = 1; i < MAX_TRACKED_CALLERS; i++) o.refused('POLICY_DENIED', 'no', { ...ctx, caller: `spiffe://td/ns/a/sa/s${i}` });
    o.refused('POLICY_DENIED', 'no', { ...ctx, caller: 'spiffe://td/ns/a/sa/two-more' });
    const dropped = audit.filter((e) => e.reason?.includes('more refusals'));
    expect(dropped.map((e) => [e.requester, e.reason?.split(' ')[0]])).toEqual([['spiffe://td/ns/a/sa/first\uFFFD', '8']]);
    expect(auditProblem(dropped[0]!)).toBeNull();
    // Its next refusal starts a new bucket.
    o.refused('POLICY_DENIED', 'no', { ...ctx, caller: first });
    expect(audit.at(-1)!.reason).toBe('no');
  });

  it("gives each of N worker processes 1/N of the replica's bucket", () => {
    let t = 1_800_000_000_000;
    const { sink, audit } = auditSink();
    const o = inventoryObserver(sink, () => t, 1 / 4);
    for (let i = 0; i < 100; i++) o.refused('AUTH_MISSING', 'no', ctx);
    expect(audit).toHaveLength(Math.ceil(ANONYMOUS_AUDIT_BURST / 4));
    t += 8000; // a quarter of a row a second: 2 more rows
    for (let i = 0; i < 100; i++) o.refused('AUTH_MISSING', 'no', ctx);
    expect(audit).toHaveLength(Math.ceil(ANONYMOUS_AUDIT_BURST / 4) + 2);
    // A caller's bucket too.
    for (let i = 0; i < 100; i++) o.refused('POLICY_DENIED', 'no', { ...ctx, caller: 'spiffe://td/ns/a/sa/b' });
    expect(audit.filter((e) => e.requester === 'spiffe://td/ns/a/sa/b')).toHaveLength(Math.ceil(CALLER_AUDIT_BURST / 4));
    o.flush();
  });

  it('writes a pending count when flushed (at shutdown), and never throws once the sink has closed', () => {
    const { sink, audit } = auditSink();
    const o = inventoryObserver(sink);
    for (let i = 0; i < ANONYMOUS_AUDIT_BURST + 2; i++) o.refused('AUTH_MISSING', 'no', ctx);
    for (let i = 0; i < CALLER_AUDIT_BURST + 3; i++) o.refused('POLICY_DENIED', 'no', { ...ctx, caller: 'spiffe://td/ns/a/sa/b' });
    o.flush();
    expect(audit.slice(-2).map((e) => [e.requester, e.reason?.split(' ')[0]])).toEqual([
      [null, '2'],
      ['spiffe://td/ns/a/sa/b', '3'],
    ]);
    for (let i = 0; i < 3; i++) o.refused('AUTH_MISSING', 'no', ctx);
    sink.recordAudit = () => {
      throw new Error('inventory recorder is closed');
    };
    expect(() => o.flush()).not.toThrow();
  });
});

describe('inventoryObserver and issued certificates', () => {
  const cert = issuedCertificate();

  it('records each issued certificate, unless the call keeps it itself before answering (inventory.failClosed)', () => {
    const recorded: string[] = [];
    const sink: RecordSink = { record: (r) => void recorded.push(r.serial), keep: () => Promise.resolve(), recordAudit: () => {}, accepting: () => true };
    inventoryObserver(sink).issued(cert, ctx);
    expect(recorded).toEqual(['0a']);
    inventoryObserver(sink, Date.now, 1, { issuedKept: true }).issued(cert, ctx);
    expect(recorded).toEqual(['0a']);
  });
});

describe('recordFromIssued', () => {
  it('records the cluster the certificate was issued under, also when the call sent no clusterid', () => {
    const cert = issuedCertificate({ cluster: 'Kubernetes' });
    expect(recordFromIssued(cert, { clusterId: '' }).cluster).toBe('Kubernetes');
    expect(recordFromIssued(cert, { clusterId: undefined }).cluster).toBe('Kubernetes');
  });
});
