import { describeKubeError, kubeStatusCode, KubeInformer, StreamingWatch } from '../k8s/client.js';
export const isConflict = (err) => kubeStatusCode(err) === 409;
export const isNotFound = (err) => kubeStatusCode(err) === 404;
/** A message for logs, with a hint for the errors an operator must fix (credentials, RBAC). */
export function explainKubeError(err, what) {
    const code = kubeStatusCode(err);
    const base = describeKubeError(err);
    if (code === 401)
        return `${base} (the API server rejected meshcert's credentials)`;
    if (code === 403)
        return `${base} (meshcert's service account is not allowed to ${what}: check its RBAC)`;
    return base;
}
/** Sleeps `ms` (unref'd timer); resolves early when `signal` aborts. */
export function sleep(ms, signal) {
    return new Promise((resolve) => {
        if (signal?.aborted) {
            resolve();
            return;
        }
        const done = () => {
            clearTimeout(t);
            signal?.removeEventListener('abort', done);
            resolve();
        };
        const t = setTimeout(done, Math.max(0, ms));
        t.unref();
        signal?.addEventListener('abort', done, { once: true });
    });
}
/** Rejects with `message` when `p` has not settled within `ms` (the request itself is not aborted). */
export function withDeadline(p, ms, message) {
    return new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(message)), Math.max(1, ms));
        t.unref();
        p.then((v) => {
            clearTimeout(t);
            resolve(v);
        }, (e) => {
            clearTimeout(t);
            reject(e instanceof Error ? e : new Error(String(e)));
        });
    });
}
/**
 * A list+watch informer for the Secret `name` in `namespace` (field selector metadata.name=NAME,
 * which RBAC `resourceNames` can authorize for list and watch). The cache keeps metadata only:
 * key material never sits in the informer.
 */
export function makeNamedSecretInformer(kube, namespace, name, watch) {
    const fieldSelector = `metadata.name=${name}`;
    const strip = (s) => ({ metadata: { ...s.metadata } });
    const stream = new StreamingWatch(kube.kubeConfig, watch, strip);
    const path = `/api/v1/namespaces/${encodeURIComponent(namespace)}/secrets`;
    return new KubeInformer(path, stream, async () => {
        const list = await kube.core.listNamespacedSecret({ namespace, fieldSelector });
        return { metadata: { resourceVersion: list.metadata?.resourceVersion ?? '' }, items: list.items.map(strip) };
    }, undefined, fieldSelector);
}
/**
 * Keeps a KubeInformer running: restarts it with exponential backoff after any list/watch error
 * (resuming from its resourceVersion; 410 makes it re-list), and tells when the first full list
 * has been applied (`synced`, `waitSynced()`, `onSynced`).
 */
export class InformerRunner {
    informer;
    opts;
    backoffInitialMs;
    backoffMaxMs;
    backoffMs;
    running = false;
    errorSeq = 0;
    retryTimer;
    syncedOnce = false;
    syncWaiters = [];
    syncListeners = [];
    lastError;
    constructor(informer, opts) {
        this.informer = informer;
        this.opts = opts;
        this.backoffInitialMs = opts.backoffInitialMs ?? 500;
        this.backoffMaxMs = opts.backoffMaxMs ?? 30_000;
        this.backoffMs = this.backoffInitialMs;
        informer.on('error', (err) => this.onError(err));
        informer.onSynced(() => {
            this.backoffMs = this.backoffInitialMs;
            this.lastError = undefined;
            const first = !this.syncedOnce;
            this.syncedOnce = true;
            if (first)
                for (const w of this.syncWaiters.splice(0))
                    w();
            for (const l of this.syncListeners)
                l();
        });
    }
    /** True once a full list has been applied (stays true across later reconnects). */
    get synced() {
        return this.syncedOnce;
    }
    /** Called after every full list (the first and each re-list). */
    onSynced(cb) {
        this.syncListeners.push(cb);
    }
    waitSynced() {
        if (this.syncedOnce)
            return Promise.resolve();
        return new Promise((resolve) => this.syncWaiters.push(resolve));
    }
    start() {
        if (this.running)
            return;
        this.running = true;
        void this.run();
    }
    async stop() {
        this.running = false;
        clearTimeout(this.retryTimer);
        this.retryTimer = undefined;
        await this.informer.stop();
    }
    async run() {
        if (!this.running)
            return;
        const seq = this.errorSeq;
        try {
            await this.informer.start();
        }
        catch (err) {
            if (seq === this.errorSeq)
                this.onError(err);
        }
    }
    onError(err) {
        this.errorSeq++;
        if (!this.running)
            return;
        this.lastError = explainKubeError(err, this.opts.verbs);
        if (this.opts.stopOnForbidden && kubeStatusCode(err) === 403) {
            this.opts.log?.warn({ informer: this.opts.name, error: this.lastError }, 'watch not permitted; not retrying it');
            this.running = false;
            void this.informer.stop();
            return;
        }
        this.opts.log?.warn({ informer: this.opts.name, error: this.lastError, retryInMs: this.backoffMs }, 'list/watch failed; retrying');
        if (this.retryTimer)
            return;
        const delay = Math.round(this.backoffMs * (0.8 + Math.random() * 0.4));
        this.backoffMs = Math.min(this.backoffMaxMs, this.backoffMs * 2);
        this.retryTimer = setTimeout(() => {
            this.retryTimer = undefined;
            void this.run();
        }, delay);
        this.retryTimer.unref();
    }
}
//# sourceMappingURL=kube-util.js.map