/**
 * Keeps ConfigMap `istio-ca-root-cert` (key `root-cert.pem`, label `istio.io/config: "true"`) in
 * every namespace equal to meshcert's root bundle: what istiod's NamespaceController does while its
 * own CA is on (PROTOCOL §5). istio-agent and ztunnel read it to trust the CA's serving certificate
 * and the mesh's roots.
 *
 * - Namespaces: all, or those matching `namespaceSelector` (a label selector, applied by the API
 *   server to the list+watch), never those in `excludeNamespaces`, never one being terminated
 *   (status.phase Terminating or deletionTimestamp set). istiod itself skips kube-public,
 *   kube-node-lease and local-path-storage (its inject.IgnoredNamespaces), but not kube-system, which
 *   its NamespaceController keeps "to enable deploying ztunnel in that namespace"; meshcert's
 *   default excludes none (deploy/kubernetes/base/config.yaml excludes the first two).
 * - Triggers: a namespace appears (or starts matching the selector); the ConfigMap is edited or
 *   deleted (a configmap informer limited to metadata.name=istio-ca-root-cert across namespaces);
 *   onRootBundleChanged(); onStartedLeading(); and a periodic resync (default every 10 minutes).
 * - Writes: only while isLeader(). Only `data["root-cert.pem"]` and the label are set: other keys,
 *   labels, annotations and owner references of an existing ConfigMap are kept. Nothing is ever
 *   deleted. Replaces carry the cached resourceVersion; a 409 re-reads the ConfigMap and retries.
 * - One work queue keyed by namespace: deduplicated, at most one write in flight per namespace,
 *   `concurrency` in parallel, a qps/burst token bucket, and per-namespace exponential backoff on
 *   API errors.
 *
 * Every replica runs the informers (a follower keeps warm caches and takes over at once); only the
 * leader writes. RBAC: namespaces list/watch; configmaps of this name get/list/watch/update, and
 * configmaps create (cluster-wide; deploy/kubernetes/base/rbac.yaml).
 */
import type { V1ConfigMap, V1Namespace } from '@kubernetes/client-node';
import { describeKubeError, kubeStatusCode, type KubeClient } from '../k8s/client.js';
import { bundleKey } from './bundle-key.js';
import { explainKubeError, InformerRunner, isConflict, isNotFound, type ControllerLog } from './kube-util.js';
import { WorkQueue, type WorkQueueOptions } from './work-queue.js';
import { LogThrottle } from '../log/throttle.js';

export const ROOT_CERT_CONFIGMAP = 'istio-ca-root-cert';
export const ROOT_CERT_KEY = 'root-cert.pem';
export const ISTIO_CONFIG_LABEL = 'istio.io/config';

export interface RootCertDistributorOptions {
  readonly kube: Pick<KubeClient, 'core' | 'makeInformer'>;
  /** The current root bundle (PEM, one or more roots). An empty string writes nothing. */
  readonly rootBundle: () => string;
  /** Whether this replica may write now (LeaderElector#isLeader). */
  readonly isLeader: () => boolean;
  /** Label selector on namespaces, e.g. `istio-injection=enabled`; default all namespaces. */
  readonly namespaceSelector?: string;
  /** Namespaces never written to. Default none. */
  readonly excludeNamespaces?: readonly string[];
  /** Default `istio-ca-root-cert` (Istio's name; change only for tests or a second mesh). */
  readonly configMapName?: string;
  /** Re-check every namespace this often (ms); 0 disables. Default 600000. */
  readonly resyncPeriodMs?: number;
  readonly queue?: WorkQueueOptions;
  /** Informer restart backoff. Defaults 500 ms, 30 s. */
  readonly informerBackoffInitialMs?: number;
  readonly informerBackoffMaxMs?: number;
  readonly log?: ControllerLog | undefined;
}

export interface RootCertDistributorStatus {
  readonly synced: boolean;
  readonly namespaces: number;
  readonly queued: number;
  readonly created: number;
  readonly updated: number;
  readonly failures: number;
  readonly lastError: string | undefined;
}

function isTerminating(ns: V1Namespace): boolean {
  return ns.status?.phase === 'Terminating' || (ns.metadata?.deletionTimestamp !== undefined && ns.metadata.deletionTimestamp !== null);
}

/** Answers to a write that any namespace would get alike: credentials refused, forbidden, throttled. */
const SHARED_FAILURES = new Set([401, 403, 429]);

export class RootCertDistributor {
  readonly configMapName: string;
  private readonly opts: RootCertDistributorOptions;
  private readonly log: ControllerLog | undefined;
  private readonly excluded: ReadonlySet<string>;
  private readonly namespaces: InformerRunner<V1Namespace>;
  private readonly configMaps: InformerRunner<V1ConfigMap>;
  private readonly queue: WorkQueue;
  private resyncTimer: NodeJS.Timeout | undefined;
  private started = false;
  private stopped = false;
  private ready = false;
  private readonly bundleKeys = new Map<string, string>();
  private created = 0;
  private updated = 0;
  private failures = 0;
  private lastError: string | undefined;

  constructor(opts: RootCertDistributorOptions) {
    this.opts = opts;
    this.log = opts.log;
    this.configMapName = opts.configMapName ?? ROOT_CERT_CONFIGMAP;
    this.excluded = new Set(opts.excludeNamespaces ?? []);
    const backoff = { backoffInitialMs: opts.informerBackoffInitialMs ?? 500, backoffMaxMs: opts.informerBackoffMaxMs ?? 30_000 };

    const nsInformer = opts.kube.makeInformer('namespaces', {
      ...(opts.namespaceSelector ? { labelSelector: opts.namespaceSelector } : {}),
      transform: (ns) => ({ metadata: { ...ns.metadata, managedFields: undefined }, status: ns.status ? { phase: ns.status.phase } : undefined }),
    });
    this.namespaces = new InformerRunner(nsInformer, { name: 'namespaces', verbs: 'list and watch namespaces', log: opts.log, ...backoff });
    const cmInformer = opts.kube.makeInformer('configmaps', {
      fieldSelector: `metadata.name=${this.configMapName}`,
      transform: (cm) => ({ ...cm, metadata: { ...cm.metadata, managedFields: undefined } }),
    });
    this.configMaps = new InformerRunner(cmInformer, { name: 'configmaps', verbs: `list and watch configmaps in all namespaces`, log: opts.log, ...backoff });

    // Credentials refused, RBAC forbidding the write, the API server throttling: no namespace would
    // fare better, so the whole queue waits (WorkQueue.holdsAll) and it is said once a minute,
    // with how many went unsaid, not once per namespace per retry.
    const sharedFailure = (err: unknown): boolean => SHARED_FAILURES.has(kubeStatusCode(err) ?? 0);
    const sharedLines = new LogThrottle(60_000);
    this.queue = new WorkQueue((ns) => this.reconcile(ns), { ...opts.queue, holdsAll: sharedFailure }, (ns, err, n, retryInMs) => {
      this.failures++;
      this.lastError = explainKubeError(err, `create and update configmaps in namespace ${ns}`);
      if (!sharedFailure(err)) {
        this.log?.warn({ namespace: ns, configMap: this.configMapName, error: this.lastError, failures: n, retryInMs }, 'root certificate ConfigMap not written; retrying');
        return;
      }
      const unsaid = sharedLines.take();
      if (unsaid === undefined) return;
      this.log?.warn(
        { namespace: ns, configMap: this.configMapName, error: this.lastError, waiting: this.queue.length, failuresUnsaid: unsaid, retryInMs },
        'root certificate ConfigMaps not written, in any namespace: the API server refuses meshcert (or throttles it); every namespace waits, retrying with backoff',
      );
    });

    nsInformer.on('add', (ns) => this.onNamespace(ns));
    // A namespace whose ConfigMap is up to date needs nothing for a change of its labels or
    // annotations (one coming into the selector has none yet): no turn of the write rate.
    nsInformer.on('update', (ns) => {
      if (!this.upToDate(this.configMaps.informer.get(this.configMapName, ns.metadata?.name ?? ''))) this.onNamespace(ns);
    });
    const onCm = (cm: V1ConfigMap): void => {
      const ns = cm.metadata?.namespace;
      if (ns && this.ready && this.opts.isLeader()) this.queue.add(ns);
    };
    // An up-to-date ConfigMap needs nothing: above all this leader's own writes, which come back
    // as updates and would otherwise each take a turn of the write rate (a rotation twice over).
    const onChangedCm = (cm: V1ConfigMap): void => {
      if (!this.upToDate(cm)) onCm(cm);
    };
    cmInformer.on('add', onChangedCm);
    cmInformer.on('update', onChangedCm);
    cmInformer.on('delete', onCm);
  }

  /** Starts the informers; writes begin once both caches are synced and this replica leads. */
  start(): void {
    if (this.started || this.stopped) return;
    this.started = true;
    this.namespaces.start();
    this.configMaps.start();
    void Promise.all([this.namespaces.waitSynced(), this.configMaps.waitSynced()]).then(() => {
      if (this.stopped) return;
      this.ready = true;
      this.log?.info({ namespaces: this.namespaces.informer.list().length, configMap: this.configMapName }, 'root certificate distribution synced');
      this.queue.resume();
      this.resyncAll();
    });
    const period = this.opts.resyncPeriodMs ?? 600_000;
    if (period > 0) {
      this.resyncTimer = setInterval(() => this.resyncAll(), period);
      this.resyncTimer.unref();
    }
  }

  /** Resolves once both informers have listed (not required before use). */
  async waitSynced(): Promise<void> {
    await Promise.all([this.namespaces.waitSynced(), this.configMaps.waitSynced()]);
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.ready = false;
    clearInterval(this.resyncTimer);
    await this.queue.stop();
    await Promise.all([this.namespaces.stop(), this.configMaps.stop()]);
  }

  /**
   * Queues every selected namespace whose cached ConfigMap is not up to date (no-op until synced,
   * or when not leading). The reconcile would find the others up to date in the same cache and do
   * nothing, but each would still take a turn of the write rate limit, and a namespace created
   * meanwhile would wait behind thousands of them for its ConfigMap (its pods with it).
   */
  resyncAll(): void {
    if (!this.ready || !this.opts.isLeader()) return;
    for (const ns of this.namespaces.informer.list()) {
      const name = ns.metadata?.name;
      if (name && !this.upToDate(this.configMaps.informer.get(this.configMapName, name))) this.onNamespace(ns);
    }
  }

  /** Call after the root bundle changed (rotation): every namespace is brought up to date. */
  onRootBundleChanged(): void {
    if (this.ready && this.opts.isLeader()) this.log?.info({ namespaces: this.namespaces.informer.list().length }, 'root bundle changed: updating every namespace');
    this.resyncAll();
  }

  /** Wire to LeaderElector's onStartedLeading. */
  onStartedLeading(): void {
    this.resyncAll();
  }

  status(): RootCertDistributorStatus {
    return {
      synced: this.ready,
      namespaces: this.ready ? this.namespaces.informer.list().length : 0,
      queued: this.queue.length,
      created: this.created,
      updated: this.updated,
      failures: this.failures,
      lastError: this.lastError ?? this.namespaces.lastError ?? this.configMaps.lastError,
    };
  }

  /** Resolves when no namespace is queued or being written (tests). */
  idle(): Promise<void> {
    return this.queue.idle();
  }

  private wanted(ns: V1Namespace): boolean {
    const name = ns.metadata?.name;
    return !!name && !this.excluded.has(name) && !isTerminating(ns);
  }

  private onNamespace(ns: V1Namespace): void {
    if (!this.ready || !this.opts.isLeader() || !this.wanted(ns)) return;
    this.queue.add(ns.metadata!.name!);
  }

  private upToDate(cm: V1ConfigMap | undefined): boolean {
    const pem = this.opts.rootBundle();
    const data = cm?.data?.[ROOT_CERT_KEY];
    if (cm === undefined || data === undefined || cm.metadata?.labels?.[ISTIO_CONFIG_LABEL] !== 'true') return false;
    // The same certificates written otherwise (istiod writes its file's bytes during a migration
    // overlap) are up to date: rewriting them would only start a write war with that writer.
    return data === pem || this.keyOf(data) === this.keyOf(pem);
  }

  /** bundleKey, remembered for the few distinct texts seen (every namespace holds the same one). */
  private keyOf(pem: string): string {
    let key = this.bundleKeys.get(pem);
    if (key === undefined) {
      key = bundleKey(pem);
      if (this.bundleKeys.size >= 16) this.bundleKeys.clear();
      this.bundleKeys.set(pem, key);
    }
    return key;
  }

  private async read(namespace: string): Promise<V1ConfigMap | undefined> {
    try {
      return await this.opts.kube.core.readNamespacedConfigMap({ namespace, name: this.configMapName });
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  private async reconcile(namespace: string): Promise<void> {
    if (!this.opts.isLeader()) return;
    const ns = this.namespaces.informer.get(namespace);
    if (!ns || !this.wanted(ns)) return;
    const pem = this.opts.rootBundle();
    if (!pem) {
      this.log?.warn({ namespace }, 'no root bundle to distribute');
      return;
    }
    const core = this.opts.kube.core;
    const name = this.configMapName;
    let cm = this.configMaps.informer.get(name, namespace);
    for (let round = 0; round < 4; round++) {
      if (!this.opts.isLeader()) return;
      if (!cm) {
        try {
          await core.createNamespacedConfigMap({
            namespace,
            body: { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name, namespace, labels: { [ISTIO_CONFIG_LABEL]: 'true' } }, data: { [ROOT_CERT_KEY]: pem } },
          });
          this.created++;
          this.log?.debug({ namespace, configMap: name }, 'root certificate ConfigMap created');
          return;
        } catch (err) {
          if (isConflict(err)) {
            cm = await this.read(namespace); // AlreadyExists: our cache is behind
            continue;
          }
          if (this.namespaceGone(err)) {
            this.log?.debug({ namespace, error: describeKubeError(err) }, 'namespace gone or terminating; root certificate ConfigMap skipped');
            return;
          }
          throw err;
        }
      }
      if (this.upToDate(cm)) return;
      const body = structuredClone(cm) as V1ConfigMap;
      body.apiVersion = 'v1';
      body.kind = 'ConfigMap';
      body.metadata = { ...body.metadata, labels: { ...(body.metadata?.labels ?? {}), [ISTIO_CONFIG_LABEL]: 'true' } };
      body.data = { ...(body.data ?? {}), [ROOT_CERT_KEY]: pem };
      try {
        await core.replaceNamespacedConfigMap({ namespace, name, body });
        this.updated++;
        this.log?.debug({ namespace, configMap: name }, 'root certificate ConfigMap updated');
        return;
      } catch (err) {
        if (isConflict(err)) {
          cm = await this.read(namespace); // modified meanwhile: read it again
          continue;
        }
        if (isNotFound(err)) {
          cm = undefined; // deleted meanwhile: create it
          continue;
        }
        throw err;
      }
    }
    throw new Error(`ConfigMap ${namespace}/${name} kept changing under meshcert (repeated 409 Conflict)`);
  }

  /** A create refused because the namespace no longer exists or is being terminated. */
  private namespaceGone(err: unknown): boolean {
    const code = kubeStatusCode(err);
    const msg = describeKubeError(err);
    return (code === 404 && /namespaces? "[^"]*" not found/.test(msg)) || (code === 403 && msg.includes('being terminated'));
  }
}
