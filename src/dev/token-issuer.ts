import { createPrivateKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { exportJWK, SignJWT } from 'jose';
import { writeFileAtomic, writePrivateKey } from '../ca/files.js';
import { ConfigError } from '../errors/ca-error.js';
import { accessProblem, MAX_PEM_BYTES, readTextFile } from '../fs/read-file.js';

/**
 * Development only: a local token issuer so a newcomer can see meshcert work without a cluster.
 * It writes a signing key (0600) and its JWKS under <dataDir>/dev; the server trusts that JWKS
 * only when `dev.tokenIssuer` is on, which the production default never is.
 */
export const DEV_ISSUER = 'https://meshcert.dev.invalid';
export const DEV_KID = 'meshcert-dev-1';

export interface DevIssuerFiles {
  readonly issuer: string;
  readonly jwksFile: string;
  readonly keyFile: string;
}

export function devIssuerPaths(dataDir: string): DevIssuerFiles {
  const dir = join(dataDir, 'dev');
  return { issuer: DEV_ISSUER, jwksFile: join(dir, 'jwks.json'), keyFile: join(dir, 'token-signing-key.pem') };
}

/** Creates the dev issuer's key and JWKS on first use; returns their paths. */
export async function ensureDevIssuer(dataDir: string): Promise<DevIssuerFiles> {
  const files = devIssuerPaths(dataDir);
  if (!existsSync(files.keyFile) || !existsSync(files.jwksFile)) {
    // RS256, as Kubernetes signs service-account tokens.
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    writePrivateKey(files.keyFile, privateKey.export({ type: 'pkcs8', format: 'pem' }).toString());
    const jwk = { ...(await exportJWK(publicKey)), kid: DEV_KID, alg: 'RS256', use: 'sig' };
    writeFileAtomic(files.jwksFile, `${JSON.stringify({ keys: [jwk] }, null, 2)}\n`);
  }
  return files;
}

export interface DevTokenClaims {
  readonly namespace: string;
  readonly serviceAccount: string;
  readonly audience?: string;
  readonly ttlSeconds?: number;
  readonly pod?: { name: string; uid: string };
  readonly node?: { name: string; uid: string };
}

/** Whether `serve --dev` has created its token issuer under `dataDir`. */
export function hasDevIssuer(dataDir: string): boolean {
  return existsSync(devIssuerPaths(dataDir).keyFile);
}

/** Mints a token shaped like a projected Kubernetes service-account token. */
export async function mintDevToken(dataDir: string, c: DevTokenClaims): Promise<string> {
  const files = devIssuerPaths(dataDir);
  if (!existsSync(files.keyFile)) throw new Error(`no dev token issuer under ${dataDir}: start "meshcert serve --dev" first`);
  let key: KeyObject;
  try {
    key = createPrivateKey(readTextFile(files.keyFile, MAX_PEM_BYTES));
  } catch (e) {
    // Named, with what is wrong (OpenSSL's decoder error alone says neither), never the key's text.
    const problem = (e as { library?: unknown }).library === undefined ? accessProblem(e) : 'not a PEM private key';
    throw new ConfigError(`the dev token issuer's signing key ${files.keyFile} cannot be used: ${problem} (remove ${join(dataDir, 'dev')} and start "meshcert serve --dev" again to make a new one)`);
  }
  const k8s: Record<string, unknown> = {
    namespace: c.namespace,
    serviceaccount: { name: c.serviceAccount, uid: '00000000-0000-4000-8000-000000000000' },
    ...(c.pod ? { pod: c.pod } : {}),
    ...(c.node ? { node: c.node } : {}),
  };
  return new SignJWT({ 'kubernetes.io': k8s })
    .setProtectedHeader({ alg: 'RS256', kid: DEV_KID, typ: 'JWT' })
    .setIssuer(DEV_ISSUER)
    .setSubject(`system:serviceaccount:${c.namespace}:${c.serviceAccount}`)
    .setAudience(c.audience ?? 'istio-ca')
    .setIssuedAt()
    .setNotBefore('0s')
    .setExpirationTime(`${c.ttlSeconds ?? 3600}s`)
    .sign(key);
}
