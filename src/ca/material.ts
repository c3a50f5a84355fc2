import { createPrivateKey, type KeyObject, X509Certificate } from 'node:crypto';
import { join } from 'node:path';
import { ConfigError } from '../errors/ca-error.js';
import { accessProblem, MAX_PEM_BYTES, pathPresent, readTextFile } from '../fs/read-file.js';
import { issuerAndSubjectDer, oneLine } from '../x509/names.js';
import { certToPem, parsePemBundle } from '../x509/pem.js';
import { CA_FILES, caPath, RENEWING_DIR, replacingFrom, ROTATION_FILE, STAGED_SETS, type StagedSet } from './files.js';
import { readRotationState } from './rotation-state.js';
import { keyProblem, signatureProblem } from '../x509/chain-algorithms.js';
import { notCaReason } from '../x509/not-a-ca.js';
import { signedBy } from '../x509/verify-chain.js';

/** A CA loaded from Istio's plug-in layout and checked to be usable for signing. */
export interface CaMaterial {
  /** The certificate that signs leaves (ca-cert.pem). */
  readonly signingCert: X509Certificate;
  readonly signingKey: KeyObject;
  /** Signing certificate and intermediates up to (not including) the root, signing cert first. */
  readonly intermediates: readonly X509Certificate[];
  /** Every trusted root (root-cert.pem may hold several during rotation), less those in `expiredRoots`. */
  readonly roots: readonly X509Certificate[];
  /**
   * Roots in root-cert.pem that have expired and anchor nothing this CA signs, or nothing a current
   * root does not anchor too (an old root kept after a rotation or a migration): left out of the
   * trust bundle, for the loader to report. Go and OpenSSL refuse a chain through an expired root
   * (rustls-webpki and Java's PKIX do not check a trust anchor's dates, so serving it would keep
   * it trusted there); refusing to load over it would take the CA down for a file merely stale.
   */
  readonly expiredRoots: readonly X509Certificate[];
  /**
   * Response elements: each intermediate as its own PEM (ends with \n). A signing CA that is itself
   * one of the trusted roots is left out: the root bundle, the last element, already carries it, and
   * istiod answers [leaf, root] for its self-signed CA (a sidecar would otherwise send the root in
   * every handshake as part of its chain).
   */
  readonly intermediatesPem: readonly string[];
  /** The root bundle as one PEM string (the last response element). */
  readonly rootBundlePem: string;
  readonly notAfter: Date;
}

/**
 * True when the directory has none of a CA's files yet (so `ca init` and `ca.autoInit` may create
 * them). Any one of them, the root key or a rotation's state alone included, makes it a CA
 * directory: one to load (and be told what is missing), never one to write a new CA over.
 */
export function isCaDirEmpty(dir: string): boolean {
  return (Object.keys(CA_FILES) as Array<keyof typeof CA_FILES>).every((f) => !present(dir, caPath(dir, f))) && !present(dir, join(dir, ROTATION_FILE));
}

/** Whether a CA directory's file is there; one this process may not look for is a ConfigError saying so. */
function present(dir: string, path: string): boolean {
  try {
    return pathPresent(path);
  } catch (e) {
    throw new ConfigError(`CA directory ${dir}: cannot look for ${path.split('/').pop()}: ${accessProblem(e)}`);
  }
}

/**
 * Reads and validates a CA directory (Istio's cacerts layout). Every problem is a ConfigError with a
 * message saying what to fix. `signingDir`: where to read ca-cert.pem, ca-key.pem and
 * cert-chain.pem from instead (a staged set; root-cert.pem stays `dir`'s).
 */
export function loadCaDir(dir: string, now: Date = new Date(), signingDir: string = dir): CaMaterial {
  const read = (file: 'cert' | 'key' | 'chain' | 'root', required: boolean): string | undefined => {
    const from = file === 'root' ? dir : signingDir;
    const path = caPath(from, file);
    if (!present(from, path)) {
      if (required) throw new ConfigError(`CA directory ${from} has no ${path.split('/').pop()} (expected Istio's cacerts layout: ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem)`);
      return undefined;
    }
    try {
      return readTextFile(path, MAX_PEM_BYTES);
    } catch (e) {
      throw new ConfigError(`CA directory ${from}: cannot read ${path.split('/').pop()}: ${accessProblem(e)}`);
    }
  };
  return materialFromTexts({ cert: read('cert', true)!, key: read('key', true)!, chain: read('chain', false) ?? '', root: read('root', true)! }, now);
}

/**
 * A CA's material as the texts of its four files. A cluster primary hands its workers the texts of
 * the CA in force, so that every process signs with it, whatever the files on disk say since (a
 * rejected reload's, or files changed since the last reload).
 */
export interface CaTexts {
  readonly cert: string;
  readonly key: string;
  readonly chain: string;
  readonly root: string;
}

/** The texts `material` loads from again (materialFromTexts): expired roots kept, as the file had them. */
export function caTexts(material: CaMaterial): CaTexts {
  return {
    cert: material.signingCert.toString(),
    key: material.signingKey.export({ type: 'pkcs8', format: 'pem' }) as string,
    chain: material.intermediates.slice(1).map((c) => c.toString()).join(''),
    root: [...material.roots, ...material.expiredRoots].map((c) => c.toString()).join(''),
  };
}

/**
 * The root of `roots` that anchors a chain whose last certificate is `top`. Of several (a root
 * re-issued from the same key: Istio's self-signed rotation keeps the old copy beside the new), the
 * one that ends last: verifiers build the path through a valid copy, so the first one listed must
 * not cap leaves (or, once it expires, stop issuance) while a later copy still anchors the chain.
 */
export function anchorAmong(top: X509Certificate, roots: readonly X509Certificate[]): X509Certificate | undefined {
  let best: X509Certificate | undefined;
  for (const r of roots) if (signedBy(top, r) && (best === undefined || Date.parse(r.validTo) > Date.parse(best.validTo))) best = r;
  return best;
}

/** Parses and validates a CA from its files' texts (loadCaDir's checks, without the files). */
export function materialFromTexts(t: CaTexts, now: Date = new Date()): CaMaterial {
  const { cert: certPem, key: keyPem, chain: chainPem, root: rootPem } = t;
  const certs = parseOrFail(certPem, 'ca-cert.pem');
  if (certs.length !== 1) throw new ConfigError(`ca-cert.pem must hold exactly one certificate, found ${certs.length}`);
  const signingCert = certs[0]!;
  let signingKey: KeyObject;
  try {
    signingKey = createPrivateKey(keyPem);
  } catch {
    throw new ConfigError('ca-key.pem is not a readable PEM private key (PKCS#8, PKCS#1 or SEC1, unencrypted)');
  }
  const roots = parseOrFail(rootPem, 'root-cert.pem');
  const chain = parseOrFail(chainPem, 'cert-chain.pem');
  return buildMaterial(signingCert, signingKey, chain, roots, now);
}

/**
 * The CA in `dir` as serve loads it: loadCaDir, unless a step that replaces the signing files one
 * by one (rotate switch, renew-intermediate) was interrupted and left them mismatched. Then the
 * complete set it staged (and checked) before it began is loaded, with `interrupted` saying so, so
 * that a restart in between still serves; re-running the step completes it. Reads only.
 */
export function loadServedCaDir(dir: string, now: Date = new Date()): { material: CaMaterial; interrupted?: string } {
  try {
    return { material: loadCaDir(dir, now) };
  } catch (e) {
    const staged = replacingFrom(dir);
    if (staged === undefined || !(e instanceof ConfigError)) throw e;
    // next/ is a switch's only while rotation.json says one is under way: before it (a rotation
    // started, its new root not yet trusted everywhere) it must never sign.
    if (staged === 'next' && switchStep(dir) !== 'switching') throw e;
    let material: CaMaterial;
    try {
      material = loadCaDir(dir, now, join(dir, staged));
    } catch (stagedError) {
      throw new ConfigError(`${e.message}; the set an interrupted "meshcert ${STAGED_SETS[staged]}" staged in ${join(dir, staged)} does not load either: ${(stagedError as Error).message}`);
    }
    const step = STAGED_SETS[staged];
    return { material, interrupted: `an interrupted "meshcert ${step}" left the CA files in ${dir} half replaced (${e.message}); loaded the complete set it staged in ${join(dir, staged)} instead: re-run "meshcert ${step} --dir ${dir}" to complete it` };
  }
}

/**
 * What an operator must hear about a CA directory whose live files load (`signing`: their
 * ca-cert.pem), or undefined: a step marked as replacing the signing files but killed before it
 * replaced any (the CA before it, whole) or after it replaced them all (already the CA it
 * installs), a switch rotation.json says is under way with no replacement marked, or a renewal's
 * staging directory left behind (with its key). Each ends with the step to re-run.
 */
export function pendingStepNote(dir: string, signing: X509Certificate): string | undefined {
  const staged = replacingFrom(dir);
  if (staged !== undefined) {
    const step = `"meshcert ${STAGED_SETS[staged]}"`;
    return stagedCert(dir, staged)?.fingerprint256 === signing.fingerprint256
      ? `a ${step} was interrupted after it replaced the signing files: this is already the CA it installs; run it again to complete it`
      : `a ${step} was interrupted before it replaced the signing files: this is still the CA from before it; run it again to complete it`;
  }
  if (switchStep(dir) === 'switching') return `a "meshcert ca rotate switch" was interrupted: run it again to complete it, then finish`;
  // No replacement marked, but a renewal's staging left behind (next/ is rotate finish's to clear):
  // it holds a private key, which should not stay in the directory unnoticed.
  const where = join(dir, RENEWING_DIR);
  if (present(dir, where)) {
    // renew-intermediate refuses while a root rotation is under way: the step to name is the hand's.
    if (switchStep(dir) !== undefined) return `${where}, left by a "meshcert ca renew-intermediate", holds a private key; renew-intermediate does not run during a root rotation: remove ${where} by hand`;
    return stagedCert(dir, 'renewing')?.fingerprint256 === signing.fingerprint256
      ? `a "meshcert ca renew-intermediate" installed its intermediate but was interrupted before it removed ${where}, which holds a copy of the signing key: run it again to remove it (it makes no new key)`
      : `${where} holds a set a "meshcert ca renew-intermediate" staged but never installed, with its private key: run it again to renew (it stages a new set), or remove ${where}`;
  }
  return undefined;
}

/** The certificate a staged set holds, or undefined (none, or one that does not parse). */
function stagedCert(dir: string, staged: StagedSet): X509Certificate | undefined {
  try {
    return new X509Certificate(readTextFile(caPath(join(dir, staged), 'cert'), MAX_PEM_BYTES));
  } catch {
    return undefined;
  }
}

/** The step rotation.json records, or undefined (none, or one the rotate commands would refuse to read). */
function switchStep(dir: string): string | undefined {
  try {
    return readRotationState(dir)?.step;
  } catch {
    return undefined;
  }
}

/** Validates an in-memory CA (used by loadCaDir and by `ca init`). */
export function buildMaterial(
  signingCert: X509Certificate,
  signingKey: KeyObject,
  chain: readonly X509Certificate[],
  roots: readonly X509Certificate[],
  now: Date,
): CaMaterial {
  if (roots.length === 0) throw new ConfigError('root-cert.pem holds no certificate');
  if (!signingCert.ca) throw new ConfigError(`ca-cert.pem is not a CA certificate (${notCaReason(signingCert)})`);
  if (!signingCert.checkPrivateKey(signingKey)) throw new ConfigError('ca-key.pem does not match the public key of ca-cert.pem');
  const keyType = signingKey.asymmetricKeyType;
  if (keyType !== 'rsa' && keyType !== 'ec') throw new ConfigError(`CA key type ${keyType} is not supported: use RSA or ECDSA (P-256/P-384)`);

  // Intermediates: the signing cert, then chain entries that are not roots, deduplicated, in order.
  const isRoot = (c: X509Certificate): boolean => roots.some((r) => r.fingerprint256 === c.fingerprint256) || isSelfSigned(c);
  const intermediates: X509Certificate[] = [signingCert];
  for (const c of chain) {
    if (isRoot(c) || intermediates.some((i) => i.fingerprint256 === c.fingerprint256)) continue;
    intermediates.push(c);
  }
  // Node gives "Bad time value" for a date it cannot read; every comparison with it would be
  // false, so an unreadable notAfter would pass as never expiring and cap no leaf's lifetime.
  for (const c of [...intermediates, ...roots]) {
    if (Number.isNaN(Date.parse(c.validFrom)) || Number.isNaN(Date.parse(c.validTo))) {
      throw new ConfigError(`CA certificate "${oneLine(c.subject)}" has a validity date that cannot be read (notBefore "${c.validFrom}", notAfter "${c.validTo}"): re-issue it`);
    }
  }
  const top = intermediates[intermediates.length - 1]!;
  const expired = (c: X509Certificate): boolean => new Date(c.validTo) <= now;
  // Only a root that anchors the signing chain must be current; the bundle's others may be stale.
  // A root re-issued from the same key (Istio's self-signed rotation keeps the old one beside the
  // new) verifies the chain too: the expired copy is stale as long as a current one anchors it.
  const anchoredByCurrent = roots.some((r) => !expired(r) && signedBy(top, r));
  const expiredRoots = roots.filter((r) => expired(r) && (anchoredByCurrent || !signedBy(top, r)));
  const current = roots.filter((r) => !expiredRoots.includes(r));
  for (const c of [...intermediates, ...current]) {
    if (expired(c)) throw new ConfigError(`CA certificate "${oneLine(c.subject)}" expired on ${new Date(c.validTo).toISOString()}`);
    if (new Date(c.validFrom) > now) throw new ConfigError(`CA certificate "${oneLine(c.subject)}" is not valid before ${new Date(c.validFrom).toISOString()}`);
  }
  for (const r of roots) {
    if (!r.ca || !isSelfSigned(r)) throw new ConfigError(`root-cert.pem holds "${oneLine(r.subject)}", which is not a self-signed CA certificate${r.ca ? '' : ` (${notCaReason(r)})`}`);
  }
  // Each intermediate must be signed by the next one, the last by a root.
  for (let i = 0; i < intermediates.length; i++) {
    const child = intermediates[i]!;
    const parentInChain = i + 1 < intermediates.length;
    const parents = parentInChain ? [intermediates[i + 1]!] : current;
    const parent = parents.find((p) => signedBy(child, p));
    if (!parent) {
      // Signed by it, but OpenSSL does not take it as an issuer: say why, not "not signed".
      const notCa = parents.find((p) => !p.ca && child.verify(p.publicKey));
      if (notCa) throw new ConfigError(`${parentInChain ? 'cert-chain.pem' : 'root-cert.pem'} holds "${oneLine(notCa.subject)}", which is not a CA certificate (${notCaReason(notCa)})`);
      const what = parentInChain ? 'the next certificate in cert-chain.pem' : 'any certificate in root-cert.pem';
      throw new ConfigError(`CA chain does not verify: "${oneLine(child.subject)}" is not signed by ${what}`);
    }
    if (!issuerAndSubjectDer(child.raw).issuer.equals(issuerAndSubjectDer(parent.raw).subject)) {
      throw new ConfigError(
        `CA chain: the issuer name of "${oneLine(child.subject)}" is not byte-for-byte its parent's subject (different string encodings); Go clients and ztunnel would reject the chain. Re-issue it with the parent's subject copied exactly`,
      );
    }
    if (i > 0 && !child.ca) throw new ConfigError(`cert-chain.pem holds "${oneLine(child.subject)}", which is not a CA certificate (${notCaReason(child)})`);
  }
  // Leaves must not outlive any certificate of their chain, the anchoring root included.
  const anchor = anchorAmong(top, current) ?? top;
  // OpenSSL verified the chain above; the mesh's verifiers accept less (see chain-algorithms.ts).
  const isCurrentRoot = (c: X509Certificate): boolean => current.some((r) => r.fingerprint256 === c.fingerprint256);
  for (const c of new Set([...intermediates, anchor])) {
    const problem = keyProblem(c) ?? (isCurrentRoot(c) ? undefined : signatureProblem(c));
    if (problem) {
      throw new ConfigError(
        `CA certificate "${oneLine(c.subject)}" has ${problem}, which istio-agent (Go) or ztunnel (rustls) refuses: every certificate issued under it would be refused. Re-issue it`,
      );
    }
  }
  const notAfter = new Date(Math.min(...[...intermediates, anchor].map((c) => Date.parse(c.validTo))));
  return {
    signingCert,
    signingKey,
    intermediates,
    roots: current,
    expiredRoots,
    intermediatesPem: intermediates.filter((c) => !isCurrentRoot(c)).map(certToPem),
    rootBundlePem: current.map(certToPem).join(''),
    notAfter,
  };
}

export function isSelfSigned(c: X509Certificate): boolean {
  return c.subject === c.issuer && signedBy(c, c);
}

function parseOrFail(pem: string, file: string): X509Certificate[] {
  try {
    return parsePemBundle(pem);
  } catch {
    throw new ConfigError(`${file} holds a PEM block that is not a valid X.509 certificate`);
  }
}
