import { Writable } from 'node:stream';
import { describe, expect, it, vi } from 'vitest';
import { createLogger } from '../../../src/log/logger.js';
import { InventoryService } from '../../../src/inventory/service.js';
import { makeRecord } from './fixtures.js';

// A store that never answers once opened (a database that drops packets): writes and close hang.
const hung = vi.hoisted(() => ({ closes: 0 }));
vi.mock('../../../src/inventory/open.js', () => ({
  createStore: async () => ({
    kind: 'postgres',
    migrate: async () => {},
    insertMany: () => new Promise(() => {}),
    insertAudit: () => new Promise(() => {}),
    ping: () => new Promise(() => {}),
    pruneExpired: async () => 0,
    pruneAudit: async () => 0,
    count: async () => 0,
    close: () => {
      hung.closes++;
      return new Promise(() => {});
    },
  }),
}));

describe('InventoryService.close with a store that does not answer', () => {
  it('gives up at its deadline and rejects at once, not waiting for the store to close (the caller logs what was not written)', async () => {
    const lines: string[] = [];
    const logger = createLogger('info', new Writable({ write: (c, _e, cb) => (lines.push(String(c)), cb()) }));
    const svc = (await InventoryService.open({ store: 'postgres', url: 'postgres://meshcert@127.0.0.1:1/inventory', failClosed: false, maxBuffer: 1000, retention: 86_400 }, logger))!;
    svc.record(makeRecord(1));
    const began = Date.now();
    await expect(svc.close(200)).rejects.toThrow();
    expect(Date.now() - began).toBeLessThan(2000);
    expect(hung.closes).toBe(1);
  });
});
