import { readChildren, readElement } from './der.js';

/**
 * The issuer and subject Names of a certificate as their exact DER bytes. Go and rustls
 * (istio-agent, ztunnel) chain a certificate to its parent only when these bytes match; Node's
 * and OpenSSL's name comparisons are looser, so meshcert checks the bytes itself.
 */
export function issuerAndSubjectDer(certDer: Uint8Array): { issuer: Buffer; subject: Buffer } {
  const cert = readElement(certDer);
  const tbs = readChildren(certDer, cert)[0]!;
  const fields = readChildren(certDer, tbs);
  // [0] version is optional; then serial, signature algorithm, issuer, validity, subject.
  const i = fields[0]!.tag === 0xa0 ? 1 : 0;
  const slice = (n: number): Buffer => Buffer.from(certDer.subarray(fields[n]!.offset, fields[n]!.end));
  return { issuer: slice(i + 2), subject: slice(i + 4) };
}

/** A distinguished name as Node prints it (one RDN per line), on one line for messages and labels. */
export function oneLine(dn: string): string {
  return dn.replace(/\n/g, ', ');
}
