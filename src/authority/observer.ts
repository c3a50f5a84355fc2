import type { CaErrorCode } from '../errors/ca-error.js';
import type { IssuedCertificate } from './authority.js';

export interface CallContext {
  readonly clusterId: string | undefined;
  readonly latencyMs: number;
  readonly peer: string;
  /** The caller's identity when authentication got that far (refusals after authentication). */
  readonly caller?: string;
  /** The workload a node agent (ztunnel) asked for, once node authorization allowed it. */
  readonly identity?: string;
  /** Refusals only: a certificate signed before the call was refused, so never delivered. */
  readonly serial?: string;
}

/** Told about every decision (metrics, inventory, audit). Must not throw or block. */
export interface IssuanceObserver {
  issued(cert: IssuedCertificate, ctx: CallContext): void;
  refused(code: CaErrorCode, reason: string, ctx: CallContext): void;
}

/** Calls every observer; one failing observer never hides the decision from the others. */
export function fanOut(observers: readonly IssuanceObserver[]): IssuanceObserver {
  return {
    issued(cert, ctx) {
      for (const o of observers) {
        try {
          o.issued(cert, ctx);
        } catch {
          // observers must not throw; ignore rather than fail the call
        }
      }
    },
    refused(code, reason, ctx) {
      for (const o of observers) {
        try {
          o.refused(code, reason, ctx);
        } catch {
          // as above
        }
      }
    },
  };
}
