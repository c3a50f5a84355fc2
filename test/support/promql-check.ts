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
import { AUDIT_LOST_REASONS, CaMetrics, InventoryMetrics, REFUSED_ITEM_KINDS, RELOAD_RESULTS, ReloadMetrics, WorkerMetrics, ControllerMetrics } from '../../src/metrics/ca-metrics.js';
import { FOREIGN, loadComponentFile, loadDeployFile, nodes, parseExpr, TARGET_LABELS, type SyntaxNode } from './prometheus-rules.js';

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
  new ControllerMetrics(registry, () => ({ leader: false }));
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
  /** Labels the result series can carry (see resultLabels), for `$labels.X` and legend checks. */
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
  for (const m of nodes(top, 'AggregateModifier')) for (const l of nodes(m, 'LabelName').map(text)) if (!metricLabels.has(l)) say(`groups by ${l}, a label none of its metrics has`);
  return { problems, unparsed: false, kept: resultLabels(top.firstChild!, text) ?? [] };
}

const EXPR = new Set(['BinaryExpr', 'VectorSelector', 'MatrixSelector', 'AggregateExpr', 'FunctionCall', 'ParenExpr', 'UnaryExpr', 'SubqueryExpr', 'NumberDurationLiteral', 'StringLiteral']);
const SCALAR_FUNCTIONS = new Set(['Time', 'Pi', 'Scalar']);
const KEEPS_ALL = new Set(['Topk', 'Bottomk', 'LimitK', 'LimitRatio']);

function kids(n: SyntaxNode): SyntaxNode[] {
  const out: SyntaxNode[] = [];
  for (let c = n.firstChild; c !== null; c = c.nextSibling) out.push(c);
  return out;
}

/**
 * The labels an expression's result series can carry (null for a scalar or a string), following
 * PromQL's rules: aggregations keep their `by` labels, or all but their `without` ones, or none
 * (topk and the like keep all); histogram_quantile drops `le`; label_replace adds its target;
 * arithmetic and comparisons keep the left side's labels, only the `on` ones, or all but the
 * `ignoring` ones, and a group_left/right side's with the included labels; `and`/`unless` keep the
 * left side's; `or` the labels both sides have. absent() and vector() are counted as keeping none.
 */
function resultLabels(n: SyntaxNode, text: (n: SyntaxNode) => string): string[] | null {
  const args = (body: SyntaxNode | null): SyntaxNode[] => (body ? kids(body).filter((c) => EXPR.has(c.name)) : []);
  const names = (g: SyntaxNode | null | undefined): string[] => (g ? nodes(g, 'LabelName').map(text) : []);
  switch (n.name) {
    case 'VectorSelector': {
      const metric = n.getChild('Identifier');
      const own = metric ? (EXPORTED.get(text(metric)) ?? FOREIGN[text(metric)] ?? []) : [];
      return [...new Set([...own, ...TARGET_LABELS])];
    }
    case 'MatrixSelector':
    case 'ParenExpr':
    case 'UnaryExpr':
    case 'SubqueryExpr':
      return resultLabels(kids(n).find((c) => EXPR.has(c.name))!, text);
    case 'NumberDurationLiteral':
    case 'StringLiteral':
      return null;
    case 'AggregateExpr': {
      const op = n.getChild('AggregateOp')!.firstChild!.name;
      const params = args(n.getChild('FunctionCallBody'));
      const inner = resultLabels(params[params.length - 1]!, text) ?? [];
      if (KEEPS_ALL.has(op)) return inner;
      const modifier = n.getChild('AggregateModifier');
      const grouping = names(modifier);
      let kept = modifier === null ? [] : modifier.getChild('Without') !== null ? inner.filter((l) => !grouping.includes(l)) : grouping.filter((l) => inner.includes(l));
      if (op === 'CountValues' && params[0]?.name === 'StringLiteral') kept = [...kept, JSON.parse(text(params[0]).replace(/^'(.*)'$/, '"$1"')) as string];
      return kept;
    }
    case 'FunctionCall': {
      const fn = n.getChild('FunctionIdentifier')!.firstChild!.name;
      const params = args(n.getChild('FunctionCallBody'));
      if (SCALAR_FUNCTIONS.has(fn)) return null;
      if (fn === 'Vector' || fn === 'Absent' || fn === 'AbsentOverTime') return [];
      if (fn === 'HistogramQuantile') return (resultLabels(params[1]!, text) ?? []).filter((l) => l !== 'le');
      if (fn === 'LabelReplace' || fn === 'LabelJoin') {
        const target = params[1] ? (JSON.parse(text(params[1]).replace(/^'(.*)'$/, '"$1"')) as string) : undefined;
        return [...new Set([...(resultLabels(params[0]!, text) ?? []), ...(target ? [target] : [])])];
      }
      for (const p of params) {
        const labels = resultLabels(p, text);
        if (labels !== null) return labels;
      }
      return null;
    }
    case 'BinaryExpr': {
      const sides = kids(n).filter((c) => EXPR.has(c.name));
      const left = resultLabels(sides[0]!, text);
      const right = resultLabels(sides[sides.length - 1]!, text);
      if (left === null) return right;
      if (right === null) return left;
      const op = kids(n).find((c) => !EXPR.has(c.name))!.name;
      const clause = n.getChild('MatchingModifierClause');
      const groups = clause ? clause.getChildren('GroupingLabels') : [];
      const matching = names(groups[0]);
      const include = names(groups[1]);
      if (op === 'And' || op === 'Unless') return left;
      if (op === 'Or') return left.filter((l) => right.includes(l));
      if (clause?.getChild('GroupLeft')) return [...new Set([...left, ...include])];
      if (clause?.getChild('GroupRight')) return [...new Set([...right, ...include])];
      if (clause?.getChild('On')) return matching.filter((l) => left.includes(l));
      if (clause?.getChild('Ignoring')) return left.filter((l) => !matching.includes(l));
      return left;
    }
    default:
      return [];
  }
}
