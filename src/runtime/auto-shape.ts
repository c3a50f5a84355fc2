/**
 * What the config's 'auto' values (server.workers, server.maxConcurrentStreams) resolve to, from
 * the CPUs and the memory limit this process may use. `read` is the file system (tests give theirs).
 */
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { cgroupCpuQuota, cgroupMemoryLimit } from './cgroup.js';
import { flagMb, processFlags } from './heap-pressure.js';

type ReadFile = (path: string) => string;
const readFile: ReadFile = (p) => readFileSync(p, 'utf8');

/**
 * CPUs this process may use: the CPUs it may run on (affinity), bounded by its cgroup's CPU quota
 * rounded up. Node 20's availableParallelism() ignores the quota, so a pod limited to 2 CPUs on a
 * 32-core node would start 32 workers (each with its own heap) and be throttled or OOM-killed.
 */
export function usableCpus(read: ReadFile = readFile): number {
  const quota = cgroupCpuQuota(read);
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
export function autoWorkers(read: ReadFile = readFile): AutoWorkers {
  const cpus = usableCpus(read);
  const memoryLimitMib = memoryLimitMiB(read);
  const fit = memoryLimitMib === null ? Infinity : workersFitting(memoryLimitMib);
  return { count: Math.min(cpus, fit), cpus, memoryLimitMib, boundByMemory: fit < cpus };
}

/** The memory a primary and `workers` workers need at a storm's peak, MiB. */
function neededMib(workers: number): number {
  return PRIMARY_MIB + workers * WORKER_MIB;
}

/** Worker processes a memory limit holds at a storm's peak, beside their primary (at least one process). */
function workersFitting(memoryLimitMib: number): number {
  return Math.max(1, Math.floor((memoryLimitMib - PRIMARY_MIB) / WORKER_MIB));
}

/** HTTP/2 streams per connection with room in memory (gRPC clients' usual expectation). */
const DEFAULT_STREAMS = 100;
/**
 * ...and below the memory two workers need. The bench's storm (50 connections, 10,000 calls) in
 * one process inside a memory cgroup: with 100 streams per connection (5,000 calls in flight,
 * about 38 KB each in HTTP/2 and TLS, outside the V8 heap that memory pressure watches) it was
 * OOM-killed at 200 MiB; with 16, clients queued the rest and it served them all with no error at
 * 200 MiB (5.25 s) and at 160 (5.20 s, at the limit), and was OOM-killed at 128 (bench/HISTORY.md
 * round 29). Agents open a connection each, so 16 slows only clients that multiplex (ztunnel).
 */
const BOUNDED_STREAMS = 16;
/** Below this limit the storm OOM-killed even one process at 16 streams: worth a warning at start. */
export const STORM_FLOOR_MIB = 160;

/** `server.maxConcurrentStreams`: the number set, or for 'auto' 100, or 16 under a limit that cannot hold two workers. */
export function concurrentStreams(setting: number | 'auto', read: ReadFile = readFile): number {
  return setting !== 'auto' ? setting : autoStreams(memoryLimitMiB(read));
}

/** What 'auto' streams are under a memory limit (MiB, or null without one). */
function autoStreams(memoryLimitMib: number | null): number {
  return memoryLimitMib !== null && memoryLimitMib < neededMib(2) ? BOUNDED_STREAMS : DEFAULT_STREAMS;
}

/**
 * What a server serves with once the 'auto' values are resolved. The primary resolves it once and
 * sends it to each worker it forks, so every process serves with what the primary logged, even if
 * the pod's limits change in place before a worker is replaced.
 */
export interface ServingShape {
  /** Serving processes (1: one process serving alone, else cluster workers). */
  readonly workers: number;
  /** HTTP/2 streams per connection each serving process advertises. */
  readonly maxConcurrentStreams: number;
}

export function servingShape(server: { readonly workers: number | 'auto'; readonly maxConcurrentStreams: number | 'auto' }, read: ReadFile = readFile): ServingShape {
  return {
    workers: server.workers === 'auto' ? autoWorkers(read).count : server.workers,
    maxConcurrentStreams: concurrentStreams(server.maxConcurrentStreams, read),
  };
}

/** The cgroup memory limit in MiB, or null without one. */
export function memoryLimitMiB(read: ReadFile = readFile): number | null {
  const limit = cgroupMemoryLimit(read);
  return limit === null ? null : Math.floor(limit / 2 ** 20);
}

/** What start-up says of the shape 'auto' chose, or of a memory limit too small for any shape. */
export interface ShapeNotice {
  readonly level: 'info' | 'warn';
  readonly fields: Record<string, unknown>;
  readonly message: string;
}

/**
 * Up to this memory limit V8 gives a process 1 MB semi-spaces unless told otherwise (measured:
 * 1 MB at 200 and 512 MiB, 8 MB at 1536, 16 without a limit). One process serving alone there
 * made a third fewer certificates per second at 200 MiB than with `--max-semi-space-size=4`, and
 * stayed within the limit (bench/HISTORY.md round 29); cluster workers lost about a tenth.
 */
const SMALL_YOUNG_GENERATION_MIB = 512;

export function shapeNotices(
  server: { readonly workers: number | 'auto'; readonly maxConcurrentStreams: number | 'auto' },
  read: ReadFile = readFile,
  nodeFlags: readonly string[] = processFlags(),
): ShapeNotice[] {
  const notices: ShapeNotice[] = [];
  const memoryLimitMib = memoryLimitMiB(read);
  const auto = server.workers === 'auto' ? autoWorkers(read) : undefined;
  if (auto?.boundByMemory) {
    notices.push({ level: 'info', fields: { workers: auto.count, cpus: auto.cpus, memoryLimitMib }, message: 'server.workers auto: fewer serving processes than CPUs, as many as the memory limit holds at their peak (set server.workers to choose)' });
  }
  if (server.workers !== 'auto' && server.workers > 1 && memoryLimitMib !== null && memoryLimitMib < neededMib(server.workers)) {
    const needed = neededMib(server.workers);
    notices.push({
      level: 'warn',
      fields: { workers: server.workers, memoryLimitMib, neededMib: needed },
      message: `server.workers ${server.workers} under this memory limit: a primary and ${server.workers} workers need about ${needed} MiB at a restart storm's peak (two were OOM-killed at 256 MiB); 'auto' would run ${workersFitting(memoryLimitMib)}`,
    });
  }
  const alone = (auto?.count ?? server.workers) === 1;
  if (alone && memoryLimitMib !== null && memoryLimitMib <= SMALL_YOUNG_GENERATION_MIB && flagMb(nodeFlags, 'max-semi-space-size') === undefined) {
    notices.push({
      level: 'info',
      fields: { memoryLimitMib },
      message: "one process serving under this memory limit gets V8's smallest young generation (1 MB semi-spaces), which cost a third of the throughput at 200 MiB; NODE_OPTIONS=--max-semi-space-size=4 takes it back for a few MB",
    });
  }
  const bounded = autoStreams(memoryLimitMib) === BOUNDED_STREAMS;
  if (server.maxConcurrentStreams === 'auto' && bounded) {
    notices.push({ level: 'info', fields: { maxConcurrentStreams: BOUNDED_STREAMS, memoryLimitMib }, message: `server.maxConcurrentStreams auto: ${BOUNDED_STREAMS} calls per connection under this memory limit, clients queue the rest (set server.maxConcurrentStreams to choose)` });
  } else if (server.maxConcurrentStreams !== 'auto' && server.maxConcurrentStreams > BOUNDED_STREAMS && bounded) {
    notices.push({
      level: 'warn',
      fields: { maxConcurrentStreams: server.maxConcurrentStreams, memoryLimitMib },
      message: `server.maxConcurrentStreams ${server.maxConcurrentStreams} under this memory limit: a restart storm's calls in flight may get meshcert OOM-killed (one process was, at 200 MiB with 100); 'auto' would take ${BOUNDED_STREAMS}`,
    });
  }
  if (memoryLimitMib !== null && memoryLimitMib < STORM_FLOOR_MIB) {
    notices.push({ level: 'warn', fields: { memoryLimitMib, neededMib: STORM_FLOOR_MIB }, message: `the memory limit is below the ${STORM_FLOOR_MIB} MiB a restart storm was measured to need: a storm of certificate requests may get meshcert OOM-killed; raise the pod's memory limit` });
  }
  return notices;
}
