import { describe, expect, it } from 'vitest';
import { InformerRunner } from '../../../src/controllers/kube-util.js';

/** A stand-in informer: its first start lists (synced), later ones resume a watch without listing. */
function fakeInformer(): { informer: never; fail: (err: Error) => void; starts: () => number } {
  let onError: ((e: unknown) => void) | undefined;
  let synced: (() => void) | undefined;
  let starts = 0;
  const informer = {
    on: (ev: string, cb: (e: unknown) => void) => {
      if (ev === 'error') onError = cb;
    },
    onSynced: (cb: () => void) => {
      synced = cb;
    },
    start: async () => {
      starts++;
      if (starts === 1) synced?.();
    },
    stop: async () => {},
  };
  return { informer: informer as never, fail: (err) => onError?.(err), starts: () => starts };
}

describe('InformerRunner', () => {
  const recorder = (): { announced: number[]; log: never } => {
    const announced: number[] = [];
    const log = { warn: (o: { retryInMs?: number }) => void announced.push(o.retryInMs ?? -1), info() {}, debug() {}, error() {} };
    return { announced, log: log as never };
  };

  it('starts again from the initial backoff after a watch that resumed without a list stayed up for stableMs', async () => {
    const f = fakeInformer();
    const { announced, log } = recorder();
    const runner = new InformerRunner(f.informer, { name: 'namespaces', verbs: 'list and watch namespaces', backoffInitialMs: 5, backoffMaxMs: 320, stableMs: 100, log });
    runner.start();
    try {
      for (let i = 0; i < 4; i++) {
        await new Promise((r) => setTimeout(r, 30));
        f.fail(new Error('connection reset'));
        await expect.poll(() => f.starts(), { timeout: 2_000 }).toBe(i + 2);
        await new Promise((r) => setTimeout(r, 150)); // up longer than stableMs before the next drop
      }
      // Each isolated drop waits the initial backoff, not one doubled at every drop of the process's life.
      expect(announced).toEqual([5, 5, 5, 5]);
    } finally {
      await runner.stop();
    }
  });

  it('keeps growing the backoff while watches are dropped as soon as they start', async () => {
    const f = fakeInformer();
    const { announced, log } = recorder();
    const runner = new InformerRunner(f.informer, { name: 'namespaces', verbs: 'list and watch namespaces', backoffInitialMs: 5, backoffMaxMs: 320, stableMs: 10_000, log });
    runner.start();
    try {
      for (let i = 0; i < 4; i++) {
        await expect.poll(() => f.starts(), { timeout: 2_000 }).toBe(i + 1);
        f.fail(new Error('connection reset'));
      }
      expect(announced).toEqual([5, 10, 20, 40]);
      expect(runner.lastError).toMatch(/connection reset/);
    } finally {
      await runner.stop();
    }
  });
});
