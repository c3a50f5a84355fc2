import cluster from 'node:cluster';
import { ConfigError } from '../errors/ca-error.js';
import { createLogger } from '../log/logger.js';
import { startMeshcert, type RunningMeshcert } from '../main.js';
import { AggregatorRegistry, Registry } from 'prom-client';
import { CaMetrics } from '../metrics/ca-metrics.js';
import { workerConfig, type PrimaryMessage, type WorkerMessage } from './cluster.js';
import { IpcSink } from './ipc-sink.js';

/** Entry point of a forked worker: serve gRPC until the primary says to drain. */
export async function workerMain(): Promise<number> {
  const config = await workerConfig();
  const logger = createLogger(config.log.level).child({ worker: cluster.worker?.id });
  const send = (m: WorkerMessage): void => {
    process.send?.(m);
  };
  // Signals are the primary's to handle: a Ctrl-C reaches the whole process group, and a worker
  // must drain on the primary's word, not die mid-call.
  process.on('SIGINT', () => {});
  process.on('SIGTERM', () => {});
  // A bug, not a request failure: log it and let the primary start a clean replacement.
  process.on('unhandledRejection', (err) => {
    logger.error({ err }, 'unhandled rejection in worker; exiting for a clean restart');
    process.exit(1);
  });

  let running: RunningMeshcert;
  // The primary's AggregatorRegistry asks each worker for its registry over IPC; constructing one
  // here is what installs prom-client's answering listener in the worker.
  const registry = new Registry();
  new AggregatorRegistry();
  AggregatorRegistry.setRegistries([registry]);
  const metrics = new CaMetrics(registry);
  const sink = config.inventory.store === 'none' ? undefined : new IpcSink((m) => send(m));
  try {
    // Every core already runs a worker: signing inline costs less than handing it to another thread.
    running = await startMeshcert(config, { logger, metrics, signatures: 'inline', ...(sink ? { sink } : {}) });
  } catch (e) {
    // Exit once the primary has the reason (it stops the other workers and exits with it).
    const fatal: WorkerMessage = { type: 'fatal', message: e instanceof Error ? e.message : String(e), config: e instanceof ConfigError };
    if (process.connected) process.send!(fatal, undefined, {}, () => process.exit(1));
    return 1;
  }
  send({ type: 'listening', port: running.port });

  let closing = false;
  const drain = (): void => {
    if (closing) return;
    closing = true;
    running
      .close()
      .then(
        () => 0,
        () => 1,
      )
      .then((code) => {
        // Ship the last records, and exit once the channel has written them.
        sink?.flush();
        if (process.connected) process.send!({ type: 'drained' }, undefined, {}, () => process.exit(code));
        else process.exit(code);
      });
  };
  process.on('message', (m: PrimaryMessage) => {
    if (m?.type === 'shutdown') drain();
    else if (m?.type === 'reload') {
      running.reload(m.config).then(
        () => send({ type: 'reloaded', id: m.id }),
        (err: unknown) => send({ type: 'reloaded', id: m.id, error: err instanceof Error ? err.message : String(err) }),
      );
    }
  });
  // The primary is gone (killed): stop serving rather than linger as an orphan.
  process.on('disconnect', drain);
  return new Promise<number>(() => {});
}
