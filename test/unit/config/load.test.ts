import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ENV_OVERRIDES, loadConfigFile, parseConfig } from '../../../src/config/load.js';
import type { ConfigInput, MeshcertConfig } from '../../../src/config/schema.js';
import { ConfigError } from '../../../src/errors/ca-error.js';

let dir: string;
let n = 0;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'meshcert-config-'));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** Writes `text` to a fresh file (optionally in a sub-directory) and returns its path. */
function configFile(text: string, sub = ''): string {
  const d = join(dir, sub);
  mkdirSync(d, { recursive: true });
  const path = join(d, `meshcert-${++n}.yaml`);
  writeFileSync(path, text);
  return path;
}

/** The ConfigError thrown by `fn` (fails the test when nothing or something else is thrown). */
function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return e as ConfigError;
  }
  throw new Error('expected a ConfigError, but nothing was thrown');
}

const parse = (input: unknown, env: NodeJS.ProcessEnv = {}): MeshcertConfig => parseConfig(input as ConfigInput, env);

describe('parseConfig defaults', () => {
  it('fills every default and turns durations into seconds', () => {
    const c = parseConfig({}, {}, 'config', '/srv/meshcert');
    // A subset match: sections added later keep their own tests.
    expect(c).toMatchObject({
      dataDir: '/srv/meshcert/.meshcert',
      trustDomain: 'cluster.local',
      server: {
        listen: '0.0.0.0:15012',
        tls: {
          certFile: undefined,
          keyFile: undefined,
          dnsNames: ['localhost'],
          ipAddresses: ['127.0.0.1', '::1'],
          lifetime: 30 * 86_400,
          renewBeforeRatio: 1 / 3,
        },
        maxRequestBytes: 64 * 1024,
        shutdownGrace: 20,
        handshakeTimeout: 30,
        requestReadTimeout: 30,
        idleTimeout: 300,
        maxConnections: 5000,
        workers: 'auto',
        workerHeapMb: 192,
        workerInitialHeapMb: 'auto',
        workerSemiSpaceMb: 0,
      },
      ca: { dir: '/srv/meshcert/.meshcert/ca', autoInit: false, keyType: 'ec256' },
      issuance: { defaultTtl: 86_400, maxTtl: 7_776_000, onTtlAboveMax: 'clamp', backdate: 120 },
      auth: {
        defaultCluster: 'Kubernetes',
        clusters: [],
        clientCertificates: true,
        revokedClientCertificates: [],
        clockSkew: 30,
        tokenCache: { maxEntries: 10_000, maxTtl: 600 },
      },
      inventory: { retention: 30 * 86_400, auditRetention: 365 * 86_400 },
      log: { level: 'info' },
      dev: { tokenIssuer: false },
      overload: { maxInFlight: 4096, maxInFlightBytes: 16 * 1024 * 1024, heapLimitRatio: 0.8 },
    });
  });

  it.each([
    ['turns a duration string into seconds', { issuance: { defaultTtl: '1h' } }, (c: MeshcertConfig) => c.issuance.defaultTtl, 3_600],
    ['keeps a number of seconds as is', { issuance: { defaultTtl: 600 } }, (c: MeshcertConfig) => c.issuance.defaultTtl, 600],
    ['reads maxTtl in days', { issuance: { maxTtl: '30d' } }, (c: MeshcertConfig) => c.issuance.maxTtl, 2_592_000],
    ['reads the token review timeout', { auth: { clusters: [{ name: 'k', tokenReview: { timeout: '10s' } }] } }, (c: MeshcertConfig) => c.auth.clusters[0]!.tokenReview!.timeout, 10],
    ['defaults the window for discovered certificates to 30 days', {}, (c: MeshcertConfig) => c.monitoring.discoveredWarnBefore, 30 * 86_400],
    ['takes 0 for no report of discovered certificates', { monitoring: { discoveredWarnBefore: 0 } }, (c: MeshcertConfig) => c.monitoring.discoveredWarnBefore, 0],
    ['defaults the token review timeout to 5 seconds', { auth: { clusters: [{ name: 'k', tokenReview: {} }] } }, (c: MeshcertConfig) => c.auth.clusters[0]!.tokenReview!.timeout, 5],
    ['defaults jwt audiences to istio-ca', { auth: { clusters: [{ name: 'k', jwt: [{ issuer: 'i', jwksUri: 'https://x/jwks' }] }] } }, (c: MeshcertConfig) => c.auth.clusters[0]!.jwt[0]!.audiences, ['istio-ca']],
    ['accepts onTtlAboveMax reject', { issuance: { onTtlAboveMax: 'reject' } }, (c: MeshcertConfig) => c.issuance.onTtlAboveMax, 'reject'],
    ['accepts an IPv6 listen address', { server: { listen: '[::1]:15012' } }, (c: MeshcertConfig) => c.server.listen, '[::1]:15012'],
    ['accepts a small worker heap with the initial heap left to auto', { server: { workerHeapMb: 48 } }, (c: MeshcertConfig) => c.server.workerInitialHeapMb, 'auto'],
    ['accepts any initial worker heap when the worker heap has no limit', { server: { workerHeapMb: 0, workerInitialHeapMb: 512 } }, (c: MeshcertConfig) => c.server.workerInitialHeapMb, 512],
  ])('%s', (_name, input, pick, expected) => {
    expect(pick(parse(input))).toEqual(expected);
  });
});

describe('auth.revokedClientCertificates serials', () => {
  it('keeps serials as meshcert writes them: lowercase hex, no colons, no leading zeros (as openssl or the log may show them)', () => {
    const c = parse({ auth: { revokedClientCertificates: [{ serials: ['01:A2:2A:1B', '1a22a1b', '00FF', '0', ' 0x1A22A1B '] }] } });
    expect(c.auth.revokedClientCertificates[0]!.serials).toEqual(['1a22a1b', '1a22a1b', 'ff', '0', '1a22a1b']);
    expect(c.auth.revokedClientCertificates[0]!.issuedBefore).toBeUndefined();
  });
});

describe('parseConfig refusals', () => {
  it.each([
    ['names an unknown top-level key', { bogus: 1 }, '  - bogus: unknown setting'],
    ['names an unknown key under server by its full path', { server: { bogus: 1 } }, '  - server.bogus: unknown setting'],
    ['names an unknown key under server.tls by its full path', { server: { tls: { crtFile: 'x' } } }, '  - server.tls.crtFile: unknown setting'],
    ['names an unknown key inside a jwt issuer by its full path', { auth: { clusters: [{ name: 'a', jwt: [{ issuer: 'x', jwksFile: 'f', foo: 1 }] }] } }, '  - auth.clusters.0.jwt.0.foo: unknown setting'],
    ['names an unknown key in the second cluster by its index', { auth: { clusters: [{ name: 'a' }, { name: 'b', extra: true }] } }, '  - auth.clusters.1.extra: unknown setting'],
    ['rejects a trust domain with uppercase letters', { trustDomain: 'Cluster.Local' }, '  - trustDomain: SPIFFE trust domain may hold only lowercase letters'],
    ['rejects a revocation selector that can never match (an uppercase namespace)', { auth: { revokedClientCertificates: [{ issuedBefore: '2026-01-01T00:00:00Z', namespaces: ['VM1'] }] } }, '  - auth.revokedClientCertificates.0.namespaces.0: "VM1" can never match: a namespace is lowercase letters'],
    ['rejects a trust domain longer than 255 characters', { trustDomain: 'a'.repeat(256) }, '  - trustDomain: SPIFFE trust domain is longer than 255 characters'],
    ['rejects an empty trust domain', { trustDomain: '' }, '  - trustDomain: SPIFFE trust domain is empty'],
    ['rejects a JWKS URL over plain http to another host', { auth: { clusters: [{ name: 'k', jwt: [{ issuer: 'i', jwksUri: 'http://idp.example/jwks' }] }] } }, '  - auth.clusters.0.jwt.0.jwksUri: jwksUri must be https (http only to localhost, 127.0.0.1 or [::1])'],
    ['rejects a lease no longer than its renew deadline', { leaderElection: { leaseDuration: '10s', renewDeadline: '10s' } }, '  - leaderElection.leaseDuration: leaseDuration must be greater than renewDeadline'],
    ['rejects a renew deadline too short for its retries', { leaderElection: { renewDeadline: '2s', retryPeriod: '2s' } }, '  - leaderElection.renewDeadline: renewDeadline must be greater than 1.2 × retryPeriod'],
    ['rejects a serving certificate lifetime under an hour', { server: { tls: { lifetime: '0s' } } }, '  - server.tls.lifetime: must be between 1h and 36500d'],
    ['rejects an inventory retention past a century (dates beyond what the stores hold)', { inventory: { retention: '99999999d' } }, '  - inventory.retention: must be between 0s and 36500d'],
    ['rejects a stale-identity window past a century', { monitoring: { staleWithin: '99999999d' } }, '  - monitoring.staleWithin: must be between 0s and 36500d'],
    ['rejects a discovered-certificate window past a century', { monitoring: { discoveredWarnBefore: '99999999d' } }, '  - monitoring.discoveredWarnBefore: must be between 0s and 36500d'],
    ['rejects a monitoring interval under 10s (it reads the CA files and queries the store)', { monitoring: { interval: '0s' } }, '  - monitoring.interval: must be between 10s and 2147483s'],
    ['rejects a monitoring interval longer than a Node timer holds', { monitoring: { interval: '30d' } }, '  - monitoring.interval: must be between 10s and 2147483s'],
    ['rejects a trust domain ending with a dot', { trustDomain: 'cluster.local.' }, '  - trustDomain: SPIFFE trust domain must not start or end with "."'],
    ['rejects a trust domain alias with a port', { trustDomainAliases: ['old.example:8443'] }, '  - trustDomainAliases.0: SPIFFE trust domain may hold only'],
    ['rejects a listen address without a port', { server: { listen: '0.0.0.0' } }, '  - server.listen: expected host:port'],
    ['rejects a listen port above 65535', { server: { listen: '127.0.0.1:70000' } }, '  - server.listen: port must be 0-65535'],
    ['rejects an admin port above 65535', { admin: { listen: '[::1]:65536' } }, '  - admin.listen: port must be 0-65535'],
    ['rejects an idle timeout beyond what a Node timer holds', { server: { idleTimeout: '30d' } }, '  - server.idleTimeout: must be between 0 and 2147483s'],
    ['rejects a negative connection limit', { server: { maxConnections: -1 } }, '  - server.maxConnections:'],
    ['rejects a fractional connection limit', { server: { maxConnections: 2.5 } }, '  - server.maxConnections:'],
    ['rejects a handshake timeout of 0 (Node would read it as 120 s)', { server: { handshakeTimeout: 0 } }, '  - server.handshakeTimeout: must be between 1s and 2147483s'],
    ['rejects an initial worker heap above the worker heap limit', { server: { workerHeapMb: 48, workerInitialHeapMb: 64 } }, '  - server.workerInitialHeapMb: server.workerInitialHeapMb must not exceed server.workerHeapMb'],
    ['rejects a negative initial worker heap', { server: { workerInitialHeapMb: -1 } }, '  - server.workerInitialHeapMb:'],
    ['rejects a handshake timeout under a second', { server: { handshakeTimeout: 0.4 } }, '  - server.handshakeTimeout:'],
    ['rejects a revocation time without a zone', { auth: { revokedClientCertificates: [{ issuedBefore: '2026-11-29T22:00:00' }] } }, '  - auth.revokedClientCertificates.0.issuedBefore: must be an RFC 3339 date and time with a zone, e.g. 2026-11-29T22:00:00Z'],
    ['rejects a revocation date without a time', { auth: { revokedClientCertificates: [{ issuedBefore: '2026-11-29' }] } }, '  - auth.revokedClientCertificates.0.issuedBefore: must be an RFC 3339 date and time with a zone'],
    ['asks to quote a revocation time YAML 1.1 read as a date', { auth: { revokedClientCertificates: [{ issuedBefore: new Date('2026-11-29T22:00:00Z') }] } }, '  - auth.revokedClientCertificates.0.issuedBefore: quote the time ("2026-11-29T22:00:00.000Z"): YAML read it as a date'],
    ['rejects a revocation with neither a time nor serials', { auth: { revokedClientCertificates: [{ namespaces: ['vm-*'] }] } }, '  - auth.revokedClientCertificates.0.issuedBefore: give issuedBefore, serials, or both: an entry with neither would refuse every certificate its selectors match, those issued after it included'],
    ['rejects a revoked serial that is not hex (the whole line openssl prints, say)', { auth: { revokedClientCertificates: [{ serials: ['serial=01A2'] }] } }, '  - auth.revokedClientCertificates.0.serials.0: must be a serial number in hex (at most 20 octets, with or without colons), e.g. 1a2b3c or 1A:2B:3C'],
    ['rejects a revoked serial longer than 20 octets', { auth: { revokedClientCertificates: [{ serials: ['1'.repeat(41)] }] } }, '  - auth.revokedClientCertificates.0.serials.0: must be a serial number in hex'],
    ['rejects a revoked serial with odd colons', { auth: { revokedClientCertificates: [{ serials: ['1A:2:3C'] }] } }, '  - auth.revokedClientCertificates.0.serials.0: must be a serial number in hex'],
    ['asks to quote a revoked serial YAML read as a number', { auth: { revokedClientCertificates: [{ serials: [1234] }] } }, '  - auth.revokedClientCertificates.0.serials.0: quote the serial number: YAML read it as a number'],
    ['rejects an empty list of revoked serials', { auth: { revokedClientCertificates: [{ serials: [] }] } }, '  - auth.revokedClientCertificates.0.serials: list at least one serial number, or leave serials out'],
    ['rejects a revocation selector that is not a glob', { auth: { revokedClientCertificates: [{ issuedBefore: '2026-11-29T22:00:00Z', namespaces: ['!prod'] }] } }, '  - auth.revokedClientCertificates.0.namespaces.0: negation ("!") is not supported'],
    ['rejects a revocation selector that matches nothing', { auth: { revokedClientCertificates: [{ issuedBefore: '2026-11-29T22:00:00Z', serviceAccounts: [] }] } }, '  - auth.revokedClientCertificates.0.serviceAccounts: an empty list matches nothing'],
    ['names an unknown key in a revocation (serial, where serials is meant)', { auth: { revokedClientCertificates: [{ issuedBefore: '2026-11-29T22:00:00Z', serial: '01' }] } }, '  - auth.revokedClientCertificates.0.serial: unknown setting'],
    ['rejects a bad duration string', { issuance: { defaultTtl: '1 day' } }, '  - issuance.defaultTtl: invalid duration "1 day"'],
    ['rejects a negative duration number', { issuance: { backdate: -5 } }, '  - issuance.backdate: invalid duration -5'],
    ['rejects a duration of the wrong type', { auth: { clockSkew: true } }, '  - auth.clockSkew:'],
    ['rejects a jwt issuer with neither jwksUri nor jwksFile', { auth: { clusters: [{ name: 'a', jwt: [{ issuer: 'x' }] }] } }, '  - auth.clusters.0.jwt.0: set exactly one of jwksUri or jwksFile'],
    ['rejects a jwt issuer with both jwksUri and jwksFile', { auth: { clusters: [{ name: 'a', jwt: [{ issuer: 'x', jwksUri: 'https://x/j', jwksFile: 'j.json' }] }] } }, '  - auth.clusters.0.jwt.0: set exactly one of jwksUri or jwksFile'],
    ['rejects a jwksUri that is not http(s)', { auth: { clusters: [{ name: 'a', jwt: [{ issuer: 'x', jwksUri: 'file:///etc/jwks' }] }] } }, '  - auth.clusters.0.jwt.0.jwksUri:'],
    ['rejects a token review API server over plain http', { auth: { clusters: [{ name: 'a', tokenReview: { apiServer: 'http://k8s' } }] } }, '  - auth.clusters.0.tokenReview.apiServer:'],
    ['rejects certFile without keyFile', { server: { tls: { certFile: 'tls.crt' } } }, '  - server.tls: set both certFile and keyFile, or neither'],
    ['rejects keyFile without certFile', { server: { tls: { keyFile: 'tls.key' } } }, '  - server.tls: set both certFile and keyFile, or neither'],
    ['rejects defaultTtl above maxTtl', { issuance: { defaultTtl: '100d', maxTtl: '90d' } }, '  - issuance: defaultTtl must be > 0 and <= maxTtl'],
    ['rejects a zero defaultTtl', { issuance: { defaultTtl: 0 } }, '  - issuance: defaultTtl must be > 0 and <= maxTtl'],
    ['rejects an unknown key type', { ca: { keyType: 'ed25519' } }, '  - ca.keyType:'],
    ['rejects an unknown onTtlAboveMax', { issuance: { onTtlAboveMax: 'warn' } }, '  - issuance.onTtlAboveMax:'],
    ['rejects a backdate beyond a day (NotBefore would be no date)', { issuance: { backdate: '100000000000d' } }, '  - issuance.backdate: must be between 0s and 1d'],
    ['rejects a maxTtl beyond 36500d', { issuance: { maxTtl: '40000d' } }, '  - issuance.maxTtl: invalid duration 40000d: at most 36500d'],
    ['rejects a fractional defaultTtl under issuance, as the policy would', { issuance: { defaultTtl: 1.5 } }, '  - issuance.defaultTtl: invalid duration 1.5: must be a whole number of seconds'],
    ['rejects a clock skew above 10 minutes (the authenticator refuses it at start)', { auth: { clockSkew: '601s' } }, '  - auth.clockSkew: must be between 0s and 10m'],
    ['rejects a TokenReview timeout of 0', { auth: { clusters: [{ name: 'a', tokenReview: { timeout: 0 } }] } }, '  - auth.clusters.0.tokenReview.timeout: must be more than 0s and at most 60s'],
    ['rejects a TokenReview timeout beyond a minute (30d would overflow Node\'s timer and fire at once)', { auth: { clusters: [{ name: 'a', tokenReview: { timeout: '30d' } }] } }, '  - auth.clusters.0.tokenReview.timeout: must be more than 0s and at most 60s'],
    ['rejects two clusters of one name (the later would silently replace the earlier)', { auth: { clusters: [{ name: 'k', tokenReview: {} }, { name: 'k', tokenReview: {} }] } }, '  - auth.clusters.1.name: cluster "k" is configured twice'],
    ['rejects one JWT issuer twice in a cluster (serve would refuse it)', { auth: { clusters: [{ name: 'k', jwt: [{ issuer: 'https://a', jwksFile: 'j' }, { issuer: 'https://a', jwksFile: 'k', audiences: ['x'] }] }] } }, '  - auth.clusters.0.jwt.1.issuer: issuer https://a is configured twice in this cluster; merge its audiences into one entry'],
    ['rejects a TokenReview API server URL with a query (the API paths are appended to it)', { auth: { clusters: [{ name: 'k', tokenReview: { apiServer: 'https://k8s.example/k8s/clusters/c-1?x=1' } }] } }, '  - auth.clusters.0.tokenReview.apiServer: must not have a query or fragment'],
    ['rejects an issuer named "default" (the ca section is that issuer: a policy rule naming it would pick one of two CAs)', { issuers: [{ name: 'default', dir: '/x' }] }, '  - issuers: issuer names must be unique and not "default"'],
    ['rejects two issuers of one name', { issuers: [{ name: 'pay', dir: '/x' }, { name: 'pay', dir: '/y' }] }, '  - issuers: issuer names must be unique and not "default"'],
    ['rejects an unknown log level', { log: { level: 'verbose' } }, '  - log.level:'],
    ['rejects a serving IP that is not an address', { server: { tls: { ipAddresses: ['localhost'] } } }, '  - server.tls.ipAddresses.0:'],
    ['rejects a renewBeforeRatio of 1', { server: { tls: { renewBeforeRatio: 1 } } }, '  - server.tls.renewBeforeRatio:'],
    ['rejects a maxRequestBytes below 4096', { server: { maxRequestBytes: 100 } }, '  - server.maxRequestBytes:'],
    ['rejects a section that is not a mapping', { issuance: 'often' }, '  - issuance:'],
    ['rejects a cluster without a name', { auth: { clusters: [{}] } }, '  - auth.clusters.0.name:'],
    ['rejects a kubeconfig beside an API server it would ignore', { kubernetes: { kubeconfig: 'k.yaml', server: 'https://k8s:6443' } }, '  - kubernetes: set either kubeconfig or server'],
    ['rejects a token file without the API server it is for', { kubernetes: { tokenFile: 't' } }, '  - kubernetes: caFile and tokenFile go with server'],
    ['rejects a PostgreSQL URL with the SQLite store, which would ignore it', { inventory: { store: 'sqlite', url: 'postgres://db/meshcert' } }, '  - inventory: inventory.url is set but inventory.store is sqlite'],
  ])('%s', (_name, input, line) => {
    const e = configError(() => parse(input));
    expect(e.message).toMatch(/^invalid configuration in config:\n/);
    expect(e.message.split('\n').some((l) => l.startsWith(line))).toBe(true);
  });

  it.each([
    ['an unknown onTtlAboveMax', { issuance: { onTtlAboveMax: 'bogus', maxTtl: '48h' } }, '  - issuance.onTtlAboveMax: Invalid option: expected one of "clamp"|"reject"'],
    ['a fractional lifetime in a string, as in a number', { policy: { default: { lifetime: { default: '1.4s' } } } }, '  - policy.default.lifetime.default: invalid duration 1.4s: must be a whole number of seconds'],
    ['a lifetime that is no duration', { policy: { default: { lifetime: { max: true } } } }, '  - policy.default.lifetime.max: expected a lifetime such as "90s", "15m", "24h" or "90d", or a whole number of seconds'],
    ['a namespace YAML read as a number', { policy: { rules: [{ name: 'r', match: { namespaces: [600] } }] } }, '  - policy.rules.0.match.namespaces: expected a name or pattern, or a list of them (quote a name YAML reads as a number, such as "0600" or "123")'],
  ])('says %s once, in words', (_name, input, line) => {
    const e = configError(() => parse(input));
    expect(e.message.split('\n').slice(1)).toEqual([line]);
  });

  it('lists every problem in one message', () => {
    const e = configError(() =>
      parse({
        bogus: 1,
        trustDomain: 'UPPER',
        server: { listen: 'nope', tls: { certFile: 'a.pem' } },
        issuance: { defaultTtl: '1x', maxTtl: 'forever' },
        auth: { clusters: [{ name: 'a', jwt: [{ issuer: 'x', jwksFile: 'j', foo: 1 }] }] },
      }),
    );
    const lines = e.message.split('\n').slice(1);
    for (const where of ['bogus', 'trustDomain', 'server.listen', 'server.tls', 'issuance.defaultTtl', 'issuance.maxTtl', 'auth.clusters.0.jwt.0.foo']) {
      expect(lines.some((l) => l.startsWith(`  - ${where}:`)), `no line for ${where} in:\n${e.message}`).toBe(true);
    }
    expect(lines).toHaveLength(7);
  });

  it('reports a bad issuance lifetime once, under issuance, not again under the policy it feeds', () => {
    for (const issuance of [{ maxTtl: '36501d' }, { defaultTtl: 1.5 }]) {
      const lines = configError(() => parse({ issuance })).message.split('\n').slice(1);
      expect(lines, lines.join('\n')).toHaveLength(1);
      expect(lines[0]).toMatch(/^ {2}- issuance\./);
    }
  });

  it('refuses lifetimes set under issuance and policy.default.lifetime both, among the other problems, not instead of them', () => {
    const both = { issuance: { maxTtl: '30d' }, policy: { default: { lifetime: { max: '60d' } } } };
    expect(configError(() => parse(both)).message.split('\n').slice(1)).toEqual(['  - issuance: lifetimes are set in policy.default.lifetime too; set them in one place']);
    const lines = configError(() => parse({ ...both, trustDomain: 'UPPER', server: { listen: 'nope' }, policy: { default: { lifetime: { max: 'forever' } } } })).message.split('\n').slice(1);
    expect(lines[0]).toBe('  - issuance: lifetimes are set in policy.default.lifetime too; set them in one place');
    for (const where of ['trustDomain', 'server.listen', 'policy.default.lifetime.max']) {
      expect(lines.some((l) => l.startsWith(`  - ${where}:`)), `no line for ${where} in:\n${lines.join('\n')}`).toBe(true);
    }
    expect(lines).toHaveLength(4);
  });

  it('leaves a policy or policy.default that is not a mapping for validation to refuse, under an issuance lifetime too (never an allowing default in its place)', () => {
    for (const policy of ['deny', { default: 'deny' }, { default: ['deny'] }]) {
      const where = typeof policy === 'string' ? 'policy' : 'policy.default';
      for (const input of [{ policy }, { policy, issuance: { maxTtl: '30d' } }]) {
        const lines = configError(() => parse(input)).message.split('\n').slice(1);
        expect(lines.some((l) => l.startsWith(`  - ${where}:`)), lines.join('\n')).toBe(true);
      }
    }
  });

  it('takes istio.istiodTls\'s namespace, revisions and extraDnsNames only as the Kubernetes names they become (the certificate\'s DNS names, Service istiod-<rev>)', () => {
    expect(parse({ istio: { istiodTls: { namespace: 'istio-system', revisions: ['', 'default', '1-24-0', 'canary'] } } }).istio.istiodTls.revisions).toEqual(['', 'default', '1-24-0', 'canary']);
    expect(parse({ istio: { istiodTls: { revisions: ['r'.repeat(56)] } } }).istio.istiodTls.revisions).toHaveLength(1);
    expect(parse({ istio: { istiodTls: { extraDnsNames: ['istiod.mesh.example.com', 'Istiod-1.Example.COM'] } } }).istio.istiodTls.extraDnsNames).toEqual(['istiod.mesh.example.com', 'Istiod-1.Example.COM']);
    expect(parse({}).istio.istiodTls.extraDnsNames).toEqual([]);
    const bad: [Record<string, unknown>, string][] = [
      [{ namespace: 'Istio_System' }, '  - istio.istiodTls.namespace: a Kubernetes namespace: lowercase letters, digits and "-", at most 63'],
      [{ namespace: 'a'.repeat(64) }, '  - istio.istiodTls.namespace: a Kubernetes namespace'],
      [{ namespace: '-istio' }, '  - istio.istiodTls.namespace: a Kubernetes namespace'],
      [{ revisions: ['1.24'] }, '  - istio.istiodTls.revisions.0: an Istio revision: lowercase letters, digits and "-", at most 56 (istiod-<rev> is a Service name)'],
      [{ revisions: ['ok', 'r'.repeat(57)] }, '  - istio.istiodTls.revisions.1: an Istio revision'],
      [{ revisions: ['canary-'] }, '  - istio.istiodTls.revisions.0: an Istio revision'],
      [{ extraDnsNames: ['istiod.example.com', 'https://istiod.example.com'] }, '  - istio.istiodTls.extraDnsNames.1: a DNS name: labels of letters, digits and "-" joined by dots'],
      [{ extraDnsNames: ['istiod..example.com'] }, '  - istio.istiodTls.extraDnsNames.0: a DNS name'],
      [{ extraDnsNames: ['-istiod.example.com'] }, '  - istio.istiodTls.extraDnsNames.0: a DNS name'],
      [{ extraDnsNames: [`${'a'.repeat(64)}.example.com`] }, '  - istio.istiodTls.extraDnsNames.0: a DNS name'],
      [{ extraDnsNames: [''] }, '  - istio.istiodTls.extraDnsNames.0: a DNS name'],
    ];
    for (const [istiodTls, line] of bad) {
      const lines = configError(() => parse({ istio: { istiodTls } })).message.split('\n').slice(1);
      expect(lines, JSON.stringify(istiodTls)).toHaveLength(1);
      expect(lines[0]!.startsWith(line), lines[0]).toBe(true);
    }
  });

  it('refuses a serving DNS name that is not one, and a listen host that is neither an address nor a name', () => {
    for (const [input, line] of [
      [{ server: { tls: { dnsNames: ['meshcert.svc', 'bad name!'] } } }, '  - server.tls.dnsNames.1: a DNS name: labels of letters, digits and "-" joined by dots'],
      [{ server: { tls: { dnsNames: ['a..b'] } } }, '  - server.tls.dnsNames.0: a DNS name'],
      [{ server: { tls: { dnsNames: [`${'a'.repeat(64)}.svc`] } } }, '  - server.tls.dnsNames.0: a DNS name'],
      [{ server: { listen: '999.999.999.999:15012' } }, '  - server.listen: the host must be an IPv4 address, an IPv6 address in brackets, or a host name'],
      [{ server: { listen: '[:::]:15012' } }, '  - server.listen: the host must be'],
      [{ server: { listen: '-bad-:15012' } }, '  - server.listen: the host must be'],
      [{ admin: { listen: '1.2.3:9402' } }, '  - admin.listen: the host must be'],
    ] as const) {
      const lines = configError(() => parse(input)).message.split('\n').slice(1);
      expect(lines, JSON.stringify(input)).toHaveLength(1);
      expect(lines[0]!.startsWith(line), lines[0]).toBe(true);
    }
    for (const listen of [':15012', '0.0.0.0:15012', '[::]:15012', '[::1]:0', 'localhost:15012', 'meshcert-0.meshcert.svc:15012']) expect(parse({ server: { listen } }).server.listen).toBe(listen);
    expect(parse({ server: { tls: { dnsNames: ['meshcert.meshcert.svc', 'localhost', 'MeshCert-1.example', '*.meshcert.svc'] } } }).server.tls.dnsNames).toHaveLength(4);
    expect(() => parse({ server: { tls: { dnsNames: ['a.*.svc'] } } })).toThrow(ConfigError);
  });

  it('refuses several clusters none of which is auth.defaultCluster (serve could not tell what an empty clusterid means)', () => {
    const jwt = (name: string) => ({ name, jwt: [{ issuer: `https://${name}.example`, jwksUri: `https://${name}.example/jwks` }] });
    const lines = configError(() => parse({ auth: { clusters: [jwt('east'), jwt('west')] } })).message.split('\n').slice(1);
    expect(lines).toEqual([
      '  - auth.defaultCluster: "Kubernetes" is not one of auth.clusters (east, west): with several clusters, set auth.defaultCluster to the one a request with an empty or absent clusterid header belongs to',
    ]);
    expect(parse({ auth: { defaultCluster: 'west', clusters: [jwt('east'), jwt('west')] } }).auth.defaultCluster).toBe('west');
    // One cluster is the default whatever its name; the dev issuer serves the default cluster itself.
    expect(parse({ auth: { clusters: [jwt('east')] } }).auth.clusters).toHaveLength(1);
    expect(parse({ dev: { tokenIssuer: true }, auth: { clusters: [jwt('east'), jwt('west')] } }).dev.tokenIssuer).toBe(true);
  });

  it('refuses an admin.listen on the gRPC port of an overlapping address, which serve could not bind (it would blame "another process")', () => {
    const refused: Array<[string, string]> = [
      ['127.0.0.1:9402', '127.0.0.1:9402'],
      ['0.0.0.0:15012', '127.0.0.1:15012'],
      ['[::]:15012', '0.0.0.0:15012'],
      [':15012', '127.0.0.1:15012'],
      ['localhost:9000', '127.0.0.1:9000'],
      ['[::0]:9000', '[fd00::1]:9000'],
      ['[::1]:9000', '[0::1]:9000'],
      ['[::ffff:127.0.0.1]:9000', '127.0.0.1:9000'],
      ['0.0.0.0:9000', '[::ffff:10.1.2.3]:9000'],
    ];
    for (const [server, admin] of refused) {
      const lines = configError(() => parse({ server: { listen: server }, admin: { listen: admin } })).message.split('\n').slice(1);
      expect(lines, `${server} ${admin}`).toEqual([`  - admin.listen: ${admin} and server.listen ${server} are one port on overlapping addresses: the admin server needs a port of its own`]);
    }
    // Apart: another port, two addresses of their own, or ports picked at bind time.
    for (const [server, admin] of [['0.0.0.0:15012', '127.0.0.1:9402'], ['10.0.0.5:9000', '127.0.0.1:9000'], ['127.0.0.1:0', '127.0.0.1:0'], ['0.0.0.0:9000', '[::1]:9000'], ['[fd00::1]:9000', '[fd00::2]:9000']]) {
      expect(parse({ server: { listen: server }, admin: { listen: admin } }).admin.listen).toBe(admin);
    }
    // With the admin server off, its address is not bound: nothing to refuse.
    expect(parse({ server: { listen: '0.0.0.0:9402' }, admin: { enabled: false } }).server.listen).toBe('0.0.0.0:9402');
    // The environment's values are checked too.
    expect(() => parseConfig({}, { MESHCERT_ADMIN_LISTEN: '0.0.0.0:15012' })).toThrow(/admin\.listen: 0\.0\.0\.0:15012 and server\.listen 0\.0\.0\.0:15012 are one port/);
  });

  it('says what a value of two shapes expects, not "Invalid input"', () => {
    const bad: Array<[Record<string, unknown>, string]> = [
      [{ workers: 1.5 }, '  - server.workers: expected "auto" or a whole number from 1 to 64'],
      [{ shutdownGrace: Infinity }, '  - server.shutdownGrace: expected a duration such as "90s", "15m", "24h" or "90d", or a finite number of seconds'],
      [{ workerInitialHeapMb: 2.5 }, '  - server.workerInitialHeapMb: expected "auto" or a whole number of MiB from 0 to 16384'],
      [{ tls: { ipAddresses: ['nope'] } }, '  - server.tls.ipAddresses.0: expected an IPv4 or IPv6 address'],
    ];
    for (const [server, line] of bad) expect(configError(() => parse({ server })).message.split('\n').slice(1), JSON.stringify(server)).toEqual([line]);
  });

  it('names the source in the message', () => {
    expect(() => parseConfig({ bogus: 1 } as ConfigInput, {}, '/etc/meshcert.yaml')).toThrow(/^invalid configuration in \/etc\/meshcert\.yaml:/);
  });
});

describe('parseConfig results', () => {
  it('deep-freezes the result', () => {
    const c = parse({ auth: { clusters: [{ name: 'a', jwt: [{ issuer: 'x', jwksFile: 'j.json' }] }] } });
    expect(Object.isFrozen(c)).toBe(true);
    expect(Object.isFrozen(c.server)).toBe(true);
    expect(Object.isFrozen(c.server.tls)).toBe(true);
    expect(Object.isFrozen(c.server.tls.dnsNames)).toBe(true);
    expect(Object.isFrozen(c.issuance)).toBe(true);
    expect(Object.isFrozen(c.auth.clusters)).toBe(true);
    expect(Object.isFrozen(c.auth.clusters[0]!.jwt[0]!)).toBe(true);
    expect(Object.isFrozen(c.auth.clusters[0]!.jwt[0]!.audiences)).toBe(true);
    expect(() => {
      (c as { trustDomain: string }).trustDomain = 'evil.local';
    }).toThrow(TypeError);
    expect(() => {
      (c.issuance as { maxTtl: number }).maxTtl = 1;
    }).toThrow(TypeError);
    expect(() => (c.server.tls.dnsNames as string[]).push('evil')).toThrow(TypeError);
  });

  it('does not modify its input', () => {
    const input = { server: { tls: {} } } as ConfigInput;
    const c = parseConfig(input, { MESHCERT_LISTEN: '127.0.0.1:1' });
    expect(input).toEqual({ server: { tls: {} } });
    expect(Object.isFrozen(input)).toBe(false);
    expect(c.server.listen).toBe('127.0.0.1:1');
  });
});

describe('environment overrides', () => {
  it('lists the documented variables', () => {
    expect(Object.fromEntries(ENV_OVERRIDES)).toMatchObject({
      MESHCERT_LISTEN: ['server', 'listen'],
      MESHCERT_TRUST_DOMAIN: ['trustDomain'],
      MESHCERT_DATA_DIR: ['dataDir'],
      MESHCERT_CA_DIR: ['ca', 'dir'],
      MESHCERT_LOG_LEVEL: ['log', 'level'],
      MESHCERT_INVENTORY_STORE: ['inventory', 'store'],
    });
  });

  it('turns ambient mode on or off from MESHCERT_AMBIENT_ENABLED ("true" or "false"), refusing anything else under the variable\'s name', () => {
    expect(parseConfig({}, { MESHCERT_AMBIENT_ENABLED: 'true' }).ambient).toEqual({ enabled: true, trustedNodeAccounts: ['istio-system/ztunnel'] });
    expect(parseConfig({ ambient: { enabled: true } }, { MESHCERT_AMBIENT_ENABLED: 'false' }).ambient.enabled).toBe(false);
    expect(parseConfig({}, {}).ambient.enabled).toBe(false);
    const e = configError(() => parseConfig({}, { MESHCERT_AMBIENT_ENABLED: 'yes' }));
    expect(e.message).toMatch(/ambient\.enabled: .*\(ambient\.enabled from MESHCERT_AMBIENT_ENABLED\)/);
  });

  it('sets the inventory store from MESHCERT_INVENTORY_STORE, validated as the key is', () => {
    expect(parseConfig({ inventory: { store: 'none' } }, { MESHCERT_INVENTORY_STORE: 'sqlite' }).inventory.store).toBe('sqlite');
    expect(() => parseConfig({}, { MESHCERT_INVENTORY_STORE: 'mysql' })).toThrow(/inventory\.store/);
    // A URL over a config that turns the inventory off meant PostgreSQL: said, not ignored.
    expect(() => parseConfig({ inventory: { store: 'none' } }, { MESHCERT_INVENTORY_URL: 'postgres://u@db/m' })).toThrow(
      /inventory\.url is set but inventory\.store is none: set inventory\.store: postgres \(MESHCERT_INVENTORY_STORE=postgres\), or remove the URL/,
    );
  });

  const file = `
dataDir: /var/lib/from-file
trustDomain: from.file
server:
  listen: 0.0.0.0:1111
ca:
  dir: /etc/from-file/ca
log:
  level: warn
`;

  it.each([
    ['MESHCERT_LISTEN wins over server.listen', 'MESHCERT_LISTEN', '127.0.0.1:2222', (c: MeshcertConfig) => c.server.listen],
    ['MESHCERT_TRUST_DOMAIN wins over trustDomain', 'MESHCERT_TRUST_DOMAIN', 'from.env', (c: MeshcertConfig) => c.trustDomain],
    ['MESHCERT_DATA_DIR wins over dataDir', 'MESHCERT_DATA_DIR', '/var/lib/from-env', (c: MeshcertConfig) => c.dataDir],
    ['MESHCERT_CA_DIR wins over ca.dir', 'MESHCERT_CA_DIR', '/etc/from-env/ca', (c: MeshcertConfig) => c.ca.dir],
    ['MESHCERT_LOG_LEVEL wins over log.level', 'MESHCERT_LOG_LEVEL', 'debug', (c: MeshcertConfig) => c.log.level],
  ])('%s', (_name, variable, value, pick) => {
    const path = configFile(file);
    expect(pick(loadConfigFile(path, {}).config)).not.toBe(value);
    expect(pick(loadConfigFile(path, { [variable]: value }).config)).toBe(value);
  });

  it('fills a section the file does not have', () => {
    const c = loadConfigFile(configFile('trustDomain: a.b\n'), { MESHCERT_LISTEN: '[::]:15012', MESHCERT_CA_DIR: '/ca', MESHCERT_LOG_LEVEL: 'error' }).config;
    expect(c.server.listen).toBe('[::]:15012');
    expect(c.ca.dir).toBe('/ca');
    expect(c.log.level).toBe('error');
    expect(c.server.tls.dnsNames).toEqual(['localhost']);
  });

  it('ignores an empty variable', () => {
    const c = loadConfigFile(configFile(file), { MESHCERT_TRUST_DOMAIN: '', MESHCERT_LISTEN: '' }).config;
    expect(c.trustDomain).toBe('from.file');
    expect(c.server.listen).toBe('0.0.0.0:1111');
  });

  it('validates an overriding value like a file value', () => {
    const e = configError(() => loadConfigFile(configFile(file), { MESHCERT_TRUST_DOMAIN: 'Not-Lower', MESHCERT_LOG_LEVEL: 'loud' }));
    expect(e.message).toContain('  - trustDomain:');
    expect(e.message).toContain('  - log.level:');
  });

  it('names the variable a refused value came from, which the file does not hold', () => {
    const e = configError(() => loadConfigFile(configFile(''), { MESHCERT_LISTEN: 'bad', MESHCERT_INVENTORY_STORE: 'postgres' }));
    expect(e.message).toContain('  - server.listen: expected host:port, e.g. 0.0.0.0:15012 or [::1]:15012 (server.listen from MESHCERT_LISTEN)');
    // A rule about the whole section names the setting of it that came from the environment.
    expect(e.message).toContain('  - inventory: inventory.store postgres needs inventory.url (inventory.store from MESHCERT_INVENTORY_STORE)');
    // A problem of the file's own is not blamed on a variable.
    const own = configError(() => loadConfigFile(configFile('trustDomain: UPPER\n'), { MESHCERT_LISTEN: '127.0.0.1:1' }));
    expect(own.message).not.toContain('from MESHCERT');
  });

  it.each([
    ['does not hide a section that is a number', 'server: 5\n', '  - server:'],
    ['does not hide a section that is a list', 'server: [a]\n', '  - server:'],
    ['does not hide a section that is null', 'server:\n', '  - server:'],
  ])('%s', (_name, text, line) => {
    const e = configError(() => loadConfigFile(configFile(text), { MESHCERT_LISTEN: '127.0.0.1:1' }));
    expect(e.message.split('\n').some((l) => l.startsWith(line))).toBe(true);
  });

  it('uses the process environment by default', () => {
    const before = process.env.MESHCERT_TRUST_DOMAIN;
    process.env.MESHCERT_TRUST_DOMAIN = 'process.env.example';
    try {
      expect(loadConfigFile(configFile(file)).config.trustDomain).toBe('process.env.example');
    } finally {
      if (before === undefined) delete process.env.MESHCERT_TRUST_DOMAIN;
      else process.env.MESHCERT_TRUST_DOMAIN = before;
    }
  });
});

describe('loadConfigFile', () => {
  it.each([
    ['reads an empty file as all defaults', ''],
    ['reads a file of comments as all defaults', '# nothing set here\n'],
    ['reads an explicit empty mapping as all defaults', '{}\n'],
  ])('%s', (_name, text) => {
    const path = configFile(text);
    const { config, baseDir } = loadConfigFile(path, {});
    expect(baseDir).toBe(dir);
    expect(config.issuance).toEqual({ defaultTtl: 86_400, maxTtl: 7_776_000, onTtlAboveMax: 'clamp', backdate: 120 });
    expect(config.dataDir).toBe(join(dir, '.meshcert'));
  });

  it('reads the settings of a file', () => {
    const path = configFile(`
trustDomain: example.org
server:
  listen: 127.0.0.1:8443
  tls:
    dnsNames: [meshcert.istio-system.svc]
issuance:
  defaultTtl: 12h
  maxTtl: 48h
  onTtlAboveMax: reject
auth:
  clusters:
    - name: Kubernetes
      jwt:
        - issuer: https://kubernetes.default.svc
          jwksUri: https://kubernetes.default.svc/openid/v1/jwks
`);
    const c = loadConfigFile(path, {}).config;
    expect(c.trustDomain).toBe('example.org');
    expect(c.server.listen).toBe('127.0.0.1:8443');
    expect(c.server.tls.dnsNames).toEqual(['meshcert.istio-system.svc']);
    expect(c.issuance).toEqual({ defaultTtl: 43_200, maxTtl: 172_800, onTtlAboveMax: 'reject', backdate: 120 });
    expect(c.auth.clusters[0]!.jwt[0]).toEqual({
      issuer: 'https://kubernetes.default.svc',
      audiences: ['istio-ca'],
      jwksUri: 'https://kubernetes.default.svc/openid/v1/jwks',
      jwksFile: undefined,
    });
  });

  it('applies the issuance lifetimes to the rules of a policy whose default denies', () => {
    const path = configFile(`
issuance: { defaultTtl: 1h, maxTtl: 1h, onTtlAboveMax: reject }
policy:
  default: { deny: "not listed" }
  rules:
    - name: apps
      match: { namespaces: ["app-*"] }
`);
    const c = loadConfigFile(path, {}).config;
    expect(c.policy.default).toEqual({ deny: 'not listed' });
    expect(c.policy.rules[0]).toMatchObject({ name: 'apps', lifetime: { default: 3_600, max: 3_600, aboveMax: 'reject' } });
  });

  it.each([
    ['rejects an unclosed flow sequence', 'server: [\n', /is not valid YAML:\n {2}- /],
    ['rejects a duplicate top-level key', 'trustDomain: a\ntrustDomain: b\n', /is not valid YAML:\n {2}- Map keys must be unique at line 2, column 1$/],
    ['rejects a duplicate nested key', 'server:\n  listen: "a:1"\n  listen: "b:1"\n', /is not valid YAML:\n {2}- Map keys must be unique/],
    ['rejects tab indentation', '\t x: 1\n', /is not valid YAML/],
    ['rejects a sequence at the top level', '- a\n- b\n', /: the top level must be a mapping of settings$/],
    ['rejects a string at the top level', 'hello\n', /: the top level must be a mapping of settings$/],
    ['rejects a number at the top level', '42\n', /: the top level must be a mapping of settings$/],
  ])('%s', (_name, text, pattern) => {
    const path = configFile(text);
    const e = configError(() => loadConfigFile(path, {}));
    expect(e.message.startsWith(path)).toBe(true);
    expect(e.message).toMatch(pattern);
  });

  it('names the unknown key of a file by its full path', () => {
    const path = configFile('server:\n  bogus: 1\nauth:\n  clusters:\n    - name: a\n      jwt:\n        - issuer: x\n          jwksFile: j.json\n          foo: 1\n');
    const e = configError(() => loadConfigFile(path, {}));
    expect(e.message).toBe(`invalid configuration in ${path}:\n  - server.bogus: unknown setting\n  - auth.clusters.0.jwt.0.foo: unknown setting`);
  });

  it.each([
    // The yaml library only warns of an unknown tag and makes its value a plain string.
    ['refuses an unknown tag rather than taking its value as a string', 'dataDir: !env MESH_DATA\n', /not valid YAML:\n {2}- .*tag/i],
    ['refuses an alias expansion bomb with the file named', `a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n`, /meshcert-\d+\.yaml is not valid YAML: .*alias/i],
  ])('%s', (_name, text, message) => {
    expect(configError(() => loadConfigFile(configFile(text), {})).message).toMatch(message);
  });

  it('reports a missing file with its path and the reason', () => {
    const path = join(dir, 'does-not-exist.yaml');
    const e = configError(() => loadConfigFile(path, {}));
    expect(e.message).toBe(`cannot read config file ${path}: ENOENT`);
  });

  it('reports a directory given as the file', () => {
    expect(() => loadConfigFile(dir, {})).toThrow(/cannot read config file .*: not a regular file \(a directory\)$/);
  });
});

describe('relative paths', () => {
  it('resolves every relative path against the config file directory', () => {
    const path = configFile(
      `
dataDir: state
server:
  tls:
    certFile: tls/tls.crt
    keyFile: ./tls/tls.key
auth:
  clusters:
    - name: a
      jwt:
        - issuer: x
          jwksFile: ../jwks.json
      tokenReview:
        caFile: k8s/ca.crt
        tokenFile: k8s/token
`,
      'etc',
    );
    const base = join(dir, 'etc');
    const c = loadConfigFile(path, {}).config;
    expect(c.dataDir).toBe(join(base, 'state'));
    expect(c.ca.dir).toBe(join(base, 'state', 'ca'));
    expect(c.server.tls.certFile).toBe(join(base, 'tls', 'tls.crt'));
    expect(c.server.tls.keyFile).toBe(join(base, 'tls', 'tls.key'));
    expect(c.auth.clusters[0]!.jwt[0]!.jwksFile).toBe(join(dir, 'jwks.json'));
    expect(c.auth.clusters[0]!.tokenReview!.caFile).toBe(join(base, 'k8s', 'ca.crt'));
    expect(c.auth.clusters[0]!.tokenReview!.tokenFile).toBe(join(base, 'k8s', 'token'));
  });

  it('resolves an explicit ca.dir on its own, not under dataDir', () => {
    const path = configFile('dataDir: state\nca:\n  dir: pki/ca\n', 'rel');
    expect(loadConfigFile(path, {}).config.ca.dir).toBe(join(dir, 'rel', 'pki', 'ca'));
  });

  it('keeps absolute paths as they are', () => {
    const path = configFile('dataDir: /var/lib/meshcert\nca:\n  dir: /etc/cacerts\nserver:\n  tls:\n    certFile: /tls/c.pem\n    keyFile: /tls/k.pem\n');
    const c = loadConfigFile(path, {}).config;
    expect(c.dataDir).toBe('/var/lib/meshcert');
    expect(c.ca.dir).toBe('/etc/cacerts');
    expect(c.server.tls.certFile).toBe('/tls/c.pem');
    expect(c.server.tls.keyFile).toBe('/tls/k.pem');
  });

  it('resolves against the file directory even when the path given is relative', () => {
    const path = configFile('dataDir: state\n', 'cwd-rel');
    const prev = process.cwd();
    process.chdir(dir);
    try {
      const rel = join('cwd-rel', basename(path));
      const { config, baseDir } = loadConfigFile(rel, {});
      expect(baseDir).toBe(join(dir, 'cwd-rel'));
      expect(config.dataDir).toBe(join(dir, 'cwd-rel', 'state'));
    } finally {
      process.chdir(prev);
    }
  });

  it('resolves parseConfig paths against the base directory it is given', () => {
    const c = parseConfig({ dataDir: 'd' }, {}, 'config', '/opt/base');
    expect(c.dataDir).toBe('/opt/base/d');
    expect(c.ca.dir).toBe('/opt/base/d/ca');
  });
});
