import { generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { parsePemBundle, pemBlocks, splitPemCertificates } from '../../../src/x509/pem.js';

const block = (label: string, body = 'QUJD\n'): string => `-----BEGIN ${label}-----\n${body}-----END ${label}-----\n`;

describe('pemBlocks', () => {
  it('reads each block with its label, body and text, in order, ignoring text around them', () => {
    const text = `junk before\n${block('CERTIFICATE')}between\n${block('PRIVATE KEY', 'S0VZ\n')}${block('PKCS #7 SIGNED DATA')}after`;
    expect(pemBlocks(text)).toEqual([
      { label: 'CERTIFICATE', body: '\nQUJD\n', text: block('CERTIFICATE').trimEnd() },
      { label: 'PRIVATE KEY', body: '\nS0VZ\n', text: block('PRIVATE KEY', 'S0VZ\n').trimEnd() },
      { label: 'PKCS #7 SIGNED DATA', body: '\nQUJD\n', text: block('PKCS #7 SIGNED DATA').trimEnd() },
    ]);
  });

  it('takes no block from a BEGIN without its END, or whose next END names another label, and goes on with the next BEGIN', () => {
    expect(pemBlocks(`-----BEGIN CERTIFICATE-----\nQUJD\n${block('PRIVATE KEY')}`).map((b) => b.label)).toEqual(['PRIVATE KEY']);
    expect(pemBlocks(`-----BEGIN CERTIFICATE-----\nQUJD\n-----BEGIN CERTIFICATE-----\nQUJD\n`)).toEqual([]);
    expect(pemBlocks('-----BEGIN lowercase-----\nQUJD\n-----END lowercase-----\n')).toEqual([]);
    expect(pemBlocks(`-----BEGIN CERTIFICATE\n${block('CERTIFICATE')}`).map((b) => b.label)).toEqual(['CERTIFICATE']);
  });

  it('reads a text of many BEGIN lines without an END in linear time (a regex took minutes on 10 MB)', () => {
    // 200,000 BEGIN lines (5.6 MB) then one block: quadratic scanning would take hours here.
    const text = '-----BEGIN CERTIFICATE-----\n'.repeat(200_000) + block('PRIVATE KEY');
    expect(pemBlocks(text).map((b) => b.label)).toEqual(['PRIVATE KEY']);
    expect(pemBlocks('-----BEGIN CERTIFICATE-----\n'.repeat(200_000))).toEqual([]);
  });
});

describe('splitPemCertificates and parsePemBundle', () => {
  it('keep the certificates only, each normalised to end with one newline', async () => {
    const { x509 } = await import('../../fixtures/csr.js');
    const keys = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
    const cert = await x509.X509CertificateGenerator.createSelfSigned({ serialNumber: '01', name: 'CN=pem test', keys, signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } });
    const pem = cert.toString('pem');
    const key = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    const bundle = `${pem}\r\n\n${key}${pem}`;
    expect(splitPemCertificates(bundle)).toEqual([`${pem.trim()}\n`, `${pem.trim()}\n`]);
    expect(parsePemBundle(bundle).map((c) => c.subject)).toEqual(['CN=pem test', 'CN=pem test']);
  });
});
