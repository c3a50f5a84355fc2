import type { AuthRequest, Caller } from '../auth/types.js';
import type { CsrKeyInfo, ParsedCsr } from '../csr/types.js';
import { parseCsrPem } from '../csr/parse.js';
import { CaError } from '../errors/ca-error.js';
import type { LocalIssuer, SignedLeaf } from '../issuer/local.js';
import { resolveLifetimeSeconds, type LifetimeOptions } from './lifetime.js';

export interface CertificateRequest {
  readonly csrPem: string;
  /** The proto's int64 validity_duration (seconds), as received. */
  readonly validitySeconds: string | number | undefined;
  /** Flattened request metadata (google.protobuf.Struct string values). */
  readonly metadata: Readonly<Record<string, string>>;
  readonly auth: AuthRequest;
}

export interface IssuedCertificate {
  readonly caller: Caller;
  readonly spiffeId: string;
  readonly issuer: string;
  readonly key: CsrKeyInfo;
  readonly leaf: SignedLeaf;
  /** The policy rule that allowed it, when a policy is configured. */
  readonly policyRule?: string;
  /** Extra SANs granted by policy. */
  readonly dnsNames?: readonly string[];
  /** Response elements: leaf, each intermediate, root bundle; each ends with "\n". */
  readonly chain: readonly string[];
}

export interface AuthorityOptions extends LifetimeOptions {
  /** Seconds NotBefore is moved into the past (clock skew between nodes). */
  readonly backdate: number;
}

export interface AuthorityDeps {
  readonly authenticate: (req: AuthRequest) => Promise<Caller>;
  /** The issuer in force now (it can change on reload). */
  readonly issuer: () => LocalIssuer;
  readonly options: AuthorityOptions;
  readonly now?: () => Date;
  /** Last check before signing (e.g. inventory fail-closed); throws a CaError to refuse. */
  readonly beforeSign?: () => void;
  /** Optional per-identity rate limit, applied once the caller is known. */
  readonly rateLimit?: { take(identity: string): void };
}

/**
 * The CreateCertificate use case, transport-neutral: authenticate, refuse what is not allowed,
 * decide the identity and lifetime, sign. Every refusal is a CaError; the transport maps it.
 */
export class Authority {
  private readonly deps: AuthorityDeps;
  private readonly now: () => Date;

  constructor(deps: AuthorityDeps) {
    this.deps = deps;
    this.now = deps.now ?? (() => new Date());
  }

  async issue(req: CertificateRequest): Promise<IssuedCertificate> {
    const caller = await this.deps.authenticate(req.auth);
    try {
      return this.issueFor(caller, req);
    } catch (e) {
      if (e instanceof CaError) e.caller = caller.identities[0];
      throw e;
    }
  }

  private issueFor(caller: Caller, req: CertificateRequest): IssuedCertificate {
    this.deps.rateLimit?.take(caller.identities[0] ?? 'unknown');
    if (req.metadata.ImpersonatedIdentity) {
      throw new CaError('IMPERSONATION_DENIED', 'ImpersonatedIdentity is not allowed: this CA does not accept certificate requests on behalf of other workloads');
    }
    const csr = parseCsrPem(req.csrPem);
    const spiffeId = chooseIdentity(caller, csr);
    const ttl = resolveLifetimeSeconds(req.validitySeconds, this.deps.options);

    const issuer = this.deps.issuer();
    const now = this.now();
    const notBefore = new Date(now.getTime() - this.deps.options.backdate * 1000);
    const notAfter = new Date(now.getTime() + ttl * 1000);
    if (issuer.notAfter <= now) throw new CaError('ISSUER_UNAVAILABLE', 'the signing CA has expired; an operator must renew it');
    this.deps.beforeSign?.();
    let leaf: SignedLeaf;
    try {
      leaf = issuer.sign({ spki: csr.spki, uris: [spiffeId], notBefore, notAfter });
    } catch (e) {
      throw new CaError('ISSUER_FAILED', 'failed to sign the certificate', { cause: e });
    }
    return { caller, spiffeId, issuer: issuer.name, key: csr.key, leaf, chain: [leaf.pem, ...leaf.chainPem] };
  }
}

/**
 * The CSR's URI SANs must be absent or name exactly the caller's identity (istio-csr's rule,
 * stricter than istiod, which ignores them). Other SAN types and CA requests are refused.
 */
export function chooseIdentity(caller: Caller, csr: ParsedCsr): string {
  if (csr.requestsCa) throw new CaError('CSR_FORBIDDEN_EXTENSION', 'the CSR asks for a CA certificate (BasicConstraints CA or keyCertSign); workload certificates cannot be CAs');
  const extra = [
    csr.dnsNames.length ? 'DNS names' : '',
    csr.ipAddresses.length ? 'IP addresses' : '',
    csr.emails.length ? 'email addresses' : '',
  ].filter(Boolean);
  if (extra.length) throw new CaError('CSR_FORBIDDEN_EXTENSION', `the CSR requests ${extra.join(', ')} as SANs; workload certificates carry only the SPIFFE ID`);
  if (caller.identities.length === 0) throw new CaError('AUTH_INVALID', 'the credential carries no workload identity');
  if (csr.uris.length === 0) return caller.identities[0]!;
  if (csr.uris.length > 1) throw new CaError('IDENTITY_MISMATCH', 'the CSR requests more than one URI SAN; an X.509-SVID has exactly one SPIFFE ID');
  const wanted = csr.uris[0]!;
  if (!caller.identities.includes(wanted)) {
    throw new CaError('IDENTITY_MISMATCH', `the CSR requests identity ${wanted}, but the caller is ${caller.identities.join(', ')}`);
  }
  return wanted;
}
