/**
 * Runs a configured meshcert: in one process (server.workers: 1) or as a primary with one worker
 * per CPU. Whichever process owns the inventory store also runs the admin server and the expiry
 * monitor, so there is one store writer and one /metrics endpoint per replica.
 */
import { AggregatorRegistry, Registry } from 'prom-client';
import { startAdminServer, type ReadinessCheck } from '../admin/server.js';
import type { MeshcertConfig } from '../config/schema.js';
import { InventoryService } from '../inventory/service.js';
import type { Logger } from '../log/logger.js';
import { caSnapshot, loadCaState, prepareSharedState } from '../ca/state.js';
import { CaMetrics, ControllerMetrics, InventoryMetrics, ReloadMetrics, WorkerMetrics } from '../metrics/ca-metrics.js';
import { caDirectories } from '../config/load.js';
import { reloadedConfig } from '../config/restart-only.js';
import { ensureDevIssuer } from '../dev/token-issuer.js';
import { Reloader } from './reload.js';
import { startControllers } from './controllers.js';
import type { IssuerRegistry } from '../issuer/registry.js';
import { ExpiryMonitor, type ExpiryMonitorOptions } from '../monitoring/expiry-monitor.js';
import { startWorkers } from './cluster.js';
import { servingShape, shapeNotices } from './auto-shape.js';
import { inventoryIntake } from './inventory-intake.js';

/** How long a scrape waits for each worker's metrics (Prometheus's default scrape timeout is 10 s). */
const WORKER_METRICS_TIMEOUT_MS = 2_000;
/** The inventory flush at shutdown ends by server.shutdownGrace plus this after the drain began. */
const FLUSH_MARGIN_MS = 8_000;

export interface RunningServer {
  readonly port: number;
  readonly adminPort: number | undefined;
  readonly workers: number;
  /** Re-reads the config and applies it now; false when it was rejected. */
  reload(reason?: string): Promise<boolean>;
  /** Queues a reload: debounced, after any reload under way; false once the server is stopping (none then). */
  requestReload(reason: string): boolean;
  /** Stops, after server.shutdownDelay (reporting not ready meanwhile, still serving). */
  close(): Promise<void>;
  /** Ends a shutdown delay under way now; false when none is. */
  endShutdownDelay(): boolean;
}

export interface RunServerOptions {
  /** The config file, re-read on SIGHUP and when it changes (hot reload of policy, issuers and authentication). */
  readonly configFile?: string;
  /** The config file's text `config` was read from (see ReloadOptions.loadedText). */
  readonly configText?: string;
}

export async function runServer(config: MeshcertConfig, logger: Logger, opts: RunServerOptions = {}): Promise<RunningServer> {
  // Resolved once, here: the workers are sent this shape rather than reading the cgroup again.
  const shape = servingShape(config.server);
  const { workers: count, maxConcurrentStreams: streams } = shape;
  for (const n of shapeNotices(config.server)) logger[n.level](n.fields, n.message);
  const registry = new Registry();
  const invMetrics = new InventoryMetrics(registry);
  const inventory = await InventoryService.open(config.inventory, logger, invMetrics);
  if (!inventory) invMetrics.withoutStore();
  const monitor = new ExpiryMonitor(monitorOptions(config), logger, invMetrics, inventory?.store);

  let port: number;
  // Until the CA is loaded and the gRPC server listens, /metrics has the primary's own and
  // /readyz says what is still starting.
  let metricsText: () => Promise<string> = () => registry.metrics();
  let caLoaded = false;
  let grpcReady: () => ReadinessCheck = () => ({ name: 'grpc', ok: false, detail: 'starting' });
  let stopServing: () => Promise<void>;
  let applyConfig: (next: MeshcertConfig) => Promise<void>;
  let issuers: () => IssuerRegistry;
  /** gRPC health turns NOT_SERVING in every serving process; calls are still served. */
  let reportDraining: () => void;
  /** Says "meshcert serving": once all of it has started (controllers, reloader), not before. */
  let announce: () => void;
  let controllers: Awaited<ReturnType<typeof startControllers>> | undefined = undefined;
  let current = config;
  /** What the last reload put in force (`current` less what only a restart applies). */
  let inForce = config;
  const reloader = new Reloader({
    ...(opts.configFile ? { configFile: opts.configFile } : {}),
    ...(opts.configText === undefined ? {} : { loadedText: opts.configText }),
    current: () => current,
    apply: async (next) => {
      // What a reload changes, and nothing else: workers started later must match those running.
      const effective = reloadedConfig(config, next, inForce);
      // The development token issuer turned on: its key made here, once, not by each worker at once.
      if (effective.dev.tokenIssuer) await ensureDevIssuer(effective.dataDir);
      await applyConfig(effective);
      current = next;
      inForce = effective;
      monitor.update(monitorOptions(effective));
      controllers?.onRootBundleChanged();
    },
    logger,
    metrics: new ReloadMetrics(registry),
  });
  let draining = false;
  // The admin server first: a port already taken fails the start before any worker or CA work.
  let admin: Awaited<ReturnType<typeof startAdminServer>> | undefined;
  try {
    admin = config.admin.enabled
      ? await startAdminServer({
          listen: config.admin.listen,
          logger,
          ...(inventory ? { store: inventory.store } : {}),
          metrics: async () => ({ contentType: registry.contentType, body: await metricsText() }),
          readiness: async () => {
            const checks: ReadinessCheck[] = [{ name: 'ca', ok: caLoaded, detail: caLoaded ? 'loaded' : 'loading' }, grpcReady()];
            if (draining) checks.push({ name: 'shutdown', ok: false, detail: 'shutting down: still serving calls until server.shutdownDelay is over' });
            if (inventory) checks.push({ name: 'inventory', ...(await inventory.readiness()) });
            return checks;
          },
        })
      : undefined;
  } catch (e) {
    await inventory?.close().catch(() => {});
    throw e;
  }
  try {
    // The CA is made here if it is to be (ca.autoInit), before any process reads it; the files are
    // watched from then on, so that an edit while the server starts is not missed.
    await prepareSharedState(config, logger);
    reloader.watch();
    if (count === 1) {
      const caMetrics = new CaMetrics(registry);
      // The gRPC stack is loaded only by processes that serve it (not by a cluster primary).
      const { startMeshcert } = await import('../main.js');
      const running = await startMeshcert(config, { logger, metrics: caMetrics, announce: false, maxConcurrentStreams: streams, ...(inventory ? { sink: inventory } : {}) });
      port = running.port;
      announce = () => running.announce();
      grpcReady = () => ({ name: 'grpc', ok: running.health.serving, detail: running.health.serving ? 'serving' : 'not serving' });
      stopServing = () => running.close();
      reportDraining = () => running.health.setAll('NOT_SERVING');
      applyConfig = (next) => running.reload(next);
      issuers = running.issuers;
    } else {
      // The primary keeps its own view of the CAs for the controllers (root bundle, istiod-tls).
      let primaryState = await loadCaState(config, logger);
      issuers = () => primaryState.issuers;
      // Before the pool: a worker may die while the others start. A scrape may come before it
      // exists (the admin server is up while workers start): no worker has connections then.
      let connections: ConstructorParameters<typeof WorkerMetrics>[1] = () => [];
      const workerMetrics = new WorkerMetrics(registry, () => connections());
      const started = await startWorkers(config, caSnapshot(primaryState), logger, shape, {
        ...(inventory ? { onInventory: inventoryIntake(inventory, logger, { onDropped: (kind) => invMetrics.refusedFromWorkers.inc({ kind }) }) } : {}),
        accepting: () => inventory?.accepting() ?? true,
        onDeath: (how) => workerMetrics.deaths.inc({ how }),
      });
      connections = () => started.connections();
      port = started.port;
      metricsText = async () => {
        const { metrics, unanswered } = await started.workerMetrics(WORKER_METRICS_TIMEOUT_MS);
        workerMetrics.unanswered.set(unanswered);
        return `${await AggregatorRegistry.aggregate(metrics).metrics()}\n${await registry.metrics()}`;
      };
      grpcReady = () => ({ name: 'grpc', ok: started.serving() > 0, detail: `${started.serving()}/${count} workers serving` });
      stopServing = () => started.shutdown();
      reportDraining = () => started.draining();
      // Validate here first (CAs load, policy builds, revocations compile), then let every worker apply it.
      applyConfig = async (next) => {
        const fresh = await loadCaState(next, logger, { reload: true });
        await started.reload(next, caSnapshot(fresh));
        primaryState = fresh;
      };
      announce = () => logger.info({ listen: config.server.listen, port, maxConcurrentStreams: streams, workers: count }, 'meshcert serving');
    }
    caLoaded = true;
  } catch (e) {
    reloader.stop();
    await inventory?.close().catch(() => {});
    await admin?.close();
    throw e;
  }
  monitor.start();
  controllers = await startControllers(config, issuers, logger, inventory ? (rec) => inventory.record(rec) : undefined).catch(async (e: unknown) => {
    // What runs already stops; the reason the start failed stays the error (a failure while
    // stopping is logged: calls were served, and their records are being written).
    reloader.stop();
    monitor.stop();
    await stopServing().catch((err: unknown) => logger.error({ err }, 'cleanup after a failed start'));
    await inventory?.close().catch((err: unknown) => logger.error({ err }, 'inventory could not be flushed completely'));
    await admin?.close();
    throw e;
  });
  const running = controllers;
  if (running) new ControllerMetrics(registry, () => running.status());
  reloader.start();
  announce();

  /** Set while server.shutdownDelay runs: ends it early. */
  let endDelay: (() => void) | undefined;
  let closing: Promise<void> | undefined;
  const stopAll = async (): Promise<void> => {
    reloader.stop();
    monitor.stop();
    // Together: the drain must not wait for the lease release or a controller's reconcile, which
    // a slow API server can hold for seconds of the pod's termination grace.
    const drainStarted = Date.now();
    const stopped = await Promise.allSettled([controllers?.stop(), stopServing()]);
    // Workers have shipped their last records; write them all before exiting, ending by
    // shutdownGrace + FLUSH_MARGIN_MS after the drain began (at least a second): the pod's grace
    // period (shutdownDelay + shutdownGrace + 10 s in the manifests) then still holds the line
    // saying what was not written, even when workers took their 5 s margin past the grace.
    const flushDeadline = Math.max(1000, config.server.shutdownGrace * 1000 + FLUSH_MARGIN_MS - (Date.now() - drainStarted));
    // Records not written make the shutdown unclean (serve exits 1): a script or orchestrator
    // must be able to tell that certificates were issued that the inventory does not hold.
    let unwritten: unknown;
    await inventory?.close(flushDeadline).catch((err: unknown) => {
      unwritten = err;
      logger.error({ err }, 'inventory could not be flushed completely');
    });
    await admin?.close();
    const failed = stopped.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
    if (unwritten !== undefined) throw unwritten;
  };
  return {
    port,
    adminPort: admin?.port,
    workers: count,
    reload: (reason = 'requested') => reloader.reload(reason),
    requestReload: (reason) => reloader.trigger(reason),
    close() {
      // Once: a second close during the delay ends the delay and shares the one shutdown.
      if (closing) {
        endDelay?.();
        return closing;
      }
      closing = stopAfterDelay();
      return closing;
    },
    endShutdownDelay() {
      if (!endDelay) return false;
      endDelay();
      return true;
    },
  };

  async function stopAfterDelay(): Promise<void> {
    const delay = config.server.shutdownDelay;
    if (delay > 0) {
      // Kubernetes takes a terminating pod out of the Service's endpoints while clients are still
      // sent to it: report not ready, and go on serving until they have moved.
      draining = true;
      reportDraining();
      logger.info({ delaySeconds: delay }, 'shutdown delay: reporting not ready, still serving');
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, delay * 1000);
        endDelay = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      endDelay = undefined;
    }
    await stopAll();
  }
}

/** What the expiry monitor watches, from a config (at start and on every reload). */
function monitorOptions(config: MeshcertConfig): ExpiryMonitorOptions {
  return {
    issuers: caDirectories(config),
    ...(config.server.tls.certFile ? { servingCertFile: config.server.tls.certFile } : {}),
    caWarnBefore: config.monitoring.caWarnBefore,
    staleWithin: config.monitoring.staleWithin,
    discoveredWarnBefore: config.monitoring.discoveredWarnBefore,
    interval: config.monitoring.interval,
  };
}
