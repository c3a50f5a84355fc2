import { X509Certificate } from 'node:crypto';
import type { CaMaterial } from '../ca/material.js';
import { ipToBytes, type IpPrefix } from '../net/ip-text.js';
import { buildLeaf, buildLeafAsync, derToPem, prepareLeafSigner, newSerial, type LeafParams, type LeafSigner } from '../x509/leaf.js';
import { pathCertOf, pathConstraintProblems, pathNameConstraints, pathNameRefusals, pathRangeRefusals, type ConstrainedCa } from '../x509/path-constraints.js';
import { signedBy } from '../x509/verify-chain.js';
import { serialHex } from '../x509/serial-hex.js';

export interface SignRequest {
  readonly spki: Buffer;
  readonly uris: readonly string[];
  readonly dnsNames?: readonly string[];
  readonly ipAddresses?: readonly string[];
  readonly notBefore: Date;
  readonly notAfter: Date;
}

export interface SignedLeaf {
  readonly der: Buffer;
  readonly pem: string;
  /** Lowercase hex of the serial number. */
  readonly serial: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** Response elements after the leaf: each intermediate, then the root bundle. */
  readonly chainPem: readonly string[];
}

/** The trust domain of a SPIFFE ID (its host), as name constraints read it. */
const SPIFFE_HOST = /^spiffe:\/\/([^/?#]+)/;
const MAX_CERTIFIED_TRUST_DOMAINS = 256;

/**
 * Signs leaves with a CA key held in this process. The per-CA encoding state is prepared once;
 * each call only encodes the TBS and signs it (see src/x509/leaf.ts for why not a generic library).
 */
export class LocalIssuer {
  readonly name: string;
  readonly material: CaMaterial;
  private readonly signer: LeafSigner;
  /**
   * The name constraints of each path a client can build from the chain: read by selfTest at
   * load, or on first use by an issuer never self-tested.
   */
  private constrainedPaths: ConstrainedCa[][] | undefined;
  /**
   * Trust domains whose SPIFFE IDs every client accepts under this chain (name constraints match a
   * URI by its host, the trust domain): checked once each, on first use. Only a config's trust
   * domains reach here, so the set stays small; it is bounded all the same.
   */
  private readonly certifiedTrustDomains = new Set<string>();

  constructor(name: string, material: CaMaterial) {
    this.name = name;
    this.material = material;
    this.signer = prepareLeafSigner(material.signingCert.raw, material.signingKey);
  }

  /** The latest NotAfter a leaf may have: never beyond the signing chain. */
  get notAfter(): Date {
    return this.material.notAfter;
  }

  /** Throws NameConstraintError for names (SPIFFE IDs, DNS names, IP addresses) the chain's name constraints refuse. */
  sign(req: SignRequest): SignedLeaf {
    const params = this.leafParams(req);
    return this.signed(params, buildLeaf(this.signer, params));
  }

  /** sign() with the signature computed off the JavaScript thread (the request path uses this). */
  async signAsync(req: SignRequest): Promise<SignedLeaf> {
    const params = this.leafParams(req);
    return this.signed(params, await buildLeafAsync(this.signer, params));
  }

  /**
   * Why clients would refuse a leaf of this CA with these names: a CA of the chain has name
   * constraints that exclude one of them ([] when one path a client can build allows them all).
   * A leaf with SPIFFE IDs alone costs a set lookup once its trust domain has been checked.
   */
  refusedNames(req: Pick<SignRequest, 'uris' | 'dnsNames' | 'ipAddresses'>): string[] {
    if (!req.dnsNames?.length && !req.ipAddresses?.length) return this.refusedUris(req.uris);
    const names = { uris: req.uris, dnsNames: req.dnsNames ?? [], ipAddresses: (req.ipAddresses ?? []).map(ipToBytes) };
    return this.onAnyPath((path) => pathNameRefusals(path, names));
  }

  /** refusedNames for URIs alone: a trust domain found acceptable is not checked again. */
  refusedUris(uris: readonly string[]): string[] {
    const refused: string[] = [];
    for (const uri of uris) {
      const trustDomain = SPIFFE_HOST.exec(uri)?.[1];
      if (trustDomain !== undefined && this.certifiedTrustDomains.has(trustDomain)) continue;
      const problems = this.onAnyPath((path) => pathNameRefusals(path, { uris: [uri], dnsNames: [], ipAddresses: [] }));
      if (problems.length > 0) refused.push(...problems);
      else if (trustDomain !== undefined && this.certifiedTrustDomains.size < MAX_CERTIFIED_TRUST_DOMAINS) this.certifiedTrustDomains.add(trustDomain);
    }
    return refused;
  }

  /**
   * Why the chain refuses some address of these IP ranges ([] when one path a client can build
   * allows them all): for load-time checks of the policy's IP entries.
   */
  refusedIpRanges(ranges: readonly IpPrefix[]): string[] {
    if (ranges.length === 0) return [];
    return this.onAnyPath((path) => pathRangeRefusals(path, ranges));
  }

  /** [] when `check` finds nothing on one of the paths (Go accepts one acceptable path), else the first path's problems. */
  private onAnyPath(check: (path: readonly ConstrainedCa[]) => string[]): string[] {
    this.constrainedPaths ??= this.readConstrainedPaths(this.caPaths());
    let first: string[] = [];
    for (const path of this.constrainedPaths) {
      const problems = check(path);
      if (problems.length === 0) return [];
      if (first.length === 0) first = problems;
    }
    return first;
  }

  private leafParams(req: SignRequest, checkNames = true): LeafParams {
    // Signed, such a leaf is refused by every client, with an error far from its cause.
    const refused = checkNames ? this.refusedNames(req) : [];
    if (refused.length > 0) throw new NameConstraintError(this.name, refused);
    return {
      serial: newSerial(),
      // X.509 times have whole seconds; truncate here so what we report equals what we encode.
      notBefore: wholeSeconds(req.notBefore),
      notAfter: wholeSeconds(req.notAfter > this.notAfter ? this.notAfter : req.notAfter),
      spki: req.spki,
      uris: req.uris,
      dnsNames: req.dnsNames,
      ipAddresses: req.ipAddresses,
    };
  }

  private signed(p: LeafParams, der: Buffer): SignedLeaf {
    return {
      der,
      pem: derToPem(der),
      serial: serialHex(p.serial.toString('hex')),
      notBefore: p.notBefore,
      notAfter: p.notAfter,
      chainPem: [...this.material.intermediatesPem, this.material.rootBundlePem],
    };
  }

  /**
   * Signs a throwaway leaf and verifies it against the roots (SPIRE's X509CAValidator idea):
   * a CA that cannot produce a verifiable chain is refused at load, not discovered per request.
   */
  selfTest(spki: Buffer, uri: string): void {
    const now = new Date();
    // Signed without the name check: the checks below say more about a chain that fails it.
    const params = this.leafParams({ spki, uris: [uri], notBefore: now, notAfter: new Date(now.getTime() + 60_000) }, false);
    const leaf = new X509Certificate(this.signed(params, buildLeaf(this.signer, params)).der);
    let child = leaf;
    for (const parent of this.material.intermediates) {
      if (!signedBy(child, parent)) throw new Error(`issuer ${this.name}: self-test leaf does not verify against its chain`);
      child = parent;
    }
    const paths = this.caPaths();
    if (paths.length === 0) {
      throw new Error(`issuer ${this.name}: chain does not reach a trusted root`);
    }
    // Every path's constraints, read now: one Go cannot parse is refused at load, not per request.
    this.constrainedPaths = this.readConstrainedPaths(paths);
    // Any one acceptable path is enough, as Go tries them.
    let problems: string[] = [];
    for (const path of paths) {
      problems = pathConstraintProblems([leaf, ...path].map(pathCertOf), { uris: [uri] });
      if (problems.length === 0) return;
    }
    throw new Error(`issuer ${this.name}: its chain breaks constraints that Go's crypto/x509 (istio-agent) enforces at every handshake, so clients would refuse every certificate it signs: ${problems.join('; ')}`);
  }

  private readConstrainedPaths(paths: readonly X509Certificate[][]): ConstrainedCa[][] {
    try {
      return paths.map((path) => pathNameConstraints(path.map(pathCertOf)));
    } catch (e) {
      throw new Error(`issuer ${this.name}: ${(e as Error).message}`, { cause: e });
    }
  }

  /**
   * Every CA path a client could build above a leaf, signing CA first: the intermediates, then
   * each root that signed the top one. A self-signed signing CA is its own anchor (a certificate
   * appears once in a path), and a root of the same name and key takes its place, as Go finds it.
   */
  private caPaths(): X509Certificate[][] {
    const chain = this.material.intermediates;
    const top = chain[chain.length - 1]!;
    const selfSigned = signedBy(top, top);
    return this.material.roots
      .filter((r) => signedBy(top, r))
      .map((anchor) => (top.fingerprint256 === anchor.fingerprint256 ? [...chain] : selfSigned ? [...chain.slice(0, -1), anchor] : [...chain, anchor]));
  }
}

/** A leaf's DNS names or IP addresses that a CA of the chain does not allow (see refusedNames). */
export class NameConstraintError extends Error {
  override readonly name = 'NameConstraintError';

  constructor(issuer: string, problems: readonly string[]) {
    super(`issuer ${issuer} cannot sign these names, clients would refuse the certificate: ${problems.join('; ')}`);
  }
}

function wholeSeconds(d: Date): Date {
  return new Date(Math.floor(d.getTime() / 1000) * 1000);
}
