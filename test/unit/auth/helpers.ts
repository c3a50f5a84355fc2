/** Test fixtures for the auth tests: a loopback JWKS server, signed tokens, loopback TLS material. */
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as x509 from '@peculiar/x509';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import type { CryptoKey, JWK, JWTPayload } from 'jose';

x509.cryptoProvider.set(webcrypto as never);

export const ISSUER = 'https://kubernetes.default.svc.cluster.local';
export const TRUST_DOMAIN = 'cluster.local';

export interface SigningKey {
  readonly kid: string;
  readonly alg: 'RS256' | 'ES256';
  readonly privateKey: CryptoKey;
  readonly jwk: JWK;
}

export async function signingKey(alg: 'RS256' | 'ES256', kid: string): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  const jwk = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' };
  return { kid, alg, privateKey, jwk };
}

/** Claims of a real Kubernetes projected service-account token (1.21+). */
export function k8sClaims(ns = 'default', sa = 'sleep', extra: JWTPayload = {}): JWTPayload {
  return {
    sub: `system:serviceaccount:${ns}:${sa}`,
    'kubernetes.io': {
      namespace: ns,
      serviceaccount: { name: sa, uid: '6a3b8f3e-0000-4000-8000-000000000001' },
      pod: { name: `${sa}-7d9c9f8b6-abcde`, uid: '6a3b8f3e-0000-4000-8000-000000000002' },
      node: { name: 'worker-1', uid: '6a3b8f3e-0000-4000-8000-000000000003' },
    },
    ...extra,
  };
}

export interface TokenOptions {
  iss?: string;
  aud?: string | string[];
  /** Seconds from now (negative = past). Undefined = 1h; null = no exp claim. */
  expIn?: number | null;
  nbfIn?: number;
  iatIn?: number;
  /** null: no `kid` in the header. */
  kid?: string | null;
}

export async function signToken(key: SigningKey, claims: JWTPayload, o: TokenOptions = {}): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const jwt = new SignJWT(claims)
    .setProtectedHeader({ alg: key.alg, ...(o.kid === null ? {} : { kid: o.kid ?? key.kid }) })
    .setIssuer(o.iss ?? ISSUER)
    .setAudience(o.aud ?? ['istio-ca'])
    .setIssuedAt(now + (o.iatIn ?? 0));
  if (o.expIn !== null) jwt.setExpirationTime(now + (o.expIn ?? 3600));
  if (o.nbfIn !== undefined) jwt.setNotBefore(now + o.nbfIn);
  return jwt.sign(key.privateKey);
}

export function b64url(v: unknown): string {
  return Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');
}

/** A JWKS endpoint on 127.0.0.1 counting its hits; `keys` can be swapped and the server stopped. */
export class JwksServer {
  hits = 0;
  keys: JWK[];
  status = 200;
  private server: http.Server | undefined;
  url = '';

  constructor(keys: JWK[]) {
    this.keys = keys;
  }

  async start(port = 0): Promise<this> {
    this.server = http.createServer((req, res) => {
      this.hits++;
      if (req.url !== '/jwks') {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(this.status, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: this.keys }));
    });
    await new Promise<void>((resolve) => this.server?.listen(port, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/jwks`;
    return this;
  }

  async stop(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (!s) return;
    s.closeAllConnections();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }
}

/** A port on 127.0.0.1 that nothing listens on (bound then released). */
export async function closedPort(): Promise<number> {
  const s = http.createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

// ---------------------------------------------------------------------------------------------
// X.509 material

const EC = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

export interface TestCert {
  readonly cert: x509.X509Certificate;
  readonly keys: CryptoKeyPairLike;
  readonly der: Buffer;
  readonly pem: string;
  keyPem(): Promise<string>;
}

type CryptoKeyPairLike = { privateKey: CryptoKey; publicKey: CryptoKey };

async function ecKeys(): Promise<CryptoKeyPairLike> {
  return (await webcrypto.subtle.generateKey(EC, true, ['sign', 'verify'])) as unknown as CryptoKeyPairLike;
}

let serial = 1;

export interface CertSpec {
  name: string;
  issuer?: TestCert;
  ca?: boolean;
  notBefore?: Date;
  notAfter?: Date;
  uris?: string[];
  ips?: string[];
  eku?: string[];
  /** false: no keyUsage extension on a non-CA certificate (X.509 lets one leave it out). */
  keyUsage?: boolean;
}

export async function makeCert(spec: CertSpec): Promise<TestCert> {
  const keys = await ecKeys();
  const extensions: x509.Extension[] = [new x509.BasicConstraintsExtension(spec.ca === true, undefined, true)];
  if (spec.ca) {
    extensions.push(new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature, true));
  } else {
    if (spec.keyUsage !== false) extensions.push(new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true));
    extensions.push(new x509.ExtendedKeyUsageExtension(spec.eku ?? ['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2']));
  }
  const sans: x509.JsonGeneralName[] = [
    ...(spec.uris ?? []).map((value) => ({ type: 'url' as const, value })),
    ...(spec.ips ?? []).map((value) => ({ type: 'ip' as const, value })),
  ];
  if (sans.length) extensions.push(new x509.SubjectAlternativeNameExtension(sans, true));
  extensions.push(await x509.SubjectKeyIdentifierExtension.create(keys.publicKey as never));
  if (spec.issuer) extensions.push(await x509.AuthorityKeyIdentifierExtension.create(spec.issuer.cert));

  const notBefore = spec.notBefore ?? new Date(Date.now() - 60_000);
  const notAfter = spec.notAfter ?? new Date(Date.now() + 3_600_000);
  const common = {
    serialNumber: (serial++).toString(16).padStart(2, '0'),
    notBefore,
    notAfter,
    signingAlgorithm: EC,
    extensions,
  };
  const cert = spec.issuer
    ? await x509.X509CertificateGenerator.create({
        ...common,
        subject: `CN=${spec.name}`,
        issuer: spec.issuer.cert.subject,
        publicKey: keys.publicKey as never,
        signingKey: spec.issuer.keys.privateKey as never,
      })
    : await x509.X509CertificateGenerator.createSelfSigned({ ...common, name: `CN=${spec.name}`, keys: keys as never });
  const der = Buffer.from(cert.rawData);
  return {
    cert,
    keys,
    der,
    pem: cert.toString('pem'),
    async keyPem() {
      const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey as never));
      return `-----BEGIN PRIVATE KEY-----\n${pkcs8.toString('base64').replace(/(.{64})/g, '$1\n')}\n-----END PRIVATE KEY-----\n`;
    },
  };
}
