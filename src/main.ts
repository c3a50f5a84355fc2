/**
 * Composition root: turns a validated config into running parts and wires them together.
 * The only module that knows every other one.
 */
import { generateKeyPairSync } from 'node:crypto';
import { AuthChain } from './auth/chain.js';
import { ClientCertAuthenticator } from './auth/client-cert.js';
import { JwtAuthenticator, type JwtIssuerOptions } from './auth/jwt.js';
import { TokenCache } from './auth/token-cache.js';
import { TokenReviewAuthenticator } from './auth/tokenreview.js';
import type { Authenticator } from './auth/types.js';
import { Authority } from './authority/authority.js';
import { IdentityRateLimiter, InFlightLimiter } from './authority/overload.js';
import { initCaDir } from './ca/init.js';
import { isCaDirEmpty, loadCaDir } from './ca/material.js';
import type { MeshcertConfig } from './config/schema.js';
import { ensureDevIssuer } from './dev/token-issuer.js';
import { CaError, ConfigError } from './errors/ca-error.js';
import { fanOut, type IssuanceObserver } from './authority/observer.js';
import { certificateServiceImpl } from './grpc/certificate-service.js';
import { inventoryObserver, type RecordSink } from './inventory/sink.js';
import type { CaMetrics } from './metrics/ca-metrics.js';
import { HealthService } from './grpc/health.js';
import { GrpcServer } from './grpc/server.js';
import { ReloadableServerCredentials } from './grpc/tls.js';
import { LocalIssuer } from './issuer/local.js';
import type { Logger } from './log/logger.js';
import { ServingCertificate } from './serving/serving-cert.js';

export const CA_SERVICE_NAME = 'istio.v1.auth.IstioCertificateService';

export interface RunningMeshcert {
  readonly port: number;
  readonly issuer: () => LocalIssuer;
  readonly health: HealthService;
  /** Graceful: NOT_SERVING, drain in-flight calls, release timers and files. */
  close(): Promise<void>;
}

export interface StartOptions {
  readonly logger: Logger;
  readonly observer?: IssuanceObserver;
  /** Request metrics (Citadel names); registered by the caller so it can expose or aggregate them. */
  readonly metrics?: CaMetrics;
  /** Where issued certificates and audit events go (inventory). */
  readonly sink?: RecordSink;
}

/** Loads (or, with ca.autoInit, creates) the CA and checks it can sign a verifiable chain. */
export async function loadIssuer(config: MeshcertConfig, logger: Logger): Promise<LocalIssuer> {
  const dir = config.ca.dir!;
  if (isCaDirEmpty(dir)) {
    if (!config.ca.autoInit) {
      throw new ConfigError(`CA directory ${dir} is empty: run "meshcert ca init --dir ${dir}", mount Istio's cacerts there, or set ca.autoInit: true`);
    }
    await initCaDir({ dir, keyType: config.ca.keyType });
    logger.warn({ dir, keyType: config.ca.keyType }, 'created a new root and intermediate CA (ca.autoInit); move root-key.pem offline for production use');
  }
  const issuer = new LocalIssuer('default', loadCaDir(dir));
  const probe = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'der' });
  issuer.selfTest(probe, `spiffe://${config.trustDomain}/ns/meshcert-self-test/sa/probe`);
  return issuer;
}

/**
 * State that must exist once before workers start (they would race to create it):
 * the CA under ca.autoInit, and the dev issuer's key.
 */
export async function prepareSharedState(config: MeshcertConfig, logger: Logger): Promise<LocalIssuer> {
  const issuer = await loadIssuer(config, logger);
  if (config.dev.tokenIssuer) await ensureDevIssuer(config.dataDir);
  return issuer;
}

/** Builds the per-cluster authenticator lists from config; refuses a config that would accept nobody. */
export async function buildAuthChain(config: MeshcertConfig, issuer: () => LocalIssuer, logger: Logger, metrics?: CaMetrics): Promise<{ chain: AuthChain; close: () => void }> {
  const closers: Array<() => void> = [];
  const clientCert = config.auth.clientCertificates
    ? // grpc-js exposes only the peer's leaf, so our own intermediates are trusted as anchors too:
      // a leaf they signed is ours by construction.
      new ClientCertAuthenticator({ roots: () => [...issuer().material.intermediates, ...issuer().material.roots] })
    : undefined;
  const clusters = new Map<string, Authenticator[]>();
  const clusterConfigs = [...config.auth.clusters];
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
  for (const c of clusterConfigs) {
    const trustDomain = c.trustDomain ?? config.trustDomain;
    const list: Authenticator[] = [];
    if (clientCert) list.push(clientCert);
    if (c.jwt.length > 0) {
      const issuers: JwtIssuerOptions[] = c.jwt.map((j) => ({
        issuer: j.issuer,
        audiences: [...j.audiences],
        ...(j.jwksUri ? { jwksUri: j.jwksUri } : { jwksFile: j.jwksFile! }),
        clockSkewSeconds: config.auth.clockSkew,
        trustDomain,
      }));
      const jwt = new JwtAuthenticator({
        issuers,
        onRefreshFailure: (iss, err) => {
          metrics?.jwksRefreshFailures.inc({ issuer: iss });
          logger.warn({ issuer: iss, err }, 'JWKS refresh failed; keeping the last good keys');
        },
      });
      await jwt.start();
      closers.push(() => jwt.close());
      list.push(jwt);
    }
    if (c.tokenReview) {
      const tr = new TokenReviewAuthenticator({
        ...(c.tokenReview.apiServer ? { apiServer: c.tokenReview.apiServer } : {}),
        ...(c.tokenReview.caFile ? { caFile: c.tokenReview.caFile } : {}),
        ...(c.tokenReview.tokenFile ? { tokenFile: c.tokenReview.tokenFile } : {}),
        audiences: [...c.tokenReview.audiences],
        trustDomain,
        timeoutMs: c.tokenReview.timeout * 1000,
      });
      closers.push(() => tr.close());
      list.push(tr);
    }
    if (list.length === (clientCert ? 1 : 0) && !clientCert) {
      throw new ConfigError(`auth.clusters "${c.name}" has no authenticator: add jwt issuers or tokenReview`);
    }
    clusters.set(c.name, list);
  }
  if (clusters.size === 0) {
    throw new ConfigError('no authentication configured: add auth.clusters with jwt issuers or tokenReview (or run "meshcert serve --dev" locally)');
  }
  const chain = new AuthChain({
    clusters,
    ...(clusters.has(config.auth.defaultCluster) ? { defaultCluster: config.auth.defaultCluster } : {}),
    cache: config.auth.tokenCache.maxEntries > 0 ? new TokenCache({ maxEntries: config.auth.tokenCache.maxEntries, maxTtlMs: config.auth.tokenCache.maxTtl * 1000 }) : false,
  });
  return { chain, close: () => closers.forEach((c) => c()) };
}

export async function startMeshcert(config: MeshcertConfig, o: StartOptions): Promise<RunningMeshcert> {
  const { logger } = o;
  let issuer = await loadIssuer(config, logger);
  const currentIssuer = (): LocalIssuer => issuer;
  logger.info(
    { issuer: issuer.name, subject: issuer.material.signingCert.subject.replace(/\n/g, ', '), notAfter: issuer.notAfter.toISOString(), roots: issuer.material.roots.length },
    'CA loaded',
  );
  const auth = await buildAuthChain(config, currentIssuer, logger, o.metrics);
  const sink = o.sink;
  const authority = new Authority({
    authenticate: (req) => auth.chain.authenticate(req),
    issuer: currentIssuer,
    options: config.issuance,
    ...(sink ? { beforeSign: () => assertInventoryAccepting(sink) } : {}),
    ...(config.overload.perIdentity ? { rateLimit: new IdentityRateLimiter(config.overload.perIdentity) } : {}),
  });
  const limiter = new InFlightLimiter(config.overload.maxInFlight);
  o.metrics?.setCaExpiry(issuer.name, issuer.material.roots, issuer.material.intermediates);
  const observers = [o.metrics?.observer(), sink && inventoryObserver(sink), o.observer].filter((x): x is IssuanceObserver => x !== undefined);

  const health = new HealthService([CA_SERVICE_NAME]);
  // The serving certificate's renewals update the credentials created from its first value.
  const creds: { current?: ReloadableServerCredentials } = {};
  const servingExpiry = (notAfter: Date): void => o.metrics?.caExpiry.set({ issuer: issuer.name, role: 'serving', subject: 'meshcert serving certificate' }, notAfter.getTime() / 1000);
  const serving = ServingCertificate.start(config.server.tls, currentIssuer, logger, (m) => {
    servingExpiry(m.notAfter);
    creds.current?.update({ certChainPem: m.certChainPem, keyPem: m.keyPem, clientCaPem: issuer.material.rootBundlePem });
  });
  servingExpiry(serving.current.notAfter);
  const credentials = new ReloadableServerCredentials({
    certChainPem: serving.current.certChainPem,
    keyPem: serving.current.keyPem,
    clientCaPem: issuer.material.rootBundlePem,
  });
  creds.current = credentials;
  let closing = false;
  const server = new GrpcServer(
    { listen: config.server.listen, maxRequestBytes: config.server.maxRequestBytes, shutdownGrace: config.server.shutdownGrace },
    certificateServiceImpl({ authority, logger, observer: fanOut(observers), ready: () => !closing && health.serving, admit: () => limiter.admit() }),
    health,
    credentials,
    logger,
  );
  const port = await server.start();
  health.setAll('SERVING');
  logger.info({ listen: config.server.listen, port, trustDomain: config.trustDomain, servingCert: serving.current.source }, 'meshcert serving');

  return {
    port,
    issuer: currentIssuer,
    health,
    async close() {
      closing = true;
      await server.shutdown();
      serving.close();
      auth.close();
      // Release the reference so a reload-in-progress cannot swap it back in.
      issuer = currentIssuer();
    },
  };
}

/** inventory.failClosed: refuse before signing while records cannot be kept. */
function assertInventoryAccepting(sink: RecordSink): void {
  if (!sink.accepting()) {
    throw new CaError('ISSUER_UNAVAILABLE', 'the certificate inventory is unavailable and this CA is configured to fail closed; retry shortly');
  }
}
