import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

/**
 * In a child process: a SIGTERM is caught while the first handler is installed but not yet
 * dispatched, then the handlers are swapped in the same tick. Prints which handler saw it.
 */
function swapWithPendingSignal(swap: 'handOverSignal' | 'off-then-on'): string {
  const script = `
    import { handOverSignal } from './src/runtime/signals.ts';
    const early = () => console.log('early');
    const late = () => console.log('late');
    process.on('SIGTERM', early);
    process.kill(process.pid, 'SIGTERM');
    // Long enough for the kernel to deliver it to libuv's signal pipe, not for the loop to dispatch it.
    const until = Date.now() + 50;
    while (Date.now() < until);
    if (${JSON.stringify(swap)} === 'handOverSignal') handOverSignal('SIGTERM', early, late);
    else { process.off('SIGTERM', early); process.on('SIGTERM', late); }
    setTimeout(() => { console.log('done'); process.exit(0); }, 300);
  `;
  return execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 }).trim();
}

describe('handOverSignal', () => {
  it('never leaves a moment without a handler: a signal caught during the swap reaches the new one', () => {
    expect(swapWithPendingSignal('handOverSignal')).toBe('late\ndone');
  }, 90_000);

  it('is needed: removing the old handler first drops that signal (Node stops watching with no listener)', () => {
    expect(swapWithPendingSignal('off-then-on')).toBe('done');
  }, 90_000);
});
