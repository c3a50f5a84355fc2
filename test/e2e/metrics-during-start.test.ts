/**
 * /metrics answers while the cluster primary is still starting its workers: the worker-connections
 * gauge must not read the pool before it exists (it threw "Cannot access 'pool' before initialization").
 */
import { afterAll, describe, expect, it } from 'vitest';
import { rmSync } from 'node:fs';
import { killIfRunning, startServe, type ServerProcess } from '../support/cli.js';
import { serveConfigYaml, writeServeDir } from '../support/harness.js';

describe('a scrape while the workers start', () => {
  let dir: string | undefined;
  let server: ServerProcess | undefined;
  afterAll(() => {
    killIfRunning(server);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('gets 200, not 500', async () => {
    let config: string;
    ({ dir, config } = await writeServeDir('meshcert-metrics-start-', serveConfigYaml({ workers: 2, inventory: false })));
    const statuses: number[] = [];
    let polling: Promise<void> | undefined;
    server = await startServe(['--config', config], {}, (_child, output) => {
      polling = (async () => {
        for (let i = 0; i < 2000; i++) {
          const port = /"port":(\d+),"msg":"admin server listening"/.exec(output())?.[1];
          if (port) statuses.push((await fetch(`http://127.0.0.1:${port}/metrics`)).status);
          if (/^(?![^\n]*"worker":)[^\n]*"msg":"meshcert serving"/m.test(output())) return;
          await new Promise((r) => setTimeout(r, 20));
        }
      })();
    });
    await polling;
    expect(statuses.length).toBeGreaterThan(0);
    expect(statuses.filter((s) => s !== 200)).toEqual([]);
    server.child.kill('SIGTERM');
    expect(await server.exited).toBe(0);
  }, 60_000);
});
