/**
 * The benchmark's grpc-go storm driver (bench/storm-go) against a real server: what it counts is
 * what the server answered. Built like the interop client, from Debian's Go packages; skipped
 * (with the reason) where they are missing, required under CI.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeChain, grpcRequestFrame } from '../../../bench/lib/grpc-frame.js';
import { buildGoStorm, runGoStorm } from '../../../bench/lib/go-storm.js';
import type { PreparedCall } from '../../../bench/lib/h2-client.js';
import { buildWorkloadCsr } from '../../../src/client/workload-csr.js';
import { verifyResponseChain } from '../../../src/x509/verify-chain.js';
import { goClientUnavailable } from '../../support/go-client.js';
import { mintToken, startTestCa, TRUST_DOMAIN, type TestCa } from '../../support/harness.js';

const unavailable = goClientUnavailable();
let dir: string;
let bin: string;
beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'meshcert-storm-'));
  if (!unavailable) bin = await buildGoStorm(dir);
}, 300_000);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function calls(n: number, token?: string): Promise<PreparedCall[]> {
  return Promise.all(
    Array.from({ length: n }, async (_, i) => {
      const ns = `storm-${i}`;
      const { csrPem } = await buildWorkloadCsr(`spiffe://${TRUST_DOMAIN}/ns/${ns}/sa/default`, i % 2 ? 'ec256' : 'rsa2048');
      return { body: grpcRequestFrame(csrPem), token: token ?? (await mintToken({ ns, alg: i % 2 ? 'ES256' : 'RS256' })) };
    }),
  );
}

describe.skipIf(unavailable)('grpc-go storm driver', () => {
  let ca: TestCa | undefined;
  afterAll(async () => {
    await ca?.close();
  });

  it('counts served calls and refusals as the server answered them, and returns verifiable samples', async () => {
    ca = await startTestCa();
    const good = await calls(12);
    const refused = await calls(2, await mintToken({ foreignKey: true }));
    let started = 0;
    const r = await runGoStorm(bin, dir, [...good, ...refused], { port: ca.port, rootPem: ca.rootPem, connections: 3, onStart: () => started++ });
    expect(started).toBe(1);
    expect(r).toMatchObject({ ok: 12, failed: 2, otherErrors: 2, unavailable: 0, retries: 0, reconnects: 0, errorCodes: { '16': 2 } });
    expect(r.latenciesMs).toHaveLength(12);
    expect(r.driverCpuSeconds).toBeGreaterThan(0);
    expect(r.samples.length).toBeGreaterThan(0);
    for (const frame of r.samples) {
      // Framed as the node:http2 driver's samples are, so that bench/run.ts checks both alike.
      expect(frame.readUInt32BE(1)).toBe(frame.length - 5);
      const chain = decodeChain(frame);
      expect(chain).toHaveLength(3);
      expect(() => verifyResponseChain(chain, ca!.rootPem)).not.toThrow();
    }
    await ca.close();
    ca = undefined;
  }, 60_000);

  it('retries UNAVAILABLE (the server over its in-flight limit) until every call is served', async () => {
    ca = await startTestCa({ overload: { maxInFlight: 2 } });
    const r = await runGoStorm(bin, dir, await calls(16), { port: ca.port, rootPem: ca.rootPem, connections: 2 });
    expect(r.ok).toBe(16);
    expect(r.failed).toBe(0);
    expect(r.otherErrors).toBe(0);
    expect(r.unavailable).toBeGreaterThan(0);
    expect(r.retries).toBe(r.unavailable);
    await ca.close();
    ca = undefined;
  }, 60_000);
});
