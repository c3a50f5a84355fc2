/**
 * Runs tasks one at a time, in the order given: each starts once the one before has settled,
 * whether it resolved or rejected. A task handles its own failure; one that rejects anyway does
 * not hold up or fail the tasks after it.
 */
export function inOrder(): (task: () => Promise<void>) => Promise<void> {
  let tail: Promise<void> = Promise.resolve();
  return (task) => {
    const run = tail.then(task);
    tail = run.catch(() => undefined);
    return run;
  };
}
