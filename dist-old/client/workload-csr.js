import 'reflect-metadata'; // @peculiar/x509 (tsyringe) needs the Reflect polyfill loaded first
import { KeyObject, webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';
x509.cryptoProvider.set(webcrypto);
const ALGS = {
    rsa2048: { name: 'RSASSA-PKCS1-v1_5', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' },
    ec256: { name: 'ECDSA', namedCurve: 'P-256' },
    ec384: { name: 'ECDSA', namedCurve: 'P-384' },
};
/**
 * A CSR shaped as istio-agent builds it: subject with one empty Organization (O=), no CN, and one
 * critical URI SAN with the SPIFFE ID; RSA-2048 by default, ECDSA when ECC_SIGNATURE_ALGORITHM=ECDSA.
 * ztunnel's shape (`emptySubject`) has no subject at all.
 */
export async function buildWorkloadCsr(spiffeId, keyType = 'rsa2048', opts = {}) {
    const alg = ALGS[keyType];
    const keys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify']));
    const signingAlgorithm = alg.name === 'ECDSA' ? { name: 'ECDSA', hash: keyType === 'ec384' ? 'SHA-384' : 'SHA-256' } : alg;
    const csr = await x509.Pkcs10CertificateRequestGenerator.create({
        name: opts.emptySubject ? [] : [{ O: [''] }],
        keys,
        signingAlgorithm,
        extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'url', value: spiffeId }], true)],
    });
    const privateKey = KeyObject.from(keys.privateKey);
    return { csrPem: csr.toString('pem'), privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() };
}
//# sourceMappingURL=workload-csr.js.map