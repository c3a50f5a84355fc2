import { describe, expect, it } from 'vitest';
import { WorkSlicer } from '../../../src/authority/slicer.js';

function busy(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    /* spin: stands in for a signature */
  }
}

/**
 * Queues `n` jobs of 1 ms each, then an immediate; returns how many jobs ran before it (the
 * immediate runs when the slicer yields to the event loop).
 */
async function jobsBeforeIo(s: WorkSlicer, n: number): Promise<number> {
  const events: string[] = [];
  const jobs = Array.from({ length: n }, (_, i) => s.run(() => (busy(1), events.push(`job${i}`))));
  setImmediate(() => events.push('io'));
  await Promise.all(jobs);
  await new Promise(setImmediate);
  return events.indexOf('io');
}

describe('WorkSlicer', () => {
  it('settles each job with its result or its exception, in order', async () => {
    const s = new WorkSlicer(1);
    const order: number[] = [];
    const results = await Promise.allSettled([
      s.run(() => (order.push(1), 'a')),
      s.run(() => {
        order.push(2);
        throw new Error('refused');
      }),
      s.run(() => (order.push(3), 'c')),
    ]);
    expect(order).toEqual([1, 2, 3]);
    expect(results.map((r) => (r.status === 'fulfilled' ? r.value : (r.reason as Error).message))).toEqual(['a', 'refused', 'c']);
    expect(s.pending).toBe(0);
  });

  it('yields to the event loop between slices, so I/O and timers run inside a burst', async () => {
    // An immediate queued after the burst must not wait for all 20 jobs (20 ms of work).
    const io = await jobsBeforeIo(new WorkSlicer(2), 20);
    expect(io).toBeGreaterThan(0);
    expect(io).toBeLessThan(10);
  });

  it('starts again after the queue drained', async () => {
    const s = new WorkSlicer(1);
    expect(await s.run(() => 1)).toBe(1);
    expect(await s.run(() => 2)).toBe(2);
  });
});

describe('WorkSlicer under a deep backlog', () => {
  it('works through the queue without yielding for deepBudgetMs once it holds `backlog` jobs', async () => {
    const s = new WorkSlicer(1, 8, 1000);
    const events: string[] = [];
    const jobs = Array.from({ length: 20 }, (_, i) => s.run(() => (busy(1), events.push(`job${i}`))));
    setImmediate(() => events.push('io'));
    await Promise.all(jobs);
    expect(events).not.toContain('io');
    await new Promise(setImmediate);
    // 20 queued ≥ 8: one drain ran all of them before the event loop got control back.
    expect(events.indexOf('io')).toBe(20);
  });

  it('still yields every deepBudgetMs, so timers and I/O run inside a queue of seconds', async () => {
    // About 20 jobs a slice: the immediate runs after the first slice, long before the last job.
    const io = await jobsBeforeIo(new WorkSlicer(1, 8, 20), 100);
    expect(io).toBeGreaterThan(0);
    expect(io).toBeLessThan(60);
  });
});

describe('WorkSlicer under steady load', () => {
  it('does not keep a slot for every call when the queue never runs empty', async () => {
    const s = new WorkSlicer(1, 64);
    let done = 0;
    let minPending = Infinity;
    // Eight closed-loop callers: each queues its next call when the last settles, so calls are
    // always pending at the end of a slice (about 1.6 ms of work queued against a 1 ms budget).
    await new Promise<void>((resolve) => {
      const caller = (): void => {
        void s.run(() => busy(0.2)).then(() => {
          minPending = Math.min(minPending, s.pending);
          if (++done >= 3000) resolve();
          else caller();
        });
      };
      for (let i = 0; i < 8; i++) caller();
    });
    const held = (s as unknown as { queue: unknown[] }).queue.length;
    expect(minPending).toBeGreaterThan(0); // the queue never drained during the run
    expect(held).toBeLessThan(1024 + 64);
  });
});
