import { generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { caBundleProblem, parsePemBundle, pemBlocks, splitPemCertificates } from '../../../src/x509/pem.js';

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

describe('caBundleProblem', () => {
  it('passes a bundle of certificates, each BEGIN and END line on a line of its own (LF or CRLF, text between them allowed)', async () => {
    const pem = await selfSigned('CN=bundle one');
    const other = await selfSigned('CN=bundle two');
    expect(caBundleProblem(`${pem}${other}`)).toBeUndefined();
    expect(caBundleProblem(`# cluster CA\r\n${pem.replaceAll('\n', '\r\n')}\r\n${other.trimEnd()}`)).toBeUndefined();
    // OpenSSL strips blanks at the end of a line, skips a byte-order mark, blocks of other kinds and stray END lines.
    expect(caBundleProblem(`\uFEFF${pem}${block('PRIVATE KEY', 'S0VZ\n')}-----END SOMETHING-----\n${other}`)).toBeUndefined();
    expect(caBundleProblem(`${pem.trimEnd()}${' '.repeat(300)}\n${other}`)).toBeUndefined();
    expect(caBundleProblem(`${pem.replace('-----\n', '----- \t\n')}${other.trimEnd()}  `)).toBeUndefined();
  });

  it('says why TLS would trust nothing or too little: no certificate, one that does not parse, a BEGIN or END line sharing its line (OpenSSL skips that certificate)', async () => {
    const pem = await selfSigned('CN=bundle one');
    const other = await selfSigned('CN=bundle two');
    expect(caBundleProblem('')).toBe('holds no PEM certificate');
    expect(caBundleProblem(block('PRIVATE KEY'))).toBe('holds no PEM certificate');
    expect(caBundleProblem(block('CERTIFICATE'))).toMatch(/^a CERTIFICATE block does not parse: /);
    // cat of a file without a final newline and the next one.
    expect(caBundleProblem(`${pem.trimEnd()}${other}`)).toBe(`line ${pem.trimEnd().split("\n").length}: "-----END CERTIFICATE-----" shares its line with other text, and OpenSSL would skip the certificate; put it on a line of its own`);
    expect(caBundleProblem(`${pem}${other.trimEnd()} x\n`)).toMatch(/^line \d+: "-----END CERTIFICATE-----" shares its line/);
    expect(caBundleProblem(`x ${pem}`)).toMatch(/^line 1: "-----BEGIN CERTIFICATE-----" shares its line/);
    // Blocks OpenSSL cannot read stop it before the certificates after them.
    expect(caBundleProblem(`${pem}-----BEGIN COMMENT-----\nnot base64 !!\n-----END COMMENT-----\n${other}`)).toMatch(/^line \d+: the COMMENT block is not base64: OpenSSL stops reading there/);
    expect(caBundleProblem(`${pem}-----BEGIN FOO-----\nQUJD\n-----END BAR-----\n${other}`)).toMatch(/^a BEGIN line has no matching END line/);
    // Indented: OpenSSL does not strip a line's leading blanks.
    expect(caBundleProblem(`${pem}  ${other}`)).toMatch(/^line \d+: "-----BEGIN CERTIFICATE-----" shares its line/);
  });
});

async function selfSigned(name: string): Promise<string> {
  const { x509 } = await import('../../fixtures/csr.js');
  const keys = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({ serialNumber: '01', name, keys, signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } });
  return cert.toString('pem') + '\n';
}
