/**
 * A PromQL expression checked against what meshcert exports, offline: it parses with Prometheus's
 * own grammar (`@prometheus-io/lezer-promql`, syntax only: `promtool` also types function
 * arguments); every metric it reads is one meshcert registers (taken from the real metric
 * classes); every label matcher names a label that metric has, with a value meshcert can give
 * it; every `by (...)` label is one of its metrics'. Shared by the alert rules' and the Grafana
 * dashboard's checks (test/deploy), so renaming a metric, a label or an error code fails there
 * instead of silencing an alert or blanking a panel.
 */
import { Histogram, Registry } from 'prom-client';
import { CA_ERROR_CODES } from '../../src/errors/ca-error.js';
import { CONNECTION_SHED_REASONS } from '../../src/grpc/server.js';
import { AUDIT_LOST_REASONS, CaMetrics, InventoryMetrics, REFUSED_ITEM_KINDS, RELOAD_RESULTS, ReloadMetrics, WorkerMetrics } from '../../src/metrics/ca-metrics.js';
import { FOREIGN, loadComponentFile, loadDeployFile, nodes, parseExpr, TARGET_LABELS } from './prometheus-rules.js';

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

export interface ExprCheck {
  /** What is wrong, one message each; [] when nothing is. */
  problems: string[];
  /** The expression does not parse (problems says where). */
  unparsed: boolean;
  /** Labels the result carries: its metrics' and the targets', less what aggregations drop (all, without by or without; all for absent()). */
  kept: string[];
}

export function exprProblems(expr: string): ExprCheck {
  const problems: string[] = [];
  const say = (what: string): number => problems.push(what);
  const { top, syntaxError, text, selectors } = parseExpr(expr);
  if (syntaxError !== undefined) {
    say(`expr does not parse at offset ${syntaxError}: ${JSON.stringify(expr.slice(syntaxError, syntaxError + 20))}`);
    return { problems, unparsed: true, kept: [] };
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
  let kept = [...metricLabels];
  for (const m of modifiers) kept = kept.filter((l) => m.labels.includes(l) !== m.without);
  // An aggregation without by or without keeps no label at all; nor does absent().
  if (nodes(top, 'AggregateExpr').some((a) => a.getChild('AggregateModifier') === null) || nodes(top, 'Absent').length > 0) kept = [];
  return { problems, unparsed: false, kept };
}
