import type { AuthRequest, Caller } from '../auth/types.js';
import type { CsrKeyInfo, CsrProof, ParsedCsr } from '../csr/types.js';
import { decodeCsrPem, verifyCsrProof, verifyCsrProofAsync } from '../csr/parse.js';
import { CaError } from '../errors/ca-error.js';
import type { LocalIssuer, SignedLeaf, SignRequest } from '../issuer/local.js';
import type { IssuerRegistry } from '../issuer/registry.js';
import type { PolicyEngine } from '../policy/engine.js';
import type { CredentialKind } from '../policy/schema.js';
import { parseSpiffeId, parseWorkloadSpiffeId } from '../x509/spiffe-id.js';

/** The credential policy's match.authenticatedBy names for each way of authenticating (a new method must say which). */
const CREDENTIAL_OF: Readonly<Record<Caller['method'], CredentialKind>> = { jwt: 'token', tokenreview: 'token', 'client-cert': 'client-certificate' };

export interface CertificateRequest {
  readonly csrPem: string;
  /** The proto's int64 validity_duration (seconds), as received. */
  readonly validitySeconds: string | number | undefined;
  /** Flattened request metadata (google.protobuf.Struct string values). */
  readonly metadata: Readonly<Record<string, string>>;
  readonly auth: AuthRequest;
  /** True once the client can no longer receive the answer (reset, connection gone, deadline passed). */
  readonly cancelled?: () => boolean;
}

export interface IssuedCertificate {
  /** Who asked (for an impersonated request: the node agent, not the workload). */
  readonly caller: Caller;
  readonly spiffeId: string;
  readonly impersonated: boolean;
  readonly issuer: string;
  readonly key: CsrKeyInfo;
  readonly leaf: SignedLeaf;
  /** The policy rule that allowed it. */
  readonly policyRule?: string;
  /** The cluster it was issued under (an empty `clusterid` is the default cluster). */
  readonly cluster?: string;
  /** Extra SANs granted by policy. */
  readonly dnsNames?: readonly string[];
  /** Namespace and service account of an Istio workload identity. */
  readonly workload?: { readonly namespace: string; readonly serviceAccount: string };
  /** Response elements: leaf, each intermediate, root bundle; each ends with "\n". */
  readonly chain: readonly string[];
}

export interface AuthorityOptions {
  /** Seconds NotBefore is moved into the past (clock skew between nodes). */
  readonly backdate: number;
  /** The cluster an empty `clusterid` means. */
  readonly defaultCluster: string;
  /** The mesh's trust domain and its aliases: interchangeable in a workload identity. Empty: no aliases. */
  readonly trustDomainGroup?: readonly string[];
  /**
   * The cluster a client certificate in this trust domain belongs to, for the policy's `{cluster}`
   * (see certificateCluster); undefined: none can be told, and `{cluster}` names nothing. Absent:
   * the default cluster's.
   */
  readonly certificateCluster?: (trustDomain: string) => string | undefined;
}

export interface AuthorityDeps {
  readonly authenticate: (req: AuthRequest) => Promise<Caller>;
  /** The CAs and the policy in force now (both can change on reload; a call keeps what it began with). */
  readonly issuers: () => IssuerRegistry;
  readonly policy: () => PolicyEngine;
  readonly options: AuthorityOptions;
  readonly now?: () => Date;
  /** Last check before signing (e.g. inventory fail-closed); throws a CaError to refuse. */
  readonly beforeSign?: () => void;
  /** Optional per-identity rate limit, applied once the caller is known. */
  readonly rateLimit?: { take(identity: string, instance?: string): void };
  /** Ambient mode: decides whether a node agent may ask for a workload's identity (may ask the API server: async). */
  readonly nodeAuthorizer?: { authorize(caller: Caller, requestedIdentity: string, callerCluster: string): void | Promise<void> };
  /** Runs the synchronous, CPU-heavy part of a call (default: at once); see WorkSlicer. */
  readonly schedule?: <T>(work: () => T) => Promise<T>;
  /**
   * Where the two signature operations of a call run (the CSR's proof of possession, the leaf's
   * signature). 'pool' (default): on libuv's thread pool, so a single process on a machine with a
   * second core uses it while its JavaScript thread decodes the next request. 'inline': in the
   * scheduled work, for cluster workers (which already keep every core busy) and single-core
   * machines; there the hand-off between threads only adds CPU.
   */
  readonly signatures?: 'pool' | 'inline';
}

/**
 * The CreateCertificate use case, transport-neutral: authenticate, refuse what is not allowed,
 * decide identity, lifetime, SANs and CA through the policy, sign. Every refusal is a CaError;
 * the transport maps it.
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
    /** The workload a node agent asks for, once node authorization has allowed it (for the audit trail). */
    let forWorkload: string | undefined;
    try {
      // Ambient: ztunnel asks for the workloads on its node, only with node authorization
      // configured; decided before the call's turn, since it may wait for the API server.
      const impersonate = req.metadata.ImpersonatedIdentity;
      if (impersonate) {
        if (!this.deps.nodeAuthorizer) {
          throw new CaError('IMPERSONATION_DENIED', AMBIENT_OFF);
        }
        // A call whose client is gone costs the API server nothing.
        stopIfCancelled(req);
        try {
          await this.deps.nodeAuthorizer.authorize(caller, impersonate, this.clusterOf(caller, req));
        } catch (e) {
          // "Retry later" (the pod cache not synced, the API server unreachable) must not be said of
          // a request no retry can mend: ztunnel would retry a broken CSR for nothing.
          if (e instanceof CaError && e.code === 'AUTH_BACKEND_UNAVAILABLE') throw csrRefusal({ ...caller, identities: [impersonate] }, req.csrPem, this.deps.options.trustDomainGroup) ?? e;
          throw e;
        }
        forWorkload = impersonate;
      }
      // Whom the certificate is for: the workload a node agent was allowed to ask for, or the caller.
      const subject: Caller = forWorkload === undefined ? caller : { ...caller, identities: [forWorkload] };
      if (this.deps.signatures === 'inline') {
        return await this.run(() => {
          const d = this.decide(caller, subject, req);
          verifyCsrProof(d.proof);
          stopIfCancelled(req);
          this.deps.beforeSign?.();
          let leaf: SignedLeaf;
          try {
            leaf = d.issuer.sign(d.sign);
          } catch (e) {
            return issuerFailed(e);
          }
          return issued(d, leaf);
        });
      }
      const d = await this.run(() => this.decide(caller, subject, req));
      // Proof of possession before anything is signed.
      await verifyCsrProofAsync(d.proof);
      stopIfCancelled(req);
      this.deps.beforeSign?.();
      let leaf: SignedLeaf;
      try {
        leaf = await d.issuer.signAsync(d.sign);
      } catch (e) {
        return issuerFailed(e);
      }
      return issued(d, leaf);
    } catch (e) {
      if (e instanceof CaError) {
        e.caller = caller.identities[0];
        if (forWorkload !== undefined) e.identity = forWorkload;
      }
      throw e;
    }
  }

  /**
   * The cluster the caller authenticated in: a token is checked against the cluster the header
   * names; a client certificate carries no cluster, so its holder does not get to choose one (and
   * with it another cluster's rules).
   */
  private clusterOf(caller: Caller, req: CertificateRequest): string {
    return CREDENTIAL_OF[caller.method] === 'client-certificate' ? this.deps.options.defaultCluster : req.auth.clusterId || this.deps.options.defaultCluster;
  }

  private run<T>(work: () => T): Promise<T> {
    return this.deps.schedule ? this.deps.schedule(work) : Promise.resolve().then(work);
  }

  private decide(caller: Caller, subject: Caller, req: CertificateRequest): Decision {
    // A call that waited its turn (a restart storm queues thousands) may have lost its client meanwhile.
    stopIfCancelled(req);
    const registry = this.deps.issuers();
    const policy = this.deps.policy();

    // Per workload identity (every ztunnel shares one service account: keyed on who the certificate
    // is for, not on who asks), and per pod asking when its token is bound to one: a sidecar for
    // itself, a ztunnel for the pods of its node. A Deployment's replicas share an identity.
    this.deps.rateLimit?.take(subject.identities[0] ?? 'unknown', caller.pod?.uid);

    const { unverified: csr, proof } = decodeCsrPem(req.csrPem);
    const spiffeId = chooseIdentity(subject, csr, this.deps.options.trustDomainGroup);
    const workload = parseWorkloadSpiffeId(spiffeId);
    // An alias asked for in the CSR (the caller's namespace and service account in another trust
    // domain of the mesh) must pass the rules of the caller's own trust domain too.
    const own = subject.identities.includes(spiffeId) ? spiffeId : subject.identities.find((id) => sameWorkload(id, workload));
    const credential = CREDENTIAL_OF[caller.method];
    const clusterId = this.clusterOf(caller, req);
    const byCertificate = credential === 'client-certificate' && own !== undefined && this.deps.options.certificateCluster;
    const decision = policy.evaluate({
      trustDomain: workload?.trustDomain ?? trustDomainOf(spiffeId),
      ...(own !== undefined && own !== spiffeId ? { authenticatedTrustDomain: trustDomainOf(own) } : {}),
      clusterId,
      // A holder renewing over mTLS names its cluster only through its certificate's trust domain:
      // the default cluster's names are not another cluster's to take.
      ...(byCertificate ? { templateCluster: byCertificate(trustDomainOf(own)) ?? '' } : {}),
      namespace: workload?.namespace ?? subject.namespace ?? '',
      serviceAccount: workload?.serviceAccount ?? subject.serviceAccount ?? '',
      impersonated: subject !== caller,
      authenticatedBy: credential,
      key: csr.key,
      requestedTtlSeconds: req.validitySeconds,
      dnsNames: csr.dnsNames,
      ipAddresses: csr.ipAddresses,
      emails: csr.emails,
      uris: csr.uris,
    });
    if (!decision.allowed) throw new CaError(decision.code, decision.reason);

    const issuer = registry.get(decision.issuer);
    const now = this.now();
    if (issuer.notAfter <= now) throw new CaError('ISSUER_UNAVAILABLE', `the signing CA "${issuer.name}" has expired; an operator must renew it`);
    const sign: SignRequest = {
      spki: csr.spki,
      uris: [spiffeId],
      dnsNames: decision.dnsNames,
      ipAddresses: decision.ipAddresses,
      notBefore: new Date(now.getTime() - this.deps.options.backdate * 1000),
      notAfter: new Date(now.getTime() + decision.ttlSeconds * 1000),
    };
    // The identity itself first: a CA whose name constraints leave out this trust domain (one
    // served by a rule's issuer but not permitted to it) is the operator's to fix, not the caller's.
    const outside = identityOutsideCa(issuer, decision.rule, spiffeId);
    if (outside !== null) throw new CaError('ISSUER_UNAVAILABLE', outside);
    // Names the policy allows but the CA's chain may not certify: clients would refuse the leaf.
    const refused = issuer.refusedNames(sign);
    if (refused.length > 0) {
      throw new CaError('CSR_FORBIDDEN_EXTENSION', `the CSR requests names that rule "${decision.rule}" allows but the signing CA "${issuer.name}" cannot certify (clients would refuse the certificate): ${refused.join('; ')}; request without them`);
    }
    return {
      proof,
      issuer,
      rootBundlePem: registry.rootBundlePem,
      sign,
      certificate: {
        caller,
        spiffeId,
        impersonated: subject !== caller,
        issuer: issuer.name,
        key: csr.key,
        policyRule: decision.rule,
        cluster: clusterId,
        dnsNames: decision.dnsNames,
        ...(workload ? { workload: { namespace: workload.namespace, serviceAccount: workload.serviceAccount } } : {}),
      },
    };
  }
}

/** Nothing is decided or signed for a client that can no longer receive the certificate. */
function stopIfCancelled(req: CertificateRequest): void {
  if (req.cancelled?.()) throw new CaError('CANCELLED', 'the call was cancelled, its connection closed or its deadline passed before the certificate was signed');
}

/** The signer's failure is ours, not the caller's: ISSUER_FAILED, with the cause for the log. */
function issuerFailed(e: unknown): never {
  throw new CaError('ISSUER_FAILED', 'failed to sign the certificate', { cause: e });
}

function issued(d: Decision, leaf: SignedLeaf): IssuedCertificate {
  // The root bundle is the union of every issuer's roots, so all workloads trust each other.
  return { ...d.certificate, leaf, chain: [leaf.pem, ...d.issuer.material.intermediatesPem, d.rootBundlePem] };
}

/**
 * What the synchronous part of a call decided; the CSR is not trusted until `proof` is checked.
 * The issuer and root bundle are those of the registry in force when the call was decided: a
 * reload that lands while the signatures run on the pool (a few milliseconds) applies from the
 * next call, as it does for any call already in flight.
 */
interface Decision {
  readonly proof: CsrProof;
  readonly issuer: LocalIssuer;
  readonly rootBundlePem: string;
  readonly sign: SignRequest;
  readonly certificate: Omit<IssuedCertificate, 'leaf' | 'chain'>;
}

function trustDomainOf(id: string): string {
  try {
    return parseSpiffeId(id).trustDomain;
  } catch (e) {
    throw new CaError('IDENTITY_MISMATCH', `the requested identity is not a valid SPIFFE ID: ${(e as Error).message}`);
  }
}

/**
 * Why `issuer`'s name constraints leave out `spiffeId`'s trust domain, or null: the server answers
 * ISSUER_UNAVAILABLE (an operator's to fix), and policy explain says the same.
 */
export function identityOutsideCa(issuer: Pick<LocalIssuer, 'name' | 'refusedUris'>, rule: string, spiffeId: string): string | null {
  const refused = issuer.refusedUris([spiffeId]);
  if (refused.length === 0) return null;
  return `the signing CA "${issuer.name}" (rule "${rule}") cannot certify trust domain ${trustDomainOf(spiffeId)}: ${refused.join('; ')}; an operator must sign this trust domain with a CA that permits it`;
}

/** The refusal of ImpersonatedIdentity when ambient mode is off (policy explain says it too). */
export const AMBIENT_OFF = 'ImpersonatedIdentity is not allowed: this CA does not accept certificate requests on behalf of other workloads (ambient mode is off)';

/** The refusal a CSR gets whatever else happens (malformed, a CA request, another identity), or undefined. */
function csrRefusal(subject: Caller, csrPem: string, trustDomainGroup?: readonly string[]): CaError | undefined {
  try {
    chooseIdentity(subject, decodeCsrPem(csrPem).unverified, trustDomainGroup);
    return undefined;
  } catch (e) {
    return e instanceof CaError ? e : undefined;
  }
}

/**
 * The CSR's URI SANs must be absent or name exactly the caller's identity (istio-csr's rule,
 * stricter than istiod, which ignores them); a CA request is refused. Other SANs (DNS, IP, email)
 * are the policy's to allow or refuse.
 */
export function chooseIdentity(caller: Caller, csr: Pick<ParsedCsr, 'requestsCa' | 'uris'>, trustDomainGroup: readonly string[] = []): string {
  if (csr.requestsCa) throw new CaError('CSR_FORBIDDEN_EXTENSION', 'the CSR asks for a CA certificate (BasicConstraints CA or keyCertSign); workload certificates cannot be CAs');
  if (caller.identities.length === 0) throw new CaError('AUTH_INVALID', 'the credential carries no workload identity');
  if (csr.uris.length === 0) return caller.identities[0]!;
  if (csr.uris.length > 1) throw new CaError('IDENTITY_MISMATCH', 'the CSR requests more than one URI SAN; an X.509-SVID has exactly one SPIFFE ID');
  const wanted = csr.uris[0]!;
  if (!caller.identities.includes(wanted) && !isAliasOf(wanted, caller.identities, trustDomainGroup)) {
    throw new CaError('IDENTITY_MISMATCH', `the CSR requests identity ${wanted.slice(0, 256)}, but the caller is ${caller.identities.join(', ')}`);
  }
  return wanted;
}

/** Whether `id` names the same namespace and service account as `workload`. */
function sameWorkload(id: string, workload: { namespace: string; serviceAccount: string } | null): boolean {
  const c = parseWorkloadSpiffeId(id);
  return workload !== null && c !== null && c.namespace === workload.namespace && c.serviceAccount === workload.serviceAccount;
}

/**
 * Trust-domain aliases: spiffe://<a>/ns/N/sa/S is the caller's identity too when the caller is
 * spiffe://<b>/ns/N/sa/S and both <a> and <b> belong to the mesh's trust-domain group.
 */
export function isAliasOf(wanted: string, identities: readonly string[], group: readonly string[]): boolean {
  if (group.length < 2) return false;
  const w = parseWorkloadSpiffeId(wanted);
  if (!w || !group.includes(w.trustDomain)) return false;
  return identities.some((id) => {
    const c = parseWorkloadSpiffeId(id);
    return c !== null && c.namespace === w.namespace && c.serviceAccount === w.serviceAccount && group.includes(c.trustDomain);
  });
}
