/**
 * Multi-process serving. Node runs JavaScript on one core per process, so meshcert forks one
 * worker per CPU. The primary listens on the gRPC port and hands each connection to the worker
 * with the fewest (src/runtime/dispatcher.ts). It prepares shared state once (CA autoInit, dev
 * issuer) before forking, restarts workers that die, and on SIGTERM tells each to drain, then exits 0.
 */
import cluster, { type Worker } from 'node:cluster';
import type { Socket } from 'node:net';
import type { MeshcertConfig } from '../config/schema.js';
import type { CaSnapshot } from '../ca/state.js';
import { ConfigError } from '../errors/ca-error.js';
import type { Logger } from '../log/logger.js';
import { decodeInventory, type InventoryKeptMessage, type InventoryMessage, type InventoryStateMessage, type InventoryWireMessage } from './ipc-sink.js';
import { flagMb, processFlags } from './heap-pressure.js';
import { ConnectionDispatcher, type DispatchTarget } from './dispatcher.js';
import type { ServingShape } from './auto-shape.js';
import { RetiredWorkerMetrics, type WorkerMetricsJson } from './retired-metrics.js';

/** Marks a process forked by `serve`; the config itself arrives over IPC (no secrets in the environment, no size limit). */
const WORKER_ENV = 'MESHCERT_WORKER';
/** How long a reload that finds no worker serving waits for a replacement to check it (one loading through tsx took over 20 s in CI). */
const NO_WORKER_RELOAD_WAIT_MS = 60_000;
/** What an operator can do when a worker process cannot be spawned. */
const SPAWN_HINTS: Readonly<Record<string, string>> = {
  EMFILE: "meshcert's process is at its open-file limit (ulimit -n): raise it, or lower server.maxConnections",
  ENFILE: "the host is out of file descriptors",
  EAGAIN: "the process limit is reached (the container's pids limit, or ulimit -u): raise it",
};

export type WorkerMessage =
  | { type: 'need-config' }
  | { type: 'listening'; port: number }
  /** `config`: the failure is the operator's to fix (a ConfigError, such as a port already in use). */
  | { type: 'fatal'; message: string; config?: boolean }
  | { type: 'reloaded'; id: number; error?: string }
  /** Sent last by a draining worker; the primary waits for its exit, not for this. */
  | { type: 'drained' }
  /** How many of the connections handed to this worker have closed since its last report. */
  | { type: 'connections-closed'; count: number }
  /** The worker became short of memory (it refuses new connections) or recovered. */
  | { type: 'memory-pressure'; high: boolean }
  /** The answer to a metrics-request: its registry as prom-client's getMetricsAsJSON gives it. */
  | { type: 'metrics'; id: number; metrics: WorkerMetricsJson }
  | InventoryWireMessage;
export type { WorkerMetricsJson };
export type PrimaryMessage =
  /**
   * `port`: the gRPC port the primary listens on (the worker binds nothing itself). `ca`: the CAs
   * in force as the primary loaded them: a worker signs with these, not with its own read of the files.
   */
  | { type: 'config'; config: MeshcertConfig; ca?: CaSnapshot; port: number; shape: ServingShape }
  /** Sent with a connection's socket, accepted by the primary and not yet read. */
  | { type: 'connection' }
  | { type: 'shutdown' }
  /** server.shutdownDelay has begun: report NOT_SERVING in gRPC health, keep serving calls. */
  | { type: 'draining' }
  | { type: 'reload'; id: number; config: MeshcertConfig; ca?: CaSnapshot }
  | { type: 'metrics-request'; id: number }
  | InventoryStateMessage
  | InventoryKeptMessage;

/** Reloads sent to workers outside a round (catch-ups, rollbacks), by request id, until answered or 30 s pass. */
type TrackedReloads = Map<number, { worker: Worker; config: MeshcertConfig; timer: NodeJS.Timeout }>;

export function isWorker(): boolean {
  return cluster.isWorker && process.env[WORKER_ENV] === '1';
}

/** The validated config, the gRPC port and the serving shape the primary sends each worker right after forking it. */
export function workerConfig(): Promise<{ config: MeshcertConfig; ca?: CaSnapshot; port: number; shape: ServingShape }> {
  return new Promise((resolve) => {
    const onMessage = (m: PrimaryMessage): void => {
      if (m?.type !== 'config') return;
      process.off('message', onMessage);
      resolve({ config: m.config, ...(m.ca ? { ca: m.ca } : {}), port: m.port, shape: m.shape });
    };
    process.on('message', onMessage);
    // Ask only once listening: a message sent before the listener exists would be lost.
    process.send?.({ type: 'need-config' } satisfies WorkerMessage);
  });
}

export interface WorkerPool {
  readonly port: number;
  /** Workers taking connections now (not those still starting, catching up with a reload, or retiring). */
  readonly serving: () => number;
  /** Open connections the primary has handed to each serving worker. */
  readonly connections: () => Array<{ worker: number; open: number }>;
  /** Tells every worker to apply a new config with the CAs the primary loaded for it; rejects if any worker refuses it. */
  reload(config: MeshcertConfig, ca: CaSnapshot): Promise<void>;
  /**
   * Each serving worker's metrics; a worker that does not answer within `timeoutMs` (busy, or
   * dying) is counted and reported with its last answer, so one worker can neither fail a scrape
   * nor make the summed counters drop.
   */
  workerMetrics(timeoutMs: number): Promise<{ metrics: WorkerMetricsJson[]; unanswered: number }>;
  /** Tells every worker (and any started later) to report NOT_SERVING while it goes on serving. */
  draining(): void;
  /** Asks every worker to drain and waits for all of them to exit. */
  shutdown(): Promise<void>;
}

export interface WorkerHooks {
  /** Records and audit events a worker shipped (the primary owns the inventory); `reply` answers its durable records. */
  onInventory?: (m: InventoryMessage, reply: (ack: InventoryKeptMessage) => void) => void;
  /** Sent to workers when it changes (checked at every intake and every 250 ms): whether issuance may go on (inventory.failClosed). */
  accepting?: () => boolean;
  /** A serving worker died unasked (it is being replaced). */
  onDeath?: (how: 'signal' | 'exit_code') => void;
}

/**
 * server.workerInitialHeapMb resolved: `auto` is a third of the heap limit (the operator's
 * --max-old-space-size when one is set, else workerHeapMb), or 64 MB without a limit.
 */
export function initialHeapMb(server: Pick<MeshcertConfig['server'], 'workerHeapMb' | 'workerInitialHeapMb'>, inherited: readonly string[] = []): number {
  if (server.workerInitialHeapMb !== 'auto') return server.workerInitialHeapMb;
  const limit = flagMb(inherited, 'max-old-space-size') ?? server.workerHeapMb;
  return limit > 0 ? Math.floor(limit / 3) : 64;
}

/**
 * The V8 flags a worker starts with: this process's own, then the heap settings of `server`.
 * A flag the operator set on the command line or in NODE_OPTIONS (`inherited`) wins over the config.
 */
export function workerExecArgv(
  server: Pick<MeshcertConfig['server'], 'workerHeapMb' | 'workerInitialHeapMb' | 'workerSemiSpaceMb'>,
  execArgv: readonly string[],
  inherited: readonly string[],
): string[] {
  const out = [...execArgv];
  const add = (flag: string, mb: number) => {
    if (mb > 0 && flagMb(inherited, flag) === undefined) out.push(`--${flag}=${mb}`);
  };
  add('max-old-space-size', server.workerHeapMb);
  add('initial-old-space-size', initialHeapMb(server, inherited));
  add('max-semi-space-size', server.workerSemiSpaceMb);
  return out;
}

/**
 * `ca`: the CAs as the primary loaded them with `config`. Workers sign with the CAs in force, sent
 * with each config, never with their own read of the files: a replacement started after a rejected
 * reload would otherwise serve the files that reload refused.
 */
/** `shape`: how many workers to run, and what each serves with ('auto' resolved by the caller, once). */
export async function startWorkers(config: MeshcertConfig, ca: CaSnapshot, logger: Logger, shape: ServingShape, hooks: WorkerHooks = {}): Promise<WorkerPool> {
  cluster.setupPrimary({
    exec: process.argv[1],
    args: ['worker'],
    silent: false,
    // 'advanced' serialization (structured clone) carries messages' values as they are (the config's
    // among them); inventory batches cross as JSON text inside it (see InventoryWireMessage).
    serialization: 'advanced',
    execArgv: workerExecArgv(config.server, process.execArgv, processFlags()),
  });
  let stopping = false;
  const live = new Set<Worker>();
  // inventory.failClosed: workers refuse on their cached copy of this, so a change reaches them at
  // once when records arrive (the buffer filling, a write stalling) and within 250 ms otherwise.
  let lastAccepting: boolean | undefined;
  const publishInventoryState = (): void => {
    const accepting = hooks.accepting?.() ?? true;
    if (accepting === lastAccepting) return;
    lastAccepting = accepting;
    for (const w of live) send(w, { type: 'inventory-state', accepting });
  };
  /** Workers that have said they listen (a replacement still starting serves nothing yet). */
  const serving = new Set<Worker>();
  let restarts = 0;
  /** Ids of the requests sent to workers (reloads, metrics) that their answers carry back. */
  let nextId = 0;
  /** Requests sent to several workers, awaiting answers: the workers yet to answer (an exit counts as one). */
  const asks = new Map<number, { waiting: Set<Worker>; done: () => void }>();
  /**
   * The reload each pending ask is, where it is one: the config sent, the refusals so far, those
   * that applied it, and those retired during the round (which answer it only by leaving: their
   * exit is no refusal).
   */
  const reloadRounds = new Map<number, { config: MeshcertConfig; errors: string[]; applied: Set<Worker>; left: Set<Worker> }>();
  /**
   * Workers sent the config in force back after a rejected reload they had applied (or did not
   * answer), by request id; one that does not answer within 30 s is retired (see sendBack).
   */
  const rollbacks: TrackedReloads = new Map();
  let currentConfig = config;
  /** The CAs loaded with the config in force: sent with it, as they go together. */
  let currentCa = ca;
  /** The config each worker was last given and applied (a worker started during a reload may lag). */
  const configOf = new Map<Worker, MeshcertConfig>();
  /**
   * Each worker's last answer. A worker that misses a scrape is reported with it: left out, its
   * counters would drop out of the sums and come back, which Prometheus reads as two resets.
   */
  const lastMetrics = new Map<Worker, WorkerMetricsJson>();
  const retired = new RetiredWorkerMetrics();
  /** Catch-up reloads awaiting answers: the worker and the config sent, recorded once it applied it. */
  const catchUps: TrackedReloads = new Map();
  const catchingUp = new Set<Worker>();
  /**
   * Workers being replaced because they refused the config in force (or did not answer): they
   * drain (no new connections, no reloads, not counted as serving) while a replacement starts.
   */
  const retiring = new Set<Worker>();
  /** Each worker's place in the dispatcher, and how to give it one (see `settle`). */
  const seats = new Map<Worker, { readonly target: DispatchTarget; readonly admit: () => void }>();
  let draining = false;
  const dispatcher = new ConnectionDispatcher<DispatchTarget>(logger);
  const port = await dispatcher.listen(config.server.listen);

  const fork = (): Promise<void> =>
    new Promise((resolve, reject) => {
      // A replacement worker starts with the config in force now, not the one from startup.
      const w = cluster.fork({ [WORKER_ENV]: '1' });
      live.add(w);
      const target: DispatchTarget = {
        id: w.id,
        hand: (socket: Socket, done) => {
          if (!w.isConnected()) return false;
          w.send({ type: 'connection' } satisfies PrimaryMessage, socket, { keepOpen: false }, (err: Error | null) => {
            done(err);
            // The dispatcher dropped it. Usually it is exiting; a send can also fail on a live
            // channel (out of memory, say): that worker is admitted again a second later.
            if (err) setTimeout(() => settle(w), 1000).unref();
          });
          return true;
        },
      };
      /** The worker's last word on its memory, kept for when it is admitted (see settle). */
      let short = false;
      seats.set(w, {
        target,
        admit: () => {
          if (stopping || retiring.has(w) || !w.isConnected() || dispatcher.has(target)) return;
          dispatcher.add(target);
          if (short) dispatcher.setShortOfMemory(target, true);
        },
      });
      // Before 'exit' when the worker closes its channel (it is exiting): no more hand-offs.
      w.on('disconnect', () => dispatcher.remove(target));
      let listening = false;
      w.on('error', (err: NodeJS.ErrnoException) => {
        // A process that could not be spawned (EMFILE, ENFILE, EAGAIN under a pids limit) emits
        // only this, never 'exit': without it the pool would wait for it, a worker short, for good.
        if (err.syscall?.startsWith('spawn')) return gone(null, null, err);
        // A send to a worker that has just exited fails with EPIPE, emitted here: never fatal.
        logger.debug({ err, pid: w.process.pid }, 'IPC to a worker failed');
      });
      w.on('message', (m: WorkerMessage) => {
        if (m.type === 'inventory') {
          let batch: InventoryMessage;
          try {
            batch = decodeInventory(m);
          } catch (err) {
            // Never fatal: the primary holds every other worker's records too.
            logger.error({ err, pid: w.process.pid }, 'a worker shipped an inventory batch that is not one; dropped');
            return;
          }
          hooks.onInventory?.(batch, (ack) => send(w, ack));
          publishInventoryState();
        } else if (m.type === 'connections-closed') {
          dispatcher.closed(target, m.count);
        } else if (m.type === 'memory-pressure') {
          short = m.high;
          dispatcher.setShortOfMemory(target, m.high);
        } else if (m.type === 'metrics') {
          lastMetrics.set(w, m.metrics);
          answered(m.id, w);
        } else if (m.type === 'need-config') {
          configOf.set(w, currentConfig);
          send(w, { type: 'config', config: currentConfig, ca: currentCa, port, shape });
        } else if (m.type === 'reloaded') {
          const round = reloadRounds.get(m.id);
          const back = rollbacks.get(m.id);
          const caughtUp = catchUps.get(m.id);
          if (round) {
            // A worker being retired has left the round (retire() answered for it).
            if (retiring.has(w)) return;
            if (m.error) round.errors.push(m.error);
            else {
              configOf.set(w, round.config);
              round.applied.add(w);
            }
            answered(m.id, w);
          } else if (back) {
            rollbacks.delete(m.id);
            clearTimeout(back.timer);
            // Its files changed again meanwhile (CA files, a jwksFile), say. Not retired, unlike a
            // refused catch-up: what it runs passed every check, and when a reload is rejected for
            // a broken file every worker refuses to go back too; replacements would read that
            // file and fail to start, turning a rejected reload into an outage. The next reload
            // that succeeds brings it to the config in force.
            if (m.error) {
              logger.error({ pid: w.process.pid, error: m.error }, 'a worker could not go back to the configuration in force after a rejected reload; it serves with the rejected one until a reload succeeds');
            } else {
              configOf.set(w, back.config);
              settle(w);
            }
          } else if (caughtUp) {
            catchUps.delete(m.id);
            clearTimeout(caughtUp.timer);
            catchingUp.delete(w);
            if (m.error) retire(w, 'a worker refused the configuration in force; draining it and starting a replacement, so that none serves with the configuration before', m.error);
            else {
              configOf.set(w, caughtUp.config);
              settle(w);
            }
          }
        } else if (m.type === 'listening') {
          listening = true;
          serving.add(w);
          resolve();
          // Before any connection (IPC keeps order): a replacement started while the inventory
          // refuses (inventory.failClosed) must refuse too, not wait for the state to change.
          send(w, { type: 'inventory-state', accepting: hooks.accepting?.() ?? true });
          // Stopping already (another worker failed to start): this one drains right away.
          if (stopping) send(w, { type: 'shutdown' });
          else settle(w);
          if (draining) send(w, { type: 'draining' });
        } else if (m.type === 'fatal') {
          reject(m.config ? new ConfigError(m.message) : new Error(m.message));
        }
      });
      const gone = (code: number | null, signal: string | null, spawnError?: NodeJS.ErrnoException): void => {
        live.delete(w);
        serving.delete(w);
        configOf.delete(w);
        seats.delete(w);
        const last = lastMetrics.get(w);
        if (last) retired.retire(last);
        lastMetrics.delete(w);
        catchingUp.delete(w);
        for (const tracked of [catchUps, rollbacks]) {
          for (const [id, t] of tracked) {
            if (t.worker !== w) continue;
            clearTimeout(t.timer);
            tracked.delete(id);
          }
        }
        // A retired worker's replacement was started when it was retired.
        const wasRetiring = retiring.delete(w);
        // No answer will come: a reload or a scrape waiting on it goes on without it.
        for (const id of [...asks.keys()]) answered(id, w);
        dispatcher.remove(target);
        if (spawnError) return reject(new Error(`could not start a worker process (${spawnError.code ?? spawnError.message}): ${SPAWN_HINTS[spawnError.code ?? ''] ?? 'see the error code'}`));
        // A `fatal` message read in the same turn keeps its reason: reject after it.
        if (!listening) return void setImmediate(() => reject(new Error(`worker exited with ${code ?? signal} before serving`)));
        if (stopping || wasRetiring) return;
        // An unexpected death: replace it, with a pause so a crash loop does not spin.
        restarts++;
        hooks.onDeath?.(signal ? 'signal' : 'exit_code');
        // A worker that throws ships its records before it exits; one killed cannot (README).
        const lost = signal ? { inventory: `records of certificates it issued since its last shipment to this process (at most 100 ms before it was killed) are missing from the inventory, unless inventory.failClosed` } : {};
        logger.error({ pid: w.process.pid, code, signal, restarts, ...lost }, 'worker died; starting a replacement');
        replace();
      };
      w.on('exit', (code: number | null, signal: string | null) => gone(code, signal));
    });

  /**
   * Sends `message` (carrying `id`) to each target; resolves, with the workers that did not answer,
   * once every one has answered or exited, or after `timeoutMs`.
   */
  const askAll = (id: number, targets: readonly Worker[], message: PrimaryMessage, timeoutMs: number): Promise<ReadonlySet<Worker>> => {
    const waiting = new Set(targets);
    if (waiting.size === 0) return Promise.resolve(waiting);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        asks.delete(id);
        resolve(waiting);
      }, timeoutMs);
      timer.unref();
      asks.set(id, {
        waiting,
        done: () => {
          clearTimeout(timer);
          resolve(waiting);
        },
      });
      for (const w of targets) send(w, message);
    });
  };

  /** Notes a worker's answer (or exit) for a pending ask; settles it when none is left. */
  const answered = (id: number, w: Worker): void => {
    const a = asks.get(id);
    if (!a || !a.waiting.delete(w) || a.waiting.size > 0) return;
    asks.delete(id);
    a.done();
  };

  /**
   * Connections go to a worker only once it serves with the config in force and no reload is
   * under way (a worker that listens during one may have been given the config it replaces): one
   * behind is caught up first, and admitted when it has applied the config (settled again then, and
   * at the end of every reload). A refusal retires it instead.
   */
  const settle = (w: Worker): void => {
    if (configOf.get(w) !== currentConfig) catchUp(w);
    else if (reloadRounds.size === 0) seats.get(w)?.admit();
  };

  /** Sends the config in force to a serving worker that runs another; a refusal, or no answer within 30 s, retires it. */
  const catchUp = (w: Worker): void => {
    if (configOf.get(w) === currentConfig || !serving.has(w) || catchingUp.has(w) || retiring.has(w)) return;
    catchingUp.add(w);
    sendTracked(w, catchUps, () => {
      catchingUp.delete(w);
      retire(w, 'a worker did not apply the configuration in force within 30s; draining it and starting a replacement, so that none serves with the configuration before');
    });
  };

  /** Sends `w` the config in force as a reload tracked in `tracked`; `unanswered` runs when no answer came within 30 s. */
  const sendTracked = (w: Worker, tracked: TrackedReloads, unanswered: () => void): void => {
    const id = ++nextId;
    const timer = setTimeout(() => {
      if (tracked.delete(id)) unanswered();
    }, 30_000);
    timer.unref();
    tracked.set(id, { worker: w, config: currentConfig, timer });
    send(w, { type: 'reload', id, config: currentConfig, ca: currentCa });
  };

  /** Whether the dispatcher hands `w` connections (admitted, not held back or retiring). */
  const admitted = (w: Worker): boolean => {
    const seat = seats.get(w);
    return seat !== undefined && dispatcher.has(seat.target);
  };

  /**
   * Sends the config in force back to a worker that applied a rejected reload, or did not answer
   * it. Reloads run one at a time in a worker, in the order sent, so one that has not answered this
   * within 30 s is stuck in the reload before it (or not running JavaScript at all): it would fail
   * every later reload round, and serves on with a config no one knows. Retired, as a worker that
   * does not catch up is.
   */
  const sendBack = (w: Worker): void =>
    sendTracked(w, rollbacks, () => {
      // Not the last one taking connections: when all are this slow (a starved host, a file
      // system that hangs), replacements would fare no better, and nothing would serve meanwhile.
      if (![...serving].some((o) => o !== w && !retiring.has(o) && admitted(o))) {
        logger.error({ pid: w.process.pid }, 'a worker did not go back to the configuration in force within 30s of a rejected reload; it is the last one taking connections, so it is kept (restart meshcert if reloads keep failing)');
        return;
      }
      retire(w, 'a worker did not go back to the configuration in force within 30s of a rejected reload; draining it and starting a replacement, so that none serves with a configuration no one knows');
    });

  /**
   * A worker started during a reload that refuses to catch up (its CA files could not be read when
   * it tried, say) would go on serving with the config before, which the operator was told is
   * replaced: without a client certificate revoked since, or a policy rule. Fail closed: it drains,
   * and a replacement starts with the config in force (one that cannot start is retried as any
   * replacement is, while the other workers serve; the dispatcher holds connections while none does).
   */
  const retire = (w: Worker, message: string, error?: string): void => {
    if (stopping || retiring.has(w)) return;
    retiring.add(w);
    // It leaves any reload round under way: its answer there no longer counts, nor its exit.
    for (const [id, round] of reloadRounds) {
      round.left.add(w);
      answered(id, w);
    }
    logger.error({ pid: w.process.pid, ...(error === undefined ? {} : { error }) }, message);
    const seat = seats.get(w);
    if (seat) dispatcher.remove(seat.target);
    drain(w, (config.server.shutdownGrace + 5) * 1000);
    replace();
  };

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

  /** Asks a worker to drain; killed (and said) if still running after `graceMs` (its own grace plus a margin). */
  const drain = (w: Worker, graceMs: number): void => {
    send(w, { type: 'shutdown' });
    setTimeout(() => {
      if (w.isDead()) return;
      logger.error({ pid: w.process.pid, graceSeconds: graceMs / 1000 }, 'worker still running after its grace period and margin; killed (its calls in flight were cut off, and records it had not shipped are lost)');
      w.process.kill('SIGKILL');
    }, graceMs).unref();
  };

  /** IPC to a worker, ignoring a channel that has just closed (the worker is exiting). */
  const send = (w: Worker, m: PrimaryMessage): void => {
    if (w.isConnected()) w.send(m, undefined, () => {});
  };

  /**
   * Asks every worker to drain; any still running after `graceMs` is killed. Resolves once all have
   * exited and their channels are closed (a worker's last messages, its last records among them,
   * can be read after its 'exit': Node emits 'disconnect' once the channel is read to its end), with
   * how each serving one that did not stop cleanly (a non-zero code, a signal) ended. Callers close the
   * dispatcher first, so a draining worker is handed nothing more.
   */
  const stopAll = (graceMs: number): Promise<string[]> =>
    Promise.all(
      [...live].map(
        (w) =>
          new Promise<string | undefined>((resolve) => {
            if (w.isDead()) return resolve(undefined);
            // One still starting that fails to (its failure said when it happens) was not stopped.
            const wasServing = serving.has(w);
            let exited = false;
            let unclean: string | undefined;
            const done = (): void => {
              if (exited && !w.isConnected()) resolve(unclean);
            };
            w.once('exit', (code: number | null, signal: string | null) => {
              exited = true;
              if (code !== 0 && wasServing) unclean = `worker ${w.process.pid} exited with ${signal ?? `code ${code}`}`;
              done();
              // A channel that never reports its end must not hold the shutdown.
              if (w.isConnected()) setTimeout(() => resolve(unclean), 2000).unref();
            });
            w.once('disconnect', done);
            drain(w, graceMs);
          }),
      ),
    ).then((ends) => ends.filter((e): e is string => e !== undefined));

  try {
    await Promise.all(Array.from({ length: shape.workers }, fork));
  } catch (e) {
    // One worker could not start (its CA files are unreadable, say): stop the others too, so that
    // the process exits with the reason instead of staying up half started.
    stopping = true;
    dispatcher.close();
    await stopAll((config.server.shutdownGrace + 5) * 1000);
    throw e;
  }
  const broadcast = setInterval(publishInventoryState, 250);
  broadcast.unref();
  return {
    port,
    // None once stopping: the listener is closed, whatever the workers still drain.
    serving: () => (stopping ? 0 : dispatcher.openCounts().length),
    connections: () => dispatcher.openCounts(),
    async reload(next, nextCa) {
      // With no worker serving (all died at once), a replacement started with the config in force
      // checks this one once it serves: applied unchecked, a config the workers refuse (a
      // jwksFile gone, say) would be what every replacement starts with, and fails with, for good.
      const eligibleNow = (): Worker[] => [...serving].filter((w) => w.isConnected() && !retiring.has(w));
      for (const waitUntil = Date.now() + NO_WORKER_RELOAD_WAIT_MS; eligibleNow().length === 0; ) {
        if (stopping) throw new Error('the server is shutting down');
        if (Date.now() >= waitUntil) throw new Error(`no worker was serving to check it within ${NO_WORKER_RELOAD_WAIT_MS / 1000}s; the configuration in force is kept (send SIGHUP again)`);
        await new Promise((r) => setTimeout(r, 100));
      }
      // The workers taking connections. One still starting (it has no message handler yet) asks
      // for the config when it is ready; one that listens but is held back is caught up and
      // admitted after this round (settle).
      const eligible = eligibleNow();
      // With none admitted (all held back), those held back check it, so that no config is
      // applied unchecked by a worker; they apply it too, and are admitted after the round.
      const admittedOnes = eligible.filter(admitted);
      const targets = admittedOnes.length > 0 ? admittedOnes : eligible;
      const id = ++nextId;
      const round = { config: next, errors: [] as string[], applied: new Set<Worker>(), left: new Set<Worker>() };
      reloadRounds.set(id, round);
      const silent = await askAll(id, targets, { type: 'reload', id, config: next, ca: nextCa }, 30_000);
      reloadRounds.delete(id);
      // An exit answers too, but applies nothing: the server stopping under the round, or a
      // config that kills the workers (whose replacements would start with it, and die again).
      const exited = targets.filter((w) => !round.applied.has(w) && !round.left.has(w) && !live.has(w)).length;
      const errors =
        silent.size > 0
          ? ['a worker did not answer the reload within 30s']
          : round.errors.length > 0
            ? round.errors
            : exited > 0
              ? [stopping ? 'the server is shutting down' : `${exited} worker(s) exited before applying it`]
              : [];
      if (errors.length > 0) {
        // Put the workers that applied it (or may yet: those that did not answer) back on the
        // config in force. The others never left it.
        for (const w of [...round.applied, ...silent]) if (live.has(w) && !retiring.has(w)) sendBack(w);
        // Those held back meanwhile never left it: admitted now (those sent back, once back).
        for (const w of serving) if (!admitted(w) && !round.applied.has(w) && !silent.has(w)) settle(w);
        throw new Error(errors[0]);
      }
      currentConfig = next;
      currentCa = nextCa;
      // Workers held back while this reload was under way: caught up, then admitted.
      for (const w of serving) if (!admitted(w)) settle(w);
    },
    async workerMetrics(timeoutMs) {
      // Only serving workers: one still starting has no handler yet, and would hold the scrape.
      const targets = [...serving].filter((w) => w.isConnected());
      const id = ++nextId;
      const silent = await askAll(id, targets, { type: 'metrics-request', id }, timeoutMs);
      // Fresh answers, and the last one of a worker that did not answer in time (still serving).
      const metrics = targets.filter((w) => lastMetrics.has(w) && live.has(w)).map((w) => lastMetrics.get(w)!);
      return { metrics: [...metrics, ...retired.snapshots()], unanswered: silent.size };
    },
    draining() {
      draining = true;
      for (const w of live) send(w, { type: 'draining' });
    },
    async shutdown() {
      stopping = true;
      clearInterval(broadcast);
      // New connections are refused from here; those open drain in their workers.
      dispatcher.close();
      // Backstop: the workers' own grace period plus a margin.
      const unclean = await stopAll((config.server.shutdownGrace + 5) * 1000);
      // As a single process's failed close does: said, and the exit status is not 0.
      if (unclean.length > 0) throw new Error(`${unclean.length} worker(s) did not stop cleanly: ${unclean.join('; ')}`);
    },
  };
}
