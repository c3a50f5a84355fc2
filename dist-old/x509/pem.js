import { X509Certificate } from 'node:crypto';
const CERT_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;
/** Splits a PEM bundle into one normalised PEM string per certificate, each ending with "\n". */
export function splitPemCertificates(pem) {
    return (pem.match(CERT_BLOCK) ?? []).map((block) => `${block.trim()}\n`);
}
/** Parses every certificate of a PEM bundle; throws when a block is not a certificate. */
export function parsePemBundle(pem) {
    return splitPemCertificates(pem).map((p) => new X509Certificate(p));
}
export function certToPem(cert) {
    return cert.toString().endsWith('\n') ? cert.toString() : `${cert.toString()}\n`;
}
//# sourceMappingURL=pem.js.map