import { describe, expect, it } from 'vitest';
import { FairLimiter } from '../../../src/auth/fair-limiter.js';

/** A task held until `release()`; `started` says whether it began. */
function held(): { task: () => Promise<string>; release: () => void; started: () => boolean } {
  let release!: () => void;
  let began = false;
  const done = new Promise<void>((r) => (release = r));
  return {
    task: () => {
      began = true;
      return done.then(() => 'done');
    },
    release,
    started: () => began,
  };
}

const timeout = (): Error => new Error('timeout');
const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('FairLimiter', () => {
  it('lets one key use every slot while it is alone', async () => {
    const limiter = new FairLimiter(3, 10_000);
    const tasks = [held(), held(), held(), held()];
    const runs = tasks.map((t) => limiter.run('gateway', t.task, timeout));
    await tick();
    expect(tasks.map((t) => t.started())).toEqual([true, true, true, false]);
    tasks.forEach((t) => t.release());
    await Promise.all(runs);
    expect(limiter.stats).toEqual({ running: 0, keys: 0 });
  });

  it('gives a freed slot to a waiting key with fewer tasks running, ahead of the busy key\'s own queue', async () => {
    const limiter = new FairLimiter(2, 10_000);
    const flood = Array.from({ length: 5 }, () => held());
    const floodRuns = flood.map((t) => limiter.run('10.0.0.66', t.task, timeout));
    const other = held();
    const otherRun = limiter.run('10.0.0.7', other.task, timeout);
    await tick();
    expect(flood.map((t) => t.started())).toEqual([true, true, false, false, false]);
    expect(other.started()).toBe(false);
    // One slot frees: the other key, with none running, gets it, not the flood's third task.
    flood[0]!.release();
    await floodRuns[0];
    await tick();
    expect(other.started()).toBe(true);
    expect(flood[2]!.started()).toBe(false);
    other.release();
    expect(await otherRun).toBe('done');
    await tick();
    expect(flood[2]!.started()).toBe(true);
    flood.forEach((t) => t.release());
    await Promise.all(floodRuns);
    expect(limiter.stats).toEqual({ running: 0, keys: 0 });
  });

  it('never runs more than its capacity, and a waiter gives up after maxWaitMs with the caller\'s error', async () => {
    const limiter = new FairLimiter(1, 50);
    const first = held();
    const run = limiter.run('k', first.task, timeout);
    await expect(limiter.run('j', async () => 'late', () => new Error('waited too long'))).rejects.toThrow('waited too long');
    expect(limiter.stats).toEqual({ running: 1, keys: 1 });
    first.release();
    expect(await run).toBe('done');
    expect(await limiter.run('j', async () => 'next', timeout)).toBe('next');
    expect(limiter.stats).toEqual({ running: 0, keys: 0 });
  });

  it('frees the slot when a task fails', async () => {
    const limiter = new FairLimiter(1, 1_000);
    await expect(limiter.run('k', () => Promise.reject(new Error('boom')), timeout)).rejects.toThrow('boom');
    expect(await limiter.run('k', async () => 'ok', timeout)).toBe('ok');
  });

  it('among keys with as many running, gives the slot to the longest waiting, and frees the slot of a task that throws at once', async () => {
    const limiter = new FairLimiter(1, 10_000);
    const first = held();
    const firstRun = limiter.run('a', first.task, timeout);
    const order: string[] = [];
    const runs = ['b', 'c', 'd'].map((k) => limiter.run(k, async () => void order.push(k), timeout));
    const throwing = limiter.run('e', () => {
      throw new Error('sync');
    }, timeout);
    first.release();
    await firstRun;
    await Promise.all(runs);
    await expect(throwing).rejects.toThrow('sync');
    expect(order).toEqual(['b', 'c', 'd']);
    expect(await limiter.run('f', async () => 'free', timeout)).toBe('free');
    expect(limiter.stats).toEqual({ running: 0, keys: 0 });
  });

  it('serves a key that has waited half of maxWaitMs before keys with fewer running (a gateway is not passed over until it times out)', async () => {
    const limiter = new FairLimiter(2, 400);
    const gw1 = held();
    const gwRun = limiter.run('gateway', gw1.task, timeout);
    const blocker = held();
    const blockerRun = limiter.run('pod-0', blocker.task, timeout);
    const order: string[] = [];
    const gw2 = limiter.run('gateway', async () => void order.push('gateway'), timeout);
    await new Promise((r) => setTimeout(r, 250)); // past half of maxWaitMs
    const fresh = limiter.run('pod-1', async () => void order.push('pod-1'), timeout);
    blocker.release();
    await blockerRun;
    await Promise.all([gw2, fresh]);
    // The gateway's waiter, overdue, got the freed slot ahead of the new key with none running.
    expect(order).toEqual(['gateway', 'pod-1']);
    gw1.release();
    await gwRun;
    expect(limiter.stats).toEqual({ running: 0, keys: 0 });
  });
});
