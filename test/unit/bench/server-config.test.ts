/**
 * The bench's config: what a run's options change (server.workers, server.maxConcurrentStreams,
 * inventory.failClosed) reaches the config meshcert loads, and nothing else moves from the defaults.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { writeConfig } from '../../../bench/lib/server.js';
import { loadConfigFile } from '../../../src/config/load.js';

let dir: string | undefined;
afterEach(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});

function load(choices?: Parameters<typeof writeConfig>[2]) {
  dir = mkdtempSync(join(tmpdir(), 'meshcert-bench-config-'));
  return loadConfigFile(writeConfig(dir, join(dir, 'jwks.json'), choices), {}).config;
}

describe('bench writeConfig', () => {
  it('leaves the server at its defaults when the run changes nothing', () => {
    const c = load();
    expect(c.server.workers).toBe('auto');
    expect(c.server.maxConcurrentStreams).toBe('auto');
    expect(c.server.maxConnections).toBe(5000);
    expect(c.inventory.failClosed).toBe(false);
  });

  it('writes server.maxConnections', () => {
    expect(load({ maxConnections: 2000 }).server.maxConnections).toBe(2000);
  });

  it("writes the memory-bounded shape's settings and failClosed", () => {
    const c = load({ workers: '1', maxConcurrentStreams: 16, failClosed: true });
    expect(c.server.workers).toBe(1);
    expect(c.server.maxConcurrentStreams).toBe(16);
    expect(c.inventory.failClosed).toBe(true);
    expect(c.server.listen).toBe('127.0.0.1:0');
  });
});
