import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { x509 } from '../../fixtures/csr.js';
import { pathConstraintProblems, type PathCert } from '../../../src/x509/path-constraints.js';
import { caCert, leafCert, nameConstraints, type CaNode as Node } from '../../support/constrained-ca.js';

const URI = 'spiffe://cluster.local/ns/a/sa/b';

let dir: string;
let root: Node;
let n = 0;

const ca = caCert;
const leaf = (parent: Node): Promise<x509.X509Certificate> => leafCert(parent, { uris: [URI] });
const uriConstraints = (permitted: string[], excluded: string[] = []): x509.Extension => nameConstraints({ uri: permitted }, { uri: excluded });

/** Our verdict on leaf ← chain (signing CA first) ← root, and openssl's. */
async function judge(chain: Node[]): Promise<{ problems: string[]; openssl: string }> {
  const l = await leaf(chain[0]!);
  const path: PathCert[] = [l, ...chain.map((c) => c.cert), root.cert].map((c) => ({ der: new Uint8Array(c.rawData), name: c.subject }));
  const d = join(dir, `case-${++n}`);
  writeFileSync(`${d}-root.pem`, root.cert.toString('pem'));
  writeFileSync(`${d}-chain.pem`, chain.map((c) => c.cert.toString('pem')).join('\n'));
  writeFileSync(`${d}-leaf.pem`, l.toString('pem'));
  let openssl: string;
  try {
    openssl = execFileSync('openssl', ['verify', '-purpose', 'sslclient', '-CAfile', `${d}-root.pem`, '-untrusted', `${d}-chain.pem`, `${d}-leaf.pem`], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    openssl = `${(e as { stdout?: string }).stdout ?? ''}${(e as { stderr?: string }).stderr ?? ''}`;
  }
  return { problems: pathConstraintProblems(path, { uris: [URI] }), openssl };
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'meshcert-path-'));
  root = await ca(undefined, 'CN=root');
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('pathConstraintProblems agrees with openssl verify', () => {
  it('accepts a plain two-level chain and a three-level chain within the path lengths', async () => {
    const signing = await ca(root, 'CN=signing', [], 0);
    expect(await judge([signing])).toMatchObject({ problems: [], openssl: expect.stringMatching(/: OK/) });
    const mid = await ca(root, 'CN=mid', [], 1);
    const low = await ca(mid, 'CN=low', [], 0);
    expect(await judge([low, mid])).toMatchObject({ problems: [], openssl: expect.stringMatching(/: OK/) });
  });

  it('refuses an intermediate whose pathLenConstraint 0 has a CA below it', async () => {
    const mid = await ca(root, 'CN=mid0', [], 0);
    const low = await ca(mid, 'CN=low0', [], 0);
    const { problems, openssl } = await judge([low, mid]);
    expect(problems).toEqual(['"CN=mid0" allows 0 CA certificate(s) below it (pathLenConstraint) but the chain has 1']);
    expect(openssl).toMatch(/path length constraint exceeded/);
  });

  it('counts the root too: a root with pathLenConstraint 0 over two CAs', async () => {
    const tightRoot = await ca(undefined, 'CN=tight root', [], 0);
    const saved = root;
    root = tightRoot;
    try {
      const mid = await ca(tightRoot, 'CN=mid under tight', [], 1);
      const low = await ca(mid, 'CN=low under tight', [], 0);
      const { problems, openssl } = await judge([low, mid]);
      expect(problems).toEqual(['"CN=tight root" allows 0 CA certificate(s) below it (pathLenConstraint) but the chain has 2']);
      expect(openssl).toMatch(/path length constraint exceeded/);
    } finally {
      root = saved;
    }
  });

  it('refuses a CA with the same extension twice, a certificate Go refuses to parse', async () => {
    const twice = uriConstraints(['spiffe://cluster.local']);
    const signing = await ca(root, 'CN=twice', [twice, twice], 0);
    await expect(judge([signing])).rejects.toThrow(/"CN=twice": a certificate with the same extension twice/);
  });

  it('refuses a CA whose extended key usage lacks clientAuth or serverAuth, or has only one of them', async () => {
    const codeSigning = await ca(root, 'CN=code signing', [new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.codeSigning])], 0);
    const { problems, openssl } = await judge([codeSigning]);
    expect(problems).toEqual(['"CN=code signing" has an extended key usage without serverAuth and clientAuth, so the mesh\'s mTLS certificates below it are refused']);
    expect(openssl).toMatch(/unsuitable certificate purpose/);
    // One of the two is not enough: the mesh's certificates are client and server certificates alike.
    const serverOnly = await ca(root, 'CN=server only', [new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth])], 0);
    const judged = await judge([serverOnly]);
    expect(judged.problems).toEqual(['"CN=server only" has an extended key usage without serverAuth and clientAuth, so the mesh\'s mTLS certificates below it are refused']);
    expect(judged.openssl).toMatch(/unsuitable certificate purpose/);
  });

  it('accepts a CA whose extended key usage has both (anyExtendedKeyUsage beside them or not), and refuses one with only anyExtendedKeyUsage, which Go accepts and OpenSSL refuses', async () => {
    const both = await ca(root, 'CN=both', [new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth])], 0);
    expect(await judge([both])).toMatchObject({ problems: [], openssl: expect.stringMatching(/: OK/) });
    const bothAndAny = await ca(root, 'CN=both and any', [new x509.ExtendedKeyUsageExtension(['2.5.29.37.0', x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth])], 0);
    expect(await judge([bothAndAny])).toMatchObject({ problems: [], openssl: expect.stringMatching(/: OK/) });
    const any = await ca(root, 'CN=any', [new x509.ExtendedKeyUsageExtension(['2.5.29.37.0'])], 0);
    const judged = await judge([any]);
    expect(judged.problems).toEqual([
      '"CN=any" has anyExtendedKeyUsage as its only extended key usage: Go accepts the mesh\'s mTLS certificates below it, but OpenSSL, BoringSSL (Envoy\'s) and rustls-webpki refuse them; it needs serverAuth and clientAuth',
    ]);
    expect(judged.openssl).toMatch(/unsuitable certificate purpose/);
  });

  it('refuses name constraints that do not permit the trust domain', async () => {
    const other = await ca(root, 'CN=other domain', [uriConstraints(['example.org'])], 0);
    const { problems, openssl } = await judge([other]);
    expect(problems).toEqual([`"CN=other domain" has name constraints that exclude ${URI} (permitted only: "example.org")`]);
    expect(openssl).toMatch(/permitted subtree violation/);
  });

  it('refuses name constraints that exclude the trust domain', async () => {
    const excluded = await ca(root, 'CN=excluding', [uriConstraints([], ['cluster.local'])], 0);
    const { problems, openssl } = await judge([excluded]);
    expect(problems).toEqual([`"CN=excluding" has name constraints that exclude ${URI} (excluded: "cluster.local")`]);
    expect(openssl).toMatch(/excluded subtree violation/);
  });

  it('accepts name constraints that permit the trust domain; ".domain" permits subdomains only', async () => {
    const exact = await ca(root, 'CN=exact', [uriConstraints(['cluster.local'])], 0);
    expect(await judge([exact])).toMatchObject({ problems: [], openssl: expect.stringMatching(/: OK/) });
    const sub = await ca(root, 'CN=subdomains', [uriConstraints(['.local'])], 0);
    expect(await judge([sub])).toMatchObject({ problems: [], openssl: expect.stringMatching(/: OK/) });
    const self = await ca(root, 'CN=subdomains of td', [uriConstraints(['.cluster.local'])], 0);
    const { problems, openssl } = await judge([self]);
    expect(problems).toEqual([`"CN=subdomains of td" has name constraints that exclude ${URI} (permitted only: ".cluster.local")`]);
    expect(openssl).toMatch(/permitted subtree violation/);
  });
});
