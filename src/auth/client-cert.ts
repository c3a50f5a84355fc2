/**
 * mTLS client-certificate authenticator: verifies the presented chain against the current roots
 * and takes the leaf's SPIFFE URI SANs as identities (istiod's first authenticator).
 */
import { X509Certificate } from 'node:crypto';
import { CaError } from '../errors/ca-error.js';
import { parseWorkloadSpiffeId, spiffeIdProblem } from '../x509/spiffe-id.js';
import { isValidNamespace, isValidServiceAccount } from './jwt.js';
import type { AuthRequest, Authenticator, Caller } from './types.js';
import type { ClientCertRevocations } from './revocations.js';
import { serialHex } from '../x509/serial-hex.js';
import { signedBy } from '../x509/verify-chain.js';

export interface ClientCertOptions {
  /** Current trust anchors; called per request so root rotation takes effect. */
  roots: () => readonly X509Certificate[];
  /** auth.revokedClientCertificates in force; called per request so a reload takes effect. Required, so that no caller forgets it. */
  revocations: () => ClientCertRevocations;
  /** Clock (tests). Default () => new Date(). */
  now?: () => Date;
  /**
   * The trust domains this CA serves: a certificate in another is refused, whoever signed it (a
   * CA under a shared root signs for its own). Default: any.
   */
  trustDomains?: ReadonlySet<string>;
  /** Longest accepted chain, leaf included, root excluded. Default 5. */
  maxChainLength?: number;
  /** Name reported as Authenticator.name. Default 'client-cert'. */
  name?: string;
}

const EKU_CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';
const EKU_ANY = '2.5.29.37.0';

/**
 * URI SANs of a DER certificate (parsed with an ASN.1 decoder, not from a display string).
 * The decoder is loaded on first use: it costs ~18 MB per process, and most meshes
 * authenticate with tokens only.
 */
export async function uriSans(der: Uint8Array): Promise<string[]> {
  const [{ AsnConvert }, { Certificate, id_ce_subjectAltName, SubjectAlternativeName }] = await Promise.all([import('@peculiar/asn1-schema'), import('@peculiar/asn1-x509')]);
  const cert = AsnConvert.parse(der, Certificate);
  const ext = cert.tbsCertificate.extensions?.find((e) => e.extnID === id_ce_subjectAltName);
  if (!ext) return [];
  const san = AsnConvert.parse(ext.extnValue.buffer, SubjectAlternativeName);
  const out: string[] = [];
  for (const name of san) if (typeof name.uniformResourceIdentifier === 'string') out.push(name.uniformResourceIdentifier);
  return out;
}

function validAt(cert: X509Certificate, now: Date): boolean {
  const from = Date.parse(cert.validFrom);
  const to = Date.parse(cert.validTo);
  if (!Number.isFinite(from) || !Number.isFinite(to)) return false;
  const t = now.getTime();
  return t >= from && t <= to;
}

function issuedBy(child: X509Certificate, issuer: X509Certificate): boolean {
  try {
    return signedBy(child, issuer);
  } catch {
    return false;
  }
}

/** Why a client certificate in a trust domain this CA does not serve is refused (policy explain says it too). */
/** The refusal of a client certificate whose SPIFFE ID is not Istio's workload form with Kubernetes names (policy explain says it too). */
export function notWorkloadIdentity(uri: string): string {
  return `client certificate URI SAN ${uri} is not an Istio workload identity (spiffe://<trust domain>/ns/<namespace>/sa/<service account>, with Kubernetes names)`;
}

export function unservedTrustDomain(trustDomain: string, served: ReadonlySet<string>): string {
  return `client certificate is in trust domain ${trustDomain}, which this CA does not serve (${[...served].join(', ')})`;
}

/** What the handshake's verification codes (OpenSSL's, as Node reports them) mean to the certificate's holder. */
const HANDSHAKE_REFUSALS: Readonly<Record<string, string>> = {
  CERT_HAS_EXPIRED: 'it has expired',
  CERT_NOT_YET_VALID: 'it is not valid yet',
  DEPTH_ZERO_SELF_SIGNED_CERT: 'it is self-signed, not issued by this CA',
  SELF_SIGNED_CERT_IN_CHAIN: 'it chains to a root this CA does not trust',
  UNABLE_TO_GET_ISSUER_CERT: 'it was not issued by this CA',
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: 'it was not issued by this CA',
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: 'it was not issued by this CA',
  CERT_SIGNATURE_FAILURE: 'its signature does not verify',
  INVALID_PURPOSE: 'it is not for client authentication (its extended key usage)',
  CERT_REVOKED: 'it is revoked',
};

/** AUTH_INVALID's message for a client certificate the TLS handshake did not verify, with no token beside it. */
export function clientCertificateRefused(code: string): string {
  const why = HANDSHAKE_REFUSALS[code] ?? `the TLS handshake could not verify it (${/^[A-Z0-9_]{1,64}$/.test(code) ? code : 'unknown reason'})`;
  return `client certificate not accepted: ${why}; send a service-account token, or a current client certificate issued by this CA`;
}

const invalid = (message: string, cause?: unknown): CaError =>
  new CaError('AUTH_INVALID', message, cause === undefined ? undefined : { cause });

/**
 * Returns null when no certificate was presented; throws AUTH_INVALID when the chain does not
 * lead to a current root, a certificate is outside its validity period, the leaf is a CA, the
 * leaf carries no SPIFFE ID, or the certificate is revoked (auth.revokedClientCertificates).
 */
export class ClientCertAuthenticator implements Authenticator {
  readonly name: string;
  private readonly roots: () => readonly X509Certificate[];
  private readonly revocations: () => ClientCertRevocations;
  private readonly now: () => Date;
  private readonly maxChainLength: number;
  private readonly trustDomains: ReadonlySet<string> | undefined;

  constructor(opts: ClientCertOptions) {
    if (typeof opts?.roots !== 'function') throw new Error('clientCert.roots must be a function returning the current root certificates');
    if (typeof opts.revocations !== 'function') throw new Error('clientCert.revocations must be a function returning the revocations in force');
    this.roots = opts.roots;
    this.revocations = opts.revocations;
    this.now = opts.now ?? (() => new Date());
    this.maxChainLength = opts.maxChainLength ?? 5;
    this.trustDomains = opts.trustDomains;
    this.name = opts.name ?? 'client-cert';
  }

  async authenticate(req: AuthRequest): Promise<Caller | null> {
    const ders = req.peerCertificates;
    if (!ders || ders.length === 0) return null;

    let certs: X509Certificate[];
    try {
      certs = ders.map((d) => new X509Certificate(d));
    } catch (err) {
      throw invalid('client certificate could not be parsed', err);
    }
    const leaf = certs[0] as X509Certificate;
    const now = this.now();

    if (leaf.ca) throw invalid('client certificate is a CA certificate, not a workload certificate');
    if (!validAt(leaf, now)) throw invalid('client certificate is expired or not yet valid');
    const eku = leaf.keyUsage; // Node names the extended key usage OIDs "keyUsage"
    if (Array.isArray(eku) && eku.length > 0 && !eku.includes(EKU_CLIENT_AUTH) && !eku.includes(EKU_ANY)) {
      throw invalid('client certificate is not valid for client authentication (extended key usage)');
    }

    this.verifyChain(leaf, certs.slice(1), now);

    let uris: string[];
    try {
      uris = await uriSans(ders[0] as Uint8Array);
    } catch (err) {
      throw invalid('client certificate subject alternative names could not be parsed', err);
    }
    // An X509-SVID has exactly one URI SAN, a valid SPIFFE ID with a path (SPIFFE X509-SVID §2, §5.2).
    if (uris.length !== 1) throw invalid(uris.length === 0 ? 'client certificate has no SPIFFE ID (URI SAN)' : 'client certificate has more than one URI SAN; an X509-SVID has exactly one');
    const problem = spiffeIdProblem(uris[0]!);
    if (problem || !/^spiffe:\/\/[^/]+\/./.test(uris[0]!)) throw invalid(`client certificate URI SAN is not a workload SPIFFE ID${problem ? `: ${problem}` : ' (no path)'}`);
    // Only Istio's workload form: policy matches callers by namespace and service account, and one
    // with neither (spiffe://td/foo, from another CA under a shared root) would slip past every
    // rule keyed on them (a deny for kube-system) yet match `namespaces: ["*"]`.
    // Their names must be Kubernetes names too, as a token caller's are: policy patterns and
    // revocation selectors are written for those (a SPIFFE path segment also allows "_" and capitals).
    const named = parseWorkloadSpiffeId(uris[0]!);
    if (!named || !isValidNamespace(named.namespace) || !isValidServiceAccount(named.serviceAccount)) {
      throw invalid(notWorkloadIdentity(uris[0]!));
    }
    const identities = [uris[0]!];
    const trustDomain = /^spiffe:\/\/([^/]+)\//.exec(uris[0]!)![1]!;
    if (this.trustDomains && !this.trustDomains.has(trustDomain)) {
      throw invalid(unservedTrustDomain(trustDomain, this.trustDomains));
    }
    // After the chain: only a certificate this CA issued is worth a revocation check. Whoever
    // presents a revoked certificate may be its thief: the refusal is audited under its identity
    // (verified by the chain), not in the budget for anonymous refusals, which junk can exhaust.
    const revoked = this.revocations().find(identities[0]!, Date.parse(leaf.validFrom), serialHex(leaf.serialNumber));
    if (revoked) {
      const why = [
        ...(revoked.serial !== undefined ? [`its serial ${revoked.serial} is listed`] : []),
        ...(revoked.issuedBefore ? [`its notBefore ${new Date(leaf.validFrom).toISOString()} is before ${revoked.issuedBefore.toISOString()}`] : []),
      ];
      const err = invalid(
        `client certificate for ${identities[0]} is revoked: ${why.join(' and ')} ` +
          `(auth.revokedClientCertificates[${revoked.index}]); authenticate with a service-account token to get a new certificate`,
      );
      err.caller = identities[0];
      throw err;
    }

    const caller: { -readonly [K in keyof Caller]: Caller[K] } = {
      method: 'client-cert',
      identities,
      expiresAt: Math.floor(Date.parse(leaf.validTo) / 1000),
    };
    const workload = parseWorkloadSpiffeId(identities[0]!);
    if (workload) {
      caller.namespace = workload.namespace;
      caller.serviceAccount = workload.serviceAccount;
    }
    return caller;
  }

  /** Builds a path leaf -> presented intermediates -> a root, checking names, signatures, dates and CA flags. */
  private verifyChain(leaf: X509Certificate, presented: X509Certificate[], now: Date): void {
    const roots = this.roots();
    if (roots.length === 0) throw invalid('client certificate cannot be verified: no trusted roots are configured');
    const rootPrints = new Set(roots.map((r) => r.fingerprint256));
    const unused = presented.filter((c) => !rootPrints.has(c.fingerprint256));

    let current = leaf;
    let sawExpired = false;
    for (let depth = 1; depth <= this.maxChainLength; depth++) {
      for (const root of roots) {
        if (issuedBy(current, root)) {
          if (!validAt(root, now)) {
            sawExpired = true;
            continue;
          }
          return;
        }
      }
      const idx = unused.findIndex((c) => c.ca && issuedBy(current, c));
      if (idx < 0) break;
      const next = unused[idx] as X509Certificate;
      unused.splice(idx, 1);
      if (!validAt(next, now)) throw invalid('client certificate chain contains an expired or not yet valid intermediate');
      current = next;
    }
    if (sawExpired) throw invalid('client certificate chains to an expired root');
    throw invalid('client certificate is not issued by a trusted root');
  }
}
