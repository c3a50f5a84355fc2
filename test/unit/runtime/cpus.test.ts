import { availableParallelism } from 'node:os';
import { describe, expect, it } from 'vitest';
import { autoWorkers, usableCpus } from '../../../src/runtime/cpus.js';
import { files } from '../../support/fake-files.js';

describe('usableCpus', () => {
  it('is the CPUs the process may run on, bounded by the quota rounded up, and at least 1', () => {
    const cpus = availableParallelism();
    expect(usableCpus(files({}))).toBe(cpus);
    expect(usableCpus(files({ '/sys/fs/cgroup/cpu.max': '50000 100000' }))).toBe(1);
    expect(usableCpus(files({ '/sys/fs/cgroup/cpu.max': `${(cpus + 8) * 100000} 100000` }))).toBe(cpus);
    if (cpus >= 2) expect(usableCpus(files({ '/sys/fs/cgroup/cpu.max': '150000 100000' }))).toBe(2);
  });
});

describe('autoWorkers', () => {
  const MiB = 2 ** 20;
  const limited = (cpus: number, memoryMib?: number): Record<string, string> => ({
    '/sys/fs/cgroup/cpu.max': `${cpus * 100000} 100000`,
    ...(memoryMib === undefined ? {} : { '/sys/fs/cgroup/memory.max': String(memoryMib * MiB) }),
  });
  it.runIf(availableParallelism() >= 2)('runs a worker per CPU unless the memory limit cannot hold them at their peak; then fewer, down to one process serving alone', () => {
    expect(autoWorkers(files(limited(2)))).toEqual({ count: 2, cpus: 2, memoryLimitMib: null, boundByMemory: false });
    expect(autoWorkers(files(limited(2, 512)))).toEqual({ count: 2, cpus: 2, memoryLimitMib: 512, boundByMemory: false });
    // bench/HISTORY.md round 27: two workers were OOM-killed in the storm at 256 MiB, ran at the limit at 288 and with room at 320.
    expect(autoWorkers(files(limited(2, 320)))).toMatchObject({ count: 2, boundByMemory: false });
    expect(autoWorkers(files(limited(2, 304)))).toMatchObject({ count: 2, boundByMemory: false });
    expect(autoWorkers(files(limited(2, 303)))).toMatchObject({ count: 1, boundByMemory: true });
    expect(autoWorkers(files(limited(2, 256)))).toEqual({ count: 1, cpus: 2, memoryLimitMib: 256, boundByMemory: true });
    expect(autoWorkers(files(limited(2, 64)))).toMatchObject({ count: 1, boundByMemory: true });
    expect(autoWorkers(files(limited(1, 8192)))).toMatchObject({ count: 1, boundByMemory: false });
  });
});
