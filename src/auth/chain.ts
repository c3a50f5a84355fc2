/**
 * AuthChain: picks the cluster's authenticators from the `clusterid` header and tries them in
 * order (istiod: client certificate, JWT, TokenReview). First success wins.
 *
 * Outcome when none succeeds, in order of precedence:
 *   1. any AUTH_BACKEND_UNAVAILABLE           -> AUTH_BACKEND_UNAVAILABLE (transient: the client retries)
 *   2. an authenticator failed unexpectedly   -> INTERNAL
 *   3. any AUTH_INVALID (or other CaError)    -> the first one, in authenticator order
 *   4. all returned null with a bearer token  -> AUTH_INVALID (no authenticator takes this token)
 *   5. all returned null, no bearer token, a client certificate the handshake refused -> AUTH_INVALID (why)
 *   6. all returned null, no credential at all -> AUTH_MISSING
 * The error thrown carries the caller a rejection named (CaError.caller), if any.
 */
import { CaError, isCaError, SignedTokenRefusedError, SigningKeyPendingError } from '../errors/ca-error.js';
import { clientCertificateRefused } from './client-cert.js';
import { TokenCache } from './token-cache.js';
import type { AuthRequest, Authenticator, Caller } from './types.js';

export const DEFAULT_CLUSTER = 'Kubernetes';

export interface AuthChainOptions {
  /** Cluster name (the `clusterid` header value) -> authenticators, tried in order. */
  clusters: ReadonlyMap<string, readonly Authenticator[]> | Readonly<Record<string, readonly Authenticator[]>>;
  /**
   * Cluster used when `clusterid` is absent or empty. Default: the only cluster when there is one,
   * else 'Kubernetes' when configured, else none (then an empty clusterid is refused).
   */
  defaultCluster?: string;
  /** Cache of verified bearer tokens; false disables. Default: a new TokenCache(). */
  cache?: TokenCache | false;
  /** Bearer tokens longer than this are refused without trying any authenticator. Default 16 384. */
  maxTokenLength?: number;
  /**
   * Whether client certificates are a credential here (auth.clientCertificates). When not, one the
   * handshake refused is not spoken of: its holder is told to send a token. Default true.
   */
  clientCertificates?: boolean;
  /**
   * The client-certificate authenticator (the one every cluster's list holds), tried when the
   * `clusterid` header names no cluster this CA knows (or is empty with no default): a client
   * certificate carries no cluster, and istiod's ClientCertAuthenticator ignores the header, so a
   * holder renewing over mTLS is not refused for what its header says. A token still is.
   */
  clientCertificate?: Authenticator;
}

const NO_CREDENTIAL = 'no credential: send a service-account token in the authorization header, or a client certificate issued by this CA';
const TOKEN_NOT_ACCEPTED = 'bearer token not accepted: it is not a JWT from a trusted issuer';
const NOT_BEARER = 'the authorization header is not "Bearer <token>": send the service-account token as "authorization: Bearer <token>", or a client certificate issued by this CA';

/**
 * Whether a `clusterid` header could be a cluster name, and so may be quoted back or stored as it
 * is: the header is the caller's to fill, before anything about it is checked.
 */
export function isPlausibleClusterId(id: string): boolean {
  return /^[A-Za-z0-9._-]{1,63}$/.test(id);
}

function printableCluster(id: string): string {
  return isPlausibleClusterId(id) ? ` "${id}"` : '';
}

export class AuthChain {
  private readonly clusters: ReadonlyMap<string, readonly Authenticator[]>;
  private readonly defaultCluster: string | undefined;
  private readonly cache: TokenCache | undefined;
  private readonly maxTokenLength: number;
  private readonly clientCertificates: boolean;
  private readonly clientCertificate: Authenticator | undefined;
  /** Token-cache scope per cluster and authenticator position, built once (not per call). */
  private readonly scopes = new Map<string, readonly string[]>();

  constructor(opts: AuthChainOptions) {
    const raw = opts?.clusters;
    if (!raw || typeof raw !== 'object') throw new Error('auth.clusters must map cluster names to authenticators');
    const clusters = raw instanceof Map ? new Map(raw) : new Map(Object.entries(raw as Record<string, readonly Authenticator[]>));
    if (clusters.size === 0) throw new Error('auth.clusters must name at least one cluster');
    for (const [name, list] of clusters) {
      if (!Array.isArray(list) || list.length === 0) throw new Error(`auth.clusters[${JSON.stringify(name)}] must list at least one authenticator`);
      for (const a of list) {
        if (typeof a?.authenticate !== 'function') throw new Error(`auth.clusters[${JSON.stringify(name)}] holds something that is not an authenticator`);
      }
      clusters.set(name, [...list]);
    }
    this.clusters = clusters;
    for (const [name, list] of clusters) this.scopes.set(name, list.map((a: Authenticator, i: number) => JSON.stringify([name, i, a.name])));

    if (opts.defaultCluster !== undefined) {
      if (!clusters.has(opts.defaultCluster)) throw new Error(`auth.defaultCluster ${JSON.stringify(opts.defaultCluster)} is not one of auth.clusters`);
      this.defaultCluster = opts.defaultCluster;
    } else if (clusters.size === 1) {
      this.defaultCluster = clusters.keys().next().value as string;
    } else if (clusters.has(DEFAULT_CLUSTER)) {
      this.defaultCluster = DEFAULT_CLUSTER;
    }

    this.cache = opts.cache === false ? undefined : (opts.cache ?? new TokenCache());
    this.maxTokenLength = opts.maxTokenLength ?? 16_384;
    this.clientCertificates = opts.clientCertificates ?? true;
    this.clientCertificate = opts.clientCertificate;
  }

  /** Resolves the caller or throws a CaError (AUTH_MISSING, AUTH_INVALID, AUTH_BACKEND_UNAVAILABLE, INTERNAL). */
  async authenticate(req: AuthRequest): Promise<Caller> {
    const clusterId = req.clusterId ? req.clusterId : this.defaultCluster;
    const authenticators = clusterId === undefined ? undefined : this.clusters.get(clusterId);
    if (clusterId === undefined || !authenticators) {
      const refusal =
        clusterId === undefined
          ? new CaError('AUTH_INVALID', 'no clusterid header was sent and this CA has no default cluster')
          : new CaError('AUTH_INVALID', `unknown cluster${printableCluster(clusterId)} in the clusterid header`);
      if (this.clientCertificate && req.peerCertificates?.length) {
        try {
          const caller = await this.clientCertificate.authenticate({ ...req, bearerToken: undefined });
          if (caller) return caller;
        } catch (err) {
          // The certificate was the only credential: why it was refused says more than the header.
          if (!req.bearerToken && isCaError(err)) throw err;
        }
      }
      throw refusal;
    }

    // An oversized token is read by no authenticator; a client certificate beside it may still
    // authenticate the call (as istiod tries each authenticator), else it is the refusal.
    const sent = req.bearerToken ? req.bearerToken : undefined;
    const oversized = sent !== undefined && sent.length > this.maxTokenLength ? new CaError('AUTH_INVALID', `bearer token is longer than ${this.maxTokenLength} characters`) : undefined;
    const token = oversized ? undefined : sent;
    const request: AuthRequest = token === req.bearerToken ? req : { ...req, bearerToken: undefined };

    let unavailable: CaError | undefined;
    /** A key read one authenticator waits for (SigningKeyPendingError): a retry may succeed. */
    let pending: CaError | undefined;
    let internal: CaError | undefined;
    let rejected: CaError | undefined;
    /** A refusal of a token whose signature verified (SignedTokenRefusedError). */
    let signedRefusal: CaError | undefined;
    /** The caller a rejection named (a revoked client certificate, whose chain was verified). */
    let named: string | undefined;

    for (let i = 0; i < authenticators.length; i++) {
      const authenticator = authenticators[i] as Authenticator;
      const base = token !== undefined && this.cache ? this.scopes.get(clusterId)![i] : undefined;
      const generation = authenticator.cacheGeneration;
      const scope = base !== undefined && generation !== undefined ? `${base}#${generation}` : base;
      if (scope !== undefined) {
        const hit = this.cache?.get(token as string, scope);
        if (hit) return hit;
      }
      let caller: Caller | null;
      try {
        caller = await authenticator.authenticate(request);
      } catch (err) {
        if (isCaError(err)) {
          named ??= err.caller;
          if (err instanceof SigningKeyPendingError) pending ??= err;
          else if (err.code === 'AUTH_BACKEND_UNAVAILABLE') unavailable ??= err;
          else if (err.code === 'INTERNAL') internal ??= err;
          else {
            rejected ??= err;
            if (err instanceof SignedTokenRefusedError) signedRefusal ??= err;
          }
        } else {
          internal ??= new CaError('INTERNAL', 'internal error while authenticating', { cause: err });
        }
        continue;
      }
      if (caller) {
        if (scope !== undefined && caller.method !== 'client-cert') this.cache?.set(token as string, caller, scope);
        return caller;
      }
    }

    // Whichever error wins keeps the name, so that a token sent beside a revoked certificate (one
    // whose key the issuer has "not published yet", say) cannot take the sighting out of the audit
    // trail. Authenticators make a new error per call, so naming it touches no other call.
    // A key one authenticator has yet to read cannot change what another concluded from the
    // token's verified signature (a wrong audience, say): that refusal is final, not a retry that
    // waits for the read and ends the same way.
    const outcome = unavailable ?? (signedRefusal === undefined ? pending : undefined) ?? internal ?? signedRefusal ?? rejected ?? oversized;
    if (outcome) {
      outcome.caller ??= named;
      throw outcome;
    }
    if (token !== undefined) throw new CaError('AUTH_INVALID', TOKEN_NOT_ACCEPTED);
    if (req.peerCertificateRefused !== undefined && this.clientCertificates) throw new CaError('AUTH_INVALID', clientCertificateRefused(req.peerCertificateRefused));
    throw new CaError('AUTH_MISSING', req.authorizationNotBearer ? NOT_BEARER : NO_CREDENTIAL);
  }
}
