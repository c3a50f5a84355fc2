/**
 * AuthChain: picks the cluster's authenticators from the `clusterid` header and tries them in
 * order (istiod: client certificate, JWT, TokenReview). First success wins.
 *
 * Outcome when none succeeds, in order of precedence:
 *   1. any AUTH_BACKEND_UNAVAILABLE           -> AUTH_BACKEND_UNAVAILABLE (transient: the client retries)
 *   2. an authenticator failed unexpectedly   -> INTERNAL
 *   3. any AUTH_INVALID (or other CaError)    -> the first one, in authenticator order
 *   4. all returned null with a bearer token  -> AUTH_INVALID (no authenticator takes this token)
 *   5. all returned null, no bearer token     -> AUTH_MISSING
 */
import { CaError, isCaError } from '../errors/ca-error.js';
import { TokenCache } from './token-cache.js';
export const DEFAULT_CLUSTER = 'Kubernetes';
const NO_CREDENTIAL = 'no credential: send a service-account token in the authorization header, or a client certificate issued by this CA';
const TOKEN_NOT_ACCEPTED = 'bearer token not accepted: it is not a JWT from a trusted issuer';
function printableCluster(id) {
    return /^[A-Za-z0-9._-]{1,63}$/.test(id) ? ` "${id}"` : '';
}
export class AuthChain {
    clusters;
    defaultCluster;
    cache;
    maxTokenLength;
    /** Token-cache scope per cluster and authenticator position, built once (not per call). */
    scopes = new Map();
    constructor(opts) {
        const raw = opts?.clusters;
        if (!raw || typeof raw !== 'object')
            throw new Error('auth.clusters must map cluster names to authenticators');
        const clusters = raw instanceof Map ? new Map(raw) : new Map(Object.entries(raw));
        if (clusters.size === 0)
            throw new Error('auth.clusters must name at least one cluster');
        for (const [name, list] of clusters) {
            if (!Array.isArray(list) || list.length === 0)
                throw new Error(`auth.clusters[${JSON.stringify(name)}] must list at least one authenticator`);
            for (const a of list) {
                if (typeof a?.authenticate !== 'function')
                    throw new Error(`auth.clusters[${JSON.stringify(name)}] holds something that is not an authenticator`);
            }
            clusters.set(name, [...list]);
        }
        this.clusters = clusters;
        for (const [name, list] of clusters)
            this.scopes.set(name, list.map((a, i) => JSON.stringify([name, i, a.name])));
        if (opts.defaultCluster !== undefined) {
            if (!clusters.has(opts.defaultCluster))
                throw new Error(`auth.defaultCluster ${JSON.stringify(opts.defaultCluster)} is not one of auth.clusters`);
            this.defaultCluster = opts.defaultCluster;
        }
        else if (clusters.size === 1) {
            this.defaultCluster = clusters.keys().next().value;
        }
        else if (clusters.has(DEFAULT_CLUSTER)) {
            this.defaultCluster = DEFAULT_CLUSTER;
        }
        this.cache = opts.cache === false ? undefined : (opts.cache ?? new TokenCache());
        this.maxTokenLength = opts.maxTokenLength ?? 16_384;
    }
    /** Resolves the caller or throws a CaError (AUTH_MISSING, AUTH_INVALID, AUTH_BACKEND_UNAVAILABLE, INTERNAL). */
    async authenticate(req) {
        const clusterId = req.clusterId ? req.clusterId : this.defaultCluster;
        if (clusterId === undefined) {
            throw new CaError('AUTH_INVALID', 'no clusterid header was sent and this CA has no default cluster');
        }
        const authenticators = this.clusters.get(clusterId);
        if (!authenticators) {
            throw new CaError('AUTH_INVALID', `unknown cluster${printableCluster(clusterId)} in the clusterid header`);
        }
        const token = req.bearerToken ? req.bearerToken : undefined;
        if (token !== undefined && token.length > this.maxTokenLength) {
            throw new CaError('AUTH_INVALID', `bearer token is longer than ${this.maxTokenLength} characters`);
        }
        const request = token === req.bearerToken ? req : { ...req, bearerToken: undefined };
        let unavailable;
        let internal;
        let rejected;
        for (let i = 0; i < authenticators.length; i++) {
            const authenticator = authenticators[i];
            const scope = token !== undefined && this.cache ? this.scopes.get(clusterId)[i] : undefined;
            if (scope !== undefined) {
                const hit = this.cache?.get(token, scope);
                if (hit)
                    return hit;
            }
            let caller;
            try {
                caller = await authenticator.authenticate(request);
            }
            catch (err) {
                if (isCaError(err)) {
                    if (err.code === 'AUTH_BACKEND_UNAVAILABLE')
                        unavailable ??= err;
                    else if (err.code === 'INTERNAL')
                        internal ??= err;
                    else
                        rejected ??= err;
                }
                else {
                    internal ??= new CaError('INTERNAL', 'internal error while authenticating', { cause: err });
                }
                continue;
            }
            if (caller) {
                if (scope !== undefined && caller.method !== 'client-cert')
                    this.cache?.set(token, caller, scope);
                return caller;
            }
        }
        if (unavailable)
            throw unavailable;
        if (internal)
            throw internal;
        if (rejected)
            throw rejected;
        if (token !== undefined)
            throw new CaError('AUTH_INVALID', TOKEN_NOT_ACCEPTED);
        throw new CaError('AUTH_MISSING', NO_CREDENTIAL);
    }
}
//# sourceMappingURL=chain.js.map