import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { startServer } from '../../../bench/lib/server.js';

let dir: string | undefined;
afterEach(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});

const INVENTORY_OPEN = '{"store":"sqlite","path":"/x/inventory.db","msg":"inventory store open"}';

/**
 * A wrapper (--server-wrapper) that logs the lines the bench waits for (its SQLite inventory open,
 * unless told otherwise) and then execs a stand-in for the server (sleep) with the PID the bench
 * started, writing the command line it was given.
 */
function fakeServerWrapper(inventoryLine = INVENTORY_OPEN): { wrapper: string; argsFile: string } {
  dir = mkdtempSync(join(tmpdir(), 'meshcert-bench-server-'));
  const argsFile = join(dir, 'args');
  const wrapper = join(dir, 'wrapper.sh');
  writeFileSync(wrapper, `#!/bin/sh\nprintf '%s\\n' "$@" > '${argsFile}'\necho '${inventoryLine}'\necho '{"port":4321,"msg":"meshcert serving"}'\nexec sleep 60\n`);
  chmodSync(wrapper, 0o755);
  return { wrapper, argsFile };
}

describe('startServer', () => {
  it("starts the server through --server-wrapper with node's command line, and says a server that was killed (the OOM killer's SIGKILL) instead of waiting for it for ever", async () => {
    const { wrapper, argsFile } = fakeServerWrapper();
    const server = await startServer('/repo', '/repo/meshcert.yaml', join(dir!, 'server.log'), ['--max-old-space-size=96'], wrapper);
    expect(server.port).toBe(4321);
    expect(readFileSync(argsFile, 'utf8').trim().split('\n')).toEqual([process.execPath, '--max-old-space-size=96', '/repo/dist/cli.js', 'serve', '--config', '/repo/meshcert.yaml']);
    const exited = new Promise((r) => server.child.once('exit', r));
    server.child.kill('SIGKILL');
    await exited;
    expect(await server.stop()).toBe('SIGKILL');
  });

  it('refuses a server that does not say its SQLite inventory is open (the inventory is part of what is measured)', async () => {
    const { wrapper } = fakeServerWrapper('{"msg":"inventory off"}');
    await expect(startServer('/repo', '/repo/meshcert.yaml', join(dir!, 'server.log'), [], wrapper)).rejects.toThrow(/did not say its SQLite inventory is open/);
  });

  it('stops a running server with SIGTERM and gives the signal that ended it', async () => {
    const { wrapper } = fakeServerWrapper();
    const server = await startServer('/repo', '/repo/meshcert.yaml', join(dir!, 'server.log'), [], wrapper);
    // sleep does not handle SIGTERM: it dies of it.
    expect(await server.stop()).toBe('SIGTERM');
  });
});
