import type { IssuedCertificate } from '../authority/authority.js';
import type { CallContext } from '../authority/observer.js';
import { withTimeout } from '../async/with-timeout.js';
import { CaError } from '../errors/ca-error.js';
import type { Logger } from '../log/logger.js';
import { recordFromIssued, type RecordSink } from './sink.js';

/**
 * How long a call waits for its record to be stored (inventory.failClosed): the time after which
 * a write that has not answered counts as the store being down (InventoryRecorder.writeStallMs).
 */
export const KEEP_RECORD_TIMEOUT_MS = 5000;
/** The warning for records not stored is logged at most this often, with a count. */
const KEEP_WARN_EVERY_MS = 10_000;

/**
 * inventory.failClosed: stores a certificate's record before the certificate is answered, so a
 * crash (even SIGKILL) after the answer loses no record. A record not stored in time, or refused,
 * fails the call (UNAVAILABLE, retried; the refusal names the serial, and its audit row carries
 * it: see createCertificateHandler): that certificate is never delivered. A record still queued
 * is written later all the same; the inventory may then hold a certificate nobody got, never the
 * reverse.
 */
export function keepRecord(
  sink: Pick<RecordSink, 'keep'>,
  logger: Logger,
  o: { timeoutMs?: number; onUndelivered?: () => void; now?: () => number } = {},
): (cert: IssuedCertificate, ctx: CallContext) => Promise<void> {
  const now = o.now ?? Date.now;
  let warnedAt = -Infinity;
  let unwarned = 0;
  /** Set while failures since the last warning wait for the window's end to be logged. */
  let tail: NodeJS.Timeout | undefined;
  const warn = (fields: Record<string, unknown>): void => {
    logger.warn({ ...fields, undelivered: unwarned }, 'certificate records not stored; those certificates are not delivered (inventory.failClosed)');
    warnedAt = now();
    unwarned = 0;
  };
  return async (cert, ctx) => {
    try {
      await withTimeout(sink.keep(recordFromIssued(cert, ctx)), o.timeoutMs ?? KEEP_RECORD_TIMEOUT_MS, 'the inventory store');
    } catch (err) {
      o.onUndelivered?.();
      unwarned++;
      if (now() - warnedAt >= KEEP_WARN_EVERY_MS) {
        if (tail) clearTimeout(tail);
        tail = undefined;
        warn({ err, serial: cert.leaf.serial, identity: cert.spiffeId });
      } else {
        // A burst that ends within the window is still said, with its count, when the window ends.
        tail ??= setTimeout(
          () => {
            tail = undefined;
            if (unwarned > 0) warn({});
          },
          Math.max(0, warnedAt + KEEP_WARN_EVERY_MS - now()),
        );
        tail.unref();
      }
      throw new CaError(
        'ISSUER_UNAVAILABLE',
        `the certificate inventory could not record certificate ${cert.leaf.serial} and this CA is configured to fail closed, so it is not delivered; retry shortly`,
        { cause: err },
      );
    }
  };
}

