/**
 * Composition root: turns a validated config into running parts and wires them together.
 * The only module that knows every other one.
 */
import type { Socket } from 'node:net';
import { isDeepStrictEqual } from 'node:util';
import { inOrder } from './async/in-order.js';
import { AuthChain } from './auth/chain.js';
import { AuthInForce, type AuthPart, type BuiltAuth } from './auth/in-force.js';
import { ClientCertAuthenticator } from './auth/client-cert.js';
import { JwtAuthenticator, type JwtIssuerOptions } from './auth/jwt.js';
import { TokenCache } from './auth/token-cache.js';
import { TokenReviewAuthenticator } from './auth/tokenreview.js';
import type { Authenticator } from './auth/types.js';
import { WorkSlicer } from './authority/slicer.js';
import { Authority } from './authority/authority.js';
import { admitUnlessShortOfMemory, IdentityRateLimiter, InFlightLimiter } from './authority/overload.js';
import { certificateCluster, clusterTrustDomain, effectiveDefaultCluster, servedClusterNames, servedTrustDomains } from './config/default-cluster.js';
import type { MeshcertConfig } from './config/schema.js';
import { ensureDevIssuer } from './dev/token-issuer.js';
import { CaError, ConfigError } from './errors/ca-error.js';
import { assertServable } from './config/servable.js';
import { concurrentStreams, usableCpus } from './runtime/auto-shape.js';
import { fanOut, type IssuanceObserver } from './authority/observer.js';
import { certificateAdmission, certificateShed, createCertificateHandler } from './grpc/certificate-service.js';
import { keepRecord } from './inventory/keep.js';
import { inventoryObserver, ownCertificateRecorder, SERVING_CERT_REQUESTER, type RecordSink } from './inventory/sink.js';
import { zeroSeries, type CaMetrics } from './metrics/ca-metrics.js';
import { HealthService } from './grpc/health.js';
import { ERROR_STATUS_NAMES, statusName } from './grpc/codes.js';
import { CONNECTION_SHED_REASONS, GrpcServer } from './grpc/server.js';
import { checkServingIdentity, type ServingIdentity } from './grpc/tls.js';
import { CERTIFICATE_SERVICE, HEALTH_SERVICE, methodCodec, type IstioCertificateRequestMsg, type IstioCertificateResponseMsg } from './grpc/proto.js';
import type { HealthCheckRequest, HealthCheckResponse } from './grpc/health.js';
import type { LocalIssuer } from './issuer/local.js';
import type { IssuerRegistry } from './issuer/registry.js';
import { loadCaState, type CaSnapshot, type CaState } from './ca/state.js';
export { loadCaState, loadIssuer, prepareSharedState, type CaState } from './ca/state.js';
import { fromKubeSettings, kubeSource } from './k8s/source.js';
import { HeapPressure } from './runtime/heap-pressure.js';
import type { NodeAuthorizer } from './k8s/node-authorizer.js';
import type { Logger } from './log/logger.js';
import { ServingCertificate, type ServingMaterial } from './serving/serving-cert.js';
import { splitPemCertificates } from './x509/pem.js';
import { LogThrottle } from './log/throttle.js';
import { oneLine } from './x509/names.js';

export const CA_SERVICE_NAME = 'istio.v1.auth.IstioCertificateService';

export interface RunningMeshcert {
  readonly port: number;
  readonly issuer: () => LocalIssuer;
  readonly issuers: () => IssuerRegistry;
  readonly health: HealthService;
  /** With StartOptions.handedConnections: serve a connection accepted by the cluster primary. */
  acceptConnection(socket: Socket): void;
  /**
   * Applies CA, policy, authentication and trusted-node-account changes from a new config (what
   * reloadedConfig put in force); throws (and keeps the old state) when invalid. `ca`: the CAs as a
   * cluster primary loaded them (see StartOptions.ca).
   */
  reload(next: MeshcertConfig, ca?: CaSnapshot): Promise<void>;
  /** Graceful: NOT_SERVING, drain in-flight calls, release timers and files. */
  close(): Promise<void>;
  /** Hands the sink the pending count of refusals not audited one by one (a worker about to exit). */
  flushAudit(): void;
  /** Logs "meshcert serving" with what this process serves (see StartOptions.announce). */
  announce(): void;
}

export interface StartOptions {
  readonly logger: Logger;
  readonly observer?: IssuanceObserver;
  /** Request metrics (Citadel names); registered by the caller so it can expose or aggregate them. */
  readonly metrics?: CaMetrics;
  /** Where issued certificates and audit events go (inventory). */
  readonly sink?: RecordSink;
  /** See AuthorityDeps.signatures; default: 'pool' with more than one core, else 'inline' (cluster workers pass 'inline'). */
  readonly signatures?: 'pool' | 'inline';
  /** Cluster workers: the primary listens on `port` and hands over connections (acceptConnection). */
  readonly handedConnections?: { readonly port: number };
  /** Called when this process becomes short of memory and when it recovers (overload.heapLimitRatio). */
  readonly onMemoryPressure?: (high: boolean) => void;
  /** This process's share of the replica's audit-row budget for unauthenticated refusals (1/workers). */
  readonly auditShare?: number;
  /** Streams per connection as `serve` resolved server.maxConcurrentStreams (default: resolved here). */
  readonly maxConcurrentStreams?: number;
  /** Log "meshcert serving" once listening (default true); `serve` in one process says it itself, once all of it has started. */
  readonly announce?: boolean;
  /** Cluster workers: the CAs in force as the primary loaded them, used instead of their files (which may have changed since). */
  readonly ca?: CaSnapshot;
}

/**
 * Builds the per-cluster authenticator lists from config; refuses a config that would accept
 * nobody. `previous` (a reload): the build in force, whose authenticators built from the same
 * settings are taken over as they are (with their keys, and the API server's) rather than made again.
 */
export async function buildAuthChain(
  config: MeshcertConfig,
  /** The state in force (swapped by a reload): the roots client certificates chain to, and the revocations. */
  current: () => Pick<CaState, 'issuers' | 'revocations'>,
  logger: Logger,
  metrics?: CaMetrics,
  previous?: BuiltAuth,
  /** Builds retired before `previous` (closed): their JWKS key sets are taken by a rebuilt authenticator that has none (a rejected reload rolled back). */
  retired: readonly BuiltAuth[] = [],
): Promise<BuiltAuth> {
  // Before anything starts: a config that would accept nobody is refused as `config check` refuses it.
  assertServable(config, 'the configuration');
  const parts: AuthPart[] = [];
  const reused = new Map((previous?.parts ?? []).map((p) => [p.key, p]));
  /** The authenticator `key` names in the build before, else a new one from `make`. */
  const part = async <A extends JwtAuthenticator | TokenReviewAuthenticator>(key: string, make: () => Promise<A>): Promise<A> => {
    const held = reused.get(key);
    if (held) {
      parts.push(held);
      return held.authenticator as A;
    }
    const made = await make();
    parts.push({ key, authenticator: made, close: () => made.close() });
    return made;
  };
  /** A failed build closes what it made, not what it took over from the build in force. */
  const closeMade = (): void => parts.forEach((p) => (reused.get(p.key) === p ? undefined : p.close()));
  const jwts: JwtAuthenticator[] = [];
  const reviews: TokenReviewAuthenticator[] = [];
  // A client may send its leaf alone, so our own intermediates are anchors too (a leaf they signed
  // is ours by construction); one from another intermediate under our roots comes with it. Either
  // way, only for the trust domains this CA serves (trust domains are restart-only).
  const trustDomains = servedTrustDomains(config);
  const clientCert = config.auth.clientCertificates
    ? new ClientCertAuthenticator({ roots: () => current().issuers.anchors, revocations: () => current().revocations, trustDomains })
    : undefined;
  const clusters = new Map<string, Authenticator[]>();
  const clusterConfigs = [...config.auth.clusters];
  // The API server's service-account keys are read again every 30 s while tokens arrive and the
  // reads fail (RBAC, say), and every 5 minutes: counted each time, a warning at most every 10 minutes.
  const keysFailureReporter = (label: string): ((err: Error) => void) => {
    // At 0 from the start, as each JWT issuer's series below (increase() cannot see a first sample).
    if (metrics) zeroSeries(metrics.jwksRefreshFailures, 'issuer', [label]);
    const warnings = new LogThrottle(600_000);
    return (err) => {
      metrics?.jwksRefreshFailures.inc({ issuer: label });
      const unsaid = warnings.take();
      logger[unsaid === undefined ? 'debug' : 'warn'](
        { issuer: label, err, ...(unsaid ? { failedSinceLastWarning: unsaid } : {}) },
        "cannot read the Kubernetes API server's service-account keys: tokens whose key is not held go to TokenReview unchecked (tokenReview.verifySignatures: false stops these reads where the API server does not publish its keys)",
      );
    };
  };
  if (config.dev.tokenIssuer) {
    const dev = await ensureDevIssuer(config.dataDir);
    const existing = clusterConfigs.findIndex((c) => c.name === config.auth.defaultCluster);
    const devRule = { issuer: dev.issuer, audiences: ['istio-ca'], jwksFile: dev.jwksFile };
    if (existing >= 0) {
      const c = clusterConfigs[existing]!;
      clusterConfigs[existing] = { ...c, jwt: [...c.jwt, devRule] };
    } else {
      clusterConfigs.push({ name: config.auth.defaultCluster, jwt: [devRule], tokenReview: undefined, trustDomain: undefined });
    }
    logger.warn({ jwksFile: dev.jwksFile }, 'DEV MODE: trusting tokens from the local development issuer; never use this in production');
  }
  const previousJwts = [previous, ...retired].flatMap((b) => (b?.parts ?? []).flatMap((p) => (p.authenticator instanceof JwtAuthenticator ? [p.authenticator] : [])));
  for (const c of clusterConfigs) {
    const trustDomain = c.trustDomain ?? config.trustDomain;
    const list: Authenticator[] = [];
    if (clientCert) list.push(clientCert);
    try {
      if (c.jwt.length > 0) {
        const issuers: JwtIssuerOptions[] = c.jwt.map((j) => ({
          issuer: j.issuer,
          audiences: [...j.audiences],
          ...(j.jwksUri ? { jwksUri: j.jwksUri } : { jwksFile: j.jwksFile! }),
          clockSkewSeconds: config.auth.clockSkew,
          trustDomain,
        }));
        if (metrics) zeroSeries(metrics.jwksRefreshFailures, 'issuer', issuers.map((i) => i.issuer));
        const jwt = await part(JSON.stringify(['jwt', c.name, issuers]), async () => {
          const made = new JwtAuthenticator({
            issuers,
            onRefreshFailure: (iss, err) => {
              metrics?.jwksRefreshFailures.inc({ issuer: iss });
              logger.warn({ issuer: iss, err }, 'JWKS refresh failed; keeping the last good keys');
            },
          });
          made.adoptKeys(previousJwts);
          await made.start();
          return made;
        });
        list.push(jwt);
        jwts.push(jwt);
      }
      const review = c.tokenReview;
      if (review) {
        const settings = { ...review, trustDomain, clockSkew: config.auth.clockSkew };
        const tr = await part(JSON.stringify(['tokenreview', c.name, settings]), async () => {
          const made = new TokenReviewAuthenticator({
            ...(review.apiServer ? { apiServer: review.apiServer } : {}),
            ...(review.caFile ? { caFile: review.caFile } : {}),
            ...(review.tokenFile ? { tokenFile: review.tokenFile } : {}),
            audiences: [...review.audiences],
            trustDomain,
            timeoutMs: review.timeout * 1000,
            clockSkewSeconds: config.auth.clockSkew,
            verifySignatures: review.verifySignatures,
            onKeysFailure: keysFailureReporter(`tokenreview:${c.name}`),
          });
          made.start();
          return made;
        });
        list.push(tr);
        reviews.push(tr);
      }
    } catch (e) {
      closeMade();
      // A JWKS file that is missing or not a key set, a JWKS URL that does not answer at start,
      // an unreadable TokenReview credential: the operator's to fix, so a ConfigError (exit 1).
      throw e instanceof ConfigError ? e : new ConfigError(`auth.clusters "${c.name}": ${e instanceof Error ? e.message : String(e)}`, { cause: e });
    }
    clusters.set(c.name, list);
  }
  let defaultCluster: string;
  let chain: AuthChain;
  try {
    defaultCluster = effectiveDefaultCluster(config, clusters.keys());
    chain = new AuthChain({
      clusters,
      defaultCluster,
      // A new build starts with an empty cache: a verdict of an issuer removed must not outlive it.
      cache: config.auth.tokenCache.maxEntries > 0 ? new TokenCache({ maxEntries: config.auth.tokenCache.maxEntries, maxTtlMs: config.auth.tokenCache.maxTtl * 1000 }) : false,
      clientCertificates: config.auth.clientCertificates,
      ...(clientCert ? { clientCertificate: clientCert } : {}),
    });
  } catch (e) {
    // Not expected (assertServable ran first), but a throw here must not leave refresh timers running.
    closeMade();
    throw e;
  }
  return {
    chain,
    defaultCluster,
    parts,
    // A jwksFile is re-read on a reload (the issuer's keys rotate; a withdrawn key must stop
    // working), and so is a TokenReview's CA bundle (the cluster's CA rotates). All are read
    // before any is put in force: one that cannot be read fails the reload with the reason, and
    // every authenticator keeps what it had.
    prepareKeyFiles: () => {
      let commits: Array<() => void>;
      try {
        commits = [...jwts.map((j) => j.prepareReload()), ...reviews.map((r) => r.prepareReload())];
      } catch (e) {
        throw new ConfigError(`auth: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
      }
      return () => commits.forEach((commit) => commit());
    },
  };
}


export async function startMeshcert(config: MeshcertConfig, o: StartOptions): Promise<RunningMeshcert> {
  const { logger } = o;
  let state = await loadCaState(config, logger, o.ca ? { inForce: o.ca } : {});
  const served = servedClusterNames(config);
  const issuers = (): IssuerRegistry => state.issuers;
  const currentIssuer = (): LocalIssuer => state.issuers.default;
  for (const i of state.issuers.all) {
    logger.info({ issuer: i.name, subject: oneLine(i.material.signingCert.subject), notAfter: i.notAfter.toISOString(), roots: i.material.roots.length }, 'CA loaded');
  }
  const closers: Array<() => void | Promise<void>> = [];
  const auth = new AuthInForce(await buildAuthChain(config, () => state, logger, o.metrics));
  closers.push(() => auth.close());
  /** The authentication settings in force (revoked client certificates aside: the CA state holds them). */
  let authSettings = authenticationSettings(config);
  // Reloads keep the clusters served (restart-only.ts), so the default cluster stays this one.
  const defaultCluster = auth.built.defaultCluster;
  const nodeAuthorizer = config.ambient.enabled ? await startNodeAuthorization(config, defaultCluster, logger, closers) : undefined;
  const sink = o.sink;
  const slicer = new WorkSlicer();
  const authority = new Authority({
    authenticate: (req) => auth.authenticate(req),
    schedule: (work) => slicer.run(work),
    // On the thread pool only when there is a second core for it to use.
    signatures: o.signatures ?? (usableCpus() > 1 ? 'pool' : 'inline'),
    issuers,
    policy: () => state.policy,
    options: {
      backdate: config.issuance.backdate,
      defaultCluster,
      trustDomainGroup: config.trustDomainAliases.length ? [config.trustDomain, ...config.trustDomainAliases] : [],
      certificateCluster: (td) => certificateCluster(config, served, td),
    },
    ...(sink ? { beforeSign: () => assertInventoryAccepting(sink) } : {}),
    ...(config.overload.perIdentity ? { rateLimit: new IdentityRateLimiter(config.overload.perIdentity) } : {}),
    ...(nodeAuthorizer ? { nodeAuthorizer } : {}),
  });
  const limiter = new InFlightLimiter(config.overload.maxInFlight, config.overload.maxInFlightBytes);
  const pressure = config.overload.heapLimitRatio > 0 ? new HeapPressure({ highRatio: config.overload.heapLimitRatio }) : undefined;
  let shortOfMemory = false;
  pressure?.onSample((high, s) => {
    if (high && !shortOfMemory) {
      const mb = (n: number): number => Math.round(n / 2 ** 20);
      logger.warn({ oldGenerationMb: mb(s.oldUsed), limitMb: mb(s.oldLimit) }, 'memory is short: refusing new connections and calls, closing idle connections');
    }
    if (high !== shortOfMemory) o.onMemoryPressure?.(high);
    shortOfMemory = high;
    o.metrics?.memoryPressure.set(high ? 1 : 0);
  });
  const admit = admitUnlessShortOfMemory(pressure, (bytes) => limiter.admit(bytes));
  const caMetrics = (): void => o.metrics?.setCas(state.issuers.all.map((i) => ({ name: i.name, roots: i.material.roots, intermediates: i.material.intermediates })));
  caMetrics();
  // inventory.failClosed: a certificate is answered only once its record is stored (see keepRecord).
  const keep = sink && config.inventory.failClosed ? keepRecord(sink, logger, { onUndelivered: () => o.metrics?.undelivered.inc() }) : undefined;
  const audit = sink && inventoryObserver(sink, Date.now, o.auditShare ?? 1, { issuedKept: keep !== undefined });
  const observers = [o.metrics?.observer(), audit, o.observer].filter((x): x is IssuanceObserver => x !== undefined);

  const health = new HealthService([CA_SERVICE_NAME]);
  // The serving certificate's renewals update the listener created with its first value.
  const listener: { current?: GrpcServer } = {};
  const servingExpiry = (notAfter: Date): void => o.metrics?.setServingExpiry(notAfter);
  // A serving certificate meshcert issues itself (no server.tls.certFile) is recorded as any it issues.
  const recordOwn = sink && !config.server.tls.certFile ? ownCertificateRecorder((r) => sink.record(r), SERVING_CERT_REQUESTER, logger) : undefined;
  const recordServing = (m: ServingMaterial): void => recordOwn?.(splitPemCertificates(m.certChainPem)[0] ?? '', currentIssuer().name);
  const serving = ServingCertificate.start(config.server.tls, currentIssuer, logger, (m) => {
    // Throws when the listener refuses the pair: the metric then keeps the one in force.
    listener.current?.updateTls({ certChainPem: m.certChainPem, keyPem: m.keyPem, clientCaPem: state.issuers.anchorsPem });
    servingExpiry(m.notAfter);
    recordServing(m);
  });
  servingExpiry(serving.current.notAfter);
  recordServing(serving.current);
  let closing = false;
  // Not health.serving: during server.shutdownDelay health reports NOT_SERVING while calls are served.
  let started = false;
  const certificates = { authority, logger, observer: fanOut(observers), ready: () => started && !closing, stopping: () => closing, ...(keep ? { keep } : {}) };
  // Here, not in CaMetrics: the reasons are the gRPC server's, which a cluster primary never loads.
  if (o.metrics) {
    zeroSeries(o.metrics.connectionsShed, 'reason', CONNECTION_SHED_REASONS);
    zeroSeries(o.metrics.errorStatuses, 'code', ERROR_STATUS_NAMES);
  }
  const streams = o.maxConcurrentStreams ?? concurrentStreams(config.server.maxConcurrentStreams);
  const server = new GrpcServer(
    {
      listen: config.server.listen,
      ...(o.handedConnections ? { handedConnections: o.handedConnections } : {}),
      maxRequestBytes: config.server.maxRequestBytes,
      shutdownGrace: config.server.shutdownGrace,
      maxConcurrentStreams: streams,
      handshakeTimeout: config.server.handshakeTimeout,
      requestReadTimeout: config.server.requestReadTimeout,
      idleTimeout: config.server.idleTimeout,
      maxConnections: config.server.maxConnections,
      // The same budget for requests still arriving as for admitted ones (both are request bytes held).
      maxUploadBytes: config.overload.maxInFlightBytes,
      memoryPressure: pressure,
      onConnectionShed: (reason) => o.metrics?.connectionsShed.inc({ reason }),
      onErrorStatusSent: (code) => o.metrics?.errorStatuses.inc({ code: statusName(code) }),
    },
    { certChainPem: serving.current.certChainPem, keyPem: serving.current.keyPem, clientCaPem: state.issuers.anchorsPem },
    logger,
  )
    .unary(
      methodCodec<IstioCertificateRequestMsg, IstioCertificateResponseMsg>(CERTIFICATE_SERVICE, 'CreateCertificate'),
      createCertificateHandler(certificates),
      { admit: certificateAdmission(certificates, admit), shed: certificateShed(certificates) },
    )
    .unary(methodCodec<HealthCheckRequest, HealthCheckResponse>(HEALTH_SERVICE, 'Check'), (req) => health.check(req))
    .serverStream(methodCodec<HealthCheckRequest, HealthCheckResponse>(HEALTH_SERVICE, 'Watch'), (req, _call, stream) => health.watch(req, stream));
  listener.current = server;
  const port = await server.start();
  // The timer only once listening (a failed start leaves none behind); reads of `high` sample anyway.
  pressure?.start();
  health.setAll('SERVING');
  started = true;
  const announce = (): void => logger.info({ listen: config.server.listen, port, trustDomain: config.trustDomain, servingCert: serving.current.source, ambient: config.ambient.enabled, maxConcurrentStreams: streams }, 'meshcert serving');
  if (o.announce !== false) announce();

  // Two reloads never overlap (each builds from the authentication in force, which the other swaps).
  const oneReloadAtATime = inOrder();
  async function reload(next: MeshcertConfig, ca?: CaSnapshot): Promise<void> {
    // Build everything first; a failure leaves the running state untouched.
    const fresh = await loadCaState(next, logger, { reload: true, ...(ca ? { inForce: ca } : {}) });
    // Authentication is built again only when its settings changed (an issuer removed, say):
    // unchanged authenticators are taken over with their keys, and the token cache starts empty.
    // Built before the serving pair is taken: the build may wait seconds on a key set's first
    // read, and a renewal of the serving certificate meanwhile must not be undone by the swap.
    const nextAuth = isDeepStrictEqual(authenticationSettings(next), authSettings) ? undefined : await buildAuthChain(next, () => state, logger, o.metrics, auth.built, auth.retired ? [auth.retired] : []);
    // Nothing is awaited from here to the swap.
    let reissued: ReturnType<typeof serving.prepareReissue> | undefined;
    let identity: ServingIdentity;
    let trustedNodeAccounts: (() => void) | undefined;
    let keyFilesInForce: () => void;
    try {
      const signerChanged = fresh.issuers.default.material.signingCert.fingerprint256 !== state.issuers.default.material.signingCert.fingerprint256;
      // A serving certificate from the new signer when meshcert issues its own (operator files
      // stay), and the listener's context with the new anchors: both checked before the swap, so
      // that a failure leaves every part of the running state as it was.
      reissued = signerChanged ? serving.prepareReissue(fresh.issuers.default) : undefined;
      identity = { ...(reissued?.material ?? serving.current), clientCaPem: fresh.issuers.anchorsPem };
      checkServingIdentity(identity);
      trustedNodeAccounts = nodeAuthorizer?.prepareTrustedNodeAccounts(next.ambient.trustedNodeAccounts);
      keyFilesInForce = (nextAuth ?? auth.built).prepareKeyFiles();
    } catch (e) {
      if (nextAuth) closeUnshared(nextAuth, auth.built);
      throw e;
    }
    state = fresh;
    keyFilesInForce();
    if (nextAuth) {
      auth.swap(nextAuth);
      authSettings = authenticationSettings(next);
    }
    trustedNodeAccounts?.();
    caMetrics();
    // The new anchors at once (client certificates from a new intermediate), with the new pair.
    server.updateTls({ certChainPem: identity.certChainPem, keyPem: identity.keyPem, clientCaPem: identity.clientCaPem });
    reissued?.commit();
    // `rules`: the configured ones, as config check counts them (ruleNames ends with the default).
    logger.info({ issuers: fresh.issuers.all.map((i) => i.name), rules: fresh.policy.ruleNames.length - 1, roots: fresh.issuers.roots.length, revokedClientCertificates: fresh.revocations.size, authentication: nextAuth ? 'rebuilt' : 'unchanged' }, 'configuration reloaded');
  }

  return {
    port,
    issuer: currentIssuer,
    issuers,
    health,
    acceptConnection: (socket) => server.acceptConnection(socket),
    reload: (next: MeshcertConfig, ca?: CaSnapshot) => oneReloadAtATime(() => reload(next, ca)),
    flushAudit: () => audit?.flush(),
    announce,
    async close() {
      closing = true;
      health.setAll('NOT_SERVING');
      health.endWatches();
      try {
        await server.shutdown();
      } finally {
        // The count of refusals not recorded one by one, before the sink is flushed and closed.
        audit?.flush();
      }
      pressure?.stop();
      serving.close();
      for (const c of closers) await c();
    },
  };
}

/** What buildAuthChain reads from a config, less the revoked client certificates (part of the CA state). */
function authenticationSettings(config: MeshcertConfig): unknown {
  return { auth: { ...config.auth, revokedClientCertificates: [] }, dev: config.dev, trustDomain: config.trustDomain, trustDomainAliases: config.trustDomainAliases, dataDir: config.dataDir };
}

/** Closes what a build made that the build in force does not hold (a reload failed after building it). */
function closeUnshared(built: BuiltAuth, inForce: BuiltAuth): void {
  const held = new Set(inForce.parts.map((p) => p.authenticator));
  for (const p of built.parts) if (!held.has(p.authenticator)) p.close();
}

/** Ambient mode: a watch-backed pod cache and the node authorizer that reads it. */
async function startNodeAuthorization(config: MeshcertConfig, cluster: string, logger: Logger, closers: Array<() => void | Promise<void>>): Promise<NodeAuthorizer> {
  const source = kubeSource(config);
  // Loaded only in ambient mode: @kubernetes/client-node costs ~60 MB per process.
  const [{ createKubeClient, PROMPT_WATCH }, { PodCache }, { NodeAuthorizer }, { KubeLivePods }] = await Promise.all([
    import('./k8s/client.js'),
    import('./k8s/pod-cache.js'),
    import('./k8s/node-authorizer.js'),
    import('./k8s/live-pods.js'),
  ]);
  const kube = fromKubeSettings(() => createKubeClient(source, { watch: PROMPT_WATCH }));
  const pods = new PodCache({ client: kube, log: logger });
  closers.push(() => pods.stop());
  // Not fatal: until the cache syncs, impersonated requests get UNAVAILABLE (retried), never a denial.
  await pods.start().catch((err: unknown) => logger.error({ err }, 'pod cache could not sync yet; ambient requests get UNAVAILABLE until it does'));
  // The API server reached is the default cluster's: only its node proxies can be checked, in its trust domain.
  const trustDomain = clusterTrustDomain(config, cluster);
  return new NodeAuthorizer({ pods, live: new KubeLivePods(kube.core), trustedNodeAccounts: config.ambient.trustedNodeAccounts, trustDomain, cluster });
}

/** inventory.failClosed: refuse before signing while records cannot be kept. */
function assertInventoryAccepting(sink: RecordSink): void {
  if (!sink.accepting()) {
    throw new CaError('ISSUER_UNAVAILABLE', 'the certificate inventory is unavailable and this CA is configured to fail closed; retry shortly');
  }
}
