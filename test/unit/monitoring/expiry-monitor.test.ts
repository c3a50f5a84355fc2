import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { initCaDir } from '../../../src/ca/init.js';
import { createLogger } from '../../../src/log/logger.js';
import { InventoryMetrics } from '../../../src/metrics/ca-metrics.js';
import { ExpiryMonitor, expiryMessage, type ExpiryMonitorOptions } from '../../../src/monitoring/expiry-monitor.js';
import type { DiscoveredCertificate } from '../../../src/inventory/types.js';
import { makeRecord } from '../inventory/fixtures.js';
import { captureLogs } from '../../support/log-capture.js';

const YEAR = 365 * 86_400;
let base: string;
let a: string;
let b: string;

beforeAll(async () => {
  base = mkdtempSync(join(tmpdir(), 'meshcert-monitor-'));
  a = join(base, 'a');
  b = join(base, 'b');
  await initCaDir({ dir: a });
  await initCaDir({ dir: b });
});
afterAll(() => rmSync(base, { recursive: true, force: true }));

const options = (issuers: ExpiryMonitorOptions['issuers'], caWarnBefore = 30 * 86_400): ExpiryMonitorOptions => ({ issuers, caWarnBefore, staleWithin: 86_400, discoveredWarnBefore: 30 * 86_400, interval: 300 });

describe('ExpiryMonitor', () => {
  it("checks the issuers and windows of the latest config it was given (a reload's)", async () => {
    const m = new ExpiryMonitor(options([{ name: 'default', dir: a }]), createLogger('silent'));
    const first = await m.check();
    expect(new Set(first.ca.map((e) => e.issuer))).toEqual(new Set(['default']));
    // ca init makes a one-year intermediate: not in a 30-day window, in a two-year one.
    expect(first.ca.filter((e) => e.state !== 'ok')).toEqual([]);
    m.update(options([{ name: 'default', dir: a }, { name: 'payments', dir: b }], 2 * YEAR));
    const second = await m.check();
    expect(new Set(second.ca.map((e) => e.issuer))).toEqual(new Set(['default', 'payments']));
    // The intermediates (one year) are in it; the roots (ten years) are not.
    expect(second.ca.filter((e) => e.state === 'warning').map((e) => `${e.issuer} ${e.role}`).sort()).toEqual(['default intermediate', 'payments intermediate']);
  });
});

describe('ExpiryMonitor warnings and the serving certificate', () => {
  it('warns once per CA certificate while its state stays, and again when it changes (expires soon, then expired)', async () => {
    const logs = captureLogs('warn');
    const m = new ExpiryMonitor(options([{ name: 'default', dir: a }], 2 * YEAR), logs.logger);
    const warned = (): string[] => logs.lines.filter((l) => String(l.msg).startsWith('CA certificate')).map((l) => `${String(l.role)} ${String(l.state)}`);
    await m.check();
    await m.check(new Date(Date.now() + 86_400_000));
    await expect.poll(warned).toEqual(['intermediate warning']);
    // ca init's intermediate lasts one year: past it, it has expired, which is said too.
    await m.check(new Date(Date.now() + 400 * 86_400_000));
    await expect.poll(warned).toEqual(['intermediate warning', 'intermediate expired']);
  });

  it('reports the serving certificate (server.tls.certFile) once, with the first issuer, however many issuers there are', async () => {
    const serving = join(base, 'serving.pem');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', join(base, 'serving.key'), '-out', serving, '-days', '90', '-subj', '/CN=meshcert.example'], { stdio: 'ignore' });
    const m = new ExpiryMonitor({ ...options([{ name: 'default', dir: a }, { name: 'payments', dir: b }]), servingCertFile: serving }, createLogger('silent'));
    const r = await m.check();
    expect(r.ca.filter((e) => e.role === 'serving').map((e) => e.issuer)).toEqual(['default']);
  });

  it('re-arms its timer when a reload changes the interval', async () => {
    vi.useFakeTimers();
    try {
      const m = new ExpiryMonitor(options([{ name: 'default', dir: a }]), createLogger('silent'));
      const check = vi.spyOn(m, 'check').mockResolvedValue({ ca: [], stale: 0, discovered: 0 });
      m.start();
      await vi.advanceTimersByTimeAsync(0);
      expect(check).toHaveBeenCalledTimes(1);
      // The reload is checked at once, then every 10 s rather than every 300 s.
      m.update({ ...options([{ name: 'default', dir: a }]), interval: 10 });
      await vi.advanceTimersByTimeAsync(0);
      expect(check).toHaveBeenCalledTimes(2);
      await vi.advanceTimersByTimeAsync(20_000);
      expect(check).toHaveBeenCalledTimes(4);
      m.stop();
      await vi.advanceTimersByTimeAsync(600_000);
      expect(check).toHaveBeenCalledTimes(4);
    } finally {
      vi.useRealTimers();
    }
  });
});

describe('ExpiryMonitor and odd certificates', () => {
  it('reports a CA certificate whose SAN a strict ASN.1 parser refuses, and counts a shared root once', async () => {
    // Node (OpenSSL) reads it; @peculiar's schema refuses the SAN, which used to fail the whole check.
    const odd = join(base, 'odd');
    mkdirSync(odd);
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', join(odd, 'k.pem'), '-out', join(odd, 'root-cert.pem'), '-days', '10', '-subj', '/O=odd', '-addext', 'subjectAltName=DER:30030101FF', '-addext', 'basicConstraints=critical,CA:TRUE'], { stdio: 'ignore' });
    const registry = new Registry();
    const metrics = new InventoryMetrics(registry);
    const m = new ExpiryMonitor(options([{ name: 'default', dir: odd }, { name: 'payments', dir: odd }]), createLogger('silent'), metrics);
    const r = await m.check();
    expect(r.ca.map((e) => `${e.issuer} ${e.role} ${e.subject} ${e.state}`)).toEqual(['default root O=odd warning', 'payments root O=odd warning']);
    // One certificate in its window, though two issuers name it.
    expect(await registry.getSingleMetricAsString('meshcert_ca_certs_in_warning_window')).toMatch(/^meshcert_ca_certs_in_warning_window 1$/m);
  });
});

describe('ExpiryMonitor and CA files it cannot read', () => {
  it("keeps counting a CA certificate whose file broke, as last read and judged against now, and says the files are unreadable; a reload's removal of the issuer forgets it", async () => {
    const dir = join(base, 'breaking');
    mkdirSync(dir);
    const root = join(dir, 'root-cert.pem');
    const signing = join(dir, 'ca-cert.pem');
    // A self-signed CA that signs: ca-cert.pem is root-cert.pem.
    const selfSigned = (days: string, out: string): void => {
      execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', join(base, 'breaking.key'), '-out', out, '-days', days, '-subj', '/O=breaking', '-addext', 'basicConstraints=critical,CA:TRUE'], { stdio: 'ignore' });
      copyFileSync(out, signing);
    };
    const breakBoth = (text: string): void => {
      writeFileSync(root, text);
      writeFileSync(signing, text);
    };
    selfSigned('10', root);
    const registry = new Registry();
    const metrics = new InventoryMetrics(registry);
    const logs = captureLogs();
    const m = new ExpiryMonitor(options([{ name: 'default', dir }]), logs.logger, metrics);
    const gauge = async (name: string): Promise<string> => (await registry.getSingleMetricAsString(name)).split('\n').find((l) => l.startsWith(`${name} `))!;
    const states = (r: Awaited<ReturnType<typeof m.check>>): string[] => r.ca.map((e) => `${e.role} ${e.subject} ${e.state}`);
    expect(states(await m.check())).toEqual(['root O=breaking warning']);
    expect(await gauge('meshcert_ca_certs_in_warning_window')).toBe('meshcert_ca_certs_in_warning_window 1');
    expect(await gauge('meshcert_ca_files_unreadable')).toBe('meshcert_ca_files_unreadable 0');

    // A half-written rotation: the files no longer parse.
    breakBoth('-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n');
    expect(states(await m.check())).toEqual(['root O=breaking warning']);
    expect(await gauge('meshcert_ca_certs_in_warning_window')).toBe('meshcert_ca_certs_in_warning_window 1');
    expect(await gauge('meshcert_ca_files_unreadable')).toBe('meshcert_ca_files_unreadable 1');
    await expect.poll(() => logs.lines.some((l) => l.msg === 'expiry monitor cannot read a CA file' && String(l.problem).includes(root))).toBe(true);
    // Judged against the time of the check: past its end, it is expired.
    expect(states(await m.check(new Date(Date.now() + 11 * 86_400_000)))).toEqual(['root O=breaking expired']);

    // The directory gone (a volume unmounted): still counted.
    rmSync(dir, { recursive: true });
    expect(states(await m.check())).toEqual(['root O=breaking warning']);
    expect(await gauge('meshcert_ca_files_unreadable')).toBe('meshcert_ca_files_unreadable 1');

    // Rotated: the new file is what counts, the old certificate is gone with the last full read.
    mkdirSync(dir);
    selfSigned('3650', root);
    expect(states(await m.check())).toEqual(['root O=breaking ok']);
    expect(await gauge('meshcert_ca_certs_in_warning_window')).toBe('meshcert_ca_certs_in_warning_window 0');
    expect(await gauge('meshcert_ca_files_unreadable')).toBe('meshcert_ca_files_unreadable 0');

    // Broken again after a full read of the new one; then a reload drops the issuer.
    breakBoth('garbage');
    expect(states(await m.check())).toEqual(['root O=breaking ok']);
    m.update(options([{ name: 'default', dir: a }]));
    const after = await m.check();
    expect(after.ca.some((e) => e.subject === 'O=breaking')).toBe(false);
    expect(await gauge('meshcert_ca_files_unreadable')).toBe('meshcert_ca_files_unreadable 0');
    // Named again by a later reload, its broken file has nothing last read to stand for it.
    m.update(options([{ name: 'default', dir }]));
    expect(states(await m.check())).toEqual([]);
    expect(await gauge('meshcert_ca_files_unreadable')).toBe('meshcert_ca_files_unreadable 1');
  });

  it('keeps counting a CA certificate whose file was cut short, emptied or removed beside the other (none of which parses as an error), and says so', async () => {
    const dir = join(base, 'cut');
    mkdirSync(dir);
    const root = join(dir, 'root-cert.pem');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', join(base, 'cut.key'), '-out', root, '-days', '10', '-subj', '/O=cut', '-addext', 'basicConstraints=critical,CA:TRUE'], { stdio: 'ignore' });
    const whole = readFileSync(root, 'utf8');
    writeFileSync(join(dir, 'ca-cert.pem'), whole);
    const registry = new Registry();
    const metrics = new InventoryMetrics(registry);
    const logs = captureLogs();
    const m = new ExpiryMonitor(options([{ name: 'default', dir }]), logs.logger, metrics);
    const unreadable = async (): Promise<string> => (await registry.getSingleMetricAsString('meshcert_ca_files_unreadable')).split('\n').find((l) => l.startsWith('meshcert_ca_files_unreadable '))!;
    const t0 = Date.now();
    expect((await m.check()).ca.map((e) => e.state)).toEqual(['warning']);
    expect(await unreadable()).toBe('meshcert_ca_files_unreadable 0');
    // When the CA files were read: with or without a store (this monitor has none), what says the checks run.
    const checkedAt = Number((await registry.getSingleMetricAsString('meshcert_ca_certs_checked_timestamp_seconds')).split('\n').find((l) => l.startsWith('meshcert_ca_certs_checked_timestamp_seconds '))!.split(' ')[1]);
    expect(checkedAt * 1000).toBeGreaterThanOrEqual(t0 - 1000);
    expect(checkedAt * 1000).toBeLessThanOrEqual(Date.now() + 1000);
    for (const [name, text] of [['cut short in its second block (no END line)', whole + whole.slice(0, 300)], ['emptied', ''], ['not PEM', 'garbage']] as const) {
      writeFileSync(root, text);
      writeFileSync(join(dir, 'ca-cert.pem'), text);
      expect((await m.check()).ca.map((e) => e.state), name).toEqual(['warning']);
      expect(await unreadable(), name).toBe('meshcert_ca_files_unreadable 1');
    }
    // ca-cert.pem gone while root-cert.pem is whole: a directory serve would not load.
    writeFileSync(root, whole);
    rmSync(join(dir, 'ca-cert.pem'));
    expect((await m.check()).ca.map((e) => e.state)).toEqual(['warning']);
    expect(await unreadable()).toBe('meshcert_ca_files_unreadable 1');
    expect(logs.lines.filter((l) => l.msg === 'expiry monitor cannot read a CA file').map((l) => String(l.problem))).toEqual(
      expect.arrayContaining([expect.stringMatching(/root-cert\.pem: a BEGIN line has no matching END line/), expect.stringMatching(/root-cert\.pem: holds no PEM certificate/), expect.stringMatching(/ca-cert\.pem does not exist$/)]),
    );
  });
});

describe('ExpiryMonitor and reloads', () => {
  it('checks again after a running check when a reload comes in during it (that check read the old config)', async () => {
    const m = new ExpiryMonitor(options([{ name: 'default', dir: a }]), createLogger('silent'));
    const seen: string[][] = [];
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const check = m.check.bind(m);
    m.check = async (now?: Date) => {
      const r = await check(now);
      seen.push([...new Set(r.ca.map((e) => e.issuer))]);
      if (seen.length === 1) await held; // the first check is slow (a slow store, say)
      return r;
    };
    m.start();
    await expect.poll(() => seen.length).toBe(1);
    m.update(options([{ name: 'default', dir: a }, { name: 'payments', dir: b }]));
    release();
    await expect.poll(() => seen.length).toBe(2);
    expect(seen[1]).toEqual(['default', 'payments']);
    m.stop();
  });
});

describe('ExpiryMonitor and the inventory', () => {
  it('stamps meshcert_stale_identities with the time it was computed, and leaves both alone when the store cannot be queried', async () => {
    const registry = new Registry();
    const metrics = new InventoryMetrics(registry);
    let down = false;
    const store = {
      latestPerIdentity: async () => {
        if (down) throw new Error('connection refused');
        return [];
      },
      discoveredExpiring: async () => [],
    } as unknown as ConstructorParameters<typeof ExpiryMonitor>[3];
    const m = new ExpiryMonitor(options([{ name: 'default', dir: a }]), createLogger('silent'), metrics, store);
    const value = async (name: string): Promise<number> => Number(/ (\S+)$/m.exec((await registry.getSingleMetricAsString(name)).split('\n').filter((l) => !l.startsWith('#')).join('\n'))?.[1]);
    await m.check(new Date(1_800_000_000_000));
    expect(await value('meshcert_stale_identities_checked_timestamp_seconds')).toBe(1_800_000_000);
    down = true;
    await m.check(new Date(1_800_000_600_000));
    // Not computed: the stamp says since when the count is old.
    expect(await value('meshcert_stale_identities_checked_timestamp_seconds')).toBe(1_800_000_000);
  });
});

describe('ExpiryMonitor and stale identities', () => {
  it('warns once per identity while it stays stale, again for one that comes back, and counts them all at every check', async () => {
    const registry = new Registry();
    const metrics = new InventoryMetrics(registry);
    const { lines, logger } = captureLogs('warn');
    const now = 1_800_000_000_000;
    // 24 h certificates with 4 h left: past istio-agent's renewal at half-life.
    const stuck = (sa: string) => makeRecord(sa, { spiffeId: `spiffe://cluster.local/ns/shop/sa/${sa}`, namespace: 'shop', serviceAccount: sa, notBefore: new Date(now - 20 * 3_600_000), notAfter: new Date(now + 4 * 3_600_000) });
    let latest = [stuck('web'), stuck('cart')];
    const store = { latestPerIdentity: async () => latest, discoveredExpiring: async () => [] } as unknown as ConstructorParameters<typeof ExpiryMonitor>[3];
    const m = new ExpiryMonitor(options([{ name: 'default', dir: a }]), logger, metrics, store);
    const warnings = (): Array<Record<string, unknown>> => lines.filter((l) => l.msg === 'workload identities whose latest certificate was not renewed');
    expect((await m.check(new Date(now))).stale).toBe(2);
    expect(warnings()).toHaveLength(1);
    expect(warnings()[0]).toMatchObject({ count: 2, total: 2 });
    // Five minutes later, the same two: counted, not logged again.
    expect((await m.check(new Date(now + 300_000))).stale).toBe(2);
    expect(warnings()).toHaveLength(1);
    expect(await registry.getSingleMetricAsString('meshcert_stale_identities')).toMatch(/^meshcert_stale_identities 2$/m);
    // A third one: only it is new.
    latest = [stuck('web'), stuck('cart'), stuck('pay')];
    await m.check(new Date(now + 600_000));
    expect(warnings()).toHaveLength(2);
    expect(warnings()[1]).toMatchObject({ count: 1, total: 3, examples: ['spiffe://cluster.local/ns/shop/sa/pay'] });
    // web renews (leaves the report), then goes stale again: warned about again.
    latest = [stuck('cart'), stuck('pay')];
    await m.check(new Date(now + 900_000));
    expect(warnings()).toHaveLength(2);
    latest = [stuck('web'), stuck('cart'), stuck('pay')];
    await m.check(new Date(now + 1_200_000));
    expect(warnings()).toHaveLength(3);
    expect(warnings()[2]).toMatchObject({ count: 1, total: 3, examples: ['spiffe://cluster.local/ns/shop/sa/web'] });
  });
});

describe('ExpiryMonitor and discovered certificates', () => {
  it('counts those expiring or expired where last seen, warns once per place, certificate and state, and keeps the counts while the store is down', async () => {
    const registry = new Registry();
    const metrics = new InventoryMetrics(registry);
    const { lines, logger } = captureLogs('warn');
    const now = new Date(1_800_000_000_000);
    const seenAt = new Date(now.getTime() - 86_400_000);
    const web = makeRecord('web', { source: 'discovered:endpoint:web:443', subject: 'CN=web', spiffeId: null, notAfter: new Date(now.getTime() + 3 * 86_400_000) });
    const old = makeRecord('old', { source: 'discovered:file:/etc/old.pem', subject: 'CN=old', spiffeId: null, notAfter: new Date(now.getTime() - 3_600_000) });
    let found: DiscoveredCertificate[] = [
      { record: old, source: 'discovered:file:/etc/old.pem', seenAt },
      { record: web, source: 'discovered:endpoint:web:443', seenAt },
      { record: web, source: 'discovered:endpoint:web-2:443', seenAt }, // the same certificate at a second place
    ];
    let down = false;
    const asked: number[] = [];
    const store = {
      latestPerIdentity: async () => [],
      discoveredExpiring: async (before: Date) => {
        if (down) throw new Error('connection refused');
        asked.push(before.getTime());
        return found;
      },
    } as unknown as ConstructorParameters<typeof ExpiryMonitor>[3];
    const m = new ExpiryMonitor(options([{ name: 'default', dir: a }]), logger, metrics, store);
    const value = async (name: string, labels = ''): Promise<number> => Number(new RegExp(`^${name}${labels.replace(/[{}]/g, '\\$&')} (\\S+)$`, 'm').exec(await registry.getSingleMetricAsString(name))?.[1]);
    const warnings = (): Array<Record<string, unknown>> => lines.filter((l) => String(l.msg).startsWith('discovered certificates expire soon'));
    expect((await m.check(now)).discovered).toBe(3);
    expect(asked).toEqual([now.getTime() + 30 * 86_400_000]);
    expect(await value('meshcert_discovered_certs_expiring', '{state="warning"}')).toBe(2);
    expect(await value('meshcert_discovered_certs_expiring', '{state="expired"}')).toBe(1);
    expect(await value('meshcert_discovered_certs_expiring_checked_timestamp_seconds')).toBe(1_800_000_000);
    expect(warnings()).toHaveLength(1);
    expect(warnings()[0]).toMatchObject({
      count: 3,
      total: 3,
      examples: [
        { where: 'file:/etc/old.pem', subject: 'CN=old', serial: old.serial, notAfter: old.notAfter.toISOString(), state: 'expired', seenAt: seenAt.toISOString() },
        { where: 'endpoint:web:443', subject: 'CN=web', state: 'warning' },
        { where: 'endpoint:web-2:443', subject: 'CN=web', state: 'warning' },
      ],
    });

    // Not again for the same certificates in the same state; again for one whose state changed.
    await m.check(new Date(now.getTime() + 300_000));
    expect(warnings()).toHaveLength(1);
    found = [{ record: web, source: 'discovered:endpoint:web:443', seenAt }];
    await m.check(new Date(web.notAfter.getTime() + 1000));
    expect(warnings()).toHaveLength(2);
    expect(warnings()[1]).toMatchObject({ count: 1, total: 1, examples: [{ where: 'endpoint:web:443', state: 'expired' }] });
    expect(await value('meshcert_discovered_certs_expiring', '{state="warning"}')).toBe(0);
    expect(await value('meshcert_discovered_certs_expiring', '{state="expired"}')).toBe(1);

    down = true;
    expect((await m.check(new Date(now.getTime() + 600_000))).discovered).toBe(0);
    expect(await value('meshcert_discovered_certs_expiring', '{state="expired"}')).toBe(1);
    expect(await value('meshcert_discovered_certs_expiring_checked_timestamp_seconds')).toBe(Math.floor((web.notAfter.getTime() + 1000) / 1000));
    expect(lines.some((l) => l.msg === 'expiry monitor cannot query the inventory for discovered certificates')).toBe(true);
  });
});

describe('expiryMessage', () => {
  it('tells a serving certificate (server.tls.certFile) to be replaced, and a CA certificate to be rotated', () => {
    expect(expiryMessage({ role: 'serving', state: 'warning' })).toBe('serving certificate (server.tls.certFile) expires soon: replace the file (meshcert re-reads it)');
    expect(expiryMessage({ role: 'serving', state: 'expired' })).toBe('serving certificate (server.tls.certFile) has expired');
    expect(expiryMessage({ role: 'intermediate', state: 'warning' })).toBe('CA certificate expires soon: rotate it (see README "CA rotation")');
    expect(expiryMessage({ role: 'root', state: 'expired' })).toBe('CA certificate has expired');
  });
});
