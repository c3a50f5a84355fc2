/**
 * Certificate inventory: every certificate meshcert issues (and ones it discovers)
 * is recorded here, write-behind (see recorder.ts), so recording never slows issuance.
 *
 * Two backends with identical semantics: SQLite (single replica, file) and PostgreSQL
 * (several replicas). The contract test suite (test/unit/inventory/store.contract.test.ts)
 * runs the same assertions against both.
 */
/**
 * The batch holds data the store will never accept (a validation failure, a constraint
 * violation): retrying it unchanged fails again. Anything else a store throws is treated as
 * transient (store unreachable, busy, disk full...) and retried.
 */
export class InventoryDataError extends Error {
    name = 'InventoryDataError';
}
/** A `cursor` that is not a `nextCursor` returned by `list`. */
export class InvalidCursorError extends RangeError {
    name = 'InvalidCursorError';
    constructor() {
        super('invalid inventory cursor: pass back the nextCursor of a previous page unchanged');
    }
}
//# sourceMappingURL=types.js.map