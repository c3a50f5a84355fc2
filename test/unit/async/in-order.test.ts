import { describe, expect, it } from 'vitest';
import { inOrder } from '../../../src/async/in-order.js';

/** A promise settled from outside, and whether its task has started. */
function gate(): { started: boolean; open: () => void; fail: (e: Error) => void; task: () => Promise<void> } {
  let open!: () => void;
  let fail!: (e: Error) => void;
  const g = {
    started: false,
    open: () => open(),
    fail: (e: Error) => fail(e),
    task: () => {
      g.started = true;
      return new Promise<void>((resolve, reject) => {
        open = resolve;
        fail = reject;
      });
    },
  };
  return g;
}
const turn = () => new Promise((r) => setImmediate(r));

describe('inOrder', () => {
  it('starts each task only once the one before has settled, in the order given', async () => {
    const queue = inOrder();
    const [a, b, c] = [gate(), gate(), gate()];
    const done: string[] = [];
    void queue(a.task).then(() => done.push('a'));
    void queue(b.task).then(() => done.push('b'));
    void queue(c.task).then(() => done.push('c'));
    await turn();
    expect([a.started, b.started, c.started]).toEqual([true, false, false]);
    a.open();
    await turn();
    expect([b.started, c.started]).toEqual([true, false]);
    b.open();
    await turn();
    c.open();
    await turn();
    expect(done).toEqual(['a', 'b', 'c']);
  });

  it('goes on after a task that rejects, and gives that rejection to its caller only', async () => {
    const queue = inOrder();
    const [a, b] = [gate(), gate()];
    const first = queue(a.task);
    const second = queue(b.task);
    await turn();
    a.fail(new Error('CA files unreadable'));
    await expect(first).rejects.toThrow('CA files unreadable');
    await turn();
    expect(b.started).toBe(true);
    b.open();
    await expect(second).resolves.toBeUndefined();
  });

  it('runs a task given after the queue went idle at once', async () => {
    const queue = inOrder();
    await queue(async () => {});
    const a = gate();
    void queue(a.task);
    await turn();
    expect(a.started).toBe(true);
  });
});
