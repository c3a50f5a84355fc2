import { afterEach, describe, expect, it } from 'vitest';
import type { AuditEvent, CertificateRecord } from '../../../src/inventory/types.js';
import { DURABLE_SHIP_MS, IpcSink, type InventoryKeptMessage, type InventoryMessage } from '../../../src/runtime/ipc-sink.js';

const record = (serial: string): CertificateRecord => ({ serial }) as CertificateRecord;
const audit: AuditEvent = { at: new Date(0), requester: null, identity: null, cluster: null, decision: 'refused', code: 'AUTH_INVALID', reason: 'x' };
/** What the primary sends a worker (a worker's `process.on('message')`). */
const fromPrimary = (m: InventoryKeptMessage | { type: 'inventory-state'; accepting: boolean }): void => void process.emit('message', m, undefined);
const listeners = process.listeners('message');

describe('IpcSink (a worker shipping its records to the primary)', () => {
  afterEach(() => {
    for (const l of process.listeners('message')) if (!listeners.includes(l)) process.off('message', l);
  });

  it('ships plain records and audit events in batches every 100 ms', async () => {
    const sent: InventoryMessage[] = [];
    const sink = new IpcSink((m) => void sent.push(m));
    sink.record(record('01'));
    sink.recordAudit(audit);
    await new Promise((r) => setImmediate(r));
    expect(sent).toEqual([]);
    await expect.poll(() => sent.length, { timeout: 1000, interval: 10 }).toBe(1);
    expect(sent[0]).toEqual({ type: 'inventory', records: [record('01')], audit: [audit] });
  });

  it('ships a kept record within DURABLE_SHIP_MS, with what is pending, and settles it by the primary\u2019s answer', async () => {
    const sent: InventoryMessage[] = [];
    const sink = new IpcSink((m) => void sent.push(m));
    sink.record(record('00'));
    const kept = [sink.keep(record('01')), sink.keep(record('02')), sink.keep(record('03'))];
    const settled: string[] = [];
    kept.forEach((p, i) => p.then(() => settled.push(`${i} stored`), (e: Error) => settled.push(`${i} ${e.message}`)));
    await new Promise((r) => setTimeout(r, DURABLE_SHIP_MS + 5));
    expect(sent).toHaveLength(1);
    expect(sent[0]!.records).toEqual([record('00')]);
    expect(sent[0]!.durable).toEqual([1, 2, 3].map((id) => ({ id, record: record(`0${id}`) })));
    expect(sink.awaiting).toBe(3);
    fromPrimary({ type: 'inventory-kept', stored: [3, 1], failed: [] });
    await new Promise((r) => setImmediate(r));
    expect(settled.sort()).toEqual(['0 stored', '2 stored']);
    fromPrimary({ type: 'inventory-kept', stored: [], failed: [{ id: 2, reason: 'certificate record discarded: x' }] });
    await new Promise((r) => setImmediate(r));
    expect(settled).toContain('1 certificate record discarded: x');
    expect(sink.awaiting).toBe(0);
  });

  it('follows the primary\u2019s word on whether issuance may go on', () => {
    const sink = new IpcSink(() => {}, false);
    expect(sink.accepting()).toBe(false);
    fromPrimary({ type: 'inventory-state', accepting: true });
    expect(sink.accepting()).toBe(true);
  });
});
