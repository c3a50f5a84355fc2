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
 * Memory, in MiB, that a cluster primary and each worker need at the bench's restart storm inside
 * a memory cgroup (where Node sizes V8's heap to the limit and the kernel reclaims file pages first):
 * a primary and two workers were OOM-killed at 256 MiB, ran at the limit at 288 and with room at
 * 320, and one process served the storm at 256 (bench/HISTORY.md round 27). Two workers from 304.
 */
const PRIMARY_MIB = 64;
const WORKER_MIB = 120;

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
 * holds at their peak. A pod limited to 256 MiB on two CPUs then serves from one process, which came
 * through the bench's storm there, instead of a primary and two workers, which were OOM-killed in it.
 */
export function autoWorkers(readFile: (path: string) => string = (p) => readFileSync(p, 'utf8')): AutoWorkers {
  const cpus = usableCpus(readFile);
  const limit = cgroupMemoryLimit(readFile);
  const memoryLimitMib = limit === null ? null : Math.floor(limit / 2 ** 20);
  const fit = memoryLimitMib === null ? Infinity : Math.max(1, Math.floor((memoryLimitMib - PRIMARY_MIB) / WORKER_MIB));
  return { count: Math.min(cpus, fit), cpus, memoryLimitMib, boundByMemory: fit < cpus };
}
