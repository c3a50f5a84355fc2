/**
 * A serving process short of memory (overload.heapLimitRatio, wired in src/main.ts): the real
 * server with a ratio every process is above, so it is short from its first sample. A client's
 * connection is refused before its handshake (the call fails UNAVAILABLE, which agents retry), the
 * refusal is counted, the gauge says so, and the log and the onMemoryPressure listener (a worker's
 * report to the cluster primary) say so once.
 */
import { status } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CaMetrics } from '../../../src/metrics/ca-metrics.js';
import { makeCsr } from '../../fixtures/csr.js';
import { mintToken, startTestCa, type TestCa } from '../../support/harness.js';

let ca: TestCa;
const metrics = new CaMetrics();
/** What a cluster worker would tell the primary (so that it hands new connections to another worker). */
const reported: boolean[] = [];

beforeAll(async () => {
  ca = await startTestCa({ overload: { heapLimitRatio: 0.001 } }, undefined, { metrics, onMemoryPressure: (high) => reported.push(high) });
});
afterAll(async () => ca?.close());

describe('overload.heapLimitRatio in a running server', () => {
  it('refuses connections while short of memory, counts them, and says so in the gauge and once in the log', async () => {
    const csr = await makeCsr();
    const err = await ca.request({ csrPem: csr.pem, token: await mintToken() }).then(
      () => undefined,
      (e: unknown) => e as { code?: number },
    );
    expect(err?.code).toBe(status.UNAVAILABLE);
    const m = await metrics.registry.metrics();
    expect(m).toMatch(/^meshcert_memory_pressure 1$/m);
    expect(Number(/^meshcert_connections_shed_total\{reason="memory"\} (\d+)$/m.exec(m)?.[1])).toBeGreaterThanOrEqual(1);
    expect(ca.logs().match(/memory is short: refusing new connections and calls/g)).toHaveLength(1);
    // Reported once, on the change, not on every sample while it lasts (one every 100 ms).
    await new Promise((r) => setTimeout(r, 350));
    expect(reported).toEqual([true]);
  }, 30_000);
});
