/**
 * Helpers shared by the controllers: keeping a list+watch informer running (the library's
 * ListWatch stops on any error), an informer for one named Secret (src/k8s/client.ts has none for
 * Secrets), and small API-error predicates.
 */
import type { KubernetesObject, V1Secret } from '@kubernetes/client-node';
import type { Logger } from '../log/logger.js';
import { describeKubeError, kubeStatusCode, KubeInformer, StreamingWatch, type KubeClient, type WatchOptions } from '../k8s/client.js';

export type ControllerLog = Pick<Logger, 'info' | 'warn' | 'debug' | 'error'>;

export const isConflict = (err: unknown): boolean => kubeStatusCode(err) === 409;
export const isNotFound = (err: unknown): boolean => kubeStatusCode(err) === 404;

/** A message for logs, with a hint for the errors an operator must fix (credentials, RBAC). */
export function explainKubeError(err: unknown, what: string): string {
  const code = kubeStatusCode(err);
  const base = describeKubeError(err);
  if (code === 401) return `${base} (the API server rejected meshcert's credentials)`;
  if (code === 403) return `${base} (meshcert's service account is not allowed to ${what}: check its RBAC)`;
  return base;
}

/** Sleeps `ms` (unref'd timer); resolves early when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) {
      resolve();
      return;
    }
    const done = (): void => {
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
export function withDeadline<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(message)), Math.max(1, ms));
    t.unref();
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(t);
        reject(e instanceof Error ? e : new Error(String(e)));
      },
    );
  });
}

/**
 * A list+watch informer for the Secret `name` in `namespace` (field selector metadata.name=NAME,
 * which RBAC `resourceNames` can authorize for list and watch). The cache keeps metadata only:
 * key material never sits in the informer.
 */
export function makeNamedSecretInformer(kube: Pick<KubeClient, 'kubeConfig' | 'core' | 'watchOptions'>, namespace: string, name: string, watch?: WatchOptions): KubeInformer<V1Secret> {
  const fieldSelector = `metadata.name=${name}`;
  const strip = (s: V1Secret): V1Secret => ({ metadata: { ...s.metadata } });
  const stream = new StreamingWatch(kube.kubeConfig, watch ?? kube.watchOptions, strip as (o: unknown) => unknown);
  const path = `/api/v1/namespaces/${encodeURIComponent(namespace)}/secrets`;
  return new KubeInformer<V1Secret>(
    path,
    stream,
    async () => {
      const list = await kube.core.listNamespacedSecret({ namespace, fieldSelector });
      return { metadata: { resourceVersion: list.metadata?.resourceVersion ?? '' }, items: list.items.map(strip) };
    },
    undefined,
    fieldSelector,
  );
}

export interface InformerRunnerOptions {
  /** For logs, e.g. "namespaces". */
  readonly name: string;
  /** What the informer needs RBAC for, for the 403 hint (e.g. "list and watch namespaces"). */
  readonly verbs: string;
  readonly log?: ControllerLog | undefined;
  /** Restart backoff after a list/watch failure. Defaults 500 ms, 30 s. */
  readonly backoffInitialMs?: number;
  readonly backoffMaxMs?: number;
  /** A watch up this long without an error resets the backoff. Default 60000 ms. */
  readonly stableMs?: number;
  /** Stop for good (one warning) when the API server answers 403: for optional watches. */
  readonly stopOnForbidden?: boolean;
}

/**
 * Keeps a KubeInformer running: restarts it with exponential backoff after any list/watch error
 * (resuming from its resourceVersion; 410 makes it re-list), and tells when the first full list
 * has been applied (`synced`, `waitSynced()`, `onSynced`).
 */
export class InformerRunner<T extends KubernetesObject> {
  readonly informer: KubeInformer<T>;
  private readonly opts: InformerRunnerOptions;
  private readonly backoffInitialMs: number;
  private readonly backoffMaxMs: number;
  private backoffMs: number;
  private readonly stableMs: number;
  /** When the informer last started without an error since (undefined while failing). */
  private upSince: number | undefined;
  private running = false;
  private errorSeq = 0;
  private retryTimer: NodeJS.Timeout | undefined;
  private syncedOnce = false;
  private readonly syncWaiters: Array<() => void> = [];
  private readonly syncListeners: Array<() => void> = [];
  lastError: string | undefined;

  constructor(informer: KubeInformer<T>, opts: InformerRunnerOptions) {
    this.informer = informer;
    this.opts = opts;
    this.backoffInitialMs = opts.backoffInitialMs ?? 500;
    this.backoffMaxMs = opts.backoffMaxMs ?? 30_000;
    this.backoffMs = this.backoffInitialMs;
    this.stableMs = opts.stableMs ?? 60_000;
    informer.on('error', (err: unknown) => this.onError(err));
    informer.onSynced(() => {
      this.backoffMs = this.backoffInitialMs;
      this.lastError = undefined;
      const first = !this.syncedOnce;
      this.syncedOnce = true;
      if (first) for (const w of this.syncWaiters.splice(0)) w();
      for (const l of this.syncListeners) l();
    });
  }

  /** True once a full list has been applied (stays true across later reconnects). */
  get synced(): boolean {
    return this.syncedOnce;
  }

  /** Called after every full list (the first and each re-list). */
  onSynced(cb: () => void): void {
    this.syncListeners.push(cb);
  }

  waitSynced(): Promise<void> {
    if (this.syncedOnce) return Promise.resolve();
    return new Promise((resolve) => this.syncWaiters.push(resolve));
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    void this.run();
  }

  async stop(): Promise<void> {
    this.running = false;
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    await this.informer.stop();
  }

  private async run(): Promise<void> {
    if (!this.running) return;
    const seq = this.errorSeq;
    try {
      await this.informer.start();
    } catch (err) {
      if (seq === this.errorSeq) this.onError(err);
      return;
    }
    // Started (a watch resumed from its resourceVersion, no list). Only once it has stayed up for
    // `stableMs` does the next failure start from the initial backoff again, as after a full list:
    // a server that accepts watches and drops them at once must still see the backoff grow.
    if (this.running && seq === this.errorSeq) this.upSince = Date.now();
  }

  private onError(err: unknown): void {
    this.errorSeq++;
    if (!this.running) return;
    if (this.upSince !== undefined && Date.now() - this.upSince >= this.stableMs) this.backoffMs = this.backoffInitialMs;
    this.upSince = undefined;
    this.lastError = explainKubeError(err, this.opts.verbs);
    if (this.opts.stopOnForbidden && kubeStatusCode(err) === 403) {
      this.opts.log?.warn({ informer: this.opts.name, error: this.lastError }, 'watch not permitted; not retrying it');
      this.running = false;
      void this.informer.stop();
      return;
    }
    this.opts.log?.warn({ informer: this.opts.name, error: this.lastError, retryInMs: this.backoffMs }, 'list/watch failed; retrying');
    if (this.retryTimer) return;
    const delay = Math.round(this.backoffMs * (0.8 + Math.random() * 0.4));
    this.backoffMs = Math.min(this.backoffMaxMs, this.backoffMs * 2);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      void this.run();
    }, delay);
    this.retryTimer.unref();
  }
}
