/**
 * Ambient node authorization (PROTOCOL §3): may this caller (a node proxy such as ztunnel) obtain a
 * certificate for `requestedIdentity` (the request's ImpersonatedIdentity metadata)?
 *
 * Allowed only when all hold, checked in this order:
 *   1. the caller's namespace/service account is a trusted node account (default istio-system/ztunnel),
 *      authenticated in the cluster whose pods the cache holds (a node proxy of another cluster asks
 *      about pods and nodes this CA cannot see);
 *   2. the requested identity is `spiffe://<trust domain>/ns/<ns>/sa/<sa>` (and, when trustDomain
 *      is configured, in that trust domain);
 *   3. the caller's token is a bound pod token (caller.pod has name and UID);
 *   -- the checks below read the pod cache; a cache that is not synced gives
 *      AUTH_BACKEND_UNAVAILABLE (retryable), never a denial, and so does a refusal by a cache
 *      whose watch is down (still answering within its grace period, but possibly stale) --
 *   4. the caller's pod exists in the cache, in the caller's namespace, with the token's UID
 *      (a different UID means the token belongs to a pod that has been replaced), runs as the
 *      caller's service account, has not terminated, and is bound to a node;
 *   5. if the token also names a node (caller.node), it is that same node;
 *   6. at least one pod running as the requested ns/sa counts as running on that node (see
 *      podCounts in pod-cache.ts: Pending/Running, not past its deletion grace period).
 * Every refusal is IMPERSONATION_DENIED (→ UNAUTHENTICATED, as istiod answers; ztunnel retries it only after a delay).
 * Before refusing because the cache does not show the caller's pod (4) or a pod of the requested
 * identity on its node (6), the API server itself is asked (`live`): a pod started a moment ago
 * may not have reached the cache yet (see live-pods.ts).
 */
import type { Caller } from '../auth/types.js';
import { CaError } from '../errors/ca-error.js';
import { parseWorkloadSpiffeId } from '../x509/spiffe-id.js';
import type { LivePods } from './live-pods.js';
import { PodCacheNotReadyError, podCounts, podTerminated, type PodInfo, type PodLookup } from './pod-cache.js';

export const DEFAULT_TRUSTED_NODE_ACCOUNTS: readonly string[] = ['istio-system/ztunnel'];

export interface NodeAuthorizerOptions {
  /** `namespace/serviceAccount` of callers allowed to impersonate. Default ['istio-system/ztunnel']. */
  readonly trustedNodeAccounts?: readonly string[];
  readonly pods: PodLookup;
  /** When set, the requested identity must be in this trust domain (the cluster's). */
  readonly trustDomain?: string;
  /** When set, the cluster whose pods `pods` holds: node proxies of other clusters are refused. */
  readonly cluster?: string;
  /** The API server, asked before refusing for a pod the cache does not show. */
  readonly live?: LivePods;
}

const deny = (message: string): CaError => new CaError('IMPERSONATION_DENIED', message);
/** How long past its pod's deletionTimestamp the API server still honours a pod-bound token (pkg/serviceaccount). */
const DELETED_POD_TOKEN_GRACE_MS = 60_000;
/** How long the API server's word that a caller's pod is gone is taken again, and how many are kept. */
const CONFIRMED_GONE_MS = 60_000;
const MAX_CONFIRMED_GONE = 4096;
/** What a refusal adds when the API server was asked too. */
const CONFIRMED = 'confirmed with the Kubernetes API server';

/** A question to the API server; its failure is a backend's (UNAVAILABLE, retried), not a refusal. */
async function ask<T>(question: () => Promise<T>): Promise<T> {
  try {
    return await question();
  } catch (cause) {
    throw new CaError('AUTH_BACKEND_UNAVAILABLE', "the CA's pod cache does not show a pod this request needs, and the Kubernetes API server could not be asked to confirm; retry later", { cause });
  }
}

function trustedSet(accounts: readonly string[]): ReadonlySet<string> {
  if (!Array.isArray(accounts)) throw new Error('trustedNodeAccounts must be a list of "namespace/serviceAccount"');
  for (const a of accounts) {
    if (typeof a !== 'string' || !/^[^/\s]+\/[^/\s]+$/.test(a)) {
      throw new Error(`trustedNodeAccounts entry ${JSON.stringify(a)} must be "namespace/serviceAccount"`);
    }
  }
  return new Set(accounts);
}

export class NodeAuthorizer {
  private trusted: ReadonlySet<string>;
  private readonly pods: PodLookup;
  private readonly trustDomain: string | undefined;
  private readonly cluster: string | undefined;
  private readonly live: LivePods | undefined;
  /**
   * Callers' pods the API server confirmed gone (namespace, name and UID), until when that
   * stands: a node proxy with a dead pod's token asking in a loop costs one list per
   * CONFIRMED_GONE_MS.
   */
  private readonly confirmed = new Map<string, number>();

  constructor(opts: NodeAuthorizerOptions) {
    this.trusted = trustedSet(opts.trustedNodeAccounts ?? DEFAULT_TRUSTED_NODE_ACCOUNTS);
    this.pods = opts.pods;
    this.trustDomain = opts.trustDomain;
    this.cluster = opts.cluster;
    this.live = opts.live;
  }

  /**
   * Checks a new list of trusted node accounts (a reload) and returns what puts it in force; throws,
   * changing nothing, when an entry is malformed. A node proxy removed from the list is refused from
   * the next call on.
   */
  prepareTrustedNodeAccounts(accounts: readonly string[]): () => void {
    const next = trustedSet(accounts);
    return () => {
      this.trusted = next;
    };
  }

  /** Whether this caller is a trusted node account at all (cheap, no cache access). */
  isTrustedNodeAccount(caller: Caller): boolean {
    return caller.namespace !== undefined && caller.serviceAccount !== undefined && this.trusted.has(`${caller.namespace}/${caller.serviceAccount}`);
  }

  /**
   * Returns when allowed; throws CaError IMPERSONATION_DENIED or AUTH_BACKEND_UNAVAILABLE. A pod
   * the cache does not show (the caller's, or one of the requested identity on its node) is asked
   * of the API server (`live`) before a refusal, while the watch is connected (while it reconnects,
   * such a refusal is UNAVAILABLE anyway).
   */
  async authorize(caller: Caller, requestedIdentity: string, callerCluster?: string): Promise<void> {
    // 1. Trusted node account.
    if (caller.namespace === undefined || caller.serviceAccount === undefined) {
      throw deny('ImpersonatedIdentity requires a Kubernetes service-account token from a trusted node proxy (such as istio-system/ztunnel)');
    }
    const callerAccount = `${caller.namespace}/${caller.serviceAccount}`;
    if (!this.trusted.has(callerAccount)) {
      throw deny(`service account ${callerAccount} may not request certificates for other workloads (ImpersonatedIdentity); only trusted node accounts may: ${[...this.trusted].join(', ') || 'none configured'}`);
    }
    if (this.cluster !== undefined && callerCluster !== this.cluster) {
      throw deny(`the caller authenticated in cluster ${printable(callerCluster ?? '')}, but this CA checks node proxies only in cluster "${this.cluster}", whose pods it watches: it cannot see the nodes and pods of another`);
    }

    // 2. Requested identity shape.
    const wanted = typeof requestedIdentity === 'string' ? parseWorkloadSpiffeId(requestedIdentity) : null;
    if (!wanted) {
      throw deny(`ImpersonatedIdentity must be a workload identity spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>; got ${printable(requestedIdentity)}`);
    }
    if (this.trustDomain !== undefined && wanted.trustDomain !== this.trustDomain) {
      throw deny(`ImpersonatedIdentity is in trust domain ${wanted.trustDomain}, but this CA issues for ${this.trustDomain}`);
    }

    // 3. Bound pod token.
    if (!caller.pod || !caller.pod.name || !caller.pod.uid) {
      throw deny(`the caller's token is not bound to a pod: ${callerAccount} must use a projected service-account token (bound to its pod) to request certificates for other workloads`);
    }

    // 4-6 read the cache, and the API server for what it does not show.
    if (!this.pods.synced) throw unavailable();
    const namespace = caller.namespace;
    const bound = caller.pod;
    try {
      const live = this.pods.connected ? this.live : undefined;
      const confirmed = live ? CONFIRMED : '';
      let pod = this.pods.getPod(namespace, bound.name);
      // Not in the cache, the cache's pod of that name is another (one replaced under the same
      // name, whose successor the watch has not delivered yet), or it has no node yet (a DaemonSet
      // pod is bound after it is created; a running caller is bound): the API server's pod is checked.
      if ((!pod || pod.uid !== bound.uid || !pod.nodeName) && live) pod = (await this.livePod(live, namespace, bound.name, bound.uid)) ?? pod;
      const nodeName = this.checkCallerPod(caller, callerAccount, pod, confirmed);
      if (caller.node?.name && caller.node.name !== nodeName) {
        throw deny(`the caller's token is bound to node ${caller.node.name}, but its pod ${namespace}/${bound.name} runs on node ${nodeName}`);
      }
      if (this.pods.hasServiceAccountOnNode(nodeName, wanted.namespace, wanted.serviceAccount)) return;
      if (live && (await this.liveOnNode(live, nodeName, wanted.namespace, wanted.serviceAccount))) return;
      throw deny(`no running pod with service account ${wanted.namespace}/${wanted.serviceAccount} is on node ${nodeName} (the caller's node${confirmed ? `; ${confirmed}` : ''}); a node proxy may only request certificates for workloads on its own node`);
    } catch (err) {
      if (err instanceof PodCacheNotReadyError) throw unavailable(err);
      // While the watch reconnects the cache answers from what it last saw: a pod started since
      // is missing, so a refusal then may be the cache's, not the caller's: UNAVAILABLE, which
      // agents retry at once, where ztunnel retries a denial only after a delay.
      if (err instanceof CaError && err.code === 'IMPERSONATION_DENIED' && !this.pods.connected) {
        throw new CaError('AUTH_BACKEND_UNAVAILABLE', `the CA's pod cache is reconnecting to the Kubernetes API server and may be stale (${err.message}); retry later`, { cause: err });
      }
      throw err;
    }
  }

  /** The caller's pod as the API server has it; one it confirmed gone (a UID is never reused) is not asked about again for a while. */
  private async livePod(live: LivePods, namespace: string, name: string, uid: string): Promise<PodInfo | undefined> {
    const key = `${namespace}\n${name}\n${uid}`;
    if (this.stillDenied(key)) return undefined;
    const pod = await ask(() => live.pod(namespace, name));
    if (!pod || pod.uid !== uid) this.remember(key);
    return pod;
  }

  /**
   * Whether the API server has a pod of `namespace/serviceAccount` counting as running on the node.
   * A "no" is not remembered: a pod of that identity may be scheduled there a moment later (the
   * next run of a Job, say), and the client would never ask again.
   */
  private async liveOnNode(live: LivePods, nodeName: string, namespace: string, serviceAccount: string): Promise<boolean> {
    const now = Date.now();
    const onNode = await ask(() => live.onNode(nodeName));
    return onNode.some((p) => p.nodeName === nodeName && p.namespace === namespace && p.serviceAccount === serviceAccount && podCounts(p, now));
  }

  private stillDenied(question: string): boolean {
    const until = this.confirmed.get(question);
    if (until === undefined) return false;
    if (until > Date.now()) return true;
    this.confirmed.delete(question);
    return false;
  }

  private remember(question: string): void {
    this.confirmed.delete(question);
    this.confirmed.set(question, Date.now() + CONFIRMED_GONE_MS);
    if (this.confirmed.size > MAX_CONFIRMED_GONE) this.confirmed.delete(this.confirmed.keys().next().value!);
  }

  /** Returns the caller pod's node, or throws a denial. */
  private checkCallerPod(caller: Caller, callerAccount: string, pod: PodInfo | undefined, confirmed: string): string {
    const ref = `${caller.namespace}/${caller.pod!.name}`;
    if (!pod) throw deny(`the caller's pod ${ref} does not exist${confirmed ? ` (${confirmed})` : ''} (its token is bound to a pod that is gone)`);
    if (pod.uid !== caller.pod!.uid) {
      // The current pod's UID is not the caller's to learn: the message names only the token's.
      throw deny(`the caller's token is bound to pod ${ref} with UID ${caller.pod!.uid}, but the pod of that name now has another UID: the token belongs to a pod that has been replaced`);
    }
    if (pod.serviceAccount !== caller.serviceAccount) {
      throw deny(`the caller's pod ${ref} runs as service account ${pod.namespace}/${pod.serviceAccount || '(none)'}, not ${callerAccount}`);
    }
    if (podTerminated(pod)) throw deny(`the caller's pod ${ref} has terminated (phase ${pod.phase})`);
    // As the API server judges a pod-bound token (invalid once its pod's deletionTimestamp is over a
    // minute past): a proxy stuck terminating (a finalizer) must not speak for its node meanwhile.
    if (pod.deletionTimestamp && pod.deletionTimestamp.getTime() + DELETED_POD_TOKEN_GRACE_MS <= Date.now()) {
      throw deny(`the caller's pod ${ref} is being deleted (since ${pod.deletionTimestamp.toISOString()}, past its grace period): its token no longer speaks for its node`);
    }
    if (!pod.nodeName) throw deny(`the caller's pod ${ref} is not scheduled on a node`);
    return pod.nodeName;
  }
}

function unavailable(cause?: unknown): CaError {
  return new CaError('AUTH_BACKEND_UNAVAILABLE', 'the CA cannot check which workloads run on the caller\'s node yet (its pod cache is not synced with the Kubernetes API server); retry later', cause === undefined ? undefined : { cause });
}

function printable(v: unknown): string {
  if (typeof v !== 'string') return typeof v;
  const s = JSON.stringify(v.length > 120 ? `${v.slice(0, 120)}…` : v);
  return s;
}
