import { CaError } from '../errors/ca-error.js';
import { GrpcStatusError, Status } from './codes.js';
import { flattenMetadata } from './proto.js';
import { toGrpcFailure } from './status.js';
/** IstioCertificateService/CreateCertificate: call → Authority, outcome → one log line, observers, gRPC status. */
export function createCertificateHandler(deps) {
    const { authority, logger, observer } = deps;
    return async (request, call) => {
        const started = performance.now();
        let auth;
        let metadata;
        try {
            auth = authRequestFrom(call);
            metadata = flattenMetadata(request.metadata);
        }
        catch (err) {
            logger.error({ err }, 'malformed call');
            throw new GrpcStatusError(Status.INVALID_ARGUMENT, 'malformed request');
        }
        const ctx = () => ({ clusterId: auth.clusterId, latencyMs: performance.now() - started, peer: call.peer });
        const fail = (err) => {
            const failure = toGrpcFailure(err);
            const caller = err instanceof CaError ? err.caller : undefined;
            const c = { ...ctx(), ...(caller ? { caller } : {}) };
            if (failure.code === Status.INTERNAL)
                logger.error({ err, peer: c.peer, code: failure.reason }, 'internal error while issuing');
            else if (failure.reason === 'AUTH_BACKEND_UNAVAILABLE')
                logger.warn({ err, code: failure.reason }, 'authentication backend unavailable');
            logger.info({ decision: 'refused', code: failure.reason, grpcCode: failure.code, reason: failure.details, caller, clusterId: c.clusterId, latencyMs: round(c.latencyMs) }, 'certificate refused');
            observer?.refused(failure.reason, failure.details, c);
            throw new GrpcStatusError(failure.code, failure.details);
        };
        if (!deps.ready())
            return fail(new CaError('NOT_READY', 'the CA is not ready yet; retry shortly'));
        let release;
        try {
            release = deps.admit?.() ?? (() => { });
        }
        catch (e) {
            return fail(e);
        }
        let cert;
        try {
            cert = await authority.issue({
                csrPem: typeof request.csr === 'string' ? request.csr : '',
                validitySeconds: request.validityDuration,
                metadata,
                auth,
            });
        }
        catch (e) {
            return fail(e);
        }
        finally {
            release();
        }
        const c = ctx();
        logger.info({
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
        }, 'certificate issued');
        observer?.issued(cert, c);
        return { certChain: [...cert.chain] };
    };
}
function authRequestFrom(call) {
    const authz = headerString(call.headers.authorization);
    const bearer = authz && /^bearer\s+(.+)$/i.exec(authz.trim());
    const clusterId = headerString(call.headers.clusterid);
    return {
        ...(bearer ? { bearerToken: bearer[1].trim() } : {}),
        ...(clusterId !== undefined ? { clusterId } : {}),
        ...(call.peerCertificate ? { peerCertificates: [call.peerCertificate] } : {}),
    };
}
function headerString(v) {
    return Array.isArray(v) ? v[0] : v;
}
function round(ms) {
    return Math.round(ms * 100) / 100;
}
//# sourceMappingURL=certificate-service.js.map