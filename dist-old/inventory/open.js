/**
 * Opens (and migrates) the configured inventory store.
 */
import { PostgresInventoryStore } from './postgres.js';
import { SqliteInventoryStore } from './sqlite.js';
/** Opens the store and runs migrate(); the store is closed again if migration fails. */
export async function openStore(opts) {
    let store;
    switch (opts.kind) {
        case 'sqlite':
            store = new SqliteInventoryStore({ path: opts.path });
            break;
        case 'postgres':
            store = new PostgresInventoryStore({
                url: opts.url,
                poolSize: opts.poolSize,
                connectionTimeoutMs: opts.connectionTimeoutMs,
                queryTimeoutMs: opts.queryTimeoutMs,
                onPoolError: opts.onPoolError,
            });
            break;
        default: {
            const kind = opts.kind;
            throw new TypeError(`unknown inventory store kind: ${String(kind)}`);
        }
    }
    try {
        await store.migrate();
    }
    catch (err) {
        await store.close().catch(() => undefined);
        throw err;
    }
    return store;
}
//# sourceMappingURL=open.js.map