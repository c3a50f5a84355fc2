import { availableParallelism } from 'node:os';
import { describe, expect, it } from 'vitest';
import { autoWorkers, concurrentStreams, servingShape, shapeNotices, usableCpus } from '../../../src/runtime/auto-shape.js';
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

describe('concurrentStreams', () => {
  const memory = (mib: number): Record<string, string> => ({ '/sys/fs/cgroup/memory.max': String(mib * 2 ** 20) });
  it('is the number set, whatever the memory limit', () => {
    expect(concurrentStreams(250, files(memory(128)))).toBe(250);
    expect(concurrentStreams(1, files({}))).toBe(1);
  });

  it("is 100 for 'auto' without a memory limit or with room for two workers, 16 below that (cgroup v2 and v1)", () => {
    expect(concurrentStreams('auto', files({}))).toBe(100);
    expect(concurrentStreams('auto', files({ '/sys/fs/cgroup/memory.max': 'max' }))).toBe(100);
    expect(concurrentStreams('auto', files(memory(304)))).toBe(100);
    // bench/HISTORY.md round 29: one process at 200 MiB was OOM-killed in the storm with 100 streams, served it with 16.
    expect(concurrentStreams('auto', files(memory(303)))).toBe(16);
    expect(concurrentStreams('auto', files(memory(200)))).toBe(16);
    const v1 = { '/proc/self/cgroup': '4:memory:/kubepods/pod1\n', '/sys/fs/cgroup/memory/kubepods/pod1/memory.limit_in_bytes': String(256 * 2 ** 20) };
    expect(concurrentStreams('auto', files(v1))).toBe(16);
  });
});

describe('servingShape', () => {
  const limited = (cpus: number, memoryMib: number) =>
    files({ '/sys/fs/cgroup/cpu.max': `${cpus * 100000} 100000`, '/sys/fs/cgroup/memory.max': String(memoryMib * 2 ** 20) });
  it.runIf(availableParallelism() >= 2)("resolves both 'auto' values from the limits, and keeps numbers set by hand", () => {
    expect(servingShape({ workers: 'auto', maxConcurrentStreams: 'auto' }, limited(2, 1536))).toEqual({ workers: 2, maxConcurrentStreams: 100 });
    expect(servingShape({ workers: 'auto', maxConcurrentStreams: 'auto' }, limited(2, 256))).toEqual({ workers: 1, maxConcurrentStreams: 16 });
    expect(servingShape({ workers: 3, maxConcurrentStreams: 40 }, limited(2, 256))).toEqual({ workers: 3, maxConcurrentStreams: 40 });
  });
});

describe('shapeNotices', () => {
  const limited = (cpus: number, memoryMib?: number) =>
    files({ '/sys/fs/cgroup/cpu.max': `${cpus * 100000} 100000`, ...(memoryMib === undefined ? {} : { '/sys/fs/cgroup/memory.max': String(memoryMib * 2 ** 20) }) });
  const auto = { workers: 'auto', maxConcurrentStreams: 'auto' } as const;

  it('says nothing when the CPUs set the workers and memory leaves the streams at 100', () => {
    expect(shapeNotices(auto, limited(1), [])).toEqual([]);
    expect(shapeNotices(auto, limited(2, 1024), [])).toEqual([]);
  });

  it.runIf(availableParallelism() >= 2)('says when the memory limit set the workers, with the numbers chosen', () => {
    const n = shapeNotices(auto, limited(2, 256), ['--max-semi-space-size=4']);
    expect(n.map((x) => [x.level, x.fields])).toEqual([
      ['info', { workers: 1, cpus: 2, memoryLimitMib: 256 }],
      ['info', { maxConcurrentStreams: 16, memoryLimitMib: 256 }],
    ]);
    expect(n[0]!.message).toContain('server.workers auto');
  });

  it('says when the memory limit set the streams', () => {
    const n = shapeNotices({ workers: 1, maxConcurrentStreams: 'auto' }, limited(1, 256), ['--max-semi-space-size=4']);
    expect(n).toEqual([{ level: 'info', fields: { maxConcurrentStreams: 16, memoryLimitMib: 256 }, message: expect.stringContaining('server.maxConcurrentStreams auto: 16 calls per connection') }]);
  });

  it('says nothing of settings chosen by hand that the memory limit can hold', () => {
    expect(shapeNotices({ workers: 1, maxConcurrentStreams: 16 }, limited(2, 256), ['--max-semi-space-size=4'])).toEqual([]);
    expect(shapeNotices({ workers: 2, maxConcurrentStreams: 100 }, limited(2, 512), [])).toEqual([]);
  });

  it('warns of more workers set by hand than the memory limit holds at a storm, saying what auto would run', () => {
    const n = shapeNotices({ workers: 2, maxConcurrentStreams: 16 }, limited(2, 256), []);
    expect(n).toEqual([{ level: 'warn', fields: { workers: 2, memoryLimitMib: 256, neededMib: 304 }, message: expect.stringContaining("'auto' would run 1") }]);
    expect(shapeNotices({ workers: 2, maxConcurrentStreams: 100 }, limited(2, 304), [])).toEqual([]);
    expect(shapeNotices({ workers: 3, maxConcurrentStreams: 100 }, limited(2, 304), [])[0]).toMatchObject({ level: 'warn', fields: { workers: 3, neededMib: 424 } });
  });

  it('warns of more streams set by hand than the memory-bounded 16 under a limit that would choose 16', () => {
    const n = shapeNotices({ workers: 1, maxConcurrentStreams: 100 }, limited(1, 256), ['--max-semi-space-size=4']);
    expect(n).toEqual([{ level: 'warn', fields: { maxConcurrentStreams: 100, memoryLimitMib: 256 }, message: expect.stringContaining('may get meshcert OOM-killed') }]);
  });

  it('warns under the memory a storm was measured to need, whatever the settings', () => {
    const n = shapeNotices({ workers: 1, maxConcurrentStreams: 16 }, limited(1, 128), ['--max-semi-space-size=4']);
    expect(n).toEqual([{ level: 'warn', fields: { memoryLimitMib: 128, neededMib: 160 }, message: expect.stringContaining('below the 160 MiB a restart storm was measured to need') }]);
    expect(shapeNotices({ workers: 1, maxConcurrentStreams: 16 }, limited(1, 160), ['--max-semi-space-size=4'])).toEqual([]);
  });

  it("suggests a young generation for one process serving under a limit where V8 gives it 1 MB semi-spaces, unless one is set", () => {
    const n = shapeNotices({ workers: 1, maxConcurrentStreams: 16 }, limited(1, 512), ['--max-old-space-size=96']);
    expect(n).toEqual([{ level: 'info', fields: { memoryLimitMib: 512 }, message: expect.stringContaining('NODE_OPTIONS=--max-semi-space-size=4') }]);
    expect(shapeNotices({ workers: 1, maxConcurrentStreams: 16 }, limited(1, 512), ['--max_semi_space_size=2'])).toEqual([]);
    expect(shapeNotices({ workers: 1, maxConcurrentStreams: 16 }, limited(1, 513), [])).toEqual([]);
    // Cluster workers get server.workerSemiSpaceMb; without a limit V8 gives 16 MB.
    expect(shapeNotices({ workers: 2, maxConcurrentStreams: 16 }, limited(2, 512), [])).toEqual([]);
    expect(shapeNotices({ workers: 1, maxConcurrentStreams: 16 }, limited(1), [])).toEqual([]);
  });
});
