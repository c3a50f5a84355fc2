import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CaError, SignedTokenRefusedError, SigningKeyPendingError } from '../../../src/errors/ca-error.js';
import { AuthChain, isPlausibleClusterId } from '../../../src/auth/chain.js';
import { Status } from '../../../src/grpc/codes.js';
import { toGrpcFailure } from '../../../src/grpc/status.js';
import type { AuthChainOptions } from '../../../src/auth/chain.js';
import { JwtAuthenticator } from '../../../src/auth/jwt.js';
import { TokenCache } from '../../../src/auth/token-cache.js';
import type { AuthRequest, Authenticator, Caller } from '../../../src/auth/types.js';
import { ISSUER, JwksServer, k8sClaims, signingKey, signToken, TRUST_DOMAIN } from './helpers.js';
import type { SigningKey } from './helpers.js';

const CALLER: Caller = { method: 'jwt', identities: ['spiffe://cluster.local/ns/a/sa/b'], namespace: 'a', serviceAccount: 'b', expiresAt: Math.floor(Date.now() / 1000) + 3600 };

type Behaviour = 'ok' | 'null' | 'invalid' | 'signed-invalid' | 'unavailable' | 'pending' | 'boom' | 'internal' | 'ok-cert' | 'revoked';

class Fake implements Authenticator {
  calls = 0;
  constructor(
    readonly name: string,
    private readonly behaviour: Behaviour,
    private readonly result: Caller = CALLER,
  ) {}
  async authenticate(req: AuthRequest): Promise<Caller | null> {
    this.calls++;
    switch (this.behaviour) {
      case 'ok':
        return req.bearerToken ? this.result : null;
      case 'ok-cert':
        return req.peerCertificates?.length ? { method: 'client-cert', identities: ['spiffe://cluster.local/ns/c/sa/d'] } : null;
      case 'null':
        return null;
      case 'invalid':
        throw new CaError('AUTH_INVALID', `${this.name}: token expired`);
      case 'signed-invalid':
        throw new SignedTokenRefusedError(`${this.name}: token audience does not include istio-ca`);
      case 'unavailable':
        throw new CaError('AUTH_BACKEND_UNAVAILABLE', `${this.name}: backend down`);
      case 'pending':
        throw new SigningKeyPendingError(`${this.name}: the token's signing key is not in the issuer's key set yet`);
      case 'boom':
        throw new TypeError('bug');
      case 'internal':
        throw new CaError('INTERNAL', `${this.name}: could not read the key store`);
      case 'revoked':
        throw Object.assign(new CaError('AUTH_INVALID', `${this.name}: client certificate is revoked`), { caller: 'spiffe://cluster.local/ns/vm/sa/db' });
    }
  }
}

async function outcome(p: Promise<Caller>): Promise<{ caller?: Caller; code?: string; message?: string }> {
  try {
    return { caller: await p };
  } catch (err) {
    if (!(err instanceof CaError)) throw err;
    return { code: err.code, message: err.message };
  }
}

describe('AuthChain: cluster selection', () => {
  const k8s = () => [new Fake('jwt', 'ok')];
  type Case = { name: string; options: () => AuthChainOptions; req: AuthRequest; code?: string; message?: RegExp };
  const cases: Case[] = [
    { name: 'uses the default cluster when clusterid is absent', options: () => ({ clusters: { Kubernetes: k8s(), east: [new Fake('x', 'invalid')] } }), req: { bearerToken: 't' } },
    { name: 'uses the default cluster when clusterid is empty', options: () => ({ clusters: new Map([['Kubernetes', k8s()]]) }), req: { bearerToken: 't', clusterId: '' } },
    { name: 'uses the only cluster as default whatever its name', options: () => ({ clusters: { prod: k8s() } }), req: { bearerToken: 't' } },
    { name: 'uses the named cluster', options: () => ({ clusters: { Kubernetes: [new Fake('x', 'invalid')], east: k8s() } }), req: { bearerToken: 't', clusterId: 'east' } },
    { name: 'refuses an unknown cluster as AUTH_INVALID', options: () => ({ clusters: { Kubernetes: k8s() } }), req: { bearerToken: 't', clusterId: 'mars' }, code: 'AUTH_INVALID', message: /unknown cluster "mars"/ },
    { name: 'does not echo an odd cluster id', options: () => ({ clusters: { Kubernetes: k8s() } }), req: { bearerToken: 't', clusterId: 'a\nb<script>' }, code: 'AUTH_INVALID', message: /^unknown cluster in the clusterid header$/ },
    { name: 'refuses an empty clusterid when there is no default cluster', options: () => ({ clusters: { east: k8s(), west: k8s() } }), req: { bearerToken: 't' }, code: 'AUTH_INVALID', message: /no default cluster/ },
    { name: 'uses an explicit default cluster', options: () => ({ clusters: { east: [new Fake('x', 'invalid')], west: k8s() }, defaultCluster: 'west' }), req: { bearerToken: 't' } },
    // A client certificate names no cluster (istiod's certificate authenticator ignores the header).
    { name: 'accepts a client certificate whatever cluster the header names', options: () => ({ clusters: { Kubernetes: k8s() }, clientCertificate: new Fake('cert', 'ok-cert') }), req: { clusterId: 'mars', peerCertificates: [Buffer.from('x')] } },
    { name: 'accepts a client certificate with no clusterid and no default cluster', options: () => ({ clusters: { east: k8s(), west: k8s() }, clientCertificate: new Fake('cert', 'ok-cert') }), req: { peerCertificates: [Buffer.from('x')] } },
    { name: 'says why a client certificate, the only credential, was refused, not the header', options: () => ({ clusters: { Kubernetes: k8s() }, clientCertificate: new Fake('cert', 'revoked') }), req: { clusterId: 'mars', peerCertificates: [Buffer.from('x')] }, code: 'AUTH_INVALID', message: /^cert: client certificate is revoked$/ },
    { name: 'names the unknown cluster when a token came beside a refused client certificate', options: () => ({ clusters: { Kubernetes: k8s() }, clientCertificate: new Fake('cert', 'revoked') }), req: { bearerToken: 't', clusterId: 'mars', peerCertificates: [Buffer.from('x')] }, code: 'AUTH_INVALID', message: /unknown cluster "mars"/ },
    { name: 'refuses a token for an unknown cluster even with the client-certificate authenticator on', options: () => ({ clusters: { Kubernetes: k8s() }, clientCertificate: new Fake('cert', 'ok-cert') }), req: { bearerToken: 't', clusterId: 'mars' }, code: 'AUTH_INVALID', message: /unknown cluster "mars"/ },
  ];
  for (const c of cases) {
    it(c.name, async () => {
      const r = await outcome(new AuthChain(c.options()).authenticate(c.req));
      expect(r.code).toBe(c.code);
      if (c.message) expect(r.message).toMatch(c.message);
    });
  }

  it('quotes an unknown cluster back only when it could be a cluster name: at most 63 letters, digits, dots, dashes or underscores', async () => {
    expect(isPlausibleClusterId('a'.repeat(63))).toBe(true);
    expect(isPlausibleClusterId('a'.repeat(64))).toBe(false);
    expect(isPlausibleClusterId('')).toBe(false);
    expect(isPlausibleClusterId('east-1.prod_a')).toBe(true);
    const chain = new AuthChain({ clusters: { Kubernetes: [new Fake('jwt', 'ok')] } });
    expect(await outcome(chain.authenticate({ bearerToken: 't', clusterId: 'm'.repeat(63) }))).toEqual({ code: 'AUTH_INVALID', message: `unknown cluster "${'m'.repeat(63)}" in the clusterid header` });
    expect(await outcome(chain.authenticate({ bearerToken: 't', clusterId: 'm'.repeat(64) }))).toEqual({ code: 'AUTH_INVALID', message: 'unknown cluster in the clusterid header' });
  });

  it('refuses a default cluster that is not configured', () => {
    expect(() => new AuthChain({ clusters: { east: [new Fake('a', 'ok')] }, defaultCluster: 'west' })).toThrow(/defaultCluster/);
  });

  it('refuses a cluster with no authenticators', () => {
    expect(() => new AuthChain({ clusters: { east: [] } })).toThrow(/at least one authenticator/);
    expect(() => new AuthChain({ clusters: {} })).toThrow(/at least one cluster/);
  });

  it('refuses clusters that are not a map, and a list holding something that is not an authenticator, saying which setting', () => {
    expect(() => new AuthChain({ clusters: null as unknown as AuthChainOptions['clusters'] })).toThrow(/^auth.clusters must map cluster names to authenticators$/);
    expect(() => new AuthChain({ clusters: { east: [new Fake('a', 'ok'), { name: 'x' } as unknown as Authenticator] } })).toThrow(/^auth.clusters\["east"\] holds something that is not an authenticator$/);
  });

  it("keeps its own copy of each cluster's authenticators: the caller changing its array afterwards changes nothing", async () => {
    const list: Authenticator[] = [new Fake('jwt', 'ok')];
    const chain = new AuthChain({ clusters: { Kubernetes: list }, cache: false });
    list[0] = new Fake('other', 'invalid');
    list.push(new Fake('more', 'invalid'));
    expect((await chain.authenticate({ bearerToken: 't' })).method).toBe('jwt');
  });
});

describe('AuthChain: outcome precedence', () => {
  type Case = { name: string; chain: Behaviour[]; req?: AuthRequest; code?: string; message?: RegExp; method?: string };
  const token = { bearerToken: 'some-token' };
  const cases: Case[] = [
    { name: 'first success wins after a null', chain: ['null', 'ok'], method: 'jwt' },
    { name: 'a later success wins over an earlier AUTH_INVALID', chain: ['invalid', 'ok'], method: 'jwt' },
    { name: 'a later success wins over an earlier backend failure', chain: ['unavailable', 'ok'], method: 'jwt' },
    { name: 'the client certificate is tried before tokens', chain: ['ok-cert', 'ok'], req: { bearerToken: 't', peerCertificates: [Buffer.from('x')] }, method: 'client-cert' },
    { name: 'backend unavailable wins over AUTH_INVALID when nothing succeeds', chain: ['invalid', 'unavailable'], code: 'AUTH_BACKEND_UNAVAILABLE' },
    { name: 'backend unavailable wins over AUTH_INVALID in the other order too', chain: ['unavailable', 'invalid'], code: 'AUTH_BACKEND_UNAVAILABLE' },
    { name: 'reports the first AUTH_INVALID reason', chain: ['null', 'invalid'], code: 'AUTH_INVALID', message: /^invalid-1: token expired$/ },
    // A key another authenticator waits for may be the token's (an unknown kid, say): retry.
    { name: 'a pending key read wins over AUTH_INVALID', chain: ['invalid', 'pending'], code: 'AUTH_BACKEND_UNAVAILABLE', message: /^pending-1:/ },
    // But not over a refusal of what a verified token says: that is final.
    { name: 'a refusal of a token whose signature verified wins over a pending key read', chain: ['signed-invalid', 'pending'], code: 'AUTH_INVALID', message: /^signed-invalid-0: token audience/ },
    { name: 'a refusal of a token whose signature verified wins over a pending key read in the other order too', chain: ['pending', 'invalid', 'signed-invalid'], code: 'AUTH_INVALID', message: /^signed-invalid-2: token audience/ },
    { name: 'a backend outage still wins over a refusal of a verified token', chain: ['signed-invalid', 'unavailable'], code: 'AUTH_BACKEND_UNAVAILABLE', message: /^unavailable-1: backend down$/ },
    { name: 'an unexpected exception becomes INTERNAL, not UNAUTHENTICATED', chain: ['boom', 'invalid'], code: 'INTERNAL', message: /^internal error while authenticating$/ },
    { name: 'an INTERNAL CaError wins over an earlier AUTH_INVALID', chain: ['invalid', 'internal'], code: 'INTERNAL', message: /^internal-1: could not read the key store$/ },
    { name: 'backend unavailable wins over an unexpected exception (the client retries)', chain: ['boom', 'unavailable'], code: 'AUTH_BACKEND_UNAVAILABLE', message: /^unavailable-1: backend down$/ },
    { name: 'backend unavailable wins over a pending key read, whose message it keeps', chain: ['pending', 'unavailable'], code: 'AUTH_BACKEND_UNAVAILABLE', message: /^unavailable-1: backend down$/ },
    { name: 'all null without a credential is AUTH_MISSING', chain: ['null', 'null'], req: {}, code: 'AUTH_MISSING', message: /^no credential: send a service-account token in the authorization header, or a client certificate issued by this CA$/ },
    { name: 'all null with an authorization header that is not Bearer says so', chain: ['null', 'null'], req: { authorizationNotBearer: true }, code: 'AUTH_MISSING', message: /^the authorization header is not "Bearer <token>"/ },
    { name: 'all null with a bearer token is AUTH_INVALID (untrusted issuer)', chain: ['null'], code: 'AUTH_INVALID', message: /not a JWT from a trusted issuer/ },
    { name: 'an empty bearer token counts as no credential', chain: ['ok'], req: { bearerToken: '' }, code: 'AUTH_MISSING' },
    { name: 'a client certificate the handshake refused, alone, is AUTH_INVALID with why', chain: ['null', 'null'], req: { peerCertificateRefused: 'CERT_HAS_EXPIRED' }, code: 'AUTH_INVALID', message: /^client certificate not accepted: it has expired; send a service-account token, or a current client certificate issued by this CA$/ },
    { name: 'an unknown handshake code is quoted only when it looks like one', chain: ['null'], req: { peerCertificateRefused: 'X509_V_ERR_NEW_THING' }, code: 'AUTH_INVALID', message: /could not verify it \(X509_V_ERR_NEW_THING\)/ },
    { name: 'anything else is not quoted', chain: ['null'], req: { peerCertificateRefused: 'weird <text>' }, code: 'AUTH_INVALID', message: /could not verify it \(unknown reason\)/ },
    { name: 'a token beside a refused client certificate decides', chain: ['null', 'ok'], req: { bearerToken: 't', peerCertificateRefused: 'CERT_HAS_EXPIRED' }, method: 'jwt' },
    { name: 'a bad token beside a refused client certificate gets the token\'s refusal', chain: ['null', 'invalid'], req: { bearerToken: 't', peerCertificateRefused: 'CERT_HAS_EXPIRED' }, code: 'AUTH_INVALID', message: /^invalid-1: token expired$/ },
  ];
  for (const c of cases) {
    it(c.name, async () => {
      const fakes = c.chain.map((b, i) => new Fake(`${b}-${i}`, b));
      const r = await outcome(new AuthChain({ clusters: { Kubernetes: fakes } }).authenticate(c.req ?? token));
      expect(r.code).toBe(c.code);
      if (c.message) expect(r.message).toMatch(c.message);
      if (c.method) expect(r.caller?.method).toBe(c.method);
    });
  }

  it('does not speak of a refused client certificate where client certificates are no credential (auth.clientCertificates off)', async () => {
    const chain = new AuthChain({ clusters: { Kubernetes: [new Fake('null-0', 'null')] }, clientCertificates: false });
    const r = await outcome(chain.authenticate({ peerCertificateRefused: 'CERT_HAS_EXPIRED' }));
    expect(r.code).toBe('AUTH_MISSING');
  });

  it('keeps the caller a rejection named on whichever error wins (a revoked certificate beside a token)', async () => {
    const named = async (chain: Behaviour[]): Promise<[string, string | undefined]> => {
      const fakes = chain.map((b, i) => new Fake(`${b}-${i}`, b));
      const err = await new AuthChain({ clusters: { Kubernetes: fakes } }).authenticate({ bearerToken: 't', peerCertificates: [Buffer.from('x')] }).then(() => undefined, (e: unknown) => e as CaError);
      return [err!.code, err!.caller];
    };
    const id = 'spiffe://cluster.local/ns/vm/sa/db';
    expect(await named(['revoked', 'invalid'])).toEqual(['AUTH_INVALID', id]);
    expect(await named(['revoked', 'unavailable'])).toEqual(['AUTH_BACKEND_UNAVAILABLE', id]);
    expect(await named(['revoked', 'boom'])).toEqual(['INTERNAL', id]);
    expect(await named(['invalid', 'unavailable'])).toEqual(['AUTH_BACKEND_UNAVAILABLE', undefined]);
    // A token that succeeds beside a revoked certificate authenticates the call.
    const fakes = [new Fake('cert', 'revoked'), new Fake('jwt', 'ok')];
    expect((await new AuthChain({ clusters: { Kubernetes: fakes } }).authenticate({ bearerToken: 't', peerCertificates: [Buffer.from('x')] })).method).toBe('jwt');
  });

  it('gives an oversized bearer token to no authenticator, and refuses the call for it unless a client certificate authenticates it', async () => {
    const seen: Array<string | undefined> = [];
    const fake = new Fake('jwt', 'ok');
    const spy = { name: 'jwt', authenticate: async (req: AuthRequest) => (seen.push(req.bearerToken), fake.authenticate(req)) };
    const r = await outcome(new AuthChain({ clusters: { Kubernetes: [spy] }, maxTokenLength: 100 }).authenticate({ bearerToken: 'x'.repeat(101) }));
    expect(r.code).toBe('AUTH_INVALID');
    expect(r.message).toBe('bearer token is longer than 100 characters');
    const thrown: unknown = await new AuthChain({ clusters: { Kubernetes: [new Fake('jwt', 'ok')] }, maxTokenLength: 100 }).authenticate({ bearerToken: 'x'.repeat(101) }).catch((e: unknown) => e);
    expect(toGrpcFailure(thrown)).toEqual({ code: Status.UNAUTHENTICATED, details: 'bearer token is longer than 100 characters', reason: 'AUTH_INVALID' });
    expect(seen).toEqual([undefined]);
    // As istiod tries each authenticator: a client certificate beside it renews.
    const chain = new AuthChain({ clusters: { Kubernetes: [new Fake('cert', 'ok-cert'), new Fake('jwt', 'ok')] }, maxTokenLength: 100 });
    expect((await chain.authenticate({ bearerToken: 'x'.repeat(101), peerCertificates: [Buffer.from('x')] })).method).toBe('client-cert');
    // A refused certificate's reason wins over the token's length.
    const revoked = await outcome(new AuthChain({ clusters: { Kubernetes: [new Fake('cert', 'revoked')] }, maxTokenLength: 100 }).authenticate({ bearerToken: 'x'.repeat(101), peerCertificates: [Buffer.from('x')] }));
    expect(revoked.message).toMatch(/revoked/);
  });
});

describe('AuthChain: token length', () => {
  it('gives a token of 16 384 characters (the default limit) to the authenticators, and refuses one longer', async () => {
    const seen: Array<number | undefined> = [];
    const fake = new Fake('jwt', 'ok');
    const spy = { name: 'jwt', authenticate: async (req: AuthRequest) => (seen.push(req.bearerToken?.length), fake.authenticate(req)) };
    const chain = new AuthChain({ clusters: { Kubernetes: [spy] }, cache: false });
    expect((await chain.authenticate({ bearerToken: 'x'.repeat(16_384) })).method).toBe('jwt');
    const r = await outcome(chain.authenticate({ bearerToken: 'x'.repeat(16_385) }));
    expect(r).toEqual({ code: 'AUTH_INVALID', message: 'bearer token is longer than 16384 characters' });
    expect(seen).toEqual([16_384, undefined]);
  });
});

describe('AuthChain: token cache', () => {
  it('a cache hit avoids verifying the token again', async () => {
    const fake = new Fake('jwt', 'ok');
    const chain = new AuthChain({ clusters: { Kubernetes: [fake] } });
    await chain.authenticate({ bearerToken: 't1' });
    await chain.authenticate({ bearerToken: 't1' });
    await chain.authenticate({ bearerToken: 't1', clusterId: 'Kubernetes' });
    expect(fake.calls).toBe(1);
    await chain.authenticate({ bearerToken: 't2' });
    expect(fake.calls).toBe(2);
  });

  it('keys the cache by cluster so one cluster cannot reuse another cluster’s verdict', async () => {
    const east = new Fake('jwt', 'ok', { ...CALLER, identities: ['spiffe://east.local/ns/a/sa/b'] });
    const west = new Fake('jwt', 'ok', { ...CALLER, identities: ['spiffe://west.local/ns/a/sa/b'] });
    const chain = new AuthChain({ clusters: { east: [east], west: [west] }, defaultCluster: 'east' });
    expect((await chain.authenticate({ bearerToken: 't', clusterId: 'east' })).identities).toEqual(['spiffe://east.local/ns/a/sa/b']);
    expect((await chain.authenticate({ bearerToken: 't', clusterId: 'west' })).identities).toEqual(['spiffe://west.local/ns/a/sa/b']);
    expect(east.calls + west.calls).toBe(2);
  });

  it("stops answering from the cache when the authenticator's cache generation changes (a signing key removed)", async () => {
    const fake = new Fake('jwt', 'ok');
    let generation = 1;
    const versioned: Authenticator = { name: 'jwt', authenticate: (req) => fake.authenticate(req), get cacheGeneration() { return generation; } };
    const chain = new AuthChain({ clusters: { Kubernetes: [versioned] } });
    await chain.authenticate({ bearerToken: 't' });
    await chain.authenticate({ bearerToken: 't' });
    expect(fake.calls).toBe(1);
    generation = 2;
    await chain.authenticate({ bearerToken: 't' });
    expect(fake.calls).toBe(2);
  });

  it('does not cache failures', async () => {
    const fake = new Fake('jwt', 'invalid');
    const chain = new AuthChain({ clusters: { Kubernetes: [fake] } });
    await outcome(chain.authenticate({ bearerToken: 't' }));
    await outcome(chain.authenticate({ bearerToken: 't' }));
    expect(fake.calls).toBe(2);
  });

  it('does not cache client-certificate results', async () => {
    const cert = new Fake('client-cert', 'ok-cert');
    const chain = new AuthChain({ clusters: { Kubernetes: [cert] } });
    const req = { bearerToken: 't', peerCertificates: [Buffer.from('x')] };
    await chain.authenticate(req);
    await chain.authenticate(req);
    expect(cert.calls).toBe(2);
  });

  it('honours the cache expiry (injected clock)', async () => {
    let now = 1_700_000_000_000;
    const fake = new Fake('jwt', 'ok', { ...CALLER, expiresAt: now / 1000 + 30 });
    const chain = new AuthChain({ clusters: { Kubernetes: [fake] }, cache: new TokenCache({ now: () => now }) });
    await chain.authenticate({ bearerToken: 't' });
    now += 29_000;
    await chain.authenticate({ bearerToken: 't' });
    expect(fake.calls).toBe(1);
    now += 1_000;
    await chain.authenticate({ bearerToken: 't' });
    expect(fake.calls).toBe(2);
  });

  it('can run without a cache', async () => {
    const fake = new Fake('jwt', 'ok');
    const chain = new AuthChain({ clusters: { Kubernetes: [fake] }, cache: false });
    await chain.authenticate({ bearerToken: 't' });
    await chain.authenticate({ bearerToken: 't' });
    expect(fake.calls).toBe(2);
  });
});

describe('AuthChain with a real JWT authenticator', () => {
  let key: SigningKey;
  let server: JwksServer;
  let jwt: JwtAuthenticator;

  beforeAll(async () => {
    key = await signingKey('RS256', 'k1');
    server = await new JwksServer([key.jwk]).start();
    jwt = new JwtAuthenticator({ issuers: [{ issuer: ISSUER, jwksUri: server.url, trustDomain: TRUST_DOMAIN }] });
    await jwt.start();
  });

  afterAll(async () => {
    jwt.close();
    await server.stop();
  });

  it('authenticates a projected token end to end', async () => {
    const chain = new AuthChain({ clusters: { Kubernetes: [jwt] } });
    const caller = await chain.authenticate({ bearerToken: await signToken(key, k8sClaims('ns1', 'sa1')), clusterId: 'Kubernetes' });
    expect(caller.identities).toEqual(['spiffe://cluster.local/ns/ns1/sa/sa1']);
  });

  it("refuses a token it verified for a wrong audience or lifetime as AUTH_INVALID, though another authenticator waits for a key read (TokenReview's pre-check of a fresh token)", async () => {
    const chain = new AuthChain({ clusters: { Kubernetes: [jwt, new Fake('tokenreview', 'pending')] } });
    const audience = await outcome(chain.authenticate({ bearerToken: await signToken(key, k8sClaims(), { aud: ['other'] }) }));
    expect(audience).toEqual({ code: 'AUTH_INVALID', message: 'token audience does not include istio-ca' });
    const expired = await outcome(chain.authenticate({ bearerToken: await signToken(key, k8sClaims(), { iatIn: -7200, expIn: -3600 }) }));
    expect(expired).toEqual({ code: 'AUTH_INVALID', message: 'token expired' });
    const disagree = await outcome(chain.authenticate({ bearerToken: await signToken(key, { ...k8sClaims('a', 'b'), sub: 'system:serviceaccount:kube-system:admin' }) }));
    expect(disagree).toEqual({ code: 'AUTH_INVALID', message: 'token claims disagree about the service account (sub vs kubernetes.io)' });
    // A signature that does not verify is no such verdict: the other authenticator's key read may settle it.
    const other = await signingKey('RS256', 'k1');
    const forged = await outcome(chain.authenticate({ bearerToken: await signToken(other, k8sClaims()) }));
    expect(forged.code).toBe('AUTH_BACKEND_UNAVAILABLE');
  });

  it('reports a token from an unknown issuer (wrong iss) as AUTH_INVALID', async () => {
    const chain = new AuthChain({ clusters: { Kubernetes: [jwt] } });
    const r = await outcome(chain.authenticate({ bearerToken: await signToken(key, k8sClaims(), { iss: 'https://other.example' }) }));
    expect(r.code).toBe('AUTH_INVALID');
  });

  it('never throws anything but a CaError for arbitrary bearer strings', async () => {
    const chain = new AuthChain({ clusters: { Kubernetes: [jwt, new Fake('tokenreview', 'invalid')] } });
    await fc.assert(
      fc.asyncProperty(fc.string({ maxLength: 2_000 }), fc.option(fc.string({ maxLength: 20 }), { nil: undefined }), async (token, clusterId) => {
        try {
          const caller = await chain.authenticate({ bearerToken: token, clusterId });
          expect.unreachable(`accepted ${JSON.stringify(caller)}`);
        } catch (err) {
          expect(err).toBeInstanceOf(CaError);
          expect(['AUTH_MISSING', 'AUTH_INVALID']).toContain((err as CaError).code);
          if (token.length >= 16) expect((err as CaError).message).not.toContain(token);
        }
      }),
      { numRuns: 500 },
    );
  });
});
