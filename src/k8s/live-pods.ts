/**
 * Pods read from the API server itself, for node authorization to confirm what its watch-backed
 * cache does not show: a pod that started a moment ago may reach ztunnel (through istiod) before
 * this process's watch has delivered it, most of all while a restart storm keeps the event loop
 * busy, and ztunnel retries a denial only after a delay (a minute, or a growing backoff), with the
 * pod left without a certificate meanwhile. Only `list` is used (the RBAC the pod
 * cache already needs).
 *
 * Every answer comes from a list that began after the question was asked: one already under way
 * may predate the pod asked about. Questions that arrive while a list of the same node (or pod) is
 * under way share the next one, so a node costs the API server at most one list under way and one
 * waiting, however many calls ask (a restart storm, a node proxy asking in a loop); and the lists of
 * one node (or pod) begin at least MIN_LIST_INTERVAL_MS apart, so one that the cache keeps refusing
 * (ztunnel retries every refusal, with backoff) costs at most one list of that node a second. A list
 * of all pods of a node is not cheap (without a resourceVersion it is read from etcd), and it runs
 * as the account TokenReviews run as.
 */
import type { CoreV1Api } from '@kubernetes/client-node';
import { toPodInfo, type PodInfo } from './pod-cache.js';

export interface LivePods {
  /** The pod `namespace/name` as the API server has it now, or undefined when there is none. */
  pod(namespace: string, name: string): Promise<PodInfo | undefined>;
  /** The pods the API server has bound to `nodeName` now. */
  onNode(nodeName: string): Promise<PodInfo[]>;
}

/** A Kubernetes object name (DNS subdomain): nothing that could extend a field selector. */
const NAME = /^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$/;

/** The least time between the beginnings of two lists of one node (or pod). */
export const MIN_LIST_INTERVAL_MS = 1000;

export class KubeLivePods implements LivePods {
  /**
   * Per question: the list under way, the next one, which has not begun (shared by those asking
   * meanwhile), and when the last one began (kept MIN_LIST_INTERVAL_MS after the last list ends).
   */
  private readonly lists = new Map<string, { running?: Promise<PodInfo[]>; next?: Promise<PodInfo[]>; startedAt?: number }>();

  constructor(private readonly core: Pick<CoreV1Api, 'listNamespacedPod' | 'listPodForAllNamespaces'>) {}

  async pod(namespace: string, name: string): Promise<PodInfo | undefined> {
    // Names come from verified tokens and the API server; anything else selects nothing.
    if (!NAME.test(namespace) || !NAME.test(name)) return undefined;
    const pods = await this.fresh(`pod\n${namespace}\n${name}`, () => this.core.listNamespacedPod({ namespace, fieldSelector: `metadata.name=${name}` }));
    return pods.find((p) => p.namespace === namespace && p.name === name);
  }

  onNode(nodeName: string): Promise<PodInfo[]> {
    if (!NAME.test(nodeName)) return Promise.resolve([]);
    return this.fresh(`node\n${nodeName}`, () => this.core.listPodForAllNamespaces({ fieldSelector: `spec.nodeName=${nodeName}` }));
  }

  /** The answer of a list that begins after this call. */
  private fresh(key: string, list: () => Promise<{ items: Parameters<typeof toPodInfo>[0][] }>): Promise<PodInfo[]> {
    let slot = this.lists.get(key);
    if (!slot) this.lists.set(key, (slot = {}));
    if (slot.next) return slot.next;
    const s = slot;
    const after = s.running?.then(
      () => undefined,
      () => undefined,
    );
    const begin = (): Promise<PodInfo[]> => {
      s.startedAt = Date.now();
      const running = list().then((l) => l.items.map(toPodInfo));
      s.running = running;
      s.next = undefined;
      const done = (): void => {
        if (s.running === running) s.running = undefined;
        // Forgotten once a next list could begin at once anyway.
        setTimeout(() => {
          if (!s.running && !s.next && this.lists.get(key) === s) this.lists.delete(key);
        }, MIN_LIST_INTERVAL_MS).unref();
      };
      running.then(done, done);
      return running;
    };
    const spaced = (): Promise<PodInfo[]> => {
      const wait = s.startedAt === undefined ? 0 : s.startedAt + MIN_LIST_INTERVAL_MS - Date.now();
      return wait > 0 ? new Promise<void>((r) => setTimeout(r, wait)).then(begin) : begin();
    };
    const next = after ? after.then(spaced) : Promise.resolve().then(spaced);
    s.next = next;
    return next;
  }
}
