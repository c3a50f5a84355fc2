import cluster from 'node:cluster';
import type { Socket } from 'node:net';
import { inOrder } from '../async/in-order.js';
import { ConfigError } from '../errors/ca-error.js';
import { createLogger } from '../log/logger.js';
import { startMeshcert, type RunningMeshcert } from '../main.js';
import { Registry } from 'prom-client';
import { CaMetrics } from '../metrics/ca-metrics.js';
import { workerConfig, type PrimaryMessage, type WorkerMessage } from './cluster.js';
import { encodeInventory, IpcSink } from './ipc-sink.js';

/** Entry point of a forked worker: serve gRPC until the primary says to drain. */
export async function workerMain(): Promise<number> {
  // Signals are the primary's to handle, from the first moment: a Ctrl-C or a terminal's hangup
  // reaches the whole process group (`kill -HUP -- -PGID` too), and a worker must drain on the
  // primary's word and reload on it, not die mid-call (or fail the start) by a default action.
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, () => {});
  // Listen to the primary from the start: a shutdown sent while this worker is still starting
  // (another worker failed to start) must not be lost, or it would serve until killed.
  let running: RunningMeshcert | undefined;
  let shutdownRequested = false;
  /** server.shutdownDelay began before this worker was serving: it reports NOT_SERVING once it is. */
  let draining = false;
  let closing = false;
  let pendingReload: Extract<PrimaryMessage, { type: 'reload' }> | undefined;
  // Before the server runs, only remembers the request (acted on once started).
  const drain = (): void => {
    shutdownRequested = true;
    if (!running || closing) return;
    closing = true;
    running
      .close()
      .then(
        () => 0,
        (err: unknown) => {
          // Said here: the primary sees only the exit code.
          logger.error({ err }, 'error during shutdown');
          return 1;
        },
      )
      .then((code) => {
        // Ship the last records, and exit once the channel has written them.
        sink?.flush();
        exitAfter({ type: 'drained' }, code);
      });
  };
  /** Exits with `code` once `m` has reached the primary (at once when the channel is gone). */
  const exitAfter = (m: WorkerMessage, code: number): void => {
    if (process.connected) process.send!(m, undefined, {}, () => process.exit(code));
    else process.exit(code);
  };
  // One reload at a time, in the order sent: the primary's bookkeeping (a catch-up, then a round,
  // then a rollback) assumes the last one answered is the one in force.
  const reloads = inOrder();
  const applyReload = (m: Extract<PrimaryMessage, { type: 'reload' }>): void =>
    void reloads(() =>
      running!.reload(m.config, m.ca).then(
        () => send({ type: 'reloaded', id: m.id }),
        (err: unknown) => send({ type: 'reloaded', id: m.id, error: err instanceof Error ? err.message : String(err) }),
      ),
    );
  // Connections the primary handed over that have closed, reported in one message per turn of
  // the event loop (a shed or a drain closes thousands at once).
  let closedSinceReport = 0;
  const noteClosed = (): void => {
    if (closedSinceReport++ > 0) return;
    setImmediate(() => {
      const count = closedSinceReport;
      closedSinceReport = 0;
      send({ type: 'connections-closed', count });
    });
  };
  process.on('message', (m: PrimaryMessage, handle: unknown) => {
    if (m?.type === 'connection') {
      const socket = handle as Socket | undefined;
      // Counted by the primary but not delivered (closed while queued there): report it closed.
      if (!socket) return noteClosed();
      socket.once('close', noteClosed);
      // The primary hands over only once this worker has said it listens; a draining server refuses it.
      if (running) running.acceptConnection(socket);
      else socket.destroy();
    } else if (m?.type === 'shutdown') drain();
    else if (m?.type === 'draining') {
      draining = true;
      running?.health.setAll('NOT_SERVING');
    }
    else if (m?.type === 'reload') {
      if (running) applyReload(m);
      else pendingReload = m; // applied once started
    }
  });
  // With a callback, a send that fails (the primary gone, EPIPE before 'disconnect' is seen) is
  // handed to it instead of emitted as an 'error' on process, which nothing hears: that would end
  // this worker at once rather than let the 'disconnect' handler drain it.
  const send = (m: WorkerMessage): void => {
    if (process.connected) process.send?.(m, undefined, {}, ignoreSendError);
  };

  const { config, ca, port, shape } = await workerConfig();
  const logger = createLogger(config.log.level).child({ worker: cluster.worker?.id });
  // A bug, not a request failure: log it and let the primary start a clean replacement.
  let shipPending = (): void => {};
  let failing = false;
  const fail = (err: unknown, what: string): void => {
    logger.error({ err }, `${what} in worker; exiting for a clean restart`);
    if (failing) return;
    failing = true;
    // Records of certificates already issued go to the primary first (IPC keeps order). The
    // exit follows the channel's write, a few milliseconds in which a call may still complete
    // and its record not be shipped.
    shipPending();
    // Still starting: the primary reports this as why the start failed, not as a bare exit code.
    exitAfter(running ? { type: 'drained' } : { type: 'fatal', message: `${what} while starting: ${err instanceof Error ? err.message : String(err)}` }, 1);
  };
  process.on('unhandledRejection', (err) => fail(err, 'unhandled rejection'));
  // A throw nothing catches: the same, rather than Node's exit that loses the records not yet shipped.
  process.on('uncaughtException', (err) => fail(err, 'uncaught exception'));

  // The primary asks each serving worker for its registry at every scrape (metrics-request).
  const registry = new Registry();
  process.on('message', (m: PrimaryMessage) => {
    if (m?.type !== 'metrics-request') return;
    registry.getMetricsAsJSON().then(
      (metrics) => send({ type: 'metrics', id: m.id, metrics }),
      (err: unknown) => logger.error({ err }, 'cannot collect metrics'),
    );
  });
  const metrics = new CaMetrics(registry);
  // With inventory.failClosed, refuse until the primary has said its inventory accepts.
  const sink = config.inventory.store === 'none' ? undefined : new IpcSink((m) => send(encodeInventory(m)), !config.inventory.failClosed);
  shipPending = () => {
    // The count of refusals not audited one by one goes into the sink first, then all of it out.
    running?.flushAudit();
    sink?.flush();
  };
  try {
    // Every core already runs a worker: signing inline costs less than handing it to another thread.
    running = await startMeshcert(config, { logger, metrics, signatures: 'inline', handedConnections: { port }, ...(ca ? { ca } : {}), auditShare: 1 / shape.workers, maxConcurrentStreams: shape.maxConcurrentStreams, onMemoryPressure: (high) => send({ type: 'memory-pressure', high }), ...(sink ? { sink } : {}) });
  } catch (e) {
    // Exit once the primary has the reason (it stops the other workers and exits with it).
    exitAfter({ type: 'fatal', message: e instanceof Error ? e.message : String(e), config: e instanceof ConfigError }, 1);
    return 1;
  }
  send({ type: 'listening', port: running.port });
  if (draining) running.health.setAll('NOT_SERVING');

  if (pendingReload) applyReload(pendingReload);
  // The primary is gone (killed), now or while this worker was starting: stop serving rather than
  // linger as an orphan.
  process.on('disconnect', drain);
  if (shutdownRequested || !process.connected) drain();
  return new Promise<number>(() => {});
}

/** A failed IPC send: the channel is closing, which 'disconnect' handles. */
function ignoreSendError(): void {}
