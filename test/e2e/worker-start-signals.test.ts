/**
 * A worker process ignores SIGINT and SIGTERM (and SIGHUP) from its first moment, not only once its
 * modules have loaded: a Ctrl-C or a kill of the process group reaching a worker still starting
 * would otherwise kill it, and the primary would fail its start instead of stopping cleanly.
 */
import { fork } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { handlesSignal, ROOT } from '../support/cli.js';

describe('a worker process starting', () => {
  it('survives SIGTERM and SIGINT sent the moment its CLI starts, long before its modules have loaded', async () => {
    // Forked as the primary forks it (an IPC channel, a cluster worker's environment), but never
    // sent a config: it waits for one, and would stay.
    const env = { ...process.env, NODE_UNIQUE_ID: '1', MESHCERT_WORKER: '1' };
    const child = fork('src/cli.ts', ['worker'], { cwd: ROOT, env, execArgv: ['--import', 'tsx/esm'], stdio: 'ignore' });
    try {
      // SIGHUP's handler is the last of the three the CLI sets as it starts: the moment to send the others.
      await expect.poll(() => handlesSignal(child.pid!, 1), { timeout: 30_000, interval: 1 }).toBe(true);
      child.kill('SIGTERM');
      child.kill('SIGINT');
      await new Promise((resolve) => setTimeout(resolve, 1000));
      expect([child.exitCode, child.signalCode]).toEqual([null, null]);
    } finally {
      child.kill('SIGKILL');
    }
  }, 60_000);
});
