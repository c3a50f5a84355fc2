/**
 * Domain errors. Every refusal inside meshcert is a CaError with a stable code;
 * src/grpc/status.ts maps codes to gRPC statuses in one table. Messages are written
 * for the caller (what to fix) and must never contain tokens, keys, paths or stacks.
 */
export const CA_ERROR_CODES = [
  'AUTH_MISSING',
  'AUTH_INVALID',
  'IMPERSONATION_DENIED',
  'IDENTITY_MISMATCH',
  'POLICY_DENIED',
  'CSR_MALFORMED',
  'CSR_BAD_SIGNATURE',
  'CSR_UNSUPPORTED_KEY',
  'CSR_FORBIDDEN_EXTENSION',
  'TTL_INVALID',
  'REQUEST_TOO_LARGE',
  'NOT_READY',
  'AUTH_BACKEND_UNAVAILABLE',
  'ISSUER_UNAVAILABLE',
  'OVERLOADED',
  'RATE_LIMITED',
  'ISSUER_FAILED',
  'CANCELLED',
  'INTERNAL',
] as const;

export type CaErrorCode = (typeof CA_ERROR_CODES)[number];

export class CaError extends Error {
  override readonly name = 'CaError';
  readonly code: CaErrorCode;
  /** Who asked and for what, when known (for the audit trail; never sent to the client). */
  caller?: string;
  /** The workload a node agent asked for (ambient), once node authorization allowed it. */
  identity?: string;
  /** A certificate signed before the call was refused (inventory.failClosed): never delivered. */
  serial?: string;

  constructor(code: CaErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

/**
 * A token names a key its issuer may have published after the key set held was read; a read is
 * scheduled, and a retry then may succeed. Not a verdict on the token, and no outage either: it
 * is not logged as one (AUTH_BACKEND_UNAVAILABLE, so UNAVAILABLE to the client).
 */
export class SigningKeyPendingError extends CaError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('AUTH_BACKEND_UNAVAILABLE', message, options);
  }
}

/**
 * A token whose signature its issuer's key verified, refused for what it says (its audience, its
 * lifetime, the names it carries): a verdict that another authenticator's pending key read
 * (SigningKeyPendingError) cannot change, so the caller is told it rather than to retry.
 */
export class SignedTokenRefusedError extends CaError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('AUTH_INVALID', message, options);
  }
}

export function isCaError(err: unknown): err is CaError {
  return err instanceof CaError;
}

/** Configuration or startup problems: reported once, process exits non-zero. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}
