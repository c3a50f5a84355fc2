import { execFileSync } from 'node:child_process';
import { createPrivateKey, generateKeyPairSync, X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { initCaDir } from '../../../src/ca/init.js';
import type { CaMaterial } from '../../../src/ca/material.js';
import { ConfigError } from '../../../src/errors/ca-error.js';
import { LocalIssuer } from '../../../src/issuer/local.js';
import { createLogger, type Logger } from '../../../src/log/logger.js';
import { checkServingIdentity } from '../../../src/grpc/tls.js';
import { ServingCertificate, type ServingCertOptions, type ServingMaterial } from '../../../src/serving/serving-cert.js';
import { parsePemBundle } from '../../../src/x509/pem.js';

const HOUR_MS = 3_600_000;

let base: string;
let material: CaMaterial;
let otherMaterial: CaMaterial;
let issuer: LocalIssuer;
let n = 0;
const started: ServingCertificate[] = [];

/** A pino logger writing JSON lines into memory. */
function memoryLogger(): { logger: Logger; lines: () => Array<Record<string, unknown>> } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer | string, _enc, cb) {
      chunks.push(chunk.toString());
      cb();
    },
  });
  return {
    logger: createLogger('info', stream),
    lines: () =>
      chunks
        .join('')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}

function start(o: ServingCertOptions, logger: Logger, onChange: (m: ServingMaterial) => void = () => {}): ServingCertificate {
  const s = ServingCertificate.start(o, () => issuer, logger, onChange);
  started.push(s);
  return s;
}

const issuedOptions: ServingCertOptions = {
  dnsNames: ['meshcert.istio-system.svc', 'localhost'],
  ipAddresses: ['127.0.0.1', '::1'],
  lifetime: 24 * 3600,
  renewBeforeRatio: 1 / 3,
};

/** A serving certificate and key signed by `by`, as PEM. */
function servingPair(by: CaMaterial, dns: string, hours = 24): { certPem: string; keyPem: string } {
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const now = Date.now();
  const leaf = new LocalIssuer('files', by).sign({
    spki: publicKey.export({ type: 'spki', format: 'der' }),
    uris: [],
    dnsNames: [dns],
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + hours * HOUR_MS),
  });
  return { certPem: leaf.pem + by.intermediatesPem.join(''), keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() };
}

/** Writes a pair into fresh files and returns their paths. */
function writePair(pair: { certPem: string; keyPem: string }): { certFile: string; keyFile: string } {
  const certFile = join(base, `tls-${++n}.crt`);
  const keyFile = join(base, `tls-${n}.key`);
  writeFileSync(certFile, pair.certPem);
  writeFileSync(keyFile, pair.keyPem);
  return { certFile, keyFile };
}

async function waitFor(what: string, ok: () => boolean, timeoutMs = 5_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!ok()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

beforeAll(async () => {
  base = mkdtempSync(join(tmpdir(), 'meshcert-serving-'));
  material = await initCaDir({ dir: join(base, 'ca') });
  otherMaterial = await initCaDir({ dir: join(base, 'other-ca') });
  issuer = new LocalIssuer('local', material);
});
afterEach(() => {
  for (const s of started.splice(0)) s.close();
});
afterAll(() => {
  rmSync(base, { recursive: true, force: true });
});

describe('ServingCertificate issued by the CA', () => {
  it('carries the configured DNS names and IP addresses', () => {
    const { logger } = memoryLogger();
    const s = start(issuedOptions, logger);
    expect(s.current.source).toBe('issued');
    const leaf = parsePemBundle(s.current.certChainPem)[0]!;
    expect(leaf.subjectAltName).toBe('DNS:meshcert.istio-system.svc, DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1');
    expect(leaf.checkHost('meshcert.istio-system.svc')).toBe('meshcert.istio-system.svc');
    expect(leaf.checkIP('127.0.0.1')).toBe('127.0.0.1');
    expect(leaf.ca).toBe(false);
  });

  it('serves a key that matches the certificate', () => {
    const { logger } = memoryLogger();
    const s = start(issuedOptions, logger);
    const leaf = parsePemBundle(s.current.certChainPem)[0]!;
    expect(leaf.checkPrivateKey(createPrivateKey(s.current.keyPem))).toBe(true);
  });

  it('serves the leaf followed by the intermediates, which chain to the root', () => {
    const { logger } = memoryLogger();
    const s = start(issuedOptions, logger);
    const chain = parsePemBundle(s.current.certChainPem);
    expect(chain).toHaveLength(1 + material.intermediates.length);
    expect(chain[1]!.fingerprint256).toBe(material.signingCert.fingerprint256);
    expect(chain[0]!.checkIssued(chain[1]!) && chain[0]!.verify(chain[1]!.publicKey)).toBe(true);
    const root = material.roots[0]!;
    expect(chain[1]!.checkIssued(root) && chain[1]!.verify(root.publicKey)).toBe(true);
  });

  it('is accepted by openssl verify as a TLS server certificate for the root', () => {
    const { logger } = memoryLogger();
    const s = start(issuedOptions, logger);
    const chainFile = join(base, `served-${++n}.pem`);
    const leafFile = join(base, `leaf-${n}.pem`);
    const rootFile = join(base, `root-${n}.pem`);
    writeFileSync(chainFile, s.current.certChainPem);
    writeFileSync(leafFile, parsePemBundle(s.current.certChainPem)[0]!.toString());
    writeFileSync(rootFile, material.rootBundlePem);
    const out = execFileSync('openssl', ['verify', '-CAfile', rootFile, '-untrusted', chainFile, '-purpose', 'sslserver', '-verify_hostname', 'localhost', '-verify_ip', '127.0.0.1', leafFile], { encoding: 'utf8' });
    expect(out.trim()).toBe(`${leafFile}: OK`);
  });

  it('lives for the configured lifetime', () => {
    const { logger } = memoryLogger();
    const before = Date.now();
    const s = start({ ...issuedOptions, lifetime: 7200 }, logger);
    const leaf = parsePemBundle(s.current.certChainPem)[0]!;
    expect(Date.parse(leaf.validTo)).toBe(s.current.notAfter.getTime());
    expect(s.current.notAfter.getTime()).toBeGreaterThan(before + 7200_000 - 2_000);
    expect(s.current.notAfter.getTime()).toBeLessThanOrEqual(Date.now() + 7200_000);
  });

  it('does not call onChange at start', () => {
    const { logger } = memoryLogger();
    const changes: ServingMaterial[] = [];
    start(issuedOptions, logger, (m) => changes.push(m));
    expect(changes).toEqual([]);
  });

  it('reissue() makes a new certificate and key and calls onChange with them', () => {
    const { logger, lines } = memoryLogger();
    const changes: ServingMaterial[] = [];
    const s = start(issuedOptions, logger, (m) => changes.push(m));
    const first = s.current;
    s.reissue();
    expect(changes).toHaveLength(1);
    expect(changes[0]).toBe(s.current);
    expect(s.current.certChainPem).not.toBe(first.certChainPem);
    expect(s.current.keyPem).not.toBe(first.keyPem);
    expect(lines().some((l) => l.msg === 'serving certificate loaded' && l.source === 'issued')).toBe(true);
  });

  it('reissue() uses the issuer in force now', () => {
    const { logger } = memoryLogger();
    let current = issuer;
    const s = ServingCertificate.start(issuedOptions, () => current, logger, () => {});
    started.push(s);
    current = new LocalIssuer('other', otherMaterial);
    s.reissue();
    const chain = parsePemBundle(s.current.certChainPem);
    expect(chain[1]!.fingerprint256).toBe(otherMaterial.signingCert.fingerprint256);
  });

  it('prepareReissue() issues from the issuer given, and changes nothing until commit() (a reload checks the pair before it swaps anything)', () => {
    const { logger } = memoryLogger();
    const changes: ServingMaterial[] = [];
    const s = start(issuedOptions, logger, (m) => changes.push(m));
    const first = s.current;
    const prepared = s.prepareReissue(new LocalIssuer('other', otherMaterial))!;
    expect(parsePemBundle(prepared.material.certChainPem)[1]!.fingerprint256).toBe(otherMaterial.signingCert.fingerprint256);
    expect(s.current).toBe(first);
    expect(changes).toEqual([]);
    // What the reload checks it with before the swap: the listener's context, built aside.
    expect(() => checkServingIdentity({ ...prepared.material, clientCaPem: otherMaterial.roots.map((r) => r.toString()).join('') })).not.toThrow();
    expect(() => checkServingIdentity({ certChainPem: prepared.material.certChainPem, keyPem: first.keyPem })).toThrow(/key values mismatch/);
    prepared.commit();
    expect(changes).toEqual([prepared.material]);
    expect(s.current).toBe(prepared.material);
    // Nothing to issue once closed (nor for user files: "reissue() leaves user files alone").
    s.close();
    expect(s.prepareReissue(issuer)).toBeUndefined();
  });

  it('reissue() does nothing after close()', () => {
    const { logger } = memoryLogger();
    const changes: ServingMaterial[] = [];
    const s = start(issuedOptions, logger, (m) => changes.push(m));
    s.close();
    s.reissue();
    expect(changes).toEqual([]);
  });
});

describe('ServingCertificate renewal', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('renews once a third of the lifetime is left, then again a lifetime later', () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
    const { logger } = memoryLogger();
    const changes: ServingMaterial[] = [];
    const s = start({ ...issuedOptions, lifetime: 3600 }, logger, (m) => changes.push(m));
    const first = s.current.notAfter.getTime();
    vi.advanceTimersByTime(first - Date.now() - 1200_000 - 5_000);
    expect(changes).toHaveLength(0);
    vi.advanceTimersByTime(10_000);
    expect(changes).toHaveLength(1);
    expect(s.current.notAfter.getTime()).toBeGreaterThan(first);
    vi.advanceTimersByTime(2400_000 + 5_000);
    expect(changes).toHaveLength(2);
  });

  it('retries a renewal the listener refused a minute later, keeping the pair in force', () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
    const { logger } = memoryLogger();
    let refuse = true;
    const offered: ServingMaterial[] = [];
    const s = start({ ...issuedOptions, lifetime: 3600 }, logger, (m) => {
      offered.push(m);
      if (refuse) throw new Error('ee key too small');
    });
    const first = s.current;
    vi.advanceTimersByTime(first.notAfter.getTime() - Date.now() - 1200_000 + 5_000);
    expect(offered).toHaveLength(1);
    expect(s.current).toBe(first);
    refuse = false;
    // Retried after 60 s, not at a time computed from the refused pair.
    vi.advanceTimersByTime(61_000);
    expect(offered).toHaveLength(2);
    expect(s.current).toBe(offered[1]);
  });

  it('does not renew in a loop when the CA expires before the configured lifetime', async () => {
    const shortCa = await initCaDir({ dir: join(base, `short-ca-${++n}`), intermediateLifetimeMs: 2 * HOUR_MS });
    const shortIssuer = new LocalIssuer('short', shortCa);
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
    const { logger } = memoryLogger();
    const changes: ServingMaterial[] = [];
    const s = ServingCertificate.start({ ...issuedOptions, lifetime: 30 * 24 * 3600 }, () => shortIssuer, logger, (m) => changes.push(m));
    started.push(s);
    // The leaf is cut to the CA's NotAfter (about 2 hours); renewing every second would not help.
    expect(s.current.notAfter.getTime()).toBeLessThanOrEqual(shortCa.notAfter.getTime());
    vi.advanceTimersByTime(60_000);
    expect(changes).toHaveLength(0);
    // It still renews when a third of the (cut) lifetime is left.
    vi.advanceTimersByTime(90 * 60_000);
    expect(changes.length).toBeGreaterThanOrEqual(1);
    expect(changes.length).toBeLessThanOrEqual(2);
  });
});

describe('ServingCertificate from user files', () => {
  const fileOptions = (files: { certFile: string; keyFile: string }): ServingCertOptions => ({ ...issuedOptions, ...files, pollIntervalMs: 50 });

  it('loads the files as they are', () => {
    const pair = servingPair(material, 'files.example');
    const files = writePair(pair);
    const { logger } = memoryLogger();
    const s = start(fileOptions(files), logger);
    expect(s.current).toEqual({
      certChainPem: pair.certPem,
      keyPem: pair.keyPem,
      notAfter: new Date(new X509Certificate(pair.certPem).validTo),
      source: 'files',
    });
  });

  it('picks up changed files and calls onChange', async () => {
    const files = writePair(servingPair(material, 'one.example'));
    const { logger } = memoryLogger();
    const changes: ServingMaterial[] = [];
    const s = start(fileOptions(files), logger, (m) => changes.push(m));
    await sleep(120);
    const next = servingPair(material, 'two.example');
    writeFileSync(files.keyFile, next.keyPem);
    writeFileSync(files.certFile, next.certPem);
    await waitFor('onChange with the new pair', () => changes.some((m) => m.certChainPem === next.certPem && m.keyPem === next.keyPem));
    expect(s.current.certChainPem).toBe(next.certPem);
    expect(parsePemBundle(s.current.certChainPem)[0]!.subjectAltName).toBe('DNS:two.example');
    expect(changes.every((m) => m.source === 'files')).toBe(true);
  });

  it('keeps the previous certificate and logs an error when an update is broken', async () => {
    const pair = servingPair(material, 'keep.example');
    const files = writePair(pair);
    const { logger, lines } = memoryLogger();
    const changes: ServingMaterial[] = [];
    const s = start(fileOptions(files), logger, (m) => changes.push(m));
    await sleep(120);
    writeFileSync(files.certFile, '-----BEGIN CERTIFICATE-----\nZ2FyYmFnZQ==\n-----END CERTIFICATE-----\n');
    await waitFor('an error log', () => lines().some((l) => l.level === 50));
    const error = lines().find((l) => l.level === 50)!;
    expect(error.msg).toBe('serving certificate files changed but cannot be used; keeping the previous certificate');
    expect(error.err).toMatchObject({ type: 'ConfigError', message: 'server.tls.certFile does not hold a PEM certificate chain' });
    await sleep(150);
    expect(changes).toEqual([]);
    expect(s.current.certChainPem).toBe(pair.certPem);
    expect(s.current.keyPem).toBe(pair.keyPem);
  });

  it('keeps the previous certificate when the listener refuses the new pair, and tries the files again when they change', async () => {
    const pair = servingPair(material, 'refused.example');
    const files = writePair(pair);
    const { logger, lines } = memoryLogger();
    let refuse = true;
    const offered: ServingMaterial[] = [];
    const s = start(fileOptions(files), logger, (m) => {
      offered.push(m);
      if (refuse) throw new Error('ee key too small');
    });
    await sleep(120);
    const next = servingPair(material, 'next.example');
    writeFileSync(files.keyFile, next.keyPem);
    writeFileSync(files.certFile, next.certPem);
    await waitFor('the listener refusing the pair', () => offered.some((m) => m.certChainPem === next.certPem && m.keyPem === next.keyPem) && lines().some((l) => l.level === 50));
    expect(s.current.certChainPem).toBe(pair.certPem);
    expect(lines().some((l) => l.msg === 'serving certificate loaded')).toBe(false);
    // Still different from what is in force: taken when the files change again and the listener accepts.
    refuse = false;
    const third = servingPair(material, 'third.example');
    writeFileSync(files.keyFile, third.keyPem);
    writeFileSync(files.certFile, third.certPem);
    await waitFor('the third pair in force', () => s.current.certChainPem === third.certPem);
  });

  it('keeps the previous certificate when only the certificate changes (key mismatch)', async () => {
    const pair = servingPair(material, 'half.example');
    const files = writePair(pair);
    const { logger, lines } = memoryLogger();
    const changes: ServingMaterial[] = [];
    const s = start(fileOptions(files), logger, (m) => changes.push(m));
    await sleep(120);
    writeFileSync(files.certFile, servingPair(material, 'other.example').certPem);
    await waitFor('an error log', () => lines().some((l) => l.level === 50));
    expect(lines().find((l) => l.level === 50)!.err).toMatchObject({ message: 'server.tls.keyFile does not match server.tls.certFile' });
    expect(changes).toEqual([]);
    expect(s.current.certChainPem).toBe(pair.certPem);
  });

  it('recovers when a broken update is fixed', async () => {
    const files = writePair(servingPair(material, 'a.example'));
    const { logger, lines } = memoryLogger();
    const changes: ServingMaterial[] = [];
    start(fileOptions(files), logger, (m) => changes.push(m));
    await sleep(120);
    writeFileSync(files.keyFile, 'garbage');
    await waitFor('an error log', () => lines().some((l) => l.level === 50));
    const fixed = servingPair(material, 'b.example');
    writeFileSync(files.certFile, fixed.certPem);
    writeFileSync(files.keyFile, fixed.keyPem);
    await waitFor('onChange with the fixed pair', () => changes.some((m) => m.certChainPem === fixed.certPem && m.keyPem === fixed.keyPem));
  });

  it('stops watching after close()', async () => {
    const files = writePair(servingPair(material, 'closed.example'));
    const { logger } = memoryLogger();
    const changes: ServingMaterial[] = [];
    const s = start(fileOptions(files), logger, (m) => changes.push(m));
    s.close();
    const next = servingPair(material, 'after-close.example');
    writeFileSync(files.keyFile, next.keyPem);
    writeFileSync(files.certFile, next.certPem);
    await sleep(300);
    expect(changes).toEqual([]);
  });

  it('closing one watcher of a pair of files leaves another watcher of the same files working', async () => {
    const files = writePair(servingPair(material, 'shared.example'));
    const { logger } = memoryLogger();
    const first = start(fileOptions(files), logger);
    const changes: ServingMaterial[] = [];
    start(fileOptions(files), logger, (m) => changes.push(m));
    first.close();
    await sleep(120);
    const next = servingPair(material, 'shared-next.example');
    writeFileSync(files.keyFile, next.keyPem);
    writeFileSync(files.certFile, next.certPem);
    await waitFor('onChange on the watcher still open', () => changes.some((m) => m.certChainPem === next.certPem));
  });

  it('reissue() leaves user files alone', () => {
    const pair = servingPair(material, 'mine.example');
    const { logger } = memoryLogger();
    const changes: ServingMaterial[] = [];
    const s = start(fileOptions(writePair(pair)), logger, (m) => changes.push(m));
    s.reissue();
    expect(changes).toEqual([]);
    expect(s.current.certChainPem).toBe(pair.certPem);
  });

  it.each([
    ['refuses a key that does not match the certificate at start', () => writePair({ certPem: servingPair(material, 'x').certPem, keyPem: servingPair(material, 'y').keyPem }), 'server.tls.keyFile does not match server.tls.certFile'],
    ['refuses a certificate file without a certificate', () => writePair({ certPem: 'nothing here\n', keyPem: servingPair(material, 'y').keyPem }), 'server.tls.certFile does not hold a PEM certificate chain'],
    ['refuses a key file without a key', () => writePair({ certPem: servingPair(material, 'x').certPem, keyPem: 'nothing here\n' }), 'server.tls.keyFile is not a readable unencrypted PEM private key'],
    ['refuses an expired certificate', () => writePair(servingPairExpired()), /^the serving certificate expired on /],
    ['refuses missing files', () => ({ certFile: join(base, 'missing.crt'), keyFile: join(base, 'missing.key') }), 'cannot read the serving certificate or key (server.tls.certFile/keyFile): ENOENT'],
  ])('%s', (_name, files, message) => {
    const { logger } = memoryLogger();
    let error: unknown;
    try {
      start(fileOptions(files()), logger);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    if (typeof message === 'string') expect((error as Error).message).toBe(message);
    else expect((error as Error).message).toMatch(message);
  });
});

/** A pair whose certificate expired an hour ago. */
function servingPairExpired(): { certPem: string; keyPem: string } {
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const now = Date.now();
  const leaf = new LocalIssuer('files', material).sign({
    spki: publicKey.export({ type: 'spki', format: 'der' }),
    uris: [],
    dnsNames: ['old.example'],
    notBefore: new Date(now - 2 * HOUR_MS),
    notAfter: new Date(now - HOUR_MS),
  });
  return { certPem: leaf.pem, keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() };
}
