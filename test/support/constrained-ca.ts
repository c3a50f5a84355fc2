/**
 * CA certificates with name constraints, built with @peculiar/x509 (independent of meshcert's
 * own encoders): a root, an intermediate carrying the constraints, and a CA directory of them in
 * Istio's cacerts layout for loadCaDir.
 */
import { KeyObject } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { x509 } from '../fixtures/csr.js';
import { explicitTag, implicitPrimitive, sequence } from '../../src/x509/der.js';
import { ipToBytes } from '../../src/net/ip-text.js';

const ALG = { name: 'ECDSA', hash: 'SHA-256' } as EcdsaParams;
const GEN = { name: 'ECDSA', namedCurve: 'P-256' } as EcKeyGenParams;
const DAY_MS = 86_400_000;

/** One list of subtrees: domains (a leading "." for subdomains only), IP ranges as CIDR, DNs. */
export interface Subtrees {
  readonly dns?: readonly string[];
  readonly uri?: readonly string[];
  readonly ip?: readonly string[];
  readonly directoryName?: readonly string[];
}

export interface CaNode {
  readonly cert: x509.X509Certificate;
  readonly keys: CryptoKeyPair;
}

/** The NameConstraints extension (2.5.29.30): permittedSubtrees [0], excludedSubtrees [1]. */
export function nameConstraints(permitted: Subtrees, excluded: Subtrees = {}, critical = true): x509.Extension {
  const bases = (s: Subtrees): Buffer[] => [
    ...(s.dns ?? []).map((d) => implicitPrimitive(2, Buffer.from(d, 'latin1'))),
    ...(s.uri ?? []).map((u) => implicitPrimitive(6, Buffer.from(u, 'latin1'))),
    ...(s.ip ?? []).map((cidr) => implicitPrimitive(7, ipRange(cidr))),
    ...(s.directoryName ?? []).map((dn) => explicitTag(4, Buffer.from(new x509.Name(dn).toArrayBuffer()))),
  ];
  const list = (tag: number, s: Subtrees): Buffer[] => {
    const b = bases(s);
    return b.length > 0 ? [explicitTag(tag, ...b.map((base) => sequence(base)))] : [];
  };
  return new x509.Extension('2.5.29.30', critical, new Uint8Array(sequence(...list(0, permitted), ...list(1, excluded))));
}

/** "10.0.0.0/8" as the 8 (or 32) octets of address and mask. */
function ipRange(cidr: string): Buffer {
  const [address, bits] = cidr.split('/') as [string, string];
  const ip = ipToBytes(address);
  const mask = Buffer.alloc(ip.length);
  for (let i = 0; i < Number(bits); i++) mask[i >> 3]! |= 0x80 >> (i & 7);
  return Buffer.concat([ip, mask]);
}

/**
 * A CA certificate: self-signed without `parent`; `extra` extensions beside the CA ones; `keys`
 * to reuse a key (a root re-issued with the same name and key, as in a rotation).
 */
export async function caCert(parent: CaNode | undefined, subject: string, extra: x509.Extension[] = [], pathLength?: number, reuse?: CryptoKeyPair): Promise<CaNode> {
  const keys = reuse ?? ((await crypto.subtle.generateKey(GEN, true, ['sign', 'verify'])) as CryptoKeyPair);
  const validity = { notBefore: new Date(Date.now() - 60_000), notAfter: new Date(Date.now() + 30 * DAY_MS) };
  const extensions = [
    new x509.BasicConstraintsExtension(true, pathLength, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
    await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ...(parent ? [await x509.AuthorityKeyIdentifierExtension.create(parent.cert)] : []),
    ...extra,
  ];
  const serialNumber = Buffer.from(crypto.getRandomValues(new Uint8Array(8))).toString('hex').replace(/^./, '1');
  const cert = parent
    ? await x509.X509CertificateGenerator.create({ serialNumber, subject, issuer: parent.cert.subjectName, publicKey: keys.publicKey, signingKey: parent.keys.privateKey, signingAlgorithm: ALG, extensions, ...validity })
    : await x509.X509CertificateGenerator.createSelfSigned({ serialNumber, name: subject, keys, signingAlgorithm: ALG, extensions, ...validity });
  return { cert, keys };
}

/** A leaf under `parent` with these SANs (any names: for checking what verifiers make of them); `keys` to know its key. */
export async function leafCert(parent: CaNode, sans: { uris?: string[]; dnsNames?: string[]; ipAddresses?: string[] }, keys?: CryptoKeyPair): Promise<x509.X509Certificate> {
  keys ??= (await crypto.subtle.generateKey(GEN, true, ['sign', 'verify'])) as CryptoKeyPair;
  const names: x509.JsonGeneralName[] = [
    ...(sans.uris ?? []).map((value) => ({ type: 'url' as const, value })),
    ...(sans.dnsNames ?? []).map((value) => ({ type: 'dns' as const, value })),
    ...(sans.ipAddresses ?? []).map((value) => ({ type: 'ip' as const, value })),
  ];
  return x509.X509CertificateGenerator.create({
    serialNumber: Buffer.from(crypto.getRandomValues(new Uint8Array(8))).toString('hex').replace(/^./, '1'),
    subject: '',
    issuer: parent.cert.subjectName,
    publicKey: keys.publicKey,
    signingKey: parent.keys.privateKey,
    signingAlgorithm: ALG,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
      new x509.SubjectAlternativeNameExtension(names, true),
    ],
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + DAY_MS),
  });
}

/**
 * A CA directory (root-cert.pem, ca-cert.pem, ca-key.pem, cert-chain.pem) whose intermediate
 * carries `constraints`, for loadCaDir.
 */
export async function writeConstrainedCaDir(dir: string, constraints: x509.Extension): Promise<void> {
  const root = await caCert(undefined, 'CN=constrained root');
  const inter = await caCert(root, 'CN=constrained intermediate', [constraints], 0);
  await writeCaDir(dir, [root], inter, [inter, root]);
}

/** A CA directory in Istio's cacerts layout: `roots` in root-cert.pem, `signing` and its key, `chain` in cert-chain.pem. */
export async function writeCaDir(dir: string, roots: readonly CaNode[], signing: CaNode, chain: readonly CaNode[]): Promise<void> {
  const key = KeyObject.from(signing.keys.privateKey).export({ type: 'pkcs8', format: 'pem' }).toString();
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'root-cert.pem'), roots.map((r) => `${r.cert.toString('pem')}\n`).join(''));
  writeFileSync(join(dir, 'ca-cert.pem'), `${signing.cert.toString('pem')}\n`);
  writeFileSync(join(dir, 'cert-chain.pem'), chain.map((c) => `${c.cert.toString('pem')}\n`).join(''));
  writeFileSync(join(dir, 'ca-key.pem'), key, { mode: 0o600 });
}
