/**
 * JWT authenticator verified against JWKS (what istiod does with JWT_RULE): per-issuer
 * audiences and keys, Kubernetes service-account claims mapped to a SPIFFE identity.
 *
 * Transport-neutral: it only sees the raw bearer token of an AuthRequest.
 */
import { MAX_PEM_BYTES, readTextFile } from '../fs/read-file.js';
import { createLocalJWKSet, decodeJwt, decodeProtectedHeader, errors as joseErrors, jwtVerify } from 'jose';
import type { CompactJWSHeaderParameters, CryptoKey, FlattenedJWSInput, JSONWebKeySet, JWTPayload } from 'jose';
import { CaError, isCaError, SignedTokenRefusedError, SigningKeyPendingError } from '../errors/ca-error.js';
import { trustDomainProblem } from '../x509/spiffe-id.js';
import type { AuthRequest, Authenticator, Caller } from './types.js';

/** Asymmetric signature algorithms accepted on tokens. `none` and HS* are always refused. */
export const ALLOWED_JWT_ALGORITHMS: readonly string[] = [
  'RS256', 'RS384', 'RS512',
  'PS256', 'PS384', 'PS512',
  'ES256', 'ES384', 'ES512',
  'EdDSA',
];

export const DEFAULT_AUDIENCES: readonly string[] = ['istio-ca'];

export interface JwtIssuerOptions {
  /** Exact `iss` value of tokens this rule accepts. */
  issuer: string;
  /** The token's `aud` must contain one of these. Default `['istio-ca']`. */
  audiences?: string[];
  /** Remote JWKS (http/https). Exactly one of jwksUri / jwksFile. */
  jwksUri?: string;
  /** Local JWKS JSON file, read at construction and on reload(). */
  jwksFile?: string;
  /** Tolerance for exp/nbf/iat. Default 30. */
  clockSkewSeconds?: number;
  /** Trust domain of the SPIFFE identities minted for this issuer's tokens. */
  trustDomain: string;
  /** Remote JWKS: fetch again on an unknown `kid` at most this often. Default 30 000. */
  minRefreshIntervalMs?: number;
  /** Remote JWKS: periodic refresh. Default 300 000 (5 min). 0 disables the timer. */
  refreshIntervalMs?: number;
  /** Remote JWKS: fetch timeout. Default 5 000. */
  fetchTimeoutMs?: number;
}

export interface JwtAuthenticatorOptions {
  issuers: readonly JwtIssuerOptions[];
  /** Clock in ms since epoch (tests). Default Date.now. */
  now?: () => number;
  /** Called on every failed remote JWKS refresh (for metrics and logs). */
  onRefreshFailure?: (issuer: string, error: Error) => void;
  /** Name reported as Authenticator.name. Default 'jwt'. */
  name?: string;
}

const MAX_JWKS_BYTES = 1024 * 1024;
/** How far behind this CA's clock an issuer's may run when telling a new key from an unknown one. */
const ISSUER_CLOCK_MARGIN_MS = 60_000;

// ---------------------------------------------------------------------------------------------
// Kubernetes identity helpers (shared with tokenreview.ts)

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** Kubernetes namespace name rule (DNS-1123 label, ≤ 63). */
export function isValidNamespace(ns: string): boolean {
  return ns.length <= 63 && DNS1123_LABEL.test(ns);
}

/** Kubernetes service-account name rule (DNS-1123 subdomain, ≤ 253). */
export function isValidServiceAccount(sa: string): boolean {
  return sa.length <= 253 && DNS1123_SUBDOMAIN.test(sa);
}

/** SPIFFE trust-domain rule (lowercase letters, digits, `.`, `-`, `_`; ≤ 255). */
export function isValidTrustDomain(td: string): boolean {
  return trustDomainProblem(td) === null;
}

/** Throws a configuration Error naming `field` unless `td` is a valid trust domain. */
export function assertTrustDomain(td: unknown, field: string): asserts td is string {
  if (typeof td !== 'string' || !isValidTrustDomain(td)) {
    throw new Error(`${field} must be a SPIFFE trust domain (lowercase letters, digits, '.', '-', '_'), got ${JSON.stringify(td)}`);
  }
}

/**
 * `spiffe://<td>/ns/<ns>/sa/<sa>` after checking ns and sa against the Kubernetes name rules.
 * Throws CaError AUTH_INVALID when they are not valid names.
 */
export function serviceAccountSpiffeId(trustDomain: string, namespace: string, serviceAccount: string): string {
  if (!isValidNamespace(namespace) || !isValidServiceAccount(serviceAccount)) {
    throw new CaError('AUTH_INVALID', 'token names an invalid Kubernetes namespace or service account');
  }
  return `spiffe://${trustDomain}/ns/${namespace}/sa/${serviceAccount}`;
}

/** Parses `system:serviceaccount:<ns>:<sa>`; undefined for anything else. */
export function parseServiceAccountUsername(username: unknown): { namespace: string; serviceAccount: string } | undefined {
  if (typeof username !== 'string') return undefined;
  const prefix = 'system:serviceaccount:';
  if (!username.startsWith(prefix)) return undefined;
  const parts = username.slice(prefix.length).split(':');
  if (parts.length !== 2 || !parts[0] || !parts[1]) return undefined;
  return { namespace: parts[0], serviceAccount: parts[1] };
}

// ---------------------------------------------------------------------------------------------
// Key sources

type GetKey = (header: CompactJWSHeaderParameters, token: FlattenedJWSInput) => Promise<CryptoKey>;

interface KeySource {
  readonly getKey: GetKey;
  /** Counts changes of the key set, so that tokens verified under an older set are verified again. */
  readonly generation: number;
  close(): void;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Validates a parsed JWKS document and drops symmetric keys ("oct"): they never verify a token here. */
function toKeySet(doc: unknown): JSONWebKeySet {
  if (!isObject(doc) || !Array.isArray(doc.keys)) throw new Error('not a JSON Web Key Set (no "keys" array)');
  const keys = doc.keys.filter((k): k is JSONWebKeySet['keys'][number] => isObject(k) && typeof k.kty === 'string' && k.kty !== 'oct');
  return { keys };
}

function isNoMatchingKey(err: unknown): boolean {
  return err instanceof joseErrors.JWKSNoMatchingKey;
}

/** JWKS from a file: read at construction and on reload(). */
export class FileJwks implements KeySource {
  readonly path: string;
  private set: ReturnType<typeof createLocalJWKSet>;
  private setJson: string;
  private changes = 0;

  constructor(path: string) {
    this.path = path;
    ({ set: this.set, json: this.setJson } = FileJwks.load(path));
  }

  get generation(): number {
    return this.changes;
  }

  private static load(path: string): { set: ReturnType<typeof createLocalJWKSet>; json: string } {
    let doc: unknown;
    try {
      doc = JSON.parse(readTextFile(path, MAX_PEM_BYTES));
    } catch (err) {
      throw new Error(`jwksFile ${path}: cannot read JSON: ${(err as Error).message}`, { cause: err });
    }
    try {
      const keys = toKeySet(doc);
      return { set: createLocalJWKSet(keys), json: JSON.stringify(keys.keys) };
    } catch (err) {
      throw new Error(`jwksFile ${path}: ${(err as Error).message}`, { cause: err });
    }
  }

  /** Re-reads the file and returns what puts its keys in force; throws (changing nothing) when it cannot be read. */
  prepareReload(): () => void {
    const { set, json } = FileJwks.load(this.path);
    return () => {
      if (json === this.setJson) return;
      this.set = set;
      this.setJson = json;
      this.changes++;
    };
  }

  readonly getKey: GetKey = async (header, token) => {
    try {
      return await this.set(header, token);
    } catch (err) {
      if (isNoMatchingKey(err)) throw new CaError('AUTH_INVALID', "token signing key (kid) is not in the issuer's key set", { cause: err });
      throw err;
    }
  };

  close(): void {
    /* nothing to release */
  }
}

export interface RemoteJwksOptions {
  uri: string;
  /** Used in failure callbacks and error causes. */
  issuer: string;
  minRefreshIntervalMs?: number;
  refreshIntervalMs?: number;
  fetchTimeoutMs?: number;
  now?: () => number;
  onRefreshFailure?: (error: Error) => void;
  /**
   * Reads the key set's body instead of fetch(uri): the Kubernetes API server's set is read over
   * its own CA with meshcert's credentials (tokenreview.ts). Rejects on any failure (a non-2xx
   * answer included); the body is at most MAX_JWKS_BYTES.
   */
  fetchBody?: (timeoutMs: number) => Promise<string>;
  /** Throws when a key set read (parsed, before it replaces the current one) is not one this issuer would publish. */
  checkKeys?: (keys: JSONWebKeySet) => void;
  /**
   * The clock difference allowed an issuer: a token's iat may be this far ahead of this clock, or
   * this far before the last read, and still name a newly published key. At least 60 s.
   */
  clockMarginMs?: number;
}

/** After a failed read, the next one prompted by tokens waits at least this long (the periodic one still runs). */
const FAILED_READ_BACKOFF_MS = 30_000;

/**
 * A remote JWKS kept in memory: fetched at start, refreshed periodically and on unknown `kid`
 * (rate limited), the last good key set kept while the endpoint is down.
 */
export class RemoteJwks implements KeySource {
  readonly uri: string;
  private readonly issuer: string;
  private readonly minRefreshIntervalMs: number;
  private readonly refreshIntervalMs: number;
  private readonly fetchTimeoutMs: number;
  private readonly now: () => number;
  private readonly onFailure: ((error: Error) => void) | undefined;
  private readonly fetchBody: ((timeoutMs: number) => Promise<string>) | undefined;
  private readonly checkKeys: ((keys: JSONWebKeySet) => void) | undefined;

  private set: ReturnType<typeof createLocalJWKSet> | undefined;
  /** The last loaded set's keys as JSON, to tell a changed set from the same one fetched again. */
  private setJson = '';
  private changes = 0;
  private lastLoadedAt = Number.NEGATIVE_INFINITY;
  private lastAttemptAt = Number.NEGATIVE_INFINITY;
  private lastAttemptFailed = false;
  /** The read due when the rate limit lets it, for tokens signed with a key newer than the set: one, shared. */
  private scheduled: Promise<boolean> | undefined;
  private scheduledTimer: NodeJS.Timeout | undefined;
  private resolveScheduled: ((loaded: boolean) => void) | undefined;
  private readonly clockMarginMs: number;
  private inflight: Promise<boolean> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private failures = 0;
  private fetches = 0;
  private closed = false;
  /** The set was taken over from a closed instance, whose refresh had stopped (see start). */
  private adoptedFromClosed = false;

  constructor(opts: RemoteJwksOptions) {
    this.uri = opts.uri;
    this.issuer = opts.issuer;
    this.minRefreshIntervalMs = opts.minRefreshIntervalMs ?? 30_000;
    this.refreshIntervalMs = opts.refreshIntervalMs ?? 300_000;
    this.fetchTimeoutMs = opts.fetchTimeoutMs ?? 5_000;
    this.now = opts.now ?? Date.now;
    this.onFailure = opts.onRefreshFailure;
    this.fetchBody = opts.fetchBody;
    this.checkKeys = opts.checkKeys;
    this.clockMarginMs = Math.max(ISSUER_CLOCK_MARGIN_MS, opts.clockMarginMs ?? 0);
  }

  /** Number of failed fetches since construction. */
  get refreshFailures(): number {
    return this.failures;
  }

  /** Number of fetch attempts since construction. */
  get fetchCount(): number {
    return this.fetches;
  }

  /** True once a key set has been loaded. */
  get loaded(): boolean {
    return this.set !== undefined;
  }

  get generation(): number {
    return this.changes;
  }

  /** Initial fetch (never throws) and the periodic refresh timer. Idempotent. */
  async start(): Promise<void> {
    if (this.closed) return;
    if (!this.timer && this.refreshIntervalMs > 0) {
      this.timer = setInterval(() => void this.refresh(), this.refreshIntervalMs);
      this.timer.unref();
    }
    // A set taken over from a closed build (one a reload retired, brought back by a rollback)
    // stopped refreshing when that build closed, and a key its issuer withdrew since (a leaked
    // one) must not verify until the timer's next read: it is read again unless it was read within
    // the rate limit's window (a failed read keeps it). One taken over from the build in force is
    // as fresh as that build's own refresh keeps it, and a reload does not wait on its endpoint.
    if (!this.set || (this.adoptedFromClosed && this.now() - this.lastLoadedAt >= this.minRefreshIntervalMs)) await this.refresh();
  }

  close(): void {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    if (this.scheduledTimer) clearTimeout(this.scheduledTimer);
    this.scheduledTimer = undefined;
    // Callers waiting for the read it was to make get their answer: none.
    this.resolveScheduled?.(false);
    this.resolveScheduled = undefined;
    this.scheduled = undefined;
  }

  /**
   * Takes `from`'s last good key set, and when it was read, before start(): an authenticator a
   * reload rebuilt (another issuer of its cluster removed, say) then verifies with the keys held,
   * instead of with none, while its endpoint is slow or down (start() reads a set taken over from
   * a closed instance again unless it is fresh).
   */
  adopt(from: RemoteJwks): void {
    if (from.uri !== this.uri || from.issuer !== this.issuer || from.set === undefined || this.set !== undefined) return;
    this.set = from.set;
    this.setJson = from.setJson;
    this.lastLoadedAt = from.lastLoadedAt;
    this.adoptedFromClosed = from.closed;
  }

  /** Fetches now (sharing an in-flight fetch). Resolves true when a fresh set was loaded; never rejects. */
  refresh(): Promise<boolean> {
    if (this.inflight) return this.inflight;
    if (this.closed) return Promise.resolve(false);
    this.lastAttemptAt = this.now();
    this.inflight = this.fetchOnce()
      .then((keys) => {
        const json = JSON.stringify(keys.keys);
        if (json !== this.setJson) {
          this.set = createLocalJWKSet(keys);
          this.setJson = json;
          this.changes++;
        }
        this.lastLoadedAt = this.lastAttemptAt;
        this.lastAttemptFailed = false;
        return true;
      })
      .catch((err: unknown) => {
        this.failures++;
        this.lastAttemptFailed = true;
        // A read cut short by close() (shutdown, a failed start) is no failure to report.
        if (this.closed) return false;
        const error = err instanceof Error ? err : new Error(String(err));
        try {
          this.onFailure?.(error);
        } catch {
          /* a metrics callback must not break authentication */
        }
        return false;
      })
      .finally(() => {
        this.inflight = undefined;
      });
    return this.inflight;
  }

  /** Starts a read unless the rate limit holds it back; returns at once. */
  refreshInBackground(): void {
    void this.refreshRateLimited();
  }

  /**
   * The read due as soon as the rate limit allows (at most minRefreshIntervalMs away): one for all
   * callers, made whatever the clock says when its timer fires. Resolves true when it loaded a
   * set, false when it failed or close() came first.
   */
  nextRefresh(): Promise<boolean> {
    if (this.closed) return Promise.resolve(false);
    if (this.scheduled) return this.scheduled;
    const wait = this.nextReadWait();
    this.scheduled = new Promise<boolean>((resolve) => {
      this.resolveScheduled = resolve;
      this.scheduledTimer = setTimeout(() => {
        this.scheduledTimer = undefined;
        this.scheduled = undefined;
        this.resolveScheduled = undefined;
        resolve(this.refresh());
      }, wait);
      this.scheduledTimer.unref();
    });
    return this.scheduled;
  }

  /** Milliseconds until the rate limit allows the next read; clamped: a wall clock stepped back must not stretch the wait. */
  private nextReadWait(): number {
    return Math.min(this.minRefreshIntervalMs, Math.max(0, this.lastAttemptAt + this.minRefreshIntervalMs - this.now()));
  }

  /** The least time between reads prompted by tokens: longer after a failed read. */
  private get minInterval(): number {
    return this.lastAttemptFailed ? Math.max(this.minRefreshIntervalMs, FAILED_READ_BACKOFF_MS) : this.minRefreshIntervalMs;
  }

  /** Refresh unless one was attempted less than minInterval ago (then wait for any in-flight one). */
  private async refreshRateLimited(): Promise<boolean> {
    if (this.inflight) return this.inflight;
    if (this.now() - this.lastAttemptAt < this.minInterval) return false;
    return this.refresh();
  }

  private async fetchOnce(): Promise<JSONWebKeySet> {
    this.fetches++;
    const text = this.fetchBody ? await this.fetchBody(this.fetchTimeoutMs) : await this.fetchOverHttp();
    let doc: unknown;
    try {
      doc = JSON.parse(text);
    } catch (err) {
      throw new Error(`JWKS from ${this.uri} is not JSON`, { cause: err });
    }
    const keys = toKeySet(doc);
    this.checkKeys?.(keys);
    createLocalJWKSet(keys); // throws on a set jose cannot use, before it replaces the current one
    return keys;
  }

  private async fetchOverHttp(): Promise<string> {
    let res: Response;
    try {
      res = await fetch(this.uri, {
        signal: AbortSignal.timeout(this.fetchTimeoutMs),
        headers: { accept: 'application/json, application/jwk-set+json' },
        // A redirect could lead to plain HTTP or another host: configure the final URL instead.
        redirect: 'error',
      });
    } catch (err) {
      throw new Error(`JWKS fetch for issuer ${this.issuer} from ${this.uri} failed: ${(err as Error).message}`, { cause: err });
    }
    if (!res.ok) {
      await res.body?.cancel().catch(() => undefined);
      throw new Error(`JWKS fetch for issuer ${this.issuer} from ${this.uri} returned HTTP ${res.status}`);
    }
    return readCapped(res, MAX_JWKS_BYTES, () => new Error(`JWKS from ${this.uri} is larger than ${MAX_JWKS_BYTES} bytes`));
  }

  /**
   * True when the token says it was issued after the key set held was fetched, less `marginMs` of
   * clock difference: its unknown key may be one the issuer published since. A token issued before
   * then carries a key the issuer did not publish, or has removed. An iat further ahead of this
   * clock than clockMarginMs is no issuer's: such a token is never "newer".
   */
  private newerThanKeys(token: FlattenedJWSInput, marginMs: number): boolean {
    let iat: unknown;
    try {
      const payload = typeof token.payload === 'string' ? Buffer.from(token.payload, 'base64url') : Buffer.from(token.payload);
      iat = (JSON.parse(payload.toString('utf8')) as { iat?: unknown }).iat;
    } catch {
      return false;
    }
    return typeof iat === 'number' && iat * 1000 >= this.lastLoadedAt - marginMs && iat * 1000 <= this.now() + this.clockMarginMs;
  }

  private notYetFetched(err: unknown): SigningKeyPendingError {
    // Read as soon as the rate limit allows, so that a retry then finds a newly published key.
    const wait = this.nextReadWait();
    void this.nextRefresh();
    return new SigningKeyPendingError(`the token's signing key is not in the issuer's key set yet; it is fetched again within ${Math.ceil(wait / 1000)} s, retry then`, { cause: err });
  }

  readonly getKey: GetKey = async (header, token) => {
    if (!this.set) {
      await this.refreshRateLimited();
      if (!this.set) {
        throw new CaError('AUTH_BACKEND_UNAVAILABLE', "the token issuer's signing keys could not be fetched yet; retry later");
      }
    }
    try {
      return await this.set(header, token);
    } catch (err) {
      if (!isNoMatchingKey(err)) throw err;
      // Unknown kid: the issuer may have rotated keys. Refresh (rate limited) and look again.
      const refreshed = await this.refreshRateLimited();
      if (refreshed) {
        try {
          return await this.set(header, token);
        } catch (err2) {
          if (!isNoMatchingKey(err2)) throw err2;
        }
        // The fetch that answered (ours, or one already under way) may have begun before the key
        // was published (behind a load balancer, on a replica that did not publish it yet): with
        // the clock margin, a token issued about then is retried, not refused. A forged kid gains
        // nothing by it: an iat is the forger's to choose anyway, and a retry costs no review.
        if (this.newerThanKeys(token, this.clockMarginMs)) throw this.notYetFetched(err);
      } else if (this.lastAttemptFailed) {
        throw new CaError('AUTH_BACKEND_UNAVAILABLE', "the token's signing key is unknown and the issuer's key set cannot be refreshed; retry later", { cause: err });
      } else if (this.newerThanKeys(token, this.clockMarginMs)) {
        // Not refused for good (istio-agent never retries UNAUTHENTICATED): the issuer may have
        // started signing with a key published after the last fetch, which the rate limit holds back.
        throw this.notYetFetched(err);
      }
      throw new CaError('AUTH_INVALID', "token signing key (kid) is not in the issuer's key set", { cause: err });
    }
  };
}

// ---------------------------------------------------------------------------------------------
// The authenticator

interface IssuerRule {
  readonly issuer: string;
  readonly audiences: readonly string[];
  readonly clockSkewSeconds: number;
  readonly trustDomain: string;
  readonly keys: FileJwks | RemoteJwks;
}

function validateIssuer(o: JwtIssuerOptions, i: number): void {
  const at = `jwt.issuers[${i}]`;
  if (!isObject(o)) throw new Error(`${at} must be an object`);
  if (typeof o.issuer !== 'string' || o.issuer === '') throw new Error(`${at}.issuer must be a non-empty string`);
  const hasUri = o.jwksUri !== undefined && o.jwksUri !== '';
  const hasFile = o.jwksFile !== undefined && o.jwksFile !== '';
  if (hasUri === hasFile) throw new Error(`${at}: set exactly one of jwksUri or jwksFile (issuer ${o.issuer})`);
  if (hasUri) {
    let url: URL;
    try {
      url = new URL(o.jwksUri as string);
    } catch {
      throw new Error(`${at}.jwksUri is not a URL: ${JSON.stringify(o.jwksUri)}`);
    }
    if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new Error(`${at}.jwksUri must be an https (or http) URL`);
  }
  if (o.audiences !== undefined && (!Array.isArray(o.audiences) || o.audiences.length === 0 || o.audiences.some((a) => typeof a !== 'string' || a === ''))) {
    throw new Error(`${at}.audiences must be a non-empty list of non-empty strings`);
  }
  if (o.clockSkewSeconds !== undefined && (!Number.isFinite(o.clockSkewSeconds) || o.clockSkewSeconds < 0 || o.clockSkewSeconds > 600)) {
    throw new Error(`${at}.clockSkewSeconds must be between 0 and 600`);
  }
  for (const f of ['minRefreshIntervalMs', 'refreshIntervalMs', 'fetchTimeoutMs'] as const) {
    const v = o[f];
    if (v !== undefined && (!Number.isFinite(v) || v < 0)) throw new Error(`${at}.${f} must be a non-negative number`);
  }
  assertTrustDomain(o.trustDomain, `${at}.trustDomain`);
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' && v !== '' ? v : undefined;
}

interface K8sClaims {
  namespace: string;
  serviceAccount: string;
  pod?: { name: string; uid: string };
  node?: { name: string; uid?: string };
}

/** Kubernetes service-account identity from verified claims (nested, legacy flat, or `sub`). */
export function kubernetesClaims(payload: JWTPayload): K8sClaims {
  const fromSub = parseServiceAccountUsername(payload.sub);
  let namespace: string | undefined;
  let serviceAccount: string | undefined;
  let pod: K8sClaims['pod'];
  let node: K8sClaims['node'];

  const nested = payload['kubernetes.io'];
  if (isObject(nested)) {
    namespace = str(nested.namespace);
    if (isObject(nested.serviceaccount)) serviceAccount = str(nested.serviceaccount.name);
    if (isObject(nested.pod)) {
      const name = str(nested.pod.name);
      const uid = str(nested.pod.uid);
      if (name && uid) pod = { name, uid };
    }
    if (isObject(nested.node)) {
      const name = str(nested.node.name);
      const uid = str(nested.node.uid);
      if (name) node = uid ? { name, uid } : { name };
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
  const out: K8sClaims = { namespace, serviceAccount };
  if (pod) out.pod = pod;
  if (node) out.node = node;
  return out;
}

/** An AUTH_INVALID about a token whose signature verified, as the verdict it is (see SignedTokenRefusedError). */
function signedVerdict(err: CaError): CaError {
  return err.code === 'AUTH_INVALID' ? new SignedTokenRefusedError(err.message, { cause: err.cause }) : err;
}

function mapJoseError(err: unknown, rule: IssuerRule): CaError {
  if (err instanceof CaError) return err;
  const cause = { cause: err };
  if (err instanceof joseErrors.JWTExpired) return new CaError('AUTH_INVALID', 'token expired', cause);
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
  // jose says "not supported" of an unknown critical header extension too: not the algorithm's fault.
  if (err instanceof joseErrors.JOSENotSupported && /Extension Header Parameter/i.test(err.message)) {
    return new CaError('AUTH_INVALID', 'token header lists a critical extension (crit) this CA does not support', cause);
  }
  if (err instanceof joseErrors.JOSEAlgNotAllowed || err instanceof joseErrors.JOSENotSupported) {
    return new CaError('AUTH_INVALID', 'token signing algorithm is not allowed', cause);
  }
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return new CaError('AUTH_INVALID', 'token signature is invalid', cause);
  if (err instanceof joseErrors.JWKSNoMatchingKey) return new CaError('AUTH_INVALID', "token signing key (kid) is not in the issuer's key set", cause);
  if (err instanceof joseErrors.JOSEError) return new CaError('AUTH_INVALID', 'token is malformed', cause);
  return new CaError('AUTH_INVALID', 'token could not be verified', cause);
}

/** Keys tried for a token that names none, at most: a key set holds a handful. */
const MAX_KEYS_TRIED = 16;

/**
 * A token without a `kid` while several keys of the set fit its algorithm (jose then hands over the
 * candidates instead of choosing): each in turn, as go-oidc (istiod) does. A signature no candidate
 * verifies is refused as one; any other failure (a claim, say) is the token's, whichever key.
 */
async function verifyWithEach(candidates: joseErrors.JWKSMultipleMatchingKeys, token: string, checks: Parameters<typeof jwtVerify>[2]): Promise<{ payload: JWTPayload }> {
  let tried = 0;
  for await (const key of candidates) {
    if (++tried > MAX_KEYS_TRIED) break;
    try {
      return await jwtVerify(token, key, checks);
    } catch (err) {
      if (!(err instanceof joseErrors.JWSSignatureVerificationFailed)) throw err;
    }
  }
  throw new joseErrors.JWSSignatureVerificationFailed();
}

/**
 * Verifies bearer tokens against per-issuer JWKS. Returns null when there is no bearer token,
 * when it is not a JWT, or when its (unverified) `iss` matches no configured issuer, so that the
 * next authenticator in a chain may try.
 */
export class JwtAuthenticator implements Authenticator {
  readonly name: string;
  private readonly rules = new Map<string, IssuerRule>();
  private readonly now: () => number;

  constructor(opts: JwtAuthenticatorOptions) {
    if (!isObject(opts) || !Array.isArray(opts.issuers) || opts.issuers.length === 0) {
      throw new Error('jwt.issuers must be a non-empty list');
    }
    this.name = opts.name ?? 'jwt';
    this.now = opts.now ?? Date.now;
    const seen = new Set<string>();
    opts.issuers.forEach((o, i) => {
      validateIssuer(o, i);
      if (seen.has(o.issuer)) throw new Error(`jwt.issuers[${i}].issuer ${o.issuer} is configured twice`);
      seen.add(o.issuer);
    });
    opts.issuers.forEach((o) => {
      const keys = o.jwksFile
        ? new FileJwks(o.jwksFile)
        : new RemoteJwks({
            uri: o.jwksUri as string,
            issuer: o.issuer,
            minRefreshIntervalMs: o.minRefreshIntervalMs,
            refreshIntervalMs: o.refreshIntervalMs,
            fetchTimeoutMs: o.fetchTimeoutMs,
            now: this.now,
            clockMarginMs: (o.clockSkewSeconds ?? 30) * 1000,
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
  async start(): Promise<void> {
    await Promise.all([...this.rules.values()].map((r) => (r.keys instanceof RemoteJwks ? r.keys.start() : undefined)));
  }

  /** Stops refresh timers. */
  close(): void {
    for (const r of this.rules.values()) r.keys.close();
  }

  /** Before start(): each remote key set takes the keys `previous` holds for the same issuer and URL (see RemoteJwks.adopt). */
  adoptKeys(previous: readonly JwtAuthenticator[]): void {
    for (const r of this.rules.values()) {
      if (!(r.keys instanceof RemoteJwks)) continue;
      for (const p of previous) {
        const held = p.rules.get(r.issuer)?.keys;
        if (held instanceof RemoteJwks) r.keys.adopt(held);
      }
    }
  }

  /**
   * Re-reads every jwksFile and returns what puts them all in force; throws, changing nothing, when
   * one cannot be read (so a reload is applied whole or not at all).
   */
  prepareReload(): () => void {
    const commits = [...this.rules.values()].flatMap((r) => (r.keys instanceof FileJwks ? [r.keys.prepareReload()] : []));
    return () => commits.forEach((commit) => commit());
  }

  /** Changes whenever an issuer's key set changes (a key removed must stop cached tokens too). */
  get cacheGeneration(): number {
    let n = 0;
    for (const r of this.rules.values()) n += r.keys.generation;
    return n;
  }

  /** Total failed remote JWKS fetches across issuers (for metrics). */
  get refreshFailures(): number {
    let n = 0;
    for (const r of this.rules.values()) if (r.keys instanceof RemoteJwks) n += r.keys.refreshFailures;
    return n;
  }

  async authenticate(req: AuthRequest): Promise<Caller | null> {
    const token = req.bearerToken;
    if (!token) return null;

    // Routing only: nothing here is trusted until jwtVerify succeeds.
    let header: ReturnType<typeof decodeProtectedHeader>;
    let unverified: JWTPayload;
    try {
      header = decodeProtectedHeader(token);
      unverified = decodeJwt(token);
    } catch {
      return null; // not a JWT: not ours
    }
    if (typeof unverified.iss !== 'string') return null;
    const rule = this.rules.get(unverified.iss);
    if (!rule) return null;

    const alg = header.alg;
    if (typeof alg !== 'string' || alg.toLowerCase() === 'none') {
      throw new CaError('AUTH_INVALID', "token is unsigned (alg 'none' is not allowed)");
    }
    if (/^HS/i.test(alg)) {
      // The name comes from an unverified token: printable ASCII only (a NUL in a reason would be refused by the audit store).
      throw new CaError('AUTH_INVALID', `token uses a shared-secret algorithm (${alg.slice(0, 8).replace(/[^\x20-\x7e]/g, '?')}); only asymmetric signatures are accepted`);
    }
    if (!ALLOWED_JWT_ALGORITHMS.includes(alg)) {
      throw new CaError('AUTH_INVALID', 'token signing algorithm is not allowed');
    }

    let payload: JWTPayload;
    const checks = {
      issuer: rule.issuer,
      audience: [...rule.audiences],
      algorithms: [...ALLOWED_JWT_ALGORITHMS],
      clockTolerance: rule.clockSkewSeconds,
      currentDate: new Date(this.now()),
      requiredClaims: ['exp'],
    };
    try {
      try {
        ({ payload } = await jwtVerify(token, rule.keys.getKey, checks));
      } catch (err) {
        if (!(err instanceof joseErrors.JWKSMultipleMatchingKeys)) throw err;
        ({ payload } = await verifyWithEach(err, token, checks));
      }
    } catch (err) {
      // jose checks the claims only once the signature verified.
      const signed = err instanceof joseErrors.JWTExpired || err instanceof joseErrors.JWTClaimValidationFailed;
      throw signed ? signedVerdict(mapJoseError(err, rule)) : mapJoseError(err, rule);
    }
    let k8s: K8sClaims;
    let identity: string;
    try {
      // jose checks iat only against a maximum age; Kubernetes' own token validation (go-jose) refuses
      // one issued ahead of its clock by more than its leeway, as the nbf check here does.
      if (typeof payload.iat === 'number' && payload.iat > this.now() / 1000 + rule.clockSkewSeconds) {
        throw new CaError('AUTH_INVALID', 'token is issued in the future (iat ahead of this CA\'s clock by more than auth.clockSkew): check the issuer\'s clock');
      }
      k8s = kubernetesClaims(payload);
      identity = serviceAccountSpiffeId(rule.trustDomain, k8s.namespace, k8s.serviceAccount);
    } catch (err) {
      throw isCaError(err) ? signedVerdict(err) : err;
    }
    const caller: {
      -readonly [K in keyof Caller]: Caller[K];
    } = {
      method: 'jwt',
      identities: [identity],
      namespace: k8s.namespace,
      serviceAccount: k8s.serviceAccount,
    };
    if (k8s.pod) caller.pod = k8s.pod;
    if (k8s.node) caller.node = k8s.node;
    if (typeof payload.exp === 'number') caller.expiresAt = payload.exp;
    return caller;
  }
}

/** The body as text, read no further than `max` bytes (an endless body is cut off, not buffered). */
async function readCapped(res: Response, max: number, tooLarge: () => Error): Promise<string> {
  if (!res.body) return '';
  const reader = res.body.getReader();
  const parts: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > max) {
      await reader.cancel().catch(() => undefined);
      throw tooLarge();
    }
    parts.push(value);
  }
  return Buffer.concat(parts).toString('utf8');
}
