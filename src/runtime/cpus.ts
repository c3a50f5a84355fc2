import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { cgroupCpuQuota, cgroupMemoryLimit } from './cgroup.js';

/**
 * CPUs this process may use: the CPUs it may run on (affinity), bounded by its cgroup's CPU quota
 * rounded up. Node 20's availableParallelism() ignores the quota, so a pod limited to 2 CPUs on a
 * 32-core node would start 32 workers (each with its own heap) and be throttled or OOM-killed.
 */
export function usableCpus(readFile: (path: string) => string = (p) => readFileSync(p, 'utf8')): number {
  const quota = cgroupCpuQuota(readFile);
  const cpus = Math.max(1, availableParallelism());
  return quota === null ? cpus : Math.max(1, Math.min(cpus, Math.ceil(quota)));
}

/**
 * Peak memory, in MiB, of a cluster primary and of each worker in the default shape, as the pod's
 * memory cgroup counts it (shared pages such as the node binary once): the bench's peak PSS was
 * 382-394 MB for a primary and two workers in the restart storm (README "Performance"), of which
 * about 100 the primary's. Plus a margin for the page cache of the inventory and logs.
 */
const PRIMARY_PEAK_MIB = 100;
const WORKER_PEAK_MIB = 145;
const MARGIN_MIB = 48;

export interface AutoWorkers {
  /** Worker processes `server.workers: auto` runs (1: one process serving alone). */
  readonly count: number;
  readonly cpus: number;
  /** The cgroup memory limit in MiB, or null without one. */
  readonly memoryLimitMib: number | null;
  /** Whether the memory limit, not the CPUs, set the count. */
  readonly boundByMemory: boolean;
}

/**
 * What `server.workers: auto` runs: one worker per usable CPU, as many as the cgroup's memory limit
 * holds at their peak. A pod limited to 320 MiB on two CPUs then serves from one process (about 260
 * MB at its h2load peak) instead of a primary and two workers (about 390), which a restart storm
 * would take past the limit and get OOM-killed.
 */
export function autoWorkers(readFile: (path: string) => string = (p) => readFileSync(p, 'utf8')): AutoWorkers {
  const cpus = usableCpus(readFile);
  const limit = cgroupMemoryLimit(readFile);
  const memoryLimitMib = limit === null ? null : Math.floor(limit / 2 ** 20);
  const fit = memoryLimitMib === null ? Infinity : Math.max(1, Math.floor((memoryLimitMib - PRIMARY_PEAK_MIB - MARGIN_MIB) / WORKER_PEAK_MIB));
  return { count: Math.min(cpus, fit), cpus, memoryLimitMib, boundByMemory: fit < cpus };
}
