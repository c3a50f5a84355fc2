import { describe, expect, it } from 'vitest';
import { KeyedLimiter } from '../../../src/auth/keyed-limiter.js';

/** A task that runs until `release()` is called, recording how many of its key ran at once. */
function gate(): { task: () => Promise<string>; release: () => void } {
  let release!: () => void;
  const done = new Promise<void>((r) => (release = r));
  return { task: () => done.then(() => 'done'), release };
}

describe('KeyedLimiter', () => {
  it('runs at most perKey tasks of one key at once, the rest in order, while other keys run freely', async () => {
    const limiter = new KeyedLimiter(2, 10_000);
    const started: string[] = [];
    const gates = Array.from({ length: 4 }, () => gate());
    const timeout = (): Error => new Error('timeout');
    const runs = gates.map((g, i) => limiter.run('10.0.0.1', () => (started.push(`a${i}`), g.task()), timeout));
    const other = limiter.run('10.0.0.2', async () => (started.push('b'), 'b'), timeout);
    expect(await other).toBe('b');
    await Promise.resolve();
    expect(started).toEqual(['a0', 'a1', 'b']);
    gates[0]!.release();
    await runs[0];
    await new Promise((r) => setImmediate(r));
    expect(started).toEqual(['a0', 'a1', 'b', 'a2']);
    for (const g of gates) g.release();
    expect(await Promise.all(runs)).toEqual(['done', 'done', 'done', 'done']);
    expect(limiter.size).toBe(0);
  });

  it('gives up a wait after maxWaitMs with the caller\'s error, and the slot bound still holds', async () => {
    const limiter = new KeyedLimiter(1, 50);
    const g = gate();
    const first = limiter.run('k', g.task, () => new Error('unused'));
    await expect(limiter.run('k', async () => 'late', () => new Error('waited too long'))).rejects.toThrow('waited too long');
    g.release();
    expect(await first).toBe('done');
    expect(await limiter.run('k', async () => 'next', () => new Error('unused'))).toBe('next');
    expect(limiter.size).toBe(0);
  });

  it('frees the slot when a task fails', async () => {
    const limiter = new KeyedLimiter(1, 1_000);
    await expect(limiter.run('k', () => Promise.reject(new Error('boom')), () => new Error('t'))).rejects.toThrow('boom');
    expect(await limiter.run('k', async () => 'ok', () => new Error('t'))).toBe('ok');
  });
});
