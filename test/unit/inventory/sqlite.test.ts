import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Worker } from 'node:worker_threads';
import { afterEach, describe, expect, it } from 'vitest';
import Database from 'better-sqlite3';
import { buildListQuery, DISCOVERED_EXPIRING_SQL, encodeCursor } from '../../../src/inventory/common.js';
import { SqliteInventoryStore, setWalMode } from '../../../src/inventory/sqlite.js';
import type { CertificateFilter } from '../../../src/inventory/types.js';
import { makeRecord } from './fixtures.js';

const dirs: string[] = [];
afterEach(() => dirs.splice(0).forEach((d) => rmSync(d, { recursive: true, force: true })));

/** Ends the store's worker thread as a native crash would. */
async function killWorker(store: SqliteInventoryStore): Promise<void> {
  await (store as unknown as { worker: Worker }).worker.terminate();
}

/** A connection whose `journal_mode = WAL` answers with each of `errors` in turn, then succeeds. */
function connection(errors: ({ code: string } | Error)[]): { pragma(sql: string): unknown; calls: string[] } {
  const calls: string[] = [];
  return {
    calls,
    pragma(sql: string) {
      calls.push(sql);
      const next = errors.shift();
      if (next !== undefined) throw next;
      return 'wal';
    },
  };
}

describe('setWalMode (two processes opening a fresh inventory at once)', () => {
  const busy = () => Object.assign(new Error('database is locked'), { code: 'SQLITE_BUSY' });

  it('retries SQLITE_BUSY, which SQLite returns at once (without its busy handler) when two connections switch one file together', () => {
    const db = connection([busy(), busy(), busy()]);
    setWalMode(db, 5_000);
    expect(db.calls).toEqual(Array(4).fill('journal_mode = WAL'));
  });

  it('gives up with the SQLITE_BUSY once busy_timeout has passed', () => {
    const db = connection(Array.from({ length: 10_000 }, busy));
    const started = Date.now();
    expect(() => setWalMode(db, 60)).toThrow('database is locked');
    expect(Date.now() - started).toBeGreaterThanOrEqual(60);
    expect(db.calls.length).toBeGreaterThan(1);
    expect(db.calls.length).toBeLessThan(20);
  });

  it('does not retry other errors', () => {
    const db = connection([Object.assign(new Error('disk I/O error'), { code: 'SQLITE_IOERR' }), busy()]);
    expect(() => setWalMode(db, 5_000)).toThrow('disk I/O error');
    expect(db.calls).toHaveLength(1);
  });

  it('retries the extended codes of SQLITE_BUSY too', () => {
    const db = connection([Object.assign(new Error('database is locked'), { code: 'SQLITE_BUSY_RECOVERY' })]);
    setWalMode(db, 5_000);
    expect(db.calls).toHaveLength(2);
  });

  // A smoke test that the copy in the store's thread runs (the race itself is rare: 1 round in 100).
  it('is what the store\'s thread runs: stores opening one fresh file together all migrate it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'meshcert-sqlite-'));
    dirs.push(dir);
    for (let round = 0; round < 20; round++) {
      const path = join(dir, `fresh-${round}.db`);
      const stores = [0, 1, 2].map(() => new SqliteInventoryStore({ path }));
      try {
        await Promise.all(stores.map((s) => s.migrate()));
      } finally {
        await Promise.all(stores.map((s) => s.close()));
      }
      const db = new Database(path, { readonly: true });
      expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
      db.close();
    }
  });
});

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

describe('SqliteInventoryStore list pages', () => {
  /** A migrated inventory, `fill`ed through the store, then opened read-only for EXPLAIN QUERY PLAN. */
  async function planDb<T>(fill: (store: SqliteInventoryStore) => Promise<T>, check: (db: Database.Database, filled: T) => void): Promise<void> {
    const dir = mkdtempSync(join(tmpdir(), 'meshcert-sqlite-plan-'));
    dirs.push(dir);
    const path = join(dir, 'inventory.db');
    const store = new SqliteInventoryStore({ path });
    await store.migrate();
    const filled = await fill(store);
    await store.close();
    const db = new Database(path, { readonly: true });
    try {
      check(db, filled);
    } finally {
      db.close();
    }
  }

  it('seek the (not_after, fingerprint) indexes to the cursor instead of scanning from the start', async () => {
    const fill = async (store: SqliteInventoryStore): Promise<string> => {
      await store.insertMany([makeRecord(1)]);
      return (await store.list({ limit: 1 })).items.map((r) => encodeCursor(r))[0]!;
    };
    await planDb(fill, (db, cursor) => {
      const plan = (filter: CertificateFilter): string => {
        const q = buildListQuery(filter);
        const params = q.params.map((p) => (p instanceof Date ? p.getTime() : p));
        return (db.prepare(`EXPLAIN QUERY PLAN ${q.sql}`).all(...params) as Array<{ detail: string }>).map((r) => r.detail).join(' | ');
      };
      expect(plan({ cursor })).toMatch(/^SEARCH inventory_certificates USING INDEX inventory_certificates_not_after \(\(not_after,fingerprint\)>\(\?,\?\)\)$/);
      expect(plan({ cursor, namespace: 'ns' })).toMatch(/^SEARCH inventory_certificates USING INDEX inventory_certificates_namespace \(namespace=\? AND \(not_after,fingerprint\)>\(\?,\?\)\)$/);
    });
  });

  it('of discovered certificates expiring walk the discovery tables and look certificates up, never scanning them (however many were issued)', async () => {
    await planDb(async () => undefined, (db) => {
      const plan = (db.prepare(`EXPLAIN QUERY PLAN ${DISCOVERED_EXPIRING_SQL}`).all(0) as Array<{ detail: string }>).map((r) => r.detail);
      expect(plan.filter((d) => /^(SCAN|SEARCH) /.test(d))).toEqual([
        'SCAN s USING INDEX inventory_discovery_sightings_latest',
        'SEARCH p USING INDEX sqlite_autoindex_inventory_discovery_places_1 (source=?)',
        'SEARCH c USING INDEX sqlite_autoindex_inventory_certificates_1 (fingerprint=?)',
      ]);
    });
  });
});

describe('SqliteInventoryStore opened read-only', () => {
  it('calls a database whose migrations table is empty (a first migration that never ran) one without a schema, not an old schema', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'meshcert-sqlite-ro-'));
    dirs.push(dir);
    const path = join(dir, 'inventory.db');
    const db = new Database(path);
    db.exec('CREATE TABLE inventory_schema_migrations (version INTEGER PRIMARY KEY NOT NULL, applied_at INTEGER NOT NULL)');
    db.close();
    const store = new SqliteInventoryStore({ path, readOnly: true });
    try {
      await expect(store.migrate()).rejects.toThrow(/^it holds no meshcert inventory \(no schema\): is this the right database\?$/);
    } finally {
      await store.close();
    }
  });
});

describe('SqliteInventoryStore: a file where its folder should be', () => {
  it.each([
    ['the folder itself', ['.meshcert'], '.meshcert/inventory.db', '.meshcert'],
    ['a parent of it', ['data'], 'data/sub/inventory.db', 'data'],
  ])('names the file in the way (%s), not mkdir\'s EEXIST or ENOTDIR', (_name, files, dbPath, inTheWay) => {
    const dir = mkdtempSync(join(tmpdir(), 'meshcert-sqlite-'));
    dirs.push(dir);
    for (const f of files) writeFileSync(join(dir, f), 'not a folder');
    expect(() => new SqliteInventoryStore({ path: join(dir, dbPath) })).toThrow(
      `${join(dir, inTheWay)} is not a directory (the inventory's file ${join(dir, dbPath)} is to be created under it): move it, or set inventory.path or dataDir elsewhere`,
    );
  });
});
