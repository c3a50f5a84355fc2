/**
 * With two worker processes, the primary hands each new connection to the worker holding the
 * fewest open ones (src/runtime/dispatcher.ts), and /metrics shows the count per worker. Node's
 * round robin would alternate regardless of what each worker holds, so a few long-lived
 * connections could all end up on one worker.
 */
import { readFileSync, rmSync } from 'node:fs';
import type { ClientHttp2Session } from 'node:http2';
import { join } from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { makeCsr } from '../fixtures/csr.js';
import { adminPort, killIfRunning, startServe, type ServerProcess } from '../support/cli.js';
import { mintToken, serveConfigYaml, writeServeDir } from '../support/harness.js';
import { grpcRequestFrame } from '../../bench/lib/grpc-frame.js';
import { RawConnections, statusOf, unaryCall } from '../support/raw-grpc.js';

describe('connections across worker processes', () => {
  let dir: string;
  let server: ServerProcess | undefined;
  const connections = new RawConnections();
  afterAll(() => {
    connections.destroyAll();
    killIfRunning(server);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('go to the worker with the fewest open, as counted in meshcert_worker_connections', async () => {
    let file: string;
    ({ dir, config: file } = await writeServeDir('meshcert-balance-', serveConfigYaml({ workers: 2 })));
    server = await startServe(['--config', file]);
    const rootPem = readFileSync(join(dir, 'data/ca/root-cert.pem'), 'utf8');
    const admin = await adminPort(server!);
    /** meshcert_worker_connections by worker id. */
    const openPerWorker = async (): Promise<Record<string, number>> => {
      const text = await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text();
      return Object.fromEntries([...text.matchAll(/^meshcert_worker_connections\{worker="(\d+)"\} (\d+)$/gm)].map((m) => [m[1]!, Number(m[2])]));
    };
    /** One call as service account `sa` on a new connection, kept open; resolves with the worker that served it. */
    const callOnNewConnection = async (sa: string): Promise<{ session: ClientHttp2Session; worker: string }> => {
      const session = connections.open(server!.port, rootPem);
      const body = grpcRequestFrame((await makeCsr({ uris: [`spiffe://cluster.local/ns/default/sa/${sa}`] })).pem);
      const r = await unaryCall(session, '/istio.v1.auth.IstioCertificateService/CreateCertificate', body, { authorization: `Bearer ${await mintToken({ sa })}`, clusterid: 'Kubernetes' });
      expect(statusOf(r)).toBe('0');
      const line = new RegExp(`"worker":(\\d+),"decision":"issued","identity":"spiffe://cluster.local/ns/default/sa/${sa}"`);
      let worker = '';
      await vi.waitFor(() => (worker = line.exec(server!.output())?.[1] ?? expect.fail(`no issued line for ${sa} yet`)), { timeout: 5_000 });
      return { session, worker };
    };

    const first: Array<{ session: ClientHttp2Session; worker: string }> = [];
    for (const sa of ['c0', 'c1', 'c2', 'c3']) first.push(await callOnNewConnection(sa));
    const workers = [...new Set(first.map((c) => c.worker))].sort();
    expect(workers).toHaveLength(2);
    for (const w of workers) expect(first.filter((c) => c.worker === w)).toHaveLength(2);
    expect(await openPerWorker()).toEqual({ [workers[0]!]: 2, [workers[1]!]: 2 });

    // The client closes both connections of one worker; once the primary has heard, the next two
    // connections both go there.
    const emptied = first[0]!.worker;
    const other = workers.find((w) => w !== emptied)!;
    for (const c of first.filter((c) => c.worker === emptied)) c.session.destroy();
    await vi.waitFor(async () => expect(await openPerWorker()).toEqual({ [emptied]: 0, [other]: 2 }), { timeout: 10_000, interval: 100 });
    const next = [await callOnNewConnection('c4'), await callOnNewConnection('c5')];
    expect(next.map((c) => c.worker)).toEqual([emptied, emptied]);
    expect(await openPerWorker()).toEqual({ [emptied]: 2, [other]: 2 });
    expect(server.output()).not.toMatch(/worker died|unexpected error/);
  }, 60_000);
});
