/**
 * deploy/kubernetes/components/monitoring, checked offline (no Prometheus here):
 * - both objects match the Prometheus Operator's schemas (npm `@kubernetes-models/prometheus-operator`);
 * - every alert expression parses with Prometheus's own PromQL grammar (npm `@prometheus-io/lezer-promql`,
 *   the parser of Prometheus's web UI);
 * - every metric an expression reads is one meshcert registers (taken from the real metric classes),
 *   every label matcher names a label that metric has, with a value meshcert can give it, every
 *   `by (...)` label is one of the expression's metrics', and every `$labels.X` in an annotation
 *   survives its aggregations. The grammar checks syntax, not function argument types: weaker than
 *   `promtool check rules`, which is not available here.
 * So renaming a metric, a label or an error code fails here instead of silencing an alert.
 */
import { PrometheusRule } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule';
import { ServiceMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor';
import { Histogram, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { CA_ERROR_CODES } from '../../src/errors/ca-error.js';
import { CONNECTION_SHED_REASONS } from '../../src/grpc/server.js';
import { AUDIT_LOST_REASONS, CaMetrics, InventoryMetrics, REFUSED_ITEM_KINDS, RELOAD_RESULTS, ReloadMetrics, WorkerMetrics } from '../../src/metrics/ca-metrics.js';
import { FOREIGN, loadComponentFile, loadDeployFile, loadRules, nodes, parseExpr, TARGET_LABELS, type Rule } from '../support/prometheus-rules.js';


/**
 * The values a label can have, per `metric:label` or per label: error codes and shed reasons from
 * the code's own lists; the others as written where each metric is set (src/metrics,
 * src/monitoring/expiry-monitor.ts, src/runtime/reload.ts, src/runtime/inventory-intake.ts).
 * `job` and `namespace` are what the component's ServiceMonitor gives its targets.
 */
const DURATION_CODES = ['OK', ...CA_ERROR_CODES];
const LABEL_VALUES: Record<string, readonly string[]> = {
  code: CA_ERROR_CODES,
  'meshcert_request_duration_seconds_bucket:code': DURATION_CODES,
  'meshcert_request_duration_seconds_count:code': DURATION_CODES,
  'meshcert_request_duration_seconds_sum:code': DURATION_CODES,
  role: ['root', 'intermediate', 'serving'],
  state: ['warning', 'expired'],
  'meshcert_config_reloads_total:result': RELOAD_RESULTS,
  'meshcert_connections_shed_total:reason': CONNECTION_SHED_REASONS,
  'meshcert_inventory_audit_events_lost_total:reason': AUDIT_LOST_REASONS,
  'meshcert_inventory_refused_from_workers_total:kind': REFUSED_ITEM_KINDS,
  // The ServiceMonitor's job is its Service's name; both live in the Service's namespace.
  job: [loadDeployFile<{ metadata: { name: string } }>('base/service.yaml').metadata.name],
  namespace: [loadDeployFile<{ metadata: { namespace: string } }>('base/service.yaml').metadata.namespace, loadComponentFile<{ metadata: { namespace: string } }>('servicemonitor.yaml').metadata.namespace],
};

/** Every series name meshcert exports, with its labels (a histogram's three series included). */
function exportedMetrics(): Map<string, readonly string[]> {
  const registry = new Registry();
  new CaMetrics(registry);
  new InventoryMetrics(registry);
  new ReloadMetrics(registry);
  new WorkerMetrics(registry, () => []);
  const out = new Map<string, readonly string[]>();
  for (const m of registry.getMetricsAsArray()) {
    const labels = (m as unknown as { labelNames: string[] }).labelNames;
    if (m instanceof Histogram) {
      out.set(`${m.name}_bucket`, [...labels, 'le']);
      out.set(`${m.name}_sum`, labels);
      out.set(`${m.name}_count`, labels);
    } else {
      out.set(m.name, labels);
    }
  }
  return out;
}

const EXPORTED = exportedMetrics();

/** What is wrong with one rule, as messages naming it; [] when nothing is. */
function problemsOf(rule: Rule): string[] {
  const name = rule.alert ?? rule.record ?? '(unnamed)';
  const problems: string[] = [];
  const say = (what: string): number => problems.push(`${name}: ${what}`);
  if (!rule.alert || !/^Meshcert[A-Z][A-Za-z]+$/.test(rule.alert)) say('alert name must be Meshcert<Name>');
  if (rule.for !== undefined && !/^(\d+(ms|[smhdwy]))+$/.test(rule.for)) say(`"for: ${rule.for}" is not a Prometheus duration`);
  if (!['info', 'warning', 'critical'].includes(rule.labels?.severity ?? '')) say('labels.severity must be info, warning or critical');
  for (const a of ['summary', 'description']) if (!rule.annotations?.[a]?.trim()) say(`annotations.${a} is missing`);

  const expr = rule.expr;
  const { top, syntaxError, text, selectors } = parseExpr(expr);
  if (syntaxError !== undefined) {
    say(`expr does not parse at offset ${syntaxError}: ${JSON.stringify(expr.slice(syntaxError, syntaxError + 20))}`);
    return problems;
  }
  const metricLabels = new Set<string>(TARGET_LABELS);
  for (const selector of selectors) {
    const metric = selector.metric;
    if (metric === null) {
      say(`a selector without a metric name: ${selector.text}`);
      continue;
    }
    const labels = EXPORTED.get(metric) ?? FOREIGN[metric];
    if (labels === undefined) {
      say(`reads ${metric}, which meshcert does not export`);
      continue;
    }
    for (const l of labels) metricLabels.add(l);
    for (const { label, op, value } of selector.matchers) {
      if (!labels.includes(label) && !TARGET_LABELS.includes(label)) {
        say(`${metric} has no label ${label}`);
        continue;
      }
      const allowed = LABEL_VALUES[`${metric}:${label}`] ?? LABEL_VALUES[label];
      if (allowed === undefined) continue;
      // Alternations of plain values only, so that each can be checked.
      const values = op === '=~' || op === '!~' ? value.split('|') : [value];
      for (const v of values) {
        if (!/^[\w.-]+$/.test(v)) say(`${metric}{${label}${op}"${value}"}: write a plain alternation of values`);
        else if (!allowed.includes(v)) say(`${metric}{${label}} is never "${v}" (meshcert sets ${allowed.join(', ')})`);
      }
    }
  }
  const modifiers = nodes(top, 'AggregateModifier').map((m) => ({ without: m.getChild('Without') !== null, labels: nodes(m, 'LabelName').map(text) }));
  for (const m of modifiers) for (const l of m.labels) if (!metricLabels.has(l)) say(`groups by ${l}, a label none of its metrics has`);
  // $labels.X must survive the expression: named by every `by (...)`, by no `without (...)`.
  let kept = [...metricLabels];
  for (const m of modifiers) kept = kept.filter((l) => m.labels.includes(l) !== m.without);
  const isAbsent = nodes(top, 'Absent').length > 0;
  for (const a of Object.values(rule.annotations ?? {})) {
    for (const m of a.matchAll(/\$labels\.([A-Za-z_]+)/g)) {
      if (isAbsent || !kept.includes(m[1]!)) say(`an annotation uses $labels.${m[1]}, which the result does not carry`);
    }
  }
  return problems;
}

describe('deploy/kubernetes/components/monitoring (no Prometheus needed)', () => {
  const { file: rules, rules: all } = loadRules();

  it('ships a PrometheusRule and a ServiceMonitor that match the Prometheus Operator schemas', () => {
    expect(() => new PrometheusRule(structuredClone(rules) as never).validate()).not.toThrow();
    const monitor = loadComponentFile<Record<string, unknown>>('servicemonitor.yaml');
    expect(() => new ServiceMonitor(structuredClone(monitor) as never).validate()).not.toThrow();
    expect([rules.metadata.namespace, (monitor.metadata as { namespace: string }).namespace]).toEqual(['meshcert', 'meshcert']);
  });

  it('has uniquely named groups and alerts', () => {
    const groups = rules.spec.groups.map((g) => g.name);
    expect(new Set(groups).size).toBe(groups.length);
    const alerts = all.map((r) => r.alert);
    expect(new Set(alerts).size).toBe(alerts.length);
    expect(all.length).toBeGreaterThan(10);
  });

  it('has only rules that parse and read metrics, labels and label values meshcert exports', () => {
    expect(all.flatMap(problemsOf)).toEqual([]);
  });

  it('alerts on the failures an operator must act on', () => {
    const read = (alert: string): string => all.find((r) => r.alert === alert)?.expr ?? '';
    expect(read('MeshcertCACertificateExpiresWithinAWeek')).toContain('meshcert_ca_cert_expiry_timestamp_seconds');
    expect(read('MeshcertDiscoveredCertificateExpired')).toContain('state="expired"');
    expect(read('MeshcertInventoryStoreDown')).toContain('meshcert_inventory_store_up');
    expect(read('MeshcertInventoryRecordsLost')).toContain('meshcert_inventory_dropped_records_total');
    expect(read('MeshcertIssuanceFailing')).toContain('INTERNAL');
    const critical = all.filter((r) => r.labels?.severity === 'critical').map((r) => r.alert);
    expect(critical).toEqual(expect.arrayContaining(['MeshcertCACertificateExpiresWithinAWeek', 'MeshcertIssuanceFailing', 'MeshcertInventoryStoreDown', 'MeshcertDown']));
  });

  it('the checker itself finds each kind of mistake (so a clean result means something)', () => {
    const base = { labels: { severity: 'warning' }, annotations: { summary: 's', description: 'd' } };
    const check = (expr: string, extra: Partial<Rule> = {}): string[] => problemsOf({ alert: 'MeshcertExample', expr, ...base, ...extra });
    expect(check('max(meshcert_inventory_store_up) > 0')).toEqual([]);
    expect(check('max(meshcert_inventory_store_up) >')[0]).toMatch(/does not parse/);
    expect(check('meshcert_inventory_store_upp == 0')[0]).toMatch(/does not export/);
    expect(check('rate(meshcert_refusals_total{code="INTERNL"}[5m]) > 0')[0]).toMatch(/never "INTERNL"/);
    expect(check('rate(meshcert_refusals_total{code=~"INTERNAL|OOPS"}[5m]) > 0')[0]).toMatch(/never "OOPS"/);
    expect(check('rate(meshcert_refusals_total{code=~"INTERNAL.*"}[5m]) > 0')[0]).toMatch(/plain alternation/);
    expect(check('meshcert_inventory_store_up{reason="x"} == 0')[0]).toMatch(/no label reason/);
    expect(check('sum by (issuer) (meshcert_inventory_store_up) == 0')[0]).toMatch(/groups by issuer/);
    expect(check('sum by (namespace) (meshcert_inventory_store_up) == 0', { annotations: { summary: 's', description: '{{ $labels.pod }}' } })[0]).toMatch(/\$labels\.pod/);
    expect(check('max(meshcert_inventory_store_up) > 0', { for: '5 minutes' })[0]).toMatch(/duration/);
    expect(check('max(meshcert_inventory_store_up) > 0', { for: '1h30m' })).toEqual([]);
    expect(check('max(meshcert_inventory_store_up) > 0', { labels: { severity: 'page' } })[0]).toMatch(/severity/);
    expect(check('histogram_quantile(0.99, sum by (le) (rate(meshcert_request_duration_seconds_bucket{code="OK"}[5m]))) > 1')).toEqual([]);
    expect(check('rate(meshcert_refusals_total{code="OK"}[5m]) > 0')[0]).toMatch(/never "OK"/); // only the duration histogram has OK
    expect(check('absent(up{job="meshcert-metrics"} == 1)')[0]).toMatch(/never "meshcert-metrics"/);
    // A matcher's label is not a grouping label, and belongs to its own selector only.
    const shed = (expr: string, description: string): string[] => check(expr, { annotations: { summary: 's', description } });
    expect(shed('sum by (namespace) (rate(meshcert_connections_shed_total{reason="memory"}[5m])) > 0', '{{ $labels.reason }}')[0]).toMatch(/\$labels\.reason/);
    expect(shed('sum without (reason) (rate(meshcert_connections_shed_total[5m])) > 0', '{{ $labels.reason }}')[0]).toMatch(/\$labels\.reason/);
    expect(shed('sum without (reason) (rate(meshcert_connections_shed_total[5m])) > 0', '{{ $labels.pod }}')).toEqual([]);
    expect(check('rate(citadel_server_csr_count[5m]) / rate(meshcert_connections_shed_total{reason="memory"}[5m]) > 0')).toEqual([]);
  });
});
