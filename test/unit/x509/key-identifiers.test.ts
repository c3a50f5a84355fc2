import { execFileSync, spawnSync } from 'node:child_process';
import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { initCaDir } from '../../../src/ca/init.js';
import { loadCaDir, materialFromTexts } from '../../../src/ca/material.js';
import { LocalIssuer } from '../../../src/issuer/local.js';
import { missingKeyIdentifiers } from '../../../src/x509/key-identifiers.js';

const dir = mkdtempSync(join(tmpdir(), 'meshcert-keyid-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const openssl = (args: string[]): string => execFileSync('openssl', args, { cwd: dir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
/** `openssl verify`'s verdict (its output on success, the error lines on failure). */
function verify(args: string[]): string {
  const r = spawnSync('openssl', ['verify', ...args], { cwd: dir, encoding: 'utf8' });
  return `${r.stdout}${r.stderr}`.trim();
}

/** A CA made by openssl, with or without each key identifier (self-signed without `signer`). */
function opensslCa(name: string, o: { ski: boolean; aki: boolean; signer?: string }): void {
  const ext = [
    'basicConstraints=critical,CA:true',
    'keyUsage=critical,keyCertSign,cRLSign',
    `subjectKeyIdentifier=${o.ski ? 'hash' : 'none'}`,
    `authorityKeyIdentifier=${o.aki ? 'keyid:always' : 'none'}`,
  ];
  writeFileSync(join(dir, `${name}.ext`), ext.join('\n') + '\n');
  const key = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${name}-key.pem`, '-subj', `/O=keyid test/CN=${name}`];
  if (!o.signer) {
    openssl(['req', '-x509', ...key, '-out', `${name}.pem`, '-days', '30', ...ext.flatMap((e) => ['-addext', e])]);
  } else {
    openssl(['req', ...key, '-out', `${name}.csr`]);
    openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', `${o.signer}.pem`, '-CAkey', `${o.signer}-key.pem`, '-set_serial', '7', '-days', '20', '-extfile', `${name}.ext`, '-out', `${name}.pem`]);
  }
}

/** A leaf meshcert signs with `signer` (chain: `chain`, root last), written as leaf-NAME.pem. */
function meshcertLeaf(name: string, signer: string, chain: string, root: string): string {
  const text = (f: string): string => openssl(['x509', '-in', `${f}.pem`]);
  const material = materialFromTexts({
    cert: text(signer),
    key: openssl(['pkey', '-in', `${signer}-key.pem`]),
    chain: chain.split(',').map(text).join(''),
    root: text(root),
  });
  const spki = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'der' });
  const now = Date.now();
  const leaf = new LocalIssuer('t', material).sign({ spki, uris: ['spiffe://cluster.local/ns/a/sa/b'], notBefore: new Date(now - 60_000), notAfter: new Date(now + 3_600_000) });
  writeFileSync(join(dir, `leaf-${name}.pem`), leaf.pem);
  return `leaf-${name}.pem`;
}

const cert = (f: string): X509Certificate => new X509Certificate(openssl(['x509', '-in', `${f}.pem`]));

describe('missingKeyIdentifiers', () => {
  it('says nothing of a CA meshcert makes (both identifiers everywhere; strict openssl agrees)', async () => {
    const ca = join(dir, 'own');
    await initCaDir({ dir: ca });
    const m = loadCaDir(ca);
    expect(missingKeyIdentifiers([...m.intermediates, ...m.roots])).toEqual([]);
  });

  it('names a root without a SubjectKeyIdentifier, whose leaves openssl -x509_strict refuses', () => {
    opensslCa('bare-root', { ski: false, aki: false });
    const leaf = meshcertLeaf('bare', 'bare-root', 'bare-root', 'bare-root');
    expect(verify(['-CAfile', 'bare-root.pem', leaf])).toBe(`${leaf}: OK`);
    expect(verify(['-x509_strict', '-CAfile', 'bare-root.pem', leaf])).toMatch(/Missing Subject Key Identifier/);
    const notes = missingKeyIdentifiers([cert('bare-root')]);
    expect(notes).toHaveLength(1);
    expect(notes[0]).toMatch(/^CA certificate "O=keyid test, CN=bare-root" has no SubjectKeyIdentifier \(/);
    expect(notes[0]).not.toMatch(/AuthorityKeyIdentifier/); // a self-issued root needs none
  });

  it('names an intermediate without an AuthorityKeyIdentifier, and one certificate once', () => {
    opensslCa('good-root', { ski: true, aki: false });
    opensslCa('no-aki', { ski: true, aki: false, signer: 'good-root' });
    const leaf = meshcertLeaf('no-aki', 'no-aki', 'no-aki', 'good-root');
    expect(verify(['-CAfile', 'good-root.pem', '-untrusted', 'no-aki.pem', leaf])).toBe(`${leaf}: OK`);
    expect(verify(['-x509_strict', '-CAfile', 'good-root.pem', '-untrusted', 'no-aki.pem', leaf])).toMatch(/Missing Authority Key Identifier/);
    const notes = missingKeyIdentifiers([cert('no-aki'), cert('no-aki'), cert('good-root')]);
    expect(notes).toEqual([expect.stringMatching(/^CA certificate "O=keyid test, CN=no-aki" has no AuthorityKeyIdentifier \(/)]);
  });

  it('with both identifiers an openssl-made chain passes strict openssl and gets no note', () => {
    opensslCa('full', { ski: true, aki: true, signer: 'good-root' });
    const leaf = meshcertLeaf('full', 'full', 'full', 'good-root');
    expect(verify(['-x509_strict', '-CAfile', 'good-root.pem', '-untrusted', 'full.pem', leaf])).toBe(`${leaf}: OK`);
    expect(missingKeyIdentifiers([cert('full'), cert('good-root')])).toEqual([]);
  });
});
