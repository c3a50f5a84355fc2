import type { RecordSink } from '../inventory/sink.js';
import type { Logger } from '../log/logger.js';
import type { InventoryMessage } from './ipc-sink.js';

/**
 * The primary's handler for the records and audit events its workers ship. An item the inventory
 * refuses (the recorder validates every one) is dropped and logged, at most once a second with a
 * running count: a worker's message must never take down the primary, its other workers and
 * every record still buffered.
 */
export function inventoryIntake(inventory: Pick<RecordSink, 'record' | 'recordAudit'>, logger: Logger, now = () => performance.now()): (m: InventoryMessage) => void {
  let dropped = 0;
  let loggedAt = -Infinity;
  const keep = (add: () => void, what: string): void => {
    try {
      add();
    } catch (err) {
      dropped++;
      if (now() - loggedAt < 1000) return;
      loggedAt = now();
      logger.error({ err, what, droppedSoFar: dropped }, 'inventory refused an item shipped by a worker; dropped');
    }
  };
  return (m) => {
    for (const r of m.records) keep(() => inventory.record(r), 'certificate record');
    for (const a of m.audit) keep(() => inventory.recordAudit(a), 'audit event');
  };
}
