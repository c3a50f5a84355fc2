import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hasOpenssl } from '../../fixtures/csr.js';
import { recordProblem } from '../../../src/inventory/common.js';
import { formatSerial, recordFromCertificate } from '../../../src/inventory/record-from-cert.js';
import { DAY, makeTestCert } from '../discovery/helpers.js';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'meshcert-rfc-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function openssl(args: string[]): string {
  return execFileSync('openssl', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** A self-signed certificate made by the openssl CLI, with the given key and extensions. */
function opensslCert(name: string, newkey: string[], opts: { subj?: string; serial?: string; addext?: string[] } = {}): X509Certificate {
  const cfg = join(dir, 'openssl.cnf');
  writeFileSync(cfg, '[req]\ndistinguished_name = dn\n[dn]\n');
  const certPath = join(dir, `${name}.pem`);
  const args = ['req', '-x509', '-config', cfg, ...newkey, '-nodes', '-keyout', join(dir, `${name}.key`), '-out', certPath, '-days', '30', '-subj', opts.subj ?? '/CN=openssl-test'];
  if (opts.serial) args.push('-set_serial', opts.serial);
  for (const e of opts.addext ?? []) args.push('-addext', e);
  openssl(args);
  return new X509Certificate(readFileSync(certPath));
}

describe('recordFromCertificate', () => {
  it('extracts the SPIFFE ID, namespace and service account of an Istio workload leaf', async () => {
    const ca = await makeTestCert({ ca: true, subject: 'O=cluster.local, CN=Intermediate' });
    const leaf = await makeTestCert({ issuer: ca, uris: ['spiffe://cluster.local/ns/shop/sa/checkout'] });
    const issuedAt = new Date();
    const r = recordFromCertificate(leaf.cert, { source: 'issued', issuer: 'default', now: issuedAt, cluster: 'Kubernetes', requester: 'spiffe://cluster.local/ns/shop/sa/checkout', policyRule: 'r1' });
    expect(r).toMatchObject({
      spiffeId: 'spiffe://cluster.local/ns/shop/sa/checkout',
      namespace: 'shop',
      serviceAccount: 'checkout',
      cluster: 'Kubernetes',
      issuer: 'default',
      issuedAt,
      requester: 'spiffe://cluster.local/ns/shop/sa/checkout',
      policyRule: 'r1',
      source: 'issued',
      subject: null,
      dnsNames: [],
      keyAlgorithm: 'ECDSA',
      keySize: 256,
    });
    expect(recordProblem(r)).toBeNull();
  });

  it('keeps a SPIFFE ID of another shape without namespace or service account', async () => {
    const leaf = await makeTestCert({ uris: ['https://example.com/x', 'spiffe://example.org/workload/db'], dns: ['db.example.org'] });
    const r = recordFromCertificate(leaf.cert, { source: 'discovered:test' });
    expect(r.spiffeId).toBe('spiffe://example.org/workload/db');
    expect(r.namespace).toBeNull();
    expect(r.serviceAccount).toBeNull();
    expect(r.dnsNames).toEqual(['db.example.org']);
  });

  it('recognizes a SPIFFE URI whose scheme is not lowercase (URI schemes are case-insensitive), as it was written', async () => {
    const leaf = await makeTestCert({ uris: ['https://example.com/x', 'SPIFFE://example.org/workload/db'] });
    expect(recordFromCertificate(leaf.cert, { source: 'discovered:test' }).spiffeId).toBe('SPIFFE://example.org/workload/db');
  });

  it('reads SANs from the DER, not from the display string (a comma inside a URI)', async () => {
    const leaf = await makeTestCert({ uris: ['spiffe://td/ns/a/sa/b', 'https://x.example/a, DNS:evil.example'], dns: ['good.example'] });
    const r = recordFromCertificate(leaf.cert, { source: 'discovered:test' });
    expect(r.dnsNames).toEqual(['good.example']);
    expect(r.spiffeId).toBe('spiffe://td/ns/a/sa/b');
  });

  it('defaults issuer to the issuer DN, issuedAt to notBefore, and fills the subject', async () => {
    const ca = await makeTestCert({ ca: true, subject: 'O=acme, CN=Acme CA' });
    const notBefore = new Date(Math.floor(Date.now() / 1000) * 1000 - DAY);
    const notAfter = new Date(notBefore.getTime() + 10 * DAY);
    const leaf = await makeTestCert({ issuer: ca, subject: 'CN=web.acme.test', dns: ['web.acme.test', 'www.acme.test'], notBefore, notAfter });
    const r = recordFromCertificate(leaf.cert, { source: 'discovered:file:/x.pem' });
    expect(r.issuer).toBe('O=acme, CN=Acme CA');
    expect(r.subject).toBe('CN=web.acme.test');
    expect(r.notBefore).toEqual(notBefore);
    expect(r.notAfter).toEqual(notAfter);
    expect(r.issuedAt).toEqual(notBefore);
    expect(r.spiffeId).toBeNull();
    expect(r.dnsNames).toEqual(['web.acme.test', 'www.acme.test']);
    expect(r.cluster).toBeNull();
    expect(r.requester).toBeNull();
    expect(r.policyRule).toBeNull();
  });

  it.each([
    ['rsa2048', 'RSA', 2048],
    ['ec256', 'ECDSA', 256],
    ['ec384', 'ECDSA', 384],
    ['ed25519', 'Ed25519', 256],
  ] as const)('reports key algorithm and size for %s', async (key, alg, size) => {
    const c = await makeTestCert({ key, subject: 'CN=k' });
    const r = recordFromCertificate(c.cert, { source: 'issued', issuer: 'default' });
    expect([r.keyAlgorithm, r.keySize]).toEqual([alg, size]);
  });

  it('formats serials as lowercase hex without leading zeros', async () => {
    expect(formatSerial(Uint8Array.from([0x00, 0xab, 0xcd]))).toBe('abcd');
    expect(formatSerial(Uint8Array.from([0x0f]))).toBe('f');
    expect(formatSerial(Uint8Array.from([0x00]))).toBe('0');
    const high = await makeTestCert({ serial: 'ff01', subject: 'CN=s' });
    expect(recordFromCertificate(high.cert, { source: 'issued', issuer: 'd' }).serial).toBe('ff01');
    const low = await makeTestCert({ serial: '0a0b', subject: 'CN=s' });
    expect(recordFromCertificate(low.cert, { source: 'issued', issuer: 'd' }).serial).toBe('a0b');
  });

  it('computes the SHA-256 fingerprint of the DER', async () => {
    const c = await makeTestCert({ subject: 'CN=fp' });
    const r = recordFromCertificate(c.cert, { source: 'issued', issuer: 'd' });
    expect(r.fingerprint).toBe(c.cert.fingerprint256.replace(/:/g, '').toLowerCase());
    expect(r.fingerprint).toMatch(/^[0-9a-f]{64}$/);
  });

  describe.skipIf(!hasOpenssl())('against the openssl CLI', () => {
    it('fingerprint equals openssl x509 -fingerprint -sha256 and serial equals openssl -serial', () => {
      const cert = opensslCert('fp', ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256'], { serial: '0x00c0ffee' });
      const path = join(dir, 'fp.pem');
      const fp = /Fingerprint=([0-9A-F:]+)/.exec(openssl(['x509', '-in', path, '-noout', '-fingerprint', '-sha256']))![1]!;
      const serial = /serial=([0-9A-F]+)/.exec(openssl(['x509', '-in', path, '-noout', '-serial']))![1]!;
      const r = recordFromCertificate(cert, { source: 'discovered:file:fp.pem' });
      expect(r.fingerprint).toBe(fp.replace(/:/g, '').toLowerCase());
      expect(r.serial).toBe(serial.toLowerCase().replace(/^0+/, ''));
      expect(r.serial).toBe('c0ffee');
    });

    it.each([
      ['rsa3072', ['-newkey', 'rsa:3072'], 'RSA', 3072],
      ['ec384', ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-384'], 'ECDSA', 384],
      ['ec521', ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-521'], 'ECDSA', 521],
      ['ed25519', ['-newkey', 'ed25519'], 'Ed25519', 256],
      // An Ed448 public key is 57 bytes (456 bits), as Go's inventory and openssl's "ED448 Public-Key" say.
      ['ed448', ['-newkey', 'ed448'], 'Ed448', 456],
    ] as const)('reads an openssl %s certificate with SPIFFE and DNS SANs', (name, newkey, alg, size) => {
      const cert = opensslCert(name, [...newkey], {
        subj: '/O=acme/CN=svc',
        addext: ['subjectAltName=URI:spiffe://cluster.local/ns/prod/sa/api,DNS:api.prod.svc,IP:10.1.2.3'],
      });
      const r = recordFromCertificate(cert, { source: 'discovered:test' });
      expect(r).toMatchObject({
        keyAlgorithm: alg,
        keySize: size,
        spiffeId: 'spiffe://cluster.local/ns/prod/sa/api',
        namespace: 'prod',
        serviceAccount: 'api',
        dnsNames: ['api.prod.svc'],
        subject: 'O=acme, CN=svc',
        issuer: 'O=acme, CN=svc',
      });
      expect(recordProblem(r)).toBeNull();
    });
  });
});
