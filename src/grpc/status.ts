import { status } from '@grpc/grpc-js';
import { CaError, type CaErrorCode } from '../errors/ca-error.js';

/**
 * The one table from domain errors to gRPC codes. A Record, so a new CaErrorCode that is not
 * mapped fails the build. istio-agent retries UNAVAILABLE/RESOURCE_EXHAUSTED/INTERNAL and never
 * retries UNAUTHENTICATED/PERMISSION_DENIED/INVALID_ARGUMENT: transient faults must be UNAVAILABLE.
 */
export const GRPC_STATUS: Readonly<Record<CaErrorCode, status>> = {
  AUTH_MISSING: status.UNAUTHENTICATED,
  AUTH_INVALID: status.UNAUTHENTICATED,
  IMPERSONATION_DENIED: status.PERMISSION_DENIED,
  IDENTITY_MISMATCH: status.PERMISSION_DENIED,
  POLICY_DENIED: status.PERMISSION_DENIED,
  CSR_MALFORMED: status.INVALID_ARGUMENT,
  CSR_BAD_SIGNATURE: status.INVALID_ARGUMENT,
  CSR_UNSUPPORTED_KEY: status.INVALID_ARGUMENT,
  CSR_FORBIDDEN_EXTENSION: status.INVALID_ARGUMENT,
  TTL_INVALID: status.INVALID_ARGUMENT,
  REQUEST_TOO_LARGE: status.RESOURCE_EXHAUSTED,
  NOT_READY: status.UNAVAILABLE,
  AUTH_BACKEND_UNAVAILABLE: status.UNAVAILABLE,
  ISSUER_UNAVAILABLE: status.UNAVAILABLE,
  OVERLOADED: status.UNAVAILABLE,
  RATE_LIMITED: status.RESOURCE_EXHAUSTED,
  ISSUER_FAILED: status.INTERNAL,
  CHAIN_INVALID: status.INTERNAL,
  INTERNAL: status.INTERNAL,
};

export interface GrpcFailure {
  readonly code: status;
  readonly details: string;
  /** The domain code, for logs and metrics. */
  readonly reason: CaErrorCode;
}

/** Anything that is not a CaError is our fault: INTERNAL with a fixed message, never err.message. */
export function toGrpcFailure(err: unknown): GrpcFailure {
  if (err instanceof CaError) return { code: GRPC_STATUS[err.code], details: err.message, reason: err.code };
  return { code: status.INTERNAL, details: 'internal error', reason: 'INTERNAL' };
}
