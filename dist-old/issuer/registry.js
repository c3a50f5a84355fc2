import { CaError } from '../errors/ca-error.js';
import { certToPem } from '../x509/pem.js';
/**
 * The CAs meshcert signs with, by name. Every workload is given the union of all trusted roots
 * (the last response element), so workloads signed by different CAs of one mesh trust each other.
 * Immutable: a reload builds a new registry and swaps it in, so a call in flight keeps the one it began with.
 */
export class IssuerRegistry {
    rootBundlePem;
    roots;
    /** Roots and intermediates of every issuer: anchors for client-certificate authentication. */
    anchors;
    /**
     * The same anchors as PEM, for the TLS handshake's client-certificate check: grpc-js hands the
     * peer certificate to the service only when the handshake verified it, and a client may send
     * its leaf alone, so the handshake must know meshcert's intermediates too.
     */
    anchorsPem;
    byName;
    constructor(issuers) {
        if (!issuers.some((i) => i.name === 'default'))
            throw new Error('the default issuer is missing');
        this.byName = new Map(issuers.map((i) => [i.name, i]));
        const seen = new Set();
        const roots = [];
        for (const i of issuers) {
            for (const r of i.material.roots) {
                if (seen.has(r.fingerprint256))
                    continue;
                seen.add(r.fingerprint256);
                roots.push(r);
            }
        }
        this.roots = roots;
        this.rootBundlePem = roots.map(certToPem).join('');
        this.anchors = [...issuers.flatMap((i) => i.material.intermediates), ...roots];
        this.anchorsPem = this.anchors.map(certToPem).join('');
    }
    get default() {
        return this.byName.get('default');
    }
    get all() {
        return [...this.byName.values()];
    }
    has(name) {
        return this.byName.has(name);
    }
    /** The named issuer; a policy naming an unknown one is our misconfiguration, not the caller's. */
    get(name) {
        const i = this.byName.get(name);
        if (!i)
            throw new CaError('ISSUER_UNAVAILABLE', `issuer "${name}" chosen by policy is not configured`);
        return i;
    }
}
//# sourceMappingURL=registry.js.map