import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';

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

/** The cgroup CPU limit in CPUs (v2 `cpu.max`, else v1 CFS quota), or null when there is none. */
export function cgroupCpuQuota(readFile: (path: string) => string): number | null {
  const tryRead = (path: string): string | null => {
    try {
      return readFile(path).trim();
    } catch {
      return null;
    }
  };
  // cgroup v2: "max 100000" (no limit) or "<quota> <period>", in this process's cgroup and every
  // one above it (a systemd unit's CPUQuota sits in a child of the mount; a container with its own
  // cgroup namespace sees its cgroup as the root): the smallest limit holds.
  const self = /^0::(\/.*)$/m.exec(tryRead('/proc/self/cgroup') ?? '')?.[1] ?? '/';
  let limit: number | null = null;
  let found = false;
  for (let dir = self; ; dir = dir.slice(0, dir.lastIndexOf('/')) || '/') {
    const v2 = tryRead(`/sys/fs/cgroup${dir === '/' ? '' : dir}/cpu.max`);
    if (v2 !== null) {
      found = true;
      const [quota, period] = v2.split(/\s+/);
      const r = ratio(quota, period);
      if (r !== null && (limit === null || r < limit)) limit = r;
    }
    if (dir === '/') break;
  }
  if (found) return limit;
  // cgroup v1: a quota of -1 is no limit.
  for (const dir of ['/sys/fs/cgroup/cpu', '/sys/fs/cgroup/cpu,cpuacct']) {
    const quota = tryRead(`${dir}/cpu.cfs_quota_us`);
    const period = tryRead(`${dir}/cpu.cfs_period_us`);
    if (quota !== null && period !== null) return ratio(quota, period);
  }
  return null;
}

function ratio(quota: string | undefined, period: string | undefined): number | null {
  const q = Number(quota);
  const p = Number(period);
  if (!Number.isFinite(q) || !Number.isFinite(p) || q <= 0 || p <= 0) return null;
  return q / p;
}
