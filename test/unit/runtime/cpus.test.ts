import { availableParallelism } from 'node:os';
import { describe, expect, it } from 'vitest';
import { cgroupCpuQuota, usableCpus } from '../../../src/runtime/cpus.js';

/** A filesystem of the given files; anything else is missing. */
const files =
  (f: Record<string, string>) =>
  (path: string): string => {
    if (!(path in f)) throw Object.assign(new Error(`ENOENT: ${path}`), { code: 'ENOENT' });
    return f[path]!;
  };

describe('cgroupCpuQuota', () => {
  it.each<[string, Record<string, string>, number | null]>([
    ['a cgroup v2 limit of 2 CPUs', { '/sys/fs/cgroup/cpu.max': '200000 100000\n' }, 2],
    ['a cgroup v2 limit of 1.5 CPUs', { '/sys/fs/cgroup/cpu.max': '150000 100000' }, 1.5],
    ['no cgroup v2 limit', { '/sys/fs/cgroup/cpu.max': 'max 100000' }, null],
    ['a cgroup v1 limit', { '/sys/fs/cgroup/cpu/cpu.cfs_quota_us': '300000', '/sys/fs/cgroup/cpu/cpu.cfs_period_us': '100000' }, 3],
    ['a cgroup v1 limit under cpu,cpuacct', { '/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us': '50000', '/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us': '100000' }, 0.5],
    ['no cgroup v1 limit (-1)', { '/sys/fs/cgroup/cpu/cpu.cfs_quota_us': '-1', '/sys/fs/cgroup/cpu/cpu.cfs_period_us': '100000' }, null],
    ['no cgroup files at all', {}, null],
    [
      'the smallest cgroup v2 limit on the way up from the process cgroup (a systemd unit\'s CPUQuota)',
      { '/proc/self/cgroup': '0::/system.slice/meshcert.service\n', '/sys/fs/cgroup/system.slice/meshcert.service/cpu.max': '150000 100000', '/sys/fs/cgroup/system.slice/cpu.max': 'max 100000', '/sys/fs/cgroup/cpu.max': '400000 100000' },
      1.5,
    ],
    [
      'a cgroup v1 limit in the process\'s own cpu hierarchy, bounded by its parent\'s',
      {
        '/proc/self/cgroup': '5:memory:/kubepods/pod1/c1\n4:cpu,cpuacct:/kubepods/pod1/c1\n',
        '/sys/fs/cgroup/cpu,cpuacct/kubepods/pod1/c1/cpu.cfs_quota_us': '-1',
        '/sys/fs/cgroup/cpu,cpuacct/kubepods/pod1/c1/cpu.cfs_period_us': '100000',
        '/sys/fs/cgroup/cpu,cpuacct/kubepods/pod1/cpu.cfs_quota_us': '200000',
        '/sys/fs/cgroup/cpu,cpuacct/kubepods/pod1/cpu.cfs_period_us': '100000',
        '/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us': '-1',
        '/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us': '100000',
      },
      2,
    ],
    [
      'a container\'s cgroup v1 limit at the mount root, its host path not existing in the mount',
      { '/proc/self/cgroup': '4:cpu,cpuacct:/kubepods/pod1/c1\n', '/sys/fs/cgroup/cpu/cpu.cfs_quota_us': '150000', '/sys/fs/cgroup/cpu/cpu.cfs_period_us': '100000' },
      1.5,
    ],
    ['a parent\'s cgroup v2 limit when the process cgroup has none', { '/proc/self/cgroup': '0::/a/b\n', '/sys/fs/cgroup/a/b/cpu.max': 'max 100000', '/sys/fs/cgroup/a/cpu.max': '300000 100000' }, 3],
  ])('reads %s', (_name, f, expected) => {
    expect(cgroupCpuQuota(files(f))).toBe(expected);
  });
});

describe('usableCpus', () => {
  it('is the CPUs the process may run on, bounded by the quota rounded up, and at least 1', () => {
    const cpus = availableParallelism();
    expect(usableCpus(files({}))).toBe(cpus);
    expect(usableCpus(files({ '/sys/fs/cgroup/cpu.max': '50000 100000' }))).toBe(1);
    expect(usableCpus(files({ '/sys/fs/cgroup/cpu.max': `${(cpus + 8) * 100000} 100000` }))).toBe(cpus);
    if (cpus >= 2) expect(usableCpus(files({ '/sys/fs/cgroup/cpu.max': '150000 100000' }))).toBe(2);
  });
});
