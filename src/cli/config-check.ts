import { servedClusterNames } from '../config/default-cluster.js';
import { policyWarnings } from '../policy/warnings.js';
import { existsSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import { devIssuerPaths } from '../dev/token-issuer.js';
import { MAX_PEM_BYTES, MAX_TOKEN_BYTES, readProblem, readRegularFile } from '../fs/read-file.js';
import { writeProblem } from '../fs/writable.js';
import { fromKubeSettings, kubeSource } from '../k8s/source.js';
import { loadConfigFile } from '../config/load.js';
import { assertServable } from '../config/servable.js';
import { formatDuration } from '../config/duration.js';
import { FileJwks } from '../auth/jwt.js';
import { caBundleProblem } from '../x509/pem.js';
import { ClientCertRevocations, farAheadWarning } from '../auth/revocations.js';
import { interruptedCreation } from '../ca/files.js';
import { isCaDirEmpty } from '../ca/material.js';
import { checkIstiodTlsNames, checkServingNames, loadIssuer, loadNamedIssuer, uncertifiableSans, uncertifiableTrustDomains } from '../ca/state.js';
import type { LocalIssuer } from '../issuer/local.js';
import { PolicyEngine } from '../policy/engine.js';
import { createLogger } from '../log/logger.js';
import { loadServingFiles } from '../serving/serving-cert.js';
import type { MeshcertConfig } from '../config/schema.js';
import { servingShape, shapeNotices } from '../runtime/auto-shape.js';
import { parse, UsageError } from './args.js';
import { inventoryTargetOf, openInventory } from './certs.js';

const USAGE = 'usage: meshcert config check [--no-files] FILE';

export async function configCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub !== 'check') throw new UsageError(USAGE);
  const { values, positionals } = parse(rest, { 'no-files': { type: 'boolean' } }, true);
  if (positionals.length !== 1) throw new UsageError(USAGE);
  const { config } = loadConfigFile(positionals[0]!, process.env, { streams: true });
  // Valid for `serve`, not just for the schema: what check accepts, the next start accepts.
  assertServable(config, positionals[0]!);
  // And the files it names, read as `serve` reads them at start and a reload re-reads them
  // (--no-files where they are not at hand: a CI job checking the file before it is deployed).
  const files = values['no-files'] ? { problems: [], notes: ['files not read (--no-files)'], warnings: [] } : await fileProblems(config);
  if (files.problems.length > 0) {
    console.error(`meshcert: ${positionals[0]} cannot be served with the files it names:\n${files.problems.map((p) => `  - ${p}`).join('\n')}`);
    return 1;
  }
  console.log(`${positionals[0]}: valid`);
  for (const n of files.notes) console.log(`  ${n}`);
  for (const w of [...files.warnings, ...policyWarnings(config.policy, servedClusterNames(config))]) console.error(`meshcert: warning: ${w}`);
  console.log(`  listen ${config.server.listen}, trust domain ${config.trustDomain}, CA ${config.ca.dir}${config.ca.autoInit ? ' (autoInit)' : ''}`);
  console.log(`  ${servingLine(config.server)}`);
  for (const n of shapeNotices(config.server)) if (n.level === 'warn') console.error(`meshcert: warning: on this machine: ${n.message}`);
  // The default rule as resolved (issuance.* or policy.default.lifetime, whichever the file sets).
  const def = config.policy.default;
  console.log(
    def.deny !== undefined
      ? `  default rule: deny (${def.deny}); ${config.policy.rules.length} rule(s)`
      : `  lifetime default ${formatDuration(def.lifetime.default)}, max ${formatDuration(def.lifetime.max)} (${def.lifetime.aboveMax} above max); ${config.policy.rules.length} rule(s)`,
  );
  console.log(`  clusters: ${config.auth.clusters.map((c) => c.name).join(', ') || '(none)'}${config.dev.tokenIssuer ? ' + DEV token issuer' : ''}`);
  const revocations = new ClientCertRevocations(config.auth.revokedClientCertificates);
  if (revocations.size > 0) {
    console.log(`  revoked client certificates: ${revocations.size} entr${revocations.size === 1 ? 'y' : 'ies'}${config.auth.clientCertificates ? '' : ' (auth.clientCertificates is off: no client certificate is accepted anyway)'}`);
  }
  // Valid, but most likely a typo in the year: said here, before a reload puts it in force.
  for (const r of revocations.farAhead(Date.now())) {
    console.error(`meshcert: warning: ${farAheadWarning(r)}`);
  }
  // The inventory is one of the things --no-files leaves alone (a CI job has no database at hand).
  if (!values['no-files']) for (const w of await unrevokedSerials(config, revocations)) console.error(`meshcert: warning: ${w}`);
  return 0;
}

/**
 * What the server would serve with: 'auto' values resolve from the CPUs and memory limit of the
 * machine `serve` runs on, so they are said as this machine would resolve them, and as 'auto'.
 */
function servingLine(server: MeshcertConfig['server']): string {
  const shape = servingShape(server);
  const auto = (setting: number | 'auto', name: string): string => (setting === 'auto' ? ` (${name} auto on this machine)` : '');
  const processes = shape.workers === 1 ? 'one process serving alone' : `a primary and ${shape.workers} workers`;
  return `serving: ${processes}${auto(server.workers, 'server.workers')}, ${shape.maxConcurrentStreams} streams per connection${auto(server.maxConcurrentStreams, 'server.maxConcurrentStreams')}`;
}

/**
 * The files `serve` reads at start: the CA directories (loaded and self-tested, never created),
 * server.tls.certFile/keyFile, and every jwksFile. Each problem with the message `serve` would stop on.
 */
async function fileProblems(config: MeshcertConfig): Promise<{ problems: string[]; notes: string[]; warnings: string[] }> {
  const problems: string[] = [];
  const notes: string[] = [];
  const loaded: LocalIssuer[] = [];
  const quiet = createLogger('silent');
  const dir = config.ca.dir!;
  let creation: ReturnType<typeof interruptedCreation> = 'none';
  let empty = false;
  try {
    creation = config.ca.autoInit ? interruptedCreation(dir) : 'none';
    empty = config.ca.autoInit && isCaDirEmpty(dir);
  } catch {
    // A directory this process may not look into: loadIssuer below says so.
  }
  const autoInitProblem = empty ? writeProblem(dir, 'directory') : null;
  if (autoInitProblem !== null) problems.push(`ca.dir ${dir}: ${autoInitProblem} (ca.autoInit creates the CA there)`);
  else if (empty) notes.push(`CA directory ${dir} is empty: serve creates a CA there when it starts (ca.autoInit; a hot reload does not, and refuses the file)`);
  else if (creation === 'in-progress') notes.push(`CA directory ${dir}: another process is creating a CA there; serve waits for it and loads it (ca.autoInit)`);
  else if (creation === 'cleared') {
    notes.push(`CA directory ${dir} holds a CA creation that was interrupted: serve clears it and creates the CA again (ca.autoInit)`);
  } else {
    // Never creates one: without autoInit an empty directory is refused with what to run.
    await loadIssuer(config, quiet, { allowInit: !config.ca.autoInit }).then(
      (issuer) => {
        loaded.push(issuer);
        notes.push(`CA ${dir}: loads and signs a chain that verifies`);
        // Each its own problem: a CA may refuse both meshcert's names and istiod's.
        for (const check of [checkServingNames, checkIstiodTlsNames]) {
          try {
            check(issuer, config);
          } catch (e) {
            problems.push((e as Error).message);
          }
        }
      },
      (e: unknown) => problems.push(`ca.dir: ${(e as Error).message}`),
    );
  }
  for (const i of config.issuers) {
    try {
      loaded.push(loadNamedIssuer(config, i, quiet));
    } catch (e) {
      problems.push((e as Error).message);
    }
  }
  const { certFile, keyFile } = config.server.tls;
  if (certFile !== undefined && keyFile !== undefined) {
    try {
      loadServingFiles(certFile, keyFile);
    } catch (e) {
      problems.push((e as Error).message);
    }
  }
  config.auth.clusters.forEach((c, ci) =>
    c.jwt.forEach((j, ji) => {
      if (j.jwksFile === undefined) return;
      try {
        new FileJwks(j.jwksFile);
      } catch (e) {
        problems.push(`auth.clusters.${ci}.jwt.${ji}: ${(e as Error).message}`);
      }
    }),
  );
  // The development issuer's files, as serve makes (once) and reads them at start.
  if (config.dev.tokenIssuer) {
    const dev = devIssuerPaths(config.dataDir);
    const devDir = dirname(dev.jwksFile);
    const again = `remove ${devDir} and serve makes a new one`;
    if (existsSync(devDir) && !statSync(devDir).isDirectory()) problems.push(`dev.tokenIssuer: ${devDir} is not a directory; serve keeps the development token issuer's key there (${again})`);
    else if (existsSync(dev.jwksFile) && existsSync(dev.keyFile)) {
      try {
        new FileJwks(dev.jwksFile);
      } catch (e) {
        problems.push(`dev.tokenIssuer: the development token issuer's key set: ${(e as Error).message} (${again})`);
      }
    }
  }
  // Where serve writes at start: the SQLite inventory (its file and journal files beside it).
  const inventory = config.inventory;
  if ((inventory.store ?? (inventory.url !== undefined ? 'postgres' : 'sqlite')) === 'sqlite' && inventory.path !== undefined) {
    const problem = writeProblem(inventory.path, 'file');
    if (problem !== null) problems.push(`inventory.path ${inventory.path}: ${problem}`);
  }
  const warnings = await kubernetesProblems(config, problems);
  // As serve warns at load: what the policy allows but a CA cannot certify.
  return { problems, notes, warnings: [...warnings, ...uncertifiableSans(new PolicyEngine(config.policy), loaded, config), ...uncertifiableTrustDomains(loaded, config)] };
}

/**
 * The Kubernetes API credentials serve reads at start. With ambient mode or the istio controllers,
 * the `kubernetes` section is built into a client configuration as serve builds it (its CA file,
 * token file, kubeconfig, or the pod's own credentials and environment), without a request. For
 * TokenReview: its CA file (serve stops without it), its token file (read again every minute:
 * serve starts, and every review fails until it can be read, so a warning), and for the pod's own
 * API server, KUBERNETES_SERVICE_HOST. Returns the warnings; problems go into `problems`.
 */
async function kubernetesProblems(config: MeshcertConfig, problems: string[]): Promise<string[]> {
  const warnings: string[] = [];
  const read = (file: string, bound: number, setting: string, into: string[], after = ''): Buffer | undefined => {
    try {
      return readRegularFile(file, bound);
    } catch (e) {
      into.push(`${setting} ${file}: ${readProblem(e)}${after}`);
      return undefined;
    }
  };
  if (config.ambient.enabled || config.istio.rootCertConfigMap.enabled || config.istio.istiodTls.enabled) {
    // Loaded only here: @kubernetes/client-node is large, and most checks need none of it.
    const { createKubeConfig } = await import('../k8s/client.js');
    try {
      fromKubeSettings(() => createKubeConfig(kubeSource(config)));
    } catch (e) {
      problems.push((e as Error).message);
    }
  }
  config.auth.clusters.forEach((c, i) => {
    const tr = c.tokenReview;
    if (!tr) return;
    if (tr.caFile) {
      const ca = read(tr.caFile, MAX_PEM_BYTES, `auth.clusters.${i}.tokenReview.caFile`, problems);
      const problem = ca && caBundleProblem(ca.toString('utf8'));
      if (problem) problems.push(`auth.clusters.${i}.tokenReview.caFile ${tr.caFile}: ${problem}`);
    }
    if (tr.tokenFile) read(tr.tokenFile, MAX_TOKEN_BYTES, `auth.clusters.${i}.tokenReview.tokenFile`, warnings, ': serve starts, but every review fails until it can be read');
    if (!tr.apiServer && !process.env.KUBERNETES_SERVICE_HOST) {
      problems.push(`auth.clusters.${i}.tokenReview uses the API server of the pod serve runs in, and KUBERNETES_SERVICE_HOST is not set: serve runs with this file only in a Kubernetes pod (check it there, or with --no-files elsewhere)`);
    }
  });
  return warnings;
}

/**
 * A serial in auth.revokedClientCertificates that is mistyped, or whose certificate the entry's
 * selectors or time do not match, refuses nothing, silently: each is looked up in the inventory
 * the file configures, and what would not be refused is said (warnings; the file stays valid).
 */
async function unrevokedSerials(config: MeshcertConfig, revocations: ClientCertRevocations): Promise<string[]> {
  const listed = config.auth.revokedClientCertificates.flatMap((e, i) => (e.serials ?? []).map((serial, j) => ({ at: `auth.revokedClientCertificates[${i}].serials[${j}] ${serial}`, serial })));
  if (listed.length === 0) return [];
  let store: Awaited<ReturnType<typeof openInventory>>;
  const cannot = (why: string): string[] => [`cannot look the revoked serials up in the inventory: ${why}`];
  try {
    const target = inventoryTargetOf(config, { configured: true });
    // Said here without the certs commands' hint (--config, --db): this file's inventory section names it.
    if (target.store.kind === 'sqlite' && !existsSync(target.store.path)) return cannot(`no inventory at ${target.label} (the file's inventory section)`);
    store = await openInventory(target, true);
  } catch (e) {
    if (config.inventory.store === 'none') return cannot('the inventory is disabled in this file (inventory.store: none)');
    return cannot((e as Error).message);
  }
  const warnings: string[] = [];
  try {
    for (const { at, serial } of listed) {
      const rec = await store.get(serial);
      if (!rec) warnings.push(`${at} is no certificate in the inventory: a mistyped serial refuses nothing`);
      else if (rec.spiffeId === null) warnings.push(`${at} is a certificate with no SPIFFE ID, which is no client certificate meshcert accepts anyway`);
      else if (!revocations.find(rec.spiffeId, rec.notBefore.getTime(), rec.serial)) {
        warnings.push(`${at} is a certificate for ${rec.spiffeId} that no entry refuses (its selectors or time do not match it)`);
      }
    }
    return warnings;
  } catch (e) {
    // As a store that cannot be opened: the file is valid, the rest of the lookup could not be made.
    return [...warnings, ...cannot((e as Error).message)];
  } finally {
    await store.close().catch(() => undefined);
  }
}
