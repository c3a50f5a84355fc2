/**
 * deploy/kubernetes/components/monitoring, checked offline (no Prometheus here):
 * - both objects match the Prometheus Operator's schemas (npm `@kubernetes-models/prometheus-operator`);
 * - every alert expression passes test/support/promql-check.ts (Prometheus's own grammar; the
 *   metrics, labels and label values meshcert exports), and every `$labels.X` in an annotation
 *   survives its aggregations; `promtool check rules`, which also types function arguments, is not
 *   available here.
 * So renaming a metric, a label or an error code fails here instead of silencing an alert.
 */
import { PrometheusRule } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule';
import { ServiceMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor';
import { describe, expect, it } from 'vitest';
import { exprProblems } from '../support/promql-check.js';
import { loadComponentFile, loadRules, type Rule } from '../support/prometheus-rules.js';

/** What is wrong with one rule, as messages naming it; [] when nothing is. */
function problemsOf(rule: Rule): string[] {
  const name = rule.alert ?? rule.record ?? '(unnamed)';
  const problems: string[] = [];
  const say = (what: string): number => problems.push(`${name}: ${what}`);
  if (!rule.alert || !/^Meshcert[A-Z][A-Za-z]+$/.test(rule.alert)) say('alert name must be Meshcert<Name>');
  if (rule.for !== undefined && !/^(\d+(ms|[smhdwy]))+$/.test(rule.for)) say(`"for: ${rule.for}" is not a Prometheus duration`);
  if (!['info', 'warning', 'critical'].includes(rule.labels?.severity ?? '')) say('labels.severity must be info, warning or critical');
  for (const a of ['summary', 'description']) if (!rule.annotations?.[a]?.trim()) say(`annotations.${a} is missing`);

  const checked = exprProblems(rule.expr);
  for (const p of checked.problems) say(p);
  if (checked.unparsed) return problems;
  // $labels.X must survive the expression: named by every `by (...)`, by no `without (...)`.
  for (const a of Object.values(rule.annotations ?? {})) {
    for (const m of a.matchAll(/\$labels\.([A-Za-z_]+)/g)) {
      if (!checked.kept.includes(m[1]!)) say(`an annotation uses $labels.${m[1]}, which the result does not carry`);
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
    expect(read('MeshcertCertificatesUndelivered')).toContain('increase(meshcert_certificates_undelivered_total[10m])');
    const critical = all.filter((r) => r.labels?.severity === 'critical').map((r) => r.alert);
    expect(critical).toEqual(expect.arrayContaining(['MeshcertCACertificateExpiresWithinAWeek', 'MeshcertIssuanceFailing', 'MeshcertInventoryStoreDown', 'MeshcertDown']));
  });

  it.each<[string, string, string[]]>([
    ['a selector: its labels and the targets\'', 'meshcert_refusals_total', ['code', 'namespace', 'pod', 'job', 'instance', 'service', 'endpoint', 'container']],
    ['sum() keeps none', 'sum(rate(meshcert_refusals_total[5m]))', []],
    ['by keeps its labels', 'sum by (code) (rate(meshcert_refusals_total[5m]))', ['code']],
    ['without keeps the rest', 'sum without (code, instance, endpoint, container, service, job) (meshcert_refusals_total)', ['namespace', 'pod']],
    ['topk keeps all', 'topk(3, sum by (code, pod) (meshcert_refusals_total))', ['code', 'pod']],
    ['count_values adds its label', 'count_values by (code) ("v", meshcert_refusals_total)', ['code', 'v']],
    ['histogram_quantile drops le', 'histogram_quantile(0.9, sum by (le, code) (rate(meshcert_request_duration_seconds_bucket[5m])))', ['code']],
    ['a division by a scalar keeps the vector\'s', 'sum by (code) (rate(meshcert_refusals_total[5m])) / scalar(sum(rate(citadel_server_csr_count[5m])))', ['code']],
    ['group_left keeps the many side\'s', 'sum by (code, pod) (meshcert_refusals_total) / on (pod) group_left sum by (pod) (citadel_server_csr_count)', ['code', 'pod']],
    ['on() keeps only its labels', 'meshcert_refusals_total / on (pod) citadel_server_csr_count', ['pod']],
    ['ignoring() drops its labels', 'sum by (code, pod) (meshcert_refusals_total) / ignoring (code) group_left sum by (pod) (citadel_server_csr_count)', ['code', 'pod']],
    ['a filter keeps the left side\'s', 'sum by (code) (meshcert_refusals_total) > 0', ['code']],
    ['a comparison on () keeps only its labels, as arithmetic does', 'sum by (code, pod) (meshcert_refusals_total) > on (pod) sum by (pod) (citadel_server_csr_count)', ['pod']],
    ['and keeps the left side\'s', 'sum by (code) (meshcert_refusals_total) and on () max(meshcert_memory_pressure) == 1', ['code']],
    ['or keeps what both sides have', 'sum by (code, pod) (meshcert_refusals_total) or sum by (pod) (citadel_server_csr_count)', ['pod']],
    ['label_replace adds its target', 'label_replace(sum by (code) (meshcert_refusals_total), "reason", "$1", "code", "(.*)")', ['code', 'reason']],
    ['vector() and absent() keep none', 'vector(1) or absent(up{job="meshcert"})', []],
  ])('knows which labels a result keeps: %s', (_name, expr, kept) => {
    const checked = exprProblems(expr);
    expect(checked.problems).toEqual([]);
    expect([...checked.kept].sort()).toEqual([...kept].sort());
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
    expect(shed('sum(rate(meshcert_connections_shed_total[5m])) > 0', '{{ $labels.namespace }}')[0]).toMatch(/\$labels\.namespace/); // sum() keeps no label
    expect(check('rate(citadel_server_csr_count[5m]) / rate(meshcert_connections_shed_total{reason="memory"}[5m]) > 0')).toEqual([]);
  });
});
