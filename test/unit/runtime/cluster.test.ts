import { describe, expect, it } from 'vitest';
import { initialHeapMb, workerExecArgv } from '../../../src/runtime/cluster.js';

const server = { workerHeapMb: 192, workerInitialHeapMb: 'auto' as const, workerSemiSpaceMb: 0 };

describe('workerExecArgv', () => {
  it("keeps this process's flags and adds the configured heap sizes (0 adds nothing)", () => {
    expect(workerExecArgv(server, ['--enable-source-maps'], ['--enable-source-maps'])).toEqual([
      '--enable-source-maps',
      '--max-old-space-size=192',
      '--initial-old-space-size=64',
    ]);
    expect(workerExecArgv({ workerHeapMb: 0, workerInitialHeapMb: 0, workerSemiSpaceMb: 4 }, [], [])).toEqual(['--max-semi-space-size=4']);
  });

  it('leaves a flag the operator set, on the command line or in NODE_OPTIONS, with dashes or underscores', () => {
    expect(workerExecArgv(server, ['--max-old-space-size=512'], ['--max-old-space-size=512'])).toEqual([
      '--max-old-space-size=512',
      '--initial-old-space-size=170',
    ]);
    // From NODE_OPTIONS: inherited by the fork through the environment, so not repeated here.
    expect(workerExecArgv(server, [], ['--initial_old_space_size=8'])).toEqual(['--max-old-space-size=192']);
  });
});

describe('initialHeapMb', () => {
  it('is a third of the heap limit by default, 64 MB without a limit, or what is set', () => {
    expect(initialHeapMb({ workerHeapMb: 192, workerInitialHeapMb: 'auto' })).toBe(64);
    expect(initialHeapMb({ workerHeapMb: 48, workerInitialHeapMb: 'auto' })).toBe(16);
    expect(initialHeapMb({ workerHeapMb: 0, workerInitialHeapMb: 'auto' })).toBe(64);
    expect(initialHeapMb({ workerHeapMb: 192, workerInitialHeapMb: 0 })).toBe(0);
    expect(initialHeapMb({ workerHeapMb: 192, workerInitialHeapMb: 100 })).toBe(100);
  });

  it("follows the operator's heap limit when one is set on the command line or in NODE_OPTIONS", () => {
    expect(initialHeapMb({ workerHeapMb: 192, workerInitialHeapMb: 'auto' }, ['--max-old-space-size=48'])).toBe(16);
    expect(workerExecArgv(server, [], ['--max_old_space_size=48'])).toEqual(['--initial-old-space-size=16']);
  });
});
