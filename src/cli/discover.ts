import { existsSync } from 'node:fs';
import { discover, discoveryExitCode, type DiscoveryReport } from '../discovery/discover.js';
import { PLACE_CLUSTER_NAME } from '../discovery/k8s-secrets.js';
import { parseDurationArg } from '../config/duration.js';
import { parse, UsageError } from './args.js';
import { forTerminal } from './terminal-text.js';
import { placeName } from '../inventory/common.js';
import type { InventoryStore } from '../inventory/types.js';
import { absolutePlace, openInventory, resolveInventoryTarget, StoreOpenError, table } from './certs.js';

export const DISCOVER_USAGE = `meshcert discover [--files PATH...] [--endpoints HOST:PORT...] [--endpoint-timeout 5s] [--k8s-secrets [--kubeconfig FILE] [--cluster NAME] [--forget-gone]] [--config FILE] [--db sqlite:PATH|postgres://URL] [--json]
  Records certificates found in PEM or DER files (a directory: every *.pem/*.crt/*.cer/*.der below
  it; a glob with * or ? in the last component), presented by TLS endpoints (the whole chain;
  --endpoint-timeout, default 5s) and in Kubernetes TLS Secrets (tls.crt, ca.crt) and Istio CA
  Secrets (cacerts, istio-ca-secret, istio.io/key-and-cert), with source discovered:file:PATH,
  discovered:endpoint:HOST:PORT or discovered:k8s-secret:NS/NAME[/KEY] (with --cluster NAME,
  discovered:k8s-secret@NAME:NS/NAME[/KEY]: give each cluster that discovers into one inventory
  its name). Idempotent. Several values may follow one --files/--endpoints.
  Each place read in full is recorded as seen with its certificates: the expiry reports judge a
  place by what it served when last seen (run discover on a schedule). --forget-gone: the listing
  is the whole cluster (the unnamed one, or --cluster's), so when every list call succeeds (and
  lists a Secret), that cluster's places it no longer holds (deleted Secrets, namespaces) are
  forgotten; other clusters' places are left alone.
  Store: --config FILE's inventory section, or --db (which wins over the config's store).
  Exit 0 when something was found and nothing failed, 1 when any item failed (or nothing was found).
meshcert discover --places [--config FILE] [--db ...] [--json]
  Lists the places discovery knows, the longest unseen first: when each was last read in full,
  how many certificates it held then and the earliest end among them. A place no run reads any
  more (a deleted file, an endpoint taken down) is one to --forget. Exit 1 when the store fails
  (or a SQLite inventory does not exist).
meshcert discover --forget PLACE... [--config FILE] [--db ...] [--json]
  Forgets places that are gone (file:PATH, endpoint:HOST:PORT, k8s-secret[@CLUSTER]:NS/NAME[/KEY], as
  \`certs expiring\` names them), so that the expiry reports stop judging them; their certificate
  records stay. Exit 1 when a place is not known (never seen, or already forgotten).`;

const OPTIONS = {
  files: { type: 'string', multiple: true },
  endpoints: { type: 'string', multiple: true },
  forget: { type: 'string', multiple: true },
  places: { type: 'boolean', default: false },
  'k8s-secrets': { type: 'boolean', default: false },
  'forget-gone': { type: 'boolean', default: false },
  kubeconfig: { type: 'string' },
  cluster: { type: 'string' },
  'endpoint-timeout': { type: 'string' },
  config: { type: 'string' },
  db: { type: 'string' },
  json: { type: 'boolean', default: false },
} as const;

/**
 * Parses the arguments. Positionals belong to the `--files` or `--endpoints` option before them,
 * so `--files certs/*.pem` works after the shell expanded the glob into several words.
 */
export function parseDiscoverArgs(argv: string[]): {
  files: string[];
  endpoints: string[];
  forget: string[];
  places: boolean;
  k8sSecrets: boolean;
  forgetGone: boolean;
  kubeconfig?: string;
  cluster?: string;
  endpointTimeoutMs?: number;
  config?: string;
  db?: string;
  json: boolean;
} {
  const parsed = parse(argv, OPTIONS, true);
  const lists = { files: [] as string[], endpoints: [] as string[], forget: [] as string[] };
  const { files, endpoints, forget } = lists;
  let last: keyof typeof lists | null = null;
  for (const t of parsed.tokens) {
    if (t.kind === 'option') {
      if (t.name === 'files' || t.name === 'endpoints' || t.name === 'forget') {
        lists[t.name].push(t.value!);
        last = t.name;
      } else {
        last = null;
      }
    } else if (t.kind === 'positional') {
      if (last === null) throw new UsageError(`unexpected argument "${t.value}": put paths after --files and host:port after --endpoints`);
      lists[last].push(t.value);
    } else {
      last = null;
    }
  }
  const v = parsed.values;
  if (v.kubeconfig !== undefined && !v['k8s-secrets']) throw new UsageError('--kubeconfig goes with --k8s-secrets');
  if (v['forget-gone'] && !v['k8s-secrets']) throw new UsageError('--forget-gone goes with --k8s-secrets');
  if (v.cluster !== undefined && !v['k8s-secrets']) throw new UsageError('--cluster goes with --k8s-secrets');
  if (v['endpoint-timeout'] !== undefined && endpoints.length === 0) throw new UsageError('--endpoint-timeout goes with --endpoints');
  if (v.cluster !== undefined && !PLACE_CLUSTER_NAME.test(v.cluster)) throw new UsageError(`--cluster ${JSON.stringify(v.cluster)}: a cluster name is 1 to 63 letters, digits, ".", "_" and "-"`);
  if (forget.length > 0 && (files.length > 0 || endpoints.length > 0 || v['k8s-secrets'])) throw new UsageError('--forget goes alone, not with --files, --endpoints or --k8s-secrets');
  if (v.places && (forget.length > 0 || files.length > 0 || endpoints.length > 0 || v['k8s-secrets'])) throw new UsageError('--places goes alone, not with --forget, --files, --endpoints or --k8s-secrets');
  if (!v.places && forget.length === 0 && files.length === 0 && endpoints.length === 0 && !v['k8s-secrets']) throw new UsageError(`discover needs --files, --endpoints or --k8s-secrets (or --places, --forget)\n${DISCOVER_USAGE}`);
  let endpointTimeoutMs: number | undefined;
  if (v['endpoint-timeout'] !== undefined) {
    // A duration as every option takes it, and milliseconds (500ms) besides.
    const raw = v['endpoint-timeout'];
    const ms = /^(\d+)ms$/.exec(raw.trim());
    try {
      endpointTimeoutMs = ms ? Number(ms[1]) : parseDurationArg(raw) * 1000;
    } catch {
      endpointTimeoutMs = 0;
    }
    if (!(endpointTimeoutMs > 0) || endpointTimeoutMs > 2_147_483_647) throw new UsageError('--endpoint-timeout must be a positive duration up to 24d (5s, 1m, 500ms; a bare number is seconds)');
  }
  return {
    files,
    endpoints,
    forget,
    places: v.places!,
    k8sSecrets: v['k8s-secrets']!,
    forgetGone: v['forget-gone']!,
    ...(v.kubeconfig !== undefined ? { kubeconfig: v.kubeconfig } : {}),
    ...(v.cluster !== undefined ? { cluster: v.cluster } : {}),
    ...(endpointTimeoutMs !== undefined ? { endpointTimeoutMs } : {}),
    ...(v.config !== undefined ? { config: v.config } : {}),
    ...(v.db !== undefined ? { db: v.db } : {}),
    json: v.json!,
  };
}

function printHuman(r: DiscoveryReport, label: string): void {
  for (const item of r.items) {
    const target = forTerminal(item.target);
    if (item.status === 'ok') console.log(`${item.kind} ${target}: ${item.certificates} certificate(s)`);
    else if (item.status === 'skipped') console.log(`${item.kind} ${target}: skipped: ${forTerminal(item.reason ?? '')}`);
    else console.error(`meshcert discover: ${item.kind} ${target}: ${forTerminal(item.error ?? '')}`);
  }
  for (const place of r.retired) console.log(`forgot ${forTerminal(place)}: no longer in the cluster`);
  if (r.retireSkipped !== undefined) console.error(`meshcert discover: --forget-gone forgot nothing: ${r.retireSkipped}`);
  console.log(
    `discovered ${r.found} certificate(s) in ${r.ok} item(s)` +
      `${r.skipped > 0 ? `, ${r.skipped} skipped` : ''}${r.failed > 0 ? `, ${r.failed} failed` : ''}; ${r.newRecords} new in ${label}`,
  );
}

/** `discover --places`: 0, or 1 when the store fails. */
async function listPlaces(store: InventoryStore, json: boolean, label: string): Promise<number> {
  let places;
  try {
    places = await store.places('discovered:');
  } catch (e) {
    console.error(`meshcert: cannot list places in ${label}: ${(e as Error).message}`);
    return 1;
  } finally {
    await store.close().catch(() => undefined);
  }
  const rows = places
    .map((p) => ({ place: placeName(p.source), lastSeen: p.seenAt.toISOString(), certificates: p.certificates, earliestNotAfter: p.earliestNotAfter?.toISOString() ?? null }))
    .sort((a, b) => (a.lastSeen < b.lastSeen ? -1 : a.lastSeen > b.lastSeen ? 1 : 0));
  if (json) console.log(JSON.stringify({ places: rows }, null, 2));
  else if (rows.length === 0) console.log(`no places in ${label}: run meshcert discover first`);
  else console.log(table(['LAST SEEN', 'CERTS', 'EARLIEST NOT AFTER', 'PLACE'], rows.map((r) => [r.lastSeen, String(r.certificates), r.earliestNotAfter ?? '-', r.place])));
  return 0;
}

/** `discover --forget`: 0 when every place had been seen, 1 otherwise (or when the store fails). */
async function forgetPlaces(store: InventoryStore, places: readonly string[], json: boolean, label: string): Promise<number> {
  // A file as discover names it: its absolute path. Each place once, however often it was named.
  const wanted = [
    ...new Set(
      places.map((place) => absolutePlace(place.replace(/^discovered:/, ''))),
    ),
  ];
  let forgotten: Array<{ place: string; known: boolean }>;
  try {
    const known = new Set(await store.forgetPlaces(wanted.filter((w) => w !== '').map((w) => `discovered:${w}` as const)));
    forgotten = wanted.map((w) => ({ place: w, known: known.has(`discovered:${w}`) }));
  } catch (e) {
    console.error(`meshcert: cannot forget places in ${label}: ${(e as Error).message}`);
    return 1;
  } finally {
    await store.close().catch(() => undefined);
  }
  if (json) console.log(JSON.stringify({ forgotten }, null, 2));
  for (const f of forgotten) {
    if (f.known) {
      if (!json) console.log(`forgot ${forTerminal(f.place)}`);
    } else {
      console.error(`meshcert discover: ${forTerminal(f.place) || '(empty)'}: not a known place (certs expiring names places as file:PATH, endpoint:HOST:PORT, k8s-secret[@CLUSTER]:NS/NAME[/KEY])`);
    }
  }
  return forgotten.every((f) => f.known) ? 0 : 1;
}

/**
 * `meshcert discover`. Exit codes: 0 at least one item succeeded and none failed; 1 an item
 * failed, nothing was found, or the store cannot be opened/written; 2 usage (UsageError).
 * JSON output: `{ found, newRecords, retired: [place...], retireSkipped?, ok, skipped, failed, items: [...], errors: [{ kind, target, error }] }`.
 */
export async function discoverCommand(argv: string[]): Promise<number> {
  const a = parseDiscoverArgs(argv);
  const target = resolveInventoryTarget(a);
  // Forgetting or listing in an inventory that does not exist (a mistyped --db, another directory) would create one.
  if ((a.forget.length > 0 || a.places) && target.store.kind === 'sqlite' && !existsSync(target.store.path)) {
    console.error(`meshcert: no inventory at ${target.label} (pass --config or --db)`);
    return 1;
  }
  let store;
  try {
    // Listing places reads only, as the certs commands do: a SELECT-only role will do, and an
    // older inventory is not migrated by a look at it.
    store = await openInventory(target, a.places);
  } catch (e) {
    if (e instanceof StoreOpenError) {
      console.error(`meshcert: ${e.message}`);
      return 1;
    }
    throw e;
  }
  if (a.places) return listPlaces(store, a.json, target.label);
  if (a.forget.length > 0) return forgetPlaces(store, a.forget, a.json, target.label);
  let report: DiscoveryReport;
  try {
    report = await discover(store, {
      files: a.files,
      endpoints: a.endpoints,
      k8sSecrets: a.k8sSecrets ? { ...(a.kubeconfig !== undefined ? { kubeconfig: a.kubeconfig } : {}), ...(a.cluster !== undefined ? { cluster: a.cluster } : {}) } : false,
      forgetGone: a.forgetGone,
      ...(a.endpointTimeoutMs !== undefined ? { endpointTimeoutMs: a.endpointTimeoutMs } : {}),
    });
  } catch (e) {
    console.error(`meshcert: cannot record discovered certificates in ${target.label}: ${(e as Error).message}`);
    return 1;
  } finally {
    await store.close().catch(() => undefined);
  }
  if (a.json) {
    const errors = report.items.filter((i) => i.status === 'error').map((i) => ({ kind: i.kind, target: i.target, error: i.error }));
    console.log(JSON.stringify({ ...report, errors }, null, 2));
  } else {
    printHuman(report, target.label);
  }
  return discoveryExitCode(report);
}
