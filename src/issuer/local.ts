import { X509Certificate } from 'node:crypto';
import type { CaMaterial } from '../ca/material.js';
import { buildLeaf, buildLeafAsync, derToPem, prepareLeafSigner, newSerial, type LeafParams, type LeafSigner } from '../x509/leaf.js';
import { pathConstraintProblems } from '../x509/path-constraints.js';
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

/**
 * Signs leaves with a CA key held in this process. The per-CA encoding state is prepared once;
 * each call only encodes the TBS and signs it (see src/x509/leaf.ts for why not a generic library).
 */
export class LocalIssuer {
  readonly name: string;
  readonly material: CaMaterial;
  private readonly signer: LeafSigner;

  constructor(name: string, material: CaMaterial) {
    this.name = name;
    this.material = material;
    this.signer = prepareLeafSigner(material.signingCert.raw, material.signingKey);
  }

  /** The latest NotAfter a leaf may have: never beyond the signing chain. */
  get notAfter(): Date {
    return this.material.notAfter;
  }

  sign(req: SignRequest): SignedLeaf {
    const params = this.leafParams(req);
    return this.signed(params, buildLeaf(this.signer, params));
  }

  /** sign() with the signature computed off the JavaScript thread (the request path uses this). */
  async signAsync(req: SignRequest): Promise<SignedLeaf> {
    const params = this.leafParams(req);
    return this.signed(params, await buildLeafAsync(this.signer, params));
  }

  private leafParams(req: SignRequest): LeafParams {
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
    const leaf = new X509Certificate(this.sign({ spki, uris: [uri], notBefore: now, notAfter: new Date(now.getTime() + 60_000) }).der);
    let child = leaf;
    for (const parent of this.material.intermediates) {
      if (!signedBy(child, parent)) throw new Error(`issuer ${this.name}: self-test leaf does not verify against its chain`);
      child = parent;
    }
    const anchors = this.material.roots.filter((r) => signedBy(child, r));
    if (anchors.length === 0) {
      throw new Error(`issuer ${this.name}: chain does not reach a trusted root`);
    }
    // Every path a client could build, as Go tries them: a self-signed signing CA is its own
    // anchor (a certificate appears once in a path), and any one acceptable path is enough.
    let problems: string[] = [];
    for (const anchor of anchors) {
      const certs = child.fingerprint256 === anchor.fingerprint256 ? [leaf, ...this.material.intermediates] : [leaf, ...this.material.intermediates, anchor];
      problems = pathConstraintProblems(
        certs.map((c) => ({ der: c.raw, name: (c.subject ?? '').replace(/\n/g, ', ') })), // a leaf's subject is empty
        [uri],
      );
      if (problems.length === 0) return;
    }
    throw new Error(`issuer ${this.name}: its chain breaks constraints that Go's crypto/x509 (istio-agent) and OpenSSL enforce, so clients would refuse every certificate it signs: ${problems.join('; ')}`);
  }
}

function wholeSeconds(d: Date): Date {
  return new Date(Math.floor(d.getTime() / 1000) * 1000);
}
