import { createHmac } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import type { JWTPayload } from 'jose';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { CaError } from '../../../src/errors/ca-error.js';
import { AuthChain } from '../../../src/auth/chain.js';
import { JwtAuthenticator, serviceAccountSpiffeId } from '../../../src/auth/jwt.js';
import { TokenCache } from '../../../src/auth/token-cache.js';
import type { JwtAuthenticatorOptions } from '../../../src/auth/jwt.js';
import type { Caller } from '../../../src/auth/types.js';
import { b64url, closedPort, ISSUER, JwksServer, k8sClaims, signingKey, signToken, TRUST_DOMAIN } from './helpers.js';
import type { SigningKey } from './helpers.js';

let rsa: SigningKey;
let ec: SigningKey;
let rotated: SigningKey;
let stranger: SigningKey;
let server: JwksServer;
const open: JwtAuthenticator[] = [];

beforeAll(async () => {
  rsa = await signingKey('RS256', 'rsa-1');
  ec = await signingKey('ES256', 'ec-1');
  rotated = await signingKey('ES256', 'ec-2');
  stranger = await signingKey('RS256', 'rsa-1'); // same kid as a published key, different key
  server = await new JwksServer([rsa.jwk, ec.jwk]).start();
});

afterAll(async () => {
  await server.stop();
});

afterEach(() => {
  for (const a of open.splice(0)) a.close();
});

/** Authenticator against the shared server with a controllable clock (offset in ms). */
function make(overrides: Partial<JwtAuthenticatorOptions['issuers'][number]> = {}, extra: Partial<JwtAuthenticatorOptions> = {}) {
  const clock = { offset: 0 };
  const failures: string[] = [];
  const auth = new JwtAuthenticator({
    issuers: [{ issuer: ISSUER, jwksUri: server.url, trustDomain: TRUST_DOMAIN, ...overrides }],
    now: () => Date.now() + clock.offset,
    onRefreshFailure: (issuer) => failures.push(issuer),
    ...extra,
  });
  open.push(auth);
  return { auth, clock, failures };
}

async function outcome(p: Promise<Caller | null>): Promise<{ caller?: Caller | null; code?: string; message?: string }> {
  try {
    return { caller: await p };
  } catch (err) {
    if (!(err instanceof CaError)) throw err;
    return { code: err.code, message: err.message };
  }
}

function handCrafted(header: Record<string, unknown>, payload: JWTPayload, signature = ''): string {
  return `${b64url(header)}.${b64url(payload)}.${signature}`;
}

function validPayload(): JWTPayload {
  const now = Math.floor(Date.now() / 1000);
  return { ...k8sClaims(), iss: ISSUER, aud: ['istio-ca'], iat: now, exp: now + 3600 };
}

describe('JwtAuthenticator: verification', () => {
  type Case = { name: string; token: () => Promise<string>; code?: string; message?: RegExp; identity?: string };
  const cases: Case[] = [
    { name: 'accepts a good RS256 projected token and maps it to the SPIFFE identity', token: () => signToken(rsa, k8sClaims('foo', 'bar')), identity: 'spiffe://cluster.local/ns/foo/sa/bar' },
    { name: 'accepts a good ES256 projected token', token: () => signToken(ec, k8sClaims('default', 'sleep')), identity: 'spiffe://cluster.local/ns/default/sa/sleep' },
    { name: 'accepts a token expired by less than the clock skew', token: () => signToken(ec, k8sClaims(), { expIn: -10 }), identity: 'spiffe://cluster.local/ns/default/sa/sleep' },
    { name: 'refuses an expired token', token: () => signToken(rsa, k8sClaims(), { expIn: -3600 }), code: 'AUTH_INVALID', message: /^token expired$/ },
    { name: 'refuses a token expired by more than the default clock skew (30 s)', token: () => signToken(ec, k8sClaims(), { expIn: -60 }), code: 'AUTH_INVALID', message: /^token expired$/ },
    { name: 'refuses a token that is not yet valid', token: () => signToken(rsa, k8sClaims(), { nbfIn: 3600 }), code: 'AUTH_INVALID', message: /not yet valid/ },
    // jose alone lets a future iat through; Kubernetes' validation does not, beyond its leeway.
    { name: 'refuses a token issued in the future by more than the clock skew', token: () => signToken(rsa, k8sClaims(), { iatIn: 3600 }), code: 'AUTH_INVALID', message: /^token is issued in the future \(iat ahead of this CA's clock by more than auth\.clockSkew\)/ },
    { name: 'accepts a token issued in the future within the clock skew', token: () => signToken(rsa, k8sClaims(), { iatIn: 20 }), identity: 'spiffe://cluster.local/ns/default/sa/sleep' },
    { name: 'refuses a token for another audience', token: () => signToken(rsa, k8sClaims(), { aud: 'https://kubernetes.default.svc' }), code: 'AUTH_INVALID', message: /^token audience does not include istio-ca$/ },
    { name: 'refuses a token without exp', token: () => signToken(rsa, k8sClaims(), { expIn: null }), code: 'AUTH_INVALID', message: /exp claim required/ },
    { name: "refuses an unsigned token (alg 'none')", token: async () => handCrafted({ alg: 'none', kid: 'rsa-1' }, validPayload()), code: 'AUTH_INVALID', message: /alg 'none'/ },
    {
      name: 'refuses an HS256 token signed with the published key as the shared secret',
      token: async () => {
        const head = b64url({ alg: 'HS256', kid: 'rsa-1' });
        const body = b64url(validPayload());
        const sig = createHmac('sha256', JSON.stringify(rsa.jwk)).update(`${head}.${body}`).digest('base64url');
        return `${head}.${body}.${sig}`;
      },
      code: 'AUTH_INVALID',
      message: /shared-secret algorithm/,
    },
    // The reason names the algorithm, which came from the token: printable ASCII only.
    { name: 'refuses a shared-secret algorithm whose name holds a NUL, naming it without the NUL', token: async () => handCrafted({ alg: 'HS\u0000\n9', kid: 'rsa-1' }, validPayload(), 'AAAA'), code: 'AUTH_INVALID', message: /^token uses a shared-secret algorithm \(HS\?\?9\); only asymmetric signatures are accepted$/ },
    { name: 'refuses a token with an unlisted algorithm (RS1)', token: async () => handCrafted({ alg: 'RS1', kid: 'rsa-1' }, validPayload(), 'AAAA'), code: 'AUTH_INVALID', message: /algorithm is not allowed/ },
    // jose reports an unknown critical header as "not supported", as it does an algorithm: said apart.
    { name: 'refuses a token whose header lists an unknown critical extension, saying so', token: async () => handCrafted({ alg: 'RS256', kid: 'rsa-1', crit: ['foo'], foo: 1 }, validPayload(), 'AAAA'), code: 'AUTH_INVALID', message: /^token header lists a critical extension \(crit\) this CA does not support$/ },
    { name: 'refuses a token signed by another key under a published kid', token: () => signToken(stranger, k8sClaims()), code: 'AUTH_INVALID', message: /signature is invalid/ },
    {
      name: 'refuses a token whose payload was altered after signing',
      token: async () => {
        const [h, , s] = (await signToken(rsa, k8sClaims('default', 'sleep'))).split('.');
        return `${h}.${b64url({ ...validPayload(), ...k8sClaims('kube-system', 'admin') })}.${s}`;
      },
      code: 'AUTH_INVALID',
      message: /signature is invalid/,
    },
    { name: 'accepts a sub-only token', token: () => signToken(rsa, { sub: 'system:serviceaccount:team-a:api' }), identity: 'spiffe://cluster.local/ns/team-a/sa/api' },
    { name: 'refuses a sub with more parts than a namespace and a service account', token: () => signToken(rsa, { sub: 'system:serviceaccount:team-a:api:extra' }), code: 'AUTH_INVALID', message: /namespace and service account/ },
    {
      name: 'accepts legacy flat service-account claims',
      token: () => signToken(rsa, { 'kubernetes.io/serviceaccount/namespace': 'legacy', 'kubernetes.io/serviceaccount/service-account.name': 'old.sa' }),
      identity: 'spiffe://cluster.local/ns/legacy/sa/old.sa',
    },
    { name: 'refuses a token that names no service account', token: () => signToken(rsa, { sub: 'alice@example.com' }), code: 'AUTH_INVALID', message: /namespace and service account/ },
    { name: 'refuses a namespace that is not a DNS-1123 label', token: () => signToken(rsa, { sub: 'system:serviceaccount:Bad_NS:sa' }), code: 'AUTH_INVALID', message: /invalid Kubernetes namespace/ },
    { name: 'refuses a path-traversal service account', token: () => signToken(rsa, { sub: 'system:serviceaccount:ns:../../x' }), code: 'AUTH_INVALID' },
    {
      name: 'refuses claims where sub and kubernetes.io disagree',
      token: () => signToken(rsa, { ...k8sClaims('default', 'sleep'), sub: 'system:serviceaccount:kube-system:admin' }),
      code: 'AUTH_INVALID',
      message: /disagree/,
    },
    { name: 'refuses a sub naming another namespace than kubernetes.io', token: () => signToken(rsa, { ...k8sClaims('default', 'sleep'), sub: 'system:serviceaccount:other:sleep' }), code: 'AUTH_INVALID', message: /disagree/ },
    { name: 'refuses a sub naming another service account than kubernetes.io', token: () => signToken(rsa, { ...k8sClaims('default', 'sleep'), sub: 'system:serviceaccount:default:admin' }), code: 'AUTH_INVALID', message: /disagree/ },
  ];

  for (const c of cases) {
    it(c.name, async () => {
      const { auth } = make();
      await auth.start();
      const token = await c.token();
      const r = await outcome(auth.authenticate({ bearerToken: token }));
      if (c.identity) {
        expect(r.code).toBeUndefined();
        expect(r.caller?.identities).toEqual([c.identity]);
        expect(r.caller?.method).toBe('jwt');
      } else {
        expect(r.code).toBe(c.code);
        if (c.message) expect(r.message).toMatch(c.message);
        expect(r.message).not.toContain(token);
        for (const part of token.split('.').filter((p) => p.length > 8)) expect(r.message).not.toContain(part);
      }
    });
  }

  it('fills pod, node, namespace, service account and expiresAt from nested Kubernetes claims', async () => {
    const { auth } = make();
    await auth.start();
    const token = await signToken(ec, k8sClaims('bookinfo', 'reviews'), { expIn: 600 });
    const caller = await auth.authenticate({ bearerToken: token });
    expect(caller).toEqual({
      method: 'jwt',
      identities: ['spiffe://cluster.local/ns/bookinfo/sa/reviews'],
      namespace: 'bookinfo',
      serviceAccount: 'reviews',
      pod: { name: 'reviews-7d9c9f8b6-abcde', uid: '6a3b8f3e-0000-4000-8000-000000000002' },
      node: { name: 'worker-1', uid: '6a3b8f3e-0000-4000-8000-000000000003' },
      expiresAt: expect.any(Number),
    });
    expect(Math.abs((caller?.expiresAt ?? 0) - (Math.floor(Date.now() / 1000) + 600))).toBeLessThanOrEqual(2);
  });

  it('honours a custom audience list', async () => {
    const { auth } = make({ audiences: ['meshcert', 'istio-ca'] });
    await auth.start();
    const ok = await auth.authenticate({ bearerToken: await signToken(rsa, k8sClaims(), { aud: 'meshcert' }) });
    expect(ok?.identities).toHaveLength(1);
    const bad = await outcome(auth.authenticate({ bearerToken: await signToken(rsa, k8sClaims(), { aud: 'other' }) }));
    expect(bad.message).toBe('token audience does not include meshcert or istio-ca');
  });

  type NullCase = { name: string; token: () => Promise<string | undefined> };
  const notMine: NullCase[] = [
    { name: 'returns null without a bearer token', token: async () => undefined },
    { name: 'returns null for an empty bearer token', token: async () => '' },
    { name: 'returns null for a token that is not a JWT', token: async () => 'opaque-static-token' },
    { name: 'returns null for a token from an issuer it does not know (wrong iss)', token: () => signToken(rsa, k8sClaims(), { iss: 'https://evil.example' }) },
    { name: 'returns null for a JWT without iss', token: async () => handCrafted({ alg: 'RS256' }, { sub: 'x' }, 'AAAA') },
  ];
  for (const c of notMine) {
    it(c.name, async () => {
      const { auth } = make();
      await auth.start();
      const token = await c.token();
      expect(await auth.authenticate(token === undefined ? {} : { bearerToken: token })).toBeNull();
    });
  }

  it('routes each token to its issuer by iss and verifies with that issuer only', async () => {
    const other = await new JwksServer([rotated.jwk]).start();
    try {
      const auth = new JwtAuthenticator({
        issuers: [
          { issuer: ISSUER, jwksUri: server.url, trustDomain: TRUST_DOMAIN },
          { issuer: 'https://oidc.example', jwksUri: other.url, trustDomain: 'example.org', audiences: ['meshcert'] },
        ],
      });
      open.push(auth);
      await auth.start();
      const a = await auth.authenticate({ bearerToken: await signToken(rsa, k8sClaims('a', 'b')) });
      expect(a?.identities).toEqual(['spiffe://cluster.local/ns/a/sa/b']);
      const b = await auth.authenticate({ bearerToken: await signToken(rotated, k8sClaims('c', 'd'), { iss: 'https://oidc.example', aud: 'meshcert' }) });
      expect(b?.identities).toEqual(['spiffe://example.org/ns/c/sa/d']);
      // Claims issuer A but signed with issuer B's key: A's key set, fetched after the token was
      // issued, does not hold it.
      const cross = await outcome(auth.authenticate({ bearerToken: await signToken(rotated, k8sClaims(), { iatIn: -300 }) }));
      expect(cross.code).toBe('AUTH_INVALID');
    } finally {
      await other.stop();
    }
  });
});

describe('JwtAuthenticator: remote key set', () => {
  it("takes over a previous authenticator's keys for the same issuer and URL (a reload that rebuilt it): verifies at once, without a fetch, while the endpoint is down", async () => {
    const s = await new JwksServer([rsa.jwk]).start();
    const url = s.url;
    const { auth: before } = make({ jwksUri: url });
    await before.start();
    expect(s.hits).toBe(1);
    await s.stop();
    const token = await signToken(rsa, k8sClaims());
    const rebuilt = (issuers: Array<Partial<JwtAuthenticatorOptions['issuers'][number]>>): JwtAuthenticator => {
      const a = new JwtAuthenticator({ issuers: issuers.map((o) => ({ issuer: ISSUER, jwksUri: url, trustDomain: TRUST_DOMAIN, fetchTimeoutMs: 500, ...o })) });
      open.push(a);
      return a;
    };
    const adopted = rebuilt([{}, { issuer: 'https://other.example', jwksUri: server.url }]);
    adopted.adoptKeys([before]);
    await adopted.start();
    expect((await adopted.authenticate({ bearerToken: token }))?.identities).toEqual(['spiffe://cluster.local/ns/default/sa/sleep']);
    // Another URL for the issuer is another key set: nothing taken over, and the endpoint is down.
    const moved = rebuilt([{ jwksUri: `${url}/moved` }]);
    moved.adoptKeys([before]);
    await moved.start();
    expect((await outcome(moved.authenticate({ bearerToken: token }))).code).toBe('AUTH_BACKEND_UNAVAILABLE');
  });

  it('reads a key set taken over from a closed (retired) build again when it is older than the rate limit allows: a key withdrawn since no longer verifies; a failed read keeps the set; one from a build still running is not read again', async () => {
    const s = await new JwksServer([rsa.jwk, rotated.jwk]).start();
    try {
      const { auth: before } = make({ jwksUri: s.url });
      await before.start();
      expect(s.hits).toBe(1);
      // rsa's key withdrawn (leaked, say) after the build holding the set was retired.
      s.keys = [rotated.jwk];
      const token = await signToken(rsa, k8sClaims());
      const later = (): JwtAuthenticator => {
        // A minute on: past the 30 s rate limit, before the 5-minute refresh.
        const a = new JwtAuthenticator({ issuers: [{ issuer: ISSUER, jwksUri: s.url, trustDomain: TRUST_DOMAIN, fetchTimeoutMs: 500 }], now: () => Date.now() + 60_000 });
        open.push(a);
        a.adoptKeys([before]);
        return a;
      };
      // From the build in force (still refreshing on its own timer): no read, the reload does not wait.
      const fromLive = later();
      await fromLive.start();
      expect(s.hits).toBe(1);
      // From a retired one, closed since: read again.
      before.close();
      const readAgain = later();
      await readAgain.start();
      expect(s.hits).toBe(2);
      expect((await outcome(readAgain.authenticate({ bearerToken: token }))).caller).toBeUndefined();
      expect((await readAgain.authenticate({ bearerToken: await signToken(rotated, k8sClaims()) }))?.identities).toEqual(['spiffe://cluster.local/ns/default/sa/sleep']);
      // The endpoint down: the set taken over still verifies.
      await s.stop();
      const down = later();
      await down.start();
      expect((await down.authenticate({ bearerToken: token }))?.identities).toEqual(['spiffe://cluster.local/ns/default/sa/sleep']);
    } finally {
      await s.stop();
    }
  });

  it('answers a token signed with a key published after the last fetch UNAVAILABLE while the rate limit holds the refresh back, and fetches when it allows', async () => {
    const s = await new JwksServer([rsa.jwk]).start();
    try {
      const { auth } = make({ jwksUri: s.url, minRefreshIntervalMs: 500 });
      await auth.start();
      s.keys = [rsa.jwk, rotated.jwk];
      const token = await signToken(rotated, k8sClaims());
      // istio-agent never retries UNAUTHENTICATED: a key newer than the set must not be refused for good.
      const early = await outcome(auth.authenticate({ bearerToken: token }));
      expect(early.code).toBe('AUTH_BACKEND_UNAVAILABLE');
      expect(early.message).toMatch(/not in the issuer's key set yet; it is fetched again within 1 s, retry then/);
      expect(s.hits).toBe(1);
      // The refresh runs by itself once the limit allows, so the agent's retry then succeeds.
      await expect.poll(() => s.hits, { timeout: 5_000 }).toBe(2);
      expect((await auth.authenticate({ bearerToken: token }))?.identities).toEqual(['spiffe://cluster.local/ns/default/sa/sleep']);
      expect(s.hits).toBe(2);
    } finally {
      await s.stop();
    }
  });

  it('refuses an unknown key for good when the token claims to be issued further ahead than clocks drift (no issuer signs from the future)', async () => {
    const s = await new JwksServer([rsa.jwk]).start();
    try {
      const { auth } = make({ jwksUri: s.url, minRefreshIntervalMs: 500 });
      await auth.start();
      const ahead = await outcome(auth.authenticate({ bearerToken: await signToken(rotated, k8sClaims(), { iatIn: 3600 }) }));
      expect([ahead.code, ahead.message]).toEqual(['AUTH_INVALID', "token signing key (kid) is not in the issuer's key set"]);
      // Within the clock margin it may be a key just published: retry.
      expect((await outcome(auth.authenticate({ bearerToken: await signToken(rotated, k8sClaims(), { iatIn: 30 }) }))).code).toBe('AUTH_BACKEND_UNAVAILABLE');
    } finally {
      await s.stop();
    }
  });

  it('answers UNAVAILABLE when the fetch that just answered began before the token was issued and lacks its key', async () => {
    const s = await new JwksServer([rsa.jwk]).start();
    try {
      const { auth, clock } = make({ jwksUri: s.url });
      await auth.start();
      clock.offset = 31_000; // a refresh is allowed: it runs, and the key is not there yet
      const issuedAfterFetch = await signToken(rotated, k8sClaims(), { iatIn: 40 });
      const r = await outcome(auth.authenticate({ bearerToken: issuedAfterFetch }));
      expect(s.hits).toBe(2);
      expect(r.code).toBe('AUTH_BACKEND_UNAVAILABLE');
      // Issued well before that fetch began (more than the clock margin): the issuer did not publish its key.
      clock.offset = 130_000;
      const older = await signToken(rotated, k8sClaims(), { iatIn: 40 });
      expect((await outcome(auth.authenticate({ bearerToken: older }))).code).toBe('AUTH_INVALID');
    } finally {
      await s.stop();
    }
  });

  it('changes its cache generation when a refresh changes the key set, and only then', async () => {
    const s = await new JwksServer([rsa.jwk]).start();
    try {
      const { auth, clock } = make({ jwksUri: s.url });
      await auth.start();
      const before = auth.cacheGeneration;
      const unknown = await signToken(rotated, k8sClaims(), { kid: 'not-published', iatIn: -300 });
      clock.offset = 31_000;
      await outcome(auth.authenticate({ bearerToken: unknown })); // refetches the same set
      expect(s.hits).toBe(2);
      expect(auth.cacheGeneration).toBe(before);
      s.keys = [rotated.jwk];
      clock.offset = 62_000;
      await outcome(auth.authenticate({ bearerToken: unknown })); // refetches a set without rsa-1
      expect(s.hits).toBe(3);
      expect(auth.cacheGeneration).not.toBe(before);
    } finally {
      await s.stop();
    }
  });

  it('stops a cached token from authenticating once its signing key is removed from the key set', async () => {
    const s = await new JwksServer([rsa.jwk]).start();
    try {
      const { auth, clock } = make({ jwksUri: s.url });
      await auth.start();
      const chain = new AuthChain({ clusters: { Kubernetes: [auth] }, cache: new TokenCache({ maxTtlMs: 600_000 }) });
      const token = await signToken(rsa, k8sClaims(), { iatIn: -300 });
      expect((await chain.authenticate({ bearerToken: token })).identities).toEqual(['spiffe://cluster.local/ns/default/sa/sleep']);
      expect((await chain.authenticate({ bearerToken: token })).identities).toEqual(['spiffe://cluster.local/ns/default/sa/sleep']);
      expect(s.hits).toBe(1); // the second call was the cache's

      s.keys = [rotated.jwk]; // the issuer withdraws rsa-1 (say, after a compromise)
      clock.offset = 31_000;
      await outcome(chain.authenticate({ bearerToken: await signToken(rotated, k8sClaims(), { kid: 'not-published', iatIn: -300 }) }));
      expect(s.hits).toBe(2);
      const after = await outcome(chain.authenticate({ bearerToken: token }));
      expect(after.code).toBe('AUTH_INVALID');
      expect(after.message).toMatch(/kid/);
    } finally {
      await s.stop();
    }
  });

  it('fetches the key set once at start', async () => {
    const s = await new JwksServer([rsa.jwk]).start();
    try {
      const { auth } = make({ jwksUri: s.url });
      await auth.start();
      await auth.start();
      await auth.authenticate({ bearerToken: await signToken(rsa, k8sClaims()) });
      await auth.authenticate({ bearerToken: await signToken(rsa, k8sClaims()) });
      expect(s.hits).toBe(1);
    } finally {
      await s.stop();
    }
  });

  it('picks up a rotated key when a token carries an unknown kid', async () => {
    const s = await new JwksServer([rsa.jwk]).start();
    try {
      const { auth, clock } = make({ jwksUri: s.url });
      await auth.start();
      s.keys = [rsa.jwk, rotated.jwk];
      clock.offset = 31_000;
      const caller = await auth.authenticate({ bearerToken: await signToken(rotated, k8sClaims()) });
      expect(caller?.identities).toEqual(['spiffe://cluster.local/ns/default/sa/sleep']);
      expect(s.hits).toBe(2);
    } finally {
      await s.stop();
    }
  });

  it('rate-limits refreshes caused by unknown kids and shares one fetch between concurrent requests', async () => {
    const s = await new JwksServer([rsa.jwk]).start();
    try {
      const { auth, clock } = make({ jwksUri: s.url });
      await auth.start();
      expect(s.hits).toBe(1);
      // Issued before the key set was fetched, so its key is not a newly published one.
      const unknown = await signToken(rotated, k8sClaims(), { kid: 'not-published', iatIn: -300 });

      // Within the interval after start: no fetch at all.
      expect((await outcome(auth.authenticate({ bearerToken: unknown }))).code).toBe('AUTH_INVALID');
      expect(s.hits).toBe(1);

      clock.offset = 31_000;
      const burst = await Promise.all(Array.from({ length: 20 }, () => outcome(auth.authenticate({ bearerToken: unknown }))));
      expect(burst.every((r) => r.code === 'AUTH_INVALID')).toBe(true);
      expect(burst[0]?.message).toMatch(/kid/);
      expect(s.hits).toBe(2);

      clock.offset = 45_000;
      await outcome(auth.authenticate({ bearerToken: unknown }));
      expect(s.hits).toBe(2);

      clock.offset = 62_000;
      await outcome(auth.authenticate({ bearerToken: unknown }));
      expect(s.hits).toBe(3);
    } finally {
      await s.stop();
    }
  });

  it('keeps the last good key set when the endpoint goes down', async () => {
    const s = await new JwksServer([rsa.jwk]).start();
    const { auth, clock, failures } = make({ jwksUri: s.url });
    await auth.start();
    await s.stop();
    clock.offset = 31_000;

    const unknown = await outcome(auth.authenticate({ bearerToken: await signToken(rotated, k8sClaims()) }));
    expect(unknown.code).toBe('AUTH_BACKEND_UNAVAILABLE');
    expect(auth.refreshFailures).toBe(1);
    expect(failures).toEqual([ISSUER]);

    const known = await auth.authenticate({ bearerToken: await signToken(rsa, k8sClaims()) });
    expect(known?.identities).toEqual(['spiffe://cluster.local/ns/default/sa/sleep']);
  });

  it('keeps the last good key set when the endpoint answers HTTP 500', async () => {
    const s = await new JwksServer([rsa.jwk]).start();
    try {
      const { auth, clock } = make({ jwksUri: s.url });
      await auth.start();
      s.status = 500;
      clock.offset = 31_000;
      expect((await outcome(auth.authenticate({ bearerToken: await signToken(rotated, k8sClaims()) }))).code).toBe('AUTH_BACKEND_UNAVAILABLE');
      expect(auth.refreshFailures).toBe(1);
      expect((await auth.authenticate({ bearerToken: await signToken(rsa, k8sClaims()) }))?.method).toBe('jwt');
    } finally {
      await s.stop();
    }
  });

  it('reports AUTH_BACKEND_UNAVAILABLE when the endpoint was down from the start, then recovers', async () => {
    const port = await closedPort();
    const { auth, clock, failures } = make({ jwksUri: `http://127.0.0.1:${port}/jwks` });
    await expect(auth.start()).resolves.toBeUndefined();
    expect(auth.refreshFailures).toBe(1);
    const token = await signToken(rsa, k8sClaims());
    const r = await outcome(auth.authenticate({ bearerToken: token }));
    expect(r.code).toBe('AUTH_BACKEND_UNAVAILABLE');
    expect(r.message).not.toContain(token);
    expect(auth.refreshFailures).toBe(1); // rate limited: no second fetch yet

    const s = await new JwksServer([rsa.jwk]).start(port);
    try {
      clock.offset = 31_000;
      expect((await auth.authenticate({ bearerToken: token }))?.method).toBe('jwt');
      expect(failures).toEqual([ISSUER]);
    } finally {
      await s.stop();
    }
  });

  it('gives up on a JWKS endpoint that does not answer within the fetch timeout', async () => {
    const hanging = http.createServer(() => undefined);
    await new Promise<void>((resolve) => hanging.listen(0, '127.0.0.1', resolve));
    try {
      const { auth } = make({ jwksUri: `http://127.0.0.1:${(hanging.address() as AddressInfo).port}/jwks`, fetchTimeoutMs: 150 });
      const t0 = Date.now();
      await auth.start();
      expect(Date.now() - t0).toBeLessThan(3_000);
      expect(auth.refreshFailures).toBe(1);
    } finally {
      hanging.closeAllConnections();
      await new Promise<void>((resolve) => hanging.close(() => resolve()));
    }
  });

  it.each([
    // To a working JWKS: following it would succeed.
    ['redirects (to wherever: configure the final URL)', (res: http.ServerResponse, good: string) => res.writeHead(302, { location: good }).end()],
    [
      'sends a body larger than 1 MiB (an endless one is cut off, not buffered)',
      (res: http.ServerResponse) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        const chunk = Buffer.alloc(64 * 1024, 0x20);
        const pump = (): void => {
          while (!res.destroyed && res.write(chunk));
          if (!res.destroyed) res.once('drain', pump);
        };
        pump();
      },
    ],
  ])('refuses a JWKS endpoint that %s', async (_name, handle) => {
    const good = await new JwksServer([rsa.jwk]).start();
    const server = http.createServer((_req, res) => handle(res, good.url));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const { auth } = make({ jwksUri: `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks` });
      await auth.start();
      expect(auth.refreshFailures).toBe(1);
      const r = await outcome(auth.authenticate({ bearerToken: await signToken(rsa, k8sClaims()) }));
      expect(r.code).toBe('AUTH_BACKEND_UNAVAILABLE');
    } finally {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await good.stop();
    }
  });

  it('refreshes periodically and stops after close()', async () => {
    const s = await new JwksServer([rsa.jwk]).start();
    try {
      const { auth } = make({ jwksUri: s.url, refreshIntervalMs: 40 });
      await auth.start();
      await new Promise((r) => setTimeout(r, 220));
      expect(s.hits).toBeGreaterThanOrEqual(2);
      auth.close();
      const after = s.hits;
      await new Promise((r) => setTimeout(r, 150));
      expect(s.hits).toBeLessThanOrEqual(after + 1);
    } finally {
      await s.stop();
    }
  });

  it('fetches lazily when start() was never called', async () => {
    const s = await new JwksServer([ec.jwk]).start();
    try {
      const { auth } = make({ jwksUri: s.url });
      expect((await auth.authenticate({ bearerToken: await signToken(ec, k8sClaims()) }))?.method).toBe('jwt');
      expect(s.hits).toBe(1);
    } finally {
      await s.stop();
    }
  });
});

describe('JwtAuthenticator: key set from a file', () => {
  it('reads the file at construction and puts rotated keys in force when a prepared reload is committed', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'meshcert-jwks-'));
    const file = join(dir, 'jwks.json');
    writeFileSync(file, JSON.stringify({ keys: [rsa.jwk] }));
    const auth = new JwtAuthenticator({ issuers: [{ issuer: ISSUER, jwksFile: file, trustDomain: TRUST_DOMAIN }] });
    try {
      expect((await auth.authenticate({ bearerToken: await signToken(rsa, k8sClaims()) }))?.method).toBe('jwt');
      const rotatedToken = await signToken(rotated, k8sClaims());
      expect((await outcome(auth.authenticate({ bearerToken: rotatedToken }))).code).toBe('AUTH_INVALID');

      writeFileSync(file, JSON.stringify({ keys: [rsa.jwk, rotated.jwk] }));
      const commit = auth.prepareReload();
      // Read, not yet in force (a reload is applied whole, after everything else loaded).
      expect((await outcome(auth.authenticate({ bearerToken: rotatedToken }))).code).toBe('AUTH_INVALID');
      const generation = auth.cacheGeneration;
      commit();
      expect((await auth.authenticate({ bearerToken: rotatedToken }))?.method).toBe('jwt');
      expect(auth.cacheGeneration).not.toBe(generation);
      // The same keys again: nothing changes, cached verifications stay.
      const inForce = auth.cacheGeneration;
      auth.prepareReload()();
      expect(auth.cacheGeneration).toBe(inForce);

      writeFileSync(file, 'not json');
      expect(() => auth.prepareReload()).toThrow(/jwksFile/);
      expect((await auth.authenticate({ bearerToken: rotatedToken }))?.method).toBe('jwt');
    } finally {
      auth.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('reads every key file before putting any in force: one unreadable file changes no issuer', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'meshcert-jwks-'));
    const [a, b] = [join(dir, 'a.json'), join(dir, 'b.json')];
    writeFileSync(a, JSON.stringify({ keys: [rsa.jwk] }));
    writeFileSync(b, JSON.stringify({ keys: [rsa.jwk] }));
    const auth = new JwtAuthenticator({
      issuers: [
        { issuer: ISSUER, jwksFile: a, trustDomain: TRUST_DOMAIN },
        { issuer: 'https://other.example', jwksFile: b, trustDomain: TRUST_DOMAIN },
      ],
    });
    try {
      const token = await signToken(rsa, k8sClaims());
      writeFileSync(a, JSON.stringify({ keys: [rotated.jwk] })); // would withdraw rsa-1 for ISSUER
      writeFileSync(b, 'not json');
      expect(() => auth.prepareReload()).toThrow(/b\.json/);
      expect((await auth.authenticate({ bearerToken: token }))?.method).toBe('jwt');
    } finally {
      auth.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('JwtAuthenticator: a token without a kid', () => {
  it('is verified with each key of its algorithm in turn when several fit (as go-oidc does), and refused only when none verifies it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'meshcert-jwks-'));
    const file = join(dir, 'jwks.json');
    const [a, b, other] = await Promise.all([signingKey('ES256', 'a'), signingKey('ES256', 'b'), signingKey('ES256', 'c')]);
    const bare = (k: SigningKey) => Object.fromEntries(Object.entries(k.jwk).filter(([name]) => name !== 'kid'));
    writeFileSync(file, JSON.stringify({ keys: [bare(a), bare(b), rsa.jwk] }));
    const auth = new JwtAuthenticator({ issuers: [{ issuer: ISSUER, jwksFile: file, trustDomain: TRUST_DOMAIN }] });
    try {
      for (const k of [a, b]) {
        const caller = await auth.authenticate({ bearerToken: await signToken(k, k8sClaims('default', `by-${k.kid}`), { kid: null }) });
        expect(caller?.identities).toEqual([`spiffe://cluster.local/ns/default/sa/by-${k.kid}`]);
      }
      expect(await outcome(auth.authenticate({ bearerToken: await signToken(other, k8sClaims(), { kid: null }) }))).toEqual({ code: 'AUTH_INVALID', message: 'token signature is invalid' });
      // A claim's failure is the token's whichever key verifies it, not a signature's.
      expect(await outcome(auth.authenticate({ bearerToken: await signToken(b, k8sClaims(), { kid: null, expIn: -3600 }) }))).toMatchObject({ code: 'AUTH_INVALID', message: expect.stringMatching(/expired/) });
    } finally {
      auth.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('JwtAuthenticator: configuration', () => {
  const base = { issuer: ISSUER, trustDomain: TRUST_DOMAIN };
  const cases: { name: string; issuers: unknown[]; error: RegExp }[] = [
    { name: 'refuses both jwksUri and jwksFile', issuers: [{ ...base, jwksUri: 'https://x/jwks', jwksFile: '/tmp/x' }], error: /exactly one of jwksUri or jwksFile/ },
    { name: 'refuses neither jwksUri nor jwksFile', issuers: [{ ...base }], error: /exactly one of jwksUri or jwksFile/ },
    { name: 'refuses a jwksUri that is not a URL', issuers: [{ ...base, jwksUri: 'not a url' }], error: /jwksUri/ },
    { name: 'refuses a file: jwksUri', issuers: [{ ...base, jwksUri: 'file:///etc/passwd' }], error: /jwksUri must be an https/ },
    { name: 'refuses a missing issuer', issuers: [{ trustDomain: TRUST_DOMAIN, jwksUri: 'https://x/jwks' }], error: /issuer must be a non-empty string/ },
    { name: 'refuses an invalid trust domain', issuers: [{ ...base, trustDomain: 'Cluster.Local', jwksUri: 'https://x/jwks' }], error: /trustDomain/ },
    { name: 'refuses an empty audience list', issuers: [{ ...base, audiences: [], jwksUri: 'https://x/jwks' }], error: /audiences/ },
    { name: 'refuses the same issuer twice', issuers: [{ ...base, jwksUri: 'https://x/jwks' }, { ...base, jwksUri: 'https://y/jwks' }], error: /configured twice/ },
    { name: 'refuses an unreadable jwksFile', issuers: [{ ...base, jwksFile: '/nonexistent/jwks.json' }], error: /jwksFile/ },
    { name: 'refuses no issuers', issuers: [], error: /non-empty list/ },
  ];
  for (const c of cases) {
    it(c.name, () => {
      expect(() => new JwtAuthenticator({ issuers: c.issuers as never })).toThrow(c.error);
    });
  }
});

describe('serviceAccountSpiffeId', () => {
  it('formats the Istio identity', () => {
    expect(serviceAccountSpiffeId('cluster.local', 'istio-system', 'ztunnel')).toBe('spiffe://cluster.local/ns/istio-system/sa/ztunnel');
  });
  it('refuses names outside the Kubernetes rules', () => {
    for (const [ns, sa] of [['', 'a'], ['a', ''], ['A', 'b'], ['a'.repeat(64), 'b'], ['ns', 'sa/x'], ['ns', '-sa']]) {
      expect(() => serviceAccountSpiffeId('cluster.local', ns as string, sa as string)).toThrow(CaError);
    }
  });
});

describe('JwtAuthenticator: arbitrary input', () => {
  it('returns null or throws a CaError for any bearer string', async () => {
    const { auth } = make();
    await auth.start();
    await fc.assert(
      fc.asyncProperty(fc.string({ maxLength: 300 }), async (token) => {
        try {
          const r = await auth.authenticate({ bearerToken: token });
          expect(r).toBeNull();
        } catch (err) {
          expect(err).toBeInstanceOf(CaError);
        }
      }),
      { numRuns: 300 },
    );
  });

  it('never accepts and only throws CaError for token-shaped input claiming the trusted issuer', async () => {
    const { auth } = make();
    await auth.start();
    const header = fc.record({ alg: fc.oneof(fc.constantFrom('none', 'HS256', 'RS256', 'ES256', 'EdDSA', 'PS512'), fc.string()), kid: fc.option(fc.constantFrom('rsa-1', 'ec-1', 'x'), { nil: undefined }) }, { requiredKeys: ['alg'] });
    const payload = fc.record({ iss: fc.constant(ISSUER), aud: fc.oneof(fc.constant('istio-ca'), fc.string()), exp: fc.oneof(fc.integer(), fc.constant(Math.floor(Date.now() / 1000) + 600)), sub: fc.string() }, { requiredKeys: ['iss'] });
    await fc.assert(
      fc.asyncProperty(header, payload, fc.base64String({ maxLength: 400 }), async (h, p, sig) => {
        const token = `${b64url(h)}.${b64url(p)}.${sig.replace(/=+$/, '').replace(/\+/g, '-').replace(/\//g, '_')}`;
        try {
          await auth.authenticate({ bearerToken: token });
          expect.unreachable('a forged token was accepted');
        } catch (err) {
          expect(err).toBeInstanceOf(CaError);
          expect(['AUTH_INVALID', 'AUTH_BACKEND_UNAVAILABLE']).toContain((err as CaError).code);
        }
      }),
      { numRuns: 200 },
    );
  });
});
