/**
 * Multi-process serving. Node runs JavaScript on one core per process, so meshcert forks one
 * worker per CPU; the workers share the gRPC listening socket (Node's cluster hands connections
 * out round-robin). The primary prepares shared state once (CA autoInit, dev issuer) before
 * forking, restarts workers that die, and on SIGTERM tells each to drain, then exits 0.
 */
import cluster, { type Worker } from 'node:cluster';
import { availableParallelism } from 'node:os';
import type { MeshcertConfig } from '../config/schema.js';
import { ConfigError } from '../errors/ca-error.js';
import type { Logger } from '../log/logger.js';
import type { InventoryMessage, InventoryStateMessage } from './ipc-sink.js';
import { processFlags } from './heap-pressure.js';

/** Marks a process forked by `serve`; the config itself arrives over IPC (no secrets in the environment, no size limit). */
const WORKER_ENV = 'MESHCERT_WORKER';

export type WorkerMessage =
  | { type: 'need-config' }
  | { type: 'listening'; port: number }
  /** `config`: the failure is the operator's to fix (a ConfigError, such as a port already in use). */
  | { type: 'fatal'; message: string; config?: boolean }
  | { type: 'reloaded'; id: number; error?: string }
  /** Sent last by a draining worker; the primary waits for its exit, not for this. */
  | { type: 'drained' }
  | InventoryMessage;
export type PrimaryMessage =
  | { type: 'config'; config: MeshcertConfig }
  | { type: 'shutdown' }
  | { type: 'reload'; id: number; config: MeshcertConfig }
  | InventoryStateMessage;

export function workerCount(config: MeshcertConfig): number {
  return config.server.workers === 'auto' ? Math.max(1, availableParallelism()) : config.server.workers;
}

export function isWorker(): boolean {
  return cluster.isWorker && process.env[WORKER_ENV] === '1';
}

/** The validated config the primary sends each worker right after forking it. */
export function workerConfig(): Promise<MeshcertConfig> {
  return new Promise((resolve) => {
    const onMessage = (m: PrimaryMessage): void => {
      if (m?.type !== 'config') return;
      process.off('message', onMessage);
      resolve(m.config);
    };
    process.on('message', onMessage);
    // Ask only once listening: a message sent before the listener exists would be lost.
    process.send?.({ type: 'need-config' } satisfies WorkerMessage);
  });
}

export interface WorkerPool {
  readonly port: number;
  /** Workers listening now (not those still starting). */
  readonly serving: () => number;
  /** Tells every worker to apply a new config; rejects if any worker refuses it. */
  reload(config: MeshcertConfig): Promise<void>;
  /** Asks every worker to drain and waits for all of them to exit. */
  shutdown(): Promise<void>;
}

export interface WorkerHooks {
  /** Records and audit events a worker shipped (the primary owns the inventory). */
  onInventory?: (m: InventoryMessage) => void;
  /** Broadcast to workers every second: whether issuance may go on (inventory.failClosed). */
  accepting?: () => boolean;
}

export async function startWorkers(config: MeshcertConfig, logger: Logger, count: number, hooks: WorkerHooks = {}): Promise<WorkerPool> {
  // 'advanced' serialization (structured clone) keeps Dates in inventory records intact.
  const heap = config.server.workerHeapMb;
  const semi = config.server.workerSemiSpaceMb;
  const inherited = processFlags();
  // Flags the operator set on the command line or in NODE_OPTIONS win over the config.
  const userSetHeap = inherited.some((a) => a.startsWith('--max-old-space-size'));
  const userSetSemi = inherited.some((a) => a.startsWith('--max-semi-space-size'));
  cluster.setupPrimary({
    exec: process.argv[1],
    args: ['worker'],
    silent: false,
    serialization: 'advanced',
    execArgv: [
      ...process.execArgv,
      ...(heap > 0 && !userSetHeap ? [`--max-old-space-size=${heap}`] : []),
      ...(semi > 0 && !userSetSemi ? [`--max-semi-space-size=${semi}`] : []),
    ],
  });
  let stopping = false;
  const live = new Set<Worker>();
  /** Workers that have said they listen (a replacement still starting serves nothing yet). */
  const serving = new Set<Worker>();
  let restarts = 0;
  let reloadId = 0;
  const pendingReloads = new Map<number, { waiting: number; errors: string[]; done: (errors: string[]) => void }>();
  let currentConfig = config;

  const fork = (): Promise<number> =>
    new Promise((resolve, reject) => {
      // A replacement worker starts with the config in force now, not the one from startup.
      const w = cluster.fork({ [WORKER_ENV]: '1' });
      live.add(w);
      let listening = false;
      // A send to a worker that has just exited fails with EPIPE, emitted here: never fatal.
      w.on('error', (err: Error) => logger.debug({ err, pid: w.process.pid }, 'IPC to a worker failed'));
      w.on('message', (m: WorkerMessage) => {
        if (m.type === 'inventory') {
          hooks.onInventory?.(m);
        } else if (m.type === 'need-config') {
          send(w, { type: 'config', config: currentConfig });
        } else if (m.type === 'reloaded') {
          const p = pendingReloads.get(m.id);
          if (p) {
            if (m.error) p.errors.push(m.error);
            if (--p.waiting === 0) {
              pendingReloads.delete(m.id);
              p.done(p.errors);
            }
          }
        } else if (m.type === 'listening') {
          listening = true;
          serving.add(w);
          resolve(m.port);
          // Stopping already (another worker failed to start): this one drains right away.
          if (stopping) send(w, { type: 'shutdown' });
        } else if (m.type === 'fatal') {
          reject(m.config ? new ConfigError(m.message) : new Error(m.message));
        }
      });
      w.on('exit', (code, signal) => {
        live.delete(w);
        serving.delete(w);
        // A `fatal` message read in the same turn keeps its reason: reject after it.
        if (!listening) return void setImmediate(() => reject(new Error(`worker exited with ${code ?? signal} before serving`)));
        if (stopping) return;
        // An unexpected death: replace it, with a pause so a crash loop does not spin.
        restarts++;
        logger.error({ pid: w.process.pid, code, signal, restarts }, 'worker died; starting a replacement');
        replace();
      });
    });

  /** Starts a replacement after a pause growing with the restarts; retries until one serves. */
  const replace = (): void => {
    setTimeout(() => {
      if (stopping) return;
      fork().catch((err: unknown) => {
        restarts++;
        logger.error({ err, restarts }, 'replacement worker failed to start; retrying');
        replace();
      });
    }, Math.min(5000, 100 * restarts)).unref();
  };

  /** IPC to a worker, ignoring a channel that has just closed (the worker is exiting). */
  const send = (w: Worker, m: PrimaryMessage): void => {
    if (w.isConnected()) w.send(m, undefined, () => {});
  };

  /** Asks every worker to drain; any still running after `graceMs` is killed. Resolves once all have exited. */
  const stopAll = (graceMs: number): Promise<void> =>
    Promise.all(
      [...live].map(
        (w) =>
          new Promise<void>((resolve) => {
            if (w.isDead()) return resolve();
            w.once('exit', () => resolve());
            send(w, { type: 'shutdown' });
            setTimeout(() => w.process.kill('SIGKILL'), graceMs).unref();
          }),
      ),
    ).then(() => undefined);

  let ports: number[];
  try {
    ports = await Promise.all(Array.from({ length: count }, fork));
  } catch (e) {
    // One worker could not start (its port is taken, say): stop the others too, so that the
    // process exits with the reason instead of staying up half started.
    stopping = true;
    await stopAll((config.server.shutdownGrace + 5) * 1000);
    throw e;
  }
  let lastAccepting: boolean | undefined;
  const broadcast = setInterval(() => {
    const accepting = hooks.accepting?.() ?? true;
    if (accepting === lastAccepting) return;
    lastAccepting = accepting;
    for (const w of live) send(w, { type: 'inventory-state', accepting });
  }, 1000);
  broadcast.unref();
  return {
    port: ports[0]!,
    serving: () => [...serving].filter((w) => w.isConnected()).length,
    async reload(next) {
      const targets = [...live].filter((w) => w.isConnected());
      if (targets.length === 0) return;
      const id = ++reloadId;
      const errors = await new Promise<string[]>((resolve) => {
        pendingReloads.set(id, { waiting: targets.length, errors: [], done: resolve });
        for (const w of targets) send(w, { type: 'reload', id, config: next });
        setTimeout(() => {
          if (pendingReloads.delete(id)) resolve(['a worker did not answer the reload within 30s']);
        }, 30_000).unref();
      });
      if (errors.length > 0) {
        // Some workers may have applied it: put every worker back on the config in force.
        for (const w of targets) send(w, { type: 'reload', id: ++reloadId, config: currentConfig });
        throw new Error(errors[0]);
      }
      currentConfig = next;
    },
    async shutdown() {
      stopping = true;
      clearInterval(broadcast);
      // Backstop: the workers' own grace period plus a margin.
      await stopAll((config.server.shutdownGrace + 5) * 1000);
    },
  };
}
