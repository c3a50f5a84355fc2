import { X509Certificate } from 'node:crypto';
import { leafNamesOf, pathCertOf, pathConstraintProblems } from './path-constraints.js';
import { parsePemBundle } from './pem.js';

export interface ChainCheck {
  readonly leaf: X509Certificate;
  readonly intermediates: readonly X509Certificate[];
  readonly root: X509Certificate;
}

/** `child` names `parent` as its issuer and carries a signature that `parent`'s key verifies. */
export function signedBy(child: X509Certificate, parent: X509Certificate): boolean {
  return child.checkIssued(parent) && child.verify(parent.publicKey);
}

/**
 * Checks an Istio-shaped response (leaf, each intermediate, root bundle last) the way a workload
 * would: every link signed by the next, all valid now, ending at one of the trusted roots.
 */
export function verifyResponseChain(chain: readonly string[], trustedRootsPem: string, now = new Date()): ChainCheck {
  if (chain.length < 2) throw new Error(`response has ${chain.length} element(s); istio-agent needs at least 2`);
  const certs = chain.slice(0, -1).map((p) => {
    const parsed = parsePemBundle(p);
    if (parsed.length !== 1) throw new Error('each non-root element must hold exactly one certificate');
    return parsed[0]!;
  });
  const trusted = parsePemBundle(trustedRootsPem);
  const offered = parsePemBundle(chain[chain.length - 1]!);
  const roots = trusted.filter((t) => offered.some((o) => o.fingerprint256 === t.fingerprint256));
  if (roots.length === 0) throw new Error('the root bundle in the response holds none of the trusted roots');
  const validNow = (c: X509Certificate): boolean => new Date(c.validFrom) <= now && new Date(c.validTo) >= now;
  for (const c of certs) {
    if (!validNow(c)) throw new Error(`certificate ${c.serialNumber} is not valid now`);
  }
  for (let i = 0; i + 1 < certs.length; i++) {
    if (!signedBy(certs[i]!, certs[i + 1]!)) throw new Error(`element ${i} is not signed by element ${i + 1}`);
  }
  const top = certs[certs.length - 1]!;
  const signers = roots.filter((r) => signedBy(top, r));
  if (signers.length === 0) throw new Error('the chain does not end at a trusted root');
  // A workload refuses an expired root as it refuses an expired intermediate.
  const root = signers.find(validNow);
  if (!root) throw new Error(`root certificate ${signers[0]!.serialNumber} is not valid now`);
  // What Go checks beyond the signatures: the CAs' path lengths and extended key usages, and
  // their name constraints on the leaf's names.
  const path = [...certs, root].map(pathCertOf);
  const problems = pathConstraintProblems(path, leafNamesOf(path[0]!));
  if (problems.length > 0) throw new Error(`the chain breaks constraints Go's crypto/x509 enforces: ${problems.join('; ')}`);
  return { leaf: certs[0]!, intermediates: certs.slice(1), root };
}
