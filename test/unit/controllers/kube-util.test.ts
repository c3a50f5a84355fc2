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
  it('starts again from the initial backoff after a watch resumed without a list, and forgets the last error', async () => {
    const f = fakeInformer();
    const announced: number[] = [];
    const log = { warn: (o: { retryInMs?: number }) => void announced.push(o.retryInMs ?? -1), info() {}, debug() {}, error() {} };
    const runner = new InformerRunner(f.informer, { name: 'namespaces', verbs: 'list and watch namespaces', backoffInitialMs: 5, backoffMaxMs: 320, log: log as never });
    runner.start();
    try {
      for (let i = 0; i < 5; i++) {
        await new Promise((r) => setTimeout(r, 30));
        f.fail(new Error('connection reset'));
        // resumed well before the next drop
        await expect.poll(() => f.starts(), { timeout: 2_000 }).toBe(i + 2);
        await new Promise((r) => setTimeout(r, 20));
        expect(runner.lastError).toBeUndefined();
      }
      // Each isolated drop waits the initial backoff, not one doubled at every drop of the process's life.
      expect(announced).toEqual([5, 5, 5, 5, 5]);
    } finally {
      await runner.stop();
    }
  });
});
