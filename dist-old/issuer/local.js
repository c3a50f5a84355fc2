import { X509Certificate } from 'node:crypto';
import { buildLeaf, buildLeafAsync, derToPem, prepareLeafSigner, randomSerial } from '../x509/leaf.js';
/**
 * Signs leaves with a CA key held in this process. The per-CA encoding state is prepared once;
 * each call only encodes the TBS and signs it (see src/x509/leaf.ts for why not a generic library).
 */
export class LocalIssuer {
    name;
    material;
    signer;
    constructor(name, material) {
        this.name = name;
        this.material = material;
        this.signer = prepareLeafSigner(material.signingCert.raw, material.signingKey);
    }
    /** The latest NotAfter a leaf may have: never beyond the signing chain. */
    get notAfter() {
        return this.material.notAfter;
    }
    sign(req) {
        const params = this.leafParams(req);
        return this.signed(params, buildLeaf(this.signer, params));
    }
    /** sign() with the signature computed off the JavaScript thread (the request path uses this). */
    async signAsync(req) {
        const params = this.leafParams(req);
        return this.signed(params, await buildLeafAsync(this.signer, params));
    }
    leafParams(req) {
        return {
            serial: randomSerial(),
            // X.509 times have whole seconds; truncate here so what we report equals what we encode.
            notBefore: wholeSeconds(req.notBefore),
            notAfter: wholeSeconds(req.notAfter > this.notAfter ? this.notAfter : req.notAfter),
            spki: req.spki,
            uris: req.uris,
            dnsNames: req.dnsNames,
            ipAddresses: req.ipAddresses,
        };
    }
    signed(p, der) {
        return {
            der,
            pem: derToPem(der),
            serial: p.serial.toString('hex').replace(/^0+(?=.)/, ''),
            notBefore: p.notBefore,
            notAfter: p.notAfter,
            chainPem: [...this.material.intermediatesPem, this.material.rootBundlePem],
        };
    }
    /**
     * Signs a throwaway leaf and verifies it against the roots (SPIRE's X509CAValidator idea):
     * a CA that cannot produce a verifiable chain is refused at load, not discovered per request.
     */
    selfTest(spki, uri) {
        const now = new Date();
        const leaf = new X509Certificate(this.sign({ spki, uris: [uri], notBefore: now, notAfter: new Date(now.getTime() + 60_000) }).der);
        let child = leaf;
        for (const parent of this.material.intermediates) {
            if (!child.checkIssued(parent) || !child.verify(parent.publicKey))
                throw new Error(`issuer ${this.name}: self-test leaf does not verify against its chain`);
            child = parent;
        }
        if (!this.material.roots.some((r) => child.checkIssued(r) && child.verify(r.publicKey))) {
            throw new Error(`issuer ${this.name}: chain does not reach a trusted root`);
        }
    }
}
function wholeSeconds(d) {
    return new Date(Math.floor(d.getTime() / 1000) * 1000);
}
//# sourceMappingURL=local.js.map