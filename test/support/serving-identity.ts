import { webcrypto } from 'node:crypto';
import { derToPem, x509 } from '../fixtures/csr.js';

/** A self-signed P-256 serving certificate for localhost, for tests of the bare gRPC transport. */
export async function localhostIdentity(): Promise<{ certChainPem: string; keyPem: string }> {
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
  const keys = await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify']);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    name: 'CN=localhost',
    keys,
    signingAlgorithm: alg,
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 3_600_000),
    extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'dns', value: 'localhost' }])],
  });
  return {
    certChainPem: cert.toString('pem'),
    keyPem: derToPem(new Uint8Array(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey)), 'PRIVATE KEY'),
  };
}
