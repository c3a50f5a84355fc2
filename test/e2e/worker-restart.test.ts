/**
 * The cluster primary keeps its workers serving: a worker that dies is replaced, a replacement
 * that cannot start is retried (with a growing pause) until one serves, and a shutdown during
 * those retries stops at once and cleanly; when every worker dies at once, new connections wait
 * for a replacement instead of being refused. The real CLI with two worker processes.
 */
import { randomUUID } from 'node:crypto';
import { appendFileSync, copyFileSync, readFileSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { initCaDir } from '../../src/ca/init.js';
import { makeCsr } from '../fixtures/csr.js';
import { killIfRunning, readiness, startServe, type ServerProcess } from '../support/cli.js';
import { mintToken, serveConfigYaml, writeServeDir } from '../support/harness.js';
import { grpcRequestFrame } from '../../bench/lib/grpc-frame.js';
import { connectTls, unaryCall } from '../support/raw-grpc.js';
import { createTestDatabase, dedicatedClusterSkipReason, destroyDedicatedCluster, startDedicatedCluster, startPostgres, stopPostgres } from '../support/postgres-control.js';

/** The worker processes of a primary (its direct children). */
function workerPids(primary: number): number[] {
  return readFileSync(`/proc/${primary}/task/${primary}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
}

/** Processes started with MESHCERT_TEST_TAG=tag in their environment (a primary passes its environment to its workers). */
function tagged(tag: string): number[] {
  return readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/environ`).includes(`MESHCERT_TEST_TAG=${tag}\0`);
      } catch {
        return false; // gone, or not ours to read
      }
    })
    .map(Number);
}

/** A function making one call on a fresh connection (the primary gives it to the worker with the fewest open): its grpc-status. */
async function issuer(s: ServerProcess, dir: string): Promise<() => Promise<number | undefined>> {
  const rootPem = readFileSync(join(dir, 'data/ca/root-cert.pem'), 'utf8');
  const body = grpcRequestFrame((await makeCsr({ uris: ['spiffe://cluster.local/ns/default/sa/app'] })).pem);
  const token = await mintToken({ ns: 'default', sa: 'app' });
  return async () => {
    const session = connectTls(s.port, rootPem);
    try {
      return (await unaryCall(session, '/istio.v1.auth.IstioCertificateService/CreateCertificate', body, { authorization: `Bearer ${token}`, clusterid: 'Kubernetes' })).grpcStatus;
    } finally {
      session.destroy();
    }
  };
}

describe('worker processes that die', () => {
  let dir: string;
  let server: ServerProcess | undefined;
  afterAll(() => {
    killIfRunning(server);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('are replaced; a replacement that cannot start is retried until one serves', async () => {
    let config: string;
    ({ dir, config } = await writeServeDir('meshcert-worker-restart-', serveConfigYaml({ workers: 2 })));
    const tag = randomUUID();
    server = await startServe(['--config', config], { MESHCERT_TEST_TAG: tag });
    const s = server;
    const issue = await issuer(s, dir);
    // startServe returns at the first worker's 'serving'; the primary is up once both are.
    await expect.poll(() => readiness(s.output), { timeout: 45_000 }).toBe('2/2 workers serving');
    // Each worker logs that it serves (log lines are flushed every 250 ms, so wait for both).
    const workerServing = (): number => (s.output().match(/"worker":\d+,"listen"[^\n]*"msg":"meshcert serving"/g) ?? []).length;
    await expect.poll(workerServing, { timeout: 5_000 }).toBe(2);
    const first = workerPids(s.child.pid!);
    expect(first).toHaveLength(2);

    // A worker is killed: the other serves on, and a replacement joins.
    process.kill(first[0]!, 'SIGKILL');
    await expect.poll(() => s.output(), { timeout: 10_000 }).toMatch(/"msg":"worker died; starting a replacement"/);
    expect(await issue()).toBe(0);
    // Ready counts a replacement once it listens, not while it starts.
    await expect.poll(() => readiness(s.output), { timeout: 45_000 }).toBe('2/2 workers serving');
    await expect.poll(workerServing, { timeout: 5_000, message: 'the replacement logs that it serves (log lines are flushed every 250 ms)' }).toBe(3);

    // Now a replacement cannot start (the JWKS file is gone; the CA it would be sent by the
    // primary): the primary retries, and serves on with the worker it has.
    const key = join(dir, 'jwks.json');
    renameSync(key, `${key}.away`);
    const second = workerPids(s.child.pid!);
    process.kill(second[0]!, 'SIGKILL');
    await expect.poll(() => (s.output().match(/"msg":"replacement worker failed to start; retrying"/g) ?? []).length, { timeout: 90_000 }).toBeGreaterThanOrEqual(2);
    // Replacements come and go meanwhile; readiness counts none of them (sampled for 2 s).
    const seen = new Set<string>();
    for (let t = Date.now(); Date.now() - t < 2_000; await new Promise((r) => setTimeout(r, 40))) seen.add(await readiness(s.output));
    expect([...seen]).toEqual(['1/2 workers serving']);
    for (let i = 0; i < 4; i++) expect(await issue()).toBe(0);
    // The file is back: a later retry serves.
    renameSync(`${key}.away`, key);
    await expect.poll(() => readiness(s.output), { timeout: 45_000 }).toBe('2/2 workers serving');
    expect(await issue()).toBe(0);

    s.child.kill('SIGTERM');
    expect(await s.exited).toBe(0);
    expect(tagged(tag), 'no worker outlives the primary').toEqual([]);
  }, 240_000);

  it('a replacement started after a rejected reload signs with the CA in force, not the CA files that reload refused', async () => {
    const { dir: d, config } = await writeServeDir('meshcert-worker-ca-', serveConfigYaml({ workers: 2 }));
    let started: ServerProcess | undefined;
    try {
      const s = (started = await startServe(['--config', config]));
      await expect.poll(() => readiness(s.output), { timeout: 45_000 }).toBe('2/2 workers serving');
      // Another CA's files over the live ones, with a config no reload accepts: both refused.
      const other = join(d, 'other-ca');
      await initCaDir({ dir: other });
      appendFileSync(config, 'typo: 1\n');
      const live = join(d, 'data/ca');
      copyFileSync(join(live, 'root-cert.pem'), join(d, 'root-before.pem'));
      for (const f of ['ca-cert.pem', 'ca-key.pem', 'cert-chain.pem', 'root-cert.pem']) {
        copyFileSync(join(other, f), join(live, `.${f}`));
        renameSync(join(live, `.${f}`), join(live, f));
      }
      s.child.kill('SIGHUP');
      await expect.poll(() => s.output(), { timeout: 30_000 }).toMatch(/"msg":"configuration reload rejected/);
      process.kill(workerPids(s.child.pid!)[0]!, 'SIGKILL');
      const workerServing = (): number => (s.output().match(/"worker":\d+,"listen"[^\n]*"msg":"meshcert serving"/g) ?? []).length;
      await expect.poll(workerServing, { timeout: 45_000 }).toBe(3);
      await expect.poll(() => readiness(s.output), { timeout: 45_000 }).toBe('2/2 workers serving');
      // Connections held open together go to both workers (the fewest open): every call is
      // answered by the CA the clients trust, the one in force.
      const rootPem = readFileSync(join(d, 'root-before.pem'), 'utf8');
      const body = grpcRequestFrame((await makeCsr({ uris: ['spiffe://cluster.local/ns/default/sa/app'] })).pem);
      const token = await mintToken({ ns: 'default', sa: 'app' });
      const sessions = Array.from({ length: 6 }, () => connectTls(s.port, rootPem));
      try {
        const replies = await Promise.all(sessions.map((session) => unaryCall(session, '/istio.v1.auth.IstioCertificateService/CreateCertificate', body, { authorization: `Bearer ${token}`, clusterid: 'Kubernetes' })));
        expect(replies.map((r) => r.grpcStatus)).toEqual([0, 0, 0, 0, 0, 0]);
      } finally {
        for (const session of sessions) session.destroy();
      }
      s.child.kill('SIGTERM');
      expect(await s.exited).toBe(0);
    } finally {
      killIfRunning(started);
      rmSync(d, { recursive: true, force: true });
    }
  }, 120_000);

  it('/metrics answers while replacements start and fail, with the serving worker\'s counts', async () => {
    const { dir: d, config } = await writeServeDir('meshcert-worker-restart-', serveConfigYaml({ workers: 2 }));
    let started: ServerProcess | undefined;
    try {
      const s = (started = await startServe(['--config', config]));
      const issue = await issuer(s, d);
      await expect.poll(() => readiness(s.output), { timeout: 45_000 }).toBe('2/2 workers serving');
      const admin = /"port":(\d+),"msg":"admin server listening"/.exec(s.output())![1];
      const scrape = async (): Promise<{ status: number; body: string }> => {
        const r = await fetch(`http://127.0.0.1:${admin}/metrics`);
        return { status: r.status, body: await r.text() };
      };
      for (let i = 0; i < 3; i++) expect(await issue()).toBe(0);
      // Each worker's answer to this scrape is what the primary keeps of it if it dies.
      expect((await scrape()).body).toMatch(/^citadel_server_success_cert_issuance_count 3$/m);
      expect((await scrape()).body).toMatch(/^meshcert_worker_deaths_total\{how="signal"\} 0$/m);
      // Replacements keep starting and failing (the JWKS file is gone), never answering a scrape.
      renameSync(join(d, 'jwks.json'), join(d, 'jwks.json.away'));
      const [victim, survivor] = workerPids(s.child.pid!);
      process.kill(victim!, 'SIGKILL');
      await expect.poll(() => s.output(), { timeout: 45_000 }).toMatch(/"msg":"replacement worker failed to start; retrying"/);
      for (let i = 0; i < 2; i++) expect(await issue()).toBe(0); // served by the survivor
      for (let t = Date.now(); Date.now() - t < 3_000; ) {
        const r = await scrape();
        expect(r.status).toBe(200);
        expect(r.body).toMatch(/^meshcert_metrics_workers_unanswered 0$/m);
        // The killed worker's counts (as of its last answer) stay in the sum: a counter never falls.
        expect(Number(/^citadel_server_success_cert_issuance_count (\d+)/m.exec(r.body)?.[1])).toBe(5);
        // The kill is counted once (the replacements that fail to start are not deaths of serving workers).
        expect(r.body).toMatch(/^meshcert_worker_deaths_total\{how="signal"\} 1$/m);
        expect(r.body).toMatch(/^meshcert_worker_deaths_total\{how="exit_code"\} 0$/m);
      }
      // The log says what a kill may have cost the inventory.
      expect(s.output()).toMatch(/"signal":"SIGKILL","restarts":1,"inventory":"records of certificates it issued since its last shipment to this process \(at most 100 ms before it was killed\) are missing from the inventory, unless inventory.failClosed","msg":"worker died; starting a replacement"/);
      expect(workerPids(s.child.pid!)).toContain(survivor);
      s.child.kill('SIGTERM');
      expect(await s.exited).toBe(0);
    } finally {
      killIfRunning(started);
      rmSync(d, { recursive: true, force: true });
    }
  }, 150_000);

  it('/metrics reports a worker that does not answer in time with its last answer, so the sums do not drop', async () => {
    const { dir: d, config } = await writeServeDir('meshcert-worker-restart-', serveConfigYaml({ workers: 2 }));
    let started: ServerProcess | undefined;
    let stopped: number | undefined;
    try {
      const s = (started = await startServe(['--config', config]));
      const issue = await issuer(s, d);
      await expect.poll(() => readiness(s.output), { timeout: 45_000 }).toBe('2/2 workers serving');
      const admin = /"port":(\d+),"msg":"admin server listening"/.exec(s.output())![1];
      const scrape = async (): Promise<{ issued: number; unanswered: number; ms: number }> => {
        const t = Date.now();
        const body = await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text();
        const value = (name: string): number => Number(new RegExp(`^${name} (\\d+)`, 'm').exec(body)?.[1]);
        return { issued: value('citadel_server_success_cert_issuance_count'), unanswered: value('meshcert_metrics_workers_unanswered'), ms: Date.now() - t };
      };
      for (let i = 0; i < 6; i++) expect(await issue()).toBe(0);
      expect(await scrape()).toMatchObject({ issued: 6, unanswered: 0 });
      // One worker stops answering (stopped, as a long GC pause or a busy loop would hold it).
      stopped = workerPids(s.child.pid!)[0]!;
      process.kill(stopped, 'SIGSTOP');
      const late = await scrape();
      expect(late).toMatchObject({ issued: 6, unanswered: 1 });
      expect(late.ms).toBeLessThan(5_000); // the 2 s answer window, with room for a slow machine
      process.kill(stopped, 'SIGCONT');
      stopped = undefined;
      await expect.poll(async () => (await scrape()).unanswered, { timeout: 10_000 }).toBe(0);
      s.child.kill('SIGTERM');
      expect(await s.exited).toBe(0);
    } finally {
      if (stopped !== undefined) process.kill(stopped, 'SIGCONT');
      killIfRunning(started);
      rmSync(d, { recursive: true, force: true });
    }
  }, 150_000);

  it('a shutdown while replacements keep failing exits at once with code 0 and leaves no worker behind', async () => {
    const { dir: d, config } = await writeServeDir('meshcert-worker-restart-', serveConfigYaml({ workers: 2 }));
    let started: ServerProcess | undefined;
    try {
      const tag = randomUUID();
      const s = (started = await startServe(['--config', config], { MESHCERT_TEST_TAG: tag }));
      await expect.poll(() => readiness(s.output), { timeout: 45_000 }).toBe('2/2 workers serving');
      expect(tagged(tag)).toHaveLength(3); // the primary and its two workers
      renameSync(join(d, 'jwks.json'), join(d, 'jwks.json.away')); // replacements cannot start
      process.kill(workerPids(s.child.pid!)[0]!, 'SIGKILL');
      await expect.poll(() => s.output(), { timeout: 45_000 }).toMatch(/"msg":"replacement worker failed to start; retrying"/);
      s.child.kill('SIGTERM');
      expect(await s.exited).toBe(0);
      expect(tagged(tag), 'no worker, nor a replacement still starting, outlives the primary').toEqual([]);
      expect(s.output()).not.toMatch(/unexpected error/);
    } finally {
      killIfRunning(started);
      rmSync(d, { recursive: true, force: true });
    }
  }, 150_000);

  it('when every worker dies at once, a new connection waits for a replacement; a shutdown after that still exits', async () => {
    const { dir: d, config } = await writeServeDir('meshcert-worker-restart-', serveConfigYaml({ workers: 2 }));
    let started: ServerProcess | undefined;
    try {
      const s = (started = await startServe(['--config', config]));
      const issue = await issuer(s, d);
      const died = (): number => (s.output().match(/"msg":"worker died; starting a replacement"/g) ?? []).length;
      await expect.poll(() => readiness(s.output), { timeout: 45_000 }).toBe('2/2 workers serving');
      // Both workers have been handed connections.
      expect(await issue()).toBe(0);
      expect(await issue()).toBe(0);

      for (const pid of workerPids(s.child.pid!)) process.kill(pid, 'SIGKILL');
      await expect.poll(died, { timeout: 10_000 }).toBe(2);
      // No worker serves now (replacements start after a pause): the port stays open and the
      // connection is served once one does.
      expect(await issue()).toBe(0);

      // Again, and this time no connection after the replacements: every worker that was ever
      // handed a connection is gone when the shutdown comes, and it still exits cleanly.
      await expect.poll(() => readiness(s.output), { timeout: 45_000 }).toBe('2/2 workers serving');
      for (const pid of workerPids(s.child.pid!)) process.kill(pid, 'SIGKILL');
      await expect.poll(died, { timeout: 10_000 }).toBe(4);
      await expect.poll(() => readiness(s.output), { timeout: 45_000 }).toBe('2/2 workers serving');
      s.child.kill('SIGTERM');
      expect(await s.exited).toBe(0);
      expect(s.output()).toMatch(/"msg":"stopped"/);
    } finally {
      killIfRunning(started);
      rmSync(d, { recursive: true, force: true });
    }
  }, 200_000);

  it.skipIf(dedicatedClusterSkipReason() !== null)('with inventory.failClosed, a replacement started while the inventory refuses refuses too', async () => {
    const cluster = await startDedicatedCluster();
    const db = await createTestDatabase('replacement', cluster.url);
    const { dir: d, config } = await writeServeDir('meshcert-worker-restart-', serveConfigYaml({ workers: 2, extra: `inventory: { url: "${db.url}", failClosed: true }\n` }));
    let started: ServerProcess | undefined;
    try {
      const s = (started = await startServe(['--config', config]));
      const issue = await issuer(s, d);
      await expect.poll(() => readiness(s.output), { timeout: 45_000 }).toBe('2/2 workers serving');
      expect(await issue()).toBe(0);
      await stopPostgres(cluster);
      // Both workers refuse once the primary has seen the store fail and told them.
      await expect.poll(async () => [await issue(), await issue(), await issue(), await issue()], { timeout: 45_000, interval: 250 }).toEqual([14, 14, 14, 14]);
      process.kill(workerPids(s.child.pid!)[0]!, 'SIGKILL');
      await expect.poll(() => s.output(), { timeout: 10_000 }).toMatch(/"msg":"worker died; starting a replacement"/);
      await expect.poll(() => readiness(s.output), { timeout: 45_000 }).toBe('2/2 workers serving');
      // New connections go to the worker with the fewest: the replacement among them.
      for (let i = 0; i < 6; i++) expect(await issue()).toBe(14);
      await startPostgres(cluster);
      await expect.poll(() => issue(), { timeout: 45_000, interval: 250 }).toBe(0);
      s.child.kill('SIGTERM');
      expect(await s.exited).toBe(0);
    } finally {
      killIfRunning(started);
      rmSync(d, { recursive: true, force: true });
      await db.drop().catch(() => {});
      await destroyDedicatedCluster(cluster);
    }
  }, 240_000);
});
