/**
 * Kubernetes TokenReview authenticator (what istiod does for the `clusterid` cluster):
 * POST authentication.k8s.io/v1 TokenReview and map `system:serviceaccount:<ns>:<sa>` to a SPIFFE ID.
 *
 * A backend that cannot answer is never reported as a bad token: unreachable, timeout, 5xx, 429,
 * and 401/403 (meshcert's own credentials refused) are AUTH_BACKEND_UNAVAILABLE.
 */
import { existsSync, readFileSync } from 'node:fs';
import { MAX_PEM_BYTES, MAX_TOKEN_BYTES, readTextFile } from '../fs/read-file.js';
import https from 'node:https';
import { compactVerify, decodeJwt, errors as joseErrors } from 'jose';
import { FairLimiter } from './fair-limiter.js';
import { caBundleProblem } from '../x509/pem.js';
import { CaError, SigningKeyPendingError } from '../errors/ca-error.js';
import { assertTrustDomain, DEFAULT_AUDIENCES, parseServiceAccountUsername, RemoteJwks, serviceAccountSpiffeId } from './jwt.js';
import type { AuthRequest, Authenticator, Caller } from './types.js';

export const IN_CLUSTER_TOKEN_FILE = '/var/run/secrets/kubernetes.io/serviceaccount/token';
export const IN_CLUSTER_CA_FILE = '/var/run/secrets/kubernetes.io/serviceaccount/ca.crt';
export const TOKENREVIEW_PATH = '/apis/authentication.k8s.io/v1/tokenreviews';
/** The API server's service-account signing keys (ServiceAccountIssuerDiscovery, GA in Kubernetes 1.21). */
export const SERVICE_ACCOUNT_JWKS_PATH = '/openid/v1/jwks';
/** What the API server signs service-account tokens with (RSA or ECDSA keys). */
const SERVICE_ACCOUNT_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'ES256', 'ES384', 'ES512'];
/**
 * Least time between two reads of the API server's keys prompted by unknown kids: the document is
 * small and served from memory, and a call that names a key published since the last read waits
 * for the next one (see verifySignature).
 */
const KEYS_MIN_REFRESH_MS = 2_000;
/** Keys tried for a token that names none (each costs a signature check); past it, TokenReview decides. */
const MAX_KEYS_TRIED = 8;
/** A read of the keys is quick (a small document from memory): it has at most this long, whatever tokenReview.timeout. */
const KEYS_READ_TIMEOUT_MS = 3_000;
/** Calls held at once for the next read of the keys; beyond, UNAVAILABLE at once (no review spent). */
const MAX_WAITING_FOR_KEYS = 256;

export interface TokenReviewOptions {
  /** https URL of the API server. Default: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT. */
  apiServer?: string;
  /**
   * PEM CA bundle for the API server (caPem wins over caFile). Default: the in-cluster ca.crt when
   * talking to the local cluster's API server (see below) and the file exists, else system roots.
   * A file is read again by prepareReload (the cluster's CA rotates); either must hold a certificate.
   */
  caFile?: string;
  caPem?: string;
  /**
   * meshcert's own credential (bearerToken wins over tokenFile; the file is re-read every minute so
   * projected tokens rotate). Default: the in-cluster token, but only for the local cluster's API
   * server (apiServer unset, or its host is $KUBERNETES_SERVICE_HOST or kubernetes.default[.svc…];
   * see isLocalApiServer),
   * so the pod's own token is never sent to a remote cluster; otherwise no Authorization header.
   */
  bearerToken?: string;
  tokenFile?: string;
  /** Sent as spec.audiences; status.audiences must contain one. Default ['istio-ca']. */
  audiences?: string[];
  trustDomain: string;
  /** Whole-request timeout. Default 5000. */
  timeoutMs?: number;
  /**
   * auth.clockSkew, seconds: a token expired by more than this (at least 300) is refused unasked;
   * with verifySignatures, also the iat margin for a key the API server may have just published (at least 60).
   */
  clockSkewSeconds?: number;
  /**
   * Check each token's signature against the API server's service-account keys
   * (SERVICE_ACCOUNT_JWKS_PATH) before a TokenReview, so that a forged token costs the API server
   * nothing. Default false here; the config's tokenReview.verifySignatures is true by default.
   */
  verifySignatures?: boolean;
  /** Called when reading the API server's keys fails (they are fetched every 5 minutes, and on an unknown kid). */
  onKeysFailure?: (error: Error) => void;
  /** Tests: the least time between two reads of the keys prompted by unknown kids. Default KEYS_MIN_REFRESH_MS. */
  keysMinRefreshIntervalMs?: number;
  /** Name reported as Authenticator.name. Default 'tokenreview'. */
  name?: string;
  /** Environment to read in-cluster defaults from (tests). Default process.env. */
  env?: Record<string, string | undefined>;
}

function notSigned(cause: unknown): CaError {
  return new CaError('AUTH_INVALID', 'token was not signed by a service-account key of the Kubernetes API server', { cause });
}

function malformed(cause: unknown): CaError {
  return new CaError('AUTH_INVALID', 'token is malformed', { cause });
}

function badSignature(cause: unknown): CaError {
  return new CaError('AUTH_INVALID', "token signature does not verify with the Kubernetes API server's service-account keys", { cause });
}

/**
 * A token that names no key while several could verify it: each in turn. Refused only when every
 * key was tried and none verifies it; a key that could not be used, or more keys than
 * MAX_KEYS_TRIED, leave it to TokenReview.
 */
async function verifyWithEach(candidates: joseErrors.JWKSMultipleMatchingKeys, token: string): Promise<void> {
  let tried = 0;
  let failed = 0;
  for await (const key of candidates) {
    if (++tried > MAX_KEYS_TRIED) return;
    try {
      await compactVerify(token, key, { algorithms: SERVICE_ACCOUNT_ALGORITHMS });
      return;
    } catch (err) {
      if (err instanceof joseErrors.JWSSignatureVerificationFailed) failed++;
      // Not a signature a key could check (jose resolves keys before it decodes one): the token's fault.
      else if (err instanceof joseErrors.JWSInvalid) throw malformed(err);
    }
  }
  if (tried > 0 && failed === tried) throw badSignature(undefined);
}

/** Why the API server could not give an answer; carried as the `cause` of AUTH_BACKEND_UNAVAILABLE. */
export type TokenReviewBackendFailure =
  | 'unreachable'
  | 'timeout'
  | 'server-error'
  | 'throttled'
  | 'credentials-rejected'
  | 'credentials-unreadable'
  | 'unexpected-status'
  | 'bad-response'
  | 'busy';

export class TokenReviewBackendError extends Error {
  override readonly name = 'TokenReviewBackendError';
  readonly kind: TokenReviewBackendFailure;
  readonly status: number | undefined;

  constructor(kind: TokenReviewBackendFailure, message: string, options?: { status?: number; cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.kind = kind;
    this.status = options?.status;
  }
}

/** The group the API server puts every service account's tokens in (and no other user's). */
const SERVICE_ACCOUNTS_GROUP = 'system:serviceaccounts';

/** Shapes of authentication.k8s.io/v1 TokenReview we read. */
interface TokenReviewStatus {
  authenticated?: boolean;
  error?: string;
  audiences?: string[];
  user?: { username?: string; uid?: string; groups?: string[]; extra?: Record<string, string[]> };
}

/**
 * TokenReviews under way at once per process (the HTTPS agent's sockets). They are shared fairly
 * between client addresses (FairLimiter): a client alone may use them all (a gateway for a remote
 * cluster's agents), and when they are all busy each one that frees goes to the waiting address
 * with the fewest reviews under way, so one client's flood of forged tokens queues behind itself
 * instead of making every agent's review wait for it. A call waits at most tokenReview.timeout for
 * a slot, and its review then has that long again.
 */
export const MAX_REVIEWS = 64;

/** Longest a TokenReview verdict is reused (token cache), seconds. */
const REVIEW_REUSE_SECONDS = 60;
/** Seconds past its exp after which a token is refused without asking, unless auth.clockSkew allows more. */
const EXPIRED_LEEWAY_SECONDS = 300;

/**
 * Refuses what needs no round trip. Every service-account token, bound or legacy, is a JWT whose
 * subject names the service account, and one that expired minutes ago stays expired; anything
 * else would cost the API server a TokenReview per call from whoever can reach this port.
 */
function precheck(token: string, nowSeconds: number, leewaySeconds: number): void {
  let claims: ReturnType<typeof decodeJwt>;
  try {
    claims = decodeJwt(token);
  } catch {
    throw new CaError('AUTH_INVALID', 'bearer token is not a Kubernetes service-account token (not a JWT)');
  }
  if (!parseServiceAccountUsername(claims.sub)) throw new CaError('AUTH_INVALID', 'token does not belong to a Kubernetes service account');
  if (typeof claims.exp === 'number' && claims.exp + leewaySeconds < nowSeconds) throw new CaError('AUTH_INVALID', 'token has expired');
}
const MAX_RESPONSE_BYTES = 1024 * 1024;
const TOKEN_FILE_REREAD_MS = 60_000;

const EXTRA_POD_NAME = 'authentication.kubernetes.io/pod-name';
const EXTRA_POD_UID = 'authentication.kubernetes.io/pod-uid';
const EXTRA_NODE_NAME = 'authentication.kubernetes.io/node-name';
const EXTRA_NODE_UID = 'authentication.kubernetes.io/node-uid';

function firstExtra(extra: unknown, key: string): string | undefined {
  if (typeof extra !== 'object' || extra === null) return undefined;
  const v = (extra as Record<string, unknown>)[key];
  const first = Array.isArray(v) ? v[0] : v;
  return typeof first === 'string' && first !== '' ? first : undefined;
}

function unavailable(err: TokenReviewBackendError): CaError {
  const message =
    err.kind === 'credentials-rejected' || err.kind === 'credentials-unreadable'
      ? 'the CA cannot verify tokens: its Kubernetes API credentials are not accepted; retry later'
      : err.kind === 'busy'
        ? 'the CA is busy verifying other tokens; retry with backoff'
        : 'the CA cannot reach the Kubernetes API server to verify the token; retry later';
  return new CaError('AUTH_BACKEND_UNAVAILABLE', message, { cause: err });
}

function resolveApiServer(opts: TokenReviewOptions, env: Record<string, string | undefined>): URL {
  let raw = opts.apiServer;
  if (raw === undefined || raw === '') {
    const host = env.KUBERNETES_SERVICE_HOST;
    const port = env.KUBERNETES_SERVICE_PORT ?? '443';
    if (!host) throw new Error('tokenreview.apiServer is not set and KUBERNETES_SERVICE_HOST is not in the environment');
    raw = `https://${host.includes(':') ? `[${host}]` : host}:${port}`;
  }
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new Error(`tokenreview.apiServer is not a URL: ${JSON.stringify(raw)}`);
  }
  if (url.protocol !== 'https:') throw new Error('tokenreview.apiServer must be an https:// URL');
  if (url.search !== '' || url.hash !== '') throw new Error('tokenreview.apiServer must not have a query or fragment');
  return url;
}

/**
 * An API path under the API server's URL, which may carry a path prefix of its own (an API server
 * behind a proxy, such as Rancher's https://rancher.example/k8s/clusters/c-xxx): a path resolved
 * against it with `new URL` would drop that prefix.
 */
export function underBase(base: URL, apiPath: string): URL {
  const url = new URL(base);
  url.pathname = `${base.pathname.replace(/\/+$/, '')}${apiPath}`;
  return url;
}

/**
 * True when `base` is this pod's own cluster API server (where the in-cluster credentials belong):
 * $KUBERNETES_SERVICE_HOST, kubernetes.default[.svc], or kubernetes.default.svc.<cluster domain>,
 * the domain being cluster.local or one the pod's DNS search list names (svc.<domain>). Not any
 * name that merely starts so: kubernetes.default.svc.example.com is someone else's host.
 */
export function isLocalApiServer(configured: string | undefined, base: URL, env: Record<string, string | undefined>, searchDomains: readonly string[] = podSearchDomains()): boolean {
  if (configured === undefined || configured === '') return true;
  const host = base.hostname.replace(/^\[|\]$/g, '').replace(/\.$/, '').toLowerCase();
  if (env.KUBERNETES_SERVICE_HOST && host === env.KUBERNETES_SERVICE_HOST) return true;
  if (host === 'kubernetes.default' || host === 'kubernetes.default.svc' || host === 'kubernetes.default.svc.cluster.local') return true;
  return searchDomains.some((d) => d.startsWith('svc.') && host === `kubernetes.default.${d.replace(/\.$/, '').toLowerCase()}`);
}

/** The `search` domains of /etc/resolv.conf (in a pod: <ns>.svc.<domain> svc.<domain> <domain>). */
function podSearchDomains(): string[] {
  try {
    const line = readFileSync('/etc/resolv.conf', 'utf8').split('\n').findLast((l) => /^search\s/.test(l));
    return line ? line.trim().split(/\s+/).slice(1) : [];
  } catch {
    return [];
  }
}

/** The agent for reviews: pooled, keep-alive connections to the API server. */
function reviewsAgent(ca: string | undefined): https.Agent {
  return new https.Agent({ keepAlive: true, maxSockets: MAX_REVIEWS, ...(ca === undefined ? {} : { ca }) });
}

/** The agent for reading the keys. No keep-alive: behind a load balancer, the next read may reach an API server replica that already publishes a new key. */
function keysAgent(ca: string | undefined): https.Agent {
  return new https.Agent({ keepAlive: false, maxSockets: 2, ...(ca === undefined ? {} : { ca }) });
}

/** A CA bundle file's text, refused when it holds no certificate (see caBundleProblem). */
function readCaFile(file: string): string {
  let text: string;
  try {
    text = readTextFile(file, MAX_PEM_BYTES);
  } catch (err) {
    throw new Error(`tokenreview.caFile ${file}: ${(err as Error).message}`, { cause: err });
  }
  assertHoldsCertificate(text, `tokenreview.caFile ${file}`);
  return text;
}

function assertHoldsCertificate(pem: string, what: string): void {
  const problem = caBundleProblem(pem);
  if (problem) throw new Error(`${what}: ${problem}`);
}

/**
 * Authenticates bearer tokens with the Kubernetes TokenReview API. Returns null without a bearer token.
 */
export class TokenReviewAuthenticator implements Authenticator {
  readonly name: string;
  private readonly url: URL;
  private readonly jwksUrl: URL;
  private readonly keys: RemoteJwks | undefined;
  private agent: https.Agent;
  /** Its own sockets: 64 reviews under way (a flood, a slow API server) must not starve a read of the keys. */
  private keysAgent: https.Agent | undefined;
  /** The file the API server's CA bundle was read from (caFile, or the in-cluster ca.crt), read again on a reload. */
  private readonly caFile: string | undefined;
  /** The CA bundle the agents trust (undefined: the system's roots). */
  private ca: string | undefined;
  /** Agents replaced by a reload, destroyed once the reviews they carry have had their time. */
  private readonly retiring = new Map<https.Agent, NodeJS.Timeout>();
  private readonly audiences: readonly string[];
  private readonly trustDomain: string;
  private readonly timeoutMs: number;
  private readonly reviews: FairLimiter;
  private readonly leewaySeconds: number;
  private readonly staticToken: string | undefined;
  private readonly tokenFile: string | undefined;
  private tokenCache: { value: string; readAt: number } | undefined;
  private waitingForKeys = 0;

  constructor(opts: TokenReviewOptions) {
    if (typeof opts !== 'object' || opts === null) throw new Error('tokenreview options must be an object');
    const env = opts.env ?? process.env;
    this.name = opts.name ?? 'tokenreview';
    assertTrustDomain(opts.trustDomain, 'tokenreview.trustDomain');
    this.trustDomain = opts.trustDomain;
    const base = resolveApiServer(opts, env);
    this.url = underBase(base, TOKENREVIEW_PATH);
    this.jwksUrl = underBase(base, SERVICE_ACCOUNT_JWKS_PATH);
    const local = isLocalApiServer(opts.apiServer, base, env);
    if (opts.audiences !== undefined && (!Array.isArray(opts.audiences) || opts.audiences.length === 0 || opts.audiences.some((a) => typeof a !== 'string' || a === ''))) {
      throw new Error('tokenreview.audiences must be a non-empty list of non-empty strings');
    }
    this.audiences = [...(opts.audiences ?? DEFAULT_AUDIENCES)];
    this.timeoutMs = opts.timeoutMs ?? 5_000;
    this.reviews = new FairLimiter(MAX_REVIEWS, this.timeoutMs);
    this.leewaySeconds = Math.max(EXPIRED_LEEWAY_SECONDS, opts.clockSkewSeconds ?? 0);
    if (!Number.isFinite(this.timeoutMs) || this.timeoutMs <= 0) throw new Error('tokenreview.timeoutMs must be a positive number');

    let ca: string | undefined = opts.caPem;
    if (ca === undefined && opts.caFile) {
      this.caFile = opts.caFile;
      ca = readCaFile(opts.caFile);
    } else if (ca === undefined && local && existsSync(IN_CLUSTER_CA_FILE)) {
      this.caFile = IN_CLUSTER_CA_FILE;
      ca = readCaFile(IN_CLUSTER_CA_FILE);
    } else if (ca !== undefined) {
      assertHoldsCertificate(ca, 'tokenreview.caPem');
    }
    this.ca = ca;

    if (opts.bearerToken !== undefined && opts.bearerToken !== '') {
      this.staticToken = opts.bearerToken;
    } else if (opts.tokenFile) {
      this.tokenFile = opts.tokenFile;
    } else if (local) {
      this.tokenFile = IN_CLUSTER_TOKEN_FILE;
    }
    this.agent = reviewsAgent(ca);
    if (opts.verifySignatures === true) {
      this.keysAgent = keysAgent(ca);
      this.keys = new RemoteJwks({
        uri: this.jwksUrl.href,
        issuer: 'the Kubernetes API server',
        fetchTimeoutMs: Math.min(this.timeoutMs, KEYS_READ_TIMEOUT_MS),
        clockMarginMs: (opts.clockSkewSeconds ?? 0) * 1000,
        minRefreshIntervalMs: opts.keysMinRefreshIntervalMs ?? KEYS_MIN_REFRESH_MS,
        fetchBody: (timeoutMs) => this.fetchKeys(this.keysAgent!, timeoutMs),
        // An API server signs every token with an RSA or EC key it publishes: none is a fault, not a verdict on every token.
        checkKeys: (set) => {
          if (!set.keys.some((k) => k.kty === 'RSA' || k.kty === 'EC')) throw new Error(`GET ${this.jwksUrl.pathname} returned no RSA or EC key`);
        },
        ...(opts.onKeysFailure ? { onRefreshFailure: opts.onKeysFailure } : {}),
      });
    }
  }

  /**
   * Starts reading the API server's keys (when verifySignatures) and their refresh timer; resolves
   * at once: until the first read answers, tokens go to TokenReview unchecked.
   */
  start(): void {
    if (this.keys) void this.keys.start();
  }

  /** Whether the API server's keys have been read (verifySignatures). */
  get keysLoaded(): boolean {
    return this.keys?.loaded ?? false;
  }

  /**
   * A reload: the CA bundle read again from its file (a cluster's CA rotates, kube-root-ca.crt with
   * it), as a jwksFile is. Throws, changing nothing, when the file cannot be read or holds no
   * certificate; the returned commit puts a changed bundle in force for the next connection.
   * Reviews under way finish on the old connections, closed once tokenReview.timeout has passed.
   */
  prepareReload(): () => void {
    if (this.caFile === undefined) return () => {};
    const ca = readCaFile(this.caFile);
    if (ca === this.ca) return () => {};
    return () => {
      for (const old of [this.agent, this.keysAgent]) {
        if (!old) continue;
        const timer = setTimeout(() => {
          this.retiring.delete(old);
          old.destroy();
        }, this.timeoutMs + 1_000);
        timer.unref();
        this.retiring.set(old, timer);
      }
      this.ca = ca;
      this.agent = reviewsAgent(ca);
      if (this.keysAgent) this.keysAgent = keysAgent(ca);
    };
  }

  /** Closes pooled connections and stops the keys' refresh. */
  close(): void {
    this.keys?.close();
    this.keysAgent?.destroy();
    this.agent.destroy();
    for (const [old, timer] of this.retiring) {
      clearTimeout(timer);
      old.destroy();
    }
    this.retiring.clear();
  }

  /**
   * Refuses, without a TokenReview, a token that no service-account key of the API server signed:
   * a bad signature, an algorithm the API server does not use, or a key it does not publish. A
   * token that names a key the API server may have published since the last read (an iat no more
   * than the clock margin before that read began, nor ahead of this clock) waits for the next read, at most
   * KEYS_MIN_REFRESH_MS away and shared by all such calls, and is judged again: a key published
   * meanwhile passes, one still unknown gets UNAVAILABLE (retried, no review spent); a key unknown
   * to reads made well after the token was issued is not the API server's. A token that names no
   * key is tried against each. Only a definite answer refuses:
   * until the keys have been read once, while the last read failed, or when a read could not be
   * made, TokenReview decides, as it would without this check. A token that passes still goes to
   * TokenReview, which alone knows whether its pod or service account still exists and checks its
   * audience.
   */
  private async verifySignature(keys: RemoteJwks, token: string): Promise<void> {
    if (!keys.loaded) {
      keys.refreshInBackground();
      return;
    }
    try {
      await this.verifyWith(keys, token);
    } catch (err) {
      if (!(err instanceof SigningKeyPendingError) || this.waitingForKeys >= MAX_WAITING_FOR_KEYS) throw err;
      this.waitingForKeys++;
      let read: boolean;
      try {
        read = await keys.nextRefresh();
      } finally {
        this.waitingForKeys--;
      }
      if (!read) return; // the read failed, or the authenticator closed: TokenReview decides
      await this.verifyWith(keys, token);
    }
  }

  /** One check against the keys held: throws AUTH_INVALID or SigningKeyPendingError, or returns (verified, or no verdict). */
  private async verifyWith(keys: RemoteJwks, token: string): Promise<void> {
    try {
      await compactVerify(token, keys.getKey, { algorithms: SERVICE_ACCOUNT_ALGORITHMS });
    } catch (err) {
      if (err instanceof SigningKeyPendingError) throw err;
      if (err instanceof CaError) {
        if (err.code === 'AUTH_BACKEND_UNAVAILABLE') return; // the last read failed: TokenReview decides
        throw notSigned(err);
      }
      if (err instanceof joseErrors.JWKSMultipleMatchingKeys) return verifyWithEach(err, token);
      if (err instanceof joseErrors.JWSSignatureVerificationFailed) throw badSignature(err);
      if (err instanceof joseErrors.JOSEAlgNotAllowed || err instanceof joseErrors.JOSENotSupported) throw new CaError('AUTH_INVALID', 'token signing algorithm is not one the Kubernetes API server uses', { cause: err });
      if (err instanceof joseErrors.JWKSInvalid) return; // the published set, not the token
      if (err instanceof joseErrors.JOSEError) throw malformed(err);
      // Not a verdict on the token (a published key jose cannot import, say): TokenReview decides.
    }
  }

  private ownToken(): string | undefined {
    if (this.staticToken !== undefined) return this.staticToken;
    if (this.tokenFile === undefined) return undefined;
    const now = Date.now();
    if (this.tokenCache && now - this.tokenCache.readAt < TOKEN_FILE_REREAD_MS) return this.tokenCache.value;
    try {
      const value = readTextFile(this.tokenFile, MAX_TOKEN_BYTES).trim();
      if (!value) throw new Error('file is empty');
      this.tokenCache = { value, readAt: now };
      return value;
    } catch (err) {
      if (this.tokenCache) return this.tokenCache.value; // keep the last good credential
      throw new TokenReviewBackendError('credentials-unreadable', `cannot read the API-server token file ${this.tokenFile}: ${(err as Error).message}`, { cause: err });
    }
  }

  async authenticate(req: AuthRequest): Promise<Caller | null> {
    const token = req.bearerToken;
    if (!token) return null;
    precheck(token, Date.now() / 1000, this.leewaySeconds);
    if (this.keys) await this.verifySignature(this.keys, token);

    let status: TokenReviewStatus;
    try {
      const review = (): Promise<TokenReviewStatus> => this.review(token);
      status = await this.reviews.run(req.peerHost ?? '', review, () => new TokenReviewBackendError('busy', `no TokenReview slot within ${this.timeoutMs} ms`));
    } catch (err) {
      if (err instanceof TokenReviewBackendError) throw unavailable(err);
      throw unavailable(new TokenReviewBackendError('unreachable', `TokenReview failed: ${(err as Error).message}`, { cause: err }));
    }

    if (status.authenticated !== true) {
      throw new CaError('AUTH_INVALID', 'token was not accepted by the Kubernetes API server (expired, revoked, or not a service-account token)', {
        cause: new Error(`TokenReview not authenticated${typeof status.error === 'string' ? `: ${status.error.slice(0, 300)}` : ''}`),
      });
    }
    const returned = Array.isArray(status.audiences) ? status.audiences : [];
    if (!returned.some((a) => this.audiences.includes(a))) {
      throw new CaError('AUTH_INVALID', `token audience does not include ${this.audiences.join(' or ')}`);
    }
    const sa = parseServiceAccountUsername(status.user?.username);
    if (!sa) throw new CaError('AUTH_INVALID', 'token does not belong to a Kubernetes service account');
    // As istiod: the username alone is what any authenticator of the API server (a webhook, OIDC
    // with an empty prefix) may claim; the API server puts only its service accounts in this group.
    const groups = status.user?.groups;
    if (!Array.isArray(groups) || !groups.includes(SERVICE_ACCOUNTS_GROUP)) {
      throw new CaError('AUTH_INVALID', `token does not belong to a Kubernetes service account (the API server did not put its user in the ${SERVICE_ACCOUNTS_GROUP} group)`);
    }
    const identity = serviceAccountSpiffeId(this.trustDomain, sa.namespace, sa.serviceAccount);

    const caller: { -readonly [K in keyof Caller]: Caller[K] } = {
      method: 'tokenreview',
      identities: [identity],
      namespace: sa.namespace,
      serviceAccount: sa.serviceAccount,
    };
    const extra = status.user?.extra;
    const podName = firstExtra(extra, EXTRA_POD_NAME);
    const podUid = firstExtra(extra, EXTRA_POD_UID);
    if (podName && podUid) caller.pod = { name: podName, uid: podUid };
    const nodeName = firstExtra(extra, EXTRA_NODE_NAME);
    const nodeUid = firstExtra(extra, EXTRA_NODE_UID);
    if (nodeName) caller.node = nodeUid ? { name: nodeName, uid: nodeUid } : { name: nodeName };
    // The API server verified this exact token, so its exp (if it is a JWT) bounds caching; and
    // a verdict is reused for at most a minute whatever that says, since the API server is what
    // sees a deleted pod or service account (a legacy secret token has no exp at all).
    let until = Math.floor(Date.now() / 1000) + REVIEW_REUSE_SECONDS;
    try {
      const exp = decodeJwt(token).exp;
      if (typeof exp === 'number' && Number.isFinite(exp)) until = Math.min(until, exp);
    } catch {
      /* not a JWT: no expiry known */
    }
    caller.expiresAt = until;
    return caller;
  }

  /** One TokenReview round trip. Rejects with TokenReviewBackendError when there is no usable answer. */
  private async review(token: string): Promise<TokenReviewStatus> {
    const body = JSON.stringify({
      apiVersion: 'authentication.k8s.io/v1',
      kind: 'TokenReview',
      spec: { token, audiences: this.audiences },
    });
    const res = await this.send('POST', this.url, body, this.timeoutMs);
    const failure = classifyStatus(res.status);
    if (failure) {
      throw new TokenReviewBackendError(failure, `TokenReview returned HTTP ${res.status}${failure === 'credentials-rejected' ? ": the API server refused meshcert's own credentials (check its token and RBAC for tokenreviews create)" : ''}`, {
        status: res.status,
      });
    }
    let doc: unknown;
    try {
      doc = JSON.parse(res.body.toString('utf8'));
    } catch (err) {
      throw new TokenReviewBackendError('bad-response', 'TokenReview response is not JSON', { status: res.status, cause: err });
    }
    // Only a TokenReview may say a token is refused: any other 2xx body (a proxy's JSON error, a
    // wrong apiServer) read as one would blame every workload's token, which agents never retry.
    const review = doc as { kind?: unknown; status?: unknown } | null;
    if (typeof review !== 'object' || review === null || Array.isArray(review) || review.kind !== 'TokenReview' || typeof review.status !== 'object' || review.status === null || Array.isArray(review.status)) {
      const kind = typeof review === 'object' && review !== null && !Array.isArray(review) && typeof review.kind === 'string' ? ` (kind ${JSON.stringify(review.kind.slice(0, 64))})` : '';
      throw new TokenReviewBackendError('bad-response', `TokenReview response is not a TokenReview${kind}: is tokenReview.apiServer the Kubernetes API server?`, { status: res.status });
    }
    return review.status as TokenReviewStatus;
  }

  /** The API server's service-account JWKS body; rejects on a non-2xx answer (RemoteJwks parses and checks it). */
  private async fetchKeys(agent: https.Agent, timeoutMs: number): Promise<string> {
    const res = await this.send('GET', this.jwksUrl, undefined, timeoutMs, agent);
    if (res.status < 200 || res.status >= 300) {
      const hint = res.status === 401 || res.status === 403 ? " (meshcert's credentials may not read it: see the system:service-account-issuer-discovery ClusterRole)" : '';
      throw new Error(`GET ${this.jwksUrl.pathname} returned HTTP ${res.status}${hint}`);
    }
    return res.body.toString('utf8');
  }

  /** One request to the API server with meshcert's credentials, its body read up to MAX_RESPONSE_BYTES. */
  private send(method: 'GET' | 'POST', url: URL, body: string | undefined, timeoutMs: number, agent = this.agent): Promise<{ status: number; body: Buffer }> {
    const own = this.ownToken();
    return new Promise((resolve, reject) => {
      let settled = false;
      const finish = (fn: () => void): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        fn();
      };
      const what = method === 'POST' ? 'TokenReview' : `GET ${url.pathname}`;
      const request = https.request(
        url,
        {
          method,
          agent,
          headers: {
            accept: 'application/json',
            ...(body === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }),
            ...(own === undefined ? {} : { authorization: `Bearer ${own}` }),
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (c: Buffer) => {
            size += c.length;
            if (size > MAX_RESPONSE_BYTES) {
              res.destroy();
              finish(() => reject(new TokenReviewBackendError('bad-response', `${what} response too large`, { status: res.statusCode })));
              return;
            }
            chunks.push(c);
          });
          res.on('error', (err) => finish(() => reject(new TokenReviewBackendError('unreachable', `${what} response failed: ${err.message}`, { cause: err }))));
          res.on('end', () => finish(() => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) })));
        },
      );
      const timer = setTimeout(() => {
        finish(() => reject(new TokenReviewBackendError('timeout', `${what} timed out after ${timeoutMs} ms`)));
        request.destroy();
      }, timeoutMs);
      request.on('error', (err) => finish(() => reject(new TokenReviewBackendError('unreachable', `${what} request failed: ${err.message}`, { cause: err }))));
      request.end(body);
    });
  }
}

function classifyStatus(code: number): TokenReviewBackendFailure | undefined {
  if (code >= 200 && code < 300) return undefined;
  if (code === 401 || code === 403) return 'credentials-rejected';
  if (code === 429) return 'throttled';
  if (code >= 500) return 'server-error';
  return 'unexpected-status';
}
