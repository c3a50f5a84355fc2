/**
 * A whole root rotation, simulated with an injected clock: leaves are issued through LocalIssuer
 * from the CA directory as it is at each stage, and every workload holds the root bundle it was
 * given at its time. Certificates must keep verifying between any two workloads that can meet,
 * in both directions, checked with Node and with `openssl verify`.
 *
 *   stage      signs with          bundle handed out
 *   before     old intermediate    {old}
 *   started    old intermediate    {old, new}
 *   switched   new intermediate    {old, new}
 *   finished   new intermediate    {new}
 */
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initCaDir } from '../../src/ca/init.js';
import { loadCaDir } from '../../src/ca/material.js';
import { readRotationState, renewIntermediate, rotateFinish, rotateStart, rotateSwitch, type RotationState } from '../../src/ca/rotate.js';
import { LocalIssuer, type SignedLeaf } from '../../src/issuer/local.js';
import { parsePemBundle } from '../../src/x509/pem.js';
import { verifyResponseChain } from '../../src/x509/verify-chain.js';
import { runCli } from '../support/cli.js';

const MINUTE_MS = 60_000;
const HOUR_MS = 60 * MINUTE_MS;
const DAY_MS = 24 * HOUR_MS;
const MAX_LEAF_MS = 90 * DAY_MS;

const T0 = new Date(Math.floor(Date.now() / 1000) * 1000);
const at = (base: Date, ms: number): Date => new Date(base.getTime() + ms);
const tBefore = at(T0, HOUR_MS); // a workload gets a certificate before the rotation
const tStart = at(T0, 2 * HOUR_MS); // ca rotate start
const tSwitch = at(tStart, 13 * HOUR_MS); // ca rotate switch, after the default --min-wait
const tFinish = at(tSwitch, MAX_LEAF_MS); // ca rotate finish, after the default --max-leaf-lifetime
const tRenew = at(tFinish, 12 * HOUR_MS); // ca renew-intermediate

/** A workload: its certificate and the root bundle it was handed with it (the response's last element). */
interface Workload {
  readonly name: string;
  readonly leaf: SignedLeaf;
  readonly bundle: string;
}

let base: string;
let dir: string;
let state: RotationState;
const w: Record<string, Workload> = {};
const bundles: Record<string, string> = {};

function issue(name: string, now: Date, lifetimeMs: number): Workload {
  const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const issuer = new LocalIssuer('default', loadCaDir(dir, now));
  const leaf = issuer.sign({
    spki: publicKey.export({ type: 'spki', format: 'der' }),
    uris: [`spiffe://cluster.local/ns/default/sa/${name}`],
    notBefore: new Date(now.getTime() - 2 * MINUTE_MS),
    notAfter: new Date(now.getTime() + lifetimeMs),
  });
  // Its own response verifies against the bundle it carries.
  verifyResponseChain([leaf.pem, ...leaf.chainPem], leaf.chainPem.at(-1)!, now);
  return (w[name] = { name, leaf, bundle: leaf.chainPem.at(-1)! });
}

const fps = (pem: string): string[] => parsePemBundle(pem).map((c) => c.fingerprint256);

/** The chain a workload presents in a TLS handshake: its leaf and intermediates (no root). */
const presented = (x: Workload): string[] => [x.leaf.pem, ...x.leaf.chainPem.slice(0, -1)];

function opensslVerify(x: Workload, bundle: string, now: Date): { ok: boolean; output: string } {
  const tmp = mkdtempSync(join(base, 'openssl-'));
  try {
    writeFileSync(join(tmp, 'bundle.pem'), bundle);
    writeFileSync(join(tmp, 'inter.pem'), x.leaf.chainPem.slice(0, -1).join(''));
    writeFileSync(join(tmp, 'leaf.pem'), x.leaf.pem);
    const args = ['verify', '-attime', String(Math.floor(now.getTime() / 1000)), '-CAfile', 'bundle.pem', '-untrusted', 'inter.pem', 'leaf.pem'];
    try {
      return { ok: true, output: execFileSync('openssl', args, { cwd: tmp, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }) };
    } catch (e) {
      const err = e as { stdout?: string; stderr?: string };
      return { ok: false, output: `${err.stdout ?? ''}${err.stderr ?? ''}` };
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

/** Node's raw signature walk: leaf ← intermediates ← some root of the bundle. */
function nodeSignaturesChain(x: Workload, bundle: string): boolean {
  const certs = presented(x).map((p) => new X509Certificate(p));
  for (let i = 0; i + 1 < certs.length; i++) if (!certs[i]!.checkIssued(certs[i + 1]!) || !certs[i]!.verify(certs[i + 1]!.publicKey)) return false;
  const top = certs.at(-1)!;
  return parsePemBundle(bundle).some((r) => top.checkIssued(r) && top.verify(r.publicKey));
}

/** A peer holding `bundle` accepts `x`'s certificate at `now`: Node (verifyResponseChain and X509Certificate.verify) and openssl agree. */
function expectAccepted(x: Workload, bundle: string, now: Date): void {
  expect(() => verifyResponseChain([...presented(x), bundle], bundle, now), `${x.name} by ${fps(bundle).length}-root bundle`).not.toThrow();
  expect(nodeSignaturesChain(x, bundle)).toBe(true);
  const o = opensslVerify(x, bundle, now);
  expect(o.ok, o.output).toBe(true);
  expect(o.output.trim()).toBe('leaf.pem: OK');
}

function expectRejected(x: Workload, bundle: string, now: Date): void {
  expect(() => verifyResponseChain([...presented(x), bundle], bundle, now)).toThrow(/does not end at a trusted root/);
  expect(nodeSignaturesChain(x, bundle)).toBe(false);
  const o = opensslVerify(x, bundle, now);
  expect(o.ok).toBe(false);
  expect(o.output).toMatch(/error 20 at \d+ depth lookup: unable to get local issuer certificate/);
}

beforeAll(async () => {
  base = mkdtempSync(join(tmpdir(), 'meshcert-ca-rotation-'));
  dir = join(base, 'ca');
  await initCaDir({ dir, now: T0 });

  // Before: old intermediate, bundle {old}.
  issue('before', tBefore, DAY_MS);
  bundles.before = w.before!.bundle;

  await rotateStart({ dir, now: tStart });
  state = readRotationState(dir)!;
  // Started: still the old intermediate, bundle {old, new}. One right after start, one (with the
  // longest lifetime) right before the switch: the last leaf the old intermediate signs.
  issue('started', at(tStart, HOUR_MS), DAY_MS);
  issue('lastOld', at(tSwitch, -MINUTE_MS), MAX_LEAF_MS);
  bundles.started = w.started!.bundle;

  rotateSwitch({ dir, now: tSwitch });
  // Switched: new intermediate, bundle {old, new}; this one lives past the finish.
  issue('switched', at(tSwitch, MINUTE_MS), MAX_LEAF_MS);
  bundles.switched = w.switched!.bundle;

  rotateFinish({ dir, now: tFinish });
  // Finished: new intermediate, bundle {new}.
  issue('finished', at(tFinish, MINUTE_MS), DAY_MS);
  bundles.finished = w.finished!.bundle;
});
afterAll(() => {
  rmSync(base, { recursive: true, force: true });
});

describe('what each stage signs with and hands out', () => {
  it('before: the old intermediate and {old}', () => {
    expect(fps(bundles.before!)).toEqual([state.oldRoot.fingerprint256]);
    expect(fps(w.before!.leaf.chainPem[0]!)).toEqual([state.oldIntermediate.fingerprint256]);
  });
  it('started: the old intermediate and {old, new}, old first', () => {
    expect(fps(bundles.started!)).toEqual([state.oldRoot.fingerprint256, state.newRoot.fingerprint256]);
    expect(fps(w.started!.leaf.chainPem[0]!)).toEqual([state.oldIntermediate.fingerprint256]);
    expect(fps(w.lastOld!.leaf.chainPem[0]!)).toEqual([state.oldIntermediate.fingerprint256]);
  });
  it('switched: the new intermediate and {old, new}', () => {
    expect(fps(bundles.switched!)).toEqual([state.oldRoot.fingerprint256, state.newRoot.fingerprint256]);
    expect(fps(w.switched!.leaf.chainPem[0]!)).toEqual([state.newIntermediate.fingerprint256]);
  });
  it('finished: the new intermediate and {new}', () => {
    expect(fps(bundles.finished!)).toEqual([state.newRoot.fingerprint256]);
    expect(fps(w.finished!.leaf.chainPem[0]!)).toEqual([state.newIntermediate.fingerprint256]);
  });
});

describe('every certificate verifies against every bundle its peers hold at that time', () => {
  it('after start, a workload still holding {old} and one given {old, new} accept each other', () => {
    const now = at(tStart, HOUR_MS);
    for (const x of [w.before!, w.started!]) for (const b of [bundles.before!, bundles.started!]) expectAccepted(x, b, now);
  });

  it('after switch, old-root and new-root leaves are accepted by peers holding {old, new} (both directions)', () => {
    // By now every workload has renewed since the start (--min-wait): the bundles in use are {old, new}.
    const now = at(tSwitch, MINUTE_MS);
    for (const x of [w.before!, w.started!, w.lastOld!, w.switched!]) {
      for (const b of [bundles.started!, bundles.switched!]) expectAccepted(x, b, now);
    }
  });

  it('just before finish, the last old-root leaf is still valid and still accepted', () => {
    const now = at(tFinish, -2 * MINUTE_MS);
    for (const b of [bundles.started!, bundles.switched!]) {
      expectAccepted(w.lastOld!, b, now);
      expectAccepted(w.switched!, b, now);
    }
  });

  it('after finish, new-root leaves verify with {new} and with {old, new}', () => {
    // w.switched (the longest lifetime, issued just after the switch) is valid until tFinish + 1m.
    const now = at(tFinish, 30_000);
    for (const x of [w.switched!, w.finished!]) {
      for (const b of [bundles.started!, bundles.switched!, bundles.finished!]) expectAccepted(x, b, now);
    }
  });
});

describe('why each step waits', () => {
  it('a new-root leaf is rejected by a workload holding only {old}: switch waits until everyone has {old, new}', () => {
    expectRejected(w.switched!, bundles.before!, at(tSwitch, MINUTE_MS));
  });

  it('an old-root leaf is rejected by the post-finish bundle {new}, even while it is valid', () => {
    const stillValid = at(tFinish, -2 * MINUTE_MS);
    expect(w.lastOld!.leaf.notAfter > stillValid).toBe(true);
    expectRejected(w.lastOld!, bundles.finished!, stillValid);
    // The same for the earlier old-root leaves, each checked while it is valid.
    for (const x of [w.before!, w.started!]) expectRejected(x, bundles.finished!, at(x.leaf.notBefore, 5 * MINUTE_MS));
  });

  it('so finish waits for the longest leaf lifetime: by then no old-root leaf is valid any more', () => {
    for (const x of [w.before!, w.started!, w.lastOld!]) expect(x.leaf.notAfter.getTime()).toBeLessThanOrEqual(tFinish.getTime());
    expect(() => verifyResponseChain([...presented(w.lastOld!), bundles.started!], bundles.started!, at(tFinish, MINUTE_MS))).toThrow(/not valid now/);
  });
});

describe('renew-intermediate after the rotation', () => {
  let renewed: Workload;

  beforeAll(async () => {
    await renewIntermediate({ dir, now: tRenew });
    renewed = issue('renewed', at(tRenew, MINUTE_MS), DAY_MS);
  });

  it('signs with a new intermediate under the same root and leaves the bundle unchanged', () => {
    expect(renewed.bundle).toBe(bundles.finished);
    expect(fps(renewed.leaf.chainPem[0]!)).not.toEqual([state.newIntermediate.fingerprint256]);
    expect(verifyResponseChain([renewed.leaf.pem, ...renewed.leaf.chainPem], bundles.finished!, at(tRenew, MINUTE_MS)).root.fingerprint256).toBe(state.newRoot.fingerprint256);
  });

  it('leaves from the old and the new intermediate both verify with the unchanged bundle', () => {
    // w.finished was signed by the intermediate that renew-intermediate replaced.
    const now = at(tRenew, 2 * MINUTE_MS);
    for (const x of [w.finished!, renewed]) {
      expectAccepted(x, bundles.finished!, now);
      expectAccepted(x, renewed.bundle, now);
    }
    expect(fps(w.finished!.leaf.chainPem[0]!)).toEqual([state.newIntermediate.fingerprint256]);
  });
});

describe('the ca commands, as an operator runs them', () => {
  let cliDir: string;
  const cli = (...args: string[]): ReturnType<typeof runCli> => runCli(['ca', ...args]);

  beforeAll(() => {
    cliDir = join(base, 'cli-ca');
  });

  it('init, then rotate start: next/ staged, both roots in root-cert.pem', async () => {
    expect((await cli('init', '--dir', cliDir)).code).toBe(0);
    const r = await cli('rotate', 'start', '--dir', cliDir);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/rotation started/);
    expect(r.stdout).toMatch(/next: "meshcert ca rotate switch --dir /);
    expect(parsePemBundle(readFileSync(join(cliDir, 'root-cert.pem'), 'utf8'))).toHaveLength(2);
    expect(statSync(join(cliDir, 'next/ca-key.pem')).mode & 0o777).toBe(0o600);
    const again = await cli('rotate', 'start', '--dir', cliDir);
    expect(again.code).toBe(0);
    expect(again.stdout).toMatch(/already in progress/);
  });

  it('rotate start resumed after an interruption warns of unused options only when some were given', async () => {
    const d = join(base, 'cli-ca-resume');
    expect((await cli('init', '--dir', d)).code).toBe(0);
    expect((await cli('rotate', 'start', '--dir', d)).code).toBe(0);
    // As if killed after staging next/, before the state was written.
    rmSync(join(d, 'rotation.json'));
    const plain = await cli('rotate', 'start', '--dir', d);
    expect(plain.code, plain.stderr).toBe(0);
    expect(plain.stdout).toMatch(/reusing the new CA staged in/);
    expect(plain.stderr).not.toMatch(/were not used/);
    rmSync(join(d, 'rotation.json'));
    const given = await cli('rotate', 'start', '--dir', d, '--key-type', 'ec384');
    expect(given.code, given.stderr).toBe(0);
    expect(given.stderr).toMatch(/--key-type and --org were not used/);
  });

  it('status says we are started, what to check, and when switch is allowed', async () => {
    const r = await cli('rotate', 'status', '--dir', cliDir);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^step: started: /m);
    expect(r.stdout).toMatch(/^next: meshcert ca rotate switch --dir \S+ {2}allowed from \S+ \(in (12h 59m|13h)\)$/m);
    expect(r.stdout).toMatch(/istio-ca-root-cert/);
    const j = await cli('rotate', 'status', '--dir', cliDir, '--json');
    expect(j.code).toBe(0);
    expect(JSON.parse(j.stdout)).toMatchObject({ step: 'started', next: { allowedNow: false }, state: { minWaitSeconds: 46800 } });
  });

  it('switch refuses too early (exit 1), then goes through with --force and a warning', async () => {
    const early = await cli('rotate', 'switch', '--dir', cliDir);
    expect(early.code).toBe(1);
    expect(early.stderr).toMatch(/^meshcert: too early to switch: .*--force/);
    const before = readFileSync(join(cliDir, 'next/ca-cert.pem'), 'utf8');
    const r = await cli('rotate', 'switch', '--dir', cliDir, '--force', '--max-leaf-lifetime', '2d');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/^warning: switching before the wait is over/);
    expect(r.stdout).toMatch(/^switched: /);
    expect(readFileSync(join(cliDir, 'ca-cert.pem'), 'utf8')).toBe(before);
    const s = await cli('rotate', 'status', '--dir', cliDir, '--json');
    expect(JSON.parse(s.stdout)).toMatchObject({ step: 'switched', state: { maxLeafLifetimeSeconds: 172800, switchForced: true } });
  });

  it('finish refuses too early (exit 1), then goes through with --force; status is idle again', async () => {
    const early = await cli('rotate', 'finish', '--dir', cliDir);
    expect(early.code).toBe(1);
    expect(early.stderr).toMatch(/^meshcert: too early to finish: .*--max-leaf-lifetime 2d/);
    const r = await cli('rotate', 'finish', '--dir', cliDir, '--force');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^finished: removed the old root/);
    expect(parsePemBundle(readFileSync(join(cliDir, 'root-cert.pem'), 'utf8'))).toHaveLength(1);
    const [archive] = readdirSync(join(cliDir, 'archive'));
    expect(statSync(join(cliDir, 'archive', archive!, 'ca-key.pem')).mode & 0o777).toBe(0o600);
    expect(existsSync(join(cliDir, 'rotation.json'))).toBe(false);
    const s = await cli('rotate', 'status', '--dir', cliDir);
    expect(s.stdout).toMatch(/^step: idle: no rotation in progress/m);
    const again = await cli('rotate', 'finish', '--dir', cliDir);
    expect(again.code).toBe(0);
    expect(again.stdout).toMatch(/nothing to finish/);
    expect((await cli('check', '--dir', cliDir)).code).toBe(0);
  }, 120_000);

  it('check exits 1 on a directory a killed renew-intermediate left half replaced (serve would load the staged set), and 0 once a re-run completes it', async () => {
    const d = join(base, 'half-renewed');
    const donor = join(base, 'half-renewed-donor');
    expect((await cli('init', '--dir', d)).code).toBe(0);
    cpSync(d, donor, { recursive: true });
    expect((await cli('renew-intermediate', '--dir', donor)).code).toBe(0);
    // What the renewal leaves when killed after ca-key.pem: the staged set, the marker, a new key beside the old certificate.
    mkdirSync(join(d, 'renewing'), { mode: 0o700 });
    for (const f of ['ca-key.pem', 'cert-chain.pem', 'ca-cert.pem']) cpSync(join(donor, f), join(d, 'renewing', f));
    writeFileSync(join(d, '.meshcert-replacing'), 'renewing\n');
    // Killed before the first live file: still the old CA, whole, and said so.
    const before = await cli('check', '--dir', d);
    expect(before.code).toBe(0);
    expect(before.stderr).toMatch(/^warning: a "meshcert ca renew-intermediate" was interrupted before it replaced the signing files: this is still the CA from before it; run it again to complete it$/m);
    cpSync(join(donor, 'ca-key.pem'), join(d, 'ca-key.pem'));
    const half = await cli('check', '--dir', d);
    expect(half.code).toBe(1);
    expect(half.stderr).toMatch(/^meshcert: an interrupted "meshcert ca renew-intermediate" left the CA files in .* half replaced .*; serve runs with that set meanwhile, but the directory's own files do not make a CA$/m);
    const again = await cli('renew-intermediate', '--dir', d);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toMatch(/^completing a renewal of the intermediate that was interrupted/);
    expect(readFileSync(join(d, 'ca-cert.pem'), 'utf8')).toBe(readFileSync(join(donor, 'ca-cert.pem'), 'utf8'));
    expect((await cli('check', '--dir', d)).code).toBe(0);
  }, 120_000);

  it('renew-intermediate works with the root key and explains when it is offline', async () => {
    // A bare number (seconds) is refused, and so is a lifetime under a day, before anything is touched.
    const before = readFileSync(join(cliDir, 'ca-cert.pem'), 'utf8');
    for (const [lifetime, message] of [
      ['365', '--lifetime 365: give a unit (365d, 365h, 365m or 365s); a bare number would be seconds'],
      ['12h', '--lifetime 12h: an intermediate must last at least 1d'],
      ['7200s', '--lifetime 7200s: an intermediate must last at least 1d'],
    ]) {
      const short = await cli('renew-intermediate', '--dir', cliDir, '--lifetime', lifetime!);
      expect(short.code).toBe(2);
      expect(short.stderr).toContain(message);
    }
    expect(readFileSync(join(cliDir, 'ca-cert.pem'), 'utf8')).toBe(before);
    const r = await cli('renew-intermediate', '--dir', cliDir, '--lifetime', '30d');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^renewed the intermediate/);
    rmSync(join(cliDir, 'root-key.pem'));
    const offline = await cli('renew-intermediate', '--dir', cliDir);
    expect(offline.code).toBe(1);
    expect(offline.stderr).toMatch(/^meshcert: the root key is offline: /);
  }, 120_000);

  it('import-istiod copies a CA and refuses to overwrite one', async () => {
    const target = join(base, 'imported');
    const r = await cli('import-istiod', '--from', cliDir, '--dir', target);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^imported istiod's plug-in CA \(cacerts\)/);
    const again = await cli('import-istiod', '--from', cliDir, '--dir', target);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/refusing to overwrite/);
  });

  it('usage errors exit 2', async () => {
    expect((await cli('rotate', 'switch')).code).toBe(2);
    expect((await cli('rotate', 'bogus', '--dir', cliDir)).code).toBe(2);
    expect((await cli('rotate', 'switch', '--dir', cliDir, '--min-wait', 'soon')).code).toBe(2);
    // Days meant, seconds written: refused with the units to choose from.
    for (const [flag, step] of [['--min-wait', 'start'], ['--min-wait', 'switch'], ['--max-leaf-lifetime', 'switch']]) {
      const bare = await cli('rotate', step!, '--dir', cliDir, flag!, '13');
      expect(bare.code, `${step} ${flag}`).toBe(2);
      expect(bare.stderr).toContain(`${flag} 13: give a unit (13d, 13h, 13m or 13s); a bare number would be seconds`);
    }
    // A span past a century is refused before any file is touched (it once left a CA with an unreadable notAfter).
    const files = Object.fromEntries(readdirSync(cliDir).filter((f) => f.endsWith('.pem')).map((f) => [f, readFileSync(join(cliDir, f), 'utf8')]));
    for (const args of [['renew-intermediate', '--lifetime', '99999999999d'], ['rotate', 'start', '--min-wait', '99999999999d']]) {
      const r = await cli(...args, '--dir', cliDir);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr).toMatch(/: invalid duration "99999999999d": at most 36500d/);
    }
    expect(Object.fromEntries(readdirSync(cliDir).filter((f) => f.endsWith('.pem')).map((f) => [f, readFileSync(join(cliDir, f), 'utf8')]))).toEqual(files);
  }, 120_000);
});
