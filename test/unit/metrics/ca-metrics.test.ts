import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initCaDir } from '../../../src/ca/init.js';
import { CaMetrics, InventoryMetrics, ReloadMetrics } from '../../../src/metrics/ca-metrics.js';

let base: string;
let a: { root: X509Certificate; inter: X509Certificate };
let b: { root: X509Certificate; inter: X509Certificate };

async function ca(name: string, rootDays: number, interDays: number, now?: Date, organization = name): Promise<{ root: X509Certificate; inter: X509Certificate }> {
  const dir = join(base, name);
  await initCaDir({ dir, organization, rootLifetimeMs: rootDays * 86_400_000, intermediateLifetimeMs: interDays * 86_400_000, ...(now ? { now } : {}) });
  return { root: new X509Certificate(readFileSync(join(dir, 'root-cert.pem'))), inter: new X509Certificate(readFileSync(join(dir, 'ca-cert.pem'))) };
}

const notAfter = (c: X509Certificate): number => Date.parse(c.validTo) / 1000;

async function scrape(m: CaMetrics): Promise<string> {
  return m.registry.metrics();
}

function value(text: string, name: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? undefined : Number(line.split(' ')[1]);
}

beforeAll(async () => {
  base = mkdtempSync(join(tmpdir(), 'meshcert-ca-metrics-'));
  a = await ca('a', 3650, 365);
  b = await ca('b', 30, 10);
});
afterAll(() => rmSync(base, { recursive: true, force: true }));

describe('CaMetrics expiry gauges', () => {
  it('report the earliest root and chain across every CA, not the last one set', async () => {
    const m = new CaMetrics(new Registry());
    m.setCas([
      { name: 'b', roots: [b.root], intermediates: [b.inter] },
      { name: 'default', roots: [a.root], intermediates: [a.inter] },
    ]);
    const text = await scrape(m);
    expect(value(text, 'citadel_server_root_cert_expiry_timestamp')).toBe(notAfter(b.root));
    expect(value(text, 'citadel_server_cert_chain_expiry_timestamp')).toBe(notAfter(b.inter));
  });

  it('count the seconds until expiry down between scrapes (computed at scrape time, not at load)', async () => {
    let now = Date.now();
    const m = new CaMetrics(new Registry(), () => now);
    m.setCas([{ name: 'default', roots: [a.root], intermediates: [a.inter] }]);
    const first = value(await scrape(m), 'citadel_server_root_cert_expiry_seconds')!;
    expect(first).toBeCloseTo(notAfter(a.root) - now / 1000, 3);
    now += 3_600_000;
    const later = value(await scrape(m), 'citadel_server_root_cert_expiry_seconds')!;
    expect(first - later).toBeCloseTo(3600, 3);
    expect(value(await scrape(m), 'citadel_server_cert_chain_expiry_seconds')).toBeCloseTo(notAfter(a.inter) - now / 1000, 3);
  });

  it('show the earlier end when two certificates share issuer, role and subject (two roots of one name in a rotation)', async () => {
    const now = new Date();
    const old = await ca('twin-old', 30, 10, now);
    const young = await ca('twin-new', 3650, 365, now, 'twin');
    const twinOld = await ca('twin-old2', 20, 10, now, 'twin');
    expect(young.root.subject).toBe(twinOld.root.subject);
    const m = new CaMetrics(new Registry());
    // Either order: the series is the earlier of the two ends.
    for (const roots of [[young.root, twinOld.root], [twinOld.root, young.root]]) {
      m.setCas([{ name: 'default', roots, intermediates: [old.inter] }]);
      const line = (await scrape(m)).split('\n').find((l) => l.startsWith('meshcert_ca_cert_expiry_timestamp_seconds{issuer="default",role="root",subject="O=twin'));
      // The value is the last field: the subject label holds spaces.
      expect(Number(line?.split(' ').at(-1))).toBe(notAfter(twinOld.root));
    }
  });

  it('drop the series of certificates a reload removed, and keep the serving certificate', async () => {
    const m = new CaMetrics(new Registry());
    m.setCas([
      { name: 'default', roots: [a.root], intermediates: [a.inter] },
      { name: 'b', roots: [b.root], intermediates: [b.inter] },
    ]);
    m.setServingExpiry(new Date(Date.parse(a.inter.validTo) - 1000));
    expect((await scrape(m)).match(/^meshcert_ca_cert_expiry_timestamp_seconds\{/gm)).toHaveLength(5);
    m.setCas([{ name: 'default', roots: [a.root], intermediates: [a.inter] }]);
    const text = await scrape(m);
    expect(text).not.toMatch(/issuer="b"/);
    expect(text).toMatch(/meshcert_ca_cert_expiry_timestamp_seconds\{issuer="default",role="root",subject="O=a, CN=a root CA [0-9-]+"\} /);
    expect(text).toMatch(/role="serving"/);
    expect(value(text, 'citadel_server_root_cert_expiry_timestamp')).toBe(notAfter(a.root));
  });
});

describe('InventoryMetrics counters', () => {
  it('expose the recorder\'s rising counts as _total counters that follow them across scrapes', async () => {
    const registry = new Registry();
    const m = new InventoryMetrics(registry);
    const stats = { rejected: 0, auditDropped: 0, auditRejected: 0 };
    const recorder = { backlog: 0, storeHealthy: true, dropped: 0, stats };
    m.recorder = recorder;
    const read = async (name: string): Promise<string> => (await registry.getSingleMetricAsString(name)).split('\n').filter((l) => !l.startsWith('#')).join('\n');
    expect(await read('meshcert_inventory_dropped_records_total')).toBe('meshcert_inventory_dropped_records_total 0');
    recorder.dropped = 7;
    stats.auditDropped = 2;
    stats.rejected = 1;
    expect(await read('meshcert_inventory_dropped_records_total')).toBe('meshcert_inventory_dropped_records_total 7');
    expect(await read('meshcert_inventory_rejected_records_total')).toBe('meshcert_inventory_rejected_records_total 1');
    recorder.dropped = 10;
    expect(await read('meshcert_inventory_dropped_records_total')).toBe('meshcert_inventory_dropped_records_total 10');
    expect(await read('meshcert_inventory_audit_events_lost_total')).toContain('meshcert_inventory_audit_events_lost_total{reason="dropped"} 2');
    // The gauge of the same count stays, for dashboards made on it.
    expect(await read('meshcert_inventory_dropped_records')).toBe('meshcert_inventory_dropped_records 10');
  });
});

describe("Citadel's counters", () => {
  it("label signing errors with istiod's caerror names (TTL_ERROR, CERT_GEN_ERROR, CA_NOT_READY, UNKNOWN), so its dashboards' selectors match", async () => {
    const m = new CaMetrics(new Registry());
    const o = m.observer();
    const ctx = { clusterId: 'Kubernetes', latencyMs: 1, peer: 'p' };
    for (const code of ['TTL_INVALID', 'TTL_INVALID', 'ISSUER_FAILED', 'ISSUER_UNAVAILABLE', 'INTERNAL', 'POLICY_DENIED'] as const) o.refused(code, 'why', ctx);
    const lines = (await scrape(m)).split('\n').filter((l) => l.startsWith('citadel_server_csr_sign_err_count{'));
    expect(lines.sort()).toEqual([
      'citadel_server_csr_sign_err_count{error="CA_NOT_READY"} 1',
      'citadel_server_csr_sign_err_count{error="CERT_GEN_ERROR"} 1',
      'citadel_server_csr_sign_err_count{error="TTL_ERROR"} 2',
      'citadel_server_csr_sign_err_count{error="UNKNOWN"} 1',
    ]);
  });
});

describe('labelled counters an alert reads with increase()', () => {
  it('are exported at 0 before their first event, so that the first one is an increase', async () => {
    const registry = new Registry();
    new CaMetrics(registry);
    new InventoryMetrics(registry);
    new ReloadMetrics(registry);
    const text = await registry.metrics();
    for (const series of [
      'meshcert_refusals_total{code="INTERNAL"} 0',
      'meshcert_refusals_total{code="AUTH_INVALID"} 0',
      'meshcert_config_reloads_total{result="rejected"} 0',
      'meshcert_inventory_audit_events_lost_total{reason="dropped"} 0',
      'meshcert_inventory_refused_from_workers_total{kind="record"} 0',
    ]) {
      expect(text.split('\n'), series).toContain(series);
    }
  });
});

