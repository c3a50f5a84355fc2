import { randomUUID } from 'node:crypto';
import { accessSync, chownSync, closeSync, constants, existsSync, fchmodSync, fchownSync, fsyncSync, linkSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { dirname, join } from 'node:path';
import { ConfigError } from '../errors/ca-error.js';
import { MAX_PEM_BYTES, readProblem, readTextFile } from '../fs/read-file.js';

/** The Istio plug-in CA layout (Secret `cacerts`). */
export const CA_FILES = {
  cert: 'ca-cert.pem',
  key: 'ca-key.pem',
  chain: 'cert-chain.pem',
  root: 'root-cert.pem',
  /** Not part of Istio's layout: written by `ca init` so intermediates can be renewed; move it offline. */
  rootKey: 'root-key.pem',
} as const;

/** A root rotation's state (see rotate.ts): a directory holding it holds a CA, whatever else is missing. */
export const ROTATION_FILE = 'rotation.json';

export function caPath(dir: string, file: keyof typeof CA_FILES): string {
  return join(dir, CA_FILES[file]);
}

/**
 * Writes atomically (temp file + rename) so a reader never sees half a file, and durably: the
 * data reaches the disk before the rename, and the rename before this returns. Without the
 * syncs a crash or power loss soon after can leave a CA key file empty, or the old file back.
 * Private keys get mode 0600 before any byte is written; a failed write leaves no temp file.
 */
export function writeFileAtomic(path: string, data: string | Buffer, mode = 0o644): void {
  const dir = dirname(path);
  makeDirectory(dir);
  const owner = ownerOf(existsSync(path) ? path : dir);
  const tmp = `${path}.${process.pid}.${Date.now()}.tmp`;
  // Outside the cleanup below: a temp file this call did not create (EEXIST) is another writer's.
  const fd = openSync(tmp, 'wx', mode);
  try {
    try {
      fchmodSync(fd, mode);
      keepOwner(fd, owner);
      writeFileSync(fd, data);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
  syncDirectory(dir);
}

/**
 * Makes `dir` and its missing parents (0700), durably: each one made is synced into its parent,
 * or a crash could lose the directory with the files fsynced into it. Run as root, each takes
 * its parent's owner (see keepOwner).
 */
export function makeDirectory(dir: string): void {
  const created = mkdirSync(dir, { recursive: true, mode: 0o700 });
  if (created === undefined) return;
  // Parents first: each takes the owner of the one above it.
  for (const d of madeDirectories(dir, created)) {
    syncDirectory(dirname(d));
    keepOwner(d, ownerOf(dirname(d)));
  }
}

/** The directories mkdirSync made for `dir`, `created` (the first it made) first. */
function madeDirectories(dir: string, created: string): string[] {
  const out: string[] = [];
  for (let d = dir; d !== dirname(created); d = dirname(d)) out.unshift(d);
  return out;
}

function ownerOf(path: string): { uid: number; gid: number } {
  const st = statSync(path);
  return { uid: st.uid, gid: st.gid };
}

/**
 * Run as root (a step run with sudo, say), a file written takes the owner of the file it replaces,
 * or of its directory, and a directory made the owner of its parent: the CA directory's files stay
 * the service user's, who could otherwise not read ca-key.pem at the next start. Other users
 * cannot give files away, and write as themselves.
 */
function keepOwner(target: number | string, owner: { uid: number; gid: number }): void {
  if (process.getuid?.() !== 0) return;
  if (typeof target === 'number') fchownSync(target, owner.uid, owner.gid);
  else chownSync(target, owner.uid, owner.gid);
}

/** Makes a rename in `dir` durable (a no-op where directories cannot be opened for it). */
function syncDirectory(dir: string): void {
  let fd: number | undefined;
  try {
    fd = openSync(dir, 'r');
    fsyncSync(fd);
  } catch {
    // Some filesystems refuse fsync on a directory (EINVAL); the rename itself has happened.
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

export function writePrivateKey(path: string, pem: string): void {
  writeFileAtomic(path, pem, 0o600);
}

/**
 * Marks a CA directory as being created by `ca init` or `ca import-istiod`, from before the first
 * file until after ca-cert.pem (written last). A directory holding the marker was never complete,
 * and is made again, not refused as "already holds a CA" nor loaded half written.
 */
const CREATING_MARKER = '.meshcert-creating';
/**
 * A marker younger than this is another process's creation still running (two replicas or a CLI
 * on one empty directory), not an interrupted one: making a CA takes seconds at most (an RSA-4096
 * root included). Older, its creator is taken to be dead.
 */
export const CREATION_FRESH_MS = 30_000;

/**
 * The directory holds a CA, or another process is creating one there: never written over. Under
 * ca.autoInit, a server that found the directory empty a moment before waits for it and loads it.
 */
export class CaDirTaken extends ConfigError {}

/** Claims the directory for one creation (the marker is created exclusively); throws CaDirTaken when another holds it. */
export function beginCaCreation(dir: string): void {
  const marker = join(dir, CREATING_MARKER);
  let fd: number;
  try {
    fd = openSync(marker, 'wx', 0o600);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') throw new CaDirTaken(`another process is creating a CA in ${dir} (${marker} exists); wait for it to finish`);
    throw e;
  }
  try {
    writeFileSync(fd, `${new Date().toISOString()} pid ${process.pid}\n`);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  syncDirectory(dir);
}

export function endCaCreation(dir: string): void {
  rmSync(join(dir, CREATING_MARKER), { force: true });
  removeStaleTemps(dir);
  syncDirectory(dir);
}

/** Held while a `ca` step (rotate start/switch/finish, renew-intermediate) works on the directory. */
export const STEP_LOCK = '.meshcert-step.lock';
/** A lock from another host is taken as its holder's for this long (its pid cannot be checked here). */
const FOREIGN_LOCK_MS = 10 * 60_000;

/** Another `ca` command is working on the directory. */
export class CaDirBusy extends ConfigError {}

/**
 * Runs one `ca` step with the directory to itself: two at once (two "rotate start"s, say) would
 * each stage a root and leave one trusted for good without its key. The lock is created
 * exclusively and names its holder with a nonce, so that only the holder removes it. A holder that
 * is gone is taken over: no process of its pid runs here (or the lock is over an hour old, as no
 * step takes that long and a pid may be reused), or, from another host, the lock is over ten
 * minutes old by the file's own time. A takeover moves the stale lock aside first and checks it
 * moved the one it judged, so two takers cannot both win. A directory that does not exist, or one
 * this process cannot write (a step with nothing to do there still runs), is left to the step.
 */
export function withCaDirLock<T>(dir: string, step: string, fn: () => T): T {
  const path = join(dir, STEP_LOCK);
  const nonce = randomUUID();
  const text = `${JSON.stringify({ step, pid: process.pid, host: hostname(), at: new Date().toISOString(), nonce })}\n`;
  for (let attempt = 0; ; attempt++) {
    try {
      writeFileSync(path, text, { flag: 'wx', mode: 0o600 });
      break;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'EROFS' || code === 'EACCES') return fn();
      if (code !== 'EEXIST') throw e;
      const seen = readLockText(path);
      if (seen === undefined && attempt < 2) continue; // released meanwhile
      const holder = parseStepLock(seen);
      if (attempt > 1 || seen === undefined || lockHeld(path, holder)) {
        const who = holder ? `"${holder.step}", pid ${holder.pid} on ${holder.host}, since ${holder.at}` : 'unknown';
        throw new CaDirBusy(`another meshcert ca command is working on ${dir} (${who}); wait for it to finish (remove ${path} only if that process is gone)`);
      }
      takeOver(path, seen);
    }
  }
  const release = (): void => {
    if (readLockText(path)?.includes(nonce)) rmSync(path, { force: true });
  };
  let result: T;
  try {
    result = fn();
  } catch (e) {
    release();
    throw e;
  }
  if (result instanceof Promise) return result.finally(release) as T;
  release();
  return result;
}

/** Moves a stale lock aside; puts it back when what moved is not the lock judged (another took over meanwhile). Exported for tests. */
export function takeOver(path: string, judged: string): void {
  const aside = `${path}.${process.pid}.${randomUUID()}`;
  try {
    renameSync(path, aside);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return; // gone already: try again
    throw e;
  }
  if (readLockText(aside) !== judged) {
    try {
      linkSync(aside, path);
    } catch {
      // A third lock is there now: it holds the directory, and the next attempt says so.
    }
  }
  rmSync(aside, { force: true });
}

interface StepLockHolder {
  step: string;
  pid: number;
  host: string;
  at: string;
}

function readLockText(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

function parseStepLock(text: string | undefined): StepLockHolder | undefined {
  try {
    const v = JSON.parse(text ?? '') as Partial<StepLockHolder>;
    if (typeof v.pid === 'number' && typeof v.host === 'string' && typeof v.at === 'string' && typeof v.step === 'string') return v as StepLockHolder;
  } catch {
    // Empty or half written (its writer killed at once): judged by its age.
  }
  return undefined;
}

/** A lock whose holder has not written it whole (just created) is given this long. */
const UNWRITTEN_LOCK_MS = 10_000;
/** No step takes this long: a lock older than this is stale even if a process of its pid runs (pids are reused). */
const MAX_LOCK_MS = 60 * 60_000;

/** Whether the lock's holder may still be at work. Ages are the file's, as the shared volume's clock keeps it. */
function lockHeld(path: string, h: StepLockHolder | undefined): boolean {
  let age: number;
  try {
    age = Date.now() - statSync(path).mtimeMs;
  } catch {
    return false;
  }
  if (h === undefined) return age < UNWRITTEN_LOCK_MS;
  if (h.host !== hostname()) return age < FOREIGN_LOCK_MS;
  return age < MAX_LOCK_MS && pidRuns(h.pid);
}

/** A temp file of writeFileAtomic older than this is a killed writer's: none takes a minute. */
const STALE_TEMP_MS = 60_000;

/**
 * Removes the temp files writeFileAtomic leaves when killed between writing and renaming
 * (`<name>.<pid>.<ms>.tmp`), in the CA directory and the ones a step keeps in it (next/, previous/,
 * renewing/, archive/*), and the `.staging-*` directories of earlier versions' steps: one may hold
 * a copy of a private key, which has no business lying there.
 * Called once a step completes. A temp file is a dead writer's when no process of its pid runs
 * here, or when its own stamp is over a minute old (a pid from another host or pod may run here).
 */
export function removeStaleTemps(dir: string, now = Date.now()): void {
  let entries: string[];
  try {
    entries = readdirSync(dir, { recursive: true, encoding: 'utf8' });
  } catch {
    return;
  }
  for (const rel of entries) {
    if (rel.split('/').length > 3) continue;
    // A staging directory an earlier version's killed step left (steps write none now, and hold
    // the directory's lock): it may hold a key.
    if (/^\.staging-[^/]+$/.test(rel)) {
      rmSync(join(dir, rel), { recursive: true, force: true });
      continue;
    }
    const m = /(?:^|\/)[^/]+\.(\d+)\.(\d+)\.tmp$/.exec(rel);
    if (!m) continue;
    const pid = Number(m[1]);
    if (pid === process.pid) continue;
    if (!pidRuns(pid) || now - Number(m[2]) > STALE_TEMP_MS) rmSync(join(dir, rel), { force: true });
  }
}

function pidRuns(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    // EPERM: it runs, as another user.
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * What recoverInterruptedCreation would do in `dir` (reads only): 'none' without a marker,
 * 'in-progress' while the marker's date is within CREATION_FRESH_MS of this clock, either way
 * (nothing is touched), 'completed' when ca-cert.pem was written (only the marker goes), 'cleared'
 * otherwise.
 */
export function interruptedCreation(dir: string, now = Date.now()): 'none' | 'in-progress' | 'completed' | 'cleared' {
  let mtimeMs: number;
  try {
    mtimeMs = statSync(join(dir, CREATING_MARKER)).mtimeMs;
  } catch {
    return 'none';
  }
  if (Math.abs(now - mtimeMs) < CREATION_FRESH_MS) return 'in-progress';
  return leftBy(dir);
}

function leftBy(dir: string): 'none' | 'completed' | 'cleared' {
  if (!existsSync(join(dir, CREATING_MARKER))) return 'none';
  return existsSync(caPath(dir, 'cert')) ? 'completed' : 'cleared';
}

/** A marker dated this long ago is a dead creation's whatever the clocks say: none takes that long. */
const CREATION_DEAD_MS = 10 * 60_000;

/**
 * Waits while another process creates a CA in `dir`: until its marker goes ('none'), or until the
 * marker has stayed the same for CREATION_FRESH_MS by this process's own clock ('stale': its
 * creator died). Judged by what this process sees, not by the marker's date: on a shared volume
 * the file server dates it, and a replica whose clock is ahead would take a live creation for a
 * dead one (or one behind, a dead one for live for ever). A marker beside a ca-cert.pem (written
 * last) is a complete creation's ('stale' too: only the marker is left to go). `onWait` is called
 * once, when it waits.
 */
export async function waitForCaCreation(dir: string, onWait?: () => void, freshMs = CREATION_FRESH_MS): Promise<'none' | 'stale'> {
  let seen: { ino: number; mtimeMs: number; since: number } | undefined;
  for (;;) {
    let st: { ino: number; mtimeMs: number };
    try {
      st = statSync(join(dir, CREATING_MARKER));
    } catch {
      return 'none';
    }
    if (Date.now() - st.mtimeMs >= CREATION_DEAD_MS) return 'stale';
    // ca-cert.pem is written last: with it, the creation is complete, only its marker is left.
    if (existsSync(caPath(dir, 'cert'))) return 'stale';
    if (seen === undefined) onWait?.();
    if (seen === undefined || seen.ino !== st.ino || seen.mtimeMs !== st.mtimeMs) seen = { ino: st.ino, mtimeMs: st.mtimeMs, since: performance.now() };
    else if (performance.now() - seen.since >= freshMs) return 'stale';
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Finishes what an interrupted `ca init`/`import-istiod` left: with ca-cert.pem written, the set is
 * complete and only the marker goes; without it, the files it had written go too (they were never
 * used: nothing loads a CA without ca-cert.pem). Returns what it did; 'none' without a marker. A
 * marker still fresh is another process's creation (CaDirTaken), unless `stale` says the caller
 * watched it go stale (waitForCaCreation).
 */
export function recoverInterruptedCreation(dir: string, o: { stale?: boolean } = {}): 'none' | 'completed' | 'cleared' {
  const found = o.stale ? leftBy(dir) : interruptedCreation(dir);
  if (found === 'in-progress') {
    throw new CaDirTaken(`another process is creating a CA in ${dir} (its ${CREATING_MARKER} is under ${CREATION_FRESH_MS / 1000} s old); wait for it to finish, or, if a creation was killed, run again in ${CREATION_FRESH_MS / 1000} s`);
  }
  if (found === 'cleared') for (const f of Object.keys(CA_FILES) as Array<keyof typeof CA_FILES>) rmSync(caPath(dir, f), { force: true });
  if (found !== 'none') endCaCreation(dir);
  return found;
}

/**
 * Marks a CA directory whose signing files (ca-key.pem, cert-chain.pem, ca-cert.pem) a step is
 * replacing one by one, from the complete new set it staged and checked in a subdirectory first.
 * Killed in between, the step leaves a key that does not match ca-cert.pem; serve then loads the
 * staged set (see loadServedCaDir), and the step completes when re-run.
 */
const REPLACING_MARKER = '.meshcert-replacing';
/** Staged sets by subdirectory, and the step that stages each. */
/** The new CA, staged by `ca rotate start` (same layout as the CA directory). */
export const NEXT_DIR = 'next';
/** The old signing material, kept by `ca rotate switch` until `finish` archives it. */
export const PREVIOUS_DIR = 'previous';
export const ARCHIVE_DIR = 'archive';
/** renew-intermediate's new set, staged before the live files are replaced (see beginReplacing). */
export const RENEWING_DIR = 'renewing';

export const STAGED_SETS = { next: 'ca rotate switch', renewing: 'ca renew-intermediate' } as const;
export type StagedSet = keyof typeof STAGED_SETS;

export function beginReplacing(dir: string, staged: StagedSet): void {
  writeFileAtomic(join(dir, REPLACING_MARKER), `${staged}\n`, 0o600);
}

export function endReplacing(dir: string): void {
  rmSync(join(dir, REPLACING_MARKER), { force: true });
  removeStaleTemps(dir);
  syncDirectory(dir);
}

/** The staged set a replacement in `dir` was interrupted with (only one of STAGED_SETS, and only while it has a ca-cert.pem), or undefined. */
export function replacingFrom(dir: string): StagedSet | undefined {
  let text: string;
  try {
    text = readFileSync(join(dir, REPLACING_MARKER), 'utf8').slice(0, 64).trim();
  } catch {
    return undefined;
  }
  return Object.hasOwn(STAGED_SETS, text) && existsSync(caPath(join(dir, text), 'cert')) ? (text as StagedSet) : undefined;
}

/**
 * A file of a CA directory (a PEM file, the rotation state), or undefined when there is none (a
 * file removed between a check and the read included); any other problem is a ConfigError naming it.
 */
export function readCaTextIfPresent(path: string): string | undefined {
  try {
    return readTextFile(path, MAX_PEM_BYTES);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new ConfigError(`cannot read ${path}: ${readProblem(e)}`);
  }
}

/**
 * What of a CA directory other users may reach, as warnings: a private key others can read
 * (meshcert writes its keys 0600; a Secret volume's 0440 with the pod's fsGroup is fine: group, not
 * others), or a directory others may replace files in. Checked, not changed: the files are the
 * operator's. Modes are those of what a reader gets (a Secret volume's files are symlinks into
 * `..data`, whose own mode says nothing); a directory that is read-only (a Secret volume) or
 * sticky (others cannot remove or rename files they do not own) is not open to replacement.
 */
export function exposedKeyNotes(dir: string): string[] {
  const notes: string[] = [];
  const mode = (path: string): number | undefined => {
    try {
      return statSync(path).mode;
    } catch {
      return undefined;
    }
  };
  const dirMode = mode(dir);
  if (dirMode !== undefined && (dirMode & 0o002) !== 0 && (dirMode & 0o1000) === 0 && writable(dir)) {
    notes.push(`${dir} is writable by all users (mode ${octal(dirMode)}): anyone on this machine can replace the CA's files; chmod o-w it (meshcert makes its CA directories 0700)`);
  }
  for (const d of keyDirectories(dir)) {
    for (const file of ['key', 'rootKey'] as const) {
      const path = caPath(d, file);
      const m = mode(path);
      if (m !== undefined && (m & 0o007) !== 0) {
        notes.push(`${path}, a private key, is open to all users (mode ${octal(m)}): chmod 600 it (meshcert writes its keys 0600)`);
      }
    }
  }
  return notes;
}

/**
 * The directories of a CA directory that may hold keys: itself, a rotation's or renewal's staged
 * set (next/, renewing/), the set a switch replaced (previous/) and each archived set (archive/*).
 */
function keyDirectories(dir: string): string[] {
  let archived: string[] = [];
  try {
    archived = readdirSync(join(dir, ARCHIVE_DIR)).map((a) => join(dir, ARCHIVE_DIR, a));
  } catch {
    // none
  }
  return [dir, ...[NEXT_DIR, RENEWING_DIR, PREVIOUS_DIR].map((s) => join(dir, s)), ...archived.sort()];
}

/** False for a read-only mount (EROFS), whatever its mode bits say. */
function writable(dir: string): boolean {
  try {
    accessSync(dir, constants.W_OK);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code !== 'EROFS';
  }
}

function octal(mode: number): string {
  return `0${(mode & 0o777).toString(8).padStart(3, '0')}`;
}
