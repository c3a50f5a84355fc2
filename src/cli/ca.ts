import type { X509Certificate } from 'node:crypto';
import { resolve } from 'node:path';
import { formatDuration } from '../config/duration.js';
import { importIstiod } from '../ca/import-istiod.js';
import { initCaDir } from '../ca/init.js';
import { loadServedCaDir, pendingStepNote } from '../ca/material.js';
import { exposedKeyNotes } from '../ca/files.js';
import { missingKeyIdentifiers } from '../x509/key-identifiers.js';
import { selfTestCa } from '../ca/state.js';
import { checkOrganization } from '../ca/generate.js';
import { trustDomainProblem } from '../x509/spiffe-id.js';
import { LocalIssuer } from '../issuer/local.js';
import { renewIntermediate, rotateFinish, rotateStart, rotateSwitch, rotationStatus, until, type StepResult } from '../ca/rotate.js';
import { parse, spanFlag, UsageError } from './args.js';
import { oneLine } from '../x509/names.js';

const KEY_TYPES = ['ec256', 'ec384', 'rsa2048', 'rsa3072', 'rsa4096'] as const;

export const CA_USAGE = `meshcert ca init --dir DIR [--key-type ec256|ec384|rsa2048|rsa3072|rsa4096] [--org NAME]
  Creates a root (10 years) and an intermediate (1 year) in Istio's cacerts layout; key files are 0600.
  --org: at most 64 characters (X.520), cut short in the certificates' CNs to keep them within 64.
meshcert ca check --dir DIR [--trust-domain cluster.local]
  Loads a CA directory and reports whether meshcert would accept it (the checks and the self-test
  serve runs at load, for that trust domain).
meshcert ca rotate start --dir DIR [--key-type ec256|...] [--org NAME] [--min-wait 13h] [--force]
  Root rotation, step 1: stages a new root and intermediate in DIR/next/ and adds the new root to
  root-cert.pem (old first); signing continues with the old intermediate. State: DIR/rotation.json.
  Refused when the old CA ends before the switch is allowed (renew the intermediate first), unless --force.
meshcert ca rotate switch --dir DIR [--min-wait 13h] [--max-leaf-lifetime 90d] [--force]
  Step 2, once every workload holds both roots (--min-wait after start, else --force; a --min-wait
  shorter than start's needs --force too): signs with the new intermediate (ca-cert.pem, ca-key.pem,
  cert-chain.pem <- next/). Durations need a unit (13h, 90d). Run again with another
  --max-leaf-lifetime to change how long finish waits (counted from the switch; shorter needs --force).
meshcert ca rotate finish --dir DIR [--force]
  Step 3, once --max-leaf-lifetime has passed since the switch (else --force): removes the old root
  from root-cert.pem and archives the old material under DIR/archive/<timestamp>/ (keys 0600).
meshcert ca rotate status --dir DIR [--json]
  The current step, what to check, and when the next step is allowed.
meshcert ca renew-intermediate --dir DIR [--lifetime 365d] [--key-type ec256|...]
  A new intermediate under the same root (needs DIR/root-key.pem); the root bundle is unchanged.
meshcert ca import-istiod --from SRC --dir DIR [--trust-domain cluster.local]
  Creates DIR from istiod's CA files in SRC (cacerts or istio-ca-secret keys: ca-cert.pem,
  ca-key.pem[, cert-chain.pem, root-cert.pem]); export each with
  kubectl -n istio-system get secret istio-ca-secret -o jsonpath='{.data.ca-cert\\.pem}' | base64 -d > ca-cert.pem`;

export async function caCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === 'init') {
    const { values: v } = parse(rest, { dir: { type: 'string' }, 'key-type': { type: 'string', default: 'ec256' }, org: { type: 'string', default: 'meshcert' } });
    if (!v.dir) throw new UsageError('ca init needs --dir');
    if (!(KEY_TYPES as readonly string[]).includes(v['key-type']!)) throw new UsageError(`--key-type must be one of ${KEY_TYPES.join(', ')}`);
    orgOption(v.org);
    const dir = resolve(v.dir);
    const m = await initCaDir({ dir, keyType: v['key-type'] as (typeof KEY_TYPES)[number], organization: v.org! });
    console.log(`created a CA in ${dir}`);
    console.log(`  root          ${oneLine(m.roots[0]!.subject)} (until ${new Date(m.roots[0]!.validTo).toISOString()})`);
    console.log(`  intermediate  ${oneLine(m.signingCert.subject)} (until ${new Date(m.signingCert.validTo).toISOString()})`);
    console.log('  files         ca-cert.pem, ca-key.pem (0600), cert-chain.pem, root-cert.pem, root-key.pem (0600)');
    console.log('  keep root-key.pem offline once the intermediate is in place; meshcert does not need it to serve');
    // A directory that existed before (made 0777 by hand, say) keeps its mode: said here, as ca check says it.
    for (const exposed of exposedKeyNotes(dir)) console.error(`warning: ${exposed}`);
    return 0;
  }
  if (sub === 'check') {
    const { values: v } = parse(rest, { dir: { type: 'string' }, 'trust-domain': { type: 'string', default: 'cluster.local' } });
    if (!v.dir) throw new UsageError('ca check needs --dir');
    trustDomainOption(v['trust-domain']!);
    // As serve loads it: a step interrupted half way is served from the set it staged. The
    // directory itself is then not a CA (a cacerts Secret made from it would not load): exit 1.
    const { material: m, interrupted } = loadServedCaDir(resolve(v.dir));
    selfTestCa(new LocalIssuer('default', m), v['trust-domain']!);
    if (interrupted) {
      console.error(`meshcert: ${interrupted}; serve runs with that set meanwhile, but the directory's own files do not make a CA`);
      return 1;
    }
    console.log(`CA OK: signs as "${oneLine(m.signingCert.subject)}", ${m.intermediates.length} intermediate(s), ${m.roots.length} root(s), usable until ${m.notAfter.toISOString()}`);
    warnExpiredRoots(m.expiredRoots);
    // A step killed while the live files make a whole CA: it passes, and says which step to re-run.
    const pending = pendingStepNote(resolve(v.dir), m.signingCert);
    if (pending) console.error(`warning: ${pending}`);
    for (const exposed of exposedKeyNotes(resolve(v.dir))) console.error(`warning: ${exposed}`);
    for (const missing of missingKeyIdentifiers([...m.intermediates, ...m.roots])) console.error(`warning: ${missing}`);
    return 0;
  }
  if (sub === 'rotate') return rotateCommand(rest);
  if (sub === 'renew-intermediate') {
    const { values: v } = parse(rest, { dir: { type: 'string' }, lifetime: { type: 'string' }, 'key-type': { type: 'string' } });
    if (!v.dir) throw new UsageError('ca renew-intermediate needs --dir');
    const lifetimeMs = durationMs(v.lifetime, '--lifetime');
    if (lifetimeMs !== undefined && lifetimeMs < MIN_INTERMEDIATE_LIFETIME_MS) {
      throw new UsageError(`--lifetime ${v.lifetime}: an intermediate must last at least 1d`);
    }
    const r = await renewIntermediate({ dir: resolve(v.dir), lifetimeMs, keyType: keyTypeOption(v['key-type']) });
    for (const m of r.messages) console.log(m);
    for (const w of r.warnings) console.error(`warning: ${w}`);
    return 0;
  }
  if (sub === 'import-istiod') {
    const { values: v } = parse(rest, { from: { type: 'string' }, dir: { type: 'string' }, 'trust-domain': { type: 'string', default: 'cluster.local' } });
    if (!v.from || !v.dir) throw new UsageError('ca import-istiod needs --from SRC and --dir DIR');
    trustDomainOption(v['trust-domain']!);
    const dir = resolve(v.dir);
    const r = importIstiod({ from: resolve(v.from), dir, trustDomain: v['trust-domain']! });
    console.log(`imported ${r.kind === 'cacerts' ? "istiod's plug-in CA (cacerts)" : "istiod's self-signed CA (istio-ca-secret)"} into ${dir}`);
    console.log(`  files         ${r.files.join(', ')} (keys 0600)`);
    console.log(`  signs as      ${oneLine(r.material.signingCert.subject)} (until ${r.material.notAfter.toISOString()})`);
    console.log(`  roots         ${r.material.roots.length}`);
    warnExpiredRoots(r.material.expiredRoots);
    for (const missing of missingKeyIdentifiers([...r.material.intermediates, ...r.material.roots])) console.error(`warning: ${missing}`);
    for (const n of r.notes) console.log(`  note: ${n}`);
    console.log('  workloads keep trusting each other: the same root signs');
    return 0;
  }
  throw new UsageError(`unknown ca subcommand ${sub ?? '(none)'}\n${CA_USAGE}`);
}

/** A bad --trust-domain is the command line's mistake (exit 2), said before anything is read. */
function trustDomainOption(td: string): void {
  const problem = trustDomainProblem(td);
  if (problem !== null) throw new UsageError(`--trust-domain ${JSON.stringify(td)}: ${problem}`);
}

/** As trustDomainOption, for --org (X.520's bound, the characters a name may hold). */
function orgOption(org: string | undefined): void {
  if (org === undefined) return;
  try {
    checkOrganization(org);
  } catch (e) {
    throw new UsageError(`--org: ${(e as Error).message}`);
  }
}

/** Roots loadCaDir left out of the bundle: still in root-cert.pem, so the operator should know. */
function warnExpiredRoots(roots: readonly X509Certificate[]): void {
  for (const r of roots) {
    console.error(`warning: root-cert.pem also holds "${oneLine(r.subject)}", which expired on ${new Date(r.validTo).toISOString()} and anchors nothing this CA signs; meshcert leaves it out of the trust bundle (remove it from the file)`);
  }
}

async function rotateCommand(argv: string[]): Promise<number> {
  const [step, ...rest] = argv;
  if (step === 'start') {
    const { values: v } = parse(rest, { dir: { type: 'string' }, 'key-type': { type: 'string' }, org: { type: 'string' }, 'min-wait': { type: 'string' }, force: { type: 'boolean', default: false } });
    if (!v.dir) throw new UsageError('ca rotate start needs --dir');
    orgOption(v.org);
    return report(await rotateStart({ dir: resolve(v.dir), keyType: keyTypeOption(v['key-type']), organization: v.org, minWaitMs: durationMs(v['min-wait'], '--min-wait'), force: v.force! }));
  }
  if (step === 'switch') {
    const { values: v } = parse(rest, { dir: { type: 'string' }, 'min-wait': { type: 'string' }, 'max-leaf-lifetime': { type: 'string' }, force: { type: 'boolean', default: false } });
    if (!v.dir) throw new UsageError('ca rotate switch needs --dir');
    return report(rotateSwitch({ dir: resolve(v.dir), minWaitMs: durationMs(v['min-wait'], '--min-wait'), maxLeafLifetimeMs: durationMs(v['max-leaf-lifetime'], '--max-leaf-lifetime'), force: v.force! }));
  }
  if (step === 'finish') {
    const { values: v } = parse(rest, { dir: { type: 'string' }, force: { type: 'boolean', default: false } });
    if (!v.dir) throw new UsageError('ca rotate finish needs --dir');
    return report(rotateFinish({ dir: resolve(v.dir), force: v.force! }));
  }
  if (step === 'status') {
    const { values: v } = parse(rest, { dir: { type: 'string' }, json: { type: 'boolean', default: false } });
    if (!v.dir) throw new UsageError('ca rotate status needs --dir');
    const now = new Date();
    const s = rotationStatus(resolve(v.dir), now);
    // As `ca check`: a directory whose CA does not load is a failure, whatever the step says to do.
    const code = s.ca ? 0 : 1;
    if (v.json) {
      console.log(JSON.stringify(s, null, 2));
      return code;
    }
    console.log(`CA directory ${s.dir}`);
    console.log(`step: ${s.step}: ${s.summary}`);
    if (s.ca) {
      console.log(`  signing  ${s.ca.signing.subject} (until ${s.ca.signing.notAfter})`);
      for (const r of s.ca.roots) console.log(`  root     ${r.subject} (sha256 ${r.fingerprint256})`);
    } else {
      console.log(`  the CA directory does not load: ${s.caError}`);
    }
    if (s.state) {
      console.log(`  old root ${s.state.oldRoot.subject} (sha256 ${s.state.oldRoot.fingerprint256})`);
      console.log(`  new root ${s.state.newRoot.subject} (sha256 ${s.state.newRoot.fingerprint256})`);
      if (s.state.maxLeafLifetimeSeconds !== undefined) console.log(`  longest leaf lifetime waited for: ${formatDuration(s.state.maxLeafLifetimeSeconds)}${s.state.maxLeafLifetimeForced ? ' (shortened with --force)' : ''}`);
    }
    if (s.next) {
      const when = s.next.allowedAt === undefined ? 'allowed now' : s.next.allowedNow ? `allowed now (since ${s.next.allowedAt})` : `allowed from ${s.next.allowedAt} (${until(new Date(s.next.allowedAt), now)})`;
      console.log(`next: ${s.next.command}  ${when}`);
    }
    if (s.checks.length > 0) {
      console.log('check:');
      for (const c of s.checks) console.log(`  - ${c}`);
    }
    return code;
  }
  throw new UsageError(`unknown ca rotate step ${step ?? '(none)'}: use start, switch, finish or status\n${CA_USAGE}`);
}

function report(r: StepResult): number {
  for (const m of r.messages) console.log(m);
  for (const w of r.warnings) console.error(`warning: ${w}`);
  return 0;
}

/** The shortest intermediate `renew-intermediate` makes: its leaves (24h by default) end with it. */
const MIN_INTERMEDIATE_LIFETIME_MS = 86_400_000;

function durationMs(value: string | undefined, flag: string): number | undefined {
  return value === undefined ? undefined : spanFlag(value, flag) * 1000;
}

function keyTypeOption(value: string | undefined): (typeof KEY_TYPES)[number] | undefined {
  if (value === undefined) return undefined;
  if (!(KEY_TYPES as readonly string[]).includes(value)) throw new UsageError(`--key-type must be one of ${KEY_TYPES.join(', ')}`);
  return value as (typeof KEY_TYPES)[number];
}
