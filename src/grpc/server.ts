import { Server, type ServerCredentials, type UntypedServiceImplementation } from '@grpc/grpc-js';
import type { Logger } from '../log/logger.js';
import type { HealthService } from './health.js';
import { loadProtos } from './proto.js';

export interface GrpcServerOptions {
  /** host:port; port 0 picks a free port. */
  readonly listen: string;
  readonly maxRequestBytes: number;
  /** Seconds in-flight calls get to finish on shutdown. */
  readonly shutdownGrace: number;
  readonly maxConcurrentStreams: number;
}

/** The gRPC listener: the certificate service plus health, over the given (TLS) credentials. */
export class GrpcServer {
  private readonly server: Server;
  private port = 0;

  constructor(
    private readonly options: GrpcServerOptions,
    certificateService: UntypedServiceImplementation,
    private readonly health: HealthService,
    private readonly credentials: ServerCredentials,
    private readonly logger: Logger,
  ) {
    this.server = new Server({
      // Oversized requests are refused by grpc-js with RESOURCE_EXHAUSTED before we parse anything.
      'grpc.max_receive_message_length': options.maxRequestBytes,
      'grpc.max_send_message_length': 1024 * 1024,
      // Bounds memory in a restart storm: a client opens at most this many calls per connection
      // at once and queues the rest itself (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS).
      'grpc.max_concurrent_streams': options.maxConcurrentStreams,
      // Agents keep connections open for hours; allow their keepalive pings.
      'grpc.keepalive_permit_without_calls': 1,
      // Channelz bookkeeping costs CPU on every call; meshcert exposes its own metrics instead.
      'grpc.enable_channelz': 0,
      'grpc.http2.min_ping_interval_without_data_ms': 10_000,
    });
    const protos = loadProtos();
    this.server.addService(protos.certificateService.service, certificateService);
    this.server.addService(protos.health.service, health.implementation());
  }

  async start(): Promise<number> {
    this.port = await new Promise<number>((resolve, reject) => {
      this.server.bindAsync(this.options.listen, this.credentials, (err, port) => (err ? reject(err) : resolve(port)));
    });
    return this.port;
  }

  get boundPort(): number {
    return this.port;
  }

  /** Stop accepting, let in-flight calls finish (up to the grace period), then close everything. */
  async shutdown(): Promise<void> {
    this.health.setAll('NOT_SERVING');
    this.health.endWatches();
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.logger.warn({ graceSeconds: this.options.shutdownGrace }, 'shutdown grace period over; closing remaining calls');
        this.server.forceShutdown();
        resolve();
      }, this.options.shutdownGrace * 1000);
      this.server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
}
