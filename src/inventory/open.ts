/**
 * Opens (and migrates) the configured inventory store.
 */
import { SqliteInventoryStore } from './sqlite.js';
import type { InventoryStore } from './types.js';

export type OpenStoreOptions =
  | { kind: 'sqlite'; path: string; readOnly?: boolean; durable?: boolean }
  | { kind: 'postgres'; url: string; poolSize?: number; connectionTimeoutMs?: number; queryTimeoutMs?: number; onPoolError?: (err: Error) => void; readOnly?: boolean };

/**
 * Opens the store and runs migrate() (with `readOnly`: checks the schema is current, changing
 * nothing); the store is closed again if that fails.
 */
export async function openStore(opts: OpenStoreOptions): Promise<InventoryStore> {
  const store = await createStore(opts);
  try {
    await store.migrate();
  } catch (err) {
    await store.close().catch(() => undefined);
    throw err;
  }
  return store;
}

/** The store object, not yet migrated (nor, for PostgreSQL, connected). */
export async function createStore(opts: OpenStoreOptions): Promise<InventoryStore> {
  let store: InventoryStore;
  switch (opts.kind) {
    case 'sqlite':
      store = new SqliteInventoryStore({ path: opts.path, ...(opts.readOnly ? { readOnly: true } : {}), ...(opts.durable ? { durable: true } : {}) });
      break;
    case 'postgres': {
      // Loaded on demand: pg is not needed (nor its memory spent) when the inventory is SQLite.
      const { PostgresInventoryStore } = await import('./postgres.js');
      store = new PostgresInventoryStore({
        url: opts.url,
        poolSize: opts.poolSize,
        connectionTimeoutMs: opts.connectionTimeoutMs,
        queryTimeoutMs: opts.queryTimeoutMs,
        onPoolError: opts.onPoolError,
        readOnly: opts.readOnly,
      });
      break;
    }
    default: {
      const kind: unknown = (opts as { kind?: unknown }).kind;
      throw new TypeError(`unknown inventory store kind: ${String(kind)}`);
    }
  }
  return store;
}
