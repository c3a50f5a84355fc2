/**
 * A worker process ignores SIGINT and SIGTERM (and SIGHUP) from its first moment, not only once its
 * modules have loaded: a Ctrl-C or a kill of the process group reaching a worker still starting
 * would otherwise kill it, and the primary would fail its start instead of stopping cleanly.
 */
import { fork } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ROOT } from '../support/cli.js';

/**
 * Whether the process has a handler for SIGHUP (/proc/PID/status's SigCgt, bit 0): the last of the
 * three the CLI sets as it starts, so the moment to send the others.
 */
function handlesSighup(pid: number): boolean {
  try {
    return (BigInt(`0x${/^SigCgt:\s*([0-9a-f]+)$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]}`) & 1n) === 1n;
  } catch {
    return false; // gone, or not yet there
  }
}

describe('a worker process starting', () => {
  it('survives SIGTERM and SIGINT sent the moment its CLI starts, long before its modules have loaded', async () => {
    // Forked as the primary forks it (an IPC channel, a cluster worker's environment), but never
    // sent a config: it waits for one, and would stay.
    const env = { ...process.env, NODE_UNIQUE_ID: '1', MESHCERT_WORKER: '1' };
    const child = fork('src/cli.ts', ['worker'], { cwd: ROOT, env, execArgv: ['--import', 'tsx/esm'], stdio: 'ignore' });
    try {
      await expect.poll(() => handlesSighup(child.pid!), { timeout: 30_000, interval: 1 }).toBe(true);
      child.kill('SIGTERM');
      child.kill('SIGINT');
      await new Promise((resolve) => setTimeout(resolve, 1000));
      expect([child.exitCode, child.signalCode]).toEqual([null, null]);
    } finally {
      child.kill('SIGKILL');
    }
  }, 60_000);
});
