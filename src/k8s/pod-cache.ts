/**
 * A watch-backed cache of the cluster's pods, for ambient node authorization (PROTOCOL §3).
 *
 * Indexes: `namespace/name` → pod, UID → pod, node name → `namespace/serviceAccount` → pods.
 * Only the fields node authorization reads are kept (see toPodInfo).
 *
 * Which pods count as "a pod running as ns/sa is on node N" (podCounts):
 *   - spec.nodeName is N (the pod is bound to the node) and spec.serviceAccountName is set;
 *   - status.phase is Pending or Running (a Pending pod on a node is being started there and its
 *     ztunnel needs the certificate before the containers run; Succeeded/Failed pods, and
 *     pods with an unknown/absent phase, never count);
 *   - if the pod is being deleted (metadata.deletionTimestamp set), it counts only until that
 *     time: the API server sets it to "now + grace period", the window in which the pod may still
 *     be draining connections. Past it, the pod no longer counts even if the DELETED event is late.
 *
 * Readiness: lookups throw PodCacheNotReadyError until the first full list has been applied, and
 * again when the watch has been broken for longer than maxStaleMs (a disconnected cache would
 * keep authorizing pods that are gone). Callers turn that into UNAVAILABLE (retryable), never a
 * denial. Short reconnects (API server restarts, watch timeouts) do not flip readiness.
 *
 * Failures: ListWatch stops on any list/watch error; PodCache restarts it with exponential backoff
 * (resuming from the last resourceVersion; 410 Gone makes it re-list).
 */
import type { V1Pod } from '@kubernetes/client-node';
import type { Logger } from '../log/logger.js';
import { describeKubeError, kubeStatusCode, type KubeClient, type KubeInformer } from './client.js';

export interface PodInfo {
  readonly namespace: string;
  readonly name: string;
  readonly uid: string;
  /** spec.serviceAccountName ('' when absent: such a pod never counts). */
  readonly serviceAccount: string;
  /** spec.nodeName ('' when not scheduled). */
  readonly nodeName: string;
  /** status.phase ('' when absent). */
  readonly phase: string;
  /** metadata.deletionTimestamp, when the pod is terminating. */
  readonly deletionTimestamp: Date | undefined;
  readonly resourceVersion: string;
}

/** What NodeAuthorizer needs from a pod cache. */
export interface PodLookup {
  /** False until the first list is applied, and while the watch has been down past maxStaleMs. */
  readonly synced: boolean;
  /** False while the watch is down: the cache still answers for maxStaleMs, but may be stale. */
  readonly connected: boolean;
  /** These throw PodCacheNotReadyError when not synced. */
  getPod(namespace: string, name: string): PodInfo | undefined;
  getPodByUid(uid: string): PodInfo | undefined;
  /** True when at least one pod of `namespace/serviceAccount` counts as running on `nodeName` (see podCounts). */
  hasServiceAccountOnNode(nodeName: string, namespace: string, serviceAccount: string): boolean;
}

export class PodCacheNotReadyError extends Error {
  override readonly name = 'PodCacheNotReadyError';
}

/** The initial sync failed or timed out (the cache keeps retrying in the background until stop()). */
export class PodCacheStartError extends Error {
  override readonly name = 'PodCacheStartError';
}

/** A watch up this long counts as working though it delivered nothing (a quiet cluster). */
const WATCH_PROVEN_MS = 1000;

export interface PodCacheOptions {
  readonly client: Pick<KubeClient, 'makeInformer' | 'server'>;
  /** E.g. `spec.nodeName=node-a`; default all pods. */
  readonly fieldSelector?: string;
  readonly labelSelector?: string;
  /** List page size. Default 500. */
  readonly pageSize?: number;
  /** Restart backoff after a list/watch failure: initial and maximum delay. Defaults 500 ms and 30 s. */
  readonly backoffInitialMs?: number;
  readonly backoffMaxMs?: number;
  /** How long a broken watch may leave the cache stale before lookups report not ready. Default 60 s. */
  readonly maxStaleMs?: number;
  /**
   * How long a watch must stay up before the next failure starts from the initial backoff again
   * (default 60 s): a server that accepts watches and drops them at once must see the backoff grow.
   */
  readonly stableMs?: number;
  /** start() rejects when not synced within this time. Default 30 s. */
  readonly startTimeoutMs?: number;
  /** Clock (ms since epoch), for deletionTimestamp checks and staleness. */
  readonly now?: () => number;
  readonly log?: Pick<Logger, 'info' | 'warn' | 'debug'>;
}

export interface PodCacheStatus {
  readonly synced: boolean;
  /** The watch is connected (or reconnecting without error). */
  readonly connected: boolean;
  readonly pods: number;
  /** resourceVersion of the last full list. */
  readonly listedResourceVersion: string | undefined;
  readonly lastError: string | undefined;
}

const TERMINAL = new Set(['Succeeded', 'Failed']);
const COUNTING = new Set(['Pending', 'Running']);

/** True when `pod` counts as running on its node at time `nowMs` (see the module comment). */
export function podCounts(pod: PodInfo, nowMs: number): boolean {
  if (!pod.nodeName || !pod.serviceAccount) return false;
  if (!COUNTING.has(pod.phase)) return false;
  if (pod.deletionTimestamp && pod.deletionTimestamp.getTime() <= nowMs) return false;
  return true;
}

/** True when the pod has finished (it can no longer act, whatever its token says). */
export function podTerminated(pod: PodInfo): boolean {
  return TERMINAL.has(pod.phase);
}

function parseTime(v: unknown): Date | undefined {
  if (v instanceof Date) return Number.isNaN(v.getTime()) ? undefined : v;
  if (typeof v === 'string' && v !== '') {
    const d = new Date(v);
    return Number.isNaN(d.getTime()) ? undefined : d;
  }
  return undefined;
}

/** The fields node authorization reads, from a listed (deserialized) or watched (raw JSON) pod. */
export function toPodInfo(pod: V1Pod): PodInfo {
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
function stripPod(pod: V1Pod): V1Pod {
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

const key = (namespace: string, name: string): string => `${namespace}/${name}`;

export class PodCache implements PodLookup {
  private readonly informer: KubeInformer<V1Pod>;
  private readonly server: string;
  private readonly now: () => number;
  private readonly log: Pick<Logger, 'info' | 'warn' | 'debug'> | undefined;
  private readonly backoffInitialMs: number;
  private readonly backoffMaxMs: number;
  private readonly maxStaleMs: number;
  private readonly startTimeoutMs: number;

  private readonly byKey = new Map<string, PodInfo>();
  private readonly byUid = new Map<string, PodInfo>();
  /** node → `ns/sa` → pod keys */
  private readonly byNode = new Map<string, Map<string, Set<string>>>();

  private running = false;
  private stopped = false;
  private everSynced = false;
  private watchUp = false;
  /** When the watch last came up; and whether it has shown since that it works (a list or an event). */
  private upSince = 0;
  private proven = false;
  private readonly stableMs: number;
  private brokenSince = 0;
  private listedRv: string | undefined;
  private lastError: string | undefined;
  private errorSeq = 0;
  private backoffMs: number;
  private retryTimer: NodeJS.Timeout | undefined;
  private startPromise: Promise<void> | undefined;
  private startWaiter: { resolve: () => void; reject: (e: Error) => void; timer: NodeJS.Timeout } | undefined;

  constructor(opts: PodCacheOptions) {
    this.server = opts.client.server;
    this.now = opts.now ?? Date.now;
    this.log = opts.log;
    this.backoffInitialMs = opts.backoffInitialMs ?? 500;
    this.backoffMaxMs = opts.backoffMaxMs ?? 30_000;
    this.maxStaleMs = opts.maxStaleMs ?? 60_000;
    this.stableMs = opts.stableMs ?? 60_000;
    this.startTimeoutMs = opts.startTimeoutMs ?? 30_000;
    this.backoffMs = this.backoffInitialMs;
    this.informer = opts.client.makeInformer('pods', {
      ...(opts.fieldSelector === undefined ? {} : { fieldSelector: opts.fieldSelector }),
      ...(opts.labelSelector === undefined ? {} : { labelSelector: opts.labelSelector }),
      ...(opts.pageSize === undefined ? {} : { pageSize: opts.pageSize }),
      transform: stripPod,
    });
    // Any event proves the watch works (see watchHealthy).
    this.informer.on('add', (p) => this.upsert(p));
    this.informer.on('update', (p) => this.upsert(p));
    this.informer.on('delete', (p) => this.remove(p));
    this.informer.on('error', (err: unknown) => this.onError(err));
    this.informer.onSynced((rv) => this.onSynced(rv));
  }

  /**
   * Lists the pods and starts watching. Resolves once the first list is in the cache; rejects with
   * PodCacheStartError when the first attempt fails (API server unreachable, credentials or RBAC
   * refused) or nothing synced within startTimeoutMs. After a rejection the cache keeps retrying
   * with backoff (lookups report not ready meanwhile); call stop() to give up.
   */
  start(): Promise<void> {
    if (this.stopped) return Promise.reject(new Error('a stopped PodCache cannot be started again; create a new one'));
    if (this.startPromise) return this.startPromise;
    this.running = true;
    this.startPromise = new Promise<void>((resolve, reject) => {
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
  async stop(): Promise<void> {
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

  get connected(): boolean {
    return this.watchUp;
  }

  get synced(): boolean {
    if (!this.running || !this.everSynced) return false;
    return this.watchHealthy() || this.now() - this.brokenSince <= this.maxStaleMs;
  }

  /**
   * A watch up and shown to work: it listed or delivered an event since it came up, or stayed up a
   * second. One accepted and cut at once, over and over, is not: the break it is part of goes on,
   * and the cache goes stale after maxStaleMs as for any broken watch.
   */
  private watchHealthy(): boolean {
    return this.watchUp && (this.proven || this.now() - this.upSince >= WATCH_PROVEN_MS);
  }

  get size(): number {
    return this.byKey.size;
  }

  status(): PodCacheStatus {
    return { synced: this.synced, connected: this.watchUp, pods: this.byKey.size, listedResourceVersion: this.listedRv, lastError: this.lastError };
  }

  getPod(namespace: string, name: string): PodInfo | undefined {
    this.assertReady();
    return this.byKey.get(key(namespace, name));
  }

  getPodByUid(uid: string): PodInfo | undefined {
    this.assertReady();
    return this.byUid.get(uid);
  }

  hasServiceAccountOnNode(nodeName: string, namespace: string, serviceAccount: string): boolean {
    this.assertReady();
    const keys = this.byNode.get(nodeName)?.get(key(namespace, serviceAccount));
    if (!keys) return false;
    const now = this.now();
    for (const k of keys) {
      const pod = this.byKey.get(k);
      if (pod && podCounts(pod, now)) return true;
    }
    return false;
  }

  /** `namespace/serviceAccount` of the pods that count as running on the node now. */
  serviceAccountsOnNode(nodeName: string): string[] {
    this.assertReady();
    const out: string[] = [];
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

  private assertReady(): void {
    if (this.synced) return;
    const why = !this.running
      ? 'it is not running'
      : !this.everSynced
        ? 'the first list of pods has not completed'
        : `the watch on the Kubernetes API server has been broken for more than ${Math.round(this.maxStaleMs / 1000)} s`;
    throw new PodCacheNotReadyError(`the pod cache is not ready: ${why}${this.lastError ? ` (last error: ${this.lastError})` : ''}`);
  }

  // -- informer plumbing ----------------------------------------------------------------------

  private async runInformer(): Promise<void> {
    if (!this.running) return;
    const seq = this.errorSeq;
    try {
      await this.informer.start();
    } catch (err) {
      this.onError(err);
      return;
    }
    // ListWatch.start() resolves once the watch is established, or after it reported an error.
    if (this.running && seq === this.errorSeq) this.markConnected();
  }

  private markConnected(): void {
    this.watchUp = true;
    this.upSince = this.now();
  }

  private onSynced(rv: string): void {
    const first = !this.everSynced;
    this.everSynced = true;
    this.listedRv = rv;
    this.markConnected();
    this.proven = true;
    if (first) this.log?.info({ pods: this.byKey.size, resourceVersion: rv }, 'pod cache synced');
    else this.log?.info({ pods: this.byKey.size, resourceVersion: rv }, 'pod cache re-listed');
    if (this.startWaiter) {
      clearTimeout(this.startWaiter.timer);
      this.startWaiter.resolve();
      this.startWaiter = undefined;
    }
  }

  private onError(err: unknown): void {
    this.errorSeq++;
    if (!this.running) return;
    const now = this.now();
    if (this.watchHealthy() || this.brokenSince === 0) this.brokenSince = now;
    // As InformerRunner: only a watch that stayed up resets the backoff.
    if (this.watchUp && now - this.upSince >= this.stableMs) this.backoffMs = this.backoffInitialMs;
    this.watchUp = false;
    this.proven = false;
    this.lastError = explain(err, this.server);
    this.log?.warn({ error: this.lastError, retryInMs: this.backoffMs }, 'pod list/watch failed; retrying');
    if (this.startWaiter) {
      clearTimeout(this.startWaiter.timer);
      this.startWaiter.reject(new PodCacheStartError(`cannot list pods: ${this.lastError}`));
      this.startWaiter = undefined;
    }
    if (this.retryTimer) return;
    const delay = Math.round(this.backoffMs * (0.8 + Math.random() * 0.4));
    this.backoffMs = Math.min(this.backoffMaxMs, this.backoffMs * 2);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      void this.runInformer();
    }, delay);
  }

  private upsert(pod: V1Pod): void {
    this.proven = true;
    const info = toPodInfo(pod);
    if (!info.name) return;
    const k = key(info.namespace, info.name);
    const old = this.byKey.get(k);
    if (old) this.unindex(k, old);
    this.byKey.set(k, info);
    if (info.uid) this.byUid.set(info.uid, info);
    if (info.nodeName && info.serviceAccount) {
      let node = this.byNode.get(info.nodeName);
      if (!node) this.byNode.set(info.nodeName, (node = new Map()));
      const saKey = key(info.namespace, info.serviceAccount);
      let keys = node.get(saKey);
      if (!keys) node.set(saKey, (keys = new Set()));
      keys.add(k);
    }
  }

  private remove(pod: V1Pod): void {
    this.proven = true;
    const k = key(pod.metadata?.namespace ?? '', pod.metadata?.name ?? '');
    const old = this.byKey.get(k);
    if (old) this.unindex(k, old);
  }

  private unindex(k: string, old: PodInfo): void {
    this.byKey.delete(k);
    if (old.uid && this.byUid.get(old.uid) === old) this.byUid.delete(old.uid);
    if (old.nodeName && old.serviceAccount) {
      const node = this.byNode.get(old.nodeName);
      const saKey = key(old.namespace, old.serviceAccount);
      const keys = node?.get(saKey);
      if (node && keys) {
        keys.delete(k);
        if (keys.size === 0) node.delete(saKey);
        if (node.size === 0) this.byNode.delete(old.nodeName);
      }
    }
  }
}

function explain(err: unknown, server: string): string {
  const code = kubeStatusCode(err);
  const base = describeKubeError(err);
  if (code === 401) return `${base} (the API server at ${server} rejected meshcert's credentials)`;
  if (code === 403) return `${base} (meshcert's service account needs RBAC to list and watch pods cluster-wide)`;
  if (code === undefined) return `${base} (API server ${server})`;
  return base;
}
