/**
 * Discovery run: gathers certificates from PEM/DER files, live TLS endpoints and Kubernetes
 * Secrets (TLS and Istio CA Secrets), and records each one in the inventory with source
 * `discovered:file:<path>`, `discovered:endpoint:<host:port>` or
 * `discovered:k8s-secret:<ns>/<name>` (`tls.crt`) / `discovered:k8s-secret:<ns>/<name>/<key>`
 * (`k8s-secret@<cluster>:` when the cluster is named).
 *
 * Recording is idempotent by fingerprint (`insertMany`): re-running stores nothing new, and a
 * certificate seen in several places keeps the source it was first recorded with. Every place
 * read in full (an ok item, or a skipped one that holds no certificate now) is also recorded with
 * all its certificates as its snapshot at the run's start, in one transaction
 * (`recordSnapshots`): the latest snapshot is what the expiry reports judge, so a certificate
 * renewed where it is served leaves them at the next run. A place read whole with some blocks that
 * do not parse is an error whose good certificates are its snapshot; any other place that failed
 * keeps its last snapshot; one no longer looked at (a deleted file or Secret) keeps it until `--forget`; with
 * `forgetGone`, a complete listing of the cluster's Secrets forgets every place of that cluster
 * it no longer holds (a Secret or namespace deleted). Expired
 * certificates are recorded too (they are what expiry reports are for). A certificate the
 * inventory cannot hold (e.g. a serial longer than 64 octets) turns its item into an error.
 * Problems are per item; the run goes on. Only a store failure aborts (it throws).
 */
import type { X509Certificate } from 'node:crypto';
import { placeName, recordProblem } from '../inventory/common.js';
import { recordFromCertificate } from '../inventory/record-from-cert.js';
import type { CertificateRecord, InventoryStore, Snapshot } from '../inventory/types.js';
import { DEFAULT_ENDPOINT_TIMEOUT_MS, discoverEndpoint } from './endpoint.js';
import { discoverFiles } from './files.js';
import { discoverK8sSecrets, k8sSecretPlaces, type K8sSecretsOptions } from './k8s-secrets.js';
import type { DiscoveredItem, ItemKind } from './types.js';

export type { DiscoveredItem, ItemKind } from './types.js';

export interface DiscoverOptions {
  files?: readonly string[];
  endpoints?: readonly string[];
  /** List Kubernetes TLS and Istio CA Secrets (true: default credentials). */
  k8sSecrets?: boolean | K8sSecretsOptions;
  /**
   * With k8sSecrets: the listing is the whole cluster, so known places of that cluster (the
   * unnamed one's, or those of k8sSecrets.cluster) it does not hold are forgotten (see
   * retireGoneSecrets). Opt-in: a run against another cluster under the same name (a laptop's
   * current context) would otherwise forget every place of the real one.
   */
  forgetGone?: boolean;
  endpointTimeoutMs?: number;
  /** Endpoints dialled at once; default 16. */
  concurrency?: number;
}

export interface DiscoveryItemReport {
  kind: ItemKind;
  target: string;
  source: string | null;
  status: 'ok' | 'skipped' | 'error';
  /** Certificates found (and handed to the store). */
  certificates: number;
  /** SHA-256 fingerprints of those certificates. */
  fingerprints: string[];
  /** Why the item failed, or was skipped. */
  error?: string;
  reason?: string;
}

export interface DiscoveryReport {
  items: DiscoveryItemReport[];
  /** Certificates found in all items (a certificate seen in two places counts twice). */
  found: number;
  /** Records new to the inventory after this run (store count after - before). */
  newRecords: number;
  /**
   * With forgetGone: places forgotten because a complete listing of the cluster's Secrets no longer
   * holds them (`k8s-secret:NS/NAME[/KEY]`, as `certs expiring` names places); else [].
   */
  retired: string[];
  /** With forgetGone: why none were forgotten although places are known (a failed or empty listing). */
  retireSkipped?: string;
  ok: number;
  skipped: number;
  failed: number;
}

async function mapLimited<T, R>(xs: readonly T[], limit: number, fn: (x: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(xs.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < xs.length) {
      const i = next++;
      out[i] = await fn(xs[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, xs.length)) }, worker));
  return out;
}

/** Runs the sources (files, then endpoints, then Secrets); the items, not yet recorded. */
export async function collect(o: DiscoverOptions): Promise<DiscoveredItem[]> {
  const items: DiscoveredItem[] = [];
  if (o.files && o.files.length > 0) items.push(...discoverFiles(o.files));
  if (o.endpoints && o.endpoints.length > 0) {
    const timeoutMs = o.endpointTimeoutMs ?? DEFAULT_ENDPOINT_TIMEOUT_MS;
    items.push(...(await mapLimited(o.endpoints, o.concurrency ?? 16, (e) => discoverEndpoint(e, { timeoutMs }))));
  }
  if (o.k8sSecrets) items.push(...(await discoverK8sSecrets(o.k8sSecrets === true ? {} : o.k8sSecrets)));
  return items;
}

function toRecords(item: DiscoveredItem): { records: CertificateRecord[]; problem: string | null } {
  const certs: X509Certificate[] = item.status === 'skipped' ? [] : (item.certificates ?? []);
  if (item.source === null) return { records: [], problem: null };
  const records: CertificateRecord[] = [];
  const problems: string[] = [];
  certs.forEach((cert, i) => {
    try {
      const r = recordFromCertificate(cert, { source: item.source! });
      const p = recordProblem(r);
      if (p === null) records.push(r);
      else problems.push(`certificate #${i + 1} cannot be inventoried: ${p}`);
    } catch (e) {
      problems.push(`certificate #${i + 1} cannot be read: ${(e as Error).message}`);
    }
  });
  return { records, problem: problems.length > 0 ? problems.join('; ') : null };
}

const BATCH = 500;

/** Collects and records; see the module comment. Throws only when the store fails. */
export async function discover(store: InventoryStore, o: DiscoverOptions): Promise<DiscoveryReport> {
  const at = new Date();
  // Its places' prefix, checked before anything is read or written.
  const k8sPlaces = o.k8sSecrets ? k8sSecretPlaces(o.k8sSecrets === true ? undefined : o.k8sSecrets.cluster) : undefined;
  const items = await collect(o);
  const before = await store.count();
  const reports: DiscoveryItemReport[] = [];
  const all: CertificateRecord[] = [];
  const snapshots: Snapshot[] = [];
  for (const item of items) {
    const { records, problem } = toRecords(item);
    all.push(...records);
    const base = { kind: item.kind, target: item.target, source: item.source, certificates: records.length, fingerprints: records.map((r) => r.fingerprint) };
    if (item.status === 'error') reports.push({ ...base, status: 'error', error: problem ? `${item.error}; ${problem}` : item.error });
    else if (problem !== null) reports.push({ ...base, status: 'error', error: problem });
    else if (item.status === 'skipped') reports.push({ ...base, status: 'skipped', reason: item.reason });
    else reports.push({ ...base, status: 'ok' });
    const readInFull = item.status !== 'error' || item.readInFull === true;
    if (readInFull && problem === null && item.source !== null && item.source !== 'issued') {
      snapshots.push({ source: item.source, fingerprints: item.held ?? records.map((r) => r.fingerprint) });
    }
    for (const source of item.alsoEmpty ?? []) snapshots.push({ source, fingerprints: [] });
  }
  const writeRecords = async (): Promise<void> => {
    for (let i = 0; i < all.length; i += BATCH) await store.insertMany(all.slice(i, i + BATCH));
  };
  await writeRecords();
  // After the records (a snapshot names stored certificates), all at once: a store failure halfway
  // must not leave a place with part of its snapshot.
  await store.recordSnapshots(snapshots, at);
  // Again: an expired record a prune deleted between the two (it was in no snapshot then) is back,
  // and now a snapshot holds it. Idempotent; nothing new is counted.
  await writeRecords();
  const retirement = k8sPlaces !== undefined && o.forgetGone ? await retireGoneSecrets(store, items, k8sPlaces) : { retired: [] };
  const after = await store.count();
  return {
    items: reports,
    found: all.length,
    newRecords: after - before,
    ...retirement,
    ok: reports.filter((r) => r.status === 'ok').length,
    skipped: reports.filter((r) => r.status === 'skipped').length,
    failed: reports.filter((r) => r.status === 'error').length,
  };
}

/**
 * Every list call succeeded, so the items name every Secret key of the cluster meshcert reads
 * (failed ones included: a Secret whose key does not parse is still there). A known k8s-secret
 * place outside them is gone, and is forgotten as `--forget` would: otherwise a deleted
 * namespace's certificates stayed in the expiry reports, expiring, for good. Only the places of
 * the cluster listed (`prefix`: named by --cluster, or the unnamed one's) are judged, so several
 * clusters, each named, can share an inventory. A listing with no Secret at all forgets nothing:
 * a mesh's cluster holds its CA Secrets, so an empty one is more likely the wrong cluster or a
 * proxy that filters lists than a cluster whose every Secret is gone.
 */
async function retireGoneSecrets(store: InventoryStore, items: readonly DiscoveredItem[], prefix: `discovered:${string}`): Promise<{ retired: string[]; retireSkipped?: string }> {
  const known = (await store.places(prefix)).map((p) => p.source);
  if (known.length === 0) return { retired: [] };
  if (items.some((i) => i.kind === 'k8s' && i.status === 'error')) return { retired: [], retireSkipped: 'the cluster could not be listed in full' };
  const present = new Set<string>();
  for (const i of items) {
    if (i.kind !== 'k8s-secret') continue;
    if (i.source !== null) present.add(i.source);
    for (const s of i.alsoEmpty ?? []) present.add(s);
  }
  if (present.size === 0) return { retired: [], retireSkipped: 'the cluster listed no Secret at all (the wrong cluster or context?)' };
  // In batches: a cluster's thousands of places are not a statement each.
  const forgotten = await store.forgetPlaces(known.filter((place) => !present.has(place)));
  return { retired: forgotten.map(placeName) };
}

/** 0 when at least one item succeeded and none failed; 1 otherwise (any failure, or nothing found). */
export function discoveryExitCode(r: DiscoveryReport): number {
  return r.failed === 0 && r.ok > 0 ? 0 : 1;
}
