import type { MeshcertConfig } from './schema.js';

/**
 * What an empty `clusterid` means, decided once for authentication, policy and inventory alike (and
 * for `policy explain`): auth.defaultCluster when it is one of the clusters, else the only cluster
 * there is. `clusters`: the names authentication serves.
 */
export function effectiveDefaultCluster(config: MeshcertConfig, clusters: Iterable<string>): string {
  const names = [...clusters];
  if (names.includes(config.auth.defaultCluster) || names.length !== 1) return config.auth.defaultCluster;
  return names[0]!;
}

/**
 * The clusters authentication serves, by name: those configured, and with dev.tokenIssuer the
 * default cluster, to which serve adds the local development issuer.
 */
export function servedClusterNames(config: MeshcertConfig): string[] {
  const names = config.auth.clusters.map((c) => c.name);
  if (config.dev.tokenIssuer && !names.includes(config.auth.defaultCluster)) names.push(config.auth.defaultCluster);
  return names;
}

/** The trust domain of the callers a cluster authenticates: its own `trustDomain`, else the config's. */
export function clusterTrustDomain(config: MeshcertConfig, cluster: string): string {
  return config.auth.clusters.find((c) => c.name === cluster)?.trustDomain ?? config.trustDomain;
}

/** The trust domains this CA issues in: `trustDomain`, its aliases, and each cluster's own. */
export function servedTrustDomains(config: MeshcertConfig): ReadonlySet<string> {
  return new Set([config.trustDomain, ...config.trustDomainAliases, ...config.auth.clusters.flatMap((c) => (c.trustDomain ? [c.trustDomain] : []))]);
}

/**
 * The cluster `{cluster}` names for a caller with a client certificate, which carries no cluster:
 * with one cluster served, that one; else the one cluster whose callers' trust domain is the
 * certificate's, or, when no cluster's is, the one whose is the mesh's if the certificate's is an
 * alias of it; undefined when none or several are (clusters sharing a trust domain cannot be told
 * apart by a certificate).
 */
export function certificateCluster(config: MeshcertConfig, served: readonly string[], certTrustDomain: string): string | undefined {
  if (served.length === 1) return served[0];
  const of = (td: string): string[] => served.filter((name) => clusterTrustDomain(config, name) === td);
  const exact = of(certTrustDomain);
  const matching = exact.length > 0 || !config.trustDomainAliases.includes(certTrustDomain) ? exact : of(config.trustDomain);
  return matching.length === 1 ? matching[0] : undefined;
}
