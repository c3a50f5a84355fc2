import { describe, expect, it } from 'vitest';
import { MigratingStore } from '../../../src/inventory/migrating-store.js';
import type { InventoryStore } from '../../../src/inventory/types.js';
import { makeRecord } from './fixtures.js';
import { captureLogs } from '../../support/log-capture.js';

/** A store whose migrate() fails with the given errors in turn, then succeeds; counts its calls. */
function fakeStore(failures: Error[]): InventoryStore & { migrations: number; inserted: number } {
  const store = {
    kind: 'postgres' as const,
    migrations: 0,
    inserted: 0,
    async migrate() {
      store.migrations++;
      const e = failures.shift();
      if (e) throw e;
    },
    async insertMany(records: readonly unknown[]) {
      store.inserted += records.length;
    },
    async ping() {},
    async close() {},
  };
  return store as unknown as InventoryStore & { migrations: number; inserted: number };
}

const connRefused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' });
const badPassword = Object.assign(new Error('password authentication failed for user "meshcert"'), { code: '28P01' });

describe('MigratingStore', () => {
  it('fails calls as the store being down until a migration succeeds, which a call tries itself (at most once a second)', async () => {
    const inner = fakeStore([connRefused]);
    const { logger } = captureLogs();
    // The background timer is far away: only the calls can bring the store up here.
    const store = new MigratingStore(inner, { logger, isConnectionFailure: (e) => e === connRefused, initialDelayMs: 60_000 });
    try {
      // The start's own failed migrate was the last attempt: none within the second after it.
      await expect(store.insertMany([makeRecord(1)])).rejects.toThrow('the inventory store has not been reachable since meshcert started');
      expect(inner.migrations).toBe(0);
      await new Promise((r) => setTimeout(r, 1050));
      await expect(store.ping()).rejects.toThrow(/not been reachable/);
      expect(inner.migrations).toBe(1);
      await new Promise((r) => setTimeout(r, 1050));
      await store.insertMany([makeRecord(1)]);
      expect(inner.migrations).toBe(2);
      expect(store.ready).toBe(true);
      expect(inner.inserted).toBe(1);
    } finally {
      await store.close();
    }
  });

  it('logs the first failure of a kind, then at most one line a minute', async () => {
    const inner = fakeStore([connRefused, connRefused, connRefused, connRefused, connRefused]);
    const { logger, lines } = captureLogs();
    const store = new MigratingStore(inner, { logger, isConnectionFailure: (e) => e === connRefused, initialDelayMs: 5, maxDelayMs: 5 });
    try {
      await expect.poll(() => store.ready, { timeout: 2000 }).toBe(true);
      expect(inner.migrations).toBe(6);
      expect(lines.map((l) => String(l.msg))).toEqual(['inventory store still unreachable; records are kept in memory, retrying', 'inventory store reachable: migrations done, writing the records kept meanwhile']);
    } finally {
      await store.close();
    }
  });

  it('says whether the store is unreachable or refuses meshcert, and keeps retrying in the background', async () => {
    const inner = fakeStore([connRefused, badPassword]);
    const { logger, lines } = captureLogs();
    const store = new MigratingStore(inner, { logger, isConnectionFailure: (e) => e === connRefused, initialDelayMs: 10, maxDelayMs: 20 });
    try {
      await expect.poll(() => store.ready, { timeout: 2000 }).toBe(true);
      const msgs = lines.map((l) => String(l.msg));
      expect(msgs[0]).toBe('inventory store still unreachable; records are kept in memory, retrying');
      expect(msgs[1]).toMatch(/^inventory store refuses meshcert \(credentials, database, permissions\?\): an operator must fix it/);
      expect(msgs[2]).toBe('inventory store reachable: migrations done, writing the records kept meanwhile');
    } finally {
      await store.close();
    }
  });
});
