/**
 * The CA state a server runs with: every configured CA loaded and self-tested, and the policy.
 * Kept apart from the gRPC server so the primary process can validate and prepare it without
 * loading the transport.
 */
import { generateKeyPairSync } from 'node:crypto';
import { CaDirTaken, exposedKeyNotes, interruptedCreation, recoverInterruptedCreation, waitForCaCreation } from './files.js';
import { caTexts, isCaDirEmpty, loadServedCaDir, materialFromTexts, pendingStepNote, type CaMaterial, type CaTexts } from './material.js';
import type { MeshcertConfig } from '../config/schema.js';
import { ensureDevIssuer } from '../dev/token-issuer.js';
import { ConfigError } from '../errors/ca-error.js';
import { LocalIssuer } from '../issuer/local.js';
import { IssuerRegistry } from '../issuer/registry.js';
import type { Logger } from '../log/logger.js';
import { PolicyEngine } from '../policy/engine.js';
import { policyWarnings } from '../policy/warnings.js';
import { ClientCertRevocations, farAheadWarning } from '../auth/revocations.js';
import { trustDomainProblem, workloadSpiffeId } from '../x509/spiffe-id.js';
import { missingKeyIdentifiers } from '../x509/key-identifiers.js';
import { clusterTrustDomain, effectiveDefaultCluster, servedClusterNames, servedTrustDomains } from '../config/default-cluster.js';
import { istiodDnsNameOptions, istiodDnsNames } from '../config/istiod-names.js';
import { oneLine } from '../x509/names.js';

/** Loads (or, with ca.autoInit, creates) the CA and checks it can sign a verifiable chain. */
export async function loadIssuer(config: MeshcertConfig, logger: Logger, o: { allowInit?: boolean; quiet?: boolean; inForce?: CaTexts } = {}): Promise<LocalIssuer> {
  const dir = config.ca.dir!;
  if (o.inForce) return servedIssuer(dir, { material: inForceMaterial(o.inForce) }, config, logger, o.quiet);
  if (o.allowInit !== false && config.ca.autoInit) {
    // Until the directory holds a CA: another replica (or `ca init`) creating one in a shared
    // directory is waited for, and its CA is the one loaded.
    for (;;) {
      const waited = await waitForCaCreation(dir, () => logger.info({ dir }, 'another process is creating the CA in this directory (ca.autoInit); waiting to load it'));
      try {
        // A `ca init` (ours under ca.autoInit, or the CLI's) killed half way is finished or made again.
        if (recoverInterruptedCreation(dir, { stale: waited === 'stale' }) === 'cleared') logger.warn({ dir }, 'the CA directory holds the files of a CA creation that was interrupted; creating the CA again');
        if (isCaDirEmpty(dir)) {
          // Loaded only when needed: CA generation pulls in @peculiar/x509 (~20 MB per process).
          const { initCaDir } = await import('./init.js');
          await initCaDir({ dir, keyType: config.ca.keyType });
          logger.warn({ dir, keyType: config.ca.keyType }, 'created a new root and intermediate CA (ca.autoInit); move root-key.pem offline for production use');
        }
        break;
      } catch (e) {
        // Another process claimed the directory (or filled it) first: its CA is the one.
        if (!(e instanceof CaDirTaken)) throw e;
        logger.info({ dir }, 'another process is creating the CA in this directory (ca.autoInit); loading its CA');
      }
    }
  }
  if (isCaDirEmpty(dir)) {
    // Never on a reload: a directory that looks empty mid-update must not become a new root of trust.
    if (o.allowInit === false) throw new ConfigError(`CA directory ${dir} is empty; not creating a new CA on a reload`);
    throw new ConfigError(`CA directory ${dir} is empty: run "meshcert ca init --dir ${dir}", mount Istio's cacerts there, or set ca.autoInit: true`);
  }
  let served: ReturnType<typeof loadServedCaDir>;
  try {
    served = loadServedCaDir(dir);
  } catch (e) {
    // A `ca init` or `import-istiod` killed half way leaves files no CA loads from: say so.
    if (e instanceof ConfigError && interruptedCreation(dir) !== 'none') {
      throw new ConfigError(`${e.message} (a CA creation in ${dir} was interrupted: run "meshcert ca init --dir ${dir}" or "ca import-istiod" again, or set ca.autoInit: true)`);
    }
    // Which directory, as a named issuer's errors say (ca.dir may come from MESHCERT_CA_DIR).
    if (e instanceof ConfigError && !e.message.includes(dir)) throw new ConfigError(`CA directory ${dir}: ${e.message}`, { cause: e });
    throw e;
  }
  return servedIssuer(dir, served, config, logger, o.quiet);
}

/** The default issuer from its material, said and self-tested as every load does. */
function servedIssuer(dir: string, served: { material: CaMaterial; interrupted?: string }, config: MeshcertConfig, logger: Logger, quiet?: boolean): LocalIssuer {
  const issuer = new LocalIssuer('default', served.material);
  // A quiet load is one whose warnings another load says: the serving one after
  // prepareSharedState, or, for a cluster worker, its primary's.
  if (!quiet) {
    if (served.interrupted) logger.warn({ dir }, served.interrupted);
    else warnCaDirProblems(dir, served.material, logger);
    reportExpiredRoots(issuer, dir, logger);
  }
  selfTestTrustDomains(issuer, config);
  return issuer;
}

/** The default issuer's material from the texts a cluster primary sent (the CA in force). */
function inForceMaterial(texts: CaTexts): CaMaterial {
  try {
    return materialFromTexts(texts);
  } catch (e) {
    throw new ConfigError(`the CA in force, as the primary sent it: ${(e as Error).message}`);
  }
}

/** Every issuer's CA as its files' texts, by issuer name: what a cluster primary hands its workers (see CaTexts). */
export type CaSnapshot = Readonly<Record<string, CaTexts>>;

export function caSnapshot(state: Pick<CaState, 'issuers'>): CaSnapshot {
  return Object.fromEntries(state.issuers.all.map((i) => [i.name, caTexts(i.material)]));
}

/**
 * What the operator should know of a CA directory that loads: a step killed while the live files
 * load (see pendingStepNote; served as they are, but the step should be re-run), key files other
 * users can reach (exposedKeyNotes), and CA certificates strict verifiers refuse (missingKeyIdentifiers).
 */
function warnCaDirProblems(dir: string, material: CaMaterial, logger: Logger): void {
  const note = pendingStepNote(dir, material.signingCert);
  if (note) logger.warn({ dir }, `${note} (serving this CA meanwhile)`);
  for (const exposed of exposedKeyNotes(dir)) logger.warn({ dir }, exposed);
  for (const missing of missingKeyIdentifiers([...material.intermediates, ...material.roots])) logger.warn({ dir }, missing);
}

/**
 * meshcert's own serving certificate (without server.tls.certFile) comes from the default CA: a
 * chain whose name constraints leave out its names would fail every agent's handshake, so such a
 * CA is refused at start and on reload, and by `config check`.
 */
export function checkServingNames(issuer: LocalIssuer, config: MeshcertConfig): void {
  const { certFile, dnsNames, ipAddresses } = config.server.tls;
  if (certFile) return;
  const refused = issuer.refusedNames({ uris: [], dnsNames, ipAddresses });
  if (refused.length > 0) {
    throw new ConfigError(
      `server.tls.dnsNames/ipAddresses (by default localhost, 127.0.0.1 and ::1): the default CA cannot certify the serving certificate's names, so agents would refuse the TLS handshake: ${refused.join('; ')}; set names the CA allows, or give server.tls.certFile and keyFile`,
    );
  }
}

/**
 * With istio.istiodTls on, istiod's serving certificate (Secret istiod-tls) comes from the default
 * CA too: a chain whose name constraints leave out istiod's names would make the controller fail
 * at every renewal and istiod's clients refuse it, so such a CA is refused at start and on reload,
 * and by `config check`, as for meshcert's own names.
 */
export function checkIstiodTlsNames(issuer: LocalIssuer, config: MeshcertConfig): void {
  const { enabled, namespace } = config.istio.istiodTls;
  if (!enabled) return;
  const refused = issuer.refusedNames({ uris: [], dnsNames: istiodDnsNames(namespace, istiodDnsNameOptions(config.istio.istiodTls)) });
  if (refused.length > 0) {
    throw new ConfigError(
      `istio.istiodTls: the default CA cannot certify istiod's names (from istio.istiodTls.namespace "${namespace}", revisions and extraDnsNames), so no istiod-tls Secret could be issued: ${refused.join('; ')}; use a CA whose name constraints permit them, or turn istio.istiodTls off`,
    );
  }
}

/** Both name checks of the certificates meshcert issues from the default CA for servers (its own and istiod's). */
export function checkServerNames(issuer: LocalIssuer, config: MeshcertConfig): void {
  checkServingNames(issuer, config);
  checkIstiodTlsNames(issuer, config);
}

/**
 * State that must exist once before workers start (they would race to create it):
 * the CA under ca.autoInit, and the dev issuer's key.
 */
export async function prepareSharedState(config: MeshcertConfig, logger: Logger): Promise<LocalIssuer> {
  // Quiet: the CA state loaded next reports what it finds, once.
  const issuer = await loadIssuer(config, logger, { quiet: true });
  checkServerNames(issuer, config);
  if (config.dev.tokenIssuer) await ensureDevIssuer(config.dataDir);
  return issuer;
}

/** What a reload swaps: the CAs, the policy and the revoked client certificates. Built whole, then swapped in one assignment. */
export interface CaState {
  readonly issuers: IssuerRegistry;
  readonly policy: PolicyEngine;
  readonly revocations: ClientCertRevocations;
}

/**
 * Loads every configured CA (default first; autoInit applies to it only), the policy and the
 * revocations. `inForce`: the CAs as a cluster primary sent them, used instead of their files.
 */
export async function loadCaState(config: MeshcertConfig, logger: Logger, o: { reload?: boolean; inForce?: CaSnapshot } = {}): Promise<CaState> {
  // A cluster worker loads what its primary loaded (and checked, and warned about) just before:
  // the warnings are said once, by the primary, not once more per worker.
  const quiet = o.inForce !== undefined;
  const issuers = [await loadIssuer(config, logger, { allowInit: !o.reload, quiet, ...(o.inForce?.default ? { inForce: o.inForce.default } : {}) })];
  checkServerNames(issuers[0]!, config);
  for (const i of config.issuers) issuers.push(loadNamedIssuer(config, i, logger, o.inForce?.[i.name], quiet));
  const revocations = new ClientCertRevocations(config.auth.revokedClientCertificates);
  const policy = new PolicyEngine(config.policy);
  if (!quiet) {
    for (const r of revocations.farAhead(Date.now())) logger.warn({ entry: r.index, issuedBefore: r.issuedBefore.toISOString() }, farAheadWarning(r));
    for (const w of uncertifiableSans(policy, issuers, config)) logger.warn(w);
    for (const w of uncertifiableTrustDomains(issuers, config)) logger.warn(w);
    for (const w of policyWarnings(config.policy, servedClusterNames(config))) logger.warn(w);
  }
  return { issuers: new IssuerRegistry(issuers), policy, revocations };
}

/**
 * Policy rules that allow DNS names or IP addresses their CA cannot certify: requests for them
 * are refused at issuance (CSR_FORBIDDEN_EXTENSION). Said at load as warnings, one per set of
 * refusals with the rules that share it (rules inherit the default's extraSans). A sample check:
 * DNS templates are rendered for the literal values of each rule's match lists, else namespace
 * "ns", service account "sa", the mesh's trust domain and the default cluster, so a name a glob
 * admits can still be refused; IP entries are checked whole, and apart from the DNS names (Go
 * wants one path for a whole leaf, so a leaf with both may still be refused).
 */
export function uncertifiableSans(policy: PolicyEngine, issuers: readonly LocalIssuer[], config: MeshcertConfig): string[] {
  // As serve decides an empty clusterid, and the trust domain a caller of that cluster has.
  const cluster = effectiveDefaultCluster(config, servedClusterNames(config));
  const trustDomain = clusterTrustDomain(config, cluster);
  const byProblem = new Map<string, string[]>();
  for (const s of policy.extraSanSamples({ namespace: 'ns', serviceAccount: 'sa', trustDomain, cluster })) {
    const issuer = issuers.find((i) => i.name === s.issuer);
    if (!issuer) continue; // the config names only issuers it has; one that failed to load was said already
    const refused = new Set<string>();
    for (const { caller, dnsNames } of s.rendered) {
      let uri: string;
      try {
        uri = workloadSpiffeId(caller.trustDomain, caller.namespace, caller.serviceAccount);
      } catch {
        continue; // a match value that names no workload: no caller gets it
      }
      for (const r of issuer.refusedNames({ uris: [uri], dnsNames })) refused.add(r);
    }
    for (const r of issuer.refusedIpRanges(s.ipRanges)) refused.add(r);
    if (refused.size === 0) continue;
    const key = `its CA "${s.issuer}" cannot certify: ${[...refused].join('; ')}`;
    byProblem.set(key, [...(byProblem.get(key) ?? []), s.rule]);
  }
  return [...byProblem].map(([problem, rules]) => `policy rule${rules.length > 1 ? 's' : ''} ${rules.map((r) => `"${r}"`).join(', ')} allow${rules.length > 1 ? '' : 's'} names ${problem}; requests for them are refused`);
}

/**
 * Issuers whose name constraints leave out a cluster's trust domain (a rule may send that
 * cluster's callers to another issuer, so not refused): said at load, since a caller of that
 * trust domain whose rule picks the issuer is refused (UNAVAILABLE).
 */
export function uncertifiableTrustDomains(issuers: readonly LocalIssuer[], config: MeshcertConfig): string[] {
  const tested = new Set([config.trustDomain, ...config.trustDomainAliases]);
  const out: string[] = [];
  for (const issuer of issuers) {
    for (const td of servedTrustDomains(config)) {
      if (tested.has(td)) continue;
      const refused = issuer.refusedUris([selfTestUri(td)]);
      if (refused.length > 0) out.push(`issuer "${issuer.name}" cannot certify trust domain ${td}: ${refused.join('; ')}; a caller of that trust domain whose policy rule uses this issuer is refused (UNAVAILABLE)`);
    }
  }
  return out;
}

/** One of `issuers`: loaded from its directory and self-tested (never created). */
export function loadNamedIssuer(config: MeshcertConfig, i: MeshcertConfig['issuers'][number], logger: Logger, inForce?: CaTexts, quiet = false): LocalIssuer {
  let issuer: LocalIssuer;
  try {
    const { material, interrupted } = inForce ? { material: materialFromTexts(inForce), interrupted: undefined } : loadServedCaDir(i.dir);
    if (!quiet) {
      if (interrupted) logger.warn({ issuer: i.name, dir: i.dir }, interrupted);
      else warnCaDirProblems(i.dir, material, logger);
    }
    issuer = new LocalIssuer(i.name, material);
  } catch (e) {
    throw new ConfigError(`issuer "${i.name}" (${i.dir}): ${(e as Error).message}`);
  }
  if (!quiet) reportExpiredRoots(issuer, i.dir, logger);
  selfTestTrustDomains(issuer, config);
  return issuer;
}

/** A stale root left in root-cert.pem is not served; the operator should remove it. */
function reportExpiredRoots(issuer: LocalIssuer, dir: string, logger: Logger): void {
  for (const r of issuer.material.expiredRoots) {
    logger.warn(
      { issuer: issuer.name, dir, subject: oneLine(r.subject), notAfter: new Date(r.validTo).toISOString() },
      'root-cert.pem holds an expired root that anchors nothing this CA signs; it is left out of the trust bundle (remove it from the file)',
    );
  }
}

/**
 * Signs and verifies a throwaway leaf for the trust domain (what `serve` runs at every load): throws
 * a ConfigError when Go or OpenSSL would refuse the chain (pathLen, a CA's extended key usage, name
 * constraints excluding the trust domain).
 */
export function selfTestCa(issuer: LocalIssuer, trustDomain: string, key: Buffer = selfTestKey()): void {
  const problem = trustDomainProblem(trustDomain);
  if (problem) throw new ConfigError(`trust domain ${JSON.stringify(trustDomain)}: ${problem}`);
  try {
    issuer.selfTest(key, selfTestUri(trustDomain));
  } catch (e) {
    throw new ConfigError((e as Error).message, { cause: e });
  }
}

/**
 * The self-test for the trust domain and each of its aliases: meshcert signs for an alias too (a
 * workload whose token names it), and a CA whose name constraints permit only the primary would
 * have those leaves refused by every Go verifier, found only when the handshakes fail. A
 * cluster's own trust domain is not required of every CA (a rule may send that cluster's callers
 * to another issuer): one a CA cannot certify is said at load (uncertifiableTrustDomains) and its
 * identities refused when asked for (see Authority).
 */
function selfTestTrustDomains(issuer: LocalIssuer, config: MeshcertConfig): void {
  const key = selfTestKey();
  for (const td of [config.trustDomain, ...config.trustDomainAliases]) selfTestCa(issuer, td, key);
}

/** The SPIFFE ID a CA's self-test signs for, in a trust domain. */
function selfTestUri(trustDomain: string): string {
  return `spiffe://${trustDomain}/ns/meshcert-self-test/sa/probe`;
}

function selfTestKey(): Buffer {
  return generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'der' });
}

