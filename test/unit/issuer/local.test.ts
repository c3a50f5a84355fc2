/**
 * LocalIssuer's name-constraint checks over every path a client can build: roots re-issued with
 * the same name and key (a rotation) give a client more than one, and Go accepts a leaf when one
 * of them allows all its names. Checked against Go's crypto/x509 where Go is installed.
 */
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadCaDir } from '../../../src/ca/material.js';
import { LocalIssuer, NameConstraintError } from '../../../src/issuer/local.js';
import { x509 } from '../../fixtures/csr.js';
import { explicitTag, implicitPrimitive, sequence } from '../../../src/x509/der.js';
import { caCert, leafCert, nameConstraints, writeCaDir, type CaNode } from '../../support/constrained-ca.js';
import { buildGoVerifier, goVerifierUnavailable, type GoVerifier } from '../../support/go-verify.js';

const URI = 'spiffe://cluster.local/ns/a/sa/b';
const spki = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'der' });

const unavailable = goVerifierUnavailable();
let go: GoVerifier | undefined;
let base: string;
let n = 0;

beforeAll(async () => {
  base = mkdtempSync(join(tmpdir(), 'meshcert-issuer-'));
  if (!unavailable) go = await buildGoVerifier();
}, 300_000);
afterAll(() => {
  go?.remove();
  rmSync(base, { recursive: true, force: true });
});

async function issuerOf(roots: CaNode[], signing: CaNode, chain: CaNode[]): Promise<LocalIssuer> {
  const dir = join(base, `ca-${++n}`);
  await writeCaDir(dir, roots, signing, chain);
  return new LocalIssuer('default', loadCaDir(dir));
}

/** Go's verdict on a leaf with these names under `signing`, trusting `roots`. */
async function goAccepts(roots: CaNode[], signing: CaNode, intermediates: CaNode[], dnsNames: string[]): Promise<boolean | undefined> {
  if (!go) return undefined;
  const leaf = await leafCert(signing, { uris: [URI], dnsNames });
  const pem = (nodes: CaNode[]): string => nodes.map((c) => c.cert.toString('pem')).join('\n');
  return go.verify([{ root: pem(roots), intermediates: pem(intermediates), leaf: leaf.toString('pem') }])[0]!.ok;
}

describe('LocalIssuer.refusedNames with more than one path to a root', () => {
  it('judges each path whole, URIs included: one path allowing the DNS name and another the URI is no path', async () => {
    const keys = (await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify'])) as CryptoKeyPair;
    const rootA = await caCert(undefined, 'CN=twin root', [nameConstraints({ uri: ['cluster.local'], dns: ['a.example'] })], undefined, keys);
    const rootB = await caCert(undefined, 'CN=twin root', [nameConstraints({ uri: ['other.example'] })], undefined, keys);
    const inter = await caCert(rootA, 'CN=twin intermediate', [], 0);
    const issuer = await issuerOf([rootA, rootB], inter, [inter, rootA]);
    issuer.selfTest(spki, URI);
    expect(issuer.refusedNames({ uris: [URI], dnsNames: ['x.a.example'] })).toEqual([]);
    expect(await goAccepts([rootA, rootB], inter, [inter], ['x.a.example'])).not.toBe(false);
    // Root B's path allows b.example (no DNS constraint) but not the URI; root A's the reverse.
    expect(issuer.refusedNames({ uris: [URI], dnsNames: ['b.example'] })).toEqual(['"CN=twin root" has name constraints that exclude DNS name b.example (permitted only: "a.example")']);
    expect(await goAccepts([rootA, rootB], inter, [inter], ['b.example'])).not.toBe(true);
  });

  it('a self-signed signing CA is replaced by a root of the same name and key, as Go builds the path', async () => {
    const keys = (await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify'])) as CryptoKeyPair;
    const top = await caCert(undefined, 'CN=self-signed signer', [nameConstraints({ dns: ['a.example'] })], undefined, keys);
    const twin = await caCert(undefined, 'CN=self-signed signer', [], undefined, keys);
    const issuer = await issuerOf([top, twin], top, [top]);
    issuer.selfTest(spki, URI);
    expect(issuer.refusedNames({ uris: [URI], dnsNames: ['b.example'] })).toEqual([]);
    expect(await goAccepts([top, twin], top, [top], ['b.example'])).not.toBe(false);
    // With the constrained root alone, b.example is refused.
    const alone = await issuerOf([top], top, [top]);
    expect(alone.refusedNames({ uris: [URI], dnsNames: ['b.example'] })).toEqual(['"CN=self-signed signer" has name constraints that exclude DNS name b.example (permitted only: "a.example")']);
    expect(await goAccepts([top], top, [top], ['b.example'])).not.toBe(true);
  });

  it('reads the constraints of every path at load: a root Go cannot parse is refused by the self-test, not on each request', async () => {
    const keys = (await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify'])) as CryptoKeyPair;
    const good = await caCert(undefined, 'CN=twin root', [], undefined, keys);
    const badMask = new x509.Extension('2.5.29.30', true, new Uint8Array(sequence(explicitTag(0, sequence(implicitPrimitive(7, Buffer.from([10, 0, 0, 0, 255, 0, 255, 0])))))));
    const bad = await caCert(undefined, 'CN=twin root', [badMask], undefined, keys);
    const inter = await caCert(good, 'CN=twin intermediate', [], 0);
    const issuer = await issuerOf([good, bad], inter, [inter, good]);
    expect(() => issuer.selfTest(spki, URI)).toThrow(
      'issuer default: "CN=twin root" has name constraints Go\'s crypto/x509 cannot parse, so it refuses every chain through that CA: malformed name constraints: IP mask ff00ff00 is not a prefix',
    );
  });
});

describe('LocalIssuer.sign under name constraints: its own leaves, as Go and OpenSSL verify them', () => {
  it('signs DNS names and IP addresses (IPv4 and IPv6) the constraints allow into a leaf both accept, and refuses the others', async () => {
    const root = await caCert(undefined, 'CN=nc sign root');
    const inter = await caCert(root, 'CN=nc sign intermediate', [nameConstraints({ uri: ['cluster.local'], dns: ['.svc.example.com'], ip: ['10.0.0.0/8', 'fd00::/8'] })], 0);
    const issuer = await issuerOf([root], inter, [inter, root]);
    issuer.selfTest(spki, URI);
    const now = Date.now();
    const req = { spki, uris: [URI], notBefore: new Date(now - 60_000), notAfter: new Date(now + 3_600_000) };
    // An IPv4-mapped address is written as its 4 IPv4 octets, which the IPv4 range then covers.
    const leaf = issuer.sign({ ...req, dnsNames: ['api.web.svc.example.com'], ipAddresses: ['10.1.2.3', 'fd00::7', '::ffff:10.9.9.9'] });
    const files = { root: join(base, 'nc-sign-root.pem'), chain: join(base, 'nc-sign-chain.pem'), leaf: join(base, 'nc-sign-leaf.pem') };
    writeFileSync(files.root, root.cert.toString('pem'));
    writeFileSync(files.chain, inter.cert.toString('pem'));
    writeFileSync(files.leaf, leaf.pem);
    expect(execFileSync('openssl', ['verify', '-purpose', 'sslserver', '-CAfile', files.root, '-untrusted', files.chain, files.leaf], { encoding: 'utf8' })).toMatch(/: OK/);
    if (go) expect(go.verify([{ root: root.cert.toString('pem'), intermediates: inter.cert.toString('pem'), leaf: leaf.pem }])[0]).toEqual({ ok: true });
    for (const names of [{ dnsNames: ['api.example.com'] }, { ipAddresses: ['192.168.1.1'] }, { ipAddresses: ['fe80::1'] }]) {
      expect(() => issuer.sign({ ...req, ...names })).toThrow(NameConstraintError);
    }
  });
});
