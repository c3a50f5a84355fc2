/**
 * The alerts of deploy/kubernetes/components/monitoring against a running server: a primary and
 * two workers with the default (SQLite) inventory, as a replica runs, after one issuance. Every
 * selector an alert reads must match a series the server's /metrics exposes (test/deploy checks
 * the rules against the metric classes; this checks what the wiring really exports, aggregated
 * across workers, including the series started at 0 so that an alert's increase() sees the first
 * event).
 */
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { grpcRequestFrame } from '../../bench/lib/grpc-frame.js';
import { makeCsr } from '../fixtures/csr.js';
import { killIfRunning, startServe, type ServerProcess } from '../support/cli.js';
import { mintToken, serveConfigYaml, writeServeDir } from '../support/harness.js';
import { loadRules, matches, parseExpr } from '../support/prometheus-rules.js';
import { connectTls, unaryCall } from '../support/raw-grpc.js';

/** Series not from meshcert: Prometheus's own. */
const FOREIGN = new Set(['up']);
/** Labels the scrape adds (the ServiceMonitor's targets): not in the exposition. */
const TARGET_LABELS = new Set(['namespace', 'pod', 'job', 'instance', 'service', 'endpoint', 'container']);

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

describe('the alert rules against a running server with workers', () => {
  let server: ServerProcess | undefined;
  let dir: string | undefined;
  afterAll(() => {
    killIfRunning(server);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('find a series for every selector they read', async () => {
    const made = await writeServeDir('meshcert-alert-metrics-', serveConfigYaml({ workers: 2 }));
    dir = made.dir;
    const s = (server = await startServe(['--config', made.config]));
    const session = connectTls(s.port, readFileSync(join(dir, 'data/ca/root-cert.pem'), 'utf8'));
    try {
      const body = grpcRequestFrame((await makeCsr({ uris: ['spiffe://cluster.local/ns/default/sa/app'] })).pem);
      const issued = await unaryCall(session, '/istio.v1.auth.IstioCertificateService/CreateCertificate', body, { authorization: `Bearer ${await mintToken({ ns: 'default', sa: 'app' })}`, clusterid: 'Kubernetes' });
      expect(issued.grpcStatus).toBe(0);
    } finally {
      session.destroy();
    }
    let adminPort = 0;
    await vi.waitFor(() => (adminPort = Number(/"port":(\d+),"msg":"admin server listening"/.exec(s.output())?.[1] ?? expect.fail('admin not up yet'))), { timeout: 10_000 });
    // The expiry monitor's first check sets the store's gauges: wait for it.
    let series: ReturnType<typeof seriesOf> = [];
    await vi.waitFor(
      async () => {
        series = seriesOf(await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text());
        expect(series.some((x) => x.name === 'meshcert_discovered_certs_expiring' && x.labels.state === 'expired')).toBe(true);
        expect(series.some((x) => x.name === 'meshcert_request_duration_seconds_bucket' && x.labels.code === 'OK')).toBe(true);
      },
      { timeout: 15_000, interval: 200 },
    );

    const unmatched: string[] = [];
    const { rules } = loadRules();
    for (const rule of rules) {
      for (const sel of parseExpr(rule.expr).selectors) {
        if (sel.metric === null || FOREIGN.has(sel.metric)) continue;
        const own = sel.matchers.filter((m) => !TARGET_LABELS.has(m.label));
        if (!series.some((x) => x.name === sel.metric && own.every((m) => matches(x.labels, m)))) unmatched.push(`${rule.alert}: ${sel.text}`);
      }
    }
    expect(unmatched).toEqual([]);
    s.child.kill('SIGTERM');
    expect(await s.exited).toBe(0);
  }, 60_000);
});
