import { GrpcStatusError, Status } from './codes.js';
import type { ServerStream } from './server.js';

type ServingStatus = 'SERVING' | 'NOT_SERVING';

export interface HealthCheckRequest {
  service?: string;
}
export interface HealthCheckResponse {
  status: ServingStatus | 'SERVICE_UNKNOWN';
}

/**
 * grpc.health.v1.Health. The overall status ('') and the CA service report SERVING only once the
 * CA is loaded; during shutdown they turn NOT_SERVING so load balancers drain us first.
 */
export class HealthService {
  private readonly statuses = new Map<string, ServingStatus>();
  private readonly watchers = new Set<{ service: string; stream: ServerStream<HealthCheckResponse> }>();

  constructor(services: readonly string[]) {
    for (const s of ['', ...services]) this.statuses.set(s, 'NOT_SERVING');
  }

  setAll(s: ServingStatus): void {
    const changed = new Set<string>();
    for (const [name, was] of this.statuses) {
      if (was !== s) changed.add(name);
      this.statuses.set(name, s);
    }
    // Watch sends a message only when the watched service's status changes (health.proto).
    for (const w of this.watchers) if (changed.has(w.service)) w.stream.write({ status: s });
  }

  get serving(): boolean {
    return this.statuses.get('') === 'SERVING';
  }

  /**
   * Ends Watch streams so shutdown is not held open by them. With UNAVAILABLE, not OK: a Watch
   * never ends of itself (health.proto), and UNAVAILABLE is what a client of grpc-go's server sees
   * when it stops (the connection closes), which clients retry on another replica.
   */
  endWatches(): void {
    for (const w of this.watchers) w.stream.fail(Status.UNAVAILABLE, 'the server is shutting down');
    this.watchers.clear();
  }

  check(req: HealthCheckRequest): HealthCheckResponse {
    const service = req.service ?? '';
    const s = this.statuses.get(service);
    if (!s) throw new GrpcStatusError(Status.NOT_FOUND, `unknown service ${service.slice(0, 200)}`);
    return { status: s };
  }

  watch(req: HealthCheckRequest, stream: ServerStream<HealthCheckResponse>): void {
    const service = req.service ?? '';
    const w = { service, stream };
    this.watchers.add(w);
    stream.onClose(() => this.watchers.delete(w));
    stream.write({ status: this.statuses.get(service) ?? 'SERVICE_UNKNOWN' });
  }
}
