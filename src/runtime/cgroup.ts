/**
 * Limits of the cgroup this process runs in (cgroup v2, else v1), read from /proc/self/cgroup and
 * /sys/fs/cgroup. `readFile` is the file system (tests give their own).
 */
type ReadFile = (path: string) => string;

/** The cgroup CPU limit in CPUs (v2 `cpu.max`, else v1 CFS quota), or null when there is none. */
export function cgroupCpuQuota(readFile: ReadFile): number | null {
  const read = tryReading(readFile);
  const own = read('/proc/self/cgroup') ?? '';
  // cgroup v2: "max 100000" (no limit) or "<quota> <period>".
  const v2 = smallestUp('/sys/fs/cgroup', v2Self(own), (dir) => {
    const text = read(`${dir}/cpu.max`);
    if (text === null) return undefined;
    const [quota, period] = text.split(/\s+/);
    return ratio(quota, period);
  });
  if (v2 !== undefined) return v2;
  // cgroup v1: the cpu controller's hierarchy ("4:cpu,cpuacct:/kubepods/..."); a quota of -1 is no limit.
  for (const mount of ['/sys/fs/cgroup/cpu', '/sys/fs/cgroup/cpu,cpuacct']) {
    const v1 = smallestUp(mount, v1Self(own, 'cpu'), (dir) => {
      const quota = read(`${dir}/cpu.cfs_quota_us`);
      const period = read(`${dir}/cpu.cfs_period_us`);
      return quota === null || period === null ? undefined : ratio(quota, period);
    });
    if (v1 !== undefined) return v1;
  }
  return null;
}

/**
 * The cgroup memory limit in bytes (v2 `memory.max`, else v1 `memory.limit_in_bytes`), or null
 * when there is none ("max" in v2; v1 says none with a number near 2^63).
 */
export function cgroupMemoryLimit(readFile: ReadFile): number | null {
  const read = tryReading(readFile);
  const own = read('/proc/self/cgroup') ?? '';
  const v2 = smallestUp('/sys/fs/cgroup', v2Self(own), (dir) => {
    const text = read(`${dir}/memory.max`);
    return text === null ? undefined : bytes(text);
  });
  if (v2 !== undefined) return v2;
  const v1 = smallestUp('/sys/fs/cgroup/memory', v1Self(own, 'memory'), (dir) => {
    const text = read(`${dir}/memory.limit_in_bytes`);
    return text === null ? undefined : bytes(text);
  });
  return v1 ?? null;
}

function tryReading(readFile: ReadFile): (path: string) => string | null {
  return (path) => {
    try {
      return readFile(path).trim();
    } catch {
      return null;
    }
  };
}

/** This process's cgroup v2 path ("0::/kubepods/..."), or the root. */
function v2Self(own: string): string {
  return /^0::(\/.*)$/m.exec(own)?.[1] ?? '/';
}

/** This process's path in a cgroup v1 controller's hierarchy ("4:cpu,cpuacct:/kubepods/..."), or the root. */
function v1Self(own: string, controller: string): string {
  return new RegExp(`^\\d+:(?:[^:]*,)?${controller}(?:,[^:]*)?:(/.*)$`, 'm').exec(own)?.[1] ?? '/';
}

/**
 * The smallest limit `read` finds in this process's cgroup `self` and every one above it, under
 * `mount`: a systemd unit's CPUQuota sits in a child of the mount's root, and a container sees
 * its own cgroup at the root (its namespace, or its cgroup bind-mounted there, where the longer
 * paths do not exist). Undefined when no level has the file; null when none of them sets a limit.
 */
function smallestUp(mount: string, self: string, read: (dir: string) => number | null | undefined): number | null | undefined {
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
}

function ratio(quota: string | undefined, period: string | undefined): number | null {
  const q = Number(quota);
  const p = Number(period);
  if (!Number.isFinite(q) || !Number.isFinite(p) || q <= 0 || p <= 0) return null;
  return q / p;
}

function bytes(text: string): number | null {
  const n = Number(text);
  // cgroup v1 writes "no limit" as the largest page-aligned signed 64-bit number.
  return Number.isFinite(n) && n > 0 && n < 2 ** 60 ? n : null;
}
