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
  const own = tryRead('/proc/self/cgroup') ?? '';
  /**
   * The smallest limit `read` finds in this process's cgroup `self` and every one above it, under
   * `mount`: a systemd unit's CPUQuota sits in a child of the mount's root, and a container sees
   * its own cgroup at the root (its namespace, or its cgroup bind-mounted there, where the longer
   * paths do not exist). Undefined when no level has the file.
   */
  const smallestUp = (mount: string, self: string, read: (dir: string) => number | null | undefined): number | null | undefined => {
    let found = false;
    let limit: number | null = null;
    for (let dir = self; ; dir = dir.slice(0, dir.lastIndexOf('/')) || '/') {
      const r = read(`${mount}${dir === '/' ? '' : dir}`);
      if (r !== undefined) {
        found = true;
        if (r !== null && (limit === null || r < limit)) limit = r;
      }
      if (dir === '/') return found ? limit : undefined;
    }
  };
  // cgroup v2: "max 100000" (no limit) or "<quota> <period>".
  const v2Self = /^0::(\/.*)$/m.exec(own)?.[1] ?? '/';
  const v2 = smallestUp('/sys/fs/cgroup', v2Self, (dir) => {
    const text = tryRead(`${dir}/cpu.max`);
    if (text === null) return undefined;
    const [quota, period] = text.split(/\s+/);
    return ratio(quota, period);
  });
  if (v2 !== undefined) return v2;
  // cgroup v1: the cpu controller's hierarchy ("4:cpu,cpuacct:/kubepods/..."); a quota of -1 is no limit.
  const v1Self = /^\d+:(?:[^:]*,)?cpu(?:,[^:]*)?:(\/.*)$/m.exec(own)?.[1] ?? '/';
  for (const mount of ['/sys/fs/cgroup/cpu', '/sys/fs/cgroup/cpu,cpuacct']) {
    const v1 = smallestUp(mount, v1Self, (dir) => {
      const quota = tryRead(`${dir}/cpu.cfs_quota_us`);
      const period = tryRead(`${dir}/cpu.cfs_period_us`);
      return quota === null || period === null ? undefined : ratio(quota, period);
    });
    if (v1 !== undefined) return v1;
  }
  return null;
}

function ratio(quota: string | undefined, period: string | undefined): number | null {
  const q = Number(quota);
  const p = Number(period);
  if (!Number.isFinite(q) || !Number.isFinite(p) || q <= 0 || p <= 0) return null;
  return q / p;
}
