/**
 * Both of the benchmark's drivers count a call that never got OK as failed, whatever its status:
 * a RESOURCE_EXHAUSTED or UNAVAILABLE still answered after the last retry too (calls = ok + failed),
 * so that a run cannot look error-free when it was not. The server here answers every call with
 * RESOURCE_EXHAUSTED (8) or UNAVAILABLE (14).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createSecureServer, type Http2SecureServer } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { grpcRequestFrame } from '../../../bench/lib/grpc-frame.js';
import { buildGoStorm, runGoStorm } from '../../../bench/lib/go-storm.js';
import { runLoad, type PreparedCall } from '../../../bench/lib/h2-client.js';
import { goClientUnavailable } from '../../support/go-client.js';
import { localhostIdentity } from '../../support/serving-identity.js';

let server: Http2SecureServer;
let port: number;
let rootPem: string;
let answer = '8';
let dir: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'meshcert-bench-failed-'));
  const id = await localhostIdentity();
  rootPem = id.certChainPem;
  server = createSecureServer({ cert: id.certChainPem, key: id.keyPem });
  server.on('stream', (stream) => {
    stream.on('data', () => undefined);
    stream.on('end', () => stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': answer, 'grpc-message': 'no' }, { endStream: true }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
});
afterAll(async () => {
  await new Promise((resolve) => server.close(resolve));
  rmSync(dir, { recursive: true, force: true });
});

const calls = (n: number): PreparedCall[] => Array.from({ length: n }, () => ({ body: grpcRequestFrame('not a CSR'), token: 'x' }));

describe('node:http2 driver', () => {
  it('counts RESOURCE_EXHAUSTED as failed without retries', async () => {
    answer = '8';
    const r = await runLoad(calls(5), { port, rootPem, connections: 1, concurrency: 5 });
    expect(r).toMatchObject({ ok: 0, failed: 5, unavailable: 0, otherErrors: 0, retries: 0, errorCodes: { '8': 5 } });
  });

  it('counts calls that exhaust their retries as failed', async () => {
    answer = '14';
    const r = await runLoad(calls(3), { port, rootPem, connections: 1, concurrency: 3, retry: true });
    expect(r).toMatchObject({ ok: 0, failed: 3, unavailable: 18, otherErrors: 0, retries: 15, errorCodes: { '14': 3 } });
  }, 30_000);
});

const unavailable = goClientUnavailable();
describe.skipIf(unavailable)('grpc-go storm driver', () => {
  let bin: string;
  beforeAll(async () => {
    bin = await buildGoStorm(dir);
  }, 300_000);

  it('counts calls that exhaust their retries of RESOURCE_EXHAUSTED as failed', async () => {
    answer = '8';
    const r = await runGoStorm(bin, dir, calls(3), { port, rootPem, connections: 1 });
    expect(r).toMatchObject({ ok: 0, failed: 3, unavailable: 0, otherErrors: 0, retries: 15, errorCodes: { '8': 3 } });
  }, 60_000);
});
