/**
 * The Grafana dashboard of deploy/kubernetes/components/monitoring, checked offline (no Grafana
 * or Prometheus here): its layout, its variables, and every query through the same PromQL check
 * as the alert rules (test/support/promql-check.ts), after Grafana's variables are replaced. Each
 * query must also honour the namespace and replica pickers, and a legend may only name labels
 * its result keeps, or the panel would show blank series names.
 */
import { describe, expect, it } from 'vitest';
import { exprProblems } from '../support/promql-check.js';
import { dashboardQueries, loadDashboard, loadRules, parseExpr, type Dashboard, type DashboardPanel } from '../support/prometheus-rules.js';

/** What is wrong with the dashboard, as messages; [] when nothing is. */
function problemsOf(d: Dashboard): string[] {
  const problems: string[] = [];
  const say = (what: string): number => problems.push(what);
  const variables = d.templating.list.map((v) => v.name);
  for (const v of ['datasource', 'namespace', 'pod']) if (!variables.includes(v)) say(`no $${v} variable`);
  for (const v of d.templating.list.filter((x) => x.type === 'query')) {
    if (v.datasource?.uid !== '${datasource}') say(`variable ${v.name}: not on the $datasource variable`);
    // A picker's values come from a series meshcert exports (istiod exports the Citadel names too).
    const selector = /^label_values\((.*), *[A-Za-z_][A-Za-z0-9_]*\)$/.exec(v.definition ?? '')?.[1];
    const checked = selector === undefined ? undefined : exprProblems(selector.replace(/\$namespace/g, 'meshcert'));
    if (checked === undefined) say(`variable ${v.name}: not a label_values() query`);
    else for (const p of checked.problems) say(`variable ${v.name}: ${p}`);
    if (selector !== undefined && !/^meshcert_/.test(selector)) say(`variable ${v.name}: reads ${selector}, which is not meshcert's own`);
  }
  const ids = d.panels.map((p) => p.id);
  if (new Set(ids).size !== ids.length) say('panel ids are not unique');
  // Grafana's grid is 24 columns wide; panels must not overlap.
  const cells = new Map<string, DashboardPanel>();
  for (const p of d.panels) {
    const g = p.gridPos;
    if (g.x < 0 || g.w < 1 || g.x + g.w > 24 || g.h < 1 || g.y < 0) say(`${p.title}: gridPos ${JSON.stringify(g)} is outside the 24-column grid`);
    if (p.type === 'row' && (g.x !== 0 || g.w !== 24)) say(`${p.title}: a row spans the grid`);
    for (let x = g.x; x < g.x + g.w; x++) {
      for (let y = g.y; y < g.y + g.h; y++) {
        const other = cells.get(`${x},${y}`);
        if (other !== undefined && other.id !== p.id && !problems.includes(`${p.title} overlaps ${other.title}`)) say(`${p.title} overlaps ${other.title}`);
        cells.set(`${x},${y}`, p);
      }
    }
  }
  for (const p of d.panels.filter((q): q is DashboardPanel => q.type !== 'row')) {
    if (!p.description?.trim()) say(`${p.title}: no description`);
    if (p.datasource?.uid !== '${datasource}') say(`${p.title}: not on the $datasource variable`);
    const targets = p.targets ?? [];
    if (targets.length === 0) say(`${p.title}: no query`);
    const refIds = targets.map((t) => t.refId);
    if (new Set(refIds).size !== refIds.length) say(`${p.title}: refIds are not unique`);
    for (const t of targets) if (t.datasource !== undefined && t.datasource.uid !== '${datasource}') say(`${p.title} (${t.refId}): not on the $datasource variable`);
    // A stat or bar gauge shows one value per series: an instant query, not a range to reduce.
    if (p.type === 'stat' || p.type === 'bargauge') for (const t of targets) if (t.instant !== true) say(`${p.title} (${t.refId}): a ${p.type} panel's query should be instant`);
  }
  for (const q of dashboardQueries(d)) {
    const leftover = /\$\w+/.exec(q.expr);
    if (leftover) say(`${q.name}: uses ${leftover[0]}, which this test does not know (add it to DASHBOARD_VARIABLES if the dashboard or Grafana defines it)`);
    const checked = exprProblems(q.expr);
    for (const p of checked.problems) say(`${q.name}: ${p}`);
    if (checked.unparsed) continue;
    for (const s of parseExpr(q.raw.replace(/\$__(rate_)?interval/g, '5m')).selectors) {
      const picked = (label: string, op: string, value: string): boolean => s.matchers.some((m) => m.label === label && m.op === op && m.value === value);
      if (!picked('namespace', '=', '$namespace') || !picked('pod', '=~', '$pod')) say(`${q.name}: ${s.metric ?? s.text} ignores the namespace or replica picker`);
    }
    for (const m of q.legend.matchAll(/\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}/g)) if (!checked.kept.includes(m[1]!)) say(`${q.name}: the legend names ${m[1]}, which the result does not carry`);
  }
  return problems;
}

describe('deploy/kubernetes/components/monitoring/grafana-dashboard.json (no Grafana needed)', () => {
  const dashboard = loadDashboard();

  it('is a dashboard with a fixed uid, on a Prometheus data source picked by the user', () => {
    expect(dashboard).toMatchObject({ uid: 'meshcert-overview', title: 'meshcert' });
    expect(dashboard.schemaVersion).toBeGreaterThanOrEqual(36);
    expect(dashboard.templating.list.find((v) => v.name === 'datasource')).toMatchObject({ type: 'datasource', query: 'prometheus' });
    expect(dashboard.templating.list.find((v) => v.name === 'pod')).toMatchObject({ includeAll: true, allValue: '.*' });
  });

  it('lays out its panels and reads only metrics, labels and values meshcert exports, through the pickers', () => {
    expect(problemsOf(dashboard)).toEqual([]);
    expect(dashboardQueries(dashboard).length).toBeGreaterThan(15);
  });

  it("measures meshcert's side of the refusals with the codes the MeshcertIssuanceFailing alert counts", () => {
    const codes = (expr: string): string[] => parseExpr(expr).selectors.find((s) => s.metric === 'meshcert_refusals_total')!.matchers.find((m) => m.label === 'code')!.value.split('|').sort();
    const panel = dashboardQueries(dashboard).find((q) => q.name.startsWith("Refused on meshcert's side"))!;
    expect(codes(panel.expr)).toEqual(codes(loadRules().rules.find((r) => r.alert === 'MeshcertIssuanceFailing')!.expr));
  });

  it('takes rate() and increase() over $__rate_interval, never $__interval (under two 30 s scrapes on short ranges: an empty panel)', () => {
    const exprs = JSON.stringify(dashboard).match(/(rate|increase)\([^)]*\[[^\]]+\]/g) ?? [];
    expect(exprs.length).toBeGreaterThan(0);
    expect(exprs.filter((e) => e.includes('[$__interval]'))).toEqual([]);
  });

  it('shows what an operator looks at first', () => {
    const queries = dashboardQueries(dashboard).map((q) => q.expr).join('\n');
    for (const metric of ['citadel_server_success_cert_issuance_count', 'meshcert_refusals_total', 'meshcert_request_duration_seconds_bucket', 'meshcert_ca_cert_expiry_timestamp_seconds', 'meshcert_inventory_store_up', 'meshcert_overload_rejections_total']) {
      expect(queries).toContain(metric);
    }
  });

  it('the checker itself finds each kind of mistake (so a clean result means something)', () => {
    const panel = (over: Partial<DashboardPanel> & { expr?: string; legend?: string }): Dashboard => {
      const { expr, legend, ...rest } = over;
      const target = { refId: 'A', expr: expr ?? 'max(meshcert_inventory_store_up{namespace="$namespace", pod=~"$pod"})', legendFormat: legend ?? 'up' };
      const p: DashboardPanel = { id: 2, type: 'timeseries', title: 'P', description: 'd', gridPos: { x: 0, y: 1, w: 12, h: 8 }, datasource: { type: 'prometheus', uid: '${datasource}' }, targets: [target], ...rest };
      return { ...dashboard, panels: [{ id: 1, type: 'row', title: 'R', gridPos: { x: 0, y: 0, w: 24, h: 1 } }, p] };
    };
    expect(problemsOf(panel({}))).toEqual([]);
    expect(problemsOf(panel({ expr: 'max(meshcert_inventory_store_upp{namespace="$namespace", pod=~"$pod"})' }))[0]).toMatch(/does not export/);
    expect(problemsOf(panel({ expr: 'max(meshcert_inventory_store_up{namespace="$namespace"})' }))[0]).toMatch(/ignores the namespace or replica picker/);
    expect(problemsOf(panel({ expr: 'max(meshcert_inventory_store_up{namespace="$namespace", pod=~"$pod"}[$interval])' }))[0]).toMatch(/\$interval, which this test does not know/);
    expect(problemsOf(panel({ expr: 'max(meshcert_inventory_store_up{namespace="$namespace", pod=~"$podx"})' }))[0]).toMatch(/\$podx, which this test does not know/);
    expect(problemsOf(panel({ type: 'stat' }))[0]).toMatch(/should be instant/);
    expect(problemsOf(panel({ id: 1 }))).toContain('panel ids are not unique');
    const sameTitle = panel({});
    sameTitle.panels.push({ ...sameTitle.panels[1]!, id: 3, gridPos: { x: 6, y: 1, w: 12, h: 8 } });
    expect(problemsOf(sameTitle)).toContain('P overlaps P');
    const istio = structuredClone(dashboard);
    istio.templating.list.find((v) => v.name === 'namespace')!.definition = 'label_values(citadel_server_csr_count, namespace)';
    expect(problemsOf(istio)).toEqual(['variable namespace: reads citadel_server_csr_count, which is not meshcert\'s own']);
    expect(problemsOf(panel({ expr: 'sum(rate(meshcert_refusals_total{namespace="$namespace", pod=~"$pod"}[$__rate_interval]))', legend: '{{code}}' }))[0]).toMatch(/legend names code/);
    expect(problemsOf(panel({ expr: 'sum by (code) (rate(meshcert_refusals_total{namespace="$namespace", pod=~"$pod"}[$__rate_interval]))', legend: '{{code}}' }))).toEqual([]);
    expect(problemsOf(panel({ gridPos: { x: 16, y: 1, w: 12, h: 8 } }))[0]).toMatch(/outside the 24-column grid/);
    expect(problemsOf(panel({ gridPos: { x: 0, y: 0, w: 12, h: 8 } }))[0]).toMatch(/overlaps R/);
    expect(problemsOf(panel({ description: '' }))[0]).toMatch(/no description/);
    expect(problemsOf(panel({ datasource: { type: 'prometheus', uid: 'prom-1' } }))[0]).toMatch(/\$datasource/);
  });
});
