/**
 * Root rotation without an outage, and intermediate renewal, as explicit steps on a CA directory.
 *
 *   start   new root + intermediate staged in next/; the new root joins root-cert.pem (old first),
 *           so every response and istio-ca-root-cert carry {old, new}; signing stays on the old CA.
 *   switch  (after --min-wait, so every workload holds {old, new}) ca-cert/ca-key/cert-chain ← next/.
 *   finish  (after the longest leaf lifetime, so no old-root leaf is alive) drop the old root,
 *           archive the old material under archive/<timestamp>/, delete rotation.json.
 *
 * The state lives in <dir>/rotation.json. Each step is resumable: it records what it is about to
 * do before doing it, every file is written atomically, and re-running a step that is done is a
 * no-op. Before any file of the live layout is replaced, the resulting directory is assembled in a
 * staging directory and loaded with loadCaDir.
 */
import 'reflect-metadata';
import { randomBytes, webcrypto, type KeyObject, createPrivateKey, X509Certificate } from 'node:crypto';
import { existsSync, readFileSync, rmSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import * as x509 from '@peculiar/x509';
import { formatDuration, MAX_SPAN_SECONDS, MAX_SPAN_TEXT } from '../config/duration.js';
import type { KeyType } from '../config/schema.js';
import { ConfigError } from '../errors/ca-error.js';
import { MAX_PEM_BYTES, readTextFile } from '../fs/read-file.js';
import { certToPem, parsePemBundle } from '../x509/pem.js';
import { ARCHIVE_DIR, beginReplacing, CA_FILES, caPath, endReplacing, NEXT_DIR, PREVIOUS_DIR, readCaTextIfPresent, RENEWING_DIR, replacingFrom, ROTATION_FILE, withCaDirLock, writeFileAtomic, writePrivateKey } from './files.js';
import { caCommonName, caSubjectName, carriedExtensions, checkOrganization, createIntermediateCert, createRootCert, extensionName, generateKey, keyAlgorithm } from './generate.js';
import { anchorAmong, isSelfSigned, loadCaDir, materialFromTexts, pendingStepNote, type CaMaterial } from './material.js';
import { readRotationState, rotationFile, writeRotationState, type CertSummary, type RotationState, type RotationStep } from './rotation-state.js';
import { oneLine } from '../x509/names.js';
import { signedBy } from '../x509/verify-chain.js';

export { ROTATION_FILE };
// Kept in rotation-state.ts, which the CA loader reads without this module's certificate builders.
export { readRotationState, rotationFile, writeRotationState, type CertSummary, type RotationState, type RotationStep };
// The staged and kept sets' directories live in files.ts, which the CA loader reads too.
export { ARCHIVE_DIR, NEXT_DIR, PREVIOUS_DIR, RENEWING_DIR };

const MINUTE_MS = 60_000;
const HOUR_MS = 60 * MINUTE_MS;
const DAY_MS = 24 * HOUR_MS;
const YEAR_MS = 365 * DAY_MS;
/**
 * Half the default 24h workload lifetime, when istio-agent renews (and so receives the new bundle),
 * plus an hour: the agent renews at half-life ± its jitter, and the bundle reaches meshcert and the
 * pods some time after `start` (Secret sync, reload). Longer workload lifetimes need half of theirs.
 */
export const DEFAULT_MIN_WAIT_MS = 13 * HOUR_MS;
/** The default `issuance.maxTtl`: no leaf issued by meshcert lives longer. */
export const DEFAULT_MAX_LEAF_LIFETIME_MS = 90 * DAY_MS;
export const DEFAULT_INTERMEDIATE_LIFETIME_MS = YEAR_MS;
const DEFAULT_ROOT_LIFETIME_MS = 10 * YEAR_MS;
/** CA certificates are backdated a little, as `ca init` does, to absorb clock skew. */
const CA_BACKDATE_MS = 5 * MINUTE_MS;

type LayoutFile = keyof typeof CA_FILES;
type Layout = Partial<Record<LayoutFile, string>>;
const PRIVATE: ReadonlySet<LayoutFile> = new Set(['key', 'rootKey']);
/** Write order: ca-cert.pem last, so its arrival completes a consistent set (as `ca init` does). */
const WRITE_ORDER: readonly LayoutFile[] = ['rootKey', 'key', 'root', 'chain', 'cert'];

// ---------------------------------------------------------------------------------------------
// Results

export interface StepResult {
  /** False when the step had already been done: re-running a finished step changes nothing. */
  readonly changed: boolean;
  /** What happened, for the operator (stdout). */
  readonly messages: readonly string[];
  /** What the operator should know (stderr), e.g. a step forced before its time. */
  readonly warnings: readonly string[];
  /** The state after the step (undefined once the rotation is finished). */
  readonly state: RotationState | undefined;
}

// ---------------------------------------------------------------------------------------------
// Shared helpers (also used by import-istiod.ts)

export function summarize(c: X509Certificate): CertSummary {
  return {
    subject: oneLine(c.subject),
    fingerprint256: c.fingerprint256,
    notBefore: new Date(c.validFrom).toISOString(),
    notAfter: new Date(c.validTo).toISOString(),
  };
}

/** Reads whichever layout files exist in `dir`. */
export function readLayout(dir: string): Layout {
  const out: Layout = {};
  for (const f of Object.keys(CA_FILES) as LayoutFile[]) {
    const text = readCaTextIfPresent(caPath(dir, f));
    if (text !== undefined) out[f] = text;
  }
  return out;
}

/**
 * Writes the given layout files into `dir`, each atomically, keys 0600, ca-cert.pem last.
 * Files whose content is already the same are left alone (so a resumed step rewrites nothing).
 */
export function writeLayout(dir: string, files: Layout): LayoutFile[] {
  const changed: LayoutFile[] = [];
  for (const f of WRITE_ORDER) {
    const data = files[f];
    if (data === undefined) continue;
    const path = caPath(dir, f);
    if (existsSync(path) && readFileSync(path, 'utf8') === data) continue;
    if (PRIVATE.has(f)) writePrivateKey(path, data);
    else writeFileAtomic(path, data);
    changed.push(f);
  }
  return changed;
}

/**
 * Loads the CA directory `files` would make with the checks `serve` makes (materialFromTexts), from
 * the texts alone: nothing is written, so a killed step leaves no copy of a key behind.
 */
export function validateLayout(dir: string, files: Layout, now: Date, context: string): CaMaterial {
  const { cert, key, chain, root } = files;
  const missing = cert === undefined ? 'ca-cert.pem' : key === undefined ? 'ca-key.pem' : root === undefined ? 'root-cert.pem' : undefined;
  try {
    if (missing !== undefined) throw new ConfigError(`CA directory ${dir} would have no ${missing}`);
    return materialFromTexts({ cert: cert!, key: key!, chain: chain ?? '', root: root! }, now);
  } catch (e) {
    if (e instanceof ConfigError) throw new ConfigError(`${context}: the resulting CA directory would not load: ${e.message}`);
    throw e;
  }
}

/** The root in `m.roots` that anchors the signing chain (the signing certificate itself when it is a root). */
export function anchorOf(m: CaMaterial): X509Certificate {
  const top = m.intermediates[m.intermediates.length - 1]!;
  const anchor = anchorAmong(top, m.roots);
  if (!anchor) throw new ConfigError('the signing chain does not end at a root in root-cert.pem');
  return anchor;
}

/** The meshcert key type of a key (private or public), for generating like keys and signing with them. */
export function keyTypeOf(k: KeyObject): KeyType {
  const d = k.asymmetricKeyDetails;
  if (k.asymmetricKeyType === 'ec') {
    if (d?.namedCurve === 'prime256v1') return 'ec256';
    if (d?.namedCurve === 'secp384r1') return 'ec384';
  }
  if (k.asymmetricKeyType === 'rsa' && (d?.modulusLength === 2048 || d?.modulusLength === 3072 || d?.modulusLength === 4096)) {
    return `rsa${d.modulusLength}` as KeyType;
  }
  throw new ConfigError(`unsupported CA key (${k.asymmetricKeyType ?? 'unknown'} ${d?.namedCurve ?? d?.modulusLength ?? ''}): use RSA 2048/3072/4096 or ECDSA P-256/P-384`);
}

function toSigningCryptoKey(k: KeyObject, type: KeyType): Promise<CryptoKey> {
  const der = k.export({ type: 'pkcs8', format: 'der' });
  const alg = type.startsWith('ec') ? keyAlgorithm(type).gen : { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
  return webcrypto.subtle.importKey('pkcs8', der, alg, false, ['sign']) as unknown as Promise<CryptoKey>;
}

/** A name as Node prints it (RFC 2253 backslash escapes) back to its characters. */
function unescapePrinted(printed: string): string {
  return printed.replace(/\\(.)/g, '$1');
}

function organizationOf(c: X509Certificate | undefined, fallback = 'meshcert'): string {
  const line = c?.subject.split('\n').find((l) => l.startsWith('O='));
  // Node prints the name RFC 2253-escaped (\, for a comma); a hex escape is a control character.
  const printed = line?.slice(2);
  if (!printed || /\\[0-9A-Fa-f]{2}/.test(printed)) return fallback;
  // Unescaped first: a trailing space is printed "\ ", and trimming before would keep the "\".
  return unescapePrinted(printed).trim() || fallback;
}

/**
 * `O=<org>, CN=<org> <what> <time>`: to the second (unlike `ca init`'s date), so a rotated or renewed
 * certificate never shares a subject with the one it replaces; made unique against `taken`.
 */
function caSubject(org: string, what: string, now: Date, taken: readonly string[]): string {
  const label = `${what} ${now.toISOString().slice(0, 19)}Z`;
  // `taken` holds one-line subjects as Node prints them (escaped: O=Acme\, Inc., CN=…).
  return taken.map(unescapePrinted).includes(`O=${org}, CN=${caCommonName(org, label)}`) ? caSubjectName(org, `${label} ${randomBytes(4).toString('hex')}`) : caSubjectName(org, label);
}

function pem(c: x509.X509Certificate): string {
  return `${c.toString('pem')}\n`;
}

function readCert(path: string): X509Certificate | undefined {
  if (!existsSync(path)) return undefined;
  try {
    const certs = parsePemBundle(readTextFile(path, MAX_PEM_BYTES));
    return certs.length === 1 ? certs[0] : undefined;
  } catch {
    return undefined;
  }
}

function archiveName(now: Date): string {
  return now.toISOString().replace(/[:.]/g, '-');
}

function ms(seconds: number): number {
  return seconds * 1000;
}

function duration(msValue: number): string {
  return formatDuration(Math.round(msValue / 1000));
}

/** "in 3h 12m" / "now" */
export function until(at: Date, now: Date): string {
  const d = at.getTime() - now.getTime();
  if (d <= 0) return 'now';
  const total = Math.ceil(d / MINUTE_MS);
  const days = Math.floor(total / 1440);
  const hours = Math.floor((total % 1440) / 60);
  const minutes = total % 60;
  return `in ${[days ? `${days}d` : '', hours ? `${hours}h` : '', minutes ? `${minutes}m` : ''].filter(Boolean).join(' ')}`;
}

// ---------------------------------------------------------------------------------------------
// Step 1: start

export interface RotateStartOptions {
  readonly dir: string;
  readonly keyType?: KeyType;
  /** Organization of the new certificates; default: the current root's O, else "meshcert". */
  readonly organization?: string;
  /** Recorded for `switch`; default 13h. */
  readonly minWaitMs?: number;
  readonly rootLifetimeMs?: number;
  readonly intermediateLifetimeMs?: number;
  /** Start even when the old CA ends before the switch is allowed (meshcert then cannot sign in between). */
  readonly force?: boolean;
  readonly now?: Date;
}

/**
 * Checked before any file is touched: a span beyond a century (or not a number) gives a date no
 * certificate or rotation.json can hold, found only half way through a step.
 */
function checkSpans(spans: Record<string, number | undefined>): void {
  for (const [name, ms] of Object.entries(spans)) {
    if (ms !== undefined && !(Number.isFinite(ms) && ms >= 0 && ms <= MAX_SPAN_SECONDS * 1000)) throw new ConfigError(`${name} must be between 0s and ${MAX_SPAN_TEXT}`);
  }
}

export async function rotateStart(o: RotateStartOptions): Promise<StepResult> {
  return withCaDirLock(o.dir, 'ca rotate start', () => rotateStartLocked(o));
}

async function rotateStartLocked(o: RotateStartOptions): Promise<StepResult> {
  checkSpans({ 'the minimum wait': o.minWaitMs, "the new root's lifetime": o.rootLifetimeMs, "the new intermediate's lifetime": o.intermediateLifetimeMs });
  if (o.organization !== undefined) checkOrganization(o.organization);
  const now = o.now ?? new Date();
  const { dir } = o;
  const existing = readRotationState(dir);
  if (existing) {
    return noop(existing, `a rotation is already in progress (step "${existing.step}", started ${existing.startedAt}); "start" has nothing to do. See "meshcert ca rotate status --dir ${dir}"`);
  }
  if (replacingFrom(dir) === 'renewing') throw new ConfigError(`a renewal of the intermediate was interrupted: run "meshcert ca renew-intermediate --dir ${dir}" again to complete it, then start the rotation`);
  // A switch's marker left by a rotation given up (rotation.json removed): this one's next/ must not inherit it.
  endReplacing(dir);
  const current = loadCurrent(dir, now, 'cannot start a rotation');
  // A renewal's staging left behind (with its key): renew-intermediate, which clears it, refuses
  // to run once a rotation has started, so it is dealt with first, as the note says.
  if (existsSync(join(dir, RENEWING_DIR))) throw new ConfigError(`cannot start a rotation: ${pendingStepNote(dir, current.signingCert)}`);
  const oldRoot = anchorOf(current);
  const messages: string[] = [];
  const minWaitMs = o.minWaitMs ?? DEFAULT_MIN_WAIT_MS;
  const switchAllowedAt = now.getTime() + minWaitMs;
  // The switch must come before the old CA ends, or meshcert cannot sign in between. Refused
  // before anything is staged: once started, renew-intermediate (the usual remedy) is refused.
  const oldEnd = current.notAfter.getTime();
  const gap = oldEnd <= switchAllowedAt;
  const ends = `the old CA ("${oneLine(current.signingCert.subject)}" and its chain) can sign only until ${current.notAfter.toISOString()}, before the switch is allowed (${new Date(switchAllowedAt).toISOString()}, --min-wait ${duration(minWaitMs)}): from then until the switch meshcert refuses to issue (UNAVAILABLE)`;
  if (gap && !o.force) {
    const renewable = !isSelfSigned(current.signingCert) && Date.parse(oldRoot.validTo) > switchAllowedAt;
    throw new ConfigError(
      `cannot start a rotation: ${ends}. ${renewable ? `Renew the intermediate first ("meshcert ca renew-intermediate --dir ${dir}"), then start; or start` : 'Start'} with a --min-wait under ${duration(Math.max(0, oldEnd - now.getTime()))} if every workload will hold both roots by then, or with --force to accept the gap`,
    );
  }

  // The new CA, staged in next/. A complete next/ (ca-cert.pem is written last) is left by an
  // interrupted start and is reused: its root may already have been handed out.
  const nextDir = join(dir, NEXT_DIR);
  let next: CaMaterial;
  let reusedWithOptions = false;
  if (existsSync(caPath(nextDir, 'cert'))) {
    try {
      next = loadCaDir(nextDir, now);
    } catch (e) {
      throw new ConfigError(`${nextDir} holds a CA that does not load (${(e as Error).message}); it is not in use yet: remove it and run "ca rotate start" again`);
    }
    if (next.roots.length !== 1 || !isSelfSigned(next.roots[0]!) || next.intermediates.length !== 1) {
      throw new ConfigError(`${nextDir} is not a CA staged by "ca rotate start" (expected one root and one intermediate): remove it and start again`);
    }
    messages.push(`reusing the new CA staged in ${nextDir} by an interrupted start`);
    reusedWithOptions = o.keyType !== undefined || o.organization !== undefined || o.rootLifetimeMs !== undefined || o.intermediateLifetimeMs !== undefined;
  } else {
    rmSync(nextDir, { recursive: true, force: true }); // a partial next/ (no ca-cert.pem) was never used
    const keyType = o.keyType ?? 'ec256';
    const org = o.organization ?? organizationOf(oldRoot);
    const taken = current.roots.map((r) => oneLine(r.subject));
    const notBefore = new Date(now.getTime() - CA_BACKDATE_MS);
    const rootKey = await generateKey(keyType);
    const root = await createRootCert(rootKey, {
      subject: caSubject(org, 'root CA', now, taken),
      notBefore,
      notAfter: new Date(now.getTime() + (o.rootLifetimeMs ?? DEFAULT_ROOT_LIFETIME_MS)),
      keyType,
    });
    const interKey = await generateKey(keyType);
    const inter = await createIntermediateCert(interKey.keys.publicKey, { cert: root, key: rootKey.keys.privateKey, keyType }, {
      subject: caSubject(org, 'intermediate CA', now, [...taken, oneLine(current.signingCert.subject)]),
      notBefore,
      notAfter: new Date(now.getTime() + (o.intermediateLifetimeMs ?? DEFAULT_INTERMEDIATE_LIFETIME_MS)),
    });
    const files: Layout = { rootKey: rootKey.privateKeyPem, key: interKey.privateKeyPem, root: pem(root), chain: pem(inter) + pem(root), cert: pem(inter) };
    validateLayout(dir, files, now, 'cannot stage the new CA');
    writeLayout(nextDir, files);
    next = loadCaDir(nextDir, now);
    messages.push(`staged a new root and intermediate in ${nextDir} (keys 0600)`);
  }
  const newRoot = next.roots[0]!;

  // root-cert.pem ← old roots + new root (old first). Signing material is untouched.
  const live = readLayout(dir);
  // From the file, not current.roots: an expired root the operator keeps there stays.
  const roots = parseOrThrow(live.root ?? '', 'root-cert.pem');
  if (!roots.some((r) => r.fingerprint256 === newRoot.fingerprint256)) roots.push(newRoot);
  const rootPem = roots.map(certToPem).join('');
  validateLayout(dir, { ...live, root: rootPem }, now, 'cannot add the new root to root-cert.pem');
  if (writeLayout(dir, { root: rootPem }).length > 0) messages.push(`added the new root to ${caPath(dir, 'root')} (now ${roots.length} roots, old first)`);

  const warnings: string[] = [];
  // Its root may already be handed out, so it is not made again; but the operator must know that
  // what they asked for is not what they get (renew-intermediate says the same).
  if (reusedWithOptions) {
    warnings.push(`--key-type and --org were not used: the new CA an interrupted start had staged in ${nextDir} was reused as it is (root "${oneLine(next.roots[0]!.subject)}", ${keyTypeOf(next.roots[0]!.publicKey)}); for one made with them, remove ${nextDir}, ${rotationFile(dir)} and the new root from ${caPath(dir, 'root')} before any workload trusts it, and start again`);
  }
  if (gap) warnings.push(`started with --force: ${ends}; switch with --force as soon as every workload holds both roots`);
  const state: RotationState = {
    version: 1,
    step: 'started',
    startedAt: now.toISOString(),
    minWaitSeconds: Math.round(minWaitMs / 1000),
    switchAllowedAt: new Date(switchAllowedAt).toISOString(),
    oldRoot: summarize(oldRoot),
    newRoot: summarize(newRoot),
    oldIntermediate: summarize(current.signingCert),
    newIntermediate: summarize(next.signingCert),
  };
  writeRotationState(dir, state);
  messages.push(
    `rotation started: meshcert keeps signing with "${state.oldIntermediate.subject}" and now hands out both roots`,
    `next: "meshcert ca rotate switch --dir ${dir}", allowed from ${state.switchAllowedAt} (--min-wait ${duration(minWaitMs)}), once every workload holds both roots`,
  );
  return { changed: true, messages, warnings, state };
}

// ---------------------------------------------------------------------------------------------
// Step 2: switch

export interface RotateSwitchOptions {
  readonly dir: string;
  /** Overrides the wait recorded at start. */
  readonly minWaitMs?: number;
  /** Longest lifetime of a leaf signed by the old intermediate; default 90d (issuance.maxTtl). */
  readonly maxLeafLifetimeMs?: number;
  readonly force?: boolean;
  readonly now?: Date;
}

export function rotateSwitch(o: RotateSwitchOptions): StepResult {
  return withCaDirLock(o.dir, 'ca rotate switch', () => rotateSwitchLocked(o));
}

function rotateSwitchLocked(o: RotateSwitchOptions): StepResult {
  checkSpans({ 'the minimum wait': o.minWaitMs, 'the longest leaf lifetime': o.maxLeafLifetimeMs });
  const now = o.now ?? new Date();
  const { dir } = o;
  let state = readRotationState(dir);
  if (!state) throw new ConfigError(`no rotation in progress in ${dir}: run "meshcert ca rotate start --dir ${dir}" first`);
  if (state.step === 'switched' || state.step === 'finishing') {
    const already = `already switched at ${state.switchedAt}: meshcert signs with "${state.newIntermediate.subject}"`;
    if (state.step === 'finishing') {
      const warnings = o.maxLeafLifetimeMs !== undefined ? ['--max-leaf-lifetime ignored: the old root is already being removed'] : [];
      return { ...noop(state, `${already}, and the finish has begun: complete it with "meshcert ca rotate finish --dir ${dir}"`), warnings };
    }
    const { next, warnings } = withLeafLifetime(state, o);
    if (next !== state) {
      writeRotationState(dir, next);
      return {
        changed: true,
        messages: [
          `${already}; the longest leaf lifetime to wait for is now ${formatDuration(next.maxLeafLifetimeSeconds!)} (was ${formatDuration(state.maxLeafLifetimeSeconds!)})`,
          `next: "meshcert ca rotate finish --dir ${dir}", allowed from ${next.finishAllowedAt} (was ${state.finishAllowedAt})`,
        ],
        warnings,
        state: next,
      };
    }
    return noop(state, `${already}; next: "meshcert ca rotate finish --dir ${dir}", allowed from ${state.finishAllowedAt}`);
  }
  const messages: string[] = [];
  const warnings: string[] = [];
  const nextDir = join(dir, NEXT_DIR);

  if (state.step === 'started') {
    const recordedWaitMs = ms(state.minWaitSeconds);
    const minWaitMs = o.minWaitMs ?? recordedWaitMs;
    // A shorter wait than start recorded is an early switch by another name: --force, as for one.
    const shortened = minWaitMs < recordedWaitMs && now.getTime() < Date.parse(state.startedAt) + recordedWaitMs;
    if (shortened && !o.force) {
      throw new ConfigError(`--min-wait ${duration(minWaitMs)} is shorter than the ${duration(recordedWaitMs)} recorded at start: a workload that has not renewed since then holds only the old root and would reject certificates from the new intermediate. Pass --force once you have checked that every workload holds both roots`);
    }
    const allowedAt = new Date(Date.parse(state.startedAt) + minWaitMs);
    if (shortened) warnings.push(`shortened the wait below the ${duration(recordedWaitMs)} recorded at start (--force)`);
    if (now < allowedAt) {
      const why = `the new root was added at ${state.startedAt}; workloads renew at half their lifetime and only then receive the {old, new} bundle, so switching is allowed from ${allowedAt.toISOString()} (--min-wait ${duration(minWaitMs)}, ${until(allowedAt, now)})`;
      if (!o.force) throw new ConfigError(`too early to switch: ${why}. A workload still holding only the old root would reject certificates from the new intermediate. Re-run then, or pass --force once you have checked that every workload holds both roots`);
      warnings.push(`switching before the wait is over (--force): ${why}`);
    }
    // The live CA is about to be replaced: it must still be the one recorded at start, but need not
    // load. The old chain may have expired during the overlap, and then meshcert cannot sign until
    // this switch: all the more reason to let it run (the directory it leaves is checked below).
    const live = readLayout(dir);
    const liveSigner = parseOrThrow(live.cert ?? '', 'ca-cert.pem')[0];
    if (liveSigner?.fingerprint256 !== state.oldIntermediate.fingerprint256) {
      throw new ConfigError(`ca-cert.pem is no longer the intermediate recorded at start (expected ${state.oldIntermediate.fingerprint256}, found ${liveSigner?.fingerprint256 ?? 'none'}); inspect ${dir} and ${rotationFile(dir)}`);
    }
    const oldEnd = Date.parse(state.oldIntermediate.notAfter);
    if (oldEnd <= now.getTime()) warnings.push(`the old intermediate "${state.oldIntermediate.subject}" expired at ${state.oldIntermediate.notAfter}: meshcert could not sign with it since; it signs again with the new one once it reloads`);
    requireRoots(parseOrThrow(live.root ?? '', 'root-cert.pem'), [state.oldRoot, state.newRoot], 'cannot switch');
    loadNext(dir, state, now);
    const nextFiles = readLayout(nextDir);
    validateLayout(dir, { cert: nextFiles.cert, key: nextFiles.key, chain: nextFiles.chain, root: live.root }, now, 'cannot switch');

    // Keep the old signing material for `finish` to archive (the live files are still the old ones:
    // they are replaced only once the state says "switching").
    writeLayout(join(dir, PREVIOUS_DIR), { cert: live.cert, key: live.key, chain: live.chain, rootKey: live.rootKey });

    const maxLeafMs = o.maxLeafLifetimeMs ?? DEFAULT_MAX_LEAF_LIFETIME_MS;
    // No leaf signed before the switch outlives switchedAt + maxLeaf, nor the old root. Not capped by
    // the old intermediate: one it replaced (renew-intermediate) may have signed leaves that outlive it.
    const finishAllowedAt = new Date(Math.min(now.getTime() + maxLeafMs, Date.parse(state.oldRoot.notAfter)));
    state = {
      ...state,
      step: 'switching',
      minWaitSeconds: Math.round(minWaitMs / 1000),
      switchAllowedAt: allowedAt.toISOString(),
      switchedAt: now.toISOString(),
      switchForced: now < allowedAt || shortened,
      maxLeafLifetimeSeconds: Math.round(maxLeafMs / 1000),
      finishAllowedAt: finishAllowedAt.toISOString(),
    };
    writeRotationState(dir, state);
  } else {
    messages.push('completing a switch that was interrupted');
    // The switch took place when it was recorded; a lifetime given now still counts from then.
    const changed = withLeafLifetime(state, o);
    state = changed.next;
    warnings.push(...changed.warnings);
  }

  // step "switching": install next/ as the signing CA (idempotent).
  if (existsSync(caPath(nextDir, 'cert'))) {
    loadNext(dir, state, now);
    const nextFiles = readLayout(nextDir);
    const live = readLayout(dir);
    const material = validateLayout(dir, { cert: nextFiles.cert, key: nextFiles.key, chain: nextFiles.chain, root: live.root }, now, 'cannot switch');
    requireRoots([...material.roots, ...material.expiredRoots], [state.oldRoot, state.newRoot], 'cannot switch');
    // Key first, certificate last: a reader that catches the set half-written sees a key that does
    // not match ca-cert.pem, and loads the set staged in next/ instead (loadServedCaDir), so a
    // server (re)started before this completes serves the new CA rather than failing to start.
    beginReplacing(dir, 'next');
    writeLayout(dir, { rootKey: nextFiles.rootKey, key: nextFiles.key, chain: nextFiles.chain, cert: nextFiles.cert });
  }
  const after = loadCurrent(dir, now, 'switch did not complete');
  endReplacing(dir);
  if (after.signingCert.fingerprint256 !== state.newIntermediate.fingerprint256) {
    throw new ConfigError(`the switch was interrupted and ${join(dir, NEXT_DIR)} is gone: ca-cert.pem is "${oneLine(after.signingCert.subject)}", not the new intermediate; restore next/ or inspect ${dir}`);
  }
  state = { ...state, step: 'switched' };
  writeRotationState(dir, state);
  rmSync(nextDir, { recursive: true, force: true });
  messages.push(
    `switched: meshcert now signs with "${state.newIntermediate.subject}" (under the new root); root-cert.pem still holds both roots`,
    `the old material is kept in ${join(dir, PREVIOUS_DIR)} until finish`,
    `next: "meshcert ca rotate finish --dir ${dir}", allowed from ${state.finishAllowedAt} (--max-leaf-lifetime ${formatDuration(state.maxLeafLifetimeSeconds!)} after the switch, or the old root's expiry if sooner)`,
  );
  return { changed: true, messages, warnings, state };
}

// ---------------------------------------------------------------------------------------------
// Step 3: finish

export interface RotateFinishOptions {
  readonly dir: string;
  readonly force?: boolean;
  readonly now?: Date;
}

export function rotateFinish(o: RotateFinishOptions): StepResult {
  return withCaDirLock(o.dir, 'ca rotate finish', () => rotateFinishLocked(o));
}

function rotateFinishLocked(o: RotateFinishOptions): StepResult {
  const now = o.now ?? new Date();
  const { dir } = o;
  let state = readRotationState(dir);
  if (!state) {
    // Idempotent after a finish, but a directory with no CA at all is most likely a mistyped --dir.
    if (!existsSync(caPath(dir, 'cert'))) throw new ConfigError(`no rotation in progress in ${dir}, and no CA there (no ${CA_FILES.cert}): is --dir the CA directory?`);
    return { changed: false, messages: [`no rotation in progress in ${dir}: nothing to finish`], warnings: [], state: undefined };
  }
  if (state.step === 'started') throw new ConfigError(`the rotation has not switched yet (started ${state.startedAt}): run "meshcert ca rotate switch --dir ${dir}" first`);
  if (state.step === 'switching') throw new ConfigError(`the switch was interrupted: run "meshcert ca rotate switch --dir ${dir}" again to complete it, then finish`);
  const messages: string[] = [];
  const warnings: string[] = [];

  if (state.step === 'switched') {
    const allowedAt = new Date(state.finishAllowedAt!);
    if (now < allowedAt) {
      const why = `leaves signed by the old intermediate up to the switch (${state.switchedAt}) may stay valid until ${allowedAt.toISOString()} (--max-leaf-lifetime ${formatDuration(state.maxLeafLifetimeSeconds!)}, ${until(allowedAt, now)}), and a peer given only the new root would reject them`;
      if (!o.force) throw new ConfigError(`too early to finish: ${why}. Re-run then, or pass --force once no certificate from the old root is in use`);
      warnings.push(`finishing before the longest leaf lifetime has passed (--force): ${why}`);
    }
    const current = loadCurrent(dir, now, 'cannot finish');
    if (current.signingCert.fingerprint256 !== state.newIntermediate.fingerprint256) {
      throw new ConfigError(`ca-cert.pem is not the new intermediate recorded at start (expected ${state.newIntermediate.fingerprint256}, found ${current.signingCert.fingerprint256}); inspect ${dir}`);
    }
    requireRoots([...current.roots, ...current.expiredRoots], [state.newRoot], 'cannot finish');
    const live = readLayout(dir);
    validateLayout(dir, { ...live, root: withoutRoot(current.roots, state.oldRoot) }, now, 'cannot finish');
    state = { ...state, step: 'finishing', finishingAt: now.toISOString(), finishForced: now < allowedAt, archive: archiveName(now) };
    writeRotationState(dir, state);
  } else {
    messages.push('completing a finish that was interrupted');
  }

  // step "finishing": archive, drop the old root, clean up (each part idempotent).
  const archiveDir = join(dir, ARCHIVE_DIR, state.archive!);
  if (!existsSync(caPath(archiveDir, 'cert'))) {
    const prev = readLayout(join(dir, PREVIOUS_DIR));
    const roots = parseOrThrow(readLayout(dir).root ?? '', 'root-cert.pem');
    const old = roots.filter((r) => r.fingerprint256 === state!.oldRoot.fingerprint256);
    writeFileAtomic(join(archiveDir, ROTATION_FILE), `${JSON.stringify(state, null, 2)}\n`);
    // ca-cert.pem last (writeLayout's order) marks the archive complete.
    writeLayout(archiveDir, { rootKey: prev.rootKey, key: prev.key, chain: prev.chain, root: old.length > 0 ? old.map(certToPem).join('') : undefined, cert: prev.cert });
  }
  const live = readLayout(dir);
  const current = parseOrThrow(live.root ?? '', 'root-cert.pem');
  const rootPem = withoutRoot(current, state.oldRoot);
  if (rootPem !== live.root) {
    validateLayout(dir, { ...live, root: rootPem }, now, 'cannot finish');
    writeLayout(dir, { root: rootPem });
  }
  rmSync(join(dir, PREVIOUS_DIR), { recursive: true, force: true });
  rmSync(join(dir, NEXT_DIR), { recursive: true, force: true });
  const remaining = parsePemBundle(rootPem);
  loadCurrent(dir, now, 'finish left an unusable CA');
  unlinkSync(rotationFile(dir));
  messages.push(
    `finished: removed the old root "${state.oldRoot.subject}" from root-cert.pem (${remaining.length} root(s) left)`,
    `archived the old intermediate, its key and the old root under ${archiveDir} (keys 0600); move them offline`,
  );
  const others = remaining.filter((r) => r.fingerprint256 !== state!.newRoot.fingerprint256);
  if (others.length > 0) warnings.push(`root-cert.pem still holds ${others.length} root(s) that were not part of this rotation: ${others.map((r) => `"${oneLine(r.subject)}"`).join(', ')}`);
  return { changed: true, messages, warnings, state: undefined };
}

// ---------------------------------------------------------------------------------------------
// Status

export interface NextStep {
  readonly command: string;
  readonly allowedAt: string | undefined;
  readonly allowedNow: boolean;
}

export interface RotationStatus {
  readonly dir: string;
  readonly now: string;
  readonly step: 'idle' | RotationStep;
  readonly summary: string;
  readonly state: RotationState | undefined;
  /** What the CA directory serves now (undefined with `caError` when it does not load). */
  /** `roots`: those served; `expiredRoots`: in root-cert.pem, expired, anchoring nothing (not served). */
  readonly ca: { readonly signing: CertSummary; readonly roots: readonly CertSummary[]; readonly expiredRoots: readonly CertSummary[] } | undefined;
  readonly caError: string | undefined;
  readonly next: NextStep | undefined;
  /** What to check before running the next step. */
  readonly checks: readonly string[];
}

export function rotationStatus(dir: string, now: Date = new Date()): RotationStatus {
  const status = stepStatus(dir, now);
  const stale = status.ca?.expiredRoots ?? [];
  if (stale.length === 0) return status;
  return { ...status, checks: [...status.checks, ...stale.map((r) => `root-cert.pem also holds "${r.subject}", which expired on ${r.notAfter} and anchors nothing: meshcert does not serve it; remove it from the file`)] };
}

function stepStatus(dir: string, now: Date): RotationStatus {
  const state = readRotationState(dir);
  let ca: RotationStatus['ca'];
  let caError: string | undefined;
  try {
    const m = loadCaDir(dir, now);
    ca = { signing: summarize(m.signingCert), roots: m.roots.map(summarize), expiredRoots: m.expiredRoots.map(summarize) };
  } catch (e) {
    caError = (e as Error).message;
  }
  const base = { dir, now: now.toISOString(), state, ca, caError };
  const cm = `kubectl get configmap istio-ca-root-cert -n <namespace> -o jsonpath='{.data.root-cert\\.pem}' | grep -c 'BEGIN CERTIFICATE'`;
  const secret = 'istioctl proxy-config secret <pod>.<namespace> -o json';
  if (!state && replacingFrom(dir) === 'renewing') {
    return {
      ...base,
      step: 'idle',
      summary: 'no rotation in progress, but a renewal of the intermediate was interrupted (serve loads the set it staged)',
      next: { command: `meshcert ca renew-intermediate --dir ${dir}`, allowedAt: undefined, allowedNow: true },
      checks: ['re-run renew-intermediate to complete it'],
    };
  }
  if (!state) {
    return {
      ...base,
      step: 'idle',
      // A directory that holds no CA that loads has nothing to rotate: no next step to offer.
      summary: ca ? 'no rotation in progress' : 'no rotation in progress, and no CA that loads here',
      next: ca ? { command: `meshcert ca rotate start --dir ${dir}`, allowedAt: undefined, allowedNow: true } : undefined,
      checks: ca && ca.roots.length > 1 ? [`root-cert.pem holds ${ca.roots.length} roots although no rotation is in progress`] : [],
    };
  }
  switch (state.step) {
    case 'started': {
      const at = new Date(state.switchAllowedAt);
      return {
        ...base,
        step: 'started',
        summary: `new root added at ${state.startedAt}; still signing with the old intermediate "${state.oldIntermediate.subject}"; every response and istio-ca-root-cert carry both roots`,
        next: { command: `meshcert ca rotate switch --dir ${dir}`, allowedAt: at.toISOString(), allowedNow: now >= at },
        checks: [
          `meshcert has reloaded the directory: "meshcert request ... --out DIR" gives a root-cert.pem with 2 certificates (grep -c 'BEGIN CERTIFICATE')`,
          `every namespace's istio-ca-root-cert holds both roots: ${cm} prints 2`,
          `workloads have renewed since ${state.startedAt} and hold both roots: ${secret} shows ROOTCA with the new root (sha256 ${state.newRoot.fingerprint256})`,
          // istio-agent reads the roots again at each reconnect; ztunnel only when it starts, and the switch moves meshcert's serving certificate to the new root.
          `ambient mode: ztunnel has been restarted since istio-ca-root-cert in its namespace holds both roots (kubectl -n istio-system rollout restart ds/ztunnel), or it cannot reach meshcert after the switch`,
          `compare fingerprints with: openssl x509 -noout -fingerprint -sha256 -in <cert>`,
        ],
      };
    }
    case 'switching':
      return {
        ...base,
        step: 'switching',
        summary: `a switch started at ${state.switchedAt} was interrupted`,
        next: { command: `meshcert ca rotate switch --dir ${dir}`, allowedAt: undefined, allowedNow: true },
        checks: ['re-run switch to complete it'],
      };
    case 'switched': {
      const at = new Date(state.finishAllowedAt!);
      return {
        ...base,
        step: 'switched',
        summary: `switched at ${state.switchedAt}: signing with the new intermediate "${state.newIntermediate.subject}"; root-cert.pem still holds both roots`,
        next: { command: `meshcert ca rotate finish --dir ${dir}`, allowedAt: at.toISOString(), allowedNow: now >= at },
        checks: [
          `new certificates chain to the new root: ${secret} shows the new intermediate in default's chain, or: openssl verify -CAfile new-root.pem -untrusted inter.pem leaf.pem`,
          `no certificate from the old intermediate (sha256 ${state.oldIntermediate.fingerprint256}) is still in use; the last ones expire by ${state.finishAllowedAt}`,
          `meshcert's inventory, if enabled, lists no unexpired certificate issued before ${state.switchedAt}`,
        ],
      };
    }
    case 'finishing':
      return {
        ...base,
        step: 'finishing',
        summary: `a finish started at ${state.finishingAt} was interrupted`,
        next: { command: `meshcert ca rotate finish --dir ${dir}`, allowedAt: undefined, allowedNow: true },
        checks: ['re-run finish to complete it'],
      };
  }
}

// ---------------------------------------------------------------------------------------------
// Intermediate renewal under the same root

export interface RenewIntermediateOptions {
  readonly dir: string;
  /** Default 365d; never beyond the root's NotAfter. */
  readonly lifetimeMs?: number;
  /** Default: the current intermediate's key type. */
  readonly keyType?: KeyType;
  readonly now?: Date;
}

export interface RenewResult {
  readonly material: CaMaterial;
  readonly previous: CertSummary | undefined;
  readonly renewed: CertSummary;
  /** Where the previous intermediate was archived (undefined when completing an interrupted renewal). */
  readonly archive: string | undefined;
  readonly messages: readonly string[];
  readonly warnings: readonly string[];
}

/**
 * A new intermediate key and certificate signed by the SAME root (root-key.pem), swapped in
 * atomically per file. Leaves of the old intermediate keep verifying: the root bundle is unchanged.
 * Needs no readable ca-key.pem, so re-running after an interruption completes the renewal.
 */
export async function renewIntermediate(o: RenewIntermediateOptions): Promise<RenewResult> {
  return withCaDirLock(o.dir, 'ca renew-intermediate', () => renewIntermediateLocked(o));
}

async function renewIntermediateLocked(o: RenewIntermediateOptions): Promise<RenewResult> {
  checkSpans({ "the new intermediate's lifetime": o.lifetimeMs });
  const now = o.now ?? new Date();
  const { dir } = o;
  const state = readRotationState(dir);
  if (state) throw new ConfigError(`a root rotation is in progress (step "${state.step}"): finish it before renewing the intermediate; "ca rotate switch" already moves to a fresh intermediate`);
  const live = readLayout(dir);
  if (live.root === undefined) throw new ConfigError(`CA directory ${dir} has no root-cert.pem`);
  const optionsGiven = o.lifetimeMs !== undefined || o.keyType !== undefined;
  if (replacingFrom(dir) === 'renewing') return completeRenewal(dir, live.root, now, optionsGiven);
  // Killed once the staged set was installed, before it was cleared: done but for the clearing
  // (another renewal now would make a second key for nothing).
  const leftover = readCaTextIfPresent(caPath(join(dir, RENEWING_DIR), 'cert'));
  if (leftover !== undefined && live.cert !== undefined && leftover.trim() === live.cert.trim()) return clearInstalledRenewal(dir, now, optionsGiven);
  const roots = parseOrThrow(live.root, 'root-cert.pem');
  const oldCert = readCert(caPath(dir, 'cert'));
  if (oldCert && isSelfSigned(oldCert)) {
    throw new ConfigError('ca-cert.pem is itself the root (a self-signed CA, as istiod makes): there is no intermediate to renew; run "meshcert ca rotate start" to move to a new root with an intermediate');
  }
  if (live.rootKey === undefined) {
    throw new ConfigError(`the root key is offline: ${caPath(dir, 'rootKey')} is missing. Copy root-key.pem (mode 0600) into the CA directory for this step and move it offline again afterwards, or sign a new intermediate with your offline root and install ca-cert.pem, ca-key.pem and cert-chain.pem yourself ("meshcert ca check" validates them)`);
  }
  let rootKey: KeyObject;
  try {
    rootKey = createPrivateKey(live.rootKey);
  } catch {
    throw new ConfigError('root-key.pem is not a readable PEM private key (PKCS#8, PKCS#1 or SEC1, unencrypted)');
  }
  const root = rootToRenewUnder(roots.filter((r) => r.checkPrivateKey(rootKey)), oldCert, now);
  if (!root) throw new ConfigError('root-key.pem matches none of the roots in root-cert.pem');
  if (oldCert && !signedBy(oldCert, root)) {
    throw new ConfigError(`ca-cert.pem "${oneLine(oldCert.subject)}" is not signed by the root whose key is root-key.pem ("${oneLine(root.subject)}"); renew-intermediate keeps the same root, so it only renews an intermediate the root signed directly`);
  }
  const rootType = keyTypeOf(rootKey);
  const keyType = o.keyType ?? (oldCert ? keyTypeOf(oldCert.publicKey) : rootType);
  const rootNotAfter = new Date(root.validTo);
  if (rootNotAfter <= now) throw new ConfigError(`the root "${oneLine(root.subject)}" expired on ${rootNotAfter.toISOString()}: rotate the root instead ("meshcert ca rotate start")`);
  const warnings: string[] = [];
  const wanted = new Date(now.getTime() + (o.lifetimeMs ?? DEFAULT_INTERMEDIATE_LIFETIME_MS));
  const notAfter = wanted > rootNotAfter ? rootNotAfter : wanted;
  if (wanted > rootNotAfter) warnings.push(`the new intermediate ends with the root on ${rootNotAfter.toISOString()}: plan a root rotation ("meshcert ca rotate start")`);

  const org = organizationOf(oldCert ?? root);
  const interKey = await generateKey(keyType);
  const issuerCert = new x509.X509Certificate(root.raw);
  const carried = oldCert ? carriedExtensions(new x509.X509Certificate(oldCert.raw)) : [];
  const inter = await createIntermediateCert(
    interKey.keys.publicKey,
    { cert: issuerCert, key: await toSigningCryptoKey(rootKey, rootType), keyType: rootType },
    { subject: caSubject(org, 'intermediate CA', now, oldCert ? [oneLine(oldCert.subject)] : []), notBefore: new Date(now.getTime() - CA_BACKDATE_MS), notAfter },
    carried,
  );
  const files: Layout = { key: interKey.privateKeyPem, chain: pem(inter) + certToPem(root), cert: pem(inter) };
  const material = validateLayout(dir, { ...files, root: live.root }, now, 'cannot renew the intermediate');

  // Archive the previous intermediate before replacing it; stage the new set, then replace the
  // live files one by one (a server started meanwhile loads the staged set: loadServedCaDir).
  const archiveDir = join(dir, ARCHIVE_DIR, `${archiveName(now)}-intermediate`);
  if (live.cert !== undefined) writeLayout(archiveDir, { key: live.key, chain: live.chain, cert: live.cert });
  const renewingDir = join(dir, RENEWING_DIR);
  writeLayout(renewingDir, files);
  beginReplacing(dir, 'renewing');
  installRenewal(dir, files, now);
  const renewed = summarize(material.signingCert);
  return {
    material,
    previous: oldCert ? summarize(oldCert) : undefined,
    renewed,
    archive: archiveDir,
    messages: [
      `renewed the intermediate: meshcert now signs with "${renewed.subject}" (until ${renewed.notAfter}), under the same root "${oneLine(root.subject)}"`,
      `root-cert.pem is unchanged, so certificates from the previous intermediate keep verifying until they expire`,
      ...(carried.length > 0 ? [`kept the previous intermediate's ${carried.map(extensionName).join(', ')}`] : []),
      ...(live.cert !== undefined ? [`the previous intermediate and its key are archived under ${archiveDir} (keys 0600)`] : []),
      'move root-key.pem offline again if it was brought in for this step',
    ],
    warnings,
  };
}

/**
 * Of the roots with the root key (several when the root was re-issued with the same name and key:
 * an expired copy kept beside the current one), the one to sign the new intermediate: one that
 * signed the current intermediate, in force, ending last.
 */
function rootToRenewUnder(withKey: readonly X509Certificate[], current: X509Certificate | undefined, now: Date): X509Certificate | undefined {
  const score = (r: X509Certificate): number => (current && signedBy(current, r) ? 2 : 0) + (Date.parse(r.validTo) > now.getTime() ? 1 : 0);
  return [...withKey].sort((a, b) => score(b) - score(a) || Date.parse(b.validTo) - Date.parse(a.validTo))[0];
}

/** Replaces the live signing files with the renewal staged in renewing/ (marked as being replaced), then clears the stage. */
function installRenewal(dir: string, files: Layout, now: Date): void {
  writeLayout(dir, files);
  loadCurrent(dir, now, 'renewal left an unusable CA');
  endReplacing(dir);
  rmSync(join(dir, RENEWING_DIR), { recursive: true, force: true });
}

/**
 * Completes a renewal killed while it replaced the live files: installs the set it staged (already
 * archived the previous intermediate; no new key is made), so the mixed directory it left is not
 * archived as if it were an intermediate.
 */
function completeRenewal(dir: string, rootPem: string, now: Date, optionsGiven: boolean): RenewResult {
  const renewingDir = join(dir, RENEWING_DIR);
  const staged = readLayout(renewingDir);
  const files: Layout = { key: staged.key, chain: staged.chain, cert: staged.cert };
  const material = validateLayout(dir, { ...files, root: rootPem }, now, `cannot complete the interrupted renewal staged in ${renewingDir}`);
  installRenewal(dir, files, now);
  return resumedRenewal(material, 'completing a renewal of the intermediate that was interrupted (the previous intermediate was archived when it began)', 'renewed the intermediate: meshcert now signs with', optionsGiven);
}

/** A renewal killed after installing its set and before clearing renewing/: clears it, and says the renewal is done. */
function clearInstalledRenewal(dir: string, now: Date, optionsGiven: boolean): RenewResult {
  const material = loadCurrent(dir, now, 'the renewal installed before it was interrupted left an unusable CA');
  rmSync(join(dir, RENEWING_DIR), { recursive: true, force: true });
  endReplacing(dir);
  return resumedRenewal(material, `an interrupted renewal had already installed its intermediate; removed what it staged in ${join(dir, RENEWING_DIR)}`, 'meshcert signs with', optionsGiven);
}

/** What a re-run that ends an interrupted renewal says: no new key, no archive. */
function resumedRenewal(material: CaMaterial, first: string, signs: string, optionsGiven: boolean): RenewResult {
  const renewed = summarize(material.signingCert);
  return {
    material,
    previous: undefined,
    renewed,
    archive: undefined,
    messages: [first, `${signs} "${renewed.subject}" (until ${renewed.notAfter})`, 'move root-key.pem offline again if it was brought in for this step'],
    warnings: optionsGiven ? ['--lifetime and --key-type were not used: the interrupted renewal was completed with the intermediate it had made; run renew-intermediate again for one made with them'] : [],
  };
}

// ---------------------------------------------------------------------------------------------

/**
 * The state with the longest leaf lifetime set to `--max-leaf-lifetime` after the recorded switch
 * (capped by the old root's expiry, as at the switch), or the same object when it is not given or
 * unchanged. A re-run of switch is how an operator corrects it: leaves from the old intermediate
 * may live longer than first said (a policy's max raised), and finish must then wait longer. A
 * shorter one lets finish run earlier, which is what finish's own --force is for: refused without
 * --force here too, and recorded (maxLeafLifetimeForced) with it.
 */
function withLeafLifetime(state: RotationState, o: Pick<RotateSwitchOptions, 'maxLeafLifetimeMs' | 'force'>): { next: RotationState; warnings: string[] } {
  const maxLeafMs = o.maxLeafLifetimeMs;
  if (maxLeafMs === undefined || state.switchedAt === undefined) return { next: state, warnings: [] };
  const seconds = Math.round(maxLeafMs / 1000);
  if (seconds === state.maxLeafLifetimeSeconds) return { next: state, warnings: [] };
  const finishAllowedAt = new Date(Math.min(Date.parse(state.switchedAt) + maxLeafMs, Date.parse(state.oldRoot.notAfter))).toISOString();
  const shorter = state.maxLeafLifetimeSeconds !== undefined && seconds < state.maxLeafLifetimeSeconds;
  if (!shorter) return { next: { ...state, maxLeafLifetimeSeconds: seconds, finishAllowedAt }, warnings: [] };
  const was = `${formatDuration(state.maxLeafLifetimeSeconds!)} recorded at the switch`;
  if (!o.force) {
    throw new ConfigError(`--max-leaf-lifetime ${formatDuration(seconds)} is shorter than the ${was}: leaves the old intermediate signed may stay valid that long, and a peer given only the new root would reject them. Pass --force once you have checked that none lives longer`);
  }
  return {
    next: { ...state, maxLeafLifetimeSeconds: seconds, finishAllowedAt, maxLeafLifetimeForced: true },
    warnings: [`shortened the longest leaf lifetime below the ${was} (--force): finish may now remove the old root while its leaves are still valid`],
  };
}

function noop(state: RotationState, message: string): StepResult {
  return { changed: false, messages: [message], warnings: [], state };
}

function loadCurrent(dir: string, now: Date, context: string): CaMaterial {
  try {
    return loadCaDir(dir, now);
  } catch (e) {
    if (e instanceof ConfigError) throw new ConfigError(`${context}: ${e.message}`);
    throw e;
  }
}

function loadNext(dir: string, state: RotationState, now: Date): CaMaterial {
  const nextDir = join(dir, NEXT_DIR);
  if (!existsSync(caPath(nextDir, 'cert'))) throw new ConfigError(`${nextDir} is missing: the new CA staged by "ca rotate start" is gone; restore it, or remove ${rotationFile(dir)} and the new root from root-cert.pem and start again`);
  const next = loadCurrent(nextDir, now, `the new CA in ${nextDir} does not load`);
  if (next.signingCert.fingerprint256 !== state.newIntermediate.fingerprint256 || !next.roots.some((r) => r.fingerprint256 === state.newRoot.fingerprint256)) {
    throw new ConfigError(`${nextDir} does not hold the CA recorded at start (intermediate ${state.newIntermediate.fingerprint256}); inspect ${dir}`);
  }
  return next;
}

/** `roots`: what root-cert.pem holds (an expired root stays in the file; loadCaDir leaves it out of the bundle only). */
function requireRoots(roots: readonly X509Certificate[], wanted: readonly CertSummary[], context: string): void {
  for (const w of wanted) {
    if (!roots.some((r) => r.fingerprint256 === w.fingerprint256)) {
      throw new ConfigError(`${context}: root-cert.pem no longer holds the root "${w.subject}" (sha256 ${w.fingerprint256}); inspect the directory`);
    }
  }
}

function withoutRoot(roots: readonly X509Certificate[], drop: CertSummary): string {
  return roots.filter((r) => r.fingerprint256 !== drop.fingerprint256).map(certToPem).join('');
}

function parseOrThrow(text: string, file: string): X509Certificate[] {
  try {
    return parsePemBundle(text);
  } catch {
    throw new ConfigError(`${file} holds a PEM block that is not a valid X.509 certificate`);
  }
}
