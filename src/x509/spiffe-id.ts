/**
 * SPIFFE ID rules (spiffe/spiffe standards/SPIFFE-ID.md): scheme "spiffe", lowercase trust domain
 * of [a-z0-9.-_], path segments of [a-zA-Z0-9.-_] with no empty, "." or ".." segment, no trailing
 * slash, no percent-encoding, query, fragment, port or userinfo; at most 2048 bytes.
 */
const TRUST_DOMAIN = /^[a-z0-9._-]+$/;
const SEGMENT = /^[a-zA-Z0-9._-]+$/;
const PREFIX = 'spiffe://';

export interface SpiffeId {
  readonly trustDomain: string;
  readonly path: string;
}

/** Returns the reason a trust domain name is invalid, or null when it is valid. */
export function trustDomainProblem(td: string): string | null {
  if (td.length === 0) return 'SPIFFE trust domain is empty';
  if (td.length > 255) return 'SPIFFE trust domain is longer than 255 characters';
  if (!TRUST_DOMAIN.test(td)) return 'SPIFFE trust domain may hold only lowercase letters, digits, ".", "-" and "_"';
  // The charset allows it, but Go's X.509 parser (istio-agent) refuses a certificate whose
  // URI host has an empty label, so every leaf in such a trust domain would be unusable.
  if (td.startsWith('.') || td.endsWith('.') || td.includes('..')) return 'SPIFFE trust domain must not start or end with "." or contain ".." (X.509 clients such as Go refuse an empty DNS label)';
  return null;
}

/** Returns the reason an ID is invalid, or null when it is a valid SPIFFE ID. */
export function spiffeIdProblem(id: string): string | null {
  if (Buffer.byteLength(id) > 2048) return 'SPIFFE ID is longer than 2048 bytes';
  if (!id.startsWith(PREFIX)) return 'SPIFFE ID must start with spiffe://';
  const rest = id.slice(PREFIX.length);
  const slash = rest.indexOf('/');
  const td = slash === -1 ? rest : rest.slice(0, slash);
  const tdProblem = trustDomainProblem(td);
  if (tdProblem) return tdProblem;
  if (slash === -1) return null;
  const path = rest.slice(slash);
  if (path === '/') return 'SPIFFE ID path must not end with "/"';
  for (const seg of path.slice(1).split('/')) {
    if (seg === '') return 'SPIFFE ID path has an empty segment';
    if (seg === '.' || seg === '..') return 'SPIFFE ID path must not contain "." or ".." segments';
    if (!SEGMENT.test(seg)) return 'SPIFFE ID path segments may hold only letters, digits, ".", "-" and "_"';
  }
  return null;
}

export function parseSpiffeId(id: string): SpiffeId {
  const problem = spiffeIdProblem(id);
  if (problem) throw new Error(problem);
  const rest = id.slice(PREFIX.length);
  const slash = rest.indexOf('/');
  return slash === -1 ? { trustDomain: rest, path: '' } : { trustDomain: rest.slice(0, slash), path: rest.slice(slash) };
}

/** The Istio workload identity for a Kubernetes service account. */
export function workloadSpiffeId(trustDomain: string, namespace: string, serviceAccount: string): string {
  const id = `${PREFIX}${trustDomain}/ns/${namespace}/sa/${serviceAccount}`;
  const problem = spiffeIdProblem(id);
  if (problem) throw new Error(problem);
  // A "/" inside a name would yield a valid ID of another shape (spiffe://td/ns/a/b/sa/c).
  if (namespace.includes('/') || serviceAccount.includes('/')) throw new Error('namespace and service account must each be one SPIFFE ID path segment');
  return id;
}

/** Extracts namespace and service account from an Istio workload ID, or null for other shapes. */
export function parseWorkloadSpiffeId(id: string): { trustDomain: string; namespace: string; serviceAccount: string } | null {
  if (spiffeIdProblem(id)) return null;
  // Validated once above; the split below cannot fail on a valid ID.
  const m = /^spiffe:\/\/([^/]+)\/ns\/([^/]+)\/sa\/([^/]+)$/.exec(id);
  return m ? { trustDomain: m[1]!, namespace: m[2]!, serviceAccount: m[3]! } : null;
}
