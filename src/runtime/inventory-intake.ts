import type { RecordSink } from '../inventory/sink.js';
import type { Logger } from '../log/logger.js';
import type { InventoryKeptMessage, InventoryMessage } from './ipc-sink.js';

/**
 * The primary's handler for the records and audit events its workers ship. An item the inventory
 * refuses (the recorder validates every one) is dropped and logged, at most once a second with a
 * running count: a worker's message must never take down the primary, its other workers and
 * every record still buffered. Durable records (inventory.failClosed) are answered through
 * `reply` once all of the message's are stored or lost; the worker's call waits for that.
 */
export function inventoryIntake(
  inventory: Pick<RecordSink, 'record' | 'recordAudit' | 'keep'>,
  logger: Logger,
  o: { now?: () => number; onDropped?: (kind: 'record' | 'audit') => void } = {},
): (m: InventoryMessage, reply?: (ack: InventoryKeptMessage) => void) => void {
  const now = o.now ?? (() => performance.now());
  let dropped = 0;
  let loggedAt = -Infinity;
  const refused = (err: unknown, kind: 'record' | 'audit', what: string): void => {
    dropped++;
    o.onDropped?.(kind);
    if (now() - loggedAt < 1000) return;
    loggedAt = now();
    logger.error({ err, what, droppedSoFar: dropped }, 'inventory refused an item shipped by a worker; dropped');
  };
  const take = (add: () => void, kind: 'record' | 'audit', what: string): void => {
    try {
      add();
    } catch (err) {
      refused(err, kind, what);
    }
  };
  return (m, reply) => {
    for (const r of m.records) take(() => inventory.record(r), 'record', 'certificate record');
    for (const a of m.audit) take(() => inventory.recordAudit(a), 'audit', 'audit event');
    if (!m.durable || m.durable.length === 0) return;
    const ack: InventoryKeptMessage = { type: 'inventory-kept', stored: [], failed: [] };
    const each = m.durable.map(({ id, record }) =>
      inventory.keep(record).then(
        () => void ack.stored.push(id),
        (err: unknown) => {
          // A malformed record is a worker's fault, logged as the others; a store's refusal or an
          // abandoned write is logged by the worker whose call it fails.
          if (err instanceof TypeError) refused(err, 'record', 'certificate record');
          ack.failed.push({ id, reason: err instanceof Error ? err.message : String(err) });
        },
      ),
    );
    void Promise.all(each).then(() => reply?.(ack));
  };
}
