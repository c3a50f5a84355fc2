import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import type { AuditEvent, CertificateRecord } from '../../../src/inventory/types.js';
import {
  decodeInventory,
  DURABLE_SHIP_MS,
  encodeInventory,
  IpcSink,
  type InventoryKeptMessage,
  type InventoryMessage,
  type InventoryWireMessage,
} from '../../../src/runtime/ipc-sink.js';

const record = (serial: string): CertificateRecord => ({ serial }) as CertificateRecord;
const audit: AuditEvent = { at: new Date(0), requester: null, identity: null, cluster: null, decision: 'refused', code: 'AUTH_INVALID', reason: 'x' };
/** A worker's channel to its primary (`process` in a worker), and what the primary sends on it. */
class Channel extends EventEmitter {
  connected = true;
}
const fromPrimary = (c: Channel, m: InventoryKeptMessage | { type: 'inventory-state'; accepting: boolean }): void => void c.emit('message', m);

describe('IpcSink (a worker shipping its records to the primary)', () => {
  it('ships plain records and audit events in batches every 100 ms', async () => {
    const sent: InventoryMessage[] = [];
    const sink = new IpcSink((m) => void sent.push(m), true, new Channel());
    sink.record(record('01'));
    sink.recordAudit(audit);
    await new Promise((r) => setImmediate(r));
    expect(sent).toEqual([]);
    await expect.poll(() => sent.length, { timeout: 1000, interval: 10 }).toBe(1);
    expect(sent[0]).toEqual({ type: 'inventory', records: [record('01')], audit: [audit] });
  });

  it('ships a kept record within DURABLE_SHIP_MS, with what is pending, and settles it by the primary\u2019s answer', async () => {
    const sent: InventoryMessage[] = [];
    const channel = new Channel();
    const sink = new IpcSink((m) => void sent.push(m), true, channel);
    sink.record(record('00'));
    const kept = [sink.keep(record('01')), sink.keep(record('02')), sink.keep(record('03'))];
    const settled: string[] = [];
    kept.forEach((p, i) => p.then(() => settled.push(`${i} stored`), (e: Error) => settled.push(`${i} ${e.message}`)));
    await new Promise((r) => setTimeout(r, DURABLE_SHIP_MS + 5));
    expect(sent).toHaveLength(1);
    expect(sent[0]!.records).toEqual([record('00')]);
    expect(sent[0]!.durable).toEqual([1, 2, 3].map((id) => ({ id, record: record(`0${id}`) })));
    expect(sink.awaiting).toBe(3);
    fromPrimary(channel, { type: 'inventory-kept', stored: [3, 1], failed: [] });
    await new Promise((r) => setImmediate(r));
    expect(settled.sort()).toEqual(['0 stored', '2 stored']);
    fromPrimary(channel, { type: 'inventory-kept', stored: [], failed: [{ id: 2, reason: 'certificate record discarded: x' }] });
    await new Promise((r) => setImmediate(r));
    expect(settled).toContain('1 certificate record discarded: x');
    expect(sink.awaiting).toBe(0);
  });

  it('follows the primary\u2019s word on whether issuance may go on', () => {
    const channel = new Channel();
    const sink = new IpcSink(() => {}, false, channel);
    expect(sink.accepting()).toBe(false);
    fromPrimary(channel, { type: 'inventory-state', accepting: true });
    expect(sink.accepting()).toBe(true);
  });

  it('fails the records waiting for an answer at once when the channel to the primary closes, and those shipped after', async () => {
    const channel = new Channel();
    const sink = new IpcSink(() => {}, true, channel);
    const waiting = sink.keep(record('01'));
    await new Promise((r) => setTimeout(r, DURABLE_SHIP_MS + 5));
    channel.connected = false;
    channel.emit('disconnect');
    await expect(waiting).rejects.toThrow('the channel to the primary, which stores the records, is closed');
    await expect(sink.keep(record('02'))).rejects.toThrow(/channel to the primary, .* is closed/);
    expect(sink.awaiting).toBe(0);
  });
});

describe('the inventory batch on the IPC channel (encodeInventory / decodeInventory)', () => {
  const full: CertificateRecord = {
    serial: '0a',
    fingerprint: 'f'.repeat(64),
    spiffeId: 'spiffe://cluster.local/ns/default/sa/demo',
    namespace: 'default',
    serviceAccount: 'demo',
    cluster: null,
    issuer: 'default',
    keyAlgorithm: 'EC',
    keySize: 256,
    notBefore: new Date('2026-12-01T00:00:00.000Z'),
    notAfter: new Date('2026-12-02T00:00:00.000Z'),
    issuedAt: new Date('2026-12-01T00:00:01.123Z'),
    requester: 'spiffe://cluster.local/ns/default/sa/demo',
    policyRule: null,
    source: 'issued',
    dnsNames: ['a.example'],
  };

  it('crosses as one string and comes back equal, Dates as Dates (records, audit events, durable records)', () => {
    const m: InventoryMessage = { type: 'inventory', records: [full], audit: [audit], durable: [{ id: 7, record: full }] };
    const wire = encodeInventory(m);
    expect(Object.keys(wire).sort()).toEqual(['batch', 'type']);
    expect(typeof wire.batch).toBe('string');
    // As the channel would carry it.
    const back = decodeInventory(structuredClone(wire));
    expect(back).toEqual(m);
    expect(back.records[0]!.notAfter).toBeInstanceOf(Date);
    expect(back.durable![0]!.record.issuedAt.getTime()).toBe(full.issuedAt.getTime());
    expect(back.audit[0]!.at).toBeInstanceOf(Date);
    expect(decodeInventory(encodeInventory({ type: 'inventory', records: [], audit: [] }))).toEqual({ type: 'inventory', records: [], audit: [] });
  });

  it('refuses what is not a batch with a TypeError (the primary drops it), and leaves a bad field for the inventory to refuse', () => {
    for (const batch of [
      '[1,2]',
      '{"records":[]}',
      '{"records":[],"audit":{},"durable":[]}',
      '{"records":[],"audit":[],"durable":3}',
      'null',
      // The primary answers durable records by id: one it cannot read is refused with its batch.
      '{"records":[],"audit":[],"durable":[null]}',
      '{"records":[],"audit":[],"durable":[{"id":"1","record":{}}]}',
    ]) {
      expect(() => decodeInventory({ type: 'inventory', batch })).toThrow(TypeError);
    }
    expect(() => decodeInventory({ type: 'inventory', batch: 42 } as unknown as InventoryWireMessage)).toThrow(TypeError);
    expect(() => decodeInventory({ type: 'inventory', batch: '{' })).toThrow(SyntaxError);
    const odd = decodeInventory({ type: 'inventory', batch: '{"records":[{"serial":"1","notBefore":5,"notAfter":"not a time"},null],"audit":[7]}' });
    expect(odd.records[0]!.notBefore).toBe(5);
    expect(Number.isNaN(odd.records[0]!.notAfter.getTime())).toBe(true);
    expect(odd.records[1]).toBeNull();
    expect(odd.audit).toEqual([7]);
  });
});
