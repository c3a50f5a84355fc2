/**
 * The DNS names of istiod's serving certificate (Secret istiod-tls), from istio.istiodTls's
 * namespace and revisions. Apart from the controller so that loading a config can check them
 * against the CA without loading the Kubernetes client.
 */
export interface IstiodDnsNameOptions {
  /** Istio revisions (istiod-<rev>); "" and "default" mean the plain `istiod`, which is always included. */
  readonly revisions?: readonly string[];
  /** Adds NAME.<ns>.svc.<clusterDomain> for each service name. */
  readonly clusterDomain?: string;
  readonly extraDnsNames?: readonly string[];
}

/**
 * Services istiod names in its own certificate besides `istiod` (pilot/pkg/bootstrap getDNSNames):
 * the remote-cluster Service of a primary-remote mesh and the legacy one, as NAME.<ns>.svc.
 */
const ISTIOD_KNOWN_SERVICES = ['istiod-remote', 'istio-pilot'];

/** The DNS names of istiod's serving certificate (sorted, deduplicated). */
export function istiodDnsNames(namespace: string, o: IstiodDnsNameOptions = {}): string[] {
  const services = ['istiod', ...(o.revisions ?? []).filter((r) => r !== '' && r !== 'default').map((r) => `istiod-${r}`)];
  const names = new Set<string>();
  for (const s of services) {
    names.add(s);
    names.add(`${s}.${namespace}`);
    names.add(`${s}.${namespace}.svc`);
    if (o.clusterDomain) names.add(`${s}.${namespace}.svc.${o.clusterDomain}`);
  }
  for (const s of ISTIOD_KNOWN_SERVICES) names.add(`${s}.${namespace}.svc`);
  for (const n of o.extraDnsNames ?? []) if (n) names.add(n);
  return [...names].sort();
}

/** istio.istiodTls as the names' options: the controller issues for these, the CA check checks these. */
export function istiodDnsNameOptions(c: { readonly revisions: readonly string[]; readonly extraDnsNames: readonly string[] }): IstiodDnsNameOptions {
  return { revisions: [...c.revisions], extraDnsNames: [...c.extraDnsNames] };
}
