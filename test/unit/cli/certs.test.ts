/** `meshcert certs`, run in-process against a temp SQLite inventory, with console spies. */
import { existsSync, mkdirSync, mkdtempSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi, type MockInstance } from 'vitest';
import { UsageError } from '../../../src/cli/args.js';
import { certsCommand, parseDbArg, resolveInventoryTarget } from '../../../src/cli/certs.js';
import { ConfigError } from '../../../src/errors/ca-error.js';
import { openStore } from '../../../src/inventory/open.js';
import type { CertificateRecord } from '../../../src/inventory/types.js';
import { DAY, makeChain, makeTestCert } from '../discovery/helpers.js';
import { fp, makeRecord } from '../inventory/fixtures.js';
import { writeUnreadableInventory } from '../../support/unreadable-inventory.js';

const HOUR = 3_600_000;
const BASE = Math.floor(Date.now() / 1000) * 1000;
const now = (): Date => new Date(BASE);

let dir: string;
let dbPath: string;
let db: string;
let records: CertificateRecord[];
let out: MockInstance;
let err: MockInstance;

const stdout = (): string => out.mock.calls.map((c) => c.join(' ')).join('\n');
const stderr = (): string => err.mock.calls.map((c) => c.join(' ')).join('\n');
const run = (...argv: string[]): Promise<number> => certsCommand(argv, { now });

function life(issuedAgoH: number, lifetimeH = 24): Partial<CertificateRecord> {
  return { notBefore: new Date(BASE - issuedAgoH * HOUR), notAfter: new Date(BASE + (lifetimeH - issuedAgoH) * HOUR), issuedAt: new Date(BASE - issuedAgoH * HOUR) };
}

const id = (ns: string, sa: string): Partial<CertificateRecord> => ({ spiffeId: `spiffe://cluster.local/ns/${ns}/sa/${sa}`, namespace: ns, serviceAccount: sa });

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'meshcert-certs-cli-'));
  dbPath = join(dir, 'data', 'inventory.db');
  db = `sqlite:${dbPath}`;
  records = [
    makeRecord('web-1', { ...id('shop', 'web'), ...life(2) }),
    makeRecord('web-0', { ...id('shop', 'web'), ...life(14) }),
    makeRecord('stuck', { ...id('shop', 'cart'), ...life(20) }), // not renewed: 4h of 24h left
    makeRecord('pay', { ...id('pay', 'api'), issuer: 'legacy', ...life(1) }),
    makeRecord('old', { ...id('pay', 'api'), ...life(48) }), // expired a day ago
    makeRecord('disc', {
      spiffeId: null,
      namespace: null,
      serviceAccount: null,
      issuer: 'O=acme, CN=Acme CA',
      source: 'discovered:file:/etc/certs/web.pem',
      subject: 'CN=web.acme.test',
      dnsNames: ['web.acme.test'],
      requester: null,
      cluster: null,
      policyRule: null,
      ...life(24 * 10, 24 * 400),
    }),
  ];
  const store = await openStore({ kind: 'sqlite', path: dbPath });
  await store.insertMany(records);
  // more than one page of filler in its own namespace, for paging
  await store.insertMany(Array.from({ length: 1100 }, (_, i) => makeRecord(`bulk-${i}`, { ...id('bulk', 'job'), ...life(1, 24 + i) })));
  await store.close();
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

beforeEach(() => {
  out = vi.spyOn(console, 'log').mockImplementation(() => undefined);
  err = vi.spyOn(console, 'error').mockImplementation(() => undefined);
});
afterEach(() => vi.restoreAllMocks());

describe('meshcert certs list', () => {
  it('prints a table with serial, identity, issuer, notAfter, days left and source', async () => {
    expect(await run('list', '--db', db, '--namespace', 'shop')).toBe(0);
    const lines = stdout().split('\n');
    expect(lines[0]).toMatch(/^SERIAL\s+IDENTITY\s+ISSUER\s+NOT AFTER\s+DAYS LEFT\s+SOURCE$/);
    expect(lines).toHaveLength(4);
    // ordered by notAfter: stuck (4h left), web-0 (10h), web-1 (22h)
    expect(lines[1]).toContain(records[2]!.serial);
    expect(lines[1]).toContain('spiffe://cluster.local/ns/shop/sa/cart');
    expect(lines[1]).toContain(records[2]!.notAfter.toISOString());
    expect(lines[1]).toMatch(/\s0\.1\s+issued$/);
    expect(lines[3]).toContain(records[0]!.serial);
    expect(stderr()).toBe('');
  });

  it('shows the subject for certificates without a SPIFFE ID, and "expired" for expired ones', async () => {
    expect(await run('list', '--db', db, '--source', 'discovered')).toBe(0);
    expect(stdout()).toContain('CN=web.acme.test');
    expect(stdout()).toContain('discovered:file:/etc/certs/web.pem');
    expect(stdout()).toContain('390.0');
    out.mockClear();
    expect(await run('list', '--db', db, '--namespace', 'pay', '--sa', 'api')).toBe(0);
    expect(stdout().split('\n')[1]).toMatch(/expired\s+issued$/);
  });

  it('says which of meshcert\u2019s own parts a certificate it issued itself went to (serving certificate, istiod), and filters by requester', async () => {
    const own = join(dir, 'own.db');
    const store = await openStore({ kind: 'sqlite', path: own });
    await store.insertMany([
      makeRecord('serving', { spiffeId: null, namespace: null, serviceAccount: null, requester: 'meshcert:server.tls', policyRule: null, dnsNames: ['localhost'], ...life(1) }),
      makeRecord('workload', { ...id('own', 'app'), ...life(2) }),
    ]);
    await store.close();
    expect(await run('list', '--db', `sqlite:${own}`)).toBe(0);
    const lines = stdout().split('\n');
    expect(lines).toHaveLength(3);
    expect(lines.find((l) => l.includes(' localhost '))).toMatch(/\sissued \(meshcert:server\.tls\)$/);
    expect(lines.find((l) => l.includes('spiffe://cluster.local/ns/own/sa/app'))).toMatch(/\sissued$/);
    out.mockClear();
    expect(await run('list', '--db', `sqlite:${own}`, '--requester', 'meshcert:server.tls')).toBe(0);
    expect(stdout().split('\n')).toHaveLength(2);
    expect(stdout()).toContain('issued (meshcert:server.tls)');
  });

  it('prints JSON records with --json and applies every filter', async () => {
    const json = async (...args: string[]): Promise<Array<Record<string, unknown>>> => {
      out.mockClear();
      expect(await run('list', '--db', db, '--json', ...args)).toBe(0);
      return JSON.parse(stdout()) as Array<Record<string, unknown>>;
    };
    const shop = await json('--namespace', 'shop');
    expect(shop.map((r) => r.fingerprint)).toEqual([fp('cert-stuck'), fp('cert-web-0'), fp('cert-web-1')]);
    expect(shop[0]).toMatchObject({ serial: records[2]!.serial, notAfter: records[2]!.notAfter.toISOString(), source: 'issued', dnsNames: [], subject: null });
    expect((await json('--namespace', 'shop', '--sa', 'web')).map((r) => r.fingerprint)).toEqual([fp('cert-web-0'), fp('cert-web-1')]);
    expect((await json('--issuer', 'legacy')).map((r) => r.fingerprint)).toEqual([fp('cert-pay')]);
    expect((await json('--source', 'discovered:file:/etc/certs/web.pem')).map((r) => r.fingerprint)).toEqual([fp('cert-disc')]);
    // A relative file is the one discover recorded by its absolute path.
    expect((await json('--source', `discovered:file:${relative(process.cwd(), '/etc/certs/web.pem')}`)).map((r) => r.fingerprint)).toEqual([fp('cert-disc')]);
    // expiring within 12h: the expired one, stuck (4h), web-0 (10h)
    expect((await json('--expiring-within', '12h')).map((r) => r.fingerprint)).toEqual([fp('cert-old'), fp('cert-stuck'), fp('cert-web-0')]);
    // --exclude-expired: those not yet expired (the API's includeExpired=false).
    expect((await json('--expiring-within', '12h', '--exclude-expired')).map((r) => r.fingerprint)).toEqual([fp('cert-stuck'), fp('cert-web-0')]);
    expect(await json('--namespace', 'nobody')).toEqual([]);
  });

  it('pages through the store up to --limit (default 1000) and says when more match', async () => {
    expect(await run('list', '--db', db, '--namespace', 'bulk', '--json')).toBe(0);
    expect(JSON.parse(stdout())).toHaveLength(1000);
    expect(stderr()).toMatch(/first 1000 .*raise --limit/);
    out.mockClear();
    err.mockClear();
    expect(await run('list', '--db', db, '--namespace', 'bulk', '--json', '--limit', '5000')).toBe(0);
    const all = JSON.parse(stdout()) as Array<{ fingerprint: string }>;
    expect(all).toHaveLength(1100);
    expect(new Set(all.map((r) => r.fingerprint)).size).toBe(1100);
    expect(stderr()).toBe('');
    out.mockClear();
    expect(await run('list', '--db', db, '--limit', '2')).toBe(0);
    expect(stdout().split('\n')).toHaveLength(3);
    // Expired ones come first (by expiry): a page of them says how to see the live ones.
    expect(stderr()).toMatch(/first 2 certificates; more match \(raise --limit, or --exclude-expired to leave out those already expired\)$/m);
    err.mockClear();
    expect(await run('list', '--db', db, '--limit', '2', '--exclude-expired')).toBe(0);
    expect(stderr()).toMatch(/first 2 certificates; more match \(raise --limit\)$/m);
  });

  it('says so when nothing matches', async () => {
    expect(await run('list', '--db', db, '--namespace', 'nobody')).toBe(0);
    expect(stdout()).toBe('no certificates match');
  });

  it('rejects bad options as usage errors', async () => {
    await expect(run('list', '--db', db, '--limit', '0')).rejects.toThrow(UsageError);
    await expect(run('list', '--db', db, '--limit', 'x')).rejects.toThrow(UsageError);
    await expect(run('list', '--db', db, '--expiring-within', 'soon')).rejects.toThrow(/--expiring-within/);
    await expect(run('list', '--db', db, '--expiring-within', '99999999999d')).rejects.toThrow(new UsageError('--expiring-within: invalid duration "99999999999d": at most 36500d'));
    await expect(run('expiring', '--db', db, '--within', '99999999999d')).rejects.toThrow(new UsageError('--within: invalid duration "99999999999d": at most 36500d'));
    // "--within 30" meant days: a bare number other than 0 needs its unit.
    await expect(run('expiring', '--db', db, '--within', '30')).rejects.toThrow(new UsageError('--within 30: give a unit (30d, 30h, 30m or 30s); a bare number would be seconds'));
    await expect(run('list', '--db', db, '--expiring-within', '7')).rejects.toThrow(new UsageError('--expiring-within 7: give a unit (7d, 7h, 7m or 7s); a bare number would be seconds'));
    expect(await run('list', '--db', db, '--expiring-within', '0')).toBe(0);
    await expect(run('list', '--db', db, '--source', 'elsewhere')).rejects.toThrow(UsageError);
    await expect(run('list', '--db', db, '--bogus')).rejects.toThrow(UsageError);
    await expect(run('list', '--db', 'mysql://x')).rejects.toThrow(/--db must be/);
    await expect(run('frobnicate')).rejects.toThrow(/unknown certs subcommand/);
    await expect(run()).rejects.toThrow(UsageError);
  });

  it('exits 1 without creating anything when the SQLite inventory does not exist', async () => {
    const missing = join(dir, 'nope', 'inventory.db');
    expect(await run('list', '--db', `sqlite:${missing}`)).toBe(1);
    expect(stderr()).toContain(`no inventory at sqlite:${missing}`);
    expect(existsSync(missing)).toBe(false);
  });

  it('exits 1 saying so when --db names a directory (SQLite would say only "disk I/O error")', async () => {
    expect(await run('list', '--db', `sqlite:${dir}`)).toBe(1);
    expect(stderr()).toContain(`cannot open the inventory sqlite:${dir}: not a regular file (give the database file's path, e.g. sqlite:.meshcert/inventory.db)`);
  });
});

describe('text from certificates and places, on a terminal', () => {
  it('is printed with control characters and bidirectional overrides escaped (a discovered certificate chooses them), JSON as it is', async () => {
    const evilDb = join(dir, 'evil', 'inventory.db');
    const spiffeId = 'spiffe://evil/\u001b[2K\u001b[1A\u001b[2K(hidden)';
    const store = await openStore({ kind: 'sqlite', path: evilDb });
    const evil = makeRecord('evil', { spiffeId, namespace: null, serviceAccount: null, source: 'discovered:file:/etc/\u009b31m\u202eweb.pem', dnsNames: ['a\u0007.example'], ...life(2) });
    await store.insertMany([evil]);
    await store.close();
    expect(await run('list', '--db', `sqlite:${evilDb}`)).toBe(0);
    const list = stdout();
    // eslint-disable-next-line no-control-regex -- none may be left
    expect(list).not.toMatch(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u202e]/);
    expect(list).toContain('spiffe://evil/\\u{001b}[2K\\u{001b}[1A\\u{001b}[2K(hidden)');
    expect(list).toContain('discovered:file:/etc/\\u{009b}31m\\u{202e}web.pem');
    out.mockClear();
    expect(await run('show', '--db', `sqlite:${evilDb}`, evil.fingerprint)).toBe(0);
    // eslint-disable-next-line no-control-regex -- none may be left
    expect(stdout()).not.toMatch(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u202e]/);
    expect(stdout()).toContain('a\\u{0007}.example');
    out.mockClear();
    expect(await run('show', '--db', `sqlite:${evilDb}`, '--json', evil.fingerprint)).toBe(0);
    expect(JSON.parse(stdout())).toMatchObject({ spiffeId, dnsNames: ['a\u0007.example'] });
  });
});

describe('meshcert certs show', () => {
  it('prints one certificate found by fingerprint or serial', async () => {
    expect(await run('show', records[3]!.fingerprint, '--db', db)).toBe(0);
    expect(stdout()).toMatch(/^serial\s+/);
    expect(stdout()).toContain(records[3]!.serial);
    expect(stdout()).toContain('spiffe://cluster.local/ns/pay/sa/api');
    expect(stdout()).toMatch(/issuer\s+legacy/);
    expect(stdout()).toMatch(/key\s+ECDSA 256/);
    out.mockClear();
    expect(await run('show', records[3]!.serial.toUpperCase(), '--db', db, '--json')).toBe(0);
    const r = JSON.parse(stdout()) as Record<string, unknown>;
    expect(r).toMatchObject({ fingerprint: records[3]!.fingerprint, issuer: 'legacy', notBefore: records[3]!.notBefore.toISOString() });
  });

  it('exits 1 for an unknown certificate', async () => {
    expect(await run('show', 'abcdef', '--db', db)).toBe(1);
    expect(stderr()).toContain('no certificate with serial or fingerprint abcdef');
    expect(stdout()).toBe('');
    expect(await run('show', 'abcdef', '--db', db, '--json')).toBe(1);
    expect(JSON.parse(stdout())).toEqual({ error: 'not found', key: 'abcdef' });
  });

  it('needs exactly one key', async () => {
    await expect(run('show', '--db', db)).rejects.toThrow(UsageError);
    await expect(run('show', 'a', 'b', '--db', db)).rejects.toThrow(UsageError);
  });

  it("takes a fingerprint as openssl prints it, and refuses what is no serial or fingerprint as a usage error (the API's 400), not 'not found'", async () => {
    const colons = records[3]!.fingerprint.toUpperCase().match(/../g)!.join(':');
    expect(await run('show', colons, '--db', db, '--json')).toBe(0);
    expect(JSON.parse(stdout())).toMatchObject({ fingerprint: records[3]!.fingerprint });
    for (const key of ['zz', '', ' ', 'a'.repeat(129)]) {
      await expect(run('show', key, '--db', db)).rejects.toThrow(new UsageError(`certs show ${JSON.stringify(key)}: a certificate is looked up by its serial or SHA-256 fingerprint (hex)`));
    }
  });
});

describe('meshcert certs expiring', () => {
  let cfgDir: string;
  beforeAll(async () => {
    // A config whose CA intermediate is 3 days from expiry, and whose inventory is the seeded one.
    cfgDir = join(dir, 'cfg');
    mkdirSync(join(cfgDir, 'state', 'ca'), { recursive: true });
    const { root, intermediate } = await makeChain();
    const shortInter = await makeTestCert({ ca: true, subject: 'O=meshcert-test, CN=Short Intermediate', issuer: root, notAfter: new Date(BASE + 3 * DAY) });
    void intermediate;
    writeFileSync(join(cfgDir, 'state', 'ca', 'root-cert.pem'), root.pem);
    writeFileSync(join(cfgDir, 'state', 'ca', 'ca-cert.pem'), shortInter.pem);
    writeFileSync(join(cfgDir, 'state', 'ca', 'cert-chain.pem'), shortInter.pem + root.pem);
    writeFileSync(
      join(cfgDir, 'meshcert.yaml'),
      ['dataDir: state', 'inventory:', '  store: sqlite', `  path: ${dbPath}`, 'trustDomain: cluster.local', ''].join('\n'),
    );
    // Found by discovery: one expiring in 10 days, one expired 2 days ago and still there when last
    // seen, and one expiring in 5 days that was found renewed at the same place since.
    const found = (i: string, where: string, subject: string, bornDaysAgo: number, endsInDays: number): CertificateRecord =>
      makeRecord(i, {
        spiffeId: null,
        namespace: null,
        serviceAccount: null,
        issuer: 'O=acme, CN=Acme CA',
        source: `discovered:${where}`,
        subject,
        requester: null,
        cluster: null,
        policyRule: null,
        notBefore: new Date(BASE - bornDaysAgo * DAY),
        issuedAt: new Date(BASE - bornDaysAgo * DAY),
        notAfter: new Date(BASE + endsInDays * DAY),
      });
    const store = await openStore({ kind: 'sqlite', path: dbPath });
    const dbCert = found('disc-db', 'endpoint:db.acme.test:5432', 'CN=db.acme.test', 80, 10);
    const legacy = found('disc-legacy', 'file:/etc/certs/legacy.pem', 'CN=legacy', 400, -2);
    const api0 = found('disc-api-0', 'file:/etc/certs/api.pem', 'CN=api', 85, 5);
    const api1 = found('disc-api-1', 'file:/etc/certs/api.pem', 'CN=api', 1, 89);
    await store.insertMany([dbCert, legacy, api0, api1]);
    await store.recordSnapshots(
      [
        { source: 'discovered:endpoint:db.acme.test:5432', fingerprints: [dbCert.fingerprint] },
        { source: 'discovered:file:/etc/certs/legacy.pem', fingerprints: [legacy.fingerprint] },
        { source: 'discovered:file:/etc/certs/api.pem', fingerprints: [api0.fingerprint] },
      ],
      new Date(BASE - 2 * DAY),
    );
    await store.recordSnapshots([{ source: 'discovered:file:/etc/certs/api.pem', fingerprints: [api1.fingerprint] }], new Date(BASE - DAY));
    await store.close();
  });

  it('lists CA certificates in their warning window and stale identities', async () => {
    expect(await run('expiring', '--config', join(cfgDir, 'meshcert.yaml'), '--within', '7d')).toBe(0);
    const text = stdout();
    expect(text).toContain('CA certificates:');
    expect(text).toMatch(/intermediate\s+O=meshcert-test, CN=Short Intermediate\s+default\s+\S+\s+3\.0\s+warning/);
    expect(text).not.toContain('Test Root');
    expect(text).toContain('Stale identities');
    expect(text).toMatch(/spiffe:\/\/cluster\.local\/ns\/shop\/sa\/cart\s+\S+\s+default\s+\S+\s+0\.1\s+17%/);
    expect(text).not.toContain('sa/web');
    expect(text).not.toContain('sa/api'); // its latest certificate is fresh
    // The expired one, still there when last seen; not the one with 10 days left, outside --within 7d.
    expect(text).toMatch(/^file:\/etc\/certs\/legacy\.pem\s+CN=legacy\s+\S+\s+O=acme, CN=Acme CA\s+\S+\s+expired\s+\S+$/m);
    expect(text).not.toContain('db.acme.test');
  });

  it("lists the certificates places served when last seen that expire within monitoring.discoveredWarnBefore (30d) or have expired, not one renewed there since", async () => {
    expect(await run('expiring', '--config', join(cfgDir, 'meshcert.yaml'))).toBe(0);
    const lines = stdout().split('\n');
    const at = lines.findIndex((l) => l.startsWith('Discovered certificates expired or expiring where last seen'));
    expect(at).toBeGreaterThan(0);
    expect(lines[at + 1]).toMatch(/^WHERE\s+SUBJECT\s+SERIAL\s+ISSUER\s+NOT AFTER\s+DAYS LEFT\s+LAST SEEN$/);
    expect(lines[at + 2]).toMatch(/^file:\/etc\/certs\/legacy\.pem\s+CN=legacy\s+/);
    expect(lines[at + 3]).toMatch(new RegExp(`^endpoint:db\\.acme\\.test:5432\\s+CN=db\\.acme\\.test\\s+${fp('serial-disc-db').slice(0, 32)}\\s+O=acme, CN=Acme CA\\s+\\S+\\s+10\\.0\\s+${new Date(BASE - 2 * DAY).toISOString()}$`));
    expect(lines).toHaveLength(at + 4);
    expect(stdout()).not.toContain('api.pem');
  });

  it('prints { ca, staleIdentities, problems } with --json', async () => {
    expect(await run('expiring', '--config', join(cfgDir, 'meshcert.yaml'), '--json')).toBe(0);
    const r = JSON.parse(stdout()) as {
      ca: Array<Record<string, unknown>>;
      staleIdentities: Array<{ spiffeId: string; secondsLeft: number; latest: { fingerprint: string; notAfter: string } }>;
      discovered: unknown[];
      problems: string[];
    };
    expect(r.ca).toHaveLength(1);
    expect(r.ca[0]).toMatchObject({ role: 'intermediate', issuer: 'default', subject: 'O=meshcert-test, CN=Short Intermediate', state: 'warning', secondsLeft: 3 * 86400 });
    expect(typeof r.ca[0]!.notAfter).toBe('string');
    expect(r.staleIdentities.map((s) => s.spiffeId)).toEqual(['spiffe://cluster.local/ns/shop/sa/cart']);
    expect(r.staleIdentities[0]).toMatchObject({ secondsLeft: 4 * 3600, latest: { fingerprint: fp('cert-stuck'), notAfter: records[2]!.notAfter.toISOString() } });
    expect(r.discovered).toEqual([
      { where: 'file:/etc/certs/legacy.pem', state: 'expired', secondsLeft: -2 * 86400, seenAt: new Date(BASE - 2 * DAY).toISOString(), record: expect.objectContaining({ fingerprint: fp('cert-disc-legacy') }) },
      {
        where: 'endpoint:db.acme.test:5432',
        state: 'warning',
        secondsLeft: 10 * 86400,
        seenAt: new Date(BASE - 2 * DAY).toISOString(),
        record: expect.objectContaining({ fingerprint: fp('cert-disc-db'), subject: 'CN=db.acme.test', source: 'discovered:endpoint:db.acme.test:5432', notAfter: new Date(BASE + 10 * DAY).toISOString() }),
      },
    ]);
    expect(r.problems).toEqual([]);
    expect(r).toMatchObject({ caChecked: true, caComplete: true });
  });

  it("checks every issuer's CA, in the server's windows unless --within sets all three", async () => {
    const { root } = await makeChain();
    const other = join(cfgDir, 'payments-ca');
    mkdirSync(other, { recursive: true });
    // Expires in 20 days: inside the default 30-day CA window, outside a 7-day one.
    const inter = await makeTestCert({ ca: true, subject: 'O=meshcert-test, CN=Payments Intermediate', issuer: root, notAfter: new Date(BASE + 20 * DAY) });
    writeFileSync(join(other, 'root-cert.pem'), root.pem);
    writeFileSync(join(other, 'ca-cert.pem'), inter.pem);
    writeFileSync(join(other, 'cert-chain.pem'), inter.pem + root.pem);
    const file = join(cfgDir, 'issuers.yaml');
    writeFileSync(file, ['dataDir: state', 'inventory:', '  store: sqlite', `  path: ${dbPath}`, 'issuers:', '  - name: payments', `    dir: ${other}`, 'monitoring:', '  staleWithin: 1h', ''].join('\n'));
    expect(await run('expiring', '--config', file, '--json')).toBe(0);
    const r = JSON.parse(stdout()) as { ca: Array<{ issuer: string; subject: string }>; staleIdentities: unknown[] };
    expect(r.ca.map((e) => `${e.issuer}: ${e.subject}`)).toEqual(['default: O=meshcert-test, CN=Short Intermediate', 'payments: O=meshcert-test, CN=Payments Intermediate']);
    // The stuck identity has 4 hours left: outside the configured 1-hour stale window.
    expect(r.staleIdentities).toEqual([]);
    out.mockClear();
    expect(await run('expiring', '--config', file, '--within', '7d', '--json')).toBe(0);
    const narrow = JSON.parse(stdout()) as { ca: Array<{ issuer: string }>; staleIdentities: unknown[] };
    expect(narrow.ca.map((e) => e.issuer)).toEqual(['default']);
    expect(narrow.staleIdentities).toHaveLength(1);
  });

  it('reports nothing in a short window, and a missing CA directory as a problem (exit 1: the check is incomplete)', async () => {
    writeFileSync(join(cfgDir, 'no-ca.yaml'), 'ca:\n  dir: missing-ca\n');
    expect(await run('expiring', '--config', join(cfgDir, 'no-ca.yaml'), '--db', db, '--within', '1h')).toBe(1);
    // Not "none expiring": what could not be read may be what expires.
    expect(stdout()).toContain('CA certificates: none expiring within 1h among the 0 that could be read; not checked: what the 1 problem(s) above name');
    expect(stdout()).toContain('Stale identities: none');
    expect(stdout()).toMatch(/^file:\/etc\/certs\/legacy\.pem\s+CN=legacy\s+.*expired/m); // expired is reported in any window
    expect(stderr()).toContain(`no CA certificates in ${join(cfgDir, 'missing-ca')}`);
    expect(await run('expiring', '--config', join(cfgDir, 'no-ca.yaml'), '--db', db, '--json')).toBe(1);
    expect(JSON.parse(out.mock.calls.at(-1)![0] as string)).toMatchObject({ ca: [], caChecked: true, caComplete: false });
  });
});

describe('meshcert certs expiring --db without --config', () => {
  it('checks the default CA directory only when it exists: none there is no problem (exit 0), and says the CAs were not checked', async () => {
    const cwd = process.cwd();
    const elsewhere = mkdtempSync(join(tmpdir(), 'meshcert-certs-cwd-'));
    vi.stubEnv('MESHCERT_CA_DIR', undefined);
    vi.stubEnv('MESHCERT_DATA_DIR', undefined);
    process.chdir(elsewhere);
    try {
      expect(await run('expiring', '--db', db, '--within', '1h')).toBe(0);
      expect(stdout()).toContain(`CA certificates: not checked (no CA at ${join(realpathSync(elsewhere), '.meshcert', 'ca')}; pass --config to check the configured CAs)`);
      expect(stderr()).toBe('');
      expect(await run('expiring', '--db', db, '--json')).toBe(0);
      expect(JSON.parse(out.mock.calls.at(-1)![0] as string)).toMatchObject({ ca: [], caChecked: false, problems: [] });
      // Named by the environment, a missing directory is a problem as with --config.
      vi.stubEnv('MESHCERT_CA_DIR', join(elsewhere, 'missing-ca'));
      expect(await run('expiring', '--db', db, '--within', '1h')).toBe(1);
    } finally {
      process.chdir(cwd);
      vi.unstubAllEnvs();
      rmSync(elsewhere, { recursive: true, force: true });
    }
  });
});

describe('a store that opens and then fails', () => {
  it('is said as a store failure naming it (exit 1), not as an unexpected error', async () => {
    const path = join(dir, 'corrupt.db');
    await writeUnreadableInventory(path);
    expect(await run('list', '--db', `sqlite:${path}`)).toBe(1);
    expect(stderr()).toBe(`meshcert: the inventory sqlite:${path} failed: database disk image is malformed`);
  });
});

describe('store selection', () => {
  it('defaults to SQLite at .meshcert/inventory.db and <dataDir>/ca', () => {
    const t = resolveInventoryTarget({}, {});
    expect(t.store).toEqual({ kind: 'sqlite', path: join(process.cwd(), '.meshcert', 'inventory.db') });
    expect(t.caDir).toBe(join(process.cwd(), '.meshcert', 'ca'));
    expect(resolveInventoryTarget({}, { MESHCERT_DATA_DIR: '/srv/mc' }).store).toEqual({ kind: 'sqlite', path: '/srv/mc/inventory.db' });
    expect(resolveInventoryTarget({}, { MESHCERT_INVENTORY_URL: 'postgres://u@db/m' }).store).toEqual({ kind: 'postgres', url: 'postgres://u@db/m' });
  });

  it('reads the config file as serve does, resolving paths against its folder', () => {
    const cdir = mkdtempSync(join(tmpdir(), 'meshcert-cfg-'));
    try {
      const file = join(cdir, 'm.yaml');
      writeFileSync(file, 'dataDir: /var/lib/meshcert\nca:\n  dir: cacerts\nserver:\n  tls:\n    certFile: tls/crt.pem\n    keyFile: tls/key.pem\n');
      expect(resolveInventoryTarget({ config: file }, {})).toMatchObject({
        store: { kind: 'sqlite', path: '/var/lib/meshcert/inventory.db' },
        caDir: join(cdir, 'cacerts'),
        servingCertFile: join(cdir, 'tls', 'crt.pem'),
      });
      writeFileSync(file, 'inventory:\n  path: inv/x.db\n');
      expect(resolveInventoryTarget({ config: file }, {}).store).toEqual({ kind: 'sqlite', path: join(cdir, 'inv', 'x.db') });
      writeFileSync(file, 'inventory:\n  store: postgres\n  url: postgres://u:pw@db:5432/meshcert\n');
      const pg = resolveInventoryTarget({ config: file }, {});
      expect(pg.store).toEqual({ kind: 'postgres', url: 'postgres://u:pw@db:5432/meshcert' });
      expect(pg.label).not.toContain('pw');
      expect(pg.caDir).toBe(join(cdir, '.meshcert', 'ca'));
      expect(resolveInventoryTarget({ config: file, db: 'sqlite:x.db' }, {}).store).toEqual({ kind: 'sqlite', path: join(process.cwd(), 'x.db') });
      writeFileSync(file, 'inventory:\n  store: none\n');
      expect(() => resolveInventoryTarget({ config: file }, {})).toThrow(ConfigError);
      expect(() => resolveInventoryTarget({ config: file }, {})).toThrow(/disabled/);
      writeFileSync(file, 'inventory:\n  store: postgres\n');
      expect(() => resolveInventoryTarget({ config: file }, {})).toThrow(ConfigError);
      writeFileSync(file, 'inventory:\n  store: mongo\n');
      expect(() => resolveInventoryTarget({ config: file }, {})).toThrow(/inventory\.store/);
      writeFileSync(file, 'inventory: [\n');
      expect(() => resolveInventoryTarget({ config: file }, {})).toThrow(/not valid YAML/);
      expect(() => resolveInventoryTarget({ config: join(cdir, 'missing.yaml') }, {})).toThrow(/cannot read config file/);
    } finally {
      rmSync(cdir, { recursive: true, force: true });
    }
  });

  it('parses --db', () => {
    expect(parseDbArg('postgresql://a@b/c').store).toEqual({ kind: 'postgres', url: 'postgresql://a@b/c' });
    // The label is printed: no password, whether in the userinfo or as a parameter.
    for (const url of ['postgres://u:s3cret@db/m', 'postgres://u@db/m?sslmode=require&password=s3cret']) {
      const { store, label } = parseDbArg(url);
      expect(store).toEqual({ kind: 'postgres', url });
      expect(label).not.toContain('s3cret');
      expect(label).toContain('db/m');
    }
    expect(() => parseDbArg('sqlite:')).toThrow(UsageError);
    expect(() => parseDbArg('inventory.db')).toThrow(UsageError);
  });
});
