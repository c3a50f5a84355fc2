import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ROOT } from '../../support/cli.js';

/**
 * Every package a serving process loads costs memory in each of the primary and its workers (a few
 * MB each; @kubernetes/client-node about 60). These are loaded only when configuration asks for
 * them, and a static import would silently undo that.
 */
describe('module footprint of a serving process (SQLite inventory, no Kubernetes)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'meshcert-footprint-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('does not load the PostgreSQL driver, the gRPC client, the Kubernetes client or the certificate builder', () => {
    const out = execFileSync(process.execPath, ['--import', 'tsx', join(ROOT, 'test/fixtures/module-probe.mts'), ROOT, dir], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
    const loaded = JSON.parse(out) as string[];
    expect(loaded).toContain('pino'); // the probe sees the packages that are loaded
    for (const heavy of ['pg', '@grpc/grpc-js', '@kubernetes/client-node', '@peculiar/x509']) expect(loaded).not.toContain(heavy);
   }, 90_000);
});
