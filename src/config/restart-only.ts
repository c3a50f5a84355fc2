/**
 * Which settings a hot reload applies, and which changes wait for a restart. A reload swaps the
 * CAs, the policy and authentication (issuers, TokenReview, client certificates, revocations, the
 * token cache), the ambient trusted node accounts, and retunes the expiry monitor; the rest
 * (listeners, limits, the inventory, Istio integration, and who the served clusters are) is built
 * once at start, so an operator who edits it must be told that the running server has not taken it.
 */
import { isDeepStrictEqual } from 'node:util';
import { clusterTrustDomain, effectiveDefaultCluster, servedClusterNames } from './default-cluster.js';
import type { MeshcertConfig } from './schema.js';

/**
 * The part of authentication the rest of the server is built around: the clusters served, each
 * one's trust domain and the cluster an empty `clusterid` means. Policy, the inventory, DNS
 * templates and ambient node authorization take these at start, so a change to them waits for a
 * restart, and with it the rest of `auth` and `dev` (applying an issuer list to clusters the
 * server does not yet serve, or no longer does, would be half a change).
 */
function clusterShape(config: MeshcertConfig): unknown {
  const names = servedClusterNames(config);
  return { defaultCluster: effectiveDefaultCluster(config, names), clusters: names.map((n) => [n, clusterTrustDomain(config, n)]).sort() };
}

/**
 * Whether a reload can rebuild authentication from `next`: the clusters served are the same once
 * `next`'s `auth` and `dev` are put beside the settings read at start only (the top-level trust
 * domain, which a cluster without its own takes), as they would be in force.
 */
export function authReloadable(started: MeshcertConfig, next: MeshcertConfig): boolean {
  return isDeepStrictEqual(clusterShape(started), clusterShape({ ...started, auth: next.auth, dev: next.dev }));
}

/**
 * The config a reload puts in force: `next`'s CAs, policy, lifetimes, monitoring, authentication
 * (when the clusters served are unchanged; revoked client certificates always) and trusted node
 * accounts (when ambient mode is neither turned on nor off), and every other setting as the server
 * started. `inForce`: the config the last reload put in force, whose authentication stays when
 * `next`'s cannot be applied (not the start's, which would undo an issuer's removal). This is what
 * a replacement worker process starts with, so that a setting the running server did not take is
 * not in force in some processes only.
 */
export function reloadedConfig(started: MeshcertConfig, next: MeshcertConfig, inForce: MeshcertConfig = started): MeshcertConfig {
  const auth = authReloadable(started, next);
  return {
    ...started,
    ca: next.ca,
    issuers: next.issuers,
    policy: next.policy,
    issuance: { ...next.issuance, backdate: started.issuance.backdate },
    monitoring: next.monitoring,
    // Revoking a client certificate never waits for a restart.
    auth: auth ? next.auth : { ...inForce.auth, revokedClientCertificates: next.auth.revokedClientCertificates },
    dev: auth ? next.dev : inForce.dev,
    // The pod cache is started (or not) with the server; who may speak for a node's pods is not.
    ambient: next.ambient.enabled === started.ambient.enabled ? next.ambient : inForce.ambient,
  };
}

/** The settings that differ between the config the server started with and `next` but that only a restart applies, sorted. */
export function restartOnlyChanges(started: MeshcertConfig, next: MeshcertConfig): string[] {
  const inForce = reloadedConfig(started, next);
  const a = inForce as unknown as Record<string, unknown>;
  const b = next as unknown as Record<string, unknown>;
  const out: string[] = [];
  for (const key of new Set([...Object.keys(a), ...Object.keys(b)])) {
    if (key !== 'issuance' && !isDeepStrictEqual(a[key], b[key])) out.push(key);
  }
  if (inForce.issuance.backdate !== next.issuance.backdate) out.push('issuance.backdate');
  return out.sort();
}
