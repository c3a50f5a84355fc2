import type { X509Certificate } from 'node:crypto';
import { CaError } from '../errors/ca-error.js';
import { certToPem } from '../x509/pem.js';
import type { LocalIssuer } from './local.js';

/**
 * The CAs meshcert signs with, by name. Every workload is given the union of all trusted roots
 * (the last response element), so workloads signed by different CAs of one mesh trust each other.
 * Immutable: a reload builds a new registry and swaps it in, so a call in flight keeps the one it began with.
 */
export class IssuerRegistry {
  readonly rootBundlePem: string;
  readonly roots: readonly X509Certificate[];
  /** Roots and intermediates of every issuer: anchors for client-certificate authentication. */
  readonly anchors: readonly X509Certificate[];
  /**
   * The same anchors as PEM, for the TLS handshake's client-certificate check: grpc-js hands the
   * peer certificate to the service only when the handshake verified it, and a client may send
   * its leaf alone, so the handshake must know meshcert's intermediates too.
   */
  readonly anchorsPem: string;
  private readonly byName: ReadonlyMap<string, LocalIssuer>;

  constructor(issuers: readonly LocalIssuer[]) {
    if (!issuers.some((i) => i.name === 'default')) throw new Error('the default issuer is missing');
    this.byName = new Map(issuers.map((i) => [i.name, i]));
    const seen = new Set<string>();
    const roots: X509Certificate[] = [];
    for (const i of issuers) {
      for (const r of i.material.roots) {
        if (seen.has(r.fingerprint256)) continue;
        seen.add(r.fingerprint256);
        roots.push(r);
      }
    }
    this.roots = roots;
    this.rootBundlePem = roots.map(certToPem).join('');
    this.anchors = [...issuers.flatMap((i) => i.material.intermediates), ...roots];
    this.anchorsPem = this.anchors.map(certToPem).join('');
  }

  get default(): LocalIssuer {
    return this.byName.get('default')!;
  }

  get all(): readonly LocalIssuer[] {
    return [...this.byName.values()];
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  /** The named issuer; a policy naming an unknown one is our misconfiguration, not the caller's. */
  get(name: string): LocalIssuer {
    const i = this.byName.get(name);
    if (!i) throw new CaError('ISSUER_UNAVAILABLE', `issuer "${name}" chosen by policy is not configured`);
    return i;
  }
}
