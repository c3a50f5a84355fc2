import { describeKubeError, kubeStatusCode } from '../k8s/client.js';
import { explainKubeError, InformerRunner, isConflict, isNotFound } from './kube-util.js';
import { WorkQueue } from './work-queue.js';
export const ROOT_CERT_CONFIGMAP = 'istio-ca-root-cert';
export const ROOT_CERT_KEY = 'root-cert.pem';
export const ISTIO_CONFIG_LABEL = 'istio.io/config';
/** Namespaces istiod never writes the root ConfigMap into (its inject.IgnoredNamespaces). */
export const ISTIOD_IGNORED_NAMESPACES = ['kube-system', 'kube-public', 'kube-node-lease', 'local-path-storage'];
function isTerminating(ns) {
    return ns.status?.phase === 'Terminating' || (ns.metadata?.deletionTimestamp !== undefined && ns.metadata.deletionTimestamp !== null);
}
export class RootCertDistributor {
    configMapName;
    opts;
    log;
    excluded;
    namespaces;
    configMaps;
    queue;
    resyncTimer;
    started = false;
    stopped = false;
    ready = false;
    created = 0;
    updated = 0;
    failures = 0;
    lastError;
    constructor(opts) {
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
        this.queue = new WorkQueue((ns) => this.reconcile(ns), opts.queue, (ns, err, n, retryInMs) => {
            this.failures++;
            this.lastError = explainKubeError(err, `create and update configmaps in namespace ${ns}`);
            this.log?.warn({ namespace: ns, configMap: this.configMapName, error: this.lastError, failures: n, retryInMs }, 'root certificate ConfigMap not written; retrying');
        });
        nsInformer.on('add', (ns) => this.onNamespace(ns));
        nsInformer.on('update', (ns) => this.onNamespace(ns));
        const onCm = (cm) => {
            const ns = cm.metadata?.namespace;
            if (ns && this.ready && this.opts.isLeader())
                this.queue.add(ns);
        };
        cmInformer.on('add', (cm) => {
            if (!this.upToDate(cm))
                onCm(cm);
        });
        cmInformer.on('update', onCm);
        cmInformer.on('delete', onCm);
    }
    /** Starts the informers; writes begin once both caches are synced and this replica leads. */
    start() {
        if (this.started || this.stopped)
            return;
        this.started = true;
        this.namespaces.start();
        this.configMaps.start();
        void Promise.all([this.namespaces.waitSynced(), this.configMaps.waitSynced()]).then(() => {
            if (this.stopped)
                return;
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
    async waitSynced() {
        await Promise.all([this.namespaces.waitSynced(), this.configMaps.waitSynced()]);
    }
    async stop() {
        if (this.stopped)
            return;
        this.stopped = true;
        this.ready = false;
        clearInterval(this.resyncTimer);
        await this.queue.stop();
        await Promise.all([this.namespaces.stop(), this.configMaps.stop()]);
    }
    /** Queues every selected namespace (no-op until synced, or when not leading). */
    resyncAll() {
        if (!this.ready || !this.opts.isLeader())
            return;
        for (const ns of this.namespaces.informer.list())
            this.onNamespace(ns);
    }
    /** Call after the root bundle changed (rotation): every namespace is brought up to date. */
    onRootBundleChanged() {
        if (this.ready && this.opts.isLeader())
            this.log?.info({ namespaces: this.namespaces.informer.list().length }, 'root bundle changed: updating every namespace');
        this.resyncAll();
    }
    /** Wire to LeaderElector's onStartedLeading. */
    onStartedLeading() {
        this.resyncAll();
    }
    status() {
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
    idle() {
        return this.queue.idle();
    }
    wanted(ns) {
        const name = ns.metadata?.name;
        return !!name && !this.excluded.has(name) && !isTerminating(ns);
    }
    onNamespace(ns) {
        if (!this.ready || !this.opts.isLeader() || !this.wanted(ns))
            return;
        this.queue.add(ns.metadata.name);
    }
    upToDate(cm) {
        const pem = this.opts.rootBundle();
        return cm !== undefined && cm.data?.[ROOT_CERT_KEY] === pem && cm.metadata?.labels?.[ISTIO_CONFIG_LABEL] === 'true';
    }
    async read(namespace) {
        try {
            return await this.opts.kube.core.readNamespacedConfigMap({ namespace, name: this.configMapName });
        }
        catch (err) {
            if (isNotFound(err))
                return undefined;
            throw err;
        }
    }
    async reconcile(namespace) {
        if (!this.opts.isLeader())
            return;
        const ns = this.namespaces.informer.get(namespace);
        if (!ns || !this.wanted(ns))
            return;
        const pem = this.opts.rootBundle();
        if (!pem) {
            this.log?.warn({ namespace }, 'no root bundle to distribute');
            return;
        }
        const core = this.opts.kube.core;
        const name = this.configMapName;
        let cm = this.configMaps.informer.get(name, namespace);
        for (let round = 0; round < 4; round++) {
            if (!this.opts.isLeader())
                return;
            if (!cm) {
                try {
                    await core.createNamespacedConfigMap({
                        namespace,
                        body: { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name, namespace, labels: { [ISTIO_CONFIG_LABEL]: 'true' } }, data: { [ROOT_CERT_KEY]: pem } },
                    });
                    this.created++;
                    this.log?.debug({ namespace, configMap: name }, 'root certificate ConfigMap created');
                    return;
                }
                catch (err) {
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
            if (this.upToDate(cm))
                return;
            const body = structuredClone(cm);
            body.apiVersion = 'v1';
            body.kind = 'ConfigMap';
            body.metadata = { ...body.metadata, labels: { ...(body.metadata?.labels ?? {}), [ISTIO_CONFIG_LABEL]: 'true' } };
            body.data = { ...(body.data ?? {}), [ROOT_CERT_KEY]: pem };
            try {
                await core.replaceNamespacedConfigMap({ namespace, name, body });
                this.updated++;
                this.log?.debug({ namespace, configMap: name }, 'root certificate ConfigMap updated');
                return;
            }
            catch (err) {
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
    namespaceGone(err) {
        const code = kubeStatusCode(err);
        const msg = describeKubeError(err);
        return (code === 404 && /namespaces? "[^"]*" not found/.test(msg)) || (code === 403 && msg.includes('being terminated'));
    }
}
//# sourceMappingURL=root-distribution.js.map