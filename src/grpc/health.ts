import { status, type ServerUnaryCall, type ServerWritableStream, type sendUnaryData, type UntypedServiceImplementation } from '@grpc/grpc-js';

type ServingStatus = 'SERVING' | 'NOT_SERVING';

/**
 * grpc.health.v1.Health. The overall status ('') and the CA service report SERVING only once the
 * CA is loaded; during shutdown they turn NOT_SERVING so load balancers drain us first.
 */
export class HealthService {
  private readonly statuses = new Map<string, ServingStatus>();
  private readonly watchers = new Set<{ service: string; call: ServerWritableStream<{ service: string }, { status: string }> }>();

  constructor(services: readonly string[]) {
    for (const s of ['', ...services]) this.statuses.set(s, 'NOT_SERVING');
  }

  setAll(s: ServingStatus): void {
    for (const name of this.statuses.keys()) this.statuses.set(name, s);
    for (const w of this.watchers) w.call.write({ status: this.statuses.get(w.service) ?? 'SERVICE_UNKNOWN' });
  }

  get serving(): boolean {
    return this.statuses.get('') === 'SERVING';
  }

  /** Ends Watch streams so shutdown is not held open by them. */
  endWatches(): void {
    for (const w of this.watchers) w.call.end();
    this.watchers.clear();
  }

  implementation(): UntypedServiceImplementation {
    return {
      Check: (call: ServerUnaryCall<{ service: string }, { status: string }>, cb: sendUnaryData<{ status: string }>) => {
        const s = this.statuses.get(call.request.service ?? '');
        if (!s) return cb({ code: status.NOT_FOUND, details: `unknown service ${call.request.service}` });
        return cb(null, { status: s });
      },
      Watch: (call: ServerWritableStream<{ service: string }, { status: string }>) => {
        const service = call.request.service ?? '';
        const w = { service, call };
        this.watchers.add(w);
        call.write({ status: this.statuses.get(service) ?? 'SERVICE_UNKNOWN' });
        call.on('cancelled', () => this.watchers.delete(w));
      },
    };
  }
}
