/**
 * The alert rules and the Grafana dashboard of deploy/kubernetes/components/monitoring, and what
 * their expressions read, parsed with Prometheus's own PromQL grammar (`@prometheus-io/lezer-promql`).
 * Shared by the offline checks (test/deploy) and the check against a running server (test/e2e).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parser } from '@prometheus-io/lezer-promql';
import { parse as parseYaml } from 'yaml';
import { ROOT } from './cli.js';

export type SyntaxNode = ReturnType<typeof parser.parse>['topNode'];

export const MONITORING_COMPONENT = join(ROOT, 'deploy/kubernetes/components/monitoring');

/** Labels Prometheus adds to every scraped series (the ServiceMonitor's target labels): not in meshcert's exposition. */
export const TARGET_LABELS: readonly string[] = ['namespace', 'pod', 'job', 'instance', 'service', 'endpoint', 'container'];
/** Series the rules may read that meshcert does not export (Prometheus's own), with their labels. */
export const FOREIGN: Readonly<Record<string, readonly string[]>> = { up: [] };

export interface Rule {
  alert?: string;
  record?: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

export interface RuleFile {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace: string; labels?: Record<string, string> };
  spec: { groups: { name: string; rules: Rule[] }[] };
}

export function loadComponentFile<T>(file: string): T {
  return parseYaml(readFileSync(join(MONITORING_COMPONENT, file), 'utf8')) as T;
}

/** A file under deploy/kubernetes, e.g. `base/service.yaml`. */
export function loadDeployFile<T>(file: string): T {
  return parseYaml(readFileSync(join(ROOT, 'deploy/kubernetes', file), 'utf8')) as T;
}

export function loadRules(): { file: RuleFile; rules: Rule[] } {
  const file = loadComponentFile<RuleFile>('prometheusrule.yaml');
  return { file, rules: file.spec.groups.flatMap((g) => g.rules) };
}

/** The nodes named `name` in root's subtree (root included), and nowhere else. */
export function nodes(root: SyntaxNode, name: string): SyntaxNode[] {
  const found: SyntaxNode[] = [];
  const walk = (n: SyntaxNode): void => {
    if (n.name === name) found.push(n);
    for (let c = n.firstChild; c !== null; c = c.nextSibling) walk(c);
  };
  walk(root);
  return found;
}

function unquote(s: string): string {
  return JSON.parse(s.startsWith("'") ? `"${s.slice(1, -1).replace(/"/g, '\\"')}"` : s) as string;
}

export interface Matcher {
  label: string;
  op: '=' | '!=' | '=~' | '!~';
  value: string;
}

export interface Selector {
  /** The selector's text, for messages. */
  text: string;
  /** null: a selector without a metric name. */
  metric: string | null;
  matchers: Matcher[];
}

export interface ParsedExpr {
  top: SyntaxNode;
  /** Offset of the first syntax error, or undefined. */
  syntaxError: number | undefined;
  text: (n: SyntaxNode) => string;
  selectors: Selector[];
}

export function parseExpr(expr: string): ParsedExpr {
  const tree = parser.parse(expr);
  let syntaxError: number | undefined;
  tree.iterate({ enter: (n) => void (n.type.isError && syntaxError === undefined && (syntaxError = n.from)) });
  const text = (n: SyntaxNode): string => expr.slice(n.from, n.to);
  const top = tree.topNode;
  const selectors = syntaxError !== undefined ? [] : nodes(top, 'VectorSelector').map((s) => {
    const metricNode = s.getChild('Identifier');
    return {
      text: text(s),
      metric: metricNode ? text(metricNode) : null,
      matchers: nodes(s, 'UnquotedLabelMatcher').map((m) => ({
        label: text(m.getChild('LabelName')!),
        op: text(m.getChild('MatchOp')!) as Matcher['op'],
        value: unquote(text(m.getChild('StringLiteral')!)),
      })),
    };
  });
  return { top, syntaxError, text, selectors };
}

/** Whether a series' labels satisfy a matcher (regexes anchored, as Prometheus anchors them). */
export function matches(labels: Record<string, string>, m: Matcher): boolean {
  const v = labels[m.label] ?? '';
  switch (m.op) {
    case '=':
      return v === m.value;
    case '!=':
      return v !== m.value;
    case '=~':
      return new RegExp(`^(?:${m.value})$`).test(v);
    case '!~':
      return !new RegExp(`^(?:${m.value})$`).test(v);
  }
}

export interface DashboardTarget {
  refId: string;
  expr: string;
  legendFormat?: string;
  instant?: boolean;
  datasource?: { type: string; uid: string };
}

export interface DashboardPanel {
  id: number;
  type: string;
  title: string;
  description?: string;
  gridPos: { x: number; y: number; w: number; h: number };
  datasource?: { type: string; uid: string };
  targets?: DashboardTarget[];
}

export interface Dashboard {
  uid: string;
  title: string;
  schemaVersion: number;
  templating: { list: Array<{ name: string; type: string; query?: unknown; definition?: string; allValue?: string; includeAll?: boolean; datasource?: { type: string; uid: string } }> };
  panels: DashboardPanel[];
}

export const DASHBOARD_FILE = 'grafana-dashboard.json';

export function loadDashboard(): Dashboard {
  return JSON.parse(readFileSync(join(MONITORING_COMPONENT, DASHBOARD_FILE), 'utf8')) as Dashboard;
}

/** The dashboard's variables and Grafana's own that it uses, each replaced by a value PromQL parses (Grafana substitutes them before the query leaves). */
export const DASHBOARD_VARIABLES: Readonly<Record<string, string>> = { $__rate_interval: '5m', $__interval: '1m', $namespace: 'meshcert', $pod: '.*' };
const VARIABLE = /\$(?:__rate_interval|__interval|namespace|pod)(?![A-Za-z0-9_])/g;

/** Every query of the dashboard, named by its panel and refId, with its variables replaced. */
export function dashboardQueries(dashboard = loadDashboard()): Array<{ name: string; raw: string; expr: string; legend: string }> {
  return dashboard.panels.flatMap((p) =>
    (p.targets ?? []).map((t) => ({
      name: `${p.title} (${t.refId})`,
      raw: t.expr,
      expr: t.expr.replace(VARIABLE, (v) => DASHBOARD_VARIABLES[v]!),
      legend: t.legendFormat ?? '',
    })),
  );
}
