/** The controllers' work queue (src/controllers/work-queue.ts): pure, no Kubernetes involved. */
import { describe, expect, it } from 'vitest';
import { WorkQueue } from '../../../src/controllers/work-queue.js';
import { until } from './support.js';

describe('WorkQueue', () => {
  it('deduplicates queued keys and re-runs a key added while it is being processed', async () => {
    const runs: string[] = [];
    let release: (() => void) | undefined;
    const q = new WorkQueue(async (k) => {
      runs.push(k);
      if (k === 'slow' && runs.filter((r) => r === 'slow').length === 1) await new Promise<void>((r) => (release = r));
    }, { concurrency: 2, qps: 1000, burst: 1000 });
    q.add('a');
    q.add('a');
    q.add('slow');
    q.resume();
    await until(() => release !== undefined, 1_000, 'slow to start');
    q.add('slow'); // while running: once more afterwards, not in parallel
    q.add('slow');
    expect(runs.filter((r) => r === 'slow')).toHaveLength(1);
    release!();
    await q.idle();
    expect(runs.sort()).toEqual(['a', 'slow', 'slow']);
    await q.stop();
  });

  it('holds every key back after a failure holdsAll says all would share, with a backoff counted across keys, until a success', async () => {
    const starts: Array<{ key: string; at: number }> = [];
    const retries: number[] = [];
    let refuse = true;
    const q = new WorkQueue(
      async (key) => {
        starts.push({ key, at: Date.now() });
        if (refuse) throw Object.assign(new Error('forbidden'), { shared: true });
      },
      { concurrency: 1, qps: 1000, burst: 1000, retryBaseMs: 100, retryMaxMs: 400, holdsAll: (err) => (err as { shared?: boolean }).shared === true },
      (_key, _err, _n, retryInMs) => retries.push(retryInMs),
    );
    for (let i = 0; i < 50; i++) q.add(`k${i}`);
    q.resume();
    await new Promise((r) => setTimeout(r, 1_000));
    // Without the hold: 50 keys at 1000/s, then their own retries. With it: about one start per
    // hold (100, 200, 400, 400 ms, jittered).
    expect(starts.length).toBeGreaterThanOrEqual(2);
    expect(starts.length).toBeLessThanOrEqual(6);
    expect(q.held).toBe(true);
    expect(starts[1]!.at - starts[0]!.at).toBeGreaterThanOrEqual(80);
    // Growing across keys (each a different key, with no failure of its own before): 100, 200, 400 ms, ±10 %.
    expect(new Set(starts.map((s) => s.key)).size).toBe(starts.length);
    expect(retries[0]).toBeGreaterThanOrEqual(90);
    expect(retries[1]).toBeGreaterThanOrEqual(180);
    // The API server lets meshcert write again: the next start succeeds, the hold ends, and every key is done.
    refuse = false;
    await until(() => !q.held && q.length === 0, 5_000, 'every key written');
    expect(new Set(starts.map((s) => s.key)).size).toBe(50);
    await q.stop();
  });

  it('retries a failing key with growing backoff and forgets the failures after a success', async () => {
    const times: number[] = [];
    const errors: number[] = [];
    const q = new WorkQueue(
      async () => {
        times.push(Date.now());
        if (times.length <= 3) throw new Error('boom');
      },
      { qps: 1000, burst: 1000, retryBaseMs: 40, retryMaxMs: 1_000 },
      (_k, _e, n) => errors.push(n),
    );
    q.resume();
    q.add('k');
    await until(() => times.length === 4, 3_000, 'four attempts');
    expect(errors).toEqual([1, 2, 3]);
    const gaps = times.slice(1).map((t, i) => t - times[i]!);
    expect(gaps[0]).toBeGreaterThanOrEqual(30);
    expect(gaps[2]).toBeGreaterThan(gaps[0]!); // 40, 80, 160 ms (±10 %)
    expect(q.numRequeues('k')).toBe(0);
    await q.stop();
  });

  it('waits retryBaseMs × 2^(failures−1) before each retry, capped at retryMaxMs, ±10 %', async () => {
    const retries: number[] = [];
    const q = new WorkQueue(
      async () => {
        if (retries.length < 4) throw new Error('boom');
      },
      { qps: 1000, burst: 1000, retryBaseMs: 20, retryMaxMs: 50 },
      (_k, _e, _n, retryInMs) => retries.push(retryInMs),
    );
    q.resume();
    q.add('k');
    await until(() => retries.length === 4 && q.length === 0, 3_000, 'four retries');
    [20, 40, 50, 50].forEach((ms, i) => {
      expect(retries[i]).toBeGreaterThanOrEqual(ms * 0.9);
      expect(retries[i]).toBeLessThanOrEqual(ms * 1.1);
    });
    await q.stop();
  });

  it('runs a key added after a delay at the sooner of two times asked for', async () => {
    const runs: number[] = [];
    const start = Date.now();
    const q = new WorkQueue(async () => void runs.push(Date.now() - start), { qps: 1000, burst: 1000 });
    q.resume();
    q.addAfter('k', 60_000);
    q.addAfter('k', 20); // sooner: replaces the first
    q.addAfter('k', 30_000); // later: ignored
    await until(() => runs.length === 1, 2_000, 'the sooner run');
    expect(runs[0]).toBeLessThan(1_000);
    await q.idle();
    expect(runs).toHaveLength(1);
    await q.stop();
  });

  it('drops what is queued at stop()', async () => {
    let n = 0;
    const q = new WorkQueue(async () => {
      n++;
    });
    q.add('a');
    q.add('b');
    expect(q.length).toBe(2);
    await q.stop();
    expect(q.length).toBe(0);
    await q.idle();
    q.resume();
    q.add('c');
    await new Promise((r) => setTimeout(r, 20));
    expect(n).toBe(0);
  });

  it('rate-limits handler starts with its token bucket, and does nothing while paused', async () => {
    let n = 0;
    const q = new WorkQueue(async () => {
      n++;
    }, { qps: 20, burst: 2, concurrency: 10 });
    for (let i = 0; i < 6; i++) q.add(`k${i}`);
    await new Promise((r) => setTimeout(r, 50));
    expect(n).toBe(0); // paused until resume()
    const start = Date.now();
    q.resume();
    await q.idle();
    expect(n).toBe(6);
    // 2 at once, then 4 more at 20/s: at least ~200 ms.
    expect(Date.now() - start).toBeGreaterThanOrEqual(180);
    await q.stop();
  });
});
