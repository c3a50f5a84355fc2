import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import type { AuditEvent, CertificateRecord } from '../../../src/inventory/types.js';
import { createLogger } from '../../../src/log/logger.js';
import { inventoryIntake } from '../../../src/runtime/inventory-intake.js';

describe('inventoryIntake (the primary taking what workers ship)', () => {
  it('keeps every valid item, drops what the inventory refuses, and logs drops at most once a second', async () => {
    const kept: string[] = [];
    const inventory = {
      record: (r: CertificateRecord) => void kept.push(r.serial),
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
});
