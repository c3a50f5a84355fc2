import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { caExpiryReport, expiryState, isStale, readCaCertificates, remainingFraction, staleIdentities, STALE_REMAINING_FRACTION } from '../../../src/inventory/expiry.js';
import { openStore } from '../../../src/inventory/open.js';
import type { CertificateRecord, InventoryStore } from '../../../src/inventory/types.js';
import { DAY, makeTestCert } from '../discovery/helpers.js';
import { fp, makeRecord } from './fixtures.js';

const HOUR = 3_600_000;
const NOW = new Date(Date.UTC(2030, 5, 1, 12, 0, 0));
const at = (offsetMs: number): Date => new Date(NOW.getTime() + offsetMs);

describe('expiryState', () => {
  it.each([
    ['far in the future', 30 * DAY, 7 * 86400, 'ok'],
    ['just outside the window', 7 * DAY + 1000, 7 * 86400, 'ok'],
    ['exactly at the window edge', 7 * DAY, 7 * 86400, 'warning'],
    ['inside the window', DAY, 7 * 86400, 'warning'],
    ['at notAfter itself (still valid)', 0, 7 * 86400, 'warning'],
    ['one second past notAfter', -1000, 7 * 86400, 'expired'],
    ['long expired', -100 * DAY, 7 * 86400, 'expired'],
    ['with a zero window', HOUR, 0, 'ok'],
  ] as const)('%s', (_name, offset, warnBefore, state) => {
    expect(expiryState(at(offset), NOW, warnBefore)).toBe(state);
  });
});

describe('caExpiryReport', () => {
  it('reports role, issuer, subject, notAfter, seconds left and state per certificate, in input order', async () => {
    const base = Math.floor(Date.now() / 1000) * 1000;
    const now = new Date(base);
    const root = await makeTestCert({ ca: true, subject: 'O=t, CN=Root', notBefore: new Date(base - DAY), notAfter: new Date(base + 400 * DAY) });
    const inter = await makeTestCert({ ca: true, subject: 'O=t, CN=Intermediate', issuer: root, notBefore: new Date(base - DAY), notAfter: new Date(base + 3 * DAY) });
    const old = await makeTestCert({ ca: true, subject: 'O=t, CN=Old', issuer: root, notBefore: new Date(base - 10 * DAY), notAfter: new Date(base - DAY) });
    const serving = await makeTestCert({ subject: 'CN=meshcert', issuer: inter, dns: ['meshcert.svc'], notBefore: new Date(base - DAY), notAfter: new Date(base + 20 * DAY) });
    const report = caExpiryReport(
      [
        { role: 'root', issuer: 'default', cert: root.cert },
        { role: 'intermediate', issuer: 'default', cert: inter.cert },
        { role: 'intermediate', issuer: 'legacy', cert: old.cert },
        { role: 'serving', issuer: 'default', cert: serving.cert },
      ],
      now,
      7 * 86400,
    );
    expect(report.map(({ fingerprint: _f, ...e }) => e)).toEqual([
      { role: 'root', issuer: 'default', subject: 'O=t, CN=Root', notAfter: new Date(base + 400 * DAY), secondsLeft: 400 * 86400, state: 'ok' },
      { role: 'intermediate', issuer: 'default', subject: 'O=t, CN=Intermediate', notAfter: new Date(base + 3 * DAY), secondsLeft: 3 * 86400, state: 'warning' },
      { role: 'intermediate', issuer: 'legacy', subject: 'O=t, CN=Old', notAfter: new Date(base - DAY), secondsLeft: -86400, state: 'expired' },
      { role: 'serving', issuer: 'default', subject: 'CN=meshcert', notAfter: new Date(base + 20 * DAY), secondsLeft: 20 * 86400, state: 'ok' },
    ]);
    expect(report[0]!.fingerprint).toBe(root.cert.fingerprint256.replace(/:/g, '').toLowerCase());
  });

  it('is empty for no certificates', () => {
    expect(caExpiryReport([], NOW, 86400)).toEqual([]);
  });
});

describe('readCaCertificates', () => {
  it('reads roots, signing certificate and chain without validity checks (expired and future CAs included)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'meshcert-expiry-ca-'));
    try {
      const now = Date.now();
      const root = await makeTestCert({ ca: true, subject: 'CN=Root', notAfter: new Date(now + 3650 * DAY) });
      const expired = await makeTestCert({ ca: true, subject: 'CN=Expired', issuer: root, notBefore: new Date(now - 20 * DAY), notAfter: new Date(now - DAY) });
      const future = await makeTestCert({ ca: true, subject: 'CN=Future', issuer: root, notBefore: new Date(now + DAY), notAfter: new Date(now + 400 * DAY) });
      const serving = await makeTestCert({ subject: 'CN=serving', issuer: expired });
      writeFileSync(join(dir, 'root-cert.pem'), root.pem);
      writeFileSync(join(dir, 'ca-cert.pem'), expired.pem);
      writeFileSync(join(dir, 'cert-chain.pem'), expired.pem + future.pem + root.pem);
      writeFileSync(join(dir, 'serving.pem'), serving.pem);
      const { certs, problems } = readCaCertificates(dir, 'default', join(dir, 'serving.pem'));
      expect(problems).toEqual([]);
      expect(certs.map((c) => [c.role, c.issuer, c.cert.subject])).toEqual([
        ['root', 'default', 'CN=Root'],
        ['intermediate', 'default', 'CN=Expired'],
        ['intermediate', 'default', 'CN=Future'],
        ['serving', 'default', 'CN=serving'],
      ]);
      expect(caExpiryReport(certs, new Date(now), 30 * 86400).map((e) => e.state)).toEqual(['ok', 'expired', 'ok', 'warning']);

      writeFileSync(join(dir, 'cert-chain.pem'), '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n');
      expect(readCaCertificates(dir, 'default').problems).toEqual([expect.stringMatching(/^CA chain file .*cert-chain\.pem: /)]);
      mkdirSync(join(dir, 'empty'));
      expect(readCaCertificates(join(dir, 'empty'), 'x', join(dir, 'nope.pem')).problems).toEqual([
        `no CA certificates in ${join(dir, 'empty')}`,
        `serving certificate file ${join(dir, 'nope.pem')} does not exist`,
      ]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('isStale (latest certificate not renewed)', () => {
  // A 24h certificate: istio-agent renews it at ~12h left; stale means under 8h left.
  const cert = (issuedAgoH: number, lifetimeH = 24): Pick<CertificateRecord, 'notBefore' | 'notAfter'> => ({
    notBefore: at(-issuedAgoH * HOUR),
    notAfter: at((lifetimeH - issuedAgoH) * HOUR),
  });
  it.each([
    ['just issued', cert(0), 7 * 86400, false],
    ['at half-life (renewal due, not late)', cert(12), 7 * 86400, false],
    ['exactly two thirds through', cert(16), 7 * 86400, false],
    ['20h into a 24h certificate', cert(20), 7 * 86400, true],
    ['one second before expiry', { notBefore: at(-DAY + 1000), notAfter: at(1000) }, 7 * 86400, true],
    ['expiring right now (notAfter = now)', { notBefore: at(-DAY), notAfter: NOW }, 7 * 86400, true],
    ['already expired', cert(25), 7 * 86400, false],
    ['late, but beyond the window', cert(20), 3600, false],
    ['late and inside the window', cert(20), 5 * 3600, true],
    ['90-day certificate with 5 days left, 7-day window', cert(85 * 24, 90 * 24), 7 * 86400, true],
    ['90-day certificate with 40 days left, 60-day window', cert(50 * 24, 90 * 24), 60 * 86400, false],
    ['zero-lifetime certificate ending in the window', { notBefore: at(HOUR), notAfter: at(HOUR) }, 7 * 86400, true],
  ] as const)('%s', (_name, r, within, stale) => {
    expect(isStale(r, NOW, within)).toBe(stale);
  });

  it('uses one third of the lifetime as the default threshold, and takes another', () => {
    expect(STALE_REMAINING_FRACTION).toBeCloseTo(1 / 3);
    expect(remainingFraction(cert(18), NOW)).toBeCloseTo(0.25);
    expect(isStale(cert(14), NOW, 86400, 0.5)).toBe(true);
    expect(isStale(cert(14), NOW, 86400)).toBe(false);
  });
});

describe('staleIdentities', () => {
  let dir: string;
  let store: InventoryStore;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'meshcert-expiry-'));
    store = await openStore({ kind: 'sqlite', path: join(dir, 'inventory.db') });
    const id = (sa: string): Partial<CertificateRecord> => ({ spiffeId: `spiffe://cluster.local/ns/shop/sa/${sa}`, namespace: 'shop', serviceAccount: sa });
    const life = (issuedAgoH: number, lifetimeH = 24): Partial<CertificateRecord> => ({
      notBefore: at(-issuedAgoH * HOUR),
      notAfter: at((lifetimeH - issuedAgoH) * HOUR),
      issuedAt: at(-issuedAgoH * HOUR),
    });
    await store.insertMany([
      // healthy: renewed at half-life; the older certificate is late but is not the latest
      makeRecord('healthy-old', { ...id('healthy'), ...life(20) }),
      makeRecord('healthy-new', { ...id('healthy'), ...life(8) }),
      // dead: latest certificate 20h into 24h
      makeRecord('dead', { ...id('dead'), ...life(22) }),
      makeRecord('dying', { ...id('dying'), ...life(18) }),
      // gone: expired an hour ago (history, not an alert)
      makeRecord('gone', { ...id('gone'), ...life(25) }),
      // no identity: ignored
      makeRecord('anon', { spiffeId: null, namespace: null, serviceAccount: null, ...life(23) }),
    ]);
  });
  afterAll(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('returns identities whose latest certificate is late, ordered by notAfter', async () => {
    const stale = await staleIdentities(store, NOW, 7 * 86400);
    expect(stale.map((s) => s.serviceAccount)).toEqual(['dead', 'dying']);
    expect(stale[0]).toMatchObject({
      spiffeId: 'spiffe://cluster.local/ns/shop/sa/dead',
      namespace: 'shop',
      secondsLeft: 2 * 3600,
      latest: { fingerprint: fp('cert-dead') },
    });
    expect(stale[0]!.remainingFraction).toBeCloseTo(2 / 24);
  });

  it('narrows with the window', async () => {
    const stale = await staleIdentities(store, NOW, 3 * 3600);
    expect(stale.map((s) => s.serviceAccount)).toEqual(['dead']);
  });

  it('asks the store for latest certificates expiring before now + within', async () => {
    const calls: [Date, Date][] = [];
    const fake = {
      latestPerIdentity: async (before: Date, now: Date): Promise<CertificateRecord[]> => {
        calls.push([before, now]);
        return [];
      },
    };
    await staleIdentities(fake, NOW, 3600);
    expect(calls).toEqual([[at(HOUR), NOW]]);
  });
});
