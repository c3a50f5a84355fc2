import { Status, type StatusCode } from './codes.js';
import { CaError, type CaErrorCode } from '../errors/ca-error.js';

/**
 * The one table from domain errors to gRPC codes. A Record, so a new CaErrorCode that is not
 * mapped fails the build. istio-agent retries UNAVAILABLE/RESOURCE_EXHAUSTED/INTERNAL and never
 * retries UNAUTHENTICATED/PERMISSION_DENIED/INVALID_ARGUMENT: transient faults must be UNAVAILABLE.
 */
export const GRPC_STATUS: Readonly<Record<CaErrorCode, StatusCode>> = {
  AUTH_MISSING: Status.UNAUTHENTICATED,
  AUTH_INVALID: Status.UNAUTHENTICATED,
  // istiod's code for every impersonation refusal (security/pkg/server/ca/server.go).
  IMPERSONATION_DENIED: Status.UNAUTHENTICATED,
  IDENTITY_MISMATCH: Status.PERMISSION_DENIED,
  POLICY_DENIED: Status.PERMISSION_DENIED,
  CSR_MALFORMED: Status.INVALID_ARGUMENT,
  CSR_BAD_SIGNATURE: Status.INVALID_ARGUMENT,
  CSR_UNSUPPORTED_KEY: Status.INVALID_ARGUMENT,
  CSR_FORBIDDEN_EXTENSION: Status.INVALID_ARGUMENT,
  TTL_INVALID: Status.INVALID_ARGUMENT,
  REQUEST_TOO_LARGE: Status.RESOURCE_EXHAUSTED,
  NOT_READY: Status.UNAVAILABLE,
  AUTH_BACKEND_UNAVAILABLE: Status.UNAVAILABLE,
  ISSUER_UNAVAILABLE: Status.UNAVAILABLE,
  OVERLOADED: Status.UNAVAILABLE,
  RATE_LIMITED: Status.RESOURCE_EXHAUSTED,
  ISSUER_FAILED: Status.INTERNAL,
  // The client is gone (it reset the call, its connection closed, or its deadline passed): the
  // status goes nowhere, but the log and metrics say why nothing was signed.
  CANCELLED: Status.CANCELLED,
  INTERNAL: Status.INTERNAL,
};

export interface GrpcFailure {
  readonly code: StatusCode;
  readonly details: string;
  /** The domain code, for logs and metrics. */
  readonly reason: CaErrorCode;
}

/** Anything that is not a CaError is our fault: INTERNAL with a fixed message, never err.message. */
export function toGrpcFailure(err: unknown): GrpcFailure {
  if (err instanceof CaError) return { code: GRPC_STATUS[err.code], details: err.message, reason: err.code };
  return { code: Status.INTERNAL, details: 'internal error', reason: 'INTERNAL' };
}
