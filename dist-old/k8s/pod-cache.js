import { describeKubeError, kubeStatusCode } from './client.js';
export class PodCacheNotReadyError extends Error {
    name = 'PodCacheNotReadyError';
}
/** The initial sync failed or timed out (the cache keeps retrying in the background until stop()). */
export class PodCacheStartError extends Error {
    name = 'PodCacheStartError';
}
const TERMINAL = new Set(['Succeeded', 'Failed']);
const COUNTING = new Set(['Pending', 'Running']);
/** True when `pod` counts as running on its node at time `nowMs` (see the module comment). */
export function podCounts(pod, nowMs) {
    if (!pod.nodeName || !pod.serviceAccount)
        return false;
    if (!COUNTING.has(pod.phase))
        return false;
    if (pod.deletionTimestamp && pod.deletionTimestamp.getTime() <= nowMs)
        return false;
    return true;
}
/** True when the pod has finished (it can no longer act, whatever its token says). */
export function podTerminated(pod) {
    return TERMINAL.has(pod.phase);
}
function parseTime(v) {
    if (v instanceof Date)
        return Number.isNaN(v.getTime()) ? undefined : v;
    if (typeof v === 'string' && v !== '') {
        const d = new Date(v);
        return Number.isNaN(d.getTime()) ? undefined : d;
    }
    return undefined;
}
/** The fields node authorization reads, from a listed (deserialized) or watched (raw JSON) pod. */
export function toPodInfo(pod) {
    const m = pod.metadata ?? {};
    return {
        namespace: m.namespace ?? '',
        name: m.name ?? '',
        uid: m.uid ?? '',
        serviceAccount: pod.spec?.serviceAccountName ?? '',
        nodeName: pod.spec?.nodeName ?? '',
        phase: pod.status?.phase ?? '',
        deletionTimestamp: parseTime(m.deletionTimestamp),
        resourceVersion: m.resourceVersion ?? '',
    };
}
/** Strips a pod to what the cache keeps (the informer's own store holds this, not the full pod). */
function stripPod(pod) {
    const m = pod.metadata ?? {};
    const dt = parseTime(m.deletionTimestamp);
    return {
        metadata: {
            name: m.name,
            namespace: m.namespace,
            uid: m.uid,
            resourceVersion: m.resourceVersion,
            ...(dt ? { deletionTimestamp: dt } : {}),
        },
        spec: { nodeName: pod.spec?.nodeName, serviceAccountName: pod.spec?.serviceAccountName, containers: [] },
        status: { phase: pod.status?.phase },
    };
}
const key = (namespace, name) => `${namespace}/${name}`;
export class PodCache {
    informer;
    server;
    now;
    log;
    backoffInitialMs;
    backoffMaxMs;
    maxStaleMs;
    startTimeoutMs;
    byKey = new Map();
    byUid = new Map();
    /** node → `ns/sa` → pod keys */
    byNode = new Map();
    running = false;
    stopped = false;
    everSynced = false;
    connected = false;
    brokenSince = 0;
    listedRv;
    lastError;
    errorSeq = 0;
    backoffMs;
    retryTimer;
    startPromise;
    startWaiter;
    constructor(opts) {
        this.server = opts.client.server;
        this.now = opts.now ?? Date.now;
        this.log = opts.log;
        this.backoffInitialMs = opts.backoffInitialMs ?? 500;
        this.backoffMaxMs = opts.backoffMaxMs ?? 30_000;
        this.maxStaleMs = opts.maxStaleMs ?? 60_000;
        this.startTimeoutMs = opts.startTimeoutMs ?? 30_000;
        this.backoffMs = this.backoffInitialMs;
        this.informer = opts.client.makeInformer('pods', {
            ...(opts.fieldSelector === undefined ? {} : { fieldSelector: opts.fieldSelector }),
            ...(opts.labelSelector === undefined ? {} : { labelSelector: opts.labelSelector }),
            ...(opts.pageSize === undefined ? {} : { pageSize: opts.pageSize }),
            transform: stripPod,
        });
        this.informer.on('add', (p) => this.upsert(p));
        this.informer.on('update', (p) => this.upsert(p));
        this.informer.on('delete', (p) => this.remove(p));
        this.informer.on('error', (err) => this.onError(err));
        this.informer.onSynced((rv) => this.onSynced(rv));
    }
    /**
     * Lists the pods and starts watching. Resolves once the first list is in the cache; rejects with
     * PodCacheStartError when the first attempt fails (API server unreachable, credentials or RBAC
     * refused) or nothing synced within startTimeoutMs. After a rejection the cache keeps retrying
     * with backoff (lookups report not ready meanwhile); call stop() to give up.
     */
    start() {
        if (this.stopped)
            return Promise.reject(new Error('a stopped PodCache cannot be started again; create a new one'));
        if (this.startPromise)
            return this.startPromise;
        this.running = true;
        this.startPromise = new Promise((resolve, reject) => {
            const timer = setTimeout(() => {
                this.startWaiter = undefined;
                reject(new PodCacheStartError(`the pod cache did not sync from the Kubernetes API server ${this.server} within ${this.startTimeoutMs} ms${this.lastError ? ` (last error: ${this.lastError})` : ''}`));
            }, this.startTimeoutMs);
            this.startWaiter = { resolve, reject, timer };
        });
        void this.runInformer();
        return this.startPromise;
    }
    /** Stops watching for good (a PodCache is single-use); lookups report not ready afterwards. */
    async stop() {
        this.running = false;
        this.stopped = true;
        clearTimeout(this.retryTimer);
        this.retryTimer = undefined;
        if (this.startWaiter) {
            clearTimeout(this.startWaiter.timer);
            this.startWaiter.reject(new PodCacheStartError('the pod cache was stopped before it synced'));
            this.startWaiter = undefined;
        }
        await this.informer.stop();
    }
    get synced() {
        if (!this.running || !this.everSynced)
            return false;
        return this.connected || this.now() - this.brokenSince <= this.maxStaleMs;
    }
    get size() {
        return this.byKey.size;
    }
    status() {
        return { synced: this.synced, connected: this.connected, pods: this.byKey.size, listedResourceVersion: this.listedRv, lastError: this.lastError };
    }
    getPod(namespace, name) {
        this.assertReady();
        return this.byKey.get(key(namespace, name));
    }
    getPodByUid(uid) {
        this.assertReady();
        return this.byUid.get(uid);
    }
    hasServiceAccountOnNode(nodeName, namespace, serviceAccount) {
        this.assertReady();
        const keys = this.byNode.get(nodeName)?.get(key(namespace, serviceAccount));
        if (!keys)
            return false;
        const now = this.now();
        for (const k of keys) {
            const pod = this.byKey.get(k);
            if (pod && podCounts(pod, now))
                return true;
        }
        return false;
    }
    /** `namespace/serviceAccount` of the pods that count as running on the node now. */
    serviceAccountsOnNode(nodeName) {
        this.assertReady();
        const out = [];
        const now = this.now();
        for (const [sa, keys] of this.byNode.get(nodeName) ?? []) {
            for (const k of keys) {
                const pod = this.byKey.get(k);
                if (pod && podCounts(pod, now)) {
                    out.push(sa);
                    break;
                }
            }
        }
        return out.sort();
    }
    assertReady() {
        if (this.synced)
            return;
        const why = !this.running
            ? 'it is not running'
            : !this.everSynced
                ? 'the first list of pods has not completed'
                : `the watch on the Kubernetes API server has been broken for more than ${Math.round(this.maxStaleMs / 1000)} s`;
        throw new PodCacheNotReadyError(`the pod cache is not ready: ${why}${this.lastError ? ` (last error: ${this.lastError})` : ''}`);
    }
    // -- informer plumbing ----------------------------------------------------------------------
    async runInformer() {
        if (!this.running)
            return;
        const seq = this.errorSeq;
        try {
            await this.informer.start();
        }
        catch (err) {
            this.onError(err);
            return;
        }
        // ListWatch.start() resolves once the watch is established, or after it reported an error.
        if (this.running && seq === this.errorSeq)
            this.markConnected();
    }
    markConnected() {
        this.connected = true;
        this.backoffMs = this.backoffInitialMs;
    }
    onSynced(rv) {
        const first = !this.everSynced;
        this.everSynced = true;
        this.listedRv = rv;
        this.markConnected();
        if (first)
            this.log?.info({ pods: this.byKey.size, resourceVersion: rv }, 'pod cache synced');
        else
            this.log?.info({ pods: this.byKey.size, resourceVersion: rv }, 'pod cache re-listed');
        if (this.startWaiter) {
            clearTimeout(this.startWaiter.timer);
            this.startWaiter.resolve();
            this.startWaiter = undefined;
        }
    }
    onError(err) {
        this.errorSeq++;
        if (!this.running)
            return;
        if (this.connected || this.brokenSince === 0)
            this.brokenSince = this.now();
        this.connected = false;
        this.lastError = explain(err, this.server);
        this.log?.warn({ error: this.lastError, retryInMs: this.backoffMs }, 'pod list/watch failed; retrying');
        if (this.startWaiter) {
            clearTimeout(this.startWaiter.timer);
            this.startWaiter.reject(new PodCacheStartError(`cannot list pods: ${this.lastError}`));
            this.startWaiter = undefined;
        }
        if (this.retryTimer)
            return;
        const delay = Math.round(this.backoffMs * (0.8 + Math.random() * 0.4));
        this.backoffMs = Math.min(this.backoffMaxMs, this.backoffMs * 2);
        this.retryTimer = setTimeout(() => {
            this.retryTimer = undefined;
            void this.runInformer();
        }, delay);
    }
    upsert(pod) {
        const info = toPodInfo(pod);
        if (!info.name)
            return;
        const k = key(info.namespace, info.name);
        const old = this.byKey.get(k);
        if (old)
            this.unindex(k, old);
        this.byKey.set(k, info);
        if (info.uid)
            this.byUid.set(info.uid, info);
        if (info.nodeName && info.serviceAccount) {
            let node = this.byNode.get(info.nodeName);
            if (!node)
                this.byNode.set(info.nodeName, (node = new Map()));
            const saKey = key(info.namespace, info.serviceAccount);
            let keys = node.get(saKey);
            if (!keys)
                node.set(saKey, (keys = new Set()));
            keys.add(k);
        }
    }
    remove(pod) {
        const k = key(pod.metadata?.namespace ?? '', pod.metadata?.name ?? '');
        const old = this.byKey.get(k);
        if (old)
            this.unindex(k, old);
    }
    unindex(k, old) {
        this.byKey.delete(k);
        if (old.uid && this.byUid.get(old.uid) === old)
            this.byUid.delete(old.uid);
        if (old.nodeName && old.serviceAccount) {
            const node = this.byNode.get(old.nodeName);
            const saKey = key(old.namespace, old.serviceAccount);
            const keys = node?.get(saKey);
            if (node && keys) {
                keys.delete(k);
                if (keys.size === 0)
                    node.delete(saKey);
                if (node.size === 0)
                    this.byNode.delete(old.nodeName);
            }
        }
    }
}
function explain(err, server) {
    const code = kubeStatusCode(err);
    const base = describeKubeError(err);
    if (code === 401)
        return `${base} (the API server at ${server} rejected meshcert's credentials)`;
    if (code === 403)
        return `${base} (meshcert's service account needs RBAC to list and watch pods cluster-wide)`;
    if (code === undefined)
        return `${base} (API server ${server})`;
    return base;
}
//# sourceMappingURL=pod-cache.js.map