import { describe, expect, it } from 'vitest';
import { HeapPressure, oldGenerationLimit, processFlags, sampleHeap, type HeapSample } from '../../../src/runtime/heap-pressure.js';

const MB = 1024 * 1024;

function scripted(ratios: number[]): { pressure: HeapPressure; seen: Array<[boolean, number]> } {
  let i = 0;
  const sample = (): HeapSample => ({ oldUsed: ratios[Math.min(i++, ratios.length - 1)]! * 100 * MB, oldLimit: 100 * MB });
  const pressure = new HeapPressure({ highRatio: 0.8, sample, now: () => 0 });
  const seen: Array<[boolean, number]> = [];
  pressure.onSample((high, s) => seen.push([high, s.oldUsed / s.oldLimit]));
  return { pressure, seen };
}

describe('HeapPressure', () => {
  it('turns high at the high mark, stays high down to the low mark (7/8 of it), and signals every sample while high and once on the way back', () => {
    const { pressure, seen } = scripted([0.5, 0.79, 0.8, 0.75, 0.701, 0.699, 0.75]);
    const states: boolean[] = [];
    for (let n = 0; n < 7; n++) {
      pressure.check();
      states.push(pressure.high);
    }
    expect(states).toEqual([false, false, true, true, true, false, false]);
    // Nothing is signalled while normal; each high sample is, and the one that ends it.
    expect(seen).toEqual([
      [true, 0.8],
      [true, 0.75],
      [true, 0.701],
      [false, 0.699],
    ]);
  });

  it('samples again when read and the last sample is older than freshMs (a burst of connections within one turn of the event loop)', () => {
    let t = 0;
    let used = 10;
    let samples = 0;
    const pressure = new HeapPressure({ highRatio: 0.8, freshMs: 10, now: () => t, sample: () => (samples++, { oldUsed: used, oldLimit: 100 }) });
    expect(pressure.high).toBe(false);
    expect(samples).toBe(1);
    used = 90;
    t = 5;
    expect(pressure.high).toBe(false); // 5 ms old: not sampled again
    expect(samples).toBe(1);
    t = 10;
    expect(pressure.high).toBe(true);
    expect(samples).toBe(2);
  });

  it('rejects ratios that could never turn high or never turn low', () => {
    expect(() => new HeapPressure({ highRatio: 0 })).toThrow(/highRatio/);
    expect(() => new HeapPressure({ highRatio: 1 })).toThrow(/highRatio/);
    expect(() => new HeapPressure({ highRatio: 0.8, lowRatio: 0.8 })).toThrow(/lowRatio/);
  });

  it('samples on a timer once started, and stops', async () => {
    let calls = 0;
    const pressure = new HeapPressure({ highRatio: 0.5, intervalMs: 5, sample: () => (calls++, { oldUsed: 60, oldLimit: 100 }) }).start();
    await new Promise((r) => setTimeout(r, 60));
    pressure.stop();
    expect(pressure.high).toBe(true);
    const after = calls;
    expect(after).toBeGreaterThan(1);
    await new Promise((r) => setTimeout(r, 30));
    expect(calls).toBe(after);
  });
});

describe('oldGenerationLimit', () => {
  it('is --max-old-space-size when set (the last one wins, dashes or underscores)', () => {
    expect(oldGenerationLimit(['--max-old-space-size=96'], 144 * MB)).toBe(96 * MB);
    expect(oldGenerationLimit(['--max-old-space-size=96', '--max_old_space_size=200'], 248 * MB)).toBe(200 * MB);
  });

  it("is otherwise V8's heap limit less three semi-spaces (16 MB each unless set)", () => {
    expect(oldGenerationLimit([], 2048 * MB)).toBe((2048 - 48) * MB);
    expect(oldGenerationLimit(['--max-semi-space-size=4'], 2048 * MB)).toBe((2048 - 12) * MB);
    expect(oldGenerationLimit(['--max-old-space-size=0'], 2048 * MB)).toBe((2048 - 48) * MB);
  });
});

describe('processFlags', () => {
  it('puts NODE_OPTIONS first, so the command line (which Node lets win) is the last, winning value', () => {
    const saved = process.env.NODE_OPTIONS;
    process.env.NODE_OPTIONS = '--max-old-space-size=2048';
    try {
      const flags = processFlags();
      expect(flags[0]).toBe('--max-old-space-size=2048');
      expect(flags.slice(1)).toEqual(process.execArgv);
      expect(oldGenerationLimit([...flags, '--max-old-space-size=100'], 148 * MB)).toBe(100 * MB);
    } finally {
      if (saved === undefined) delete process.env.NODE_OPTIONS;
      else process.env.NODE_OPTIONS = saved;
    }
  });
});

describe('sampleHeap', () => {
  it("reads this process's old generation: some of it in use, below the limit", () => {
    const s = sampleHeap(10_000 * MB);
    expect(s.oldUsed).toBeGreaterThan(MB);
    expect(s.oldUsed).toBeLessThan(s.oldLimit);
  });
});

describe('HeapPressure listeners', () => {
  it('a listener that throws neither stops the others nor escapes', () => {
    const pressure = new HeapPressure({ highRatio: 0.5, now: () => 0, sample: () => ({ oldUsed: 60, oldLimit: 100 }) });
    const seen: boolean[] = [];
    pressure.onSample(() => {
      throw new Error('boom');
    });
    pressure.onSample((high) => seen.push(high));
    const warnings: string[] = [];
    const onWarning = (w: Error): void => void warnings.push(w.message);
    process.on('warning', onWarning);
    expect(() => pressure.check()).not.toThrow();
    expect(seen).toEqual([true]);
    return new Promise<void>((resolve) =>
      setImmediate(() => {
        process.off('warning', onWarning);
        expect(warnings.some((m) => m.includes('boom'))).toBe(true);
        resolve();
      }),
    );
  });
});
