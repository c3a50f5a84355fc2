import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadCaDir } from '../../../src/ca/material.js';
import { renewIntermediate } from '../../../src/ca/rotate.js';
import { issuerAndSubjectDer } from '../../../src/x509/names.js';

const dir = mkdtempSync(join(tmpdir(), 'meshcert-names-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const sh = (args: string[], cwd: string) => execFileSync('openssl', args, { cwd, stdio: 'ignore' });

/** An Istio-Makefile-style CA made by openssl: names are UTF8String. */
function opensslCa(d: string, interSubjectUtf8 = true): void {
  sh(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'root-key.pem', '-out', 'root-cert.pem', '-subj', '/O=Istio/CN=Root CA', '-days', '3650', '-addext', 'basicConstraints=critical,CA:true', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], d);
  sh(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca-key.pem', '-out', 'ca.csr', '-subj', '/O=Istio/CN=Intermediate CA', ...(interSubjectUtf8 ? [] : [])], d);
  writeFileSync(join(d, 'ext.cnf'), 'basicConstraints=critical,CA:true,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign,digitalSignature\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n');
  sh(['x509', '-req', '-in', 'ca.csr', '-CA', 'root-cert.pem', '-CAkey', 'root-key.pem', '-CAcreateserial', '-out', 'ca-cert.pem', '-days', '365', '-extfile', 'ext.cnf'], d);
  writeFileSync(join(d, 'cert-chain.pem'), readFileSync(join(d, 'ca-cert.pem'), 'utf8') + readFileSync(join(d, 'root-cert.pem'), 'utf8'));
}

describe('issuer names are copied byte for byte (Go and ztunnel chain by bytes)', () => {
  it('reads issuer and subject DER of a certificate', () => {
    const d = join(dir, 'a');
    execFileSync('mkdir', ['-p', d]);
    opensslCa(d);
    const inter = new X509Certificate(readFileSync(join(d, 'ca-cert.pem')));
    const root = new X509Certificate(readFileSync(join(d, 'root-cert.pem')));
    expect(issuerAndSubjectDer(inter.raw).issuer.equals(issuerAndSubjectDer(root.raw).subject)).toBe(true);
    expect(issuerAndSubjectDer(root.raw).issuer.equals(issuerAndSubjectDer(root.raw).subject)).toBe(true);
  });

  it('renews an intermediate under an openssl-made (UTF8String) root with the root subject bytes as issuer', async () => {
    const d = join(dir, 'b');
    execFileSync('mkdir', ['-p', d]);
    opensslCa(d);
    await renewIntermediate({ dir: d });
    const inter = new X509Certificate(readFileSync(join(d, 'ca-cert.pem')));
    const root = new X509Certificate(readFileSync(join(d, 'root-cert.pem')));
    expect(issuerAndSubjectDer(inter.raw).issuer.equals(issuerAndSubjectDer(root.raw).subject)).toBe(true);
    expect(() => loadCaDir(d)).not.toThrow();
  });
});
