import type { RecordSink } from '../inventory/sink.js';
import type { AuditEvent, CertificateRecord } from '../inventory/types.js';

export type InventoryMessage = { type: 'inventory'; records: CertificateRecord[]; audit: AuditEvent[] };
export type InventoryStateMessage = { type: 'inventory-state'; accepting: boolean };

/**
 * A worker's inventory sink: batches records and audit events and ships them to the primary,
 * which owns the one write-behind recorder and store (one SQLite writer, one PostgreSQL pool).
 * Structured-clone IPC keeps Dates intact. Batches leave every 100 ms or at 200 items.
 */
export class IpcSink implements RecordSink {
  private records: CertificateRecord[] = [];
  private audit: AuditEvent[] = [];
  private timer: NodeJS.Timeout | undefined;
  private accept: boolean;

  /** `accepting`: until the primary says otherwise (it does as soon as this worker listens). */
  constructor(
    private readonly send: (m: InventoryMessage) => void,
    accepting = true,
  ) {
    this.accept = accepting;
    process.on('message', (m: InventoryStateMessage) => {
      if (m?.type === 'inventory-state') this.accept = m.accepting;
    });
  }

  record(rec: CertificateRecord): void {
    this.records.push(rec);
    this.schedule();
  }

  recordAudit(ev: AuditEvent): void {
    this.audit.push(ev);
    this.schedule();
  }

  accepting(): boolean {
    return this.accept;
  }

  /** Sends whatever is pending now (called on shutdown before the worker exits). */
  flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.records.length === 0 && this.audit.length === 0) return;
    const m: InventoryMessage = { type: 'inventory', records: this.records, audit: this.audit };
    this.records = [];
    this.audit = [];
    this.send(m);
  }

  private schedule(): void {
    if (this.records.length + this.audit.length >= 200) return this.flush();
    this.timer ??= setTimeout(() => this.flush(), 100);
  }
}
