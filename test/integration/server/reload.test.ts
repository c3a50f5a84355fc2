import { status } from '@grpc/grpc-js';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CaClient } from '../../../src/client/ca-client.js';
import type { RunningServer } from '../../../src/runtime/serve.js';
import { makeCsr } from '../../fixtures/csr.js';
import { mintToken, serveConfigYaml, writeTestJwks } from '../../support/harness.js';
import { serveFile, type ServedFile } from '../../support/serve-file.js';

const ID = (ns: string, sa: string) => `spiffe://cluster.local/ns/${ns}/sa/${sa}`;

function configYaml(policy: string): string {
  return serveConfigYaml({ workers: 1, inventory: false, extra: `${policy}\n` });
}

describe('hot reload of the policy', () => {
  let dir: string;
  let file: string;
  let server: RunningServer;
  let client: CaClient;
  let serving: ServedFile;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'meshcert-reload-'));
    await writeTestJwks(join(dir, 'jwks.json'));
    file = join(dir, 'meshcert.yaml');
    writeFileSync(file, configYaml(''));
    serving = await serveFile(file);
    ({ server, client } = serving);
  });
  afterAll(async () => {
    await serving?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('rejects a bad policy with a log line and a metric, keeps the old one, then applies a good one without failing any request under load', async () => {
    const allowedCsr = (await makeCsr({ uris: [ID('shop', 'web')] })).pem;
    const allowedToken = await mintToken({ ns: 'shop', sa: 'web' });
    const legacyCsr = (await makeCsr({ uris: [ID('legacy', 'app')] })).pem;
    const legacyToken = await mintToken({ ns: 'legacy', sa: 'app' });

    // Concurrent load for the whole test: every request must succeed.
    let stop = false;
    let served = 0;
    const failures: unknown[] = [];
    const load = Promise.all(
      Array.from({ length: 8 }, async () => {
        while (!stop) {
          await client.createCertificate({ csrPem: allowedCsr, token: allowedToken }).then(
            () => served++,
            (e: unknown) => failures.push(e),
          );
        }
      }),
    );

    // A policy that does not validate (unknown issuer) is rejected; the old one stays in force.
    writeFileSync(file, configYaml('policy:\n  rules:\n    - name: bad\n      issuer: nowhere\n'));
    expect(await server.reload('test')).toBe(false);
    expect(serving.logs()).toMatch(/configuration reload rejected/);
    expect(serving.logs()).toMatch(/issuer \\"nowhere\\" is not configured/);
    await client.createCertificate({ csrPem: legacyCsr, token: legacyToken }); // still allowed

    // A good policy takes effect.
    writeFileSync(file, configYaml('policy:\n  rules:\n    - name: no-legacy\n      match: { namespaces: [legacy] }\n      deny: "legacy is frozen"\n'));
    expect(await server.reload('test')).toBe(true);
    await expect(client.createCertificate({ csrPem: legacyCsr, token: legacyToken })).rejects.toMatchObject({ code: status.PERMISSION_DENIED, details: expect.stringContaining('legacy is frozen') });

    // A file change alone also reloads (polling watcher).
    writeFileSync(file, configYaml(''));
    await expect.poll(() => client.createCertificate({ csrPem: legacyCsr, token: legacyToken }).then(() => 'ok', () => 'denied'), { timeout: 10_000, interval: 200 }).toBe('ok');

    stop = true;
    await load;
    expect(failures).toEqual([]);
    expect(served).toBeGreaterThan(20);
    const metrics = await (await fetch(`http://127.0.0.1:${server.adminPort}/metrics`)).text();
    expect(metrics).toMatch(/meshcert_config_reloads_total\{result="rejected"\} 1/);
    expect(metrics).toMatch(/meshcert_config_reloads_total\{result="applied"\} [2-9]/);
  }, 30_000);
});
