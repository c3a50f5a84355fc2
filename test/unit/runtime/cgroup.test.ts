import { describe, expect, it } from 'vitest';
import { cgroupCpuQuota, cgroupMemoryLimit } from '../../../src/runtime/cgroup.js';
import { files } from '../../support/fake-files.js';

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

describe('cgroupMemoryLimit', () => {
  it.each<[string, Record<string, string>, number | null]>([
    ['a cgroup v2 limit', { '/sys/fs/cgroup/memory.max': '536870912\n' }, 536870912],
    ['no cgroup v2 limit', { '/sys/fs/cgroup/memory.max': 'max' }, null],
    ['a cgroup v1 limit', { '/sys/fs/cgroup/memory/memory.limit_in_bytes': '335544320' }, 335544320],
    ['no cgroup v1 limit (near 2^63)', { '/sys/fs/cgroup/memory/memory.limit_in_bytes': '9223372036854771712' }, null],
    ['no cgroup files at all', {}, null],
    [
      "the smallest cgroup v2 limit on the way up from the process cgroup (a pod's limit above its container's none)",
      { '/proc/self/cgroup': '0::/kubepods/pod1/c1\n', '/sys/fs/cgroup/kubepods/pod1/c1/memory.max': 'max', '/sys/fs/cgroup/kubepods/pod1/memory.max': '402653184', '/sys/fs/cgroup/kubepods/memory.max': '8589934592' },
      402653184,
    ],
    [
      "a cgroup v1 limit in the process's own memory hierarchy, not the cpu one",
      { '/proc/self/cgroup': '5:memory:/kubepods/pod1/c1\n4:cpu,cpuacct:/other\n', '/sys/fs/cgroup/memory/kubepods/pod1/c1/memory.limit_in_bytes': '268435456' },
      268435456,
    ],
  ])('reads %s', (_name, f, expected) => {
    expect(cgroupMemoryLimit(files(f))).toBe(expected);
  });
});
