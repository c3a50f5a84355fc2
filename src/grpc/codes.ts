/**
 * gRPC status codes (grpc/doc/statuscodes.md). The server keeps its own table so that serving
 * processes never load grpc-js (only clients and tests use it).
 */
export const Status = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;

export type StatusCode = (typeof Status)[keyof typeof Status];

const NAMES = Object.fromEntries(Object.entries(Status).map(([name, code]) => [code, name])) as Record<StatusCode, keyof typeof Status>;

/** The code's name, as grpc/doc/statuscodes.md spells it (metrics label codes by it). */
export function statusName(code: StatusCode): keyof typeof Status {
  return NAMES[code];
}

/** Every code but OK, by name. */
export const ERROR_STATUS_NAMES = Object.keys(Status).filter((n) => n !== 'OK');

/** A call's final status other than OK; handlers throw it, the server writes it as trailers. */
export class GrpcStatusError extends Error {
  constructor(
    readonly code: StatusCode,
    readonly details: string,
  ) {
    super(details);
    this.name = 'GrpcStatusError';
  }
}
