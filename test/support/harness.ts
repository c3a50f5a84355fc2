/**
 * Starts the real server (startMeshcert) on 127.0.0.1:0 with TLS, a CA created in a temp dir and
 * a test JWKS, and hands tests an istio-agent-shaped client. Tokens are minted with real keys.
 */
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { exportJWK, SignJWT } from 'jose';
import { CaClient, type CreateCertificateArgs } from '../../src/client/ca-client.js';
import { parseConfig } from '../../src/config/load.js';
import type { ConfigInput, MeshcertConfig } from '../../src/config/schema.js';
import { createLogger } from '../../src/log/logger.js';
import { startMeshcert, type RunningMeshcert, type StartOptions } from '../../src/main.js';
import type { IssuanceObserver } from '../../src/grpc/certificate-service.js';

export const TEST_ISSUER = 'https://issuer.meshcert.test';
export const TRUST_DOMAIN = 'cluster.local';

export interface TokenOptions {
  ns?: string;
  sa?: string;
  aud?: string | string[];
  iss?: string;
  /** Seconds from now; negative for an expired token. */
  expiresIn?: number;
  notBeforeIn?: number;
  alg?: 'RS256' | 'ES256';
  /** Sign with a key the server does not know. */
  foreignKey?: boolean;
  claims?: Record<string, unknown>;
}

const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const foreign = generateKeyPairSync('rsa', { modulusLength: 2048 });

export async function mintToken(o: TokenOptions = {}): Promise<string> {
  const alg = o.alg ?? 'RS256';
  const key: KeyObject = o.foreignKey ? foreign.privateKey : alg === 'RS256' ? rsa.privateKey : ec.privateKey;
  const kid = o.foreignKey ? 'rsa-1' : alg === 'RS256' ? 'rsa-1' : 'ec-1';
  const now = Math.floor(Date.now() / 1000);
  const ns = o.ns ?? 'default';
  const sa = o.sa ?? 'default';
  return new SignJWT({ 'kubernetes.io': { namespace: ns, serviceaccount: { name: sa, uid: 'u-1' } }, ...o.claims })
    .setProtectedHeader({ alg, kid, typ: 'JWT' })
    .setIssuer(o.iss ?? TEST_ISSUER)
    .setSubject(`system:serviceaccount:${ns}:${sa}`)
    .setAudience(o.aud ?? 'istio-ca')
    .setIssuedAt(now - 5)
    .setNotBefore(now + (o.notBeforeIn ?? -5))
    .setExpirationTime(now + (o.expiresIn ?? 3600))
    .sign(key);
}

/**
 * A `serve` config file's text for tests: loopback ports, a CA made at first start, JWT from
 * TEST_ISSUER verified with the jwks.json beside the file (see writeTestJwks); `extra` is
 * appended as is (policy, kubernetes, ...).
 */
export function serveConfigYaml(o: { workers: number; inventory?: boolean; extra?: string }): string {
  return `dataDir: data
server: { listen: "127.0.0.1:0", workers: ${o.workers} }
admin: { listen: "127.0.0.1:0" }
${o.inventory === false ? 'inventory: { store: none }\n' : ''}ca: { autoInit: true }
auth:
  clusters:
    - name: Kubernetes
      jwt: [{ issuer: "${TEST_ISSUER}", jwksFile: jwks.json }]
${o.extra ?? ''}`;
}

/** Writes the JWKS that verifies mintToken()'s tokens. */
export async function writeTestJwks(path: string): Promise<void> {
  const keys = [
    { ...(await exportJWK(rsa.publicKey)), kid: 'rsa-1', alg: 'RS256', use: 'sig' },
    { ...(await exportJWK(ec.publicKey)), kid: 'ec-1', alg: 'ES256', use: 'sig' },
  ];
  writeFileSync(path, JSON.stringify({ keys }));
}

/**
 * A fresh temporary directory for `meshcert serve --config <config>`: the test JWKS (jwks.json)
 * beside `yaml` written as meshcert.yaml. The caller removes `dir`.
 */
export async function writeServeDir(prefix: string, yaml: string): Promise<{ dir: string; config: string }> {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  try {
    await writeTestJwks(join(dir, 'jwks.json'));
    const config = join(dir, 'meshcert.yaml');
    writeFileSync(config, yaml);
    return { dir, config };
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
}

export interface TestCa {
  readonly running: RunningMeshcert;
  /** The config it started with (a test reloads a changed copy). */
  readonly config: MeshcertConfig;
  readonly port: number;
  readonly address: string;
  readonly dir: string;
  readonly rootPem: string;
  /** Everything the server logged, one JSON object per line. */
  readonly logs: () => string;
  client(extra?: { clientCert?: { certPem: string; keyPem: string } }): CaClient;
  request(args: CreateCertificateArgs): Promise<string[]>;
  close(): Promise<void>;
}

/** `start`: more of startMeshcert's options (metrics to read, a memory-pressure listener, an inventory sink). */
export async function startTestCa(overrides: ConfigInput = {}, observer?: IssuanceObserver, start: Pick<StartOptions, 'metrics' | 'onMemoryPressure' | 'sink' | 'maxConcurrentStreams'> = {}): Promise<TestCa> {
  const dir = mkdtempSync(join(tmpdir(), 'meshcert-test-'));
  const jwksFile = join(dir, 'jwks.json');
  await writeTestJwks(jwksFile);
  const base: ConfigInput = {
    dataDir: dir,
    trustDomain: TRUST_DOMAIN,
    server: { listen: '127.0.0.1:0', shutdownGrace: '5s' },
    ca: { autoInit: true },
    auth: { clusters: [{ name: 'Kubernetes', jwt: [{ issuer: TEST_ISSUER, jwksFile }] }] },
  };
  const config = parseConfig(merge(base, overrides), {}, 'test', dir);
  let logText = '';
  const sink = new Writable({
    write(chunk, _enc, cb) {
      logText += chunk.toString();
      cb();
    },
  });
  const running = await startMeshcert(config, { logger: createLogger('info', sink), ...(observer ? { observer } : {}), ...start });
  const address = `127.0.0.1:${running.port}`;
  const rootPem = readFileSync(join(config.ca.dir!, 'root-cert.pem'), 'utf8');
  const clients: CaClient[] = [];
  const ca: TestCa = {
    running,
    config,
    port: running.port,
    address,
    dir,
    rootPem,
    logs: () => logText,
    client(extra) {
      const c = new CaClient({ address, rootPem, ...extra });
      clients.push(c);
      return c;
    },
    async request(args) {
      const c = clients[0] ?? ca.client();
      return c.createCertificate(args);
    },
    async close() {
      clients.forEach((c) => c.close());
      await running.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return ca;
}

function merge(a: Record<string, unknown>, b: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...a };
  for (const [k, v] of Object.entries(b)) {
    const cur = out[k];
    out[k] = isPlainObject(cur) && isPlainObject(v) ? merge(cur, v) : v;
  }
  return out;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Runs the openssl CLI with inputs written to a temp dir; returns stdout (throws on non-zero exit). */
export function openssl(args: string[], files: Record<string, string> = {}): string {
  const dir = mkdtempSync(join(tmpdir(), 'meshcert-openssl-'));
  try {
    for (const [name, content] of Object.entries(files)) writeFileSync(join(dir, name), content);
    return execFileSync('openssl', args, { cwd: dir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
