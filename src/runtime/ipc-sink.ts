import type { RecordSink } from '../inventory/sink.js';
import type { AuditEvent, CertificateRecord } from '../inventory/types.js';

/** A record whose call waits until the primary has stored it (inventory.failClosed), by this worker's id for it. */
export type DurableRecord = { id: number; record: CertificateRecord };
export type InventoryMessage = { type: 'inventory'; records: CertificateRecord[]; audit: AuditEvent[]; durable?: DurableRecord[] };
/**
 * An InventoryMessage as it crosses the IPC channel: its batch as JSON text, not as objects. Node's
 * 'advanced' IPC serialization (V8's ValueSerializer, and its deserializer in the primary) keeps
 * every object it wrote reachable until its own wrapper is collected, which a scavenge does not
 * do: each batch's records survived into the old generation of both processes and filled it
 * between mark-compacts, whose pauses are the slowest calls at half of peak (bench/HISTORY.md,
 * round 23). A string is one object, and JSON writes a batch faster than V8's serializer.
 */
export type InventoryWireMessage = { type: 'inventory'; batch: string };
export type InventoryStateMessage = { type: 'inventory-state'; accepting: boolean };
/** The primary's answer to a message's durable records: stored, or not (with why, for the worker's log). */
export type InventoryKeptMessage = { type: 'inventory-kept'; stored: number[]; failed: { id: number; reason: string }[] };

/** How soon a record someone waits for (keep) leaves for the primary (see IpcSink). */
export const DURABLE_SHIP_MS = 5;

/** A worker's IPC channel to its primary, as this sink uses it (`process` in a cluster worker). */
export interface IpcChannel {
  on(event: 'message', listener: (m: InventoryStateMessage | InventoryKeptMessage) => void): unknown;
  on(event: 'disconnect', listener: () => void): unknown;
  /** Undefined when this process has no channel at all. */
  readonly connected?: boolean;
}

/**
 * A worker's inventory sink: batches records and audit events and ships them to the primary,
 * which owns the one write-behind recorder and store (one SQLite writer, one PostgreSQL pool).
 * Batches cross as JSON text (encodeInventory, by the caller's `send`). Batches leave every 100 ms or at 200 items; a record
 * someone waits for (keep) leaves within DURABLE_SHIP_MS, with everything pending: at thousands
 * of certificates a second that ships several per message, each message costing both processes
 * CPU, for a wait far shorter than the store's write.
 */
export class IpcSink implements RecordSink {
  private records: CertificateRecord[] = [];
  private audit: AuditEvent[] = [];
  private durable: DurableRecord[] = [];
  private readonly waiting = new Map<number, { resolve: () => void; reject: (err: Error) => void }>();
  private nextId = 0;
  private timer: NodeJS.Timeout | undefined;
  private durableTimer: NodeJS.Timeout | undefined;
  private accept: boolean;

  /**
   * `accepting`: until the primary says otherwise (it does as soon as this worker listens).
   * `channel`: where the primary's messages arrive (this worker process; tests pass their own).
   */
  constructor(
    private readonly send: (m: InventoryMessage) => void,
    accepting = true,
    private readonly channel: IpcChannel = process,
  ) {
    this.accept = accepting;
    channel.on('message', (m: InventoryStateMessage | InventoryKeptMessage) => {
      if (m?.type === 'inventory-state') this.accept = m.accepting;
      else if (m?.type === 'inventory-kept') this.settle(m);
    });
    // No answer can come any more (the primary is gone): fail the calls now, not at their timeout.
    channel.on('disconnect', () => this.abandon());
  }

  record(rec: CertificateRecord): void {
    this.records.push(rec);
    this.schedule();
  }

  keep(rec: CertificateRecord): Promise<void> {
    const id = ++this.nextId;
    return new Promise<void>((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.durable.push({ id, record: rec });
      this.durableTimer ??= setTimeout(() => this.flush(), DURABLE_SHIP_MS);
    });
  }

  recordAudit(ev: AuditEvent): void {
    this.audit.push(ev);
    this.schedule();
  }

  accepting(): boolean {
    return this.accept;
  }

  /** Records still waiting for the primary's answer. */
  get awaiting(): number {
    return this.waiting.size;
  }

  /** Sends whatever is pending now (called on shutdown before the worker exits). */
  flush(): void {
    if (this.timer) clearTimeout(this.timer);
    if (this.durableTimer) clearTimeout(this.durableTimer);
    this.timer = undefined;
    this.durableTimer = undefined;
    if (this.records.length === 0 && this.audit.length === 0 && this.durable.length === 0) return;
    const m: InventoryMessage = { type: 'inventory', records: this.records, audit: this.audit, ...(this.durable.length > 0 ? { durable: this.durable } : {}) };
    this.records = [];
    this.audit = [];
    this.durable = [];
    this.send(m);
    if (m.durable && this.channel.connected === false) this.abandon();
  }

  private abandon(): void {
    for (const w of this.waiting.values()) w.reject(new Error('the channel to the primary, which stores the records, is closed'));
    this.waiting.clear();
  }

  private settle(m: InventoryKeptMessage): void {
    for (const id of m.stored) {
      this.waiting.get(id)?.resolve();
      this.waiting.delete(id);
    }
    for (const { id, reason } of m.failed) {
      this.waiting.get(id)?.reject(new Error(reason));
      this.waiting.delete(id);
    }
  }

  private schedule(): void {
    if (this.records.length + this.audit.length >= 200) return this.flush();
    this.timer ??= setTimeout(() => this.flush(), 100);
  }
}

/** A batch for the channel (see InventoryWireMessage). Dates become ISO 8601 text, which decodeInventory reads back. */
export function encodeInventory(m: InventoryMessage): InventoryWireMessage {
  return { type: 'inventory', batch: JSON.stringify({ records: m.records, audit: m.audit, durable: m.durable }) };
}

/**
 * A batch off the channel. Throws when it is not one (TypeError, or JSON's SyntaxError): the
 * primary drops it and says so (its durable records then fail in their worker at the wait's
 * timeout, since their ids cannot be read). Fields that are Dates come back as Dates; anything else
 * in their place is left as it came, for the inventory's own checks to refuse with the item.
 */
export function decodeInventory(w: InventoryWireMessage): InventoryMessage {
  const parsed: unknown = typeof w.batch === 'string' ? JSON.parse(w.batch) : undefined;
  const b = parsed as Partial<Omit<InventoryMessage, 'type'>> | undefined;
  if (typeof b !== 'object' || b === null || !Array.isArray(b.records) || !Array.isArray(b.audit) || (b.durable !== undefined && !Array.isArray(b.durable))) {
    throw new TypeError('an inventory batch from a worker is not {records, audit, durable?}');
  }
  // A durable record's id is what the primary answers by: without one there is nothing to answer.
  if (b.durable?.some((d) => !isObject(d) || typeof d.id !== 'number')) throw new TypeError('an inventory batch from a worker has a durable record without a numeric id');
  for (const r of b.records) reviveRecord(r);
  for (const a of b.audit) if (isObject(a)) a.at = revive(a.at);
  for (const d of b.durable ?? []) reviveRecord(d.record);
  return { type: 'inventory', records: b.records, audit: b.audit, ...(b.durable ? { durable: b.durable } : {}) };
}

function reviveRecord(r: CertificateRecord | undefined): void {
  if (!isObject(r)) return;
  r.notBefore = revive(r.notBefore);
  r.notAfter = revive(r.notAfter);
  r.issuedAt = revive(r.issuedAt);
}

function isObject<T>(v: T | undefined): v is T & object {
  return typeof v === 'object' && v !== null;
}

/** JSON's text of a Date back to a Date; anything else unchanged (an invalid Date is the inventory's to refuse). */
function revive(v: Date): Date {
  return typeof v === 'string' ? new Date(v) : v;
}
