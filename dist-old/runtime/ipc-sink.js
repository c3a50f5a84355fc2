/**
 * A worker's inventory sink: batches records and audit events and ships them to the primary,
 * which owns the one write-behind recorder and store (one SQLite writer, one PostgreSQL pool).
 * Structured-clone IPC keeps Dates intact. Batches leave every 100 ms or at 200 items.
 */
export class IpcSink {
    send;
    records = [];
    audit = [];
    timer;
    accept = true;
    constructor(send) {
        this.send = send;
        process.on('message', (m) => {
            if (m?.type === 'inventory-state')
                this.accept = m.accepting;
        });
    }
    record(rec) {
        this.records.push(rec);
        this.schedule();
    }
    recordAudit(ev) {
        this.audit.push(ev);
        this.schedule();
    }
    accepting() {
        return this.accept;
    }
    /** Sends whatever is pending now (called on shutdown before the worker exits). */
    flush() {
        if (this.timer)
            clearTimeout(this.timer);
        this.timer = undefined;
        if (this.records.length === 0 && this.audit.length === 0)
            return;
        const m = { type: 'inventory', records: this.records, audit: this.audit };
        this.records = [];
        this.audit = [];
        this.send(m);
    }
    schedule() {
        if (this.records.length + this.audit.length >= 200)
            return this.flush();
        this.timer ??= setTimeout(() => this.flush(), 100);
    }
}
//# sourceMappingURL=ipc-sink.js.map