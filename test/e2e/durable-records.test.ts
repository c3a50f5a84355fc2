/**
 * inventory.failClosed: a certificate is answered only once its record is stored, so a server
 * killed outright (SIGKILL, an OOM kill) right after answering has lost no record. Without it the
 * record waits up to 100 ms in the worker and 200 ms in the primary's buffer, and this fails.
 * The real CLI, with cluster workers (records cross IPC) and in one process.
 */
import Database from 'better-sqlite3';
import { X509Certificate } from 'node:crypto';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CaClient } from '../../src/client/ca-client.js';
import { makeCsr } from '../fixtures/csr.js';
import { readiness, serveRuns } from '../support/cli.js';
import { mintToken, serveConfigYaml } from '../support/harness.js';

/** A primary's worker processes (its direct children). */
function children(pid: number): number[] {
  return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
}

/** The sockets a process holds (a worker: its IPC channel and the connections handed to it). */
function sockets(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).filter((fd) => {
    try {
      return readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith('socket:');
    } catch {
      return false; // closed meanwhile
    }
  }).length;
}

describe('inventory.failClosed: no certificate answered without its record', () => {
  const serve = serveRuns();

  for (const workers of [2, 1]) {
    it(`with ${workers === 2 ? 'two worker processes' : 'one process'}, the record of a certificate answered is in SQLite though the server is killed at once`, async () => {
      const { s, dir } = await serve('meshcert-durable-', serveConfigYaml({ workers, extra: 'inventory: { failClosed: true }\n' }));
      if (workers === 2) await expect.poll(() => readiness(s.output), { timeout: 20_000 }).toBe('2/2 workers serving');
      const pids = [...children(s.child.pid!), s.child.pid!];
      const rootPem = readFileSync(join(dir, 'data/ca/root-cert.pem'), 'utf8');
      // One connection each: the primary hands new connections to the worker with the fewest
      // (test/e2e/connection-balance.test.ts), so both workers answer, and both number their
      // records from 1: each must get its own answers.
      const clients = Array.from({ length: 6 }, () => new CaClient({ address: `127.0.0.1:${s.port}`, rootPem }));
      const token = await mintToken({ ns: 'default', sa: 'app' });
      const csrs = await Promise.all(Array.from({ length: 8 }, () => makeCsr({ uris: ['spiffe://cluster.local/ns/default/sa/app'] })));
      try {
        // Two first (the server warm), then six at once, the server killed the moment the last is answered.
        for (const csr of csrs.slice(0, 2)) await clients[0]!.createCertificate({ csrPem: csr.pem, token });
        const workerPids = pids.slice(0, -1);
        // One process has no workers to spread over; two must both be there, or the check below is empty.
        expect(workerPids).toHaveLength(workers === 2 ? 2 : 0);
        const before = workerPids.map(sockets);
        const chains = await Promise.all(clients.map((c, i) => c.createCertificate({ csrPem: csrs[i + 2]!.pem, token })));
        // Every worker took some of the new connections (read in a few ms; unshipped records would wait 100).
        const gained = workerPids.map((pid, i) => sockets(pid) - before[i]!);
        for (const pid of pids) process.kill(pid, 'SIGKILL');
        for (const g of gained) expect(g).toBeGreaterThan(0);
        await s.exited;
        const db = new Database(join(dir, 'data/inventory.db'));
        try {
          const find = db.prepare('SELECT serial, spiffe_id FROM inventory_certificates WHERE fingerprint = ?');
          for (const chain of chains) {
            const leaf = new X509Certificate(chain[0]!);
            const row = find.get(leaf.fingerprint256.replaceAll(':', '').toLowerCase()) as { serial: string; spiffe_id: string } | undefined;
            expect(row).toBeDefined();
            expect(row!.spiffe_id).toBe('spiffe://cluster.local/ns/default/sa/app');
            expect(BigInt(`0x${row!.serial}`)).toBe(BigInt(`0x${leaf.serialNumber}`));
          }
        } finally {
          db.close();
        }
      } finally {
        for (const c of clients) c.close();
      }
    }, 60_000);
  }
});
