import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Worker } from 'node:worker_threads';
import { afterEach, describe, expect, it } from 'vitest';
import { SqliteInventoryStore } from '../../../src/inventory/sqlite.js';
import { makeRecord } from './fixtures.js';

const dirs: string[] = [];
afterEach(() => dirs.splice(0).forEach((d) => rmSync(d, { recursive: true, force: true })));

/** Ends the store's worker thread as a native crash would. */
async function killWorker(store: SqliteInventoryStore): Promise<void> {
  await (store as unknown as { worker: Worker }).worker.terminate();
}

describe('SqliteInventoryStore whose worker thread dies', () => {
  it('fails calls at once, then starts a new thread and serves the same file again', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'meshcert-sqlite-'));
    dirs.push(dir);
    const store = new SqliteInventoryStore({ path: join(dir, 'inventory.db'), respawnDelayMs: 100 });
    try {
      await store.migrate();
      await store.insertMany([makeRecord(1)]);
      await killWorker(store);
      await expect(store.count()).rejects.toThrow(/worker exited/);
      await new Promise((r) => setTimeout(r, 150));
      expect(await store.count()).toBe(1);
      await store.insertMany([makeRecord(2)]);
      expect(await store.count()).toBe(2);
    } finally {
      await store.close();
    }
  });

  it('stays failed for an in-memory store (its data died with the thread)', async () => {
    const store = new SqliteInventoryStore({ path: ':memory:', respawnDelayMs: 0 });
    try {
      await store.migrate();
      await killWorker(store);
      await new Promise((r) => setTimeout(r, 20));
      await expect(store.count()).rejects.toThrow(/worker exited/);
    } finally {
      await store.close();
    }
  });
});
