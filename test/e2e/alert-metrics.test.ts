/**
 * The alerts and the Grafana dashboard of deploy/kubernetes/components/monitoring against a
 * running server: a primary and two workers with the default (SQLite) inventory, as a replica
 * runs, after one issuance. Every selector an alert or a panel reads must match a series the
 * server's /metrics exposes (test/deploy checks them against the metric classes; this checks what
 * the wiring really exports, aggregated across workers, including the series started at 0 so that
 * an alert's increase() sees the first event).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { grpcRequestFrame } from '../../bench/lib/grpc-frame.js';
import { CA_ERROR_CODES } from '../../src/errors/ca-error.js';
import { CONNECTION_SHED_REASONS } from '../../src/grpc/server.js';
import { AUDIT_LOST_REASONS, REFUSED_ITEM_KINDS, RELOAD_RESULTS } from '../../src/metrics/ca-metrics.js';
import { makeCsr } from '../fixtures/csr.js';
import { adminPort, serveRuns } from '../support/cli.js';
import { mintToken, serveConfigYaml, TEST_ISSUER } from '../support/harness.js';
import { dashboardQueries, FOREIGN, loadRules, matches, parseExpr, TARGET_LABELS } from '../support/prometheus-rules.js';
import { connectTls, unaryCall } from '../support/raw-grpc.js';

/**
 * Counters alerts read with increase() or rate(): each value must have its series before its first
 * event (a series that first appears at 1 is an increase Prometheus never sees).
 */
const STARTED_AT_ZERO: Record<string, { label: string; values: readonly string[] }> = {
  meshcert_refusals_total: { label: 'code', values: CA_ERROR_CODES },
  meshcert_config_reloads_total: { label: 'result', values: RELOAD_RESULTS },
  meshcert_connections_shed_total: { label: 'reason', values: CONNECTION_SHED_REASONS },
  meshcert_inventory_audit_events_lost_total: { label: 'reason', values: AUDIT_LOST_REASONS },
  meshcert_inventory_refused_from_workers_total: { label: 'kind', values: REFUSED_ITEM_KINDS },
  meshcert_jwks_refresh_failures_total: { label: 'issuer', values: [TEST_ISSUER] },
};

/**
 * Exported only by a replica running the Istio controllers (istio.rootCertConfigMap/istiodTls),
 * which this server does not: test/integration/server/controllers.test.ts scrapes them from one that does.
 */
const CONTROLLERS_ONLY = new Set(['meshcert_leader', 'meshcert_root_configmaps_pending', 'meshcert_root_configmap_write_failures_total', 'meshcert_istiod_tls_write_failures_total']);

/** Prometheus text exposition -> series (name and labels). */
function seriesOf(text: string): Array<{ name: string; labels: Record<string, string> }> {
  const out: Array<{ name: string; labels: Record<string, string> }> = [];
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? \S+$/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    out.push({ name: m[1]!, labels });
  }
  return out;
}

describe('the alert rules and the dashboard against a running server with workers', () => {
  const serve = serveRuns();

  it('find a series for every selector they read', async () => {
    const { s, dir } = await serve('meshcert-alert-metrics-', serveConfigYaml({ workers: 2 }));
    const session = connectTls(s.port, readFileSync(join(dir, 'data/ca/root-cert.pem'), 'utf8'));
    try {
      const body = grpcRequestFrame((await makeCsr({ uris: ['spiffe://cluster.local/ns/default/sa/app'] })).pem);
      const issued = await unaryCall(session, '/istio.v1.auth.IstioCertificateService/CreateCertificate', body, { authorization: `Bearer ${await mintToken({ ns: 'default', sa: 'app' })}`, clusterid: 'Kubernetes' });
      expect(issued.grpcStatus).toBe(0);
    } finally {
      session.destroy();
    }
    const admin = await adminPort(s);
    // The expiry monitor's first check sets the store's gauges: wait for it.
    let series: ReturnType<typeof seriesOf> = [];
    await vi.waitFor(
      async () => {
        series = seriesOf(await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text());
        expect(series.some((x) => x.name === 'meshcert_discovered_certs_expiring' && x.labels.state === 'expired')).toBe(true);
        expect(series.some((x) => x.name === 'meshcert_request_duration_seconds_bucket' && x.labels.code === 'OK')).toBe(true);
      },
      { timeout: 15_000, interval: 200 },
    );

    const unmatched: string[] = [];
    const queries = [...loadRules().rules.map((r) => ({ name: r.alert!, expr: r.expr })), ...dashboardQueries().map((q) => ({ name: `dashboard ${q.name}`, expr: q.expr }))];
    const counters = new Set<string>();
    for (const query of queries) {
      const parsed = parseExpr(query.expr);
      expect(parsed.syntaxError, `${query.name} parses`).toBeUndefined();
      for (const sel of parsed.selectors) {
        if (sel.metric === null || sel.metric in FOREIGN || CONTROLLERS_ONLY.has(sel.metric)) continue;
        if (sel.metric in STARTED_AT_ZERO) counters.add(sel.metric);
        const own = sel.matchers.filter((m) => !TARGET_LABELS.includes(m.label));
        // A matcher on a plain alternation ("A|B") needs a series for each of its values.
        const variants = own.flatMap((m, i) => (m.op === '=~' && /^[\w.|-]+$/.test(m.value) ? m.value.split('|').map((v) => own.map((o, j) => (j === i ? { ...o, op: '=' as const, value: v } : o))) : []));
        for (const ms of variants.length > 0 ? variants : [own]) {
          if (!series.some((x) => x.name === sel.metric && ms.every((m) => matches(x.labels, m)))) unmatched.push(`${query.name}: ${sel.text}${variants.length > 0 ? ` (${ms.map((m) => `${m.label}${m.op}"${m.value}"`).join(', ')})` : ''}`);
        }
      }
    }
    for (const metric of counters) {
      const { label, values } = STARTED_AT_ZERO[metric]!;
      for (const v of values) if (!series.some((x) => x.name === metric && x.labels[label] === v)) unmatched.push(`${metric}{${label}="${v}"} is not exported before its first event`);
    }
    expect([...counters].sort()).toEqual(Object.keys(STARTED_AT_ZERO).sort()); // each is read by some alert or panel
    expect(unmatched).toEqual([]);
    s.child.kill('SIGTERM');
    expect(await s.exited).toBe(0);
  }, 90_000);
});
