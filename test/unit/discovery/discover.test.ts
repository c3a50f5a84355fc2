/**
 * Discovery against real sources made in the test: a folder of PEM files, a node:tls server
 * presenting a chain, a closed loopback port, and a loopback HTTPS "API server" answering the
 * TLS Secret list with a real SecretList.
 */
import { spawn, execFileSync } from 'node:child_process';
import { generateKeyPairSync, webcrypto } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import tls from 'node:tls';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi, type MockInstance } from 'vitest';
import { UsageError } from '../../../src/cli/args.js';
import { discoverCommand, parseDiscoverArgs } from '../../../src/cli/discover.js';
import { discover, discoveryExitCode, type DiscoveryReport } from '../../../src/discovery/discover.js';
import { discoverEndpoint } from '../../../src/discovery/endpoint.js';
import { discoverFiles, expandFileArg, globToRegExp, readPemFile } from '../../../src/discovery/files.js';
import { discoverK8sSecrets, k8sSecretPlaces, loadKubeConfig, secretItems } from '../../../src/discovery/k8s-secrets.js';
import { discoveredExpiring } from '../../../src/inventory/expiry.js';
import { placeName } from '../../../src/inventory/common.js';
import { openStore } from '../../../src/inventory/open.js';
import type { InventoryStore } from '../../../src/inventory/types.js';
import { freePort } from '../../support/postgres.js';
import { createSelectOnlyRole, createTestDatabase, pgSkipReason } from '../../support/postgres-control.js';
import { oid, sequence, utf8String } from '../../../src/x509/der.js';
import { derToPem } from '../../fixtures/csr.js';
import { DAY, makeChain, makeTestCert, type TestCert } from './helpers.js';

const fpOf = (c: TestCert): string => c.cert.fingerprint256.replace(/:/g, '').toLowerCase();

let dir: string;
let certsDir: string;
let chain: Awaited<ReturnType<typeof makeChain>>;
let expired: TestCert;
let nested: TestCert;
let tlsServer: tls.Server;
let tlsPort: number;
let closedPort: number;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'meshcert-discover-'));
  certsDir = join(dir, 'certs');
  mkdirSync(join(certsDir, 'sub'), { recursive: true });
  chain = await makeChain({ uris: ['spiffe://cluster.local/ns/shop/sa/web'], dns: ['localhost'], ips: ['127.0.0.1'] });
  expired = await makeTestCert({ subject: 'CN=expired.example', dns: ['expired.example'], notBefore: new Date(Date.now() - 30 * DAY), notAfter: new Date(Date.now() - DAY) });
  nested = await makeTestCert({ subject: 'CN=nested.example' });
  writeFileSync(join(certsDir, 'good.pem'), chain.leaf.pem + chain.intermediate.pem);
  writeFileSync(join(certsDir, 'expired.crt'), expired.pem);
  writeFileSync(join(certsDir, 'malformed.pem'), '-----BEGIN CERTIFICATE-----\nTm90IGEgY2VydGlmaWNhdGUgYXQgYWxs\n-----END CERTIFICATE-----\n');
  writeFileSync(join(certsDir, 'binary.crt'), Buffer.from([0x30, 0x82, 0x01, 0x00, 0xde, 0xad, 0xbe, 0xef]));
  writeFileSync(join(certsDir, 'key.pem'), await chain.leaf.keyPem());
  writeFileSync(join(certsDir, 'README.txt'), 'not looked at');
  writeFileSync(join(certsDir, 'sub', 'nested.pem'), nested.pem);

  tlsServer = tls.createServer({ key: await chain.leaf.keyPem(), cert: chain.leaf.pem + chain.intermediate.pem, ALPNProtocols: ['h2'] }, (s) => s.end());
  tlsServer.on('tlsClientError', () => undefined);
  await new Promise<void>((resolve) => tlsServer.listen(0, '127.0.0.1', resolve));
  tlsPort = (tlsServer.address() as AddressInfo).port;
  closedPort = await freePort();
});

afterAll(async () => {
  await new Promise((resolve) => tlsServer.close(resolve));
  rmSync(dir, { recursive: true, force: true });
});

describe('PEM files', () => {
  it('reads every certificate of a good file', () => {
    const item = readPemFile(join(certsDir, 'good.pem'));
    expect(item.status).toBe('ok');
    expect(item.source).toBe(`discovered:file:${join(certsDir, 'good.pem')}`);
    expect(item.status === 'ok' && item.certificates.map((c) => c.fingerprint256)).toEqual([chain.leaf.cert.fingerprint256, chain.intermediate.cert.fingerprint256]);
  });

  it('reports a broken PEM, a non-PEM file and an unterminated block as errors, and skips key files', () => {
    expect(readPemFile(join(certsDir, 'malformed.pem'))).toMatchObject({ status: 'error', error: expect.stringMatching(/broken PEM/) });
    expect(readPemFile(join(certsDir, 'binary.crt'))).toMatchObject({ status: 'error', error: expect.stringMatching(/not a PEM file/) });
    expect(readPemFile(join(certsDir, 'key.pem'))).toMatchObject({ status: 'skipped', reason: expect.stringMatching(/PRIVATE KEY/) });
    const cut = join(dir, 'cut.pem');
    writeFileSync(cut, chain.leaf.pem.slice(0, 200));
    expect(readPemFile(cut)).toMatchObject({ status: 'error', error: expect.stringMatching(/without a matching END/) });
    const mixed = join(dir, 'mixed.pem');
    writeFileSync(mixed, `${chain.leaf.pem}-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n`);
    const m = readPemFile(mixed);
    expect(m).toMatchObject({ status: 'error', error: expect.stringMatching(/1 good certificate/) });
    expect(m.status === 'error' && m.certificates?.length).toBe(1);
    expect(readPemFile(join(dir, 'nope.pem'))).toMatchObject({ status: 'error', error: expect.stringMatching(/cannot read: ENOENT/) });
  });

  it("reads a kubelet-mounted Secret once, through its key's symlink, not its ..<timestamp> directory", () => {
    const mount = join(dir, 'mounted-secret');
    const real = join(mount, '..2026_11_29_10_00_00.123456789');
    mkdirSync(real, { recursive: true });
    copyFileSync(join(certsDir, 'good.pem'), join(real, 'tls.crt'));
    symlinkSync('..2026_11_29_10_00_00.123456789', join(mount, '..data'));
    symlinkSync('..data/tls.crt', join(mount, 'tls.crt'));
    // A key mounted at a nested path (items: [{ key, path: certs/ca.crt }]) is a symlinked directory.
    mkdirSync(join(real, 'certs'));
    copyFileSync(join(certsDir, 'good.pem'), join(real, 'certs', 'ca.crt'));
    symlinkSync('..data/certs', join(mount, 'certs'));
    // A symlink loop does not hang the walk, and a link out of the tree is not followed.
    symlinkSync('.', join(real, 'certs', 'loop'));
    symlinkSync(certsDir, join(mount, 'elsewhere'));
    expect(expandFileArg(mount).files).toEqual([join(mount, 'certs', 'ca.crt'), join(mount, 'tls.crt')]);
  });

  it('follows no directory symlink out of the walked tree, even into a sibling whose path starts with its own; a glob lists files, not directories; a file named twice is read once', () => {
    const tree = join(dir, 'prefix');
    const sibling = join(dir, 'prefix-other');
    mkdirSync(tree);
    mkdirSync(sibling);
    copyFileSync(join(certsDir, 'good.pem'), join(tree, 'a.pem'));
    copyFileSync(join(certsDir, 'good.pem'), join(sibling, 'b.pem'));
    symlinkSync(sibling, join(tree, 'link'));
    expect(expandFileArg(tree).files).toEqual([join(tree, 'a.pem')]);
    mkdirSync(join(tree, 'dir.pem'));
    expect(expandFileArg(join(tree, '*.pem')).files).toEqual([join(tree, 'a.pem')]);
    expect(discoverFiles([join(tree, 'a.pem'), tree]).map((i) => i.target)).toEqual([join(tree, 'a.pem')]);
  });

  it('walks directories recursively for *.pem and *.crt, and expands basename globs', () => {
    expect(expandFileArg(certsDir).files.map((f) => f.slice(certsDir.length + 1))).toEqual(['binary.crt', 'expired.crt', 'good.pem', 'key.pem', 'malformed.pem', 'sub/nested.pem']);
    expect(expandFileArg(join(certsDir, '*.crt')).files.map((f) => f.slice(certsDir.length + 1))).toEqual(['binary.crt', 'expired.crt']);
    expect(expandFileArg(join(certsDir, 'g??d.*')).files).toEqual([join(certsDir, 'good.pem')]);
    expect(expandFileArg(join(certsDir, '*.der')).error).toMatchObject({ status: 'error', error: 'no file matches' });
    expect(expandFileArg(join(dir, '*', 'good.pem')).error).toMatchObject({ status: 'error', error: expect.stringMatching(/last path component/) });
    expect(expandFileArg(join(dir, 'missing')).error).toMatchObject({ status: 'error', error: 'no such file or directory' });
    expect(globToRegExp('a.*').test('a.pem')).toBe(true);
    expect(globToRegExp('a.*').test('abpem')).toBe(false);
  });

  it('reads a directory whose file names are UTF-8, and names a certificate file whose name is not instead of failing on a path that does not exist', () => {
    const d = mkdtempSync(join(dir, 'names-'));
    writeFileSync(join(d, 'café.pem'), nested.pem);
    writeFileSync(Buffer.concat([Buffer.from(`${d}/caf`), Buffer.from([0xe9]), Buffer.from('.pem')]), nested.pem);
    writeFileSync(Buffer.concat([Buffer.from(`${d}/notes-`), Buffer.from([0xe9])]), 'not a certificate');
    const r = expandFileArg(d);
    expect(r.files).toEqual([join(d, 'café.pem')]);
    expect(r.skipped).toEqual([
      { kind: 'file', target: `${d}/caf\ufffd.pem`, source: null, status: 'error', error: 'its name is not valid UTF-8 (bytes 636166e92e70656d); meshcert names places by path: rename it' },
    ]);
    expect(readPemFile(r.files[0]!)).toMatchObject({ status: 'ok' });
    // A glob says so too (it matches the name byte for byte); one the name does not match does not.
    const globbed = expandFileArg(join(d, 'caf*.pem'));
    expect(globbed.files).toEqual([join(d, 'café.pem')]);
    expect(globbed.skipped).toEqual(r.skipped);
    expect(expandFileArg(join(d, 'notes-*'))).toEqual({ files: [], skipped: [expect.objectContaining({ target: `${d}/notes-\ufffd` })] });
    expect(expandFileArg(join(d, 'x*.pem')).error).toMatchObject({ error: 'no file matches' });
  });

  it('refuses a named pipe or a device without opening it, and never opens a pipe found in a walked directory', async () => {
    const fifoDir = mkdtempSync(join(dir, 'fifo-'));
    const fifo = join(fifoDir, 'pipe.pem');
    execFileSync('mkfifo', [fifo]);
    symlinkSync('pipe.pem', join(fifoDir, 'link-to-pipe.crt'));
    writeFileSync(join(fifoDir, 'real.pem'), nested.pem);
    // Should the pipe be opened after all, this writer unblocks it after 2 s (so the test fails
    // instead of hanging); with the fix nothing ever reads, and the writer is killed.
    const writer = spawn(process.execPath, ['-e', `setTimeout(() => require('fs').writeFile(${JSON.stringify(fifo)}, 'x', () => process.exit(0)), 2000)`], { stdio: 'ignore' });
    try {
      expect(readPemFile(fifo)).toMatchObject({ status: 'error', error: 'not a regular file (a named pipe)' });
      expect(readPemFile(join(fifoDir, 'link-to-pipe.crt'))).toMatchObject({ status: 'error', error: 'not a regular file (a named pipe)' });
      expect(readPemFile('/dev/null')).toMatchObject({ status: 'error', error: 'not a regular file (a character device)' });
      expect(expandFileArg(fifoDir).files).toEqual([join(fifoDir, 'real.pem')]);
    } finally {
      writer.kill('SIGKILL');
    }
  });

  it('reads at most the size limit + 1 byte, whatever the file size stat reports', () => {
    // /proc files are regular files whose stat size is 0: the limit holds on the bytes read.
    expect(readPemFile('/proc/self/maps', { maxBytes: 100 })).toMatchObject({ status: 'error', error: 'larger than 100 bytes: not a certificate file' });
    const atLimit = join(dir, 'at-limit.pem');
    writeFileSync(atLimit, nested.pem);
    const size = Buffer.byteLength(nested.pem);
    expect(readPemFile(atLimit, { maxBytes: size })).toMatchObject({ status: 'ok' });
    expect(readPemFile(atLimit, { maxBytes: size - 1 })).toMatchObject({ status: 'error', error: `larger than ${size - 1} bytes: not a certificate file` });
  });
});

describe('certificate file formats', () => {
  let fmt: string;
  let trustedPem: string;
  beforeAll(async () => {
    fmt = join(dir, 'formats');
    mkdirSync(fmt);
    // OpenSSL's TRUSTED CERTIFICATE: the certificate, then X509_CERT_AUX (trust OIDs, alias).
    const aux = sequence(sequence(oid('1.3.6.1.5.5.7.3.1')), utf8String('my alias'));
    trustedPem = derToPem(Buffer.concat([chain.root.der, aux]), 'TRUSTED CERTIFICATE');
    writeFileSync(join(fmt, 'trusted.pem'), trustedPem + (await chain.root.keyPem()));
    writeFileSync(join(fmt, 'x509.crt'), derToPem(chain.intermediate.der, 'X509 CERTIFICATE'));
    writeFileSync(join(fmt, 'leaf.der'), chain.leaf.der);
    writeFileSync(join(fmt, 'nested.cer'), nested.der);
    writeFileSync(join(fmt, 'key.der'), Buffer.from(await webcrypto.subtle.exportKey('pkcs8', chain.leaf.keys.privateKey)));
  });

  it('reads the certificate leading a TRUSTED CERTIFICATE block, X509 CERTIFICATE blocks and DER files', () => {
    const trusted = readPemFile(join(fmt, 'trusted.pem'));
    expect(trusted).toMatchObject({ status: 'ok' });
    // The certificate alone (its fingerprint), not the certificate with the trust settings.
    expect(trusted.status === 'ok' && trusted.certificates.map((c) => c.fingerprint256)).toEqual([chain.root.cert.fingerprint256]);
    expect(trusted.status === 'ok' && trusted.certificates[0]!.raw.equals(chain.root.der)).toBe(true);
    const x = readPemFile(join(fmt, 'x509.crt'));
    expect(x.status === 'ok' && x.certificates.map((c) => c.fingerprint256)).toEqual([chain.intermediate.cert.fingerprint256]);
    const der = readPemFile(join(fmt, 'leaf.der'));
    expect(der.status === 'ok' && der.certificates.map((c) => c.fingerprint256)).toEqual([chain.leaf.cert.fingerprint256]);
    expect(readPemFile(join(fmt, 'key.der'))).toMatchObject({ status: 'skipped', reason: 'no certificate (a DER private key)' });
  });

  it('skips an encrypted DER private key as key material, not as an unreadable file', () => {
    const encrypted = join(dir, 'encrypted-key.der');
    writeFileSync(encrypted, generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'der', type: 'pkcs8', cipher: 'aes-256-cbc', passphrase: 'secret' }));
    expect(readPemFile(encrypted)).toMatchObject({ status: 'skipped', reason: 'no certificate (a DER private key)' });
  });

  it('reports bad DER, broken TRUSTED CERTIFICATE blocks and PKCS#7 blocks', () => {
    const trailing = join(dir, 'trailing.der');
    writeFileSync(trailing, Buffer.concat([chain.leaf.der, Buffer.from([0])]));
    expect(readPemFile(trailing)).toMatchObject({ status: 'error', error: 'not a PEM file (no -----BEGIN line) nor a DER certificate' });
    const badTrusted = join(dir, 'bad-trusted.pem');
    writeFileSync(badTrusted, derToPem(Buffer.from([0x30, 0x03, 1, 2, 3, 0x30, 0]), 'TRUSTED CERTIFICATE'));
    expect(readPemFile(badTrusted)).toMatchObject({ status: 'error', error: 'broken PEM: certificate #1 does not parse' });
    const p7 = join(dir, 'bundle.p7b.pem');
    writeFileSync(p7, derToPem(Buffer.from('not really PKCS#7'), 'PKCS7'));
    expect(readPemFile(p7)).toMatchObject({ status: 'error', error: expect.stringMatching(/^unsupported \(PKCS#7\): 1 PKCS7 block\(s\) not read/) });
    const mixed = join(dir, 'mixed-p7.pem');
    writeFileSync(mixed, nested.pem + derToPem(Buffer.from('x'), 'PKCS #7 SIGNED DATA'));
    const m = readPemFile(mixed);
    expect(m).toMatchObject({ status: 'error', error: expect.stringMatching(/unsupported \(PKCS#7\).*\(1 good certificate\(s\) recorded anyway\)$/) });
    expect(m.status === 'error' && m.certificates?.length).toBe(1);
  });

  it('walks *.cer and *.der too, records them, exits 0, and never reports key material', async () => {
    expect(expandFileArg(fmt).files.map((f) => f.slice(fmt.length + 1))).toEqual(['key.der', 'leaf.der', 'nested.cer', 'trusted.pem', 'x509.crt']);
    const db = join(mkdtempSync(join(dir, 'db-fmt-')), 'inventory.db');
    const out = vi.spyOn(console, 'log').mockImplementation(() => undefined);
    try {
      expect(await discoverCommand(['--files', fmt, '--db', `sqlite:${db}`, '--json'])).toBe(0);
      const json = out.mock.calls.map((c) => c.join(' ')).join('\n');
      const r = JSON.parse(json) as { newRecords: number; ok: number; skipped: number; failed: number };
      expect(r).toMatchObject({ newRecords: 4, ok: 4, skipped: 1, failed: 0 });
      // Neither private key (PEM next to the trusted certificate, DER file) shows up anywhere.
      const rootKey = (await chain.root.keyPem()).split('\n')[1]!;
      expect(json).not.toContain(rootKey);
      expect(json).not.toContain('PRIVATE');
    } finally {
      out.mockRestore();
    }
    const store = await openStore({ kind: 'sqlite', path: db });
    try {
      expect((await store.get(fpOf(chain.root)))!.source).toBe(`discovered:file:${join(fmt, 'trusted.pem')}`);
      expect((await store.get(fpOf(nested)))!.source).toBe(`discovered:file:${join(fmt, 'nested.cer')}`);
      expect(await store.count()).toBe(4);
    } finally {
      await store.close();
    }
  });
});

describe('TLS endpoints', () => {
  it('records every certificate of the presented chain', async () => {
    const item = await discoverEndpoint(`127.0.0.1:${tlsPort}`);
    expect(item).toMatchObject({ status: 'ok', source: `discovered:endpoint:127.0.0.1:${tlsPort}` });
    const fps = item.status === 'ok' ? item.certificates.map((c) => c.fingerprint256) : [];
    expect(fps.slice(0, 2)).toEqual([chain.leaf.cert.fingerprint256, chain.intermediate.cert.fingerprint256]);
  });

  it('names the host it connects to (SNI), so that a server with a certificate per name presents the one for that name', async () => {
    const named = await makeTestCert({ subject: 'CN=localhost', dns: ['localhost'] });
    const context = tls.createSecureContext({ key: await named.keyPem(), cert: named.pem });
    const sni = tls.createServer({ key: await chain.leaf.keyPem(), cert: chain.leaf.pem, SNICallback: (name, cb) => cb(null, name === 'localhost' ? context : undefined) }, (s) => s.end());
    sni.on('tlsClientError', () => undefined);
    await new Promise<void>((resolve) => sni.listen(0, 'localhost', resolve));
    try {
      const item = await discoverEndpoint(`localhost:${(sni.address() as AddressInfo).port}`);
      expect(item.status === 'ok' && item.certificates.map((c) => c.fingerprint256)).toEqual([named.cert.fingerprint256]);
    } finally {
      sni.close();
    }
  });

  it('records the chain of a server that requires a client certificate, in TLS 1.2 (which refuses after presenting it) and 1.3', async () => {
    for (const maxVersion of ['TLSv1.2', 'TLSv1.3'] as const) {
      const mtls = tls.createServer({ key: await chain.leaf.keyPem(), cert: chain.leaf.pem + chain.intermediate.pem, requestCert: true, rejectUnauthorized: true, ca: chain.root.pem, maxVersion }, (s) => s.end());
      mtls.on('tlsClientError', () => undefined);
      await new Promise<void>((resolve) => mtls.listen(0, '127.0.0.1', resolve));
      try {
        const item = await discoverEndpoint(`127.0.0.1:${(mtls.address() as AddressInfo).port}`);
        expect(item.status, `${maxVersion}: ${item.status === 'error' ? item.error : ''}`).toBe('ok');
        expect(item.status === 'ok' && item.certificates.slice(0, 2).map((c) => c.fingerprint256)).toEqual([chain.leaf.cert.fingerprint256, chain.intermediate.cert.fingerprint256]);
      } finally {
        mtls.close();
      }
    }
  });

  it('reports a closed port, a silent server, a bad address and a server that does not speak TLS', async () => {
    expect(await discoverEndpoint(`127.0.0.1:${closedPort}`)).toMatchObject({ status: 'error', error: 'connection refused' });
    const silent = (await import('node:net')).createServer(() => undefined);
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    try {
      const t0 = Date.now();
      const item = await discoverEndpoint(`127.0.0.1:${(silent.address() as AddressInfo).port}`, { timeoutMs: 300 });
      expect(item).toMatchObject({ status: 'error', error: 'no TLS handshake within 300 ms' });
      expect(Date.now() - t0).toBeLessThan(5000);
    } finally {
      silent.close();
    }
    expect(await discoverEndpoint('no-port')).toMatchObject({ status: 'error', error: expect.stringMatching(/host:port/) });
    // A server that is not TLS: OpenSSL's reason, without its source file and line.
    const plain = (await import('node:net')).createServer((c) => c.end('HTTP/1.1 400 Bad Request\r\n\r\n'));
    await new Promise<void>((resolve) => plain.listen(0, '127.0.0.1', resolve));
    try {
      expect(await discoverEndpoint(`127.0.0.1:${(plain.address() as AddressInfo).port}`)).toMatchObject({ status: 'error', error: 'ERR_SSL_WRONG_VERSION_NUMBER: wrong version number' });
    } finally {
      plain.close();
    }
    // A server that drops a bare TLS hello, as PostgreSQL does (it starts TLS inside its protocol).
    const dropping = (await import('node:net')).createServer((c) => c.once('data', () => c.resetAndDestroy()));
    await new Promise<void>((resolve) => dropping.listen(0, '127.0.0.1', resolve));
    try {
      const item = await discoverEndpoint(`127.0.0.1:${(dropping.address() as AddressInfo).port}`);
      expect(item).toMatchObject({ status: 'error', error: expect.stringMatching(/^ECONNRESET: .*\(the server may not speak TLS at once on this port: protocols that start TLS inside their own, such as PostgreSQL or STARTTLS, cannot be read\)$/) });
    } finally {
      dropping.close();
    }
  });
});

describe('discover() into a store', () => {
  let store: InventoryStore;
  beforeEach(async () => {
    store = await openStore({ kind: 'sqlite', path: join(mkdtempSync(join(dir, 'db-')), 'inventory.db') });
  });
  afterEach(async () => store.close());

  it('records files and endpoints, reports failures per item, and is idempotent', async () => {
    const opts = { files: [certsDir], endpoints: [`127.0.0.1:${tlsPort}`, `127.0.0.1:${closedPort}`] };
    const r = await discover(store, opts);
    const byTarget = Object.fromEntries(r.items.map((i) => [i.target, i]));
    expect(byTarget[join(certsDir, 'good.pem')]).toMatchObject({ status: 'ok', certificates: 2 });
    expect(byTarget[join(certsDir, 'expired.crt')]).toMatchObject({ status: 'ok', certificates: 1 });
    expect(byTarget[join(certsDir, 'sub', 'nested.pem')]).toMatchObject({ status: 'ok', certificates: 1 });
    expect(byTarget[join(certsDir, 'malformed.pem')]).toMatchObject({ status: 'error' });
    expect(byTarget[join(certsDir, 'binary.crt')]).toMatchObject({ status: 'error' });
    expect(byTarget[join(certsDir, 'key.pem')]).toMatchObject({ status: 'skipped' });
    expect(byTarget[`127.0.0.1:${tlsPort}`]).toMatchObject({ status: 'ok', kind: 'endpoint' });
    expect(byTarget[`127.0.0.1:${closedPort}`]).toMatchObject({ status: 'error', error: 'connection refused' });
    expect(r).toMatchObject({ ok: 4, skipped: 1, failed: 3 });
    expect(discoveryExitCode(r)).toBe(1);

    // leaf + intermediate (file, then the same from the endpoint), expired, nested
    expect(r.newRecords).toBe(4);
    expect(await store.count()).toBe(4);
    const leaf = await store.get(fpOf(chain.leaf));
    expect(leaf).toMatchObject({
      source: `discovered:file:${join(certsDir, 'good.pem')}`,
      spiffeId: 'spiffe://cluster.local/ns/shop/sa/web',
      namespace: 'shop',
      serviceAccount: 'web',
      issuer: 'O=meshcert-test, CN=Test Intermediate',
    });
    const exp = await store.get(fpOf(expired));
    expect(exp!.notAfter.getTime()).toBeLessThan(Date.now());
    expect(exp!.source).toBe(`discovered:file:${join(certsDir, 'expired.crt')}`);

    const again = await discover(store, opts);
    expect(again.newRecords).toBe(0);
    expect(again.found).toBe(r.found);
    expect(await store.count()).toBe(4);
  });

  const longIdentity = async (kind: 'sqlite' | 'postgres'): Promise<void> => {
    const db = kind === 'postgres' ? await createTestDatabase('discover-long') : undefined;
    const target = db ? await openStore({ kind: 'postgres', url: db.url }) : store;
    try {
      const folder = mkdtempSync(join(dir, 'long-'));
      // Anyone who may create a TLS Secret can make one so: it must not cost the run.
      const long = await makeTestCert({ uris: [`spiffe://evil.example/ns/x/sa/${'a'.repeat(3000)}`] });
      writeFileSync(join(folder, 'long.pem'), long.pem);
      writeFileSync(join(folder, 'good.pem'), chain.leaf.pem);
      const r = await discover(target, { files: [folder] });
      const byTarget = Object.fromEntries(r.items.map((i) => [i.target, i]));
      expect(byTarget[join(folder, 'long.pem')]).toMatchObject({ status: 'error', error: 'certificate #1 cannot be inventoried: spiffeId, namespace, serviceAccount and source must be at most 2048 bytes each' });
      expect(byTarget[join(folder, 'good.pem')]).toMatchObject({ status: 'ok', certificates: 1 });
      expect(await target.get(fpOf(chain.leaf))).toMatchObject({ source: `discovered:file:${join(folder, 'good.pem')}` });
      expect((await target.places('discovered:')).map((p) => p.source)).toEqual([`discovered:file:${join(folder, 'good.pem')}`]);
    } finally {
      if (db) {
        await target.close();
        await db.drop().catch(() => {});
      }
    }
  };
  const longTitle = "reports a certificate whose SPIFFE ID is too long to index as its item's error, and records the rest";
  it(`${longTitle} (sqlite)`, () => longIdentity('sqlite'));
  it.skipIf(pgSkipReason() !== null)(`${longTitle} (postgres)`, () => longIdentity('postgres'));

  it('has a certificate about to expire reported until its renewal is read at the same place in full', async () => {
    const place = join(mkdtempSync(join(dir, 'renew-')), 'web.pem');
    const soon = await makeTestCert({ subject: 'CN=renew.example', notBefore: new Date(Date.now() - 80 * DAY), notAfter: new Date(Date.now() + 5 * DAY) });
    writeFileSync(place, soon.pem);
    expect(discoveryExitCode(await discover(store, { files: [place] }))).toBe(0);
    const expiring = async (): Promise<string[][]> => (await discoveredExpiring(store, new Date(), 30 * 86_400)).map((d) => [d.where, d.record.fingerprint]);
    expect(await expiring()).toEqual([[`file:${place}`, fpOf(soon)]]);
    const renewed = await makeTestCert({ subject: 'CN=renew.example', notBefore: new Date(Date.now() - 3_600_000), notAfter: new Date(Date.now() + 90 * DAY) });
    // A file caught mid-write (a block cut short) is no snapshot: the last one stands.
    writeFileSync(place, `${renewed.pem}-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n`);
    expect(discoveryExitCode(await discover(store, { files: [place] }))).toBe(1);
    expect(await expiring()).toEqual([[`file:${place}`, fpOf(soon)]]);
    writeFileSync(place, renewed.pem);
    expect(discoveryExitCode(await discover(store, { files: [place] }))).toBe(0);
    expect(await store.count()).toBe(2);
    expect(await expiring()).toEqual([]);
    // A whole file with a block that does not parse is still an error (exit 1), but what parsed is
    // what it serves: the certificate about to expire beside the broken block is reported.
    writeFileSync(place, `${renewed.pem}-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n${soon.pem}`);
    expect(discoveryExitCode(await discover(store, { files: [place] }))).toBe(1);
    expect(await expiring()).toEqual([[`file:${place}`, fpOf(soon)]]);
  });

  it("gives a Secret key whose certificates parse only in part its good ones as its snapshot (a Secret is read whole)", async () => {
    const soon = await makeTestCert({ subject: 'CN=secret-soon.example', notBefore: new Date(Date.now() - 80 * DAY), notAfter: new Date(Date.now() + 5 * DAY) });
    const broken = '-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n';
    const s = secret('a', 'partial', 'kubernetes.io/tls', { 'tls.crt': soon.pem + broken, 'tls.key': 'k' });
    const items = secretItems(s as never);
    expect(items[0]).toMatchObject({ target: 'a/partial', status: 'error', readInFull: true, held: [fpOf(soon)] });
    const partialStore = await openStore({ kind: 'sqlite', path: join(mkdtempSync(join(dir, 'partial-')), 'inventory.db') });
    try {
      expect(discoveryExitCode(await discoverSecrets(partialStore, [s]))).toBe(1);
      expect((await discoveredExpiring(partialStore, new Date(), 30 * 86_400)).map((d) => [d.where, d.record.fingerprint])).toEqual([['k8s-secret:a/partial', fpOf(soon)]]);
    } finally {
      await partialStore.close();
    }
  });

  it('takes a place read in full that holds no certificate now (a file with only a key left) as serving none', async () => {
    const place = join(mkdtempSync(join(dir, 'emptied-')), 'web.pem');
    const soon = await makeTestCert({ subject: 'CN=emptied.example', notBefore: new Date(Date.now() - 80 * DAY), notAfter: new Date(Date.now() + 5 * DAY) });
    writeFileSync(place, soon.pem);
    expect(discoveryExitCode(await discover(store, { files: [place] }))).toBe(0);
    expect((await discoveredExpiring(store, new Date(), 30 * 86_400)).map((d) => d.where)).toEqual([`file:${place}`]);
    writeFileSync(place, await soon.keyPem());
    const r = await discover(store, { files: [place] });
    expect(r.items).toEqual([expect.objectContaining({ status: 'skipped' })]);
    expect(await discoveredExpiring(store, new Date(), 30 * 86_400)).toEqual([]);
  });

  it("takes a Secret key that is emptied or removed as serving none, without an item of its own", async () => {
    const withCa = secret('a', 'istio-ca', 'kubernetes.io/tls', { 'tls.crt': chain.leaf.pem, 'ca.crt': chain.root.pem, 'tls.key': 'k' });
    const without = secret('a', 'istio-ca', 'kubernetes.io/tls', { 'tls.crt': chain.leaf.pem, 'tls.key': 'k' });
    expect(secretItems(without as never)).toEqual([expect.objectContaining({ target: 'a/istio-ca', status: 'ok', alsoEmpty: ['discovered:k8s-secret:a/istio-ca/ca.crt'] })]);
    for (const [s, expected] of [
      [withCa, [`k8s-secret:a/istio-ca ${fpOf(chain.leaf)}`, `k8s-secret:a/istio-ca/ca.crt ${fpOf(chain.root)}`]],
      [without, [`k8s-secret:a/istio-ca ${fpOf(chain.leaf)}`]],
    ] as const) {
      expect(discoveryExitCode(await discoverSecrets(store, [s]))).toBe(0);
      expect((await discoveredExpiring(store, new Date(), 36_500 * 86_400)).map((d) => `${d.where} ${d.record.fingerprint}`).sort()).toEqual([...expected].sort());
    }
  });

  it('tags endpoint certificates with the endpoint source when first seen there', async () => {
    const r = await discover(store, { endpoints: [`127.0.0.1:${tlsPort}`] });
    expect(discoveryExitCode(r)).toBe(0);
    expect((await store.get(fpOf(chain.intermediate)))!.source).toBe(`discovered:endpoint:127.0.0.1:${tlsPort}`);
  });

  it('exits 1 when nothing was found', async () => {
    const empty = mkdtempSync(join(dir, 'empty-'));
    const r = await discover(store, { files: [empty] });
    expect(r.items).toEqual([expect.objectContaining({ status: 'error', error: 'no *.pem, *.crt, *.cer or *.der file in this directory' })]);
    expect(discoveryExitCode(r)).toBe(1);
    expect(discoveryExitCode({ items: [], found: 0, newRecords: 0, retired: [], ok: 0, skipped: 1, failed: 0 })).toBe(1);
  });
});

/** discover() over these Secrets, served by a fake API server for the run. */
async function discoverSecrets(store: InventoryStore, secrets: unknown[], o: { failSelector?: string; forgetGone?: boolean; cluster?: string } = {}): Promise<DiscoveryReport> {
  const api = await fakeApiServer(secrets, 'tok-discover', o);
  try {
    const kubeconfig = join(mkdtempSync(join(dir, 'kubeconfig-')), 'config');
    writeKubeconfig(kubeconfig, api.url, api.caPem, 'tok-discover');
    return await discover(store, { k8sSecrets: { kubeconfig, ...(o.cluster !== undefined ? { cluster: o.cluster } : {}) }, ...(o.forgetGone ? { forgetGone: true } : {}) });
  } finally {
    await api.close();
  }
}

/** A loopback HTTPS server standing in for the Kubernetes API server. */
async function fakeApiServer(secrets: unknown[], token: string, o: { failSelector?: string } = {}): Promise<{ url: string; caPem: string; requests: string[]; close(): Promise<void> }> {
  const apiChain = await makeChain({ subject: 'CN=kube-apiserver', dns: ['localhost'], ips: ['127.0.0.1'] });
  const requests: string[] = [];
  const server = https.createServer({ key: await apiChain.leaf.keyPem(), cert: apiChain.leaf.pem + apiChain.intermediate.pem }, (req, res) => {
    requests.push(req.url ?? '');
    const url = new URL(req.url ?? '/', 'https://x');
    if (req.headers.authorization === 'Bearer forbidden') {
      res.writeHead(403, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ kind: 'Status', apiVersion: 'v1', status: 'Failure', message: 'secrets is forbidden: User "system:serviceaccount:meshcert:meshcert" cannot list resource "secrets"', reason: 'Forbidden', code: 403 }));
      return;
    }
    if (req.headers.authorization !== `Bearer ${token}`) {
      res.writeHead(401, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ kind: 'Status', apiVersion: 'v1', status: 'Failure', message: 'Unauthorized', reason: 'Unauthorized', code: 401 }));
      return;
    }
    // The field selectors discovery uses: `type=...` or `metadata.name=...`, one term.
    const selector = /^(type|metadata\.name)=([^,=]+)$/.exec(url.searchParams.get('fieldSelector') ?? '');
    if (req.method !== 'GET' || url.pathname !== '/api/v1/secrets' || !selector) {
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ kind: 'Status', apiVersion: 'v1', status: 'Failure', message: 'not found', code: 404 }));
      return;
    }
    if (url.searchParams.get('fieldSelector') === o.failSelector) {
      res.writeHead(500, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ kind: 'Status', apiVersion: 'v1', status: 'Failure', message: 'etcdserver: request timed out', code: 500 }));
      return;
    }
    // Paging as the API server does it: `limit`, and an opaque `continue` token.
    const matching = (secrets as Array<{ type?: string; metadata: { name: string } }>).filter((s) =>
      selector[1] === 'type' ? s.type === selector[2] : s.metadata.name === selector[2],
    );
    const limit = Number(url.searchParams.get('limit') ?? matching.length) || matching.length;
    const start = Number(url.searchParams.get('continue') ?? 0);
    const rest = matching.length - start - limit;
    const metadata = { resourceVersion: '12345', ...(rest > 0 ? { continue: String(start + limit), remainingItemCount: rest } : {}) };
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ kind: 'SecretList', apiVersion: 'v1', metadata, items: matching.slice(start, start + limit) }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `https://127.0.0.1:${(server.address() as AddressInfo).port}`,
    caPem: apiChain.root.pem,
    requests,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

function tlsSecret(ns: string, name: string, crt: string | undefined): unknown {
  return {
    metadata: { name, namespace: ns, uid: `uid-${ns}-${name}`, resourceVersion: '1', creationTimestamp: '2030-01-01T00:00:00Z' },
    type: 'kubernetes.io/tls',
    data: { ...(crt !== undefined ? { 'tls.crt': Buffer.from(crt).toString('base64') } : {}), 'tls.key': Buffer.from('key').toString('base64') },
  };
}

function secret(ns: string, name: string, type: string, data: Record<string, string>): unknown {
  return {
    metadata: { name, namespace: ns, uid: `uid-${ns}-${name}`, resourceVersion: '1', creationTimestamp: '2030-01-01T00:00:00Z' },
    type,
    data: Object.fromEntries(Object.entries(data).map(([k, v]) => [k, Buffer.from(v).toString('base64')])),
  };
}

function writeKubeconfig(path: string, server: string, caPem: string, token: string): void {
  writeFileSync(
    path,
    [
      'apiVersion: v1',
      'kind: Config',
      'clusters:',
      '- name: test',
      '  cluster:',
      `    server: ${server}`,
      `    certificate-authority-data: ${Buffer.from(caPem).toString('base64')}`,
      'users:',
      '- name: meshcert',
      '  user:',
      `    token: ${token}`,
      'contexts:',
      '- name: test',
      '  context: { cluster: test, user: meshcert }',
      'current-context: test',
      '',
    ].join('\n'),
  );
}

describe('Kubernetes TLS Secrets', () => {
  it('classifies Secrets: good, empty tls.crt, garbage', () => {
    expect(secretItems(tlsSecret('a', 'good', chain.leaf.pem) as never)).toEqual([expect.objectContaining({ status: 'ok', target: 'a/good', source: 'discovered:k8s-secret:a/good' })]);
    expect(secretItems(tlsSecret('a', 'pending', '') as never)).toEqual([expect.objectContaining({ status: 'skipped', reason: 'no tls.crt' })]);
    expect(secretItems(tlsSecret('a', 'none', undefined) as never)).toEqual([expect.objectContaining({ status: 'skipped' })]);
    expect(secretItems(tlsSecret('a', 'junk', 'hello') as never)).toEqual([expect.objectContaining({ status: 'error', error: 'tls.crt holds no PEM certificate' })]);
    // A second certificate cut short (no END line), as a file of the same bytes is judged: an error.
    const cut = chain.leaf.pem + chain.intermediate.pem.slice(0, 200);
    expect(secretItems(tlsSecret('a', 'cut', cut) as never)).toEqual([expect.objectContaining({ status: 'error', error: 'tls.crt: 1 certificate block(s) without a matching END line', certificates: [expect.anything()] })]);
    expect(secretItems(tlsSecret('a', 'only-cut', chain.leaf.pem.slice(0, 200)) as never)).toEqual([expect.objectContaining({ status: 'error', error: 'tls.crt: 1 certificate block(s) without a matching END line' })]);
  });

  it('names the first few of many certificate blocks of a file that do not parse, not each of thousands', () => {
    const d = mkdtempSync(join(dir, 'many-bad-'));
    writeFileSync(join(d, 'bad.pem'), '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n'.repeat(10_000));
    expect(readPemFile(join(d, 'bad.pem'))).toMatchObject({ status: 'error', error: 'broken PEM: 10000 certificates do not parse (#1, #2, #3, #4, #5, ...)' });
  });

  it("gives a Secret key's snapshot every certificate it holds, those an earlier key already gave included (recorded once)", async () => {
    const tls = secret('a', 'both', 'kubernetes.io/tls', { 'tls.crt': chain.leaf.pem + chain.intermediate.pem, 'ca.crt': chain.intermediate.pem + chain.root.pem, 'tls.key': 'k' });
    const repeatOnly = secret('a', 'repeat', 'kubernetes.io/tls', { 'tls.crt': chain.leaf.pem + chain.intermediate.pem, 'ca.crt': chain.intermediate.pem, 'tls.key': 'k' });
    const both = secretItems(tls as never);
    expect(both.map((i) => [i.target, i.status, i.status === 'skipped' ? [] : (i.certificates ?? []).map((c) => c.fingerprint256.replace(/:/g, '').toLowerCase()), i.status === 'error' ? undefined : i.held])).toEqual([
      ['a/both', 'ok', [fpOf(chain.leaf), fpOf(chain.intermediate)], undefined],
      ['a/both/ca.crt', 'ok', [fpOf(chain.root)], [fpOf(chain.intermediate), fpOf(chain.root)]],
    ]);
    expect(secretItems(repeatOnly as never)[1]).toMatchObject({ target: 'a/repeat/ca.crt', status: 'skipped', held: [fpOf(chain.intermediate)] });

    const store = await openStore({ kind: 'sqlite', path: join(mkdtempSync(join(dir, 'held-')), 'inventory.db') });
    try {
      // Through discover's recording: the ca.crt place serves the intermediate too.
      const expiringAll = async (): Promise<string[]> => (await discoveredExpiring(store, new Date(), 365 * 86_400 * 100)).map((d) => `${d.where} ${d.record.fingerprint}`).sort();
      expect(discoveryExitCode(await discoverSecrets(store, [tls]))).toBe(0);
      expect(await expiringAll()).toEqual(
        [`k8s-secret:a/both ${fpOf(chain.leaf)}`, `k8s-secret:a/both ${fpOf(chain.intermediate)}`, `k8s-secret:a/both/ca.crt ${fpOf(chain.intermediate)}`, `k8s-secret:a/both/ca.crt ${fpOf(chain.root)}`].sort(),
      );
    } finally {
      await store.close();
    }
  });

  it('with forgetGone, forgets the k8s-secret places a complete listing no longer holds; none without it, after a failed list call or an empty listing', async () => {
    const store = await openStore({ kind: 'sqlite', path: join(mkdtempSync(join(dir, 'retire-')), 'inventory.db') });
    try {
      const keep = tlsSecret('a', 'keep', chain.leaf.pem);
      const flaky = tlsSecret('a', 'flaky', chain.intermediate.pem);
      const withCa = secret('a', 'with-ca', 'kubernetes.io/tls', { 'tls.crt': chain.leaf.pem, 'ca.crt': chain.root.pem, 'tls.key': 'k' });
      const gone = secret('b', 'gone', 'kubernetes.io/tls', { 'tls.crt': chain.root.pem, 'ca.crt': chain.root.pem, 'tls.key': 'k' });
      const istio = secret('istio-system', 'cacerts', 'Opaque', { 'ca-cert.pem': chain.intermediate.pem, 'root-cert.pem': chain.root.pem, 'ca-key.pem': 'k' });
      const forgetGone = { forgetGone: true };
      expect(await discoverSecrets(store, [keep, flaky, withCa, gone, istio], forgetGone)).toMatchObject({ retired: [] });
      await store.recordSnapshots([{ source: 'discovered:file:/etc/tls/other.pem', fingerprints: [fpOf(chain.leaf)] }], new Date());
      const places = async (): Promise<string[]> => (await store.places('discovered:')).map((p) => p.source.slice('discovered:'.length));
      const all = [
        'file:/etc/tls/other.pem',
        'k8s-secret:a/flaky',
        'k8s-secret:a/keep',
        'k8s-secret:a/with-ca',
        'k8s-secret:a/with-ca/ca.crt',
        'k8s-secret:b/gone',
        'k8s-secret:b/gone/ca.crt',
        'k8s-secret:istio-system/cacerts/ca-cert.pem',
        'k8s-secret:istio-system/cacerts/root-cert.pem',
      ];
      expect(await places()).toEqual(all);

      // The Istio CA Secrets' list call fails: the listing is not the whole cluster.
      const partial = await discoverSecrets(store, [keep, flaky], { ...forgetGone, failSelector: 'metadata.name=cacerts' });
      expect(partial.items.filter((i) => i.status === 'error').map((i) => i.error)).toEqual([expect.stringContaining('cannot list Secrets named cacerts: API server answered HTTP 500')]);
      expect(partial).toMatchObject({ retired: [], retireSkipped: 'the cluster could not be listed in full' });
      // Complete, but not asked to (another cluster, a laptop's context); and asked, on an empty listing.
      const notAsked = await discoverSecrets(store, [keep]);
      expect([notAsked.retired, notAsked.retireSkipped]).toEqual([[], undefined]);
      expect(await discoverSecrets(store, [], forgetGone)).toMatchObject({ retired: [], retireSkipped: 'the cluster listed no Secret at all (the wrong cluster or context?)' });
      expect(await places()).toEqual(all);

      // Complete and asked: namespace b and the Istio Secret are gone; a/flaky's tls.crt no longer
      // parses and a/with-ca's ca.crt was emptied (both still there: the first keeps its last
      // snapshot, the second's is empty); files are not the cluster's.
      const junk = tlsSecret('a', 'flaky', 'hello');
      const emptied = secret('a', 'with-ca', 'kubernetes.io/tls', { 'tls.crt': chain.leaf.pem, 'ca.crt': '', 'tls.key': 'k' });
      const complete = await discoverSecrets(store, [keep, junk, emptied], forgetGone);
      expect(complete.retired).toEqual(['k8s-secret:b/gone', 'k8s-secret:b/gone/ca.crt', 'k8s-secret:istio-system/cacerts/ca-cert.pem', 'k8s-secret:istio-system/cacerts/root-cert.pem']);
      expect(complete.retireSkipped).toBeUndefined();
      expect(await places()).toEqual(['file:/etc/tls/other.pem', 'k8s-secret:a/flaky', 'k8s-secret:a/keep', 'k8s-secret:a/with-ca', 'k8s-secret:a/with-ca/ca.crt']);
      expect((await store.get(fpOf(chain.root)))?.source).toBe('discovered:k8s-secret:a/with-ca/ca.crt'); // records stay
      const expiring = (await discoveredExpiring(store, new Date(), 365 * 86_400 * 100)).map((d) => d.where).sort();
      expect([...new Set(expiring)]).toEqual(['file:/etc/tls/other.pem', 'k8s-secret:a/flaky', 'k8s-secret:a/keep', 'k8s-secret:a/with-ca']);
      expect((await discoverSecrets(store, [keep, junk, emptied], forgetGone)).retired).toEqual([]);
    } finally {
      await store.close();
    }
  });

  it('names each cluster in its places with a cluster name, so that forgetGone in one cluster leaves the others\' places (and the unnamed one\'s) alone', async () => {
    const store = await openStore({ kind: 'sqlite', path: join(mkdtempSync(join(dir, 'clusters-')), 'inventory.db') });
    try {
      const cacerts = secret('istio-system', 'cacerts', 'Opaque', { 'ca-cert.pem': chain.intermediate.pem, 'root-cert.pem': chain.root.pem, 'ca-key.pem': 'k' });
      const web = tlsSecret('web', 'tls', chain.leaf.pem);
      const forgetGone = { forgetGone: true };
      // The same Secrets in two clusters, and in an unnamed one (a run before --cluster was given).
      const east = await discoverSecrets(store, [cacerts, web], { ...forgetGone, cluster: 'east' });
      expect(east.items.map((i) => i.source)).toEqual(['discovered:k8s-secret@east:web/tls', 'discovered:k8s-secret@east:istio-system/cacerts/ca-cert.pem', 'discovered:k8s-secret@east:istio-system/cacerts/root-cert.pem']);
      await discoverSecrets(store, [cacerts, web], { ...forgetGone, cluster: 'west-1' });
      await discoverSecrets(store, [cacerts, web]);
      const places = async (): Promise<string[]> => (await store.places('discovered:')).map((p) => placeName(p.source));
      const each = (prefix: string): string[] => [`${prefix}:istio-system/cacerts/ca-cert.pem`, `${prefix}:istio-system/cacerts/root-cert.pem`, `${prefix}:web/tls`];
      expect(await places()).toEqual([...each('k8s-secret'), ...each('k8s-secret@east'), ...each('k8s-secret@west-1')]);
      // web/tls deleted in east: only east's place goes, though the others hold the same name.
      const gone = await discoverSecrets(store, [cacerts], { ...forgetGone, cluster: 'east' });
      expect(gone.retired).toEqual(['k8s-secret@east:web/tls']);
      expect(await places()).toEqual([...each('k8s-secret'), ...each('k8s-secret@east').slice(0, 2), ...each('k8s-secret@west-1')]);
      // The unnamed cluster's run judges the unnamed places alone.
      expect((await discoverSecrets(store, [web], forgetGone)).retired).toEqual(['k8s-secret:istio-system/cacerts/ca-cert.pem', 'k8s-secret:istio-system/cacerts/root-cert.pem']);
      expect(await places()).toEqual([each('k8s-secret')[2], ...each('k8s-secret@east').slice(0, 2), ...each('k8s-secret@west-1')]);
      // A name that would run into the place's own ":" or "/" is no cluster name.
      for (const bad of ['a:b', 'a/b', '']) expect(() => k8sSecretPlaces(bad), bad).toThrow(/not a cluster name for places/);
      const before = await places();
      await expect(discover(store, { k8sSecrets: { cluster: 'a:b', kubeconfig: '/nonexistent' }, files: [dir] })).rejects.toThrow(/not a cluster name/);
      expect(await places()).toEqual(before); // refused before anything was read or written
      // The expiry reports name the cluster with the place.
      const expiring = new Set((await discoveredExpiring(store, new Date(), 365 * 86_400 * 100)).map((d) => d.where));
      expect(expiring.has('k8s-secret@west-1:web/tls')).toBe(true);
    } finally {
      await store.close();
    }
  });

  it('reads ca.crt of TLS Secrets and the certificate keys of Istio CA Secrets, each certificate once, never a key field', async () => {
    const decoy = await makeTestCert({ subject: 'CN=in-a-key-field' });
    const fps = (items: ReturnType<typeof secretItems>): string[][] => items.map((i) => (i.status === 'skipped' ? [] : (i.certificates ?? []).map((c) => c.fingerprint256)));
    const tls = secretItems(secret('web', 'app-tls', 'kubernetes.io/tls', { 'tls.crt': chain.leaf.pem + chain.intermediate.pem, 'ca.crt': chain.root.pem, 'tls.key': decoy.pem }) as never);
    expect(tls.map((i) => [i.target, i.source, i.status])).toEqual([
      ['web/app-tls', 'discovered:k8s-secret:web/app-tls', 'ok'],
      ['web/app-tls/ca.crt', 'discovered:k8s-secret:web/app-tls/ca.crt', 'ok'],
    ]);
    expect(fps(tls)).toEqual([[chain.leaf.cert.fingerprint256, chain.intermediate.cert.fingerprint256], [chain.root.cert.fingerprint256]]);
    // ca.crt repeating a certificate of tls.crt adds nothing
    expect(secretItems(secret('web', 'dup', 'kubernetes.io/tls', { 'tls.crt': chain.leaf.pem + chain.intermediate.pem, 'ca.crt': chain.intermediate.pem }) as never)[1]).toMatchObject({
      target: 'web/dup/ca.crt',
      status: 'skipped',
      reason: 'no new certificate (all already read from tls.crt)',
    });

    const cacerts = secretItems(
      secret('istio-system', 'cacerts', 'Opaque', {
        'ca-cert.pem': chain.intermediate.pem,
        'ca-key.pem': decoy.pem,
        'cert-chain.pem': chain.intermediate.pem + chain.root.pem,
        'root-cert.pem': chain.root.pem,
      }) as never,
    );
    expect(cacerts.map((i) => [i.target, i.status])).toEqual([
      ['istio-system/cacerts/ca-cert.pem', 'ok'],
      ['istio-system/cacerts/root-cert.pem', 'ok'],
      ['istio-system/cacerts/cert-chain.pem', 'skipped'],
    ]);
    expect(fps(cacerts)).toEqual([[chain.intermediate.cert.fingerprint256], [chain.root.cert.fingerprint256], []]);

    const selfSigned = secretItems(
      secret('istio-system', 'istio-ca-secret', 'istio.io/ca-root', { 'ca-cert.pem': chain.root.pem, 'ca-key.pem': decoy.pem, 'cert-chain.pem': '', 'key.pem': '', 'root-cert.pem': '' }) as never,
    );
    expect(selfSigned.map((i) => [i.target, i.status])).toEqual([['istio-system/istio-ca-secret/ca-cert.pem', 'ok']]);

    const keyAndCert = secretItems(secret('shop', 'istio.default', 'istio.io/key-and-cert', { 'cert-chain.pem': chain.leaf.pem, 'key.pem': decoy.pem, 'root-cert.pem': chain.root.pem }) as never);
    expect(keyAndCert.map((i) => [i.target, i.status])).toEqual([
      ['shop/istio.default/cert-chain.pem', 'ok'],
      ['shop/istio.default/root-cert.pem', 'ok'],
    ]);
    expect(fps(keyAndCert)).toEqual([[chain.leaf.cert.fingerprint256], [chain.root.cert.fingerprint256]]);

    expect(secretItems(secret('istio-system', 'cacerts', 'Opaque', { 'ca-key.pem': decoy.pem }) as never)).toEqual([
      expect.objectContaining({ target: 'istio-system/cacerts', status: 'skipped', reason: 'no ca-cert.pem, root-cert.pem, cert-chain.pem' }),
    ]);
    expect(secretItems(secret('istio-system', 'cacerts', 'Opaque', { 'root-cert.pem': 'junk' }) as never)).toEqual([
      expect.objectContaining({ target: 'istio-system/cacerts/root-cert.pem', status: 'error', error: 'root-cert.pem holds no PEM certificate' }),
    ]);
    for (const items of [tls, cacerts, selfSigned, keyAndCert]) expect(fps(items).flat()).not.toContain(decoy.cert.fingerprint256);
  });
});

describe('meshcert discover (CLI)', () => {
  let out: MockInstance;
  let err: MockInstance;
  const stdout = (): string => out.mock.calls.map((c) => c.join(' ')).join('\n');
  const stderr = (): string => err.mock.calls.map((c) => c.join(' ')).join('\n');
  beforeEach(() => {
    out = vi.spyOn(console, 'log').mockImplementation(() => undefined);
    err = vi.spyOn(console, 'error').mockImplementation(() => undefined);
  });
  afterEach(() => vi.restoreAllMocks());

  it('records the folder and endpoints, prints per-item lines, and exits 1 on failed items', async () => {
    const db = `sqlite:${join(dir, 'cli-1', 'inventory.db')}`;
    const code = await discoverCommand(['--files', certsDir, '--endpoints', `127.0.0.1:${tlsPort}`, `127.0.0.1:${closedPort}`, '--db', db]);
    expect(code).toBe(1);
    expect(stdout()).toContain(`file ${join(certsDir, 'good.pem')}: 2 certificate(s)`);
    expect(stdout()).toContain(`endpoint 127.0.0.1:${tlsPort}: `);
    expect(stdout()).toMatch(/discovered 6 certificate\(s\) in 4 item\(s\), 1 skipped, 3 failed; 4 new in sqlite:/);
    expect(stderr()).toContain(`meshcert discover: endpoint 127.0.0.1:${closedPort}: connection refused`);
    expect(stderr()).toContain(`meshcert discover: file ${join(certsDir, 'malformed.pem')}: broken PEM`);
    expect(stderr()).not.toMatch(/\n\s+at /);
  });

  it('prints JSON with items and errors[], exits 0 when everything succeeded, and is idempotent', async () => {
    const db = `sqlite:${join(dir, 'cli-2', 'inventory.db')}`;
    const args = ['--files', join(certsDir, 'good.pem'), join(certsDir, 'expired.crt'), '--endpoints', `127.0.0.1:${tlsPort}`, '--db', db, '--json'];
    expect(await discoverCommand(args)).toBe(0);
    const r = JSON.parse(stdout()) as { found: number; newRecords: number; items: Array<{ target: string; status: string; fingerprints: string[] }>; errors: unknown[] };
    expect(r.errors).toEqual([]);
    expect(r.items.map((i) => [i.target, i.status])).toEqual([
      [join(certsDir, 'good.pem'), 'ok'],
      [join(certsDir, 'expired.crt'), 'ok'],
      [`127.0.0.1:${tlsPort}`, 'ok'],
    ]);
    expect(r.items[0]!.fingerprints).toEqual([fpOf(chain.leaf), fpOf(chain.intermediate)]);
    expect(r.newRecords).toBe(3);
    out.mockClear();
    expect(await discoverCommand(args)).toBe(0);
    expect((JSON.parse(stdout()) as { newRecords: number }).newRecords).toBe(0);
  });

  it('lists errors[] in JSON for failed items', async () => {
    const db = `sqlite:${join(dir, 'cli-3', 'inventory.db')}`;
    expect(await discoverCommand(['--endpoints', `127.0.0.1:${closedPort}`, '--files', join(certsDir, 'binary.crt'), '--db', db, '--json'])).toBe(1);
    const r = JSON.parse(stdout()) as { errors: Array<{ kind: string; target: string; error: string }> };
    expect(r.errors).toEqual([
      { kind: 'file', target: join(certsDir, 'binary.crt'), error: expect.stringMatching(/not a PEM file/) },
      { kind: 'endpoint', target: `127.0.0.1:${closedPort}`, error: 'connection refused' },
    ]);
  });

  it('prints file names with control characters escaped (whoever names a file chooses them)', async () => {
    const folder = mkdtempSync(join(dir, 'names-'));
    const name = 'web\u001b[2K\u001b[1A.pem';
    writeFileSync(join(folder, name), chain.leaf.pem);
    expect(await discoverCommand(['--files', folder, '--db', `sqlite:${join(folder, 'inventory.db')}`])).toBe(0);
    expect(stdout()).toContain(`file ${join(folder, 'web\\u{001b}[2K\\u{001b}[1A.pem')}: 1 certificate(s)`);
    out.mockClear();
    expect(await discoverCommand(['--places', '--db', `sqlite:${join(folder, 'inventory.db')}`])).toBe(0);
    expect(stdout()).toContain('web\\u{001b}[2K\\u{001b}[1A.pem');
    expect(stdout()).not.toContain('\u001b');
  });

  it.skipIf(pgSkipReason() !== null)('lists places with a role that may only SELECT, and migrates nothing (as the certs commands)', async () => {
    const db = await createTestDatabase('places-read-only');
    let role: { url: string; drop(): Promise<void> } | undefined;
    try {
      expect(await discoverCommand(['--files', join(certsDir, 'good.pem'), '--db', db.url])).toBe(0);
      role = await createSelectOnlyRole(db);
      out.mockClear();
      expect(await discoverCommand(['--places', '--db', role.url]), stderr()).toBe(0);
      expect(stdout()).toContain(`file:${join(certsDir, 'good.pem')}`);
    } finally {
      await db.drop().catch(() => {});
      await role?.drop().catch(() => {});
    }
  });

  it('records tls.crt of every kubernetes.io/tls Secret through the API server', async () => {
    const other = await makeTestCert({ subject: 'CN=ingress.example', dns: ['ingress.example'] });
    const secrets = [tlsSecret('istio-system', 'cacerts-mirror', chain.leaf.pem + chain.intermediate.pem), tlsSecret('web', 'ingress-tls', other.pem), tlsSecret('web', 'pending', '')];
    const api = await fakeApiServer(secrets, 'tok-123');
    try {
      const kubeconfig = join(dir, 'kubeconfig');
      writeKubeconfig(kubeconfig, api.url, api.caPem, 'tok-123');
      const dbPath = join(dir, 'cli-k8s', 'inventory.db');
      expect(await discoverCommand(['--k8s-secrets', '--kubeconfig', kubeconfig, '--db', `sqlite:${dbPath}`, '--json'])).toBe(0);
      const r = JSON.parse(stdout()) as { items: Array<{ target: string; status: string; source: string }>; newRecords: number };
      expect(r.items.map((i) => [i.target, i.status, i.source])).toEqual([
        ['istio-system/cacerts-mirror', 'ok', 'discovered:k8s-secret:istio-system/cacerts-mirror'],
        ['web/ingress-tls', 'ok', 'discovered:k8s-secret:web/ingress-tls'],
        ['web/pending', 'skipped', 'discovered:k8s-secret:web/pending'],
      ]);
      expect(r.newRecords).toBe(3);
      expect(new URL(api.requests[0]!, 'https://x').searchParams.get('fieldSelector')).toBe('type=kubernetes.io/tls');
      expect(api.requests[0]).toContain('fieldSelector=type%3Dkubernetes.io%2Ftls');
      const store = await openStore({ kind: 'sqlite', path: dbPath });
      try {
        expect((await store.get(fpOf(other)))!.source).toBe('discovered:k8s-secret:web/ingress-tls');
      } finally {
        await store.close();
      }

      // Named with --cluster: its places say so, and --forget takes them by that name.
      const named = join(dir, 'cli-k8s-named', 'inventory.db');
      out.mockClear();
      expect(await discoverCommand(['--k8s-secrets', '--cluster', 'east', '--kubeconfig', kubeconfig, '--db', `sqlite:${named}`, '--json'])).toBe(0);
      expect((JSON.parse(stdout()) as { items: Array<{ source: string }> }).items.map((i) => i.source)).toEqual([
        'discovered:k8s-secret@east:istio-system/cacerts-mirror',
        'discovered:k8s-secret@east:web/ingress-tls',
        'discovered:k8s-secret@east:web/pending',
      ]);
      out.mockClear();
      expect(await discoverCommand(['--forget', 'k8s-secret@east:web/ingress-tls', '--db', `sqlite:${named}`])).toBe(0);
      expect(stdout()).toBe('forgot k8s-secret@east:web/ingress-tls');

      // The ingress Secret is deleted: the next run says it forgot its place, in both outputs.
      out.mockClear();
      secrets.splice(1, 1);
      out.mockClear();
      expect(await discoverCommand(['--k8s-secrets', '--kubeconfig', kubeconfig, '--db', `sqlite:${dbPath}`])).toBe(0);
      expect(stdout()).not.toContain('forgot'); // not asked to
      expect(await discoverCommand(['--k8s-secrets', '--forget-gone', '--kubeconfig', kubeconfig, '--db', `sqlite:${dbPath}`])).toBe(0);
      expect(stdout()).toContain('forgot k8s-secret:web/ingress-tls: no longer in the cluster\n');
      // web/pending never held a certificate, so it is no place: only the mirror's is forgotten.
      secrets.splice(0, 1);
      out.mockClear();
      expect(await discoverCommand(['--k8s-secrets', '--forget-gone', '--kubeconfig', kubeconfig, '--db', `sqlite:${dbPath}`, '--json'])).toBe(1); // nothing found
      expect((JSON.parse(stdout()) as { retired: string[] }).retired).toEqual(['k8s-secret:istio-system/cacerts-mirror']);

      // KUBECONFIG through loadFromDefault(), and a wrong token: one error item, exit 1
      out.mockClear();
      writeKubeconfig(kubeconfig, api.url, api.caPem, 'wrong');
      vi.stubEnv('KUBECONFIG', kubeconfig);
      try {
        expect(await discoverCommand(['--k8s-secrets', '--db', `sqlite:${dbPath}`])).toBe(1);
      } finally {
        vi.unstubAllEnvs();
      }
      expect(stderr()).toMatch(/meshcert discover: k8s kubernetes: cannot list TLS Secrets: API server answered HTTP 401: Unauthorized/);
    } finally {
      await api.close();
    }
  });

  it('lists TLS, istio.io/key-and-cert and Istio CA Secrets by field selector, reads each Secret once and records each certificate once', async () => {
    const decoy = await makeTestCert({ subject: 'CN=in-a-key-field' });
    const ingress = await makeTestCert({ subject: 'CN=ingress.example' });
    const api = await fakeApiServer(
      [
        secret('web', 'ingress-tls', 'kubernetes.io/tls', { 'tls.crt': ingress.pem, 'tls.key': decoy.pem, 'ca.crt': chain.root.pem }),
        secret('istio-system', 'cacerts', 'Opaque', { 'ca-cert.pem': chain.intermediate.pem, 'ca-key.pem': decoy.pem, 'cert-chain.pem': chain.intermediate.pem + chain.root.pem, 'root-cert.pem': chain.root.pem }),
        secret('istio-system', 'istio-ca-secret', 'istio.io/ca-root', { 'ca-cert.pem': nested.pem, 'ca-key.pem': decoy.pem }),
        secret('shop', 'istio.default', 'istio.io/key-and-cert', { 'cert-chain.pem': chain.leaf.pem, 'key.pem': decoy.pem, 'root-cert.pem': chain.root.pem }),
        // Matched by two queries (type and name): read once.
        secret('other', 'cacerts', 'kubernetes.io/tls', { 'tls.crt': expired.pem, 'tls.key': decoy.pem }),
        // Not matched by any query: never transferred, never read.
        secret('web', 'db-password', 'Opaque', { 'ca-cert.pem': decoy.pem }),
      ],
      'tok',
    );
    try {
      const kubeconfig = join(dir, 'kubeconfig-istio');
      writeKubeconfig(kubeconfig, api.url, api.caPem, 'tok');
      const dbPath = join(dir, 'cli-k8s-istio', 'inventory.db');
      expect(await discoverCommand(['--k8s-secrets', '--kubeconfig', kubeconfig, '--db', `sqlite:${dbPath}`, '--json'])).toBe(0);
      const json = stdout();
      const r = JSON.parse(json) as { items: Array<{ target: string; status: string; certificates: number }>; newRecords: number; found: number };
      expect(r.items.map((i) => [i.target, i.status, i.certificates])).toEqual([
        ['web/ingress-tls', 'ok', 1],
        ['web/ingress-tls/ca.crt', 'ok', 1],
        ['other/cacerts', 'ok', 1],
        ['shop/istio.default/cert-chain.pem', 'ok', 1],
        ['shop/istio.default/root-cert.pem', 'ok', 1],
        ['istio-system/cacerts/ca-cert.pem', 'ok', 1],
        ['istio-system/cacerts/root-cert.pem', 'ok', 1],
        ['istio-system/cacerts/cert-chain.pem', 'skipped', 0],
        ['istio-system/istio-ca-secret/ca-cert.pem', 'ok', 1],
      ]);
      // ingress, root, expired, leaf, intermediate, nested; the root is in three Secrets
      expect(r.found).toBe(8);
      expect(r.newRecords).toBe(6);
      expect(api.requests.map((q) => new URL(q, 'https://x').searchParams.get('fieldSelector'))).toEqual([
        'type=kubernetes.io/tls',
        'type=istio.io/key-and-cert',
        'metadata.name=cacerts',
        'metadata.name=istio-ca-secret',
      ]);
      expect(json).not.toContain(decoy.pem.split('\n')[1]!);
      const store = await openStore({ kind: 'sqlite', path: dbPath });
      try {
        expect(await store.count()).toBe(6);
        expect(await store.get(fpOf(decoy))).toBeNull();
        expect((await store.get(fpOf(chain.root)))!.source).toBe('discovered:k8s-secret:web/ingress-tls/ca.crt');
        expect((await store.get(fpOf(chain.intermediate)))!.source).toBe('discovered:k8s-secret:istio-system/cacerts/ca-cert.pem');
        expect((await store.get(fpOf(nested)))!.source).toBe('discovered:k8s-secret:istio-system/istio-ca-secret/ca-cert.pem');
      } finally {
        await store.close();
      }
    } finally {
      await api.close();
    }
  });

  it('gives up on an API server that never answers, and closes the request it left open (a discover run must end)', async () => {
    const apiChain = await makeChain({ subject: 'CN=kube-apiserver', dns: ['localhost'], ips: ['127.0.0.1'] });
    let open = 0;
    let opened = 0;
    const server = https.createServer({ key: await apiChain.leaf.keyPem(), cert: apiChain.leaf.pem + apiChain.intermediate.pem }, (req) => {
      opened++;
      open++;
      req.socket.on('close', () => open--);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const kubeconfig = join(dir, 'kubeconfig-stall');
      writeKubeconfig(kubeconfig, `https://127.0.0.1:${(server.address() as AddressInfo).port}`, apiChain.root.pem, 't');
      expect(await discoverK8sSecrets({ kubeconfig, timeoutMs: 300 })).toEqual([
        { kind: 'k8s', target: 'kubernetes', source: null, status: 'error', error: 'cannot list TLS Secrets: listing TLS Secrets: no answer within 300 ms' },
      ]);
      expect(opened).toBe(1);
      await expect.poll(() => open, { timeout: 5_000 }).toBe(0);
    } finally {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    }
  });

  it('follows continue tokens across pages and reports a 403 with the API server message', async () => {
    const secrets = await Promise.all(
      Array.from({ length: 5 }, async (_, i) => tlsSecret('ns', `s${i}`, (await makeTestCert({ subject: `CN=s${i}` })).pem)),
    );
    const api = await fakeApiServer(secrets, 't');
    try {
      const kubeconfig = join(dir, 'kubeconfig-paging');
      writeKubeconfig(kubeconfig, api.url, api.caPem, 't');
      const items = await discoverK8sSecrets({ kubeconfig, pageSize: 2 });
      expect(items.map((i) => [i.target, i.status])).toEqual([0, 1, 2, 3, 4].map((i) => [`ns/s${i}`, 'ok']));
      const tlsRequests = api.requests.filter((r) => new URL(r, 'https://x').searchParams.get('fieldSelector') === 'type=kubernetes.io/tls');
      expect(tlsRequests.map((r) => new URL(r, 'https://x').searchParams.get('continue'))).toEqual([null, '2', '4']);
      writeKubeconfig(kubeconfig, api.url, api.caPem, 'forbidden');
      expect(await discoverK8sSecrets({ kubeconfig })).toEqual([
        { kind: 'k8s', target: 'kubernetes', source: null, status: 'error', error: expect.stringMatching(/HTTP 403: secrets is forbidden: User/) },
      ]);
      expect(await discoverK8sSecrets({ kubeconfig: join(dir, 'no-such-kubeconfig') })).toEqual([
        expect.objectContaining({ status: 'error', error: expect.stringMatching(/cannot load Kubernetes credentials/) }),
      ]);
    } finally {
      await api.close();
    }
  });

  it('refuses an API server whose certificate the kubeconfig CA does not sign', async () => {
    const api = await fakeApiServer([], 't');
    try {
      const kubeconfig = join(dir, 'kubeconfig-wrong-ca');
      writeKubeconfig(kubeconfig, api.url, chain.root.pem, 't');
      expect(await discoverCommand(['--k8s-secrets', '--kubeconfig', kubeconfig, '--db', `sqlite:${join(dir, 'cli-k8s-2', 'inventory.db')}`])).toBe(1);
      expect(stderr()).toMatch(/cannot list TLS Secrets/);
      expect(api.requests).toEqual([]);
    } finally {
      await api.close();
    }
  });

  it('parses arguments: values after --files/--endpoints, usage errors', () => {
    expect(parseDiscoverArgs(['--files', 'a.pem', 'b.pem', '--endpoints', 'h:1', 'h:2', '--files', 'c'])).toMatchObject({
      files: ['a.pem', 'b.pem', 'c'],
      endpoints: ['h:1', 'h:2'],
      k8sSecrets: false,
      json: false,
    });
    expect(parseDiscoverArgs(['--endpoints', 'h:1', '--endpoint-timeout', '500ms']).endpointTimeoutMs).toBe(500);
    // Durations as every option takes them.
    expect(parseDiscoverArgs(['--endpoints', 'h:1', '--endpoint-timeout', '1m']).endpointTimeoutMs).toBe(60_000);
    expect(parseDiscoverArgs(['--endpoints', 'h:1', '--endpoint-timeout', '7']).endpointTimeoutMs).toBe(7000);
    expect(() => parseDiscoverArgs(['--endpoints', 'h:1', '--endpoint-timeout', 'soon'])).toThrow(/must be a positive duration/);
    expect(() => parseDiscoverArgs([])).toThrow(UsageError);
    expect(() => parseDiscoverArgs(['stray'])).toThrow(/unexpected argument "stray"/);
    expect(() => parseDiscoverArgs(['--json', 'x.pem'])).toThrow(UsageError);
    expect(() => parseDiscoverArgs(['--files'])).toThrow(UsageError);
    // A single-value option given twice is a usage error, as in every command (the lists may repeat).
    expect(() => parseDiscoverArgs(['--k8s-secrets', '--cluster', 'a', '--cluster', 'b'])).toThrow(/option --cluster is given more than once/);
    expect(() => parseDiscoverArgs(['--files', 'a', '--db', 'sqlite:x', '--db', 'sqlite:y'])).toThrow(/option --db is given more than once/);
    expect(() => parseDiscoverArgs(['--kubeconfig', 'k', '--files', 'a'])).toThrow(/--k8s-secrets/);
    expect(() => parseDiscoverArgs(['--forget-gone', '--files', 'a'])).toThrow(/--forget-gone goes with --k8s-secrets/);
    expect(() => parseDiscoverArgs(['--places', '--forget', 'file:/a.pem'])).toThrow(/--places goes alone/);
    expect(parseDiscoverArgs(['--places']).places).toBe(true);
    expect(parseDiscoverArgs(['--k8s-secrets', '--forget-gone']).forgetGone).toBe(true);
    expect(parseDiscoverArgs(['--k8s-secrets']).forgetGone).toBe(false);
    expect(parseDiscoverArgs(['--k8s-secrets', '--cluster', 'east-1.prod_a']).cluster).toBe('east-1.prod_a');
    expect(parseDiscoverArgs(['--k8s-secrets']).cluster).toBeUndefined();
    expect(() => parseDiscoverArgs(['--cluster', 'east', '--files', 'a'])).toThrow(/--cluster goes with --k8s-secrets/);
    for (const bad of ['', 'a:b', 'a/b', 'x'.repeat(64), 'é']) expect(() => parseDiscoverArgs(['--k8s-secrets', '--cluster', bad]), bad).toThrow(/a cluster name is 1 to 63 letters, digits, "\.", "_" and "-"/);
    expect(() => parseDiscoverArgs(['--endpoints', 'h:1', '--endpoint-timeout', '0'])).toThrow(/--endpoint-timeout must be a positive duration/);
    expect(() => parseDiscoverArgs(['--files', 'a', '--endpoint-timeout', '5s'])).toThrow(/--endpoint-timeout goes with --endpoints/);
    expect(parseDiscoverArgs(['--forget', 'file:/a.pem', 'endpoint:h:1']).forget).toEqual(['file:/a.pem', 'endpoint:h:1']);
    expect(() => parseDiscoverArgs(['--forget', 'file:/a.pem', '--files', 'b.pem'])).toThrow(/--forget goes alone/);
  });

  it('lists places and forgets one that is gone: the expiry reports stop judging it, its records stay, and an unknown place exits 1', async () => {
    const db = `sqlite:${join(dir, 'cli-forget', 'inventory.db')}`;
    const place = join(mkdtempSync(join(dir, 'forget-')), 'gone.pem');
    const soon = await makeTestCert({ subject: 'CN=gone.example', notBefore: new Date(Date.now() - 80 * DAY), notAfter: new Date(Date.now() + 5 * DAY) });
    writeFileSync(place, soon.pem);
    expect(await discoverCommand(['--files', place, '--db', db])).toBe(0);
    const store = await openStore({ kind: 'sqlite', path: db.slice('sqlite:'.length) });
    try {
      expect((await discoveredExpiring(store, new Date(), 30 * 86_400)).map((d) => d.where)).toEqual([`file:${place}`]);
    } finally {
      await store.close();
    }
    // --places lists it, with what it held when last seen.
    out.mockClear();
    expect(await discoverCommand(['--places', '--db', db])).toBe(0);
    const lines = stdout().split('\n');
    expect(lines[0]).toMatch(/^LAST SEEN\s+CERTS\s+EARLIEST NOT AFTER\s+PLACE$/);
    expect(lines.slice(1)).toEqual([expect.stringMatching(new RegExp(`^\\d{4}-\\d\\d-\\d\\dT\\S+Z\\s+1\\s+${new Date(soon.cert.validTo).toISOString().replace(/\./g, '\\.')}\\s+file:${place}$`))]);
    out.mockClear();
    expect(await discoverCommand(['--places', '--db', db, '--json'])).toBe(0);
    expect(JSON.parse(stdout())).toEqual({ places: [{ place: `file:${place}`, lastSeen: expect.any(String), certificates: 1, earliestNotAfter: new Date(soon.cert.validTo).toISOString() }] });
    out.mockClear();
    // A file named as discover names it, or relative to the working directory; a place named twice is one.
    expect(await discoverCommand(['--forget', `file:${relative(process.cwd(), place)}`, `file:${place}`, '--db', db])).toBe(0);
    expect(stdout()).toBe(`forgot file:${place}`);
    out.mockClear();
    expect(await discoverCommand(['--forget', `discovered:file:${place}`, 'endpoint:never:1', '--db', db, '--json'])).toBe(1);
    expect(JSON.parse(stdout())).toEqual({ forgotten: [{ place: `file:${place}`, known: false }, { place: 'endpoint:never:1', known: false }] });
    expect(stderr()).toContain('meshcert discover: endpoint:never:1: not a known place');
    // A mistyped inventory is not created by forgetting in it.
    const missing = join(dir, 'no-such', 'inventory.db');
    expect(await discoverCommand(['--forget', `file:${place}`, '--db', `sqlite:${missing}`])).toBe(1);
    expect(stderr()).toContain(`no inventory at sqlite:${missing}`);
    expect(await discoverCommand(['--places', '--db', `sqlite:${missing}`])).toBe(1);
    expect(existsSync(missing)).toBe(false);
    out.mockClear();
    expect(await discoverCommand(['--places', '--db', db])).toBe(0);
    expect(stdout()).toBe(`no places in ${db}: run meshcert discover first`);
    const after = await openStore({ kind: 'sqlite', path: db.slice('sqlite:'.length) });
    try {
      expect(await discoveredExpiring(after, new Date(), 30 * 86_400)).toEqual([]);
      expect(await after.count()).toBe(1);
    } finally {
      await after.close();
    }
  });
});

describe('loadKubeConfig without --kubeconfig', () => {
  it.skipIf(existsSync('/var/run/secrets/kubernetes.io/serviceaccount/token'))('says no credentials were found, not the library\'s refusal of its http://localhost:8080 fallback', () => {
    const home = mkdtempSync(join(tmpdir(), 'meshcert-nokube-'));
    const saved = { HOME: process.env.HOME, KUBECONFIG: process.env.KUBECONFIG };
    try {
      process.env.HOME = home;
      delete process.env.KUBECONFIG;
      expect(() => loadKubeConfig()).toThrow('none found (no KUBECONFIG, no ~/.kube/config, not in a pod with a service account): pass --kubeconfig FILE');
      // A ~/.kube/config is used as before.
      mkdirSync(join(home, '.kube'));
      writeFileSync(join(home, '.kube', 'config'), ['apiVersion: v1', 'kind: Config', 'clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443"}}]', 'users: [{name: u, user: {token: t}}]', 'contexts: [{name: x, context: {cluster: c, user: u}}]', 'current-context: x', ''].join('\n'));
      expect(loadKubeConfig().getCurrentCluster()?.server).toBe('https://127.0.0.1:6443');
    } finally {
      for (const [k, v] of Object.entries(saved)) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
      rmSync(home, { recursive: true, force: true });
    }
  });
});
