/**
 * JWT authenticator verified against JWKS (what istiod does with JWT_RULE): per-issuer
 * audiences and keys, Kubernetes service-account claims mapped to a SPIFFE identity.
 *
 * Transport-neutral: it only sees the raw bearer token of an AuthRequest.
 */
import { readFileSync } from 'node:fs';
import { createLocalJWKSet, decodeJwt, decodeProtectedHeader, errors as joseErrors, jwtVerify } from 'jose';
import { CaError } from '../errors/ca-error.js';
import { trustDomainProblem } from '../x509/spiffe-id.js';
/** Asymmetric signature algorithms accepted on tokens. `none` and HS* are always refused. */
export const ALLOWED_JWT_ALGORITHMS = [
    'RS256', 'RS384', 'RS512',
    'PS256', 'PS384', 'PS512',
    'ES256', 'ES384', 'ES512',
    'EdDSA',
];
export const DEFAULT_AUDIENCES = ['istio-ca'];
const MAX_JWKS_BYTES = 1024 * 1024;
// ---------------------------------------------------------------------------------------------
// Kubernetes identity helpers (shared with tokenreview.ts)
const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
/** Kubernetes namespace name rule (DNS-1123 label, ≤ 63). */
export function isValidNamespace(ns) {
    return ns.length <= 63 && DNS1123_LABEL.test(ns);
}
/** Kubernetes service-account name rule (DNS-1123 subdomain, ≤ 253). */
export function isValidServiceAccount(sa) {
    return sa.length <= 253 && DNS1123_SUBDOMAIN.test(sa);
}
/** SPIFFE trust-domain rule (lowercase letters, digits, `.`, `-`, `_`; ≤ 255). */
export function isValidTrustDomain(td) {
    return trustDomainProblem(td) === null;
}
/** Throws a configuration Error naming `field` unless `td` is a valid trust domain. */
export function assertTrustDomain(td, field) {
    if (typeof td !== 'string' || !isValidTrustDomain(td)) {
        throw new Error(`${field} must be a SPIFFE trust domain (lowercase letters, digits, '.', '-', '_'), got ${JSON.stringify(td)}`);
    }
}
/**
 * `spiffe://<td>/ns/<ns>/sa/<sa>` after checking ns and sa against the Kubernetes name rules.
 * Throws CaError AUTH_INVALID when they are not valid names.
 */
export function serviceAccountSpiffeId(trustDomain, namespace, serviceAccount) {
    if (!isValidNamespace(namespace) || !isValidServiceAccount(serviceAccount)) {
        throw new CaError('AUTH_INVALID', 'token names an invalid Kubernetes namespace or service account');
    }
    return `spiffe://${trustDomain}/ns/${namespace}/sa/${serviceAccount}`;
}
/** Parses `system:serviceaccount:<ns>:<sa>`; undefined for anything else. */
export function parseServiceAccountUsername(username) {
    if (typeof username !== 'string')
        return undefined;
    const prefix = 'system:serviceaccount:';
    if (!username.startsWith(prefix))
        return undefined;
    const parts = username.slice(prefix.length).split(':');
    if (parts.length !== 2 || !parts[0] || !parts[1])
        return undefined;
    return { namespace: parts[0], serviceAccount: parts[1] };
}
function isObject(v) {
    return typeof v === 'object' && v !== null && !Array.isArray(v);
}
/** Validates a parsed JWKS document and drops symmetric keys ("oct"): they never verify a token here. */
function toKeySet(doc) {
    if (!isObject(doc) || !Array.isArray(doc.keys))
        throw new Error('not a JSON Web Key Set (no "keys" array)');
    const keys = doc.keys.filter((k) => isObject(k) && typeof k.kty === 'string' && k.kty !== 'oct');
    return { keys };
}
function isNoMatchingKey(err) {
    return err instanceof joseErrors.JWKSNoMatchingKey;
}
/** JWKS from a file: read at construction and on reload(). */
export class FileJwks {
    path;
    set;
    constructor(path) {
        this.path = path;
        this.set = FileJwks.load(path);
    }
    static load(path) {
        let doc;
        try {
            doc = JSON.parse(readFileSync(path, 'utf8'));
        }
        catch (err) {
            throw new Error(`jwksFile ${path}: cannot read JSON: ${err.message}`, { cause: err });
        }
        try {
            return createLocalJWKSet(toKeySet(doc));
        }
        catch (err) {
            throw new Error(`jwksFile ${path}: ${err.message}`, { cause: err });
        }
    }
    /** Re-reads the file; on failure keeps the current keys and throws. */
    reload() {
        this.set = FileJwks.load(this.path);
    }
    getKey = async (header, token) => {
        try {
            return await this.set(header, token);
        }
        catch (err) {
            if (isNoMatchingKey(err))
                throw new CaError('AUTH_INVALID', "token signing key (kid) is not in the issuer's key set", { cause: err });
            throw err;
        }
    };
    close() {
        /* nothing to release */
    }
}
/**
 * A remote JWKS kept in memory: fetched at start, refreshed periodically and on unknown `kid`
 * (rate limited), the last good key set kept while the endpoint is down.
 */
export class RemoteJwks {
    uri;
    issuer;
    minRefreshIntervalMs;
    refreshIntervalMs;
    fetchTimeoutMs;
    now;
    onFailure;
    set;
    lastAttemptAt = Number.NEGATIVE_INFINITY;
    lastAttemptFailed = false;
    inflight;
    timer;
    failures = 0;
    fetches = 0;
    closed = false;
    constructor(opts) {
        this.uri = opts.uri;
        this.issuer = opts.issuer;
        this.minRefreshIntervalMs = opts.minRefreshIntervalMs ?? 30_000;
        this.refreshIntervalMs = opts.refreshIntervalMs ?? 300_000;
        this.fetchTimeoutMs = opts.fetchTimeoutMs ?? 5_000;
        this.now = opts.now ?? Date.now;
        this.onFailure = opts.onRefreshFailure;
    }
    /** Number of failed fetches since construction. */
    get refreshFailures() {
        return this.failures;
    }
    /** Number of fetch attempts since construction. */
    get fetchCount() {
        return this.fetches;
    }
    /** True once a key set has been loaded. */
    get loaded() {
        return this.set !== undefined;
    }
    /** Initial fetch (never throws) and the periodic refresh timer. Idempotent. */
    async start() {
        if (this.closed)
            return;
        if (!this.timer && this.refreshIntervalMs > 0) {
            this.timer = setInterval(() => void this.refresh(), this.refreshIntervalMs);
            this.timer.unref();
        }
        if (!this.set)
            await this.refresh();
    }
    close() {
        this.closed = true;
        if (this.timer)
            clearInterval(this.timer);
        this.timer = undefined;
    }
    /** Fetches now (sharing an in-flight fetch). Resolves true when a fresh set was loaded; never rejects. */
    refresh() {
        if (this.inflight)
            return this.inflight;
        this.lastAttemptAt = this.now();
        this.inflight = this.fetchOnce()
            .then((set) => {
            this.set = set;
            this.lastAttemptFailed = false;
            return true;
        })
            .catch((err) => {
            this.failures++;
            this.lastAttemptFailed = true;
            const error = err instanceof Error ? err : new Error(String(err));
            try {
                this.onFailure?.(error);
            }
            catch {
                /* a metrics callback must not break authentication */
            }
            return false;
        })
            .finally(() => {
            this.inflight = undefined;
        });
        return this.inflight;
    }
    /** Refresh unless one was attempted less than minRefreshIntervalMs ago (then wait for any in-flight one). */
    async refreshRateLimited() {
        if (this.inflight)
            return this.inflight;
        if (this.now() - this.lastAttemptAt < this.minRefreshIntervalMs)
            return false;
        return this.refresh();
    }
    async fetchOnce() {
        this.fetches++;
        let res;
        try {
            res = await fetch(this.uri, {
                signal: AbortSignal.timeout(this.fetchTimeoutMs),
                headers: { accept: 'application/json, application/jwk-set+json' },
                redirect: 'follow',
            });
        }
        catch (err) {
            throw new Error(`JWKS fetch for issuer ${this.issuer} from ${this.uri} failed: ${err.message}`, { cause: err });
        }
        if (!res.ok) {
            await res.body?.cancel().catch(() => undefined);
            throw new Error(`JWKS fetch for issuer ${this.issuer} from ${this.uri} returned HTTP ${res.status}`);
        }
        const text = await res.text();
        if (text.length > MAX_JWKS_BYTES)
            throw new Error(`JWKS from ${this.uri} is larger than ${MAX_JWKS_BYTES} bytes`);
        let doc;
        try {
            doc = JSON.parse(text);
        }
        catch (err) {
            throw new Error(`JWKS from ${this.uri} is not JSON`, { cause: err });
        }
        return createLocalJWKSet(toKeySet(doc));
    }
    getKey = async (header, token) => {
        if (!this.set) {
            await this.refreshRateLimited();
            if (!this.set) {
                throw new CaError('AUTH_BACKEND_UNAVAILABLE', "the token issuer's signing keys could not be fetched yet; retry later");
            }
        }
        try {
            return await this.set(header, token);
        }
        catch (err) {
            if (!isNoMatchingKey(err))
                throw err;
            // Unknown kid: the issuer may have rotated keys. Refresh (rate limited) and look again.
            const refreshed = await this.refreshRateLimited();
            if (refreshed) {
                try {
                    return await this.set(header, token);
                }
                catch (err2) {
                    if (!isNoMatchingKey(err2))
                        throw err2;
                }
            }
            else if (this.lastAttemptFailed) {
                throw new CaError('AUTH_BACKEND_UNAVAILABLE', "the token's signing key is unknown and the issuer's key set cannot be refreshed; retry later", { cause: err });
            }
            throw new CaError('AUTH_INVALID', "token signing key (kid) is not in the issuer's key set", { cause: err });
        }
    };
}
function validateIssuer(o, i) {
    const at = `jwt.issuers[${i}]`;
    if (!isObject(o))
        throw new Error(`${at} must be an object`);
    if (typeof o.issuer !== 'string' || o.issuer === '')
        throw new Error(`${at}.issuer must be a non-empty string`);
    const hasUri = o.jwksUri !== undefined && o.jwksUri !== '';
    const hasFile = o.jwksFile !== undefined && o.jwksFile !== '';
    if (hasUri === hasFile)
        throw new Error(`${at}: set exactly one of jwksUri or jwksFile (issuer ${o.issuer})`);
    if (hasUri) {
        let url;
        try {
            url = new URL(o.jwksUri);
        }
        catch {
            throw new Error(`${at}.jwksUri is not a URL: ${JSON.stringify(o.jwksUri)}`);
        }
        if (url.protocol !== 'https:' && url.protocol !== 'http:')
            throw new Error(`${at}.jwksUri must be an https (or http) URL`);
    }
    if (o.audiences !== undefined && (!Array.isArray(o.audiences) || o.audiences.length === 0 || o.audiences.some((a) => typeof a !== 'string' || a === ''))) {
        throw new Error(`${at}.audiences must be a non-empty list of non-empty strings`);
    }
    if (o.clockSkewSeconds !== undefined && (!Number.isFinite(o.clockSkewSeconds) || o.clockSkewSeconds < 0 || o.clockSkewSeconds > 600)) {
        throw new Error(`${at}.clockSkewSeconds must be between 0 and 600`);
    }
    for (const f of ['minRefreshIntervalMs', 'refreshIntervalMs', 'fetchTimeoutMs']) {
        const v = o[f];
        if (v !== undefined && (!Number.isFinite(v) || v < 0))
            throw new Error(`${at}.${f} must be a non-negative number`);
    }
    assertTrustDomain(o.trustDomain, `${at}.trustDomain`);
}
function str(v) {
    return typeof v === 'string' && v !== '' ? v : undefined;
}
/** Kubernetes service-account identity from verified claims (nested, legacy flat, or `sub`). */
export function kubernetesClaims(payload) {
    const fromSub = parseServiceAccountUsername(payload.sub);
    let namespace;
    let serviceAccount;
    let pod;
    let node;
    const nested = payload['kubernetes.io'];
    if (isObject(nested)) {
        namespace = str(nested.namespace);
        if (isObject(nested.serviceaccount))
            serviceAccount = str(nested.serviceaccount.name);
        if (isObject(nested.pod)) {
            const name = str(nested.pod.name);
            const uid = str(nested.pod.uid);
            if (name && uid)
                pod = { name, uid };
        }
        if (isObject(nested.node)) {
            const name = str(nested.node.name);
            const uid = str(nested.node.uid);
            if (name)
                node = uid ? { name, uid } : { name };
        }
    }
    namespace ??= str(payload['kubernetes.io/serviceaccount/namespace']);
    serviceAccount ??= str(payload['kubernetes.io/serviceaccount/service-account.name']);
    if (fromSub) {
        if ((namespace && namespace !== fromSub.namespace) || (serviceAccount && serviceAccount !== fromSub.serviceAccount)) {
            throw new CaError('AUTH_INVALID', 'token claims disagree about the service account (sub vs kubernetes.io)');
        }
        namespace ??= fromSub.namespace;
        serviceAccount ??= fromSub.serviceAccount;
    }
    if (!namespace || !serviceAccount) {
        throw new CaError('AUTH_INVALID', 'token does not name a Kubernetes namespace and service account');
    }
    const out = { namespace, serviceAccount };
    if (pod)
        out.pod = pod;
    if (node)
        out.node = node;
    return out;
}
function mapJoseError(err, rule) {
    if (err instanceof CaError)
        return err;
    const cause = { cause: err };
    if (err instanceof joseErrors.JWTExpired)
        return new CaError('AUTH_INVALID', 'token expired', cause);
    if (err instanceof joseErrors.JWTClaimValidationFailed) {
        switch (err.claim) {
            case 'aud':
                return new CaError('AUTH_INVALID', `token audience does not include ${rule.audiences.join(' or ')}`, cause);
            case 'iss':
                return new CaError('AUTH_INVALID', 'token issuer is not trusted', cause);
            case 'nbf':
                return new CaError('AUTH_INVALID', 'token is not yet valid (nbf in the future)', cause);
            case 'iat':
                return new CaError('AUTH_INVALID', 'token issued-at time is invalid', cause);
            case 'exp':
                return new CaError('AUTH_INVALID', err.reason === 'missing' ? 'token has no expiry (exp claim required)' : 'token expiry claim is invalid', cause);
            default:
                return new CaError('AUTH_INVALID', 'token claims are invalid', cause);
        }
    }
    if (err instanceof joseErrors.JOSEAlgNotAllowed || err instanceof joseErrors.JOSENotSupported) {
        return new CaError('AUTH_INVALID', 'token signing algorithm is not allowed', cause);
    }
    if (err instanceof joseErrors.JWSSignatureVerificationFailed)
        return new CaError('AUTH_INVALID', 'token signature is invalid', cause);
    if (err instanceof joseErrors.JWKSNoMatchingKey)
        return new CaError('AUTH_INVALID', "token signing key (kid) is not in the issuer's key set", cause);
    if (err instanceof joseErrors.JOSEError)
        return new CaError('AUTH_INVALID', 'token is malformed', cause);
    return new CaError('AUTH_INVALID', 'token could not be verified', cause);
}
/**
 * Verifies bearer tokens against per-issuer JWKS. Returns null when there is no bearer token,
 * when it is not a JWT, or when its (unverified) `iss` matches no configured issuer, so that the
 * next authenticator in a chain may try.
 */
export class JwtAuthenticator {
    name;
    rules = new Map();
    now;
    constructor(opts) {
        if (!isObject(opts) || !Array.isArray(opts.issuers) || opts.issuers.length === 0) {
            throw new Error('jwt.issuers must be a non-empty list');
        }
        this.name = opts.name ?? 'jwt';
        this.now = opts.now ?? Date.now;
        const seen = new Set();
        opts.issuers.forEach((o, i) => {
            validateIssuer(o, i);
            if (seen.has(o.issuer))
                throw new Error(`jwt.issuers[${i}].issuer ${o.issuer} is configured twice`);
            seen.add(o.issuer);
        });
        opts.issuers.forEach((o) => {
            const keys = o.jwksFile
                ? new FileJwks(o.jwksFile)
                : new RemoteJwks({
                    uri: o.jwksUri,
                    issuer: o.issuer,
                    minRefreshIntervalMs: o.minRefreshIntervalMs,
                    refreshIntervalMs: o.refreshIntervalMs,
                    fetchTimeoutMs: o.fetchTimeoutMs,
                    now: this.now,
                    onRefreshFailure: opts.onRefreshFailure ? (e) => opts.onRefreshFailure?.(o.issuer, e) : undefined,
                });
            this.rules.set(o.issuer, {
                issuer: o.issuer,
                audiences: [...(o.audiences ?? DEFAULT_AUDIENCES)],
                clockSkewSeconds: o.clockSkewSeconds ?? 30,
                trustDomain: o.trustDomain,
                keys,
            });
        });
    }
    /** Fetches every remote JWKS once (failures are counted, not thrown) and starts refresh timers. */
    async start() {
        await Promise.all([...this.rules.values()].map((r) => (r.keys instanceof RemoteJwks ? r.keys.start() : undefined)));
    }
    /** Stops refresh timers. */
    close() {
        for (const r of this.rules.values())
            r.keys.close();
    }
    /** Re-reads every jwksFile; throws (keeping old keys of that issuer) if one cannot be read. */
    reload() {
        for (const r of this.rules.values())
            if (r.keys instanceof FileJwks)
                r.keys.reload();
    }
    /** Total failed remote JWKS fetches across issuers (for metrics). */
    get refreshFailures() {
        let n = 0;
        for (const r of this.rules.values())
            if (r.keys instanceof RemoteJwks)
                n += r.keys.refreshFailures;
        return n;
    }
    async authenticate(req) {
        const token = req.bearerToken;
        if (!token)
            return null;
        // Routing only: nothing here is trusted until jwtVerify succeeds.
        let header;
        let unverified;
        try {
            header = decodeProtectedHeader(token);
            unverified = decodeJwt(token);
        }
        catch {
            return null; // not a JWT: not ours
        }
        if (typeof unverified.iss !== 'string')
            return null;
        const rule = this.rules.get(unverified.iss);
        if (!rule)
            return null;
        const alg = header.alg;
        if (typeof alg !== 'string' || alg.toLowerCase() === 'none') {
            throw new CaError('AUTH_INVALID', "token is unsigned (alg 'none' is not allowed)");
        }
        if (/^HS/i.test(alg)) {
            throw new CaError('AUTH_INVALID', `token uses a shared-secret algorithm (${alg.slice(0, 8)}); only asymmetric signatures are accepted`);
        }
        if (!ALLOWED_JWT_ALGORITHMS.includes(alg)) {
            throw new CaError('AUTH_INVALID', 'token signing algorithm is not allowed');
        }
        let payload;
        try {
            ({ payload } = await jwtVerify(token, rule.keys.getKey, {
                issuer: rule.issuer,
                audience: [...rule.audiences],
                algorithms: [...ALLOWED_JWT_ALGORITHMS],
                clockTolerance: rule.clockSkewSeconds,
                currentDate: new Date(this.now()),
                requiredClaims: ['exp'],
            }));
        }
        catch (err) {
            throw mapJoseError(err, rule);
        }
        const k8s = kubernetesClaims(payload);
        const identity = serviceAccountSpiffeId(rule.trustDomain, k8s.namespace, k8s.serviceAccount);
        const caller = {
            method: 'jwt',
            identities: [identity],
            namespace: k8s.namespace,
            serviceAccount: k8s.serviceAccount,
        };
        if (k8s.pod)
            caller.pod = k8s.pod;
        if (k8s.node)
            caller.node = k8s.node;
        if (typeof payload.exp === 'number')
            caller.expiresAt = payload.exp;
        return caller;
    }
}
//# sourceMappingURL=jwt.js.map