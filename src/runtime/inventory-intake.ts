import type { RecordSink } from '../inventory/sink.js';
import type { Logger } from '../log/logger.js';
import type { InventoryMessage } from './ipc-sink.js';

/**
 * The primary's handler for the records and audit events its workers ship. An item the inventory
 * refuses (the recorder validates every one) is dropped and logged, at most once a second with a
 * running count: a worker's message must never take down the primary, its other workers and
 * every record still buffered.
 */
export function inventoryIntake(
  inventory: Pick<RecordSink, 'record' | 'recordAudit'>,
  logger: Logger,
  o: { now?: () => number; onDropped?: (kind: 'record' | 'audit') => void } = {},
): (m: InventoryMessage) => void {
  const now = o.now ?? (() => performance.now());
  let dropped = 0;
  let loggedAt = -Infinity;
  const keep = (add: () => void, kind: 'record' | 'audit', what: string): void => {
    try {
      add();
    } catch (err) {
      dropped++;
      o.onDropped?.(kind);
      if (now() - loggedAt < 1000) return;
      loggedAt = now();
      logger.error({ err, what, droppedSoFar: dropped }, 'inventory refused an item shipped by a worker; dropped');
    }
  };
  return (m) => {
    for (const r of m.records) keep(() => inventory.record(r), 'record', 'certificate record');
    for (const a of m.audit) keep(() => inventory.recordAudit(a), 'audit', 'audit event');
  };
}
