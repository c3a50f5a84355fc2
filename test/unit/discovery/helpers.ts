/**
 * Test certificates for the inventory, discovery, admin API and certs CLI tests: a CA and leaves
 * built with @peculiar/x509 (through test/fixtures/csr.ts, which must be imported first).
 */
import { X509Certificate, webcrypto } from 'node:crypto';
import { makeKeys, x509, derToPem, type CsrKeyType } from '../../fixtures/csr.js';

export const DAY = 86_400_000;

export interface TestCert {
  cert: X509Certificate;
  peculiar: x509.X509Certificate;
  pem: string;
  der: Buffer;
  keys: CryptoKeyPair;
  key: CsrKeyType;
  keyPem(): Promise<string>;
}

export interface CertSpec {
  /** Subject, @peculiar/x509 string form; default 'CN=test' for CAs and '' for leaves. */
  subject?: string;
  key?: CsrKeyType;
  ca?: boolean;
  issuer?: TestCert;
  uris?: string[];
  dns?: string[];
  ips?: string[];
  notBefore?: Date;
  notAfter?: Date;
  /** Hex. */
  serial?: string;
}

let serialCounter = 0x1000;

function signingAlgorithm(key: CsrKeyType): Algorithm | EcdsaParams {
  if (key.startsWith('rsa')) return { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' } as Algorithm;
  if (key === 'ed25519') return { name: 'Ed25519' };
  return { name: 'ECDSA', hash: key === 'ec384' ? 'SHA-384' : key === 'ec521' ? 'SHA-512' : 'SHA-256' } as EcdsaParams;
}

export async function makeTestCert(spec: CertSpec = {}): Promise<TestCert> {
  const key = spec.key ?? 'ec256';
  const keys = await makeKeys(key);
  const extensions: x509.Extension[] = [new x509.BasicConstraintsExtension(spec.ca === true, undefined, true)];
  if (spec.ca) {
    extensions.push(new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true));
  } else {
    extensions.push(new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true));
    extensions.push(new x509.ExtendedKeyUsageExtension(['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2']));
  }
  const names: x509.JsonGeneralName[] = [
    ...(spec.uris ?? []).map((value) => ({ type: 'url' as const, value })),
    ...(spec.dns ?? []).map((value) => ({ type: 'dns' as const, value })),
    ...(spec.ips ?? []).map((value) => ({ type: 'ip' as const, value })),
  ];
  if (names.length > 0) extensions.push(new x509.SubjectAlternativeNameExtension(names, !spec.subject));
  const now = Date.now();
  const common = {
    serialNumber: spec.serial ?? (serialCounter++).toString(16),
    notBefore: spec.notBefore ?? new Date(now - 60_000),
    notAfter: spec.notAfter ?? new Date(now + DAY),
    extensions,
  };
  const subject = spec.subject ?? (spec.ca ? 'CN=test' : '');
  const peculiar = spec.issuer
    ? await x509.X509CertificateGenerator.create({
        ...common,
        subject,
        issuer: spec.issuer.peculiar.subject,
        publicKey: keys.publicKey,
        signingKey: spec.issuer.keys.privateKey,
        signingAlgorithm: signingAlgorithm(spec.issuer.key),
      })
    : await x509.X509CertificateGenerator.createSelfSigned({ ...common, name: subject, keys, signingAlgorithm: signingAlgorithm(key) });
  const der = Buffer.from(peculiar.rawData);
  return {
    cert: new X509Certificate(der),
    peculiar,
    pem: derToPem(der, 'CERTIFICATE'),
    der,
    keys,
    key,
    async keyPem() {
      return derToPem(Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey)), 'PRIVATE KEY');
    },
  };
}

/** A root, an intermediate and a leaf signed by the intermediate. */
export async function makeChain(leaf: Omit<CertSpec, 'issuer' | 'ca'> = {}): Promise<{ root: TestCert; intermediate: TestCert; leaf: TestCert }> {
  const root = await makeTestCert({ ca: true, subject: 'O=meshcert-test, CN=Test Root', notAfter: new Date(Date.now() + 3650 * DAY) });
  const intermediate = await makeTestCert({ ca: true, subject: 'O=meshcert-test, CN=Test Intermediate', issuer: root, notAfter: new Date(Date.now() + 365 * DAY) });
  const l = await makeTestCert({ ...leaf, issuer: intermediate });
  return { root, intermediate, leaf: l };
}
