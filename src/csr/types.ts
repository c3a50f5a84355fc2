import type { KeyObject } from 'node:crypto';

export type KeyAlgorithm = 'RSA' | 'ECDSA';

export interface CsrKeyInfo {
  readonly algorithm: KeyAlgorithm;
  /** RSA modulus bits, or the EC curve size in bits (256, 384). */
  readonly size: number;
  /** 'P-256' | 'P-384' for ECDSA. */
  readonly curve?: string;
}

/** A decoded CSR (by parseCsr*: with its signature verified). Only what issuance needs. */
export interface ParsedCsr {
  /** DER SubjectPublicKeyInfo, copied verbatim into the leaf. */
  readonly spki: Buffer;
  readonly publicKey: KeyObject;
  readonly key: CsrKeyInfo;
  readonly uris: readonly string[];
  readonly dnsNames: readonly string[];
  readonly ipAddresses: readonly string[];
  readonly emails: readonly string[];
  /** True when the CSR asks for BasicConstraints CA:true or keyCertSign/cRLSign. */
  readonly requestsCa: boolean;
  /** OIDs of extensions requested that meshcert does not know. */
  readonly unknownExtensions: readonly string[];
  /** Subject has a CN (istio-csr refuses these). */
  readonly subjectCommonName?: string;
}

/** What proves the requester holds the CSR's private key (the CSR's own signature). */
export interface CsrProof {
  readonly hash: 'sha256' | 'sha384' | 'sha512';
  /** Set for RSASSA-PSS. */
  readonly pssSaltLength?: number;
  /** The DER CertificationRequestInfo that was signed. */
  readonly data: Buffer;
  readonly publicKey: KeyObject;
  readonly signature: Buffer;
}

/** A CSR decoded and checked except for its signature: `unverified` is not to be trusted before `proof` is checked. */
export interface DecodedCsr {
  readonly unverified: ParsedCsr;
  readonly proof: CsrProof;
}
