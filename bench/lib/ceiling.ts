import { Worker } from 'node:worker_threads';
import type { KeyKind } from './workload.js';
import { usableCpus } from '../../src/runtime/auto-shape.js';

/**
 * The crypto ceiling, measured now on this machine: certificates per second if the CA did nothing
 * but the unavoidable crypto (token verify + CSR verify + leaf sign), on all usable cores at once.
 */
export async function cryptoCeiling(kind: KeyKind, seconds: number): Promise<{ perSecond: number; threads: number }> {
  // The CPUs the server may use (its workers are counted the same way, a CPU quota included).
  const threads = usableCpus();
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
