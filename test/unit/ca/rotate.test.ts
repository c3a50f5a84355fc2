import { execFileSync } from 'node:child_process';
import { createPrivateKey, generateKeyPairSync, KeyObject, X509Certificate } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { CaDirBusy, STEP_LOCK, takeOver } from '../../../src/ca/files.js';
import { caSubjectName, createIntermediateCert, createRootCert, generateKey } from '../../../src/ca/generate.js';
import { initCaDir } from '../../../src/ca/init.js';
import { loadCaDir, loadServedCaDir, pendingStepNote } from '../../../src/ca/material.js';
import {
  readRotationState,
  renewIntermediate,
  rotateFinish,
  rotateStart,
  rotateSwitch,
  rotationStatus,
  writeRotationState,
  type RotationState,
} from '../../../src/ca/rotate.js';
import { ConfigError } from '../../../src/errors/ca-error.js';
import { LocalIssuer } from '../../../src/issuer/local.js';
import { parsePemBundle } from '../../../src/x509/pem.js';
import { verifyResponseChain } from '../../../src/x509/verify-chain.js';
import { x509 } from '../../fixtures/csr.js';
import { caCert, nameConstraints, writeCaDir } from '../../support/constrained-ca.js';

const MINUTE_MS = 60_000;
const HOUR_MS = 60 * MINUTE_MS;
const DAY_MS = 24 * HOUR_MS;
const YEAR_MS = 365 * DAY_MS;
/** Whole seconds, as X.509 stores them. */
const T0 = new Date(Math.floor(Date.now() / 1000) * 1000);
const T1 = new Date(T0.getTime() + HOUR_MS); // start
const T2 = new Date(T1.getTime() + 13 * HOUR_MS); // switch (default --min-wait 13h)
const T3 = new Date(T2.getTime() + 90 * DAY_MS); // finish (default --max-leaf-lifetime 90d)

let base: string;
let n = 0;
const freshDir = (): string => join(base, `ca-${++n}`);
const read = (dir: string, file: string): string => readFileSync(join(dir, file), 'utf8');
const mode = (path: string): number => statSync(path).mode & 0o777;
const cert = (dir: string, file: string): X509Certificate => new X509Certificate(readFileSync(join(dir, file)));
const fps = (pem: string): string[] => parsePemBundle(pem).map((c) => c.fingerprint256);
/** Every regular file under `dir`, relative path → content. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const e of readdirSync(dir, { recursive: true, withFileTypes: true })) {
    if (e.isFile()) out[join(e.parentPath, e.name).slice(dir.length + 1)] = readFileSync(join(e.parentPath, e.name), 'utf8');
  }
  return out;
}
function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return e as ConfigError;
  }
  throw new Error('expected a ConfigError');
}
async function configErrorAsync(p: Promise<unknown>): Promise<ConfigError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(ConfigError);
  return e as ConfigError;
}
function leafFrom(dir: string, at: Date): { pem: string; chainPem: readonly string[] } {
  const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return new LocalIssuer('t', loadCaDir(dir, at)).sign({
    spki: publicKey.export({ type: 'spki', format: 'der' }),
    uris: ['spiffe://cluster.local/ns/default/sa/a'],
    notBefore: new Date(at.getTime() - 2 * MINUTE_MS),
    notAfter: new Date(at.getTime() + DAY_MS),
  });
}

async function initAt(opts: Partial<Parameters<typeof initCaDir>[0]> = {}): Promise<string> {
  const dir = freshDir();
  await initCaDir({ dir, now: T0, ...opts });
  return dir;
}
async function startedAt(opts: Partial<Parameters<typeof initCaDir>[0]> = {}): Promise<string> {
  const dir = await initAt(opts);
  await rotateStart({ dir, now: T1 });
  return dir;
}
async function switchedAt(): Promise<string> {
  const dir = await startedAt();
  rotateSwitch({ dir, now: T2 });
  return dir;
}

/**
 * Runs `step` so that it dies as a kill would leave it: after ca-key.pem is replaced and before
 * cert-chain.pem and ca-cert.pem are. The temp file writeFileAtomic would create for cert-chain.pem
 * (its name holds the pid and Date.now(), held still here) is there already, so that write fails.
 */
async function interruptedAt<T>(dir: string, at: Date, step: () => T | Promise<T>): Promise<void> {
  vi.useFakeTimers({ toFake: ['Date'], now: at });
  const blocker = join(dir, `cert-chain.pem.${process.pid}.${Date.now()}.tmp`);
  writeFileSync(blocker, '');
  try {
    await expect(Promise.resolve().then(step)).rejects.toThrow(/EEXIST/);
  } finally {
    vi.useRealTimers();
    rmSync(blocker);
  }
}

beforeAll(() => {
  base = mkdtempSync(join(tmpdir(), 'meshcert-ca-rotate-'));
});
afterAll(() => {
  rmSync(base, { recursive: true, force: true });
});

describe('ca rotate start', () => {
  let dir: string;
  let before: Record<string, string>;
  let result: Awaited<ReturnType<typeof rotateStart>>;

  beforeAll(async () => {
    dir = await initAt();
    before = snapshot(dir);
    result = await rotateStart({ dir, now: T1 });
  });

  it('stages a new root and intermediate in next/ with the layout and keys 0600', () => {
    expect(readdirSync(join(dir, 'next')).sort()).toEqual(['ca-cert.pem', 'ca-key.pem', 'cert-chain.pem', 'root-cert.pem', 'root-key.pem']);
    expect(mode(join(dir, 'next/ca-key.pem'))).toBe(0o600);
    expect(mode(join(dir, 'next/root-key.pem'))).toBe(0o600);
    expect(mode(join(dir, 'next'))).toBe(0o700);
    const next = loadCaDir(join(dir, 'next'), T1);
    expect(next.roots).toHaveLength(1);
    expect(next.roots[0]!.checkPrivateKey(createPrivateKey(read(dir, 'next/root-key.pem')))).toBe(true);
  });

  it('makes the new root valid for ten years and the new intermediate for one, both distinct from the old ones', () => {
    const root = cert(dir, 'next/root-cert.pem');
    const inter = cert(dir, 'next/ca-cert.pem');
    expect(Date.parse(root.validTo)).toBe(T1.getTime() + 10 * YEAR_MS);
    expect(Date.parse(inter.validTo)).toBe(T1.getTime() + YEAR_MS);
    expect(inter.verify(root.publicKey)).toBe(true);
    expect(root.fingerprint256).not.toBe(fps(before['root-cert.pem']!)[0]);
    expect(root.subject).not.toBe(parsePemBundle(before['root-cert.pem']!)[0]!.subject);
    expect(root.subject).toMatch(/^O=meshcert\nCN=meshcert root CA /);
    expect(root.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
  });

  it('adds the new root after the old one in root-cert.pem and leaves the signing files alone', () => {
    const oldRoot = fps(before['root-cert.pem']!)[0]!;
    expect(fps(read(dir, 'root-cert.pem'))).toEqual([oldRoot, cert(dir, 'next/root-cert.pem').fingerprint256]);
    for (const f of ['ca-cert.pem', 'ca-key.pem', 'cert-chain.pem', 'root-key.pem']) expect(read(dir, f)).toBe(before[f]);
  });

  it('leaves a directory meshcert loads, still signing with the old intermediate, handing out both roots', () => {
    const m = loadCaDir(dir, T1);
    expect(m.signingCert.fingerprint256).toBe(cert(dir, 'ca-cert.pem').fingerprint256);
    expect(m.roots).toHaveLength(2);
    const leaf = leafFrom(dir, T1);
    expect(fps(leaf.chainPem.at(-1)!)).toHaveLength(2);
    expect(() => verifyResponseChain([leaf.pem, ...leaf.chainPem], before['root-cert.pem']!, T1)).not.toThrow();
  });

  it('records the step, times and fingerprints in rotation.json', () => {
    const s = readRotationState(dir)!;
    expect(s).toMatchObject({
      version: 1,
      step: 'started',
      startedAt: T1.toISOString(),
      minWaitSeconds: 13 * 3600,
      switchAllowedAt: new Date(T1.getTime() + 13 * HOUR_MS).toISOString(),
      oldRoot: { fingerprint256: fps(before['root-cert.pem']!)[0] },
      newRoot: { fingerprint256: cert(dir, 'next/root-cert.pem').fingerprint256 },
      oldIntermediate: { fingerprint256: fps(before['ca-cert.pem']!)[0] },
      newIntermediate: { fingerprint256: cert(dir, 'next/ca-cert.pem').fingerprint256 },
    });
    expect(s.switchedAt).toBeUndefined();
    expect(result.changed).toBe(true);
    expect(result.messages.join('\n')).toMatch(/ca rotate switch/);
  });

  it('leaves no staging directories or temporary files behind', () => {
    expect(Object.keys(snapshot(dir)).filter((f) => f.includes('.staging') || f.endsWith('.tmp'))).toEqual([]);
  });

  it('is a no-op with a message when run again', async () => {
    const snap = snapshot(dir);
    const again = await rotateStart({ dir, now: new Date(T1.getTime() + HOUR_MS) });
    expect(again.changed).toBe(false);
    expect(again.messages[0]).toMatch(/already in progress \(step "started"/);
    expect(snapshot(dir)).toEqual(snap);
  });

  it('honours --key-type, --org and --min-wait', async () => {
    const d = await initAt();
    await rotateStart({ dir: d, now: T1, keyType: 'ec384', organization: 'acme', minWaitMs: HOUR_MS });
    expect(cert(d, 'next/root-cert.pem').publicKey.asymmetricKeyDetails?.namedCurve).toBe('secp384r1');
    expect(cert(d, 'next/ca-cert.pem').subject).toMatch(/^O=acme\nCN=acme intermediate CA /);
    expect(readRotationState(d)!.minWaitSeconds).toBe(3600);
  });

  it('takes the organization of the current root by default', async () => {
    const d = await initAt({ organization: 'example-mesh' });
    await rotateStart({ dir: d, now: T1 });
    expect(cert(d, 'next/root-cert.pem').subject).toMatch(/^O=example-mesh\nCN=example-mesh root CA /);
  });

  it('keeps an organization holding a comma whole in the new CA', async () => {
    const d = await initAt({ organization: 'Acme, Inc.' });
    await rotateStart({ dir: d, now: T1 });
    // Node prints the names RFC 2253-escaped.
    expect(cert(d, 'next/root-cert.pem').subject).toMatch(/^O=Acme\\, Inc\.\nCN=Acme\\, Inc\. root CA /);
    expect(cert(d, 'next/ca-cert.pem').subject).toMatch(/^O=Acme\\, Inc\.\nCN=Acme\\, Inc\. intermediate CA /);
  });

  it('carries over an organization with a trailing space without a stray backslash', async () => {
    const d = await initAt({ organization: 'Acme ' });
    await rotateStart({ dir: d, now: T1 });
    expect(cert(d, 'next/root-cert.pem').subject).toMatch(/^O=Acme\nCN=Acme root CA /);
  });

  it('resumes an interrupted start by reusing the complete next/ (its root may already be out)', async () => {
    const d = await startedAt();
    const newRoot = cert(d, 'next/root-cert.pem').fingerprint256;
    // As if it had stopped after staging next/, before root-cert.pem and rotation.json.
    rmSync(join(d, 'rotation.json'));
    writeFileSync(join(d, 'root-cert.pem'), parsePemBundle(read(d, 'root-cert.pem'))[0]!.toString());
    const r = await rotateStart({ dir: d, now: T1 });
    expect(r.messages[0]).toMatch(/reusing the new CA staged/);
    expect(cert(d, 'next/root-cert.pem').fingerprint256).toBe(newRoot);
    expect(fps(read(d, 'root-cert.pem'))[1]).toBe(newRoot);
    expect(readRotationState(d)!.newRoot.fingerprint256).toBe(newRoot);
    expect(r.warnings).toEqual([]);
  });

  it('says so when it resumes with --key-type or --org: the staged CA is reused as it is, not made with them', async () => {
    const d = await startedAt();
    const newRoot = cert(d, 'next/root-cert.pem');
    rmSync(join(d, 'rotation.json'));
    writeFileSync(join(d, 'root-cert.pem'), parsePemBundle(read(d, 'root-cert.pem'))[0]!.toString());
    const r = await rotateStart({ dir: d, now: T1, keyType: 'rsa4096', organization: 'Acme Corp' });
    expect(cert(d, 'next/root-cert.pem').fingerprint256).toBe(newRoot.fingerprint256);
    expect(r.warnings).toHaveLength(1);
    expect(r.warnings[0]).toMatch(/^--key-type and --org were not used: the new CA an interrupted start had staged in .*\/next was reused as it is \(root ".*", ec256\); for one made with them, remove .*\/next, .*rotation\.json and the new root from .*root-cert\.pem before any workload trusts it, and start again$/);
  });

  it('discards a partial next/ (no ca-cert.pem: never used) and stages a new CA', async () => {
    const d = await initAt();
    mkdirSync(join(d, 'next'));
    writeFileSync(join(d, 'next/ca-key.pem'), 'partial');
    await rotateStart({ dir: d, now: T1 });
    expect(() => loadCaDir(join(d, 'next'), T1)).not.toThrow();
  });

  it('refuses a next/ that does not load', async () => {
    const d = await initAt();
    mkdirSync(join(d, 'next'));
    writeFileSync(join(d, 'next/ca-cert.pem'), 'junk');
    expect((await configErrorAsync(rotateStart({ dir: d, now: T1 }))).message).toMatch(/next holds a CA that does not load .*remove it/);
    expect(existsSync(join(d, 'rotation.json'))).toBe(false);
  });

  it('refuses a directory without a CA', async () => {
    const d = freshDir();
    mkdirSync(d);
    expect((await configErrorAsync(rotateStart({ dir: d, now: T1 }))).message).toMatch(/^cannot start a rotation: CA directory .* has no ca-cert\.pem/);
  });

  it('refuses a corrupt rotation.json', async () => {
    const d = await initAt();
    writeFileSync(join(d, 'rotation.json'), '{"version": 1, "step": "bogus"}');
    expect((await configErrorAsync(rotateStart({ dir: d, now: T1 }))).message).toMatch(/rotation\.json is not a valid rotation state/);
  });
});

describe('one ca step at a time on a directory', () => {
  it('refuses a second "rotate start" while the first runs (two would each stage a root), and leaves no lock behind', async () => {
    const dir = await initAt();
    const results = await Promise.allSettled([rotateStart({ dir, now: T1 }), rotateStart({ dir, now: T1, keyType: 'rsa2048' })]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected']);
    const refused = (results[1] as PromiseRejectedResult).reason as Error;
    expect(refused).toBeInstanceOf(CaDirBusy);
    expect(refused.message).toMatch(new RegExp(`^another meshcert ca command is working on ${dir} \\("ca rotate start", pid ${process.pid} on .*\\); wait for it to finish`));
    // One new root, the one rotation.json names, beside the old.
    expect(parsePemBundle(readFileSync(join(dir, 'root-cert.pem'), 'utf8'))).toHaveLength(2);
    expect(existsSync(join(dir, STEP_LOCK))).toBe(false);
    // The next step runs once the first is done; so does renew-intermediate's refusal, as itself.
    expect(rotateSwitch({ dir, now: T2 }).changed).toBe(true);
    await expect(renewIntermediate({ dir, now: T2 })).rejects.toThrow(/a root rotation is in progress/);
  });

  it("takes over a lock whose holder is gone (a killed step's), and keeps one from another host for ten minutes", async () => {
    const dir = await initAt();
    const dead = execFileSync(process.execPath, ['-e', 'console.log(process.pid)'], { encoding: 'utf8' }).trim();
    writeFileSync(join(dir, STEP_LOCK), JSON.stringify({ step: 'ca rotate start', pid: Number(dead), host: hostname(), at: new Date().toISOString() }));
    expect((await renewIntermediate({ dir, now: T1 })).renewed).toBeDefined();
    expect(existsSync(join(dir, STEP_LOCK))).toBe(false);
    // From another host, its age is the file's (the shared volume's clock), not the holder's word.
    const foreign = { step: 'ca rotate start', pid: 1, host: `${hostname()}-elsewhere`, at: new Date(Date.now() - DAY_MS).toISOString() };
    writeFileSync(join(dir, STEP_LOCK), JSON.stringify(foreign));
    expect(() => rotateFinish({ dir, now: T1 })).toThrow(CaDirBusy);
    const old = new Date(Date.now() - 11 * MINUTE_MS);
    utimesSync(join(dir, STEP_LOCK), old, old);
    expect(rotateFinish({ dir, now: T1 }).changed).toBe(false); // nothing to finish, and the lock is gone
    expect(existsSync(join(dir, STEP_LOCK))).toBe(false);
    // A live pid here, but a lock over an hour old: no step takes that long (the pid was reused).
    writeFileSync(join(dir, STEP_LOCK), JSON.stringify({ step: 'ca rotate start', pid: process.ppid, host: hostname(), at: new Date().toISOString() }));
    expect(() => rotateFinish({ dir, now: T1 })).toThrow(CaDirBusy);
    const older = new Date(Date.now() - 61 * MINUTE_MS);
    utimesSync(join(dir, STEP_LOCK), older, older);
    expect(rotateFinish({ dir, now: T1 }).changed).toBe(false);
  });

  it('puts back a lock another process took over meanwhile, so two takers of one stale lock cannot both win', () => {
    const dir = freshDir();
    mkdirSync(dir, { recursive: true });
    const lock = join(dir, STEP_LOCK);
    writeFileSync(lock, 'the winner\'s lock');
    takeOver(lock, 'the stale lock this taker judged');
    expect(readFileSync(lock, 'utf8')).toBe("the winner's lock");
    takeOver(lock, "the winner's lock");
    expect(existsSync(lock)).toBe(false);
    expect(readdirSync(dir)).toEqual([]);
  });
});

describe('ca renew-intermediate', () => {
  it('refuses under a root that has expired, naming the root rotation instead', async () => {
    const dir = await initAt({ rootLifetimeMs: 30 * DAY_MS, intermediateLifetimeMs: 10 * DAY_MS });
    const after = new Date(T0.getTime() + 31 * DAY_MS);
    await expect(renewIntermediate({ dir, now: after })).rejects.toThrow(/^the root ".*" expired on .*: rotate the root instead \("meshcert ca rotate start"\)$/);
  });
});

describe('ca rotate switch', () => {
  it('refuses when no rotation was started', async () => {
    const d = await initAt();
    expect(configError(() => rotateSwitch({ dir: d, now: T2 })).message).toMatch(/no rotation in progress .*ca rotate start/);
  });

  it('refuses before --min-wait has passed and changes nothing', async () => {
    const d = await startedAt();
    const snap = snapshot(d);
    const e = configError(() => rotateSwitch({ dir: d, now: new Date(T2.getTime() - 1000) }));
    expect(e.message).toMatch(/^too early to switch: .*allowed from .* \(--min-wait 13h, in 1m\).*--force/);
    expect(snapshot(d)).toEqual(snap);
  });

  it('switches early with --force and says so', async () => {
    const d = await startedAt();
    const r = rotateSwitch({ dir: d, now: new Date(T1.getTime() + MINUTE_MS), force: true });
    expect(r.warnings[0]).toMatch(/^switching before the wait is over \(--force\)/);
    expect(r.state).toMatchObject({ step: 'switched', switchForced: true });
  });

  it('takes a longer --min-wait at the switch and records it', async () => {
    const d = await startedAt();
    const at = new Date(T2.getTime() + HOUR_MS);
    expect(() => rotateSwitch({ dir: d, now: new Date(at.getTime() - 1000), minWaitMs: 14 * HOUR_MS })).toThrow(/too early/);
    const r = rotateSwitch({ dir: d, now: at, minWaitMs: 14 * HOUR_MS });
    expect(r.warnings).toEqual([]);
    expect(r.state).toMatchObject({ minWaitSeconds: 14 * 3600, switchForced: false });
  });

  it('refuses a --min-wait shorter than the one recorded at start (a bare "13" is 13 seconds) unless forced, and records the switch as forced', async () => {
    const d = await startedAt();
    const files = snapshot(d);
    const at = new Date(T1.getTime() + HOUR_MS);
    expect(configError(() => rotateSwitch({ dir: d, now: at, minWaitMs: 13_000 })).message).toMatch(/^--min-wait 13s is shorter than the 13h recorded at start: .*Pass --force/);
    expect(snapshot(d)).toEqual(files);
    const r = rotateSwitch({ dir: d, now: at, minWaitMs: HOUR_MS, force: true });
    expect(r.warnings).toEqual(['shortened the wait below the 13h recorded at start (--force)']);
    expect(r.state).toMatchObject({ step: 'switched', minWaitSeconds: 3600, switchForced: true });
  });

  it('takes a shorter --min-wait without --force once the recorded wait is over anyway', async () => {
    const d = await startedAt();
    const r = rotateSwitch({ dir: d, now: T2, minWaitMs: HOUR_MS });
    expect(r.warnings).toEqual([]);
    expect(r.state).toMatchObject({ step: 'switched', switchForced: false });
  });

  describe('after the wait', () => {
    let dir: string;
    let before: Record<string, string>;
    let r: ReturnType<typeof rotateSwitch>;

    beforeAll(async () => {
      dir = await startedAt();
      before = snapshot(dir);
      r = rotateSwitch({ dir, now: T2 });
    });

    it('installs the new intermediate, its key and chain, and the new root key', () => {
      for (const f of ['ca-cert.pem', 'ca-key.pem', 'cert-chain.pem', 'root-key.pem']) expect(read(dir, f)).toBe(before[`next/${f}`]);
      expect(mode(join(dir, 'ca-key.pem'))).toBe(0o600);
      expect(mode(join(dir, 'root-key.pem'))).toBe(0o600);
    });

    it('keeps both roots in root-cert.pem', () => {
      expect(read(dir, 'root-cert.pem')).toBe(before['root-cert.pem']);
      expect(fps(read(dir, 'root-cert.pem'))).toHaveLength(2);
    });

    it('keeps the old signing material in previous/ (keys 0600) and removes next/', () => {
      for (const f of ['ca-cert.pem', 'ca-key.pem', 'cert-chain.pem', 'root-key.pem']) expect(read(dir, `previous/${f}`)).toBe(before[f]);
      expect(mode(join(dir, 'previous/ca-key.pem'))).toBe(0o600);
      expect(mode(join(dir, 'previous/root-key.pem'))).toBe(0o600);
      expect(existsSync(join(dir, 'next'))).toBe(false);
    });

    it('signs with the new intermediate under the new root', () => {
      const m = loadCaDir(dir, T2);
      expect(m.signingCert.fingerprint256).toBe(fps(before['next/ca-cert.pem']!)[0]);
      const leaf = leafFrom(dir, T2);
      expect(verifyResponseChain([leaf.pem, ...leaf.chainPem], before['next/root-cert.pem']!, T2).root.fingerprint256).toBe(fps(before['next/root-cert.pem']!)[0]);
    });

    it('records when it switched and the longest leaf lifetime to wait for', () => {
      expect(readRotationState(dir)).toMatchObject({
        step: 'switched',
        switchedAt: T2.toISOString(),
        switchForced: false,
        maxLeafLifetimeSeconds: 90 * 86400,
        finishAllowedAt: T3.toISOString(),
      });
      expect(r.messages.join('\n')).toMatch(/ca rotate finish/);
    });

    it('is a no-op with a message when run again', () => {
      const snap = snapshot(dir);
      const again = rotateSwitch({ dir, now: T2, force: true });
      expect(again.changed).toBe(false);
      expect(again.messages[0]).toMatch(/^already switched at /);
      expect(snapshot(dir)).toEqual(snap);
    });
  });

  it('records --max-leaf-lifetime, capped by the old root expiry, not the old intermediate (one it replaced may have signed longer-lived leaves)', async () => {
    const d = await startedAt();
    rotateSwitch({ dir: d, now: T2, maxLeafLifetimeMs: 7 * DAY_MS });
    expect(readRotationState(d)).toMatchObject({ maxLeafLifetimeSeconds: 7 * 86400, finishAllowedAt: new Date(T2.getTime() + 7 * DAY_MS).toISOString() });

    // Run again with another lifetime (a policy's max raised after the switch): finish now waits
    // for it, counted from the switch and not from the re-run; the same lifetime changes nothing.
    const later = new Date(T2.getTime() + DAY_MS);
    const longer = rotateSwitch({ dir: d, now: later, maxLeafLifetimeMs: 30 * DAY_MS });
    expect(longer.changed).toBe(true);
    expect(longer.messages.join('\n')).toMatch(/now 30d \(was 7d\)/);
    const longerAt = new Date(T2.getTime() + 30 * DAY_MS).toISOString();
    expect(readRotationState(d)).toMatchObject({ switchedAt: T2.toISOString(), maxLeafLifetimeSeconds: 30 * 86400, finishAllowedAt: longerAt });
    expect(longer.messages.join('\n')).toContain(`allowed from ${longerAt} (was ${new Date(T2.getTime() + 7 * DAY_MS).toISOString()})`);
    expect(configError(() => rotateFinish({ dir: d, now: new Date(T2.getTime() + 8 * DAY_MS) })).message).toMatch(/^too early to finish: .*--max-leaf-lifetime 30d/);
    const snap = snapshot(d);
    expect(rotateSwitch({ dir: d, now: later, maxLeafLifetimeMs: 30 * DAY_MS }).changed).toBe(false);
    expect(snapshot(d)).toEqual(snap);
    // Past the old root's expiry it is capped there, as at the switch.
    rotateSwitch({ dir: d, now: later, maxLeafLifetimeMs: 36_000 * DAY_MS });
    expect(readRotationState(d)!.finishAllowedAt).toBe(readRotationState(d)!.oldRoot.notAfter);
    // Shorter lets finish run earlier, as finish's --force would: refused without --force, and
    // with it said and recorded.
    const unforced = snapshot(d);
    expect(configError(() => rotateSwitch({ dir: d, now: later, maxLeafLifetimeMs: 2 * DAY_MS })).message).toMatch(/^--max-leaf-lifetime 2d is shorter than the 36000d recorded at the switch: .* Pass --force/);
    expect(snapshot(d)).toEqual(unforced);
    const forced = rotateSwitch({ dir: d, now: later, maxLeafLifetimeMs: 2 * DAY_MS, force: true });
    expect(forced.warnings).toEqual(['shortened the longest leaf lifetime below the 36000d recorded at the switch (--force): finish may now remove the old root while its leaves are still valid']);
    expect(readRotationState(d)).toMatchObject({ maxLeafLifetimeSeconds: 2 * 86400, maxLeafLifetimeForced: true, finishAllowedAt: new Date(T2.getTime() + 2 * DAY_MS).toISOString() });
    // Once the finish has begun, the lifetime no longer matters: said, not applied.
    writeRotationState(d, { ...readRotationState(d)!, step: 'finishing', finishingAt: later.toISOString(), archive: 'interrupted' });
    const during = rotateSwitch({ dir: d, now: later, maxLeafLifetimeMs: DAY_MS });
    expect(during.changed).toBe(false);
    expect(during.warnings).toEqual(['--max-leaf-lifetime ignored: the old root is already being removed']);
    expect(readRotationState(d)!.maxLeafLifetimeSeconds).toBe(2 * 86400);

    const shortIntermediate = await startedAt({ intermediateLifetimeMs: 30 * DAY_MS });
    rotateSwitch({ dir: shortIntermediate, now: T2 });
    expect(readRotationState(shortIntermediate)!.finishAllowedAt).toBe(new Date(T2.getTime() + 90 * DAY_MS).toISOString());

    const shortRoot = await startedAt({ rootLifetimeMs: 40 * DAY_MS, intermediateLifetimeMs: 30 * DAY_MS });
    rotateSwitch({ dir: shortRoot, now: T2 });
    expect(readRotationState(shortRoot)!.finishAllowedAt).toBe(new Date(T0.getTime() + 40 * DAY_MS).toISOString());
  });

  it.each([
    ['intermediate', { intermediateLifetimeMs: 10 * HOUR_MS }],
    ['root', { rootLifetimeMs: 12 * HOUR_MS }],
  ])('switches when the old %s expired during the wait (a start forced, with a warning), leaving a directory that loads and signs', async (_what, lifetimes) => {
    const d = await initAt(lifetimes);
    const started = await rotateStart({ dir: d, now: T1, force: true });
    expect(started.warnings.join('\n')).toMatch(/^started with --force: the old CA .* can sign only until .* before the switch is allowed .*meshcert refuses to issue \(UNAVAILABLE\); switch with --force as soon as every workload holds both roots$/m);
    // At T2 the old chain no longer loads: meshcert cannot sign until the switch.
    expect(() => loadCaDir(d, T2)).toThrow(/expired/);
    const r = rotateSwitch({ dir: d, now: T2 });
    expect(r.changed).toBe(true);
    const s = readRotationState(d)!;
    expect(loadCaDir(d, T2).signingCert.fingerprint256).toBe(s.newIntermediate.fingerprint256);
    const leaf = leafFrom(d, T2);
    expect(verifyResponseChain([leaf.pem, ...leaf.chainPem], read(d, 'root-cert.pem'), T2).root.fingerprint256).toBe(s.newRoot.fingerprint256);
  });

  it.each([
    ['intermediate', { intermediateLifetimeMs: 10 * HOUR_MS }, /Renew the intermediate first \("meshcert ca renew-intermediate --dir .*"\), then start; or start with a --min-wait under 9h /],
    ['root', { rootLifetimeMs: 12 * HOUR_MS }, /\. Start with a --min-wait under 11h /],
  ])('refuses to start, changing nothing, when the old %s ends before the switch is allowed, saying what to do instead', async (_what, lifetimes, advice) => {
    const d = await initAt(lifetimes);
    const before = snapshot(d);
    const e = await configErrorAsync(rotateStart({ dir: d, now: T1 }));
    expect(e.message).toMatch(/^cannot start a rotation: the old CA .* can sign only until .*, before the switch is allowed .*meshcert refuses to issue \(UNAVAILABLE\)\. /);
    expect(e.message).toMatch(advice);
    expect(e.message).toMatch(/or with --force to accept the gap$/);
    expect(snapshot(d)).toEqual(before);
    expect(existsSync(join(d, 'next'))).toBe(false);
    // The advice works: a renewal is not refused, and a start after it goes through.
    if (_what === 'intermediate') {
      await renewIntermediate({ dir: d, now: T1 });
      expect((await rotateStart({ dir: d, now: T1 })).warnings).toEqual([]);
    }
  });

  it('does not warn at start when the old CA outlasts the wait', async () => {
    const d = await initAt();
    expect((await rotateStart({ dir: d, now: T1 })).warnings).toEqual([]);
  });

  it('refuses when ca-cert.pem changed since start', async () => {
    const d = await startedAt();
    const other = await initAt();
    for (const f of ['ca-cert.pem', 'ca-key.pem', 'cert-chain.pem']) cpSync(join(other, f), join(d, f));
    writeFileSync(join(d, 'root-cert.pem'), read(other, 'root-cert.pem') + read(d, 'next/root-cert.pem'));
    expect(configError(() => rotateSwitch({ dir: d, now: T2 })).message).toMatch(/ca-cert\.pem is no longer the intermediate recorded at start/);
  });

  it('refuses when the new root was removed from root-cert.pem', async () => {
    const d = await startedAt();
    writeFileSync(join(d, 'root-cert.pem'), parsePemBundle(read(d, 'root-cert.pem'))[0]!.toString());
    expect(configError(() => rotateSwitch({ dir: d, now: T2 })).message).toMatch(/no longer holds the root/);
  });

  it('completes a switch interrupted half-way (state "switching", key already swapped)', async () => {
    const d = await startedAt();
    const s = readRotationState(d)!;
    const old = snapshot(d);
    // What switch leaves when it stops after the first file: previous/ written, state recorded, key swapped.
    for (const f of ['ca-cert.pem', 'ca-key.pem', 'cert-chain.pem', 'root-key.pem']) cpSync(join(d, f), join(d, 'previous', f));
    const interrupted: RotationState = { ...s, step: 'switching', switchedAt: T2.toISOString(), maxLeafLifetimeSeconds: 90 * 86400, finishAllowedAt: T3.toISOString() };
    writeRotationState(d, interrupted);
    cpSync(join(d, 'next/ca-key.pem'), join(d, 'ca-key.pem'));
    expect(() => loadCaDir(d, T2)).toThrow(/does not match/);
    expect(rotationStatus(d, T2)).toMatchObject({ step: 'switching', next: { allowedNow: true } });
    expect(() => rotateFinish({ dir: d, now: T3 })).toThrow(/switch was interrupted/);

    const r = rotateSwitch({ dir: d, now: new Date(T2.getTime() + MINUTE_MS) });
    expect(r.messages[0]).toBe('completing a switch that was interrupted');
    expect(read(d, 'ca-cert.pem')).toBe(old['next/ca-cert.pem']);
    expect(readRotationState(d)).toMatchObject({ step: 'switched', switchedAt: T2.toISOString() });
    expect(read(d, 'previous/ca-key.pem')).toBe(old['ca-key.pem']);
    expect(() => loadCaDir(d, T2)).not.toThrow();
  });
});

describe('a step killed while it replaces the live files', () => {
  it('switch: serve loads the new set staged in next/ (not a mismatched key), and re-running switch completes it', async () => {
    const d = await startedAt();
    const before = snapshot(d);
    await interruptedAt(d, T2, () => rotateSwitch({ dir: d, now: T2 }));
    expect(read(d, 'ca-key.pem')).toBe(before['next/ca-key.pem']);
    expect(read(d, 'ca-cert.pem')).toBe(before['ca-cert.pem']);
    expect(() => loadCaDir(d, T2)).toThrow(/ca-key\.pem does not match the public key of ca-cert\.pem/);
    const served = loadServedCaDir(d, T2);
    expect(served.material.signingCert.fingerprint256).toBe(readRotationState(d)!.newIntermediate.fingerprint256);
    expect(served.interrupted).toMatch(/^an interrupted "meshcert ca rotate switch" left the CA files in .* half replaced \(ca-key\.pem does not match.*\); loaded the complete set it staged in .*next instead: re-run "meshcert ca rotate switch --dir .*" to complete it$/);
    const r = rotateSwitch({ dir: d, now: T2 });
    expect(r.messages[0]).toBe('completing a switch that was interrupted');
    expect(loadServedCaDir(d, T2)).toEqual({ material: expect.anything() as unknown });
    expect(loadCaDir(d, T2).signingCert.fingerprint256).toBe(r.state!.newIntermediate.fingerprint256);
    expect(existsSync(join(d, '.meshcert-replacing'))).toBe(false);
  });

  it('renew-intermediate: serve loads the staged set, status says so, a rotation waits, and re-running completes it without a new key or archive', async () => {
    const d = await initAt();
    const before = snapshot(d);
    const at = new Date(T0.getTime() + 200 * DAY_MS);
    await interruptedAt(d, at, () => renewIntermediate({ dir: d, now: at }));
    const staged = read(d, 'renewing/ca-cert.pem');
    expect(read(d, 'ca-key.pem')).toBe(read(d, 'renewing/ca-key.pem'));
    expect(read(d, 'ca-cert.pem')).toBe(before['ca-cert.pem']);
    expect(() => loadCaDir(d, at)).toThrow(/ca-key\.pem does not match/);
    const served = loadServedCaDir(d, at);
    expect(served.material.signingCert.fingerprint256).toBe(fps(staged)[0]);
    expect(served.interrupted).toMatch(/"meshcert ca renew-intermediate" left the CA files .*re-run "meshcert ca renew-intermediate --dir /);
    expect(rotationStatus(d, at)).toMatchObject({ step: 'idle', summary: expect.stringMatching(/a renewal of the intermediate was interrupted/), next: { command: `meshcert ca renew-intermediate --dir ${d}` } });
    expect((await configErrorAsync(rotateStart({ dir: d, now: at }))).message).toMatch(/^a renewal of the intermediate was interrupted: run "meshcert ca renew-intermediate --dir .*" again/);
    const archived = readdirSync(join(d, 'archive'));
    expect(archived).toHaveLength(1);
    const r = await renewIntermediate({ dir: d, now: at, keyType: 'rsa2048' });
    expect(r.messages[0]).toMatch(/^completing a renewal of the intermediate that was interrupted/);
    expect(r.warnings).toEqual(['--lifetime and --key-type were not used: the interrupted renewal was completed with the intermediate it had made; run renew-intermediate again for one made with them']);
    expect(read(d, 'ca-cert.pem')).toBe(staged);
    expect(loadCaDir(d, at).signingCert.fingerprint256).toBe(fps(staged)[0]);
    expect(readdirSync(join(d, 'archive'))).toEqual(archived);
    expect(existsSync(join(d, 'renewing'))).toBe(false);
    expect(existsSync(join(d, '.meshcert-replacing'))).toBe(false);
    // The archive holds the intermediate before the renewal, not the half-replaced pair.
    expect(read(join(d, 'archive', archived[0]!), 'ca-cert.pem')).toBe(before['ca-cert.pem']);
    expect(read(join(d, 'archive', archived[0]!), 'ca-key.pem')).toBe(before['ca-key.pem']);
  });

  it('pendingStepNote: a step killed before or after it replaced the signing files, and a switch under way with none marked, each said as it is', async () => {
    const d = await initAt();
    const at = new Date(T0.getTime() + 200 * DAY_MS);
    const live = (): X509Certificate => loadCaDir(d, at).signingCert;
    expect(pendingStepNote(d, live())).toBeUndefined();
    // Staged and marked, nothing replaced yet.
    mkdirSync(join(d, 'renewing'));
    const donor = freshDir();
    cpSync(d, donor, { recursive: true });
    await renewIntermediate({ dir: donor, now: at });
    for (const f of ['ca-cert.pem', 'ca-key.pem', 'cert-chain.pem']) writeFileSync(join(d, 'renewing', f), read(donor, f));
    writeFileSync(join(d, '.meshcert-replacing'), 'renewing\n');
    expect(pendingStepNote(d, live())).toBe('a "meshcert ca renew-intermediate" was interrupted before it replaced the signing files: this is still the CA from before it; run it again to complete it');
    // Every signing file replaced, the marker still there: already the staged CA.
    for (const f of ['ca-cert.pem', 'ca-key.pem', 'cert-chain.pem']) writeFileSync(join(d, f), read(donor, f));
    expect(pendingStepNote(d, live())).toBe('a "meshcert ca renew-intermediate" was interrupted after it replaced the signing files: this is already the CA it installs; run it again to complete it');
    // The marker cleared but renewing/ not yet removed: its key copy is said, with the step that removes it.
    rmSync(join(d, '.meshcert-replacing'));
    expect(pendingStepNote(d, live())).toBe(`a "meshcert ca renew-intermediate" installed its intermediate but was interrupted before it removed ${join(d, 'renewing')}, which holds a copy of the signing key: run it again to remove it (it makes no new key)`);
    // A set staged and never marked (killed before it began replacing), or one that does not parse.
    writeFileSync(join(d, 'renewing', 'ca-cert.pem'), read(await initAt(), 'ca-cert.pem'));
    const neverInstalled = `${join(d, 'renewing')} holds a set a "meshcert ca renew-intermediate" staged but never installed, with its private key: run it again to renew (it stages a new set), or remove ${join(d, 'renewing')}`;
    expect(pendingStepNote(d, live())).toBe(neverInstalled);
    writeFileSync(join(d, 'renewing', 'ca-cert.pem'), 'not a certificate');
    expect(pendingStepNote(d, live())).toBe(neverInstalled);
    // During a root rotation renew-intermediate refuses to run: the note says to remove it by hand.
    const rotating = await startedAt();
    mkdirSync(join(rotating, 'renewing'));
    expect(pendingStepNote(rotating, loadCaDir(rotating, T1).signingCert)).toBe(`${join(rotating, 'renewing')}, left by a "meshcert ca renew-intermediate", holds a private key; renew-intermediate does not run during a root rotation: remove ${join(rotating, 'renewing')} by hand`);
    rmSync(join(d, 'renewing'), { recursive: true });
    expect(pendingStepNote(d, live())).toBeUndefined();
    // A switch rotation.json says is under way, with no replacement marked.
    const s = await startedAt();
    const state = JSON.parse(read(s, 'rotation.json')) as Record<string, unknown>;
    writeFileSync(join(s, 'rotation.json'), JSON.stringify({ ...state, step: 'switching' }));
    expect(pendingStepNote(s, loadCaDir(s, T1).signingCert)).toBe('a "meshcert ca rotate switch" was interrupted: run it again to complete it, then finish');
  });

  it('renew-intermediate killed after installing its set, before clearing renewing/: re-running clears it and makes no second key', async () => {
    const d = await initAt();
    const at = new Date(T0.getTime() + 200 * DAY_MS);
    await renewIntermediate({ dir: d, now: at });
    const installed = snapshot(d);
    // As the kill left it: the staged set (now the live one) still in renewing/, the marker gone.
    mkdirSync(join(d, 'renewing'));
    for (const f of ['ca-cert.pem', 'ca-key.pem', 'cert-chain.pem']) writeFileSync(join(d, 'renewing', f), installed[f]!);
    const archived = readdirSync(join(d, 'archive'));
    // A rotation does not start over it (renew-intermediate, which clears it, would then refuse to run).
    const refused = await configErrorAsync(rotateStart({ dir: d, now: at }));
    expect(refused.message).toBe(`cannot start a rotation: a "meshcert ca renew-intermediate" installed its intermediate but was interrupted before it removed ${join(d, 'renewing')}, which holds a copy of the signing key: run it again to remove it (it makes no new key)`);
    expect(existsSync(join(d, 'rotation.json'))).toBe(false);
    const r = await renewIntermediate({ dir: d, now: at, keyType: 'rsa2048' });
    expect(r.messages[0]).toBe(`an interrupted renewal had already installed its intermediate; removed what it staged in ${join(d, 'renewing')}`);
    expect(r.warnings).toEqual(['--lifetime and --key-type were not used: the interrupted renewal was completed with the intermediate it had made; run renew-intermediate again for one made with them']);
    expect(read(d, 'ca-key.pem')).toBe(installed['ca-key.pem']);
    expect(read(d, 'ca-cert.pem')).toBe(installed['ca-cert.pem']);
    expect(readdirSync(join(d, 'archive'))).toEqual(archived);
    expect(existsSync(join(d, 'renewing'))).toBe(false);
    // Run again now, it renews (a new key).
    await renewIntermediate({ dir: d, now: at });
    expect(read(d, 'ca-key.pem')).not.toBe(installed['ca-key.pem']);
    expect((await rotateStart({ dir: d, now: at })).state?.step).toBe('started');
  });

  it('a staged set serves only when the live files do not load, the marker names it, and (for next/) a switch is under way', async () => {
    const d = await startedAt();
    const live = loadCaDir(d, T1).signingCert.fingerprint256;
    // A complete next/ and a marker naming it: while the live files load, they are what serves.
    writeFileSync(join(d, '.meshcert-replacing'), 'next\n');
    expect(loadServedCaDir(d, T1)).toEqual({ material: expect.anything() as unknown });
    expect(loadServedCaDir(d, T1).material.signingCert.fingerprint256).toBe(live);
    // Live files broken during the "started" step: next/'s new root is not trusted everywhere yet, so never that.
    const key = read(d, 'ca-key.pem');
    writeFileSync(join(d, 'ca-key.pem'), generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }));
    expect(() => loadServedCaDir(d, T1)).toThrow(/^ca-key\.pem does not match the public key of ca-cert\.pem$/);
    // A marker naming anything but a staged set's directory is not followed, even to a complete set.
    const elsewhere = join(d, '..', `elsewhere-${n}`);
    cpSync(join(d, 'next'), elsewhere, { recursive: true });
    writeRotationState(d, { ...readRotationState(d)!, step: 'switching' });
    writeFileSync(join(d, '.meshcert-replacing'), `../${elsewhere.split('/').pop()}\n`);
    expect(() => loadServedCaDir(d, T1)).toThrow(/^ca-key\.pem does not match/);
    // A staged set that does not load either: both reasons.
    writeFileSync(join(d, '.meshcert-replacing'), 'next\n');
    writeFileSync(join(d, 'next', 'ca-key.pem'), key);
    expect(() => loadServedCaDir(d, T1)).toThrow(/^ca-key\.pem does not match the public key of ca-cert\.pem; the set an interrupted "meshcert ca rotate switch" staged in .*next does not load either: ca-key\.pem does not match/);
  });

  it('rotate start clears the marker of a switch given up (rotation.json removed), so its next/ is never served before its own switch', async () => {
    const d = await initAt();
    writeFileSync(join(d, '.meshcert-replacing'), 'next\n');
    await rotateStart({ dir: d, now: T1 });
    expect(existsSync(join(d, '.meshcert-replacing'))).toBe(false);
  });
});

describe('ca rotate finish', () => {
  it('is a no-op when no rotation is in progress', async () => {
    const d = await initAt();
    const r = rotateFinish({ dir: d, now: T3 });
    expect(r.changed).toBe(false);
    expect(r.messages[0]).toMatch(/no rotation in progress .*nothing to finish/);
  });

  it('refuses a directory that holds no CA (a mistyped --dir), rather than saying there is nothing to finish', () => {
    const d = join(tmpdir(), `meshcert-no-ca-${process.pid}-${Date.now()}`);
    expect(configError(() => rotateFinish({ dir: d, now: T3 })).message).toBe(`no rotation in progress in ${d}, and no CA there (no ca-cert.pem): is --dir the CA directory?`);
    expect(existsSync(d)).toBe(false);
  });

  it('refuses before switch', async () => {
    const d = await startedAt();
    expect(configError(() => rotateFinish({ dir: d, now: T3, force: true })).message).toMatch(/has not switched yet .*ca rotate switch/);
  });

  it('refuses before the longest leaf lifetime has passed since the switch, changing nothing', async () => {
    const d = await switchedAt();
    const snap = snapshot(d);
    expect(configError(() => rotateFinish({ dir: d, now: new Date(T3.getTime() - 1000) })).message).toMatch(
      /^too early to finish: leaves signed by the old intermediate .* until .* \(--max-leaf-lifetime 90d, in 1m\).*--force/,
    );
    expect(snapshot(d)).toEqual(snap);
  });

  it('finishes early with --force and says so', async () => {
    const d = await switchedAt();
    const r = rotateFinish({ dir: d, now: new Date(T2.getTime() + HOUR_MS), force: true });
    expect(r.warnings[0]).toMatch(/^finishing before the longest leaf lifetime has passed \(--force\)/);
    expect(existsSync(join(d, 'rotation.json'))).toBe(false);
  });

  describe('after the longest leaf lifetime', () => {
    let dir: string;
    let before: Record<string, string>;
    let archive: string;

    beforeAll(async () => {
      dir = await switchedAt();
      before = snapshot(dir);
      rotateFinish({ dir, now: T3 });
      archive = join(dir, 'archive', T3.toISOString().replace(/[:.]/g, '-'));
    });

    it('leaves only the new root in root-cert.pem and keeps signing', () => {
      const s = JSON.parse(before['rotation.json']!) as RotationState;
      expect(fps(read(dir, 'root-cert.pem'))).toEqual([s.newRoot.fingerprint256]);
      for (const f of ['ca-cert.pem', 'ca-key.pem', 'cert-chain.pem', 'root-key.pem']) expect(read(dir, f)).toBe(before[f]);
      expect(loadCaDir(dir, T3).signingCert.fingerprint256).toBe(s.newIntermediate.fingerprint256);
    });

    it('archives the old intermediate, its key, the old root and its key, keys 0600', () => {
      const s = JSON.parse(before['rotation.json']!) as RotationState;
      expect(readdirSync(archive).sort()).toEqual(['ca-cert.pem', 'ca-key.pem', 'cert-chain.pem', 'root-cert.pem', 'root-key.pem', 'rotation.json']);
      for (const f of ['ca-cert.pem', 'ca-key.pem', 'cert-chain.pem', 'root-key.pem']) expect(read(archive, f)).toBe(before[`previous/${f}`]);
      expect(fps(read(archive, 'root-cert.pem'))).toEqual([s.oldRoot.fingerprint256]);
      expect(fps(read(archive, 'ca-cert.pem'))).toEqual([s.oldIntermediate.fingerprint256]);
      expect(mode(join(archive, 'ca-key.pem'))).toBe(0o600);
      expect(mode(join(archive, 'root-key.pem'))).toBe(0o600);
      expect(mode(archive)).toBe(0o700);
    });

    it('removes rotation.json, previous/ and next/', () => {
      expect(readdirSync(dir).sort()).toEqual(['archive', 'ca-cert.pem', 'ca-key.pem', 'cert-chain.pem', 'root-cert.pem', 'root-key.pem']);
      expect(rotationStatus(dir, T3).step).toBe('idle');
    });

    it('is a no-op with a message when run again', () => {
      const snap = snapshot(dir);
      const r = rotateFinish({ dir, now: T3, force: true });
      expect(r.changed).toBe(false);
      expect(r.messages[0]).toMatch(/nothing to finish/);
      expect(snapshot(dir)).toEqual(snap);
    });

    it('allows the next rotation', async () => {
      const r = await rotateStart({ dir, now: new Date(T3.getTime() + DAY_MS) });
      expect(r.changed).toBe(true);
      expect(fps(read(dir, 'root-cert.pem'))).toHaveLength(2);
    });
  });

  it('keeps roots that were not part of the rotation, with a warning', async () => {
    const d = await initAt();
    const extra = await initAt();
    writeFileSync(join(d, 'root-cert.pem'), read(d, 'root-cert.pem') + read(extra, 'root-cert.pem'));
    await rotateStart({ dir: d, now: T1 });
    expect(fps(read(d, 'root-cert.pem'))).toHaveLength(3);
    rotateSwitch({ dir: d, now: T2 });
    const newRoot = readRotationState(d)!.newRoot.fingerprint256;
    const r = rotateFinish({ dir: d, now: T3 });
    expect(fps(read(d, 'root-cert.pem'))).toEqual([fps(read(extra, 'root-cert.pem'))[0], newRoot]);
    expect(r.warnings[0]).toMatch(/still holds 1 root\(s\) that were not part of this rotation/);
  });

  it('finishes when the old root has expired since the switch (it anchors nothing by then)', async () => {
    const d = await initAt({ rootLifetimeMs: 30 * DAY_MS, intermediateLifetimeMs: 20 * DAY_MS });
    await rotateStart({ dir: d, now: T1 });
    rotateSwitch({ dir: d, now: T2 });
    const s = readRotationState(d)!;
    const after = new Date(T0.getTime() + 31 * DAY_MS);
    expect(loadCaDir(d, after).expiredRoots.map((r) => r.fingerprint256)).toEqual([s.oldRoot.fingerprint256]);
    const r = rotateFinish({ dir: d, now: after });
    expect(r.changed).toBe(true);
    expect(fps(read(d, 'root-cert.pem'))).toEqual([s.newRoot.fingerprint256]);
    expect(existsSync(join(d, 'rotation.json'))).toBe(false);
  });

  it('keeps an expired root the operator left in root-cert.pem when it adds the new one', async () => {
    const d = await initAt();
    const stale = freshDir();
    await initCaDir({ dir: stale, now: new Date(T0.getTime() - 3 * DAY_MS), rootLifetimeMs: DAY_MS, intermediateLifetimeMs: DAY_MS });
    const bundle = read(d, 'root-cert.pem') + read(stale, 'root-cert.pem');
    writeFileSync(join(d, 'root-cert.pem'), bundle);
    await rotateStart({ dir: d, now: T1 });
    const newRoot = readRotationState(d)!.newRoot.fingerprint256;
    expect(fps(read(d, 'root-cert.pem'))).toEqual([...fps(bundle), newRoot]);
    // What is served leaves it out.
    expect(loadCaDir(d, T1).roots.map((r) => r.fingerprint256)).toEqual([fps(bundle)[0], newRoot]);
  });

  it('completes a finish interrupted after recording its step', async () => {
    const d = await switchedAt();
    const s = readRotationState(d)!;
    writeRotationState(d, { ...s, step: 'finishing', finishingAt: T3.toISOString(), archive: 'interrupted' });
    expect(rotationStatus(d, T3)).toMatchObject({ step: 'finishing', next: { allowedNow: true } });
    const r = rotateFinish({ dir: d, now: new Date(T3.getTime() + HOUR_MS) });
    expect(r.messages[0]).toBe('completing a finish that was interrupted');
    expect(fps(read(d, 'root-cert.pem'))).toEqual([s.newRoot.fingerprint256]);
    expect(fps(read(join(d, 'archive/interrupted'), 'root-cert.pem'))).toEqual([s.oldRoot.fingerprint256]);
    expect(existsSync(join(d, 'rotation.json'))).toBe(false);
  });
});

describe('ca rotate status', () => {
  it('walks through idle, started, switched and idle again, with when the next step is allowed', async () => {
    const d = await initAt();
    expect(rotationStatus(d, T1)).toMatchObject({ step: 'idle', next: { command: `meshcert ca rotate start --dir ${d}`, allowedNow: true }, caError: undefined });
    await rotateStart({ dir: d, now: T1 });
    const started = rotationStatus(d, new Date(T1.getTime() + HOUR_MS));
    expect(started).toMatchObject({ step: 'started', next: { command: `meshcert ca rotate switch --dir ${d}`, allowedAt: T2.toISOString(), allowedNow: false } });
    expect(started.ca!.roots).toHaveLength(2);
    expect(started.checks.join('\n')).toMatch(/istio-ca-root-cert/);
    expect(started.checks.join('\n')).toMatch(/istioctl proxy-config secret/);
    // ztunnel keeps the roots it started with: the step says to restart it before the switch.
    expect(started.checks.join('\n')).toMatch(/ztunnel has been restarted since istio-ca-root-cert in its namespace holds both roots \(kubectl -n istio-system rollout restart ds\/ztunnel\)/);
    expect(rotationStatus(d, T2).next!.allowedNow).toBe(true);
    rotateSwitch({ dir: d, now: T2 });
    expect(rotationStatus(d, T2)).toMatchObject({ step: 'switched', next: { command: `meshcert ca rotate finish --dir ${d}`, allowedAt: T3.toISOString(), allowedNow: false } });
    expect(rotationStatus(d, T3).next!.allowedNow).toBe(true);
    rotateFinish({ dir: d, now: T3 });
    expect(rotationStatus(d, T3).step).toBe('idle');
    expect(JSON.parse(JSON.stringify(rotationStatus(d, T3)))).toMatchObject({ step: 'idle' });
  });

  it('offers no step for a directory that holds no CA that loads (none, or a file)', async () => {
    for (const d of [join(base, 'no-such-dir'), freshDir()]) {
      const s = rotationStatus(d, T1);
      expect(s).toMatchObject({ step: 'idle', summary: 'no rotation in progress, and no CA that loads here', next: undefined, ca: undefined });
      expect(s.caError).toBeDefined();
    }
  });

  it('says when root-cert.pem holds an expired root it does not serve', async () => {
    const d = await initAt();
    const stale = freshDir();
    await initCaDir({ dir: stale, now: new Date(T0.getTime() - 3 * DAY_MS), rootLifetimeMs: DAY_MS, intermediateLifetimeMs: DAY_MS });
    writeFileSync(join(d, 'root-cert.pem'), read(d, 'root-cert.pem') + read(stale, 'root-cert.pem'));
    const s = rotationStatus(d, T1);
    expect(s.ca?.roots).toHaveLength(1);
    expect(s.ca?.expiredRoots.map((r) => r.fingerprint256)).toEqual(fps(read(stale, 'root-cert.pem')));
    expect(s.checks).toEqual([expect.stringMatching(/^root-cert\.pem also holds "O=meshcert, CN=meshcert root CA [\d-]+", which expired on \S+ and anchors nothing: meshcert does not serve it; remove it from the file$/)]);
  });

  it('reports a directory that does not load instead of failing', async () => {
    const d = await initAt();
    rmSync(join(d, 'ca-key.pem'));
    expect(rotationStatus(d, T1)).toMatchObject({ step: 'idle', ca: undefined, caError: expect.stringMatching(/no ca-key\.pem/) });
  });
});

describe('spans beyond a century (or not numbers)', () => {
  it('are refused by every step before it touches a file', async () => {
    const d = await initAt();
    const before = snapshot(d);
    const far = 1e14; // about 3,000 years: the date it gives is no certificate's
    expect((await configErrorAsync(renewIntermediate({ dir: d, now: T1, lifetimeMs: far }))).message).toBe("the new intermediate's lifetime must be between 0s and 36500d");
    expect((await configErrorAsync(rotateStart({ dir: d, now: T1, minWaitMs: far }))).message).toBe('the minimum wait must be between 0s and 36500d');
    expect((await configErrorAsync(rotateStart({ dir: d, now: T1, rootLifetimeMs: Number.NaN }))).message).toBe("the new root's lifetime must be between 0s and 36500d");
    expect((await configErrorAsync(rotateStart({ dir: d, now: T1, intermediateLifetimeMs: -1 }))).message).toBe("the new intermediate's lifetime must be between 0s and 36500d");
    expect(snapshot(d)).toEqual(before);
    const started = await startedAt();
    const state = snapshot(started);
    expect(configError(() => rotateSwitch({ dir: started, now: T2, maxLeafLifetimeMs: far })).message).toBe('the longest leaf lifetime must be between 0s and 36500d');
    expect(configError(() => rotateSwitch({ dir: started, now: T2, minWaitMs: Infinity })).message).toBe('the minimum wait must be between 0s and 36500d');
    expect(snapshot(started)).toEqual(state);
  });
});

describe('ca renew-intermediate', () => {
  it('replaces the intermediate and its key under the same root, leaving root-cert.pem alone', async () => {
    const d = await initAt();
    const before = snapshot(d);
    const at = new Date(T0.getTime() + 200 * DAY_MS);
    const oldLeaf = leafFrom(d, at);
    const r = await renewIntermediate({ dir: d, now: at });
    expect(read(d, 'root-cert.pem')).toBe(before['root-cert.pem']);
    expect(read(d, 'root-key.pem')).toBe(before['root-key.pem']);
    expect(read(d, 'ca-cert.pem')).not.toBe(before['ca-cert.pem']);
    expect(read(d, 'ca-key.pem')).not.toBe(before['ca-key.pem']);
    expect(mode(join(d, 'ca-key.pem'))).toBe(0o600);
    const inter = cert(d, 'ca-cert.pem');
    const root = cert(d, 'root-cert.pem');
    expect(inter.verify(root.publicKey)).toBe(true);
    expect(Date.parse(inter.validTo)).toBe(at.getTime() + YEAR_MS);
    expect(read(d, 'cert-chain.pem')).toBe(read(d, 'ca-cert.pem') + read(d, 'root-cert.pem'));
    expect(r.previous!.fingerprint256).toBe(fps(before['ca-cert.pem']!)[0]);
    // Leaves of both intermediates verify with the unchanged bundle.
    const newLeaf = leafFrom(d, at);
    for (const leaf of [oldLeaf, newLeaf]) expect(() => verifyResponseChain([leaf.pem, ...leaf.chainPem], before['root-cert.pem']!, at)).not.toThrow();
    // The previous intermediate is archived, key 0600.
    expect(read(r.archive!, 'ca-cert.pem')).toBe(before['ca-cert.pem']);
    expect(mode(join(r.archive!, 'ca-key.pem'))).toBe(0o600);
  });

  it("renews under a root whose SKI is not the SHA-1 of its key, copying that SKI into the AKI", async () => {
    const d = freshDir();
    mkdirSync(d);
    const sh = (cmd: string): void => void execFileSync('sh', ['-c', cmd], { cwd: d, stdio: 'pipe' });
    const ski = '0102030405060708090a0b0c0d0e0f1011121314';
    sh('openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out root-key.pem');
    sh(`openssl req -x509 -new -key root-key.pem -subj '/O=other/CN=other root' -days 3650 -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign -addext subjectKeyIdentifier=${ski} -addext authorityKeyIdentifier=none -out root-cert.pem`);
    sh('openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca-key.pem');
    sh("openssl req -new -key ca-key.pem -subj '/O=other/CN=other intermediate' -out inter.csr");
    writeFileSync(join(d, 'ext'), 'basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n');
    sh('openssl x509 -req -in inter.csr -CA root-cert.pem -CAkey root-key.pem -CAcreateserial -days 365 -extfile ext -out ca-cert.pem && cat ca-cert.pem root-cert.pem > cert-chain.pem && rm inter.csr ext root-cert.srl');
    await renewIntermediate({ dir: d });
    const text = execFileSync('openssl', ['x509', '-in', 'ca-cert.pem', '-noout', '-ext', 'authorityKeyIdentifier'], { cwd: d, encoding: 'utf8' });
    expect(text.replace(/[\s:]/g, '').toLowerCase()).toContain(ski);
    expect(execFileSync('openssl', ['verify', '-CAfile', 'root-cert.pem', 'ca-cert.pem'], { cwd: d, encoding: 'utf8' }).trim()).toBe('ca-cert.pem: OK');
    expect(() => loadCaDir(d)).not.toThrow();
  });

  it("keeps the previous intermediate's name constraints and other extensions, as they were, so a constrained intermediate stays constrained", async () => {
    const d = freshDir();
    const root = await caCert(undefined, 'O=acme, CN=acme corp root');
    const policies = new x509.CertificatePolicyExtension(['1.3.6.1.4.1.99999.1']);
    const inter = await caCert(root, 'O=acme, CN=acme mesh intermediate', [nameConstraints({ uri: ['cluster.local'], dns: ['.svc.cluster.local'] }), policies], 0);
    await writeCaDir(d, [root], inter, [inter, root]);
    writeFileSync(join(d, 'root-key.pem'), KeyObject.from(root.keys.privateKey).export({ type: 'pkcs8', format: 'pem' }).toString(), { mode: 0o600 });
    const r = await renewIntermediate({ dir: d });
    expect(r.messages).toContain("kept the previous intermediate's name constraints, certificate policies");
    const renewed = new x509.X509Certificate(read(d, 'ca-cert.pem'));
    expect(renewed.serialNumber).not.toBe(inter.cert.serialNumber);
    for (const type of ['2.5.29.30', '2.5.29.32']) {
      const [was, now] = [inter.cert, renewed].map((c) => c.extensions.find((e) => e.type === type));
      expect(now, type).toBeDefined();
      expect([now!.critical, Buffer.from(now!.value).toString('hex')]).toEqual([was!.critical, Buffer.from(was!.value).toString('hex')]);
    }
    // Written once each: the ones made afresh are not copied beside their new selves.
    expect(renewed.extensions.map((e) => e.type).sort()).toEqual(['2.5.29.14', '2.5.29.15', '2.5.29.19', '2.5.29.30', '2.5.29.32', '2.5.29.35']);
    const text = execFileSync('openssl', ['x509', '-in', join(d, 'ca-cert.pem'), '-noout', '-ext', 'nameConstraints'], { encoding: 'utf8' });
    expect(text).toMatch(/critical/);
    expect(text).toMatch(/DNS:\.svc\.cluster\.local/);
    expect(text).toMatch(/URI:cluster\.local/);
    expect(execFileSync('openssl', ['verify', '-x509_strict', '-CAfile', 'root-cert.pem', 'ca-cert.pem'], { cwd: d, encoding: 'utf8' }).trim()).toBe('ca-cert.pem: OK');
    expect(() => loadCaDir(d)).not.toThrow();
  });

  it('renews under the current copy of a root re-issued with the same name and key, not an expired copy listed first', async () => {
    const d = freshDir();
    mkdirSync(d, { mode: 0o700 });
    const rootKey = await generateKey('ec256');
    const subject = caSubjectName('acme', 'root CA');
    const expired = await createRootCert(rootKey, { subject, notBefore: new Date(T0.getTime() - 2 * YEAR_MS), notAfter: new Date(T0.getTime() - YEAR_MS), keyType: 'ec256' });
    const current = await createRootCert(rootKey, { subject, notBefore: new Date(T0.getTime() - DAY_MS), notAfter: new Date(T0.getTime() + 5 * YEAR_MS), keyType: 'ec256' });
    const interKey = await generateKey('ec256');
    const inter = await createIntermediateCert(interKey.keys.publicKey, { cert: current, key: rootKey.keys.privateKey, keyType: 'ec256' }, { subject: caSubjectName('acme', 'intermediate CA'), notBefore: new Date(T0.getTime() - DAY_MS), notAfter: new Date(T0.getTime() + 30 * DAY_MS) });
    const pemOf = (c: x509.X509Certificate): string => `${c.toString('pem')}\n`;
    writeFileSync(join(d, 'root-cert.pem'), pemOf(expired) + pemOf(current));
    writeFileSync(join(d, 'cert-chain.pem'), pemOf(inter) + pemOf(current));
    writeFileSync(join(d, 'ca-cert.pem'), pemOf(inter));
    writeFileSync(join(d, 'ca-key.pem'), interKey.privateKeyPem, { mode: 0o600 });
    writeFileSync(join(d, 'root-key.pem'), rootKey.privateKeyPem, { mode: 0o600 });
    await renewIntermediate({ dir: d, now: T1 });
    const renewed = cert(d, 'ca-cert.pem');
    expect(Date.parse(renewed.validTo)).toBe(T1.getTime() + YEAR_MS);
    expect(renewed.verify(new X509Certificate(Buffer.from(current.rawData)).publicKey)).toBe(true);
    expect(read(d, 'cert-chain.pem')).toBe(read(d, 'ca-cert.pem') + pemOf(current));
    expect(() => loadCaDir(d, T1)).not.toThrow();
  });

  it('honours --lifetime and never outlives the root', async () => {
    const d = await initAt();
    await renewIntermediate({ dir: d, now: T1, lifetimeMs: 30 * DAY_MS });
    expect(Date.parse(cert(d, 'ca-cert.pem').validTo)).toBe(T1.getTime() + 30 * DAY_MS);

    const short = await initAt({ rootLifetimeMs: 100 * DAY_MS, intermediateLifetimeMs: 50 * DAY_MS });
    const r = await renewIntermediate({ dir: short, now: T1 });
    expect(Date.parse(cert(short, 'ca-cert.pem').validTo)).toBe(T0.getTime() + 100 * DAY_MS);
    expect(r.warnings[0]).toMatch(/ends with the root .*plan a root rotation/);
  });

  it('keeps the key type of the current intermediate, and signs with an RSA root', async () => {
    const d = await initAt({ keyType: 'rsa2048' });
    await renewIntermediate({ dir: d, now: T1 });
    expect(cert(d, 'ca-cert.pem').publicKey.asymmetricKeyDetails?.modulusLength).toBe(2048);
    const text = execFileSync('openssl', ['x509', '-in', join(d, 'ca-cert.pem'), '-noout', '-text'], { encoding: 'utf8' });
    expect(text).toContain('Signature Algorithm: sha256WithRSAEncryption');
    expect(execFileSync('openssl', ['verify', '-attime', String(T1.getTime() / 1000), '-CAfile', 'root-cert.pem', 'ca-cert.pem'], { cwd: d, encoding: 'utf8' }).trim()).toBe('ca-cert.pem: OK');

    const ec = await initAt({ keyType: 'ec384' });
    await renewIntermediate({ dir: ec, now: T1 });
    expect(cert(ec, 'ca-cert.pem').publicKey.asymmetricKeyDetails?.namedCurve).toBe('secp384r1');
  });

  it('says the root key is offline when root-key.pem is absent', async () => {
    const d = await initAt();
    rmSync(join(d, 'root-key.pem'));
    const snap = snapshot(d);
    expect((await configErrorAsync(renewIntermediate({ dir: d, now: T1 }))).message).toMatch(/^the root key is offline: .*root-key\.pem is missing/);
    expect(snapshot(d)).toEqual(snap);
  });

  it('refuses a root key that matches no root', async () => {
    const d = await initAt();
    cpSync(join(await initAt(), 'root-key.pem'), join(d, 'root-key.pem'));
    expect((await configErrorAsync(renewIntermediate({ dir: d, now: T1 }))).message).toBe('root-key.pem matches none of the roots in root-cert.pem');
  });

  it('refuses while a root rotation is in progress', async () => {
    const d = await startedAt();
    expect((await configErrorAsync(renewIntermediate({ dir: d, now: T1 }))).message).toMatch(/root rotation is in progress \(step "started"\)/);
  });

  it('completes after an interrupted renewal left a key that does not match ca-cert.pem', async () => {
    const d = await initAt();
    cpSync(join(await initAt(), 'ca-key.pem'), join(d, 'ca-key.pem'));
    expect(() => loadCaDir(d, T1)).toThrow(/does not match/);
    await renewIntermediate({ dir: d, now: T1 });
    expect(() => loadCaDir(d, T1)).not.toThrow();
  });
});
