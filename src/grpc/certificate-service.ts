import { status, type Metadata, type ServerUnaryCall, type sendUnaryData, type UntypedServiceImplementation } from '@grpc/grpc-js';
import type { AuthRequest } from '../auth/types.js';
import type { Authority } from '../authority/authority.js';
import type { CallContext, IssuanceObserver } from '../authority/observer.js';
import { CaError } from '../errors/ca-error.js';
import type { Logger } from '../log/logger.js';
import { flattenMetadata, type IstioCertificateRequestMsg, type IstioCertificateResponseMsg } from './proto.js';
import { toGrpcFailure } from './status.js';

export type { CallContext, IssuanceObserver };

export interface CertificateServiceDeps {
  readonly authority: Authority;
  readonly logger: Logger;
  readonly observer?: IssuanceObserver;
  /** False until the CA is loaded, and again while shutting down. */
  readonly ready: () => boolean;
  /** Admission: returns a release function, or throws OVERLOADED. */
  readonly admit?: () => () => void;
}

export function certificateServiceImpl(deps: CertificateServiceDeps): UntypedServiceImplementation {
  const { authority, logger, observer } = deps;
  return {
    CreateCertificate: (
      call: ServerUnaryCall<IstioCertificateRequestMsg, IstioCertificateResponseMsg>,
      callback: sendUnaryData<IstioCertificateResponseMsg>,
    ) => {
      const started = performance.now();
      let auth: AuthRequest;
      let metadata: Record<string, string>;
      try {
        auth = authRequestFrom(call);
        metadata = flattenMetadata(call.request.metadata);
      } catch (err) {
        logger.error({ err }, 'malformed call');
        callback({ code: status.INVALID_ARGUMENT, details: 'malformed request' });
        return;
      }
      const ctx = (): CallContext => ({ clusterId: auth.clusterId, latencyMs: performance.now() - started, peer: call.getPeer() });
      const fail = (err: unknown): void => {
        const failure = toGrpcFailure(err);
        const caller = err instanceof CaError ? err.caller : undefined;
        const c = { ...ctx(), ...(caller ? { caller } : {}) };
        if (failure.code === status.INTERNAL) logger.error({ err, peer: c.peer, code: failure.reason }, 'internal error while issuing');
        else if (failure.reason === 'AUTH_BACKEND_UNAVAILABLE') logger.warn({ err, code: failure.reason }, 'authentication backend unavailable');
        logger.info({ decision: 'refused', code: failure.reason, grpcCode: failure.code, reason: failure.details, caller, clusterId: c.clusterId, latencyMs: round(c.latencyMs) }, 'certificate refused');
        observer?.refused(failure.reason, failure.details, c);
        callback({ code: failure.code, details: failure.details });
      };
      if (!deps.ready()) {
        fail(new CaError('NOT_READY', 'the CA is not ready yet; retry shortly'));
        return;
      }
      let release: () => void;
      try {
        release = deps.admit?.() ?? (() => {});
      } catch (e) {
        fail(e);
        return;
      }
      authority
        .issue({
          csrPem: typeof call.request.csr === 'string' ? call.request.csr : '',
          validitySeconds: call.request.validityDuration,
          metadata,
          auth,
        })
        .then((cert) => {
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
          callback(null, { certChain: [...cert.chain] });
        }, fail)
        .finally(release);
    },
  };
}

function authRequestFrom(call: ServerUnaryCall<unknown, unknown>): AuthRequest {
  const md: Metadata = call.metadata;
  const authz = firstString(md.get('authorization'));
  const bearer = authz && /^bearer\s+(.+)$/i.exec(authz.trim());
  const clusterId = firstString(md.get('clusterid'));
  const peer = call.getAuthContext()?.sslPeerCertificate;
  return {
    ...(bearer ? { bearerToken: bearer[1]!.trim() } : {}),
    ...(clusterId !== undefined ? { clusterId } : {}),
    ...(peer?.raw ? { peerCertificates: [peer.raw] } : {}),
  };
}

function firstString(values: ReadonlyArray<string | Buffer>): string | undefined {
  const v = values[0];
  return typeof v === 'string' ? v : undefined;
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}
