import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import type { AuditEvent, CertificateRecord } from '../../../src/inventory/types.js';
import { createLogger } from '../../../src/log/logger.js';
import { inventoryIntake } from '../../../src/runtime/inventory-intake.js';
import type { InventoryKeptMessage } from '../../../src/runtime/ipc-sink.js';

describe('inventoryIntake (the primary taking what workers ship)', () => {
  it('keeps every valid item, drops what the inventory refuses, and logs drops at most once a second', async () => {
    const kept: string[] = [];
    const inventory = {
      record: (r: CertificateRecord) => void kept.push(r.serial),
      keep: () => Promise.resolve(),
      recordAudit: (a: AuditEvent) => {
        if (a.reason?.includes('\u0000')) throw new TypeError('invalid audit event: text fields must be strings (or null) without NUL characters');
        kept.push(a.reason ?? '');
      },
    };
    const lines: string[] = [];
    const logger = createLogger('info', new Writable({ write: (c, _e, cb) => (lines.push(String(c)), cb()) }));
    let clock = 0;
    const counted: string[] = [];
    const intake = inventoryIntake(inventory, logger, { now: () => clock, onDropped: (kind) => void counted.push(kind) });
    const audit = (reason: string): AuditEvent => ({ at: new Date(), requester: null, identity: null, cluster: null, decision: 'refused', code: 'AUTH_INVALID', reason });
    const record = { serial: '01' } as CertificateRecord;

    expect(() => intake({ type: 'inventory', records: [record], audit: [audit('bad\u0000'), audit('ok'), audit('bad\u0000')] })).not.toThrow();
    clock = 1500;
    intake({ type: 'inventory', records: [], audit: [audit('bad\u0000')] });
    expect(kept).toEqual(['01', 'ok']);
    expect(counted).toEqual(['audit', 'audit', 'audit']);
    await new Promise((r) => setTimeout(r, 300)); // the logger flushes on a timer
    const drops = lines.filter((l) => l.includes('inventory refused an item shipped by a worker')).map((l) => JSON.parse(l) as { droppedSoFar: number; what: string });
    expect(drops.map((d) => d.droppedSoFar)).toEqual([1, 3]);
    expect(drops[0]!.what).toBe('audit event');
  });

  it('answers the durable records of a message once each is stored or lost, to the worker that sent them', async () => {
    let release: () => void = () => {};
    const stored = new Promise<void>((r) => (release = r));
    const inventory = {
      record: () => {},
      recordAudit: () => {},
      keep: (r: CertificateRecord) =>
        r.serial === 'slow' ? stored : r.serial === 'bad' ? Promise.reject(new TypeError('invalid certificate record: serial')) : r.serial === 'refused' ? Promise.reject(new Error('certificate record discarded: constraint')) : Promise.resolve(),
    };
    const dropped: string[] = [];
    const intake = inventoryIntake(inventory, createLogger('silent'), { onDropped: (kind) => void dropped.push(kind) });
    const replies: InventoryKeptMessage[] = [];
    const durable = ['ok', 'slow', 'bad', 'refused'].map((serial, i) => ({ id: i + 1, record: { serial } as CertificateRecord }));
    intake({ type: 'inventory', records: [], audit: [], durable }, (ack) => void replies.push(ack));
    await new Promise((r) => setTimeout(r, 20));
    expect(replies).toEqual([]); // one answer for the message, once the slow one is stored too
    release();
    await expect.poll(() => replies.length).toBe(1);
    expect(replies[0]!.type).toBe('inventory-kept');
    expect([...replies[0]!.stored].sort()).toEqual([1, 2]);
    expect(replies[0]!.failed).toEqual([
      { id: 3, reason: 'invalid certificate record: serial' },
      { id: 4, reason: 'certificate record discarded: constraint' },
    ]);
    expect(dropped).toEqual(['record']); // the malformed one counts as a worker's item refused
  });
});
