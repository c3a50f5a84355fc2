import { isPlausibleClusterId } from '../auth/chain.js';
import type { AuthRequest } from '../auth/types.js';
import type { Authority, IssuedCertificate } from '../authority/authority.js';
import type { CallContext, IssuanceObserver } from '../authority/observer.js';
import { CaError, SigningKeyPendingError } from '../errors/ca-error.js';
import type { Logger } from '../log/logger.js';
import { GrpcStatusError, Status } from './codes.js';
import { flattenMetadata, type IstioCertificateRequestMsg, type IstioCertificateResponseMsg } from './proto.js';
import type { Admission, CallInfo, Shed } from './server.js';
import { toGrpcFailure, type GrpcFailure } from './status.js';

export type { CallContext, IssuanceObserver };

export interface CertificateServiceDeps {
  readonly authority: Authority;
  readonly logger: Logger;
  readonly observer?: IssuanceObserver;
  /** False until the CA is loaded, and again while shutting down. */
  readonly ready: () => boolean;
  /** True once shutting down (ready is then false too): the refusal then says so, not "not ready yet". */
  readonly stopping?: () => boolean;
  /**
   * inventory.failClosed: stores the certificate's record before it is answered; rejects (with a
   * CaError, already bounded in time) when it cannot, and the call is refused instead. The
   * certificate is then never delivered, so no certificate is in use that the inventory lacks.
   */
  readonly keep?: (cert: IssuedCertificate, ctx: CallContext) => Promise<void>;
}

/** Distinct CertSigner names warned about per process. */
const MAX_SIGNERS_NAMED = 16;

export type CreateCertificateHandler = (request: IstioCertificateRequestMsg, call: CallInfo) => Promise<IstioCertificateResponseMsg>;

/** IstioCertificateService/CreateCertificate: call → Authority, outcome → one log line, observers, gRPC status. */
export function createCertificateHandler(deps: CertificateServiceDeps): CreateCertificateHandler {
  const { authority, logger, observer } = deps;
  const signersNamed = new Set<string>();
  return async (request, call) => {
    const started = performance.now();
    let auth: AuthRequest;
    let metadata: Record<string, string>;
    try {
      auth = authRequestFrom(call);
      metadata = flattenMetadata(request.metadata);
    } catch (err) {
      logger.error({ err }, 'malformed call');
      throw new GrpcStatusError(Status.INVALID_ARGUMENT, 'malformed request');
    }
    const ctx = (): CallContext => ({ clusterId: auth.clusterId, latencyMs: performance.now() - started, peer: call.peer });
    if (!deps.ready()) {
      const why = deps.stopping?.() ? 'this meshcert process is shutting down; retry on a new connection' : 'the CA is not ready yet; retry shortly';
      return refuse(deps, new CaError('NOT_READY', why), ctx());
    }
    let cert: IssuedCertificate;
    try {
      cert = await authority.issue({
        csrPem: typeof request.csr === 'string' ? request.csr : '',
        validitySeconds: request.validityDuration,
        metadata,
        auth,
        cancelled: call.cancelled,
      });
    } catch (e) {
      return refuse(deps, e, ctx());
    }
    if (deps.keep) {
      try {
        await deps.keep(cert, ctx());
      } catch (e) {
        if (e instanceof CaError) {
          // Refused after signing: the audit row names who asked, for whom, and the certificate.
          e.caller = cert.caller.identities[0];
          if (cert.impersonated) e.identity = cert.spiffeId;
          e.serial = cert.leaf.serial;
        }
        return refuse(deps, e, ctx());
      }
    }
    const signer = metadata.CertSigner;
    // istiod's multiple signers (meshConfig.ca.certSigners) pick the CA by this; meshcert's policy
    // does. Said once per name (a few names at most), after authentication, so no caller can flood it.
    if (signer && signersNamed.size < MAX_SIGNERS_NAMED && !signersNamed.has(signer)) {
      signersNamed.add(signer);
      logger.warn({ certSigner: signer.slice(0, 253), identity: cert.spiffeId, issuer: cert.issuer }, "a caller named a signer (CertSigner metadata, istiod's multiple-signer feature): meshcert does not choose the CA by it; it signed with the CA its policy selects (a policy rule's issuer)");
    }
    const c = ctx();
    logger.info(
      {
        decision: 'issued',
        identity: cert.spiffeId,
        caller: cert.caller.identities[0],
        method: cert.caller.method,
        issuer: cert.issuer,
        serial: cert.leaf.serial,
        notAfter: cert.leaf.notAfter.toISOString(),
        keyType: `${cert.key.algorithm}-${cert.key.size}`,
        clusterId: c.clusterId,
        latencyMs: round(c.latencyMs),
      },
      'certificate issued',
    );
    observer?.issued(cert, c);
    return { certChain: [...cert.chain] };
  };
}

/**
 * Admission for CreateCertificate, asked by the transport once the request message is complete
 * and before it is decoded (see `Admission`): `admit` (the in-flight limiter) throws OVERLOADED,
 * which is refused here like any other refusal (log line, observers, UNAVAILABLE).
 */
export function certificateAdmission(deps: Pick<CertificateServiceDeps, 'logger' | 'observer'>, admit: (requestBytes: number) => () => void): Admission {
  return (requestBytes, call) => {
    try {
      return admit(requestBytes);
    } catch (e) {
      return refuse(deps, e, { clusterId: headerString(call.headers.clusterid), latencyMs: 0, peer: call.peer });
    }
  };
}

/**
 * A CreateCertificate call the transport refused while its request was still arriving (see
 * `Shed`): logged and observed as the OVERLOADED refusal it is, like one Admission refuses, so
 * the log, the metrics and the audit count every UNAVAILABLE sent.
 */
export function certificateShed(deps: Pick<CertificateServiceDeps, 'logger' | 'observer'>): Shed {
  return (details, call, waitedMs) => {
    report(deps, new CaError('OVERLOADED', details), { clusterId: headerString(call.headers.clusterid), latencyMs: waitedMs, peer: call.peer });
  };
}

/** One refusal: its log line and observers, then the gRPC status (toGrpcFailure is the one mapping). */
function refuse(deps: Pick<CertificateServiceDeps, 'logger' | 'observer'>, err: unknown, ctx: CallContext): never {
  const failure = report(deps, err, ctx);
  throw new GrpcStatusError(failure.code, failure.details);
}

function report(deps: Pick<CertificateServiceDeps, 'logger' | 'observer'>, err: unknown, ctx: CallContext): GrpcFailure {
  const { logger, observer } = deps;
  const failure = toGrpcFailure(err);
  const caller = err instanceof CaError ? err.caller : undefined;
  const identity = err instanceof CaError ? err.identity : undefined;
  const serial = err instanceof CaError ? err.serial : undefined;
  const c = { ...ctx, ...(caller ? { caller } : {}), ...(identity ? { identity } : {}), ...(serial ? { serial } : {}) };
  if (failure.code === Status.INTERNAL) logger.error({ err, peer: c.peer, code: failure.reason }, 'internal error while issuing');
  // A key not read yet is no outage, and a forger can provoke it at will: not a warning.
  else if (failure.reason === 'AUTH_BACKEND_UNAVAILABLE' && !(err instanceof SigningKeyPendingError)) logger.warn({ err, code: failure.reason }, 'authentication backend unavailable');
  // The header is the caller's to fill (a token pasted there, 60 KB of anything): quoted only when it could name a cluster.
  const clusterId = c.clusterId === undefined || c.clusterId === '' || isPlausibleClusterId(c.clusterId) ? c.clusterId : `(not a cluster name: ${c.clusterId.length} characters)`;
  logger.info({ decision: 'refused', code: failure.reason, grpcCode: failure.code, reason: failure.details, caller, serial, clusterId, latencyMs: round(c.latencyMs) }, 'certificate refused');
  observer?.refused(failure.reason, failure.details, c);
  return failure;
}

function authRequestFrom(call: CallInfo): AuthRequest {
  const authz = headerString(call.headers.authorization);
  const bearer = authz && /^bearer\s+(.+)$/i.exec(authz.trim());
  const clusterId = headerString(call.headers.clusterid);
  return {
    ...(bearer ? { bearerToken: bearer[1]!.trim() } : authz?.trim() ? { authorizationNotBearer: true } : {}),
    ...(clusterId !== undefined ? { clusterId } : {}),
    ...(call.peerCertificates ? { peerCertificates: call.peerCertificates } : {}),
    ...(call.peerCertificateRefused !== undefined ? { peerCertificateRefused: call.peerCertificateRefused } : {}),
    ...(call.peerHost !== undefined ? { peerHost: call.peerHost } : {}),
  };
}

function headerString(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}
