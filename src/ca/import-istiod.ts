/**
 * Migration from istiod's CA: copies its CA material into a meshcert CA directory, so the same
 * root keeps signing and workloads keep trusting each other through the move.
 *
 * The source folder holds the keys of one of istiod's Secrets, one file per key:
 *  - `cacerts` (the plug-in CA): ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem;
 *  - `istio-ca-secret` (istiod's self-signed CA): ca-cert.pem, ca-key.pem, and optionally
 *    cert-chain.pem and root-cert.pem (often empty). ca-cert.pem is then the root itself, and
 *    meshcert signs with the root: root-cert.pem = ca-cert.pem.
 * An optional root-key.pem (as Istio's tools/certs makefiles write) is copied too, for
 * `ca renew-intermediate`.
 *
 * Export them with, for each key:
 *   kubectl -n istio-system get secret istio-ca-secret -o jsonpath='{.data.ca-cert\.pem}' | base64 -d > ca-cert.pem
 */
import { createPrivateKey, type KeyObject, type X509Certificate } from 'node:crypto';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError } from '../errors/ca-error.js';
import { certToPem, parsePemBundle, pemBlocks } from '../x509/pem.js';
import { beginCaCreation, CaDirTaken, CA_FILES, caPath, endCaCreation, makeDirectory, readCaTextIfPresent, recoverInterruptedCreation } from './files.js';
import { isCaDirEmpty, isSelfSigned, loadCaDir, type CaMaterial } from './material.js';
import { ROTATION_FILE, validateLayout, writeLayout } from './rotate.js';
import { oneLine } from '../x509/names.js';
import { signedBy } from '../x509/verify-chain.js';
import { LocalIssuer } from '../issuer/local.js';
import { selfTestCa } from './state.js';

export type IstiodCaKind = 'cacerts' | 'istiod-self-signed';

export interface ImportIstiodOptions {
  /** Folder holding the exported Secret keys. */
  readonly from: string;
  /** meshcert CA directory to create (must not hold a CA). */
  readonly dir: string;
  /** The mesh's trust domain, for the self-test `serve` runs on the result. Default cluster.local. */
  readonly trustDomain?: string;
  readonly now?: Date;
}

export interface ImportIstiodResult {
  readonly kind: IstiodCaKind;
  readonly material: CaMaterial;
  /** Files written into the CA directory. */
  readonly files: readonly string[];
  readonly notes: readonly string[];
}

export const EXPORT_HINT = `export istiod's CA with, for each key (istio-ca-secret for istiod's self-signed CA, cacerts for a plug-in CA):
  kubectl -n istio-system get secret istio-ca-secret -o jsonpath='{.data.ca-cert\\.pem}' | base64 -d > ca-cert.pem
  kubectl -n istio-system get secret istio-ca-secret -o jsonpath='{.data.ca-key\\.pem}' | base64 -d > ca-key.pem
  (and cert-chain.pem, root-cert.pem when the Secret has them)`;

export function importIstiod(o: ImportIstiodOptions): ImportIstiodResult {
  const now = o.now ?? new Date();
  const { from, dir } = o;
  if (!existsSync(from) || !statSync(from).isDirectory()) throw new ConfigError(`${from} is not a directory; ${EXPORT_HINT}`);
  recoverInterruptedCreation(dir);
  if (!isCaDirEmpty(dir) || existsSync(join(dir, ROTATION_FILE))) throw new ConfigError(`CA directory ${dir} already holds a CA; refusing to overwrite it`);

  const certPem = readSource(from, 'cert');
  const keyPem = readSource(from, 'key');
  if (certPem === undefined) throw new ConfigError(`${from} has no ca-cert.pem (or it is empty); ${EXPORT_HINT}`);
  if (keyPem === undefined) throw new ConfigError(`${from} has no ca-key.pem (or it is empty); ${EXPORT_HINT}`);
  const chainPem = readSource(from, 'chain');
  const rootPem = readSource(from, 'root');
  const rootKeyPem = readSource(from, 'rootKey');

  const certs = parse(certPem, 'ca-cert.pem');
  if (certs.length !== 1) throw new ConfigError(`${from}/ca-cert.pem must hold exactly one certificate, found ${certs.length}`);
  const signing = certs[0]!;
  const selfSigned = isSelfSigned(signing);
  const kind: IstiodCaKind = selfSigned ? 'istiod-self-signed' : 'cacerts';
  const notes: string[] = [];

  // root-cert.pem: as exported; for a self-signed CA it must (and will) hold ca-cert.pem.
  let roots = rootPem === undefined ? [] : parse(rootPem, 'root-cert.pem');
  if (selfSigned && !roots.some((r) => r.fingerprint256 === signing.fingerprint256)) {
    roots = [...roots, signing];
    notes.push(rootPem === undefined ? 'root-cert.pem = ca-cert.pem (istiod self-signed CA: the signing certificate is the root)' : 'added ca-cert.pem (the self-signed signing root) to root-cert.pem');
  }
  if (roots.length === 0) throw new ConfigError(`${from} has no root-cert.pem and ca-cert.pem is not self-signed: export root-cert.pem too (the cacerts Secret has it)`);

  // cert-chain.pem: the exported certificates, written again from their parse (as the others are);
  // else the signing certificate, plus its root when the root signed it directly.
  let chain = chainPem === undefined ? undefined : parse(chainPem, 'cert-chain.pem').map(certToPem).join('');
  if (chain === undefined) {
    const issuer = roots.find((r) => signedBy(signing, r));
    chain = certToPem(signing) + (issuer && !selfSigned ? certToPem(issuer) : '');
    notes.push('cert-chain.pem was not exported: written from ca-cert.pem' + (issuer && !selfSigned ? ' and its root' : ''));
  }

  if (rootKeyPem !== undefined) {
    let rootKey: KeyObject;
    try {
      rootKey = createPrivateKey(rootKeyPem);
    } catch {
      throw new ConfigError(`${from}/root-key.pem is not a readable PEM private key`);
    }
    if (!roots.some((r) => r.checkPrivateKey(rootKey))) throw new ConfigError(`${from}/root-key.pem matches none of the roots; leave it out, or export the right one`);
  }

  const files = { cert: certToPem(signing), key: withNewline(keyPem), chain: withNewline(chain), root: roots.map(certToPem).join(''), ...(rootKeyPem !== undefined ? { rootKey: withNewline(rootKeyPem) } : {}) };
  // Checked before the directory is made: a refused import leaves nothing behind (mkdir -p made
  // its parents too).
  const staged = validateLayout(dir, files, now, `cannot import from ${from}`);
  try {
    selfTestCa(new LocalIssuer('default', staged), o.trustDomain ?? 'cluster.local');
  } catch (e) {
    throw new ConfigError(`cannot import from ${from}: ${(e as Error).message}`);
  }
  makeDirectory(dir);
  beginCaCreation(dir);
  // A server under ca.autoInit may have made one there while this import was checked: it stands.
  if (!isCaDirEmpty(dir)) {
    endCaCreation(dir);
    throw new CaDirTaken(`CA directory ${dir} already holds a CA (created meanwhile); refusing to overwrite it`);
  }
  writeLayout(dir, files);
  endCaCreation(dir);
  const material = loadCaDir(dir, now);
  notes.push(
    selfSigned
      ? `meshcert signs with istiod's self-signed root "${oneLine(signing.subject)}" itself; to move to a root plus intermediate later, use "meshcert ca rotate start"`
      : `meshcert signs with "${oneLine(signing.subject)}" under the same root(s) as istiod`,
  );
  return { kind, material, files: Object.keys(files).map((f) => CA_FILES[f as keyof typeof CA_FILES]), notes };
}

function readSource(from: string, file: keyof typeof CA_FILES): string | undefined {
  const path = caPath(from, file);
  const text = readCaTextIfPresent(path);
  if (text === undefined || text.trim() === '') return undefined;
  if (!text.includes('-----BEGIN')) {
    const decoded = /^[A-Za-z0-9+/=\s]+$/.test(text) ? Buffer.from(text, 'base64').toString('utf8') : '';
    if (decoded.includes('-----BEGIN')) throw new ConfigError(`${path} is still base64-encoded (as in the Secret's data): decode it with base64 -d`);
    throw new ConfigError(`${path} is not PEM`);
  }
  // A certificate file is written readable by all: a key pasted into one (a combined PEM, the wrong
  // Secret key) must not be carried into the CA directory, nor silently dropped.
  if (file === 'cert' || file === 'chain' || file === 'root') {
    const other = pemBlocks(text).find((b) => b.label !== 'CERTIFICATE');
    if (other) {
      const what = other.label.includes('PRIVATE KEY') ? 'a private key' : `a PEM block other than a certificate`;
      throw new ConfigError(`${path} holds ${what} (${other.label}): it may hold certificates only; ${other.label.includes('PRIVATE KEY') ? 'export the key into its own file and remove it from this one' : 'remove that block'}`);
    }
  }
  return text;
}

function parse(text: string, file: string): X509Certificate[] {
  try {
    return parsePemBundle(text);
  } catch {
    throw new ConfigError(`${file} holds a PEM block that is not a valid X.509 certificate`);
  }
}

function withNewline(s: string): string {
  return s.endsWith('\n') ? s : `${s}\n`;
}
