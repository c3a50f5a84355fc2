import { AggregatorRegistry, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { RetiredWorkerMetrics, type WorkerMetricsJson } from '../../../src/runtime/retired-metrics.js';

/** One worker's registry after `issued` certificates, as its metrics-request answer. */
async function worker(issued: number, inFlight = 3): Promise<WorkerMetricsJson> {
  const r = new Registry();
  new Counter({ name: 'citadel_server_success_cert_issuance_count', help: 'h', registers: [r] }).inc(issued);
  new Gauge({ name: 'meshcert_in_flight', help: 'h', registers: [r] }).set(inFlight);
  const h = new Histogram({ name: 'meshcert_request_duration_seconds', help: 'h', buckets: [0.01, 0.1], registers: [r] });
  for (let i = 0; i < issued; i++) h.observe(0.005);
  return r.getMetricsAsJSON();
}

async function sum(snapshots: WorkerMetricsJson[]): Promise<string> {
  return AggregatorRegistry.aggregate(snapshots).metrics();
}

describe('RetiredWorkerMetrics', () => {
  it('keeps a dead worker\'s counters and histograms in the sums, so they never fall, and drops its gauges', async () => {
    const retired = new RetiredWorkerMetrics();
    const live = [await worker(1000), await worker(1000)];
    expect(await sum(live)).toContain('citadel_server_success_cert_issuance_count 2000');
    // Worker 2 dies; its replacement starts from 0.
    retired.retire(live[1]!);
    const after = await sum([live[0]!, await worker(0), ...retired.snapshots()]);
    expect(after).toContain('citadel_server_success_cert_issuance_count 2000');
    expect(after).toContain('meshcert_request_duration_seconds_count 2000');
    // The gauge is the live processes' only: 3 + 3, not 9.
    expect(after).toContain('meshcert_in_flight 6');
  });

  it('merges many retirements into one snapshot with the same sums (a crash loop does not grow the list)', async () => {
    const retired = new RetiredWorkerMetrics();
    for (let i = 0; i < 20; i++) retired.retire(await worker(10));
    await new Promise((r) => setTimeout(r, 10)); // the merge is asynchronous
    expect(retired.snapshots().length).toBeLessThan(8);
    expect(await sum(retired.snapshots())).toContain('citadel_server_success_cert_issuance_count 200');
  });
});

describe('RetiredWorkerMetrics under back-to-back exits', () => {
  it('counts each worker once when retirements arrive while a merge is under way', async () => {
    const snapshots = await Promise.all(Array.from({ length: 20 }, () => worker(10)));
    const retired = new RetiredWorkerMetrics();
    // All in one turn, then some between the merge's awaits.
    for (const s of snapshots.slice(0, 10)) retired.retire(s);
    for (const s of snapshots.slice(10)) {
      await Promise.resolve();
      retired.retire(s);
    }
    await new Promise((r) => setTimeout(r, 20));
    expect(await sum(retired.snapshots())).toContain('citadel_server_success_cert_issuance_count 200');
  });
});
