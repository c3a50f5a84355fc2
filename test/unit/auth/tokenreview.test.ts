import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { Status } from '../../../src/grpc/codes.js';
import { CaError, SigningKeyPendingError } from '../../../src/errors/ca-error.js';
import { toGrpcFailure } from '../../../src/grpc/status.js';
import { isLocalApiServer, MAX_REVIEWS, SERVICE_ACCOUNT_JWKS_PATH, TOKENREVIEW_PATH, TokenReviewAuthenticator, TokenReviewBackendError, underBase } from '../../../src/auth/tokenreview.js';
import type { TokenReviewOptions } from '../../../src/auth/tokenreview.js';
import type { Caller } from '../../../src/auth/types.js';
import { closedPort, k8sClaims, makeCert, signingKey, signToken } from './helpers.js';
import type { SigningKey, TestCert } from './helpers.js';

const OWN_TOKEN = 'meshcert-own-sa-token';
/** Shaped like a service-account token (the API server is what checks it): header.payload.signature. */
const b64 = (o: unknown): string => Buffer.from(JSON.stringify(o)).toString('base64url');
const tokenWith = (claims: Record<string, unknown>): string => `${b64({ alg: 'RS256' })}.${b64(claims)}.c2lnbmF0dXJlLXZhbHVl`;
const UNSIGNED_SA_TOKEN = tokenWith({ sub: 'system:serviceaccount:bookinfo:reviews' });

interface Seen {
  method?: string;
  path?: string;
  authorization?: string;
  body?: { apiVersion?: string; kind?: string; spec?: { token?: string; audiences?: string[] } };
}

type Handler = (seen: Seen, res: ServerResponse) => void;

let serverCert: TestCert;
let otherCa: TestCert;
let server: https.Server;
let apiServer: string;
let handler: Handler = () => undefined;
let last: Seen = {};

beforeAll(async () => {
  serverCert = await makeCert({ name: 'kube-apiserver', ips: ['127.0.0.1'], eku: ['1.3.6.1.5.5.7.3.1'] });
  otherCa = await makeCert({ name: 'some other CA', ca: true });
  server = https.createServer({ cert: serverCert.pem, key: await serverCert.keyPem() }, (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      last = { method: req.method, path: req.url, authorization: req.headers.authorization };
      try {
        last.body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Seen['body'];
      } catch {
        /* leave body undefined */
      }
      handler(last, res);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  apiServer = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

function reply(status: number, body: unknown): Handler {
  return (_seen, res) => {
    res.writeHead(status, { 'content-type': 'application/json' }).end(typeof body === 'string' ? body : JSON.stringify(body));
  };
}

/** A TokenReview response body as the API server returns it (201 Created). */
function review(status: Record<string, unknown>): unknown {
  return { kind: 'TokenReview', apiVersion: 'authentication.k8s.io/v1', metadata: { creationTimestamp: null }, spec: { token: 'redacted', audiences: ['istio-ca'] }, status };
}

const AUTHENTICATED = {
  authenticated: true,
  user: {
    username: 'system:serviceaccount:bookinfo:reviews',
    uid: '0b5c9f0e-1111-4000-8000-000000000001',
    groups: ['system:serviceaccounts', 'system:serviceaccounts:bookinfo', 'system:authenticated'],
    extra: {
      'authentication.kubernetes.io/credential-id': ['JTI=1f8e2f9c-0000-4000-8000-000000000009'],
      'authentication.kubernetes.io/node-name': ['worker-2'],
      'authentication.kubernetes.io/node-uid': ['0b5c9f0e-1111-4000-8000-000000000003'],
      'authentication.kubernetes.io/pod-name': ['reviews-v1-5f9d8c7b6-xyz12'],
      'authentication.kubernetes.io/pod-uid': ['0b5c9f0e-1111-4000-8000-000000000002'],
    },
  },
  audiences: ['istio-ca'],
};

function make(o: Partial<TokenReviewOptions> = {}): TokenReviewAuthenticator {
  return new TokenReviewAuthenticator({ apiServer, caPem: serverCert.pem, bearerToken: OWN_TOKEN, trustDomain: 'cluster.local', timeoutMs: 1_000, env: {}, ...o });
}

async function outcome(p: Promise<Caller | null>): Promise<{ caller?: Caller | null; err?: CaError }> {
  try {
    return { caller: await p };
  } catch (err) {
    if (!(err instanceof CaError)) throw err;
    return { err };
  }
}

describe('TokenReviewAuthenticator', () => {
  it('sends a real TokenReview and maps an authenticated service account with its pod and node', async () => {
    handler = reply(201, review(AUTHENTICATED));
    const auth = make();
    try {
      const key = await signingKey('ES256', 'k');
      const token = await signToken(key, k8sClaims('bookinfo', 'reviews'), { expIn: 900 });
      const caller = await auth.authenticate({ bearerToken: token });
      expect(last.method).toBe('POST');
      expect(last.path).toBe('/apis/authentication.k8s.io/v1/tokenreviews');
      expect(last.authorization).toBe(`Bearer ${OWN_TOKEN}`);
      expect(last.body).toEqual({ apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token, audiences: ['istio-ca'] } });
      expect(caller).toEqual({
        method: 'tokenreview',
        identities: ['spiffe://cluster.local/ns/bookinfo/sa/reviews'],
        namespace: 'bookinfo',
        serviceAccount: 'reviews',
        pod: { name: 'reviews-v1-5f9d8c7b6-xyz12', uid: '0b5c9f0e-1111-4000-8000-000000000002' },
        node: { name: 'worker-2', uid: '0b5c9f0e-1111-4000-8000-000000000003' },
        expiresAt: expect.any(Number),
      });
      // Reused for a minute at most, though the token is good for 15: the API server sees revocations.
      expect(Math.abs((caller?.expiresAt ?? 0) - (Math.floor(Date.now() / 1000) + 60))).toBeLessThanOrEqual(2);
    } finally {
      auth.close();
    }
  });

  it('shares the review sockets fairly between client addresses: with all busy with one flood, the next free one goes to another address', async () => {
    const held: Array<() => void> = [];
    const seen: string[] = [];
    handler = (s, res) => {
      seen.push(s.body?.spec?.token ?? '');
      held.push(() => reply(201, review({ authenticated: false, error: 'invalid bearer token' }))(s, res));
    };
    const auth = make({ timeoutMs: 10_000 });
    const other = tokenWith({ sub: 'system:serviceaccount:default:other' });
    try {
      const flood = Array.from({ length: MAX_REVIEWS + 10 }, () => outcome(auth.authenticate({ bearerToken: UNSIGNED_SA_TOKEN, peerHost: '10.0.0.66' })));
      // One client alone may use every socket.
      await vi.waitFor(() => expect(held).toHaveLength(MAX_REVIEWS), { timeout: 5_000 });
      const otherCall = outcome(auth.authenticate({ bearerToken: other, peerHost: '10.0.0.7' }));
      await new Promise((r) => setTimeout(r, 50));
      expect(held).toHaveLength(MAX_REVIEWS); // all busy: it waits
      held.shift()!();
      // The freed socket goes to the other address, not to the flood's next call.
      await vi.waitFor(() => expect(held).toHaveLength(MAX_REVIEWS), { timeout: 5_000 });
      expect(seen.at(-1)).toBe(other);
      const drain = setInterval(() => held.splice(0).forEach((r) => r()), 10);
      try {
        expect((await otherCall).err?.code).toBe('AUTH_INVALID');
        expect((await Promise.all(flood)).every((r) => r.err?.code === 'AUTH_INVALID')).toBe(true);
      } finally {
        clearInterval(drain);
      }
    } finally {
      auth.close();
    }
  });

  it('returns null without a bearer token and sends nothing', async () => {
    last = {};
    const auth = make();
    expect(await auth.authenticate({})).toBeNull();
    expect(last).toEqual({});
    auth.close();
  });

  describe('refuses without asking the API server', () => {
    const now = Math.floor(Date.now() / 1000);
    /** One call by a fresh authenticator: its refusal, and whether it asked the API server. */
    async function tryToken(token: string, o: Partial<TokenReviewOptions> = {}): Promise<{ err: CaError | undefined; asked: boolean }> {
      last = {};
      const auth = make(o);
      try {
        const { err } = await outcome(auth.authenticate({ bearerToken: token }));
        return { err, asked: last.method === 'POST' };
      } finally {
        auth.close();
      }
    }

    it.each([
      ['a token that is not a JWT', 'not-a-jwt-at-all', /^bearer token is not a Kubernetes service-account token \(not a JWT\)$/],
      ['a JWT whose subject is not a service account', tokenWith({ sub: 'alice' }), /^token does not belong to a Kubernetes service account$/],
      ['a JWT without a subject', tokenWith({ exp: now + 600 }), /^token does not belong to a Kubernetes service account$/],
      ['a token that expired more than five minutes ago', tokenWith({ sub: 'system:serviceaccount:a:b', exp: now - 301 }), /^token has expired$/],
    ])('%s', async (_name, token, message) => {
      handler = reply(201, review(AUTHENTICATED));
      const { err, asked } = await tryToken(token);
      expect(err?.code).toBe('AUTH_INVALID');
      expect(err?.message).toMatch(message);
      expect(asked).toBe(false);
      expect(last).toEqual({});
    });

    it('allows auth.clockSkew when it is longer than five minutes', async () => {
      handler = reply(201, review({ authenticated: false, error: 'token has expired' }));
      expect((await tryToken(tokenWith({ sub: 'system:serviceaccount:a:b', exp: now - 600 }), { clockSkewSeconds: 900 })).asked).toBe(true);
      const { err, asked } = await tryToken(tokenWith({ sub: 'system:serviceaccount:a:b', exp: now - 901 }), { clockSkewSeconds: 900 });
      expect(err?.message).toBe('token has expired');
      expect(asked).toBe(false);
      expect(last).toEqual({});
    });

    it('but asks about a token that expired within those five minutes (clocks differ)', async () => {
      handler = reply(201, review({ authenticated: false, error: 'token has expired' }));
      const { err, asked } = await tryToken(tokenWith({ sub: 'system:serviceaccount:a:b', exp: now - 200 }));
      expect(err?.message).toMatch(/not accepted by the Kubernetes API server/);
      expect(asked).toBe(true);
    });
  });

  type Case = { name: string; handler?: Handler; options?: () => Promise<Partial<TokenReviewOptions>>; code: string; message?: RegExp; kind?: string; logged?: RegExp };
  const cases: Case[] = [
    { name: 'refuses a token the API server does not authenticate', handler: reply(201, review({ authenticated: false, error: '[invalid bearer token, token has been invalidated]' })), code: 'AUTH_INVALID', message: /not accepted by the Kubernetes API server/ },
    // Kubernetes omits a false `authenticated` (omitempty): only true accepts, whatever else the status holds.
    { name: 'refuses a TokenReview whose status omits authenticated, as Kubernetes does for a refused token', handler: reply(201, review({ user: {}, error: 'invalid bearer token' })), code: 'AUTH_INVALID', message: /not accepted by the Kubernetes API server/ },
    { name: 'refuses a TokenReview without authenticated: true even when it names a service account', handler: reply(201, review({ ...AUTHENTICATED, authenticated: undefined })), code: 'AUTH_INVALID', message: /not accepted by the Kubernetes API server/ },
    { name: 'refuses a token authenticated for another audience (empty status.audiences)', handler: reply(201, review({ ...AUTHENTICATED, audiences: [] })), code: 'AUTH_INVALID', message: /^token audience does not include istio-ca$/ },
    { name: 'refuses a token authenticated for another audience (different status.audiences)', handler: reply(201, review({ ...AUTHENTICATED, audiences: ['https://kubernetes.default.svc'] })), code: 'AUTH_INVALID', message: /audience/ },
    { name: 'refuses a user that is not a service account', handler: reply(201, review({ ...AUTHENTICATED, user: { username: 'alice', groups: ['system:authenticated'] } })), code: 'AUTH_INVALID', message: /not belong to a Kubernetes service account/ },
    { name: 'refuses a malformed service-account username', handler: reply(201, review({ ...AUTHENTICATED, user: { username: 'system:serviceaccount:a:b:c' } })), code: 'AUTH_INVALID' },
    // Another authenticator of the API server (a webhook, OIDC without a prefix) may claim such a username; only its service accounts are in the group.
    { name: 'refuses a service-account username outside the system:serviceaccounts group', handler: reply(201, review({ ...AUTHENTICATED, user: { ...AUTHENTICATED.user, groups: ['oidc:admins', 'system:authenticated'] } })), code: 'AUTH_INVALID', message: /did not put its user in the system:serviceaccounts group/ },
    { name: 'refuses a service-account username without groups', handler: reply(201, review({ ...AUTHENTICATED, user: { username: AUTHENTICATED.user.username } })), code: 'AUTH_INVALID', message: /system:serviceaccounts group/ },
    { name: 'reports a 500 as backend unavailable', handler: reply(500, { kind: 'Status', status: 'Failure', code: 500 }), code: 'AUTH_BACKEND_UNAVAILABLE', kind: 'server-error' },
    { name: 'reports a 503 as backend unavailable', handler: reply(503, 'unavailable'), code: 'AUTH_BACKEND_UNAVAILABLE', kind: 'server-error' },
    { name: 'reports 429 throttling as backend unavailable', handler: reply(429, { kind: 'Status', code: 429 }), code: 'AUTH_BACKEND_UNAVAILABLE', kind: 'throttled' },
    { name: "reports a 401 for meshcert's own credentials as backend unavailable, not a bad token", handler: reply(401, { kind: 'Status', code: 401, reason: 'Unauthorized' }), code: 'AUTH_BACKEND_UNAVAILABLE', message: /credentials/, kind: 'credentials-rejected' },
    { name: 'reports a 403 (missing RBAC) as backend unavailable', handler: reply(403, { kind: 'Status', code: 403, reason: 'Forbidden' }), code: 'AUTH_BACKEND_UNAVAILABLE', kind: 'credentials-rejected' },
    { name: 'reports a non-JSON 201 as backend unavailable', handler: reply(201, '<html>proxy</html>'), code: 'AUTH_BACKEND_UNAVAILABLE', kind: 'bad-response' },
    // Only a TokenReview may refuse a token: another 2xx body is a wrong apiServer or a proxy, not every workload's bad token.
    { name: "reports a 200 that is a proxy's JSON error as backend unavailable", handler: reply(200, { kind: 'Status', status: 'Failure' }), code: 'AUTH_BACKEND_UNAVAILABLE', logged: /not a TokenReview \(kind "Status"\): is tokenReview.apiServer the Kubernetes API server\?/, kind: 'bad-response' },
    { name: 'reports a 201 holding a JSON array as backend unavailable', handler: reply(201, []), code: 'AUTH_BACKEND_UNAVAILABLE', kind: 'bad-response' },
    { name: 'reports a TokenReview without a status as backend unavailable', handler: reply(201, { kind: 'TokenReview', apiVersion: 'authentication.k8s.io/v1' }), code: 'AUTH_BACKEND_UNAVAILABLE', kind: 'bad-response' },
    { name: 'reports a timeout as backend unavailable', handler: () => undefined, options: async () => ({ timeoutMs: 150 }), code: 'AUTH_BACKEND_UNAVAILABLE', kind: 'timeout' },
    { name: 'reports connection refused as backend unavailable', options: async () => ({ apiServer: `https://127.0.0.1:${await closedPort()}` }), code: 'AUTH_BACKEND_UNAVAILABLE', kind: 'unreachable' },
    { name: 'reports an untrusted API-server certificate as backend unavailable', handler: reply(201, review(AUTHENTICATED)), options: async () => ({ caPem: otherCa.pem }), code: 'AUTH_BACKEND_UNAVAILABLE', kind: 'unreachable' },
    { name: 'reports an unreadable own token file as backend unavailable', handler: reply(201, review(AUTHENTICATED)), options: async () => ({ bearerToken: undefined, tokenFile: '/nonexistent/token' }), code: 'AUTH_BACKEND_UNAVAILABLE', kind: 'credentials-unreadable' },
  ];

  for (const c of cases) {
    it(c.name, async () => {
      handler = c.handler ?? (() => undefined);
      const auth = make(c.options ? await c.options() : {});
      const token = UNSIGNED_SA_TOKEN;
      try {
        const t0 = Date.now();
        const { err } = await outcome(auth.authenticate({ bearerToken: token }));
        expect(Date.now() - t0).toBeLessThan(3_000);
        expect(err?.code).toBe(c.code);
        if (c.message) expect(err?.message).toMatch(c.message);
        expect(err?.message).not.toContain(token);
        expect(err?.message).not.toContain(OWN_TOKEN);
        if (c.kind) {
          expect(err?.cause).toBeInstanceOf(TokenReviewBackendError);
          expect((err?.cause as TokenReviewBackendError).kind).toBe(c.kind);
        }
        if (c.logged) expect((err?.cause as Error).message).toMatch(c.logged);
        // What the client is told: the status agents act on (retry or not), and no detail meant for the log.
        const told = toGrpcFailure(err);
        expect(told.code).toBe(c.code === 'AUTH_BACKEND_UNAVAILABLE' ? Status.UNAVAILABLE : Status.UNAUTHENTICATED);
        if (c.logged) expect(told.details).not.toMatch(c.logged);
        expect(told.details).not.toContain(apiServer);
      } finally {
        auth.close();
      }
    });
  }

  it('reads its own credential from tokenFile', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'meshcert-tr-'));
    writeFileSync(join(dir, 'token'), 'from-file\n');
    writeFileSync(join(dir, 'ca.crt'), serverCert.pem);
    handler = reply(201, review(AUTHENTICATED));
    const auth = make({ bearerToken: undefined, caPem: undefined, tokenFile: join(dir, 'token'), caFile: join(dir, 'ca.crt') });
    try {
      expect((await auth.authenticate({ bearerToken: UNSIGNED_SA_TOKEN }))?.identities).toEqual(['spiffe://cluster.local/ns/bookinfo/sa/reviews']);
      expect(last.authorization).toBe('Bearer from-file');
    } finally {
      auth.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("reads its CA file again on a reload (the cluster's CA rotated), and keeps the one in force when the file holds no certificate", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'meshcert-tr-'));
    const caFile = join(dir, 'ca.crt');
    // The CA bundle before the rotation: the API server's certificate no longer chains to it.
    writeFileSync(caFile, otherCa.pem);
    handler = reply(201, review(AUTHENTICATED));
    const auth = make({ caPem: undefined, caFile });
    try {
      expect((await outcome(auth.authenticate({ bearerToken: UNSIGNED_SA_TOKEN }))).err?.code).toBe('AUTH_BACKEND_UNAVAILABLE');
      writeFileSync(caFile, `${otherCa.pem.trim()}\n${serverCert.pem}`);
      const commit = auth.prepareReload();
      // Prepared, not yet in force.
      expect((await outcome(auth.authenticate({ bearerToken: UNSIGNED_SA_TOKEN }))).err?.code).toBe('AUTH_BACKEND_UNAVAILABLE');
      commit();
      expect((await auth.authenticate({ bearerToken: UNSIGNED_SA_TOKEN }))?.method).toBe('tokenreview');
      // Half-written, or emptied: refused, and the bundle in force stays.
      for (const text of ['', '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n']) {
        writeFileSync(caFile, text);
        expect(() => auth.prepareReload(), JSON.stringify(text)).toThrow(/tokenreview\.caFile .*ca\.crt/);
      }
      rmSync(caFile);
      expect(() => auth.prepareReload()).toThrow(/tokenreview\.caFile .*ca\.crt/);
      expect((await auth.authenticate({ bearerToken: UNSIGNED_SA_TOKEN }))?.method).toBe('tokenreview');
    } finally {
      auth.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('has nothing to read again on a reload when given its CA bundle as text', () => {
    const auth = make();
    try {
      auth.prepareReload()();
    } finally {
      auth.close();
    }
  });

  it('sends no Authorization header to an explicitly configured API server without credentials', async () => {
    handler = reply(201, review(AUTHENTICATED));
    const auth = make({ bearerToken: undefined });
    try {
      expect((await auth.authenticate({ bearerToken: UNSIGNED_SA_TOKEN }))?.method).toBe('tokenreview');
      expect(last.authorization).toBeUndefined();
    } finally {
      auth.close();
    }
  });

  it('sends custom audiences and accepts any of them back', async () => {
    handler = reply(201, review({ ...AUTHENTICATED, audiences: ['meshcert'] }));
    const auth = make({ audiences: ['istio-ca', 'meshcert'] });
    try {
      expect((await auth.authenticate({ bearerToken: UNSIGNED_SA_TOKEN }))?.method).toBe('tokenreview');
      expect(last.body?.spec?.audiences).toEqual(['istio-ca', 'meshcert']);
    } finally {
      auth.close();
    }
  });

  it('builds the in-cluster API server URL from KUBERNETES_SERVICE_HOST/PORT', async () => {
    handler = reply(201, review(AUTHENTICATED));
    const port = (server.address() as AddressInfo).port;
    const auth = make({ apiServer: undefined, env: { KUBERNETES_SERVICE_HOST: '127.0.0.1', KUBERNETES_SERVICE_PORT: String(port) } });
    try {
      expect((await auth.authenticate({ bearerToken: UNSIGNED_SA_TOKEN }))?.method).toBe('tokenreview');
    } finally {
      auth.close();
    }
  });

  it('keeps the path prefix of an API server behind a proxy (Rancher: /k8s/clusters/ID) for the review and the keys', async () => {
    handler = reply(201, review(AUTHENTICATED));
    for (const prefix of ['/k8s/clusters/c-abc', '/k8s/clusters/c-abc/']) {
      const auth = make({ apiServer: `${apiServer}${prefix}` });
      try {
        expect((await auth.authenticate({ bearerToken: UNSIGNED_SA_TOKEN }))?.method, prefix).toBe('tokenreview');
        expect(last.path, prefix).toBe('/k8s/clusters/c-abc/apis/authentication.k8s.io/v1/tokenreviews');
      } finally {
        auth.close();
      }
    }
    expect(underBase(new URL('https://h:6443/k8s/clusters/c-abc/'), SERVICE_ACCOUNT_JWKS_PATH).href).toBe('https://h:6443/k8s/clusters/c-abc/openid/v1/jwks');
    expect(underBase(new URL('https://h:6443'), TOKENREVIEW_PATH).href).toBe('https://h:6443/apis/authentication.k8s.io/v1/tokenreviews');
  });

  const emptyFile = join(mkdtempSync(join(tmpdir(), 'meshcert-tr-')), 'empty.crt');
  writeFileSync(emptyFile, '');
  afterAll(() => rmSync(dirname(emptyFile), { recursive: true, force: true }));
  const configCases: { name: string; options: Partial<TokenReviewOptions>; error: RegExp }[] = [
    { name: 'refuses an http API server', options: { apiServer: 'http://127.0.0.1:6443' }, error: /https/ },
    { name: 'refuses an API server URL with a query (the API paths are appended to it)', options: { apiServer: 'https://127.0.0.1:6443/k8s?cluster=a' }, error: /must not have a query or fragment/ },
    { name: 'refuses a missing API server outside a cluster', options: { apiServer: undefined, env: {} }, error: /KUBERNETES_SERVICE_HOST/ },
    { name: 'refuses an invalid trust domain', options: { trustDomain: 'not a domain' }, error: /trustDomain/ },
    { name: 'refuses an unreadable caFile', options: { caPem: undefined, caFile: '/nonexistent/ca.crt' }, error: /caFile/ },
    { name: 'refuses a caFile that holds no certificate (Node would trust nothing, silently)', options: { caPem: undefined, caFile: emptyFile }, error: /caFile .*empty\.crt: holds no PEM certificate/ },
    { name: 'refuses a caPem whose certificate does not parse', options: { caPem: '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n' }, error: /caPem: a CERTIFICATE block does not parse/ },
    { name: 'refuses an empty audience list', options: { audiences: [] }, error: /audiences/ },
  ];
  for (const c of configCases) {
    it(c.name, () => {
      expect(() => make(c.options)).toThrow(c.error);
    });
  }
});

describe('TokenReviewAuthenticator with verifySignatures', () => {
  let apiKey: SigningKey;
  let apiKey2: SigningKey;
  let apiEcKey: SigningKey;
  let forger: SigningKey;
  let jwksAnswer: { status: number; keys: SigningKey[]; hold?: boolean };
  const requests: Seen[] = [];
  /** The answers to key reads held unanswered (jwksAnswer.hold). */
  const heldReads: ServerResponse[] = [];
  const jwksReads = (): Seen[] => requests.filter((r) => r.method === 'GET');
  const reviews = (): Seen[] => requests.filter((r) => r.method === 'POST');
  beforeAll(async () => {
    apiKey = await signingKey('RS256', 'api-server-key-1');
    apiKey2 = await signingKey('RS256', 'api-server-key-2');
    apiEcKey = await signingKey('ES256', 'api-server-key-ec');
    forger = await signingKey('RS256', 'api-server-key-1'); // claims the API server's kid
  });
  const serve = (keys?: SigningKey[]): void => {
    requests.length = 0;
    jwksAnswer = { status: 200, keys: keys ?? [apiKey] };
    handler = (seen, res) => {
      requests.push(seen);
      if (seen.method === 'GET' && seen.path === '/openid/v1/jwks') {
        if (jwksAnswer.hold) {
          heldReads.push(res);
          return;
        }
        reply(jwksAnswer.status, jwksAnswer.status === 200 ? { keys: jwksAnswer.keys.map((k) => k.jwk) } : { kind: 'Status', code: jwksAnswer.status })(seen, res);
        return;
      }
      reply(201, review(AUTHENTICATED))(seen, res);
    };
  };
  const claims = k8sClaims('bookinfo', 'reviews');
  /** Signed without a kid, as a legacy token may be. */
  const noKid = (key: SigningKey): Promise<string> =>
    new SignJWT(claims).setProtectedHeader({ alg: key.alg }).setIssuer('kubernetes/serviceaccount').setIssuedAt().setExpirationTime('1h').sign(key.privateKey);
  /** A started authenticator whose first read of the keys has answered. */
  async function started(o: Partial<TokenReviewOptions> = {}): Promise<TokenReviewAuthenticator> {
    const auth = make({ verifySignatures: true, ...o });
    auth.start();
    await vi.waitFor(() => expect(auth.keysLoaded).toBe(true), { timeout: 5_000 });
    return auth;
  }
  /** `use` a started authenticator, closed after. */
  async function withStarted(o: Partial<TokenReviewOptions>, use: (auth: TokenReviewAuthenticator) => Promise<void>): Promise<void> {
    const auth = await started(o);
    try {
      await use(auth);
    } finally {
      auth.close();
    }
  }
  const refused = async (auth: TokenReviewAuthenticator, token: string): Promise<CaError | undefined> => (await outcome(auth.authenticate({ bearerToken: token }))).err;

  it('refuses, without a TokenReview, a token no service-account key of the API server signed, and reviews one that one did', async () => {
    serve([apiKey, apiEcKey]);
    await withStarted({ keysMinRefreshIntervalMs: 200 }, async (auth) => {
      const good = await auth.authenticate({ bearerToken: await signToken(apiKey, claims) });
      expect(good?.identities).toEqual(['spiffe://cluster.local/ns/bookinfo/sa/reviews']);
      expect((await auth.authenticate({ bearerToken: await signToken(apiEcKey, claims) }))?.serviceAccount).toBe('reviews');
      expect(reviews()).toHaveLength(2);
      // Read with meshcert's own credentials, over the API server's CA.
      expect(jwksReads()[0]).toEqual(expect.objectContaining({ path: '/openid/v1/jwks', authorization: `Bearer ${OWN_TOKEN}` }));

      const forged = await refused(auth, await signToken(forger, claims));
      expect([forged?.code, forged?.message]).toEqual(['AUTH_INVALID', "token signature does not verify with the Kubernetes API server's service-account keys"]);
      const ecForger = await signingKey('ES256', 'api-server-key-ec');
      expect((await refused(auth, await signToken(ecForger, claims)))?.message).toBe("token signature does not verify with the Kubernetes API server's service-account keys");
      const other = await signingKey('ES256', 'not-the-api-servers');
      // A kid never published: refused when the token claims to be older than the keys read, or
      // from the future (no issuer's); issued since, it waits for the next read and then gets
      // UNAVAILABLE, as a key still propagating would (retried; no review spent).
      for (const iatIn of [-600, 3600 * 24 * 365]) {
        const err = await refused(auth, await signToken(other, claims, { iatIn }));
        expect([iatIn, err?.code, err?.message]).toEqual([iatIn, 'AUTH_INVALID', 'token was not signed by a service-account key of the Kubernetes API server']);
      }
      const reads = jwksReads().length;
      // (iat 5 s ahead: after any read this call makes, as a token just issued by a clock a little ahead.)
      const fresh = await refused(auth, await signToken(other, claims, { iatIn: 5 }));
      expect(fresh?.code).toBe('AUTH_BACKEND_UNAVAILABLE');
      expect(fresh).toBeInstanceOf(SigningKeyPendingError);
      expect(jwksReads().length).toBeGreaterThan(reads); // it waited for a read
      expect(jwksReads().length).toBeLessThanOrEqual(reads + 2);
      const hmac = await refused(auth, `${Buffer.from(JSON.stringify({ alg: 'HS256', kid: 'api-server-key-1' })).toString('base64url')}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.c2ln`);
      expect([hmac?.code, hmac?.message]).toEqual(['AUTH_INVALID', 'token signing algorithm is not one the Kubernetes API server uses']);
      expect(reviews()).toHaveLength(2);
    });
  });

  it('holds calls naming a key newer than the last read for one shared read, however many arrive', async () => {
    serve();
    await withStarted({ keysMinRefreshIntervalMs: 500 }, async (auth) => {
      const other = await signingKey('ES256', 'not-the-api-servers');
      const tokens = await Promise.all(Array.from({ length: 20 }, () => signToken(other, claims, { iatIn: 5 })));
      const t0 = Date.now();
      const errs = await Promise.all(tokens.map((t) => refused(auth, t)));
      expect(errs.every((e) => e instanceof SigningKeyPendingError)).toBe(true);
      // They waited for a read (the one at start was under 500 ms before), one for all of them:
      // besides the read at start, at most one for the first token and the shared one.
      expect(jwksReads().length).toBeGreaterThanOrEqual(2);
      expect(jwksReads().length).toBeLessThanOrEqual(3);
      expect(Date.now() - t0).toBeLessThan(5_000);
      expect(reviews()).toHaveLength(0);
    });
  });

  it('tries each key for a token that names none, as the API server does', async () => {
    serve([apiKey, apiKey2]);
    await withStarted({}, async (auth) => {
      expect((await auth.authenticate({ bearerToken: await noKid(apiKey2) }))?.serviceAccount).toBe('reviews');
      expect(reviews()).toHaveLength(1);
      const err = await refused(auth, await noKid(forger));
      expect([err?.code, err?.message]).toEqual(['AUTH_INVALID', "token signature does not verify with the Kubernetes API server's service-account keys"]);
      // A signature no key could check at all (not base64url) is the token's fault too.
      const [h, p] = (await noKid(forger)).split('.');
      const garbled = await refused(auth, `${h}.${p}.@@@@`);
      expect([garbled?.code, garbled?.message]).toEqual(['AUTH_INVALID', 'token is malformed']);
      expect(reviews()).toHaveLength(1);
    });
  });

  it('passes a token signed with a key the API server published after the last read, once the keys are read again within the call', async () => {
    serve();
    await withStarted({ keysMinRefreshIntervalMs: 300 }, async (auth) => {
      const rotated = await signingKey('ES256', 'api-server-key-2');
      jwksAnswer.keys = [apiKey, rotated];
      expect((await auth.authenticate({ bearerToken: await signToken(rotated, claims) }))?.serviceAccount).toBe('reviews');
      expect(jwksReads()).toHaveLength(2);
      expect(reviews()).toHaveLength(1);
    });
  });

  it("lets TokenReview decide while the API server's keys cannot be read, or publish none, and reports each failed read", async () => {
    serve();
    jwksAnswer.status = 403;
    const failures: Error[] = [];
    const auth = make({ verifySignatures: true, onKeysFailure: (e) => failures.push(e), keysMinRefreshIntervalMs: 10 });
    auth.start();
    try {
      await vi.waitFor(() => expect(failures).toHaveLength(1), { timeout: 5_000 });
      for (let i = 0; i < 3; i++) {
        await new Promise((r) => setTimeout(r, 30));
        expect((await auth.authenticate({ bearerToken: await signToken(forger, claims) }))?.serviceAccount).toBe('reviews'); // the (fake) API server said yes
      }
      expect(reviews()).toHaveLength(3);
      // After a failed read, tokens prompt the next one only 30 s later, not every keysMinRefreshIntervalMs.
      expect(jwksReads()).toHaveLength(1);
      expect(failures[0]!.message).toBe("GET /openid/v1/jwks returned HTTP 403 (meshcert's credentials may not read it: see the system:service-account-issuer-discovery ClusterRole)");
    } finally {
      auth.close();
    }
    serve([]);
    const empty = make({ verifySignatures: true, onKeysFailure: (e) => failures.push(e) });
    empty.start();
    try {
      await vi.waitFor(() => expect(failures).toHaveLength(2), { timeout: 5_000 });
      expect(failures[1]!.message).toBe('GET /openid/v1/jwks returned no RSA or EC key');
      expect((await empty.authenticate({ bearerToken: await signToken(forger, claims) }))?.serviceAccount).toBe('reviews');
    } finally {
      empty.close();
    }
  });

  it('once the keys were read, a failed read lets TokenReview judge an unknown kid, while a bad signature is still refused', async () => {
    serve();
    await withStarted({ keysMinRefreshIntervalMs: 50 }, async (auth) => {
      jwksAnswer.status = 503;
      await new Promise((r) => setTimeout(r, 60));
      const other = await signingKey('ES256', 'not-the-api-servers');
      expect((await auth.authenticate({ bearerToken: await signToken(other, claims, { iatIn: -600 }) }))?.serviceAccount).toBe('reviews');
      expect(jwksReads()).toHaveLength(2);
      expect(reviews()).toHaveLength(1);
      expect((await refused(auth, await signToken(forger, claims)))?.code).toBe('AUTH_INVALID');
      expect(reviews()).toHaveLength(1);
    });
  });

  it('sends tokens to TokenReview at once while the first read of the keys has not answered', async () => {
    serve();
    jwksAnswer.hold = true;
    const auth = make({ verifySignatures: true, timeoutMs: 20_000 });
    auth.start();
    try {
      await vi.waitFor(() => expect(jwksReads()).toHaveLength(1), { timeout: 5_000 });
      const token = await signToken(forger, claims);
      expect((await auth.authenticate({ bearerToken: token }))?.serviceAccount).toBe('reviews');
      // Answered while the held read is still open: the call did not wait for it (its 3 s limit).
      expect(heldReads.at(-1)?.socket?.destroyed).toBe(false);
      expect(reviews()).toHaveLength(1);
    } finally {
      auth.close();
    }
  }, 5_000);

  it('lets a call waiting for the next read go when the authenticator closes', async () => {
    serve();
    const auth = await started({ keysMinRefreshIntervalMs: 3_000 });
    const other = await signingKey('ES256', 'not-the-api-servers');
    let settled = false;
    const call = outcome(auth.authenticate({ bearerToken: await signToken(other, claims, { iatIn: 5 }) })).finally(() => (settled = true));
    await new Promise((r) => setTimeout(r, 100));
    expect(settled).toBe(false); // waiting for the read 3 s away
    auth.close();
    await vi.waitFor(() => expect(settled).toBe(true), { timeout: 1_000 });
    await call;
  });

  it('reports no failure for a read that close() cuts short', async () => {
    serve();
    jwksAnswer.hold = true;
    const failures: Error[] = [];
    const auth = make({ verifySignatures: true, onKeysFailure: (e) => failures.push(e) });
    auth.start();
    await vi.waitFor(() => expect(jwksReads()).toHaveLength(1), { timeout: 5_000 });
    auth.close();
    await new Promise((r) => setTimeout(r, 100));
    expect(failures).toEqual([]);
  });

  it('never reads the keys without verifySignatures', async () => {
    serve();
    const auth = make();
    auth.start();
    try {
      expect((await auth.authenticate({ bearerToken: await signToken(forger, claims) }))?.serviceAccount).toBe('reviews');
      expect(jwksReads()).toEqual([]);
    } finally {
      auth.close();
    }
  });
});

describe('isLocalApiServer: where the pod\'s own token may be sent', () => {
  const local = (apiServer: string | undefined, env: Record<string, string> = {}, search: string[] = []): boolean =>
    isLocalApiServer(apiServer, new URL(apiServer ?? 'https://10.0.0.1'), env, search);

  it('is the in-cluster API server when none is configured, or by its in-cluster names', () => {
    expect(local(undefined)).toBe(true);
    for (const host of ['kubernetes.default', 'kubernetes.default.svc', 'kubernetes.default.svc.cluster.local', 'KUBERNETES.default.svc.', 'kubernetes.default.svc.cluster.local.']) {
      expect(local(`https://${host}:443`), host).toBe(true);
    }
    expect(local('https://10.96.0.1', { KUBERNETES_SERVICE_HOST: '10.96.0.1' })).toBe(true);
    expect(local('https://[fd00::1]:443', { KUBERNETES_SERVICE_HOST: 'fd00::1' })).toBe(true);
  });

  it('takes a custom cluster domain from the pod\'s DNS search list', () => {
    const search = ['meshcert.svc.corp.internal', 'svc.corp.internal', 'corp.internal'];
    expect(local('https://kubernetes.default.svc.corp.internal', {}, search)).toBe(true);
    expect(local('https://kubernetes.default.svc.corp.internal', {}, [])).toBe(false);
    expect(local('https://kubernetes.default.corp.internal', {}, search)).toBe(false);
  });

  it('is not a host that merely starts like an in-cluster name', () => {
    for (const host of ['kubernetes.default.svc.example.com', 'kubernetes.default.svc-evil.example', 'kubernetes.default.example', 'api.other-cluster.example', '10.96.0.2']) {
      expect(local(`https://${host}`, { KUBERNETES_SERVICE_HOST: '10.96.0.1' }, ['svc.cluster.local']), host).toBe(false);
    }
  });
});
