import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import type { KeyKind } from './workload.js';

/**
 * The crypto ceiling, measured now on this machine: certificates per second if the CA did nothing
 * but the unavoidable crypto (token verify + CSR verify + leaf sign), on all cores at once.
 */
export async function cryptoCeiling(kind: KeyKind, seconds: number): Promise<{ perSecond: number; threads: number }> {
  const threads = availableParallelism();
  const results = await Promise.all(
    Array.from(
      { length: threads },
      () =>
        new Promise<{ ops: number; seconds: number }>((resolve, reject) => {
          const w = new Worker(new URL('./ceiling-worker.mjs', import.meta.url), { workerData: { kind, seconds } });
          w.once('message', resolve);
          w.once('error', reject);
        }),
    ),
  );
  return { perSecond: results.reduce((sum, r) => sum + r.ops / r.seconds, 0), threads };
}
