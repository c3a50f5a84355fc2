import { GrpcStatusError, Status } from './codes.js';
/**
 * grpc.health.v1.Health. The overall status ('') and the CA service report SERVING only once the
 * CA is loaded; during shutdown they turn NOT_SERVING so load balancers drain us first.
 */
export class HealthService {
    statuses = new Map();
    watchers = new Set();
    constructor(services) {
        for (const s of ['', ...services])
            this.statuses.set(s, 'NOT_SERVING');
    }
    setAll(s) {
        for (const name of this.statuses.keys())
            this.statuses.set(name, s);
        for (const w of this.watchers)
            w.stream.write({ status: this.statuses.get(w.service) ?? 'SERVICE_UNKNOWN' });
    }
    get serving() {
        return this.statuses.get('') === 'SERVING';
    }
    /** Ends Watch streams so shutdown is not held open by them. */
    endWatches() {
        for (const w of this.watchers)
            w.stream.end();
        this.watchers.clear();
    }
    check(req) {
        const service = req.service ?? '';
        const s = this.statuses.get(service);
        if (!s)
            throw new GrpcStatusError(Status.NOT_FOUND, `unknown service ${service.slice(0, 200)}`);
        return { status: s };
    }
    watch(req, stream) {
        const service = req.service ?? '';
        const w = { service, stream };
        this.watchers.add(w);
        stream.onClose(() => this.watchers.delete(w));
        stream.write({ status: this.statuses.get(service) ?? 'SERVICE_UNKNOWN' });
    }
}
//# sourceMappingURL=health.js.map