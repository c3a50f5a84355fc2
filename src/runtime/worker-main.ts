import cluster from 'node:cluster';
import { createLogger } from '../log/logger.js';
import { startMeshcert, type RunningMeshcert } from '../main.js';
import { workerConfig, type PrimaryMessage, type WorkerMessage } from './cluster.js';

/** Entry point of a forked worker: serve gRPC until the primary says to drain. */
export async function workerMain(): Promise<number> {
  const config = workerConfig();
  const logger = createLogger(config.log.level).child({ worker: cluster.worker?.id });
  const send = (m: WorkerMessage): void => {
    process.send?.(m);
  };
  // Signals are the primary's to handle: a Ctrl-C reaches the whole process group, and a worker
  // must drain on the primary's word, not die mid-call.
  process.on('SIGINT', () => {});
  process.on('SIGTERM', () => {});

  let running: RunningMeshcert;
  try {
    running = await startMeshcert(config, { logger });
  } catch (e) {
    send({ type: 'fatal', message: e instanceof Error ? e.message : String(e) });
    return 1;
  }
  send({ type: 'listening', port: running.port });

  let closing = false;
  const drain = (): void => {
    if (closing) return;
    closing = true;
    running.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('message', (m: PrimaryMessage) => {
    if (m?.type === 'shutdown') drain();
  });
  // The primary is gone (killed): stop serving rather than linger as an orphan.
  process.on('disconnect', drain);
  return new Promise<number>(() => {});
}
