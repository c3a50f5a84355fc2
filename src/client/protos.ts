import { loadPackageDefinition, type GrpcObject, type ServiceClientConstructor } from '@grpc/grpc-js';
import { CERTIFICATE_SERVICE, HEALTH_SERVICE, protoDefinition } from '../grpc/proto.js';

export interface Protos {
  readonly certificateService: ServiceClientConstructor;
  readonly health: ServiceClientConstructor;
}

let cached: Protos | undefined;

/** grpc-js client constructors for meshcert's services (the CLI and tests are grpc-js clients). */
export function loadProtos(): Protos {
  if (cached) return cached;
  const def = loadPackageDefinition(protoDefinition());
  const pick = (path: string): ServiceClientConstructor =>
    path.split('.').reduce<unknown>((o, k) => (o as GrpcObject)[k], def) as ServiceClientConstructor;
  cached = { certificateService: pick(CERTIFICATE_SERVICE), health: pick(HEALTH_SERVICE) };
  return cached;
}
