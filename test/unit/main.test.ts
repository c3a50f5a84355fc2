import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JwtAuthenticator } from '../../src/auth/jwt.js';
import { TokenReviewAuthenticator } from '../../src/auth/tokenreview.js';
import { parseConfig } from '../../src/config/load.js';
import type { ConfigInput } from '../../src/config/schema.js';
import { createLogger } from '../../src/log/logger.js';
import { buildAuthChain } from '../../src/main.js';
import type { CaState } from '../../src/ca/state.js';
import { writeTestJwks } from '../support/harness.js';
import { JwksServer, k8sClaims, makeCert, signingKey, signToken } from './auth/helpers.js';

let dir: string;
beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'meshcert-build-auth-'));
  await writeTestJwks(join(dir, 'jwks.json'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const noState = (): Pick<CaState, 'issuers' | 'revocations'> => {
  throw new Error('not asked for in these tests');
};
const tokenReview = { apiServer: 'https://127.0.0.1:1', tokenFile: '/dev/null', verifySignatures: false };
function config(clusters: Array<Record<string, unknown>>): ReturnType<typeof parseConfig> {
  return parseConfig({ dataDir: join(dir, 'data'), auth: { clusters } } as ConfigInput);
}
const kinds = (parts: ReadonlyArray<{ authenticator: object }>): string[] => parts.map((p) => (p.authenticator instanceof JwtAuthenticator ? 'jwt' : p.authenticator instanceof TokenReviewAuthenticator ? 'tokenreview' : 'other'));

describe('buildAuthChain on a reload', () => {
  it('takes over the authenticators built from the same settings and makes the others anew; a failed build closes only what it made', async () => {
    const jwks = join(dir, 'jwks.json');
    const a = { name: 'Kubernetes', jwt: [{ issuer: 'https://a.test', jwksFile: jwks }], tokenReview };
    const b = { name: 'east', jwt: [{ issuer: 'https://b.test', jwksFile: jwks }] };
    const logger = createLogger('silent');
    const first = await buildAuthChain(config([a, b]), noState, logger);
    expect(kinds(first.parts)).toEqual(['jwt', 'tokenreview', 'jwt']);
    // The east cluster's issuer changes; the Kubernetes cluster's authenticators stay.
    const second = await buildAuthChain(config([a, { ...b, jwt: [{ issuer: 'https://c.test', jwksFile: jwks }] }]), noState, logger, undefined, first);
    expect(second.parts.map((p, i) => p.authenticator === first.parts[i]!.authenticator)).toEqual([true, true, false]);
    // A TokenReview setting changed: a new one.
    const third = await buildAuthChain(config([{ ...a, tokenReview: { ...tokenReview, timeout: '2s' } }]), noState, logger, undefined, second);
    expect(third.parts.map((p) => second.parts.some((q) => q.authenticator === p.authenticator))).toEqual([true, false]);
    // A build that fails (a key file missing in its last cluster) closes the TokenReview it made, not the one it took over.
    const closed: string[] = [];
    for (const p of third.parts) {
      const inner = p.close.bind(p);
      (p as { close: () => void }).close = () => {
        closed.push(`third:${kinds([p])[0]}`);
        inner();
      };
    }
    const made: TokenReviewAuthenticator[] = [];
    const close = TokenReviewAuthenticator.prototype.close;
    TokenReviewAuthenticator.prototype.close = function (this: TokenReviewAuthenticator) {
      made.push(this);
      close.call(this);
    };
    try {
      await expect(buildAuthChain(config([{ ...a, tokenReview: { ...tokenReview, timeout: '3s' } }, { ...b, jwt: [{ issuer: 'https://b.test', jwksFile: join(dir, 'missing.json') }] }]), noState, logger, undefined, third)).rejects.toThrow(/auth\.clusters "east": jwksFile .*missing\.json/);
    } finally {
      TokenReviewAuthenticator.prototype.close = close;
    }
    expect(closed).toEqual([]);
    expect(made).toHaveLength(1);
    expect(third.parts.some((p) => p.authenticator === made[0])).toBe(false);
    for (const built of [first, second, third]) built.parts.forEach((p) => p.close());
  });

  it("reads each TokenReview's caFile again when a reload prepares the files, and refuses the reload when one holds no certificate", async () => {
    const caFile = join(dir, 'apiserver-ca.crt');
    writeFileSync(caFile, (await makeCert({ name: 'cluster CA', ca: true })).pem);
    const built = await buildAuthChain(config([{ name: 'Kubernetes', tokenReview: { ...tokenReview, caFile } }]), noState, createLogger('silent'));
    try {
      built.prepareKeyFiles()();
      writeFileSync(caFile, '');
      expect(() => built.prepareKeyFiles()).toThrow(/^auth: tokenreview\.caFile .*apiserver-ca\.crt: holds no PEM certificate/);
    } finally {
      built.parts.forEach((p) => p.close());
    }
  });

  it("gives a rebuilt authenticator the key sets the builds before held for the same issuer and URL: the one in force's, and the one retired before it (a rejected reload rolled back)", async () => {
    const key = await signingKey('RS256', 'k1');
    const server = await new JwksServer([key.jwk]).start();
    const logger = createLogger('silent');
    const remote = { issuer: 'https://remote.test', jwksUri: server.url };
    const other = { issuer: 'https://other.test', jwksFile: join(dir, 'jwks.json') };
    const cluster = (jwt: object[]): Record<string, unknown> => ({ name: 'Kubernetes', jwt });
    const first = await buildAuthChain(config([cluster([remote])]), noState, logger);
    const token = await signToken(key, k8sClaims(), { iss: remote.issuer });
    const accepted = async (built: typeof first): Promise<string | undefined> => (await built.chain.authenticate({ bearerToken: token }).catch((e: { code: string }) => ({ identities: [e.code] }))).identities[0];
    expect(await accepted(first)).toBe('spiffe://cluster.local/ns/default/sa/sleep');
    await server.stop();
    // Its cluster changed (another issuer beside it): a new authenticator, with the keys held.
    const second = await buildAuthChain(config([cluster([remote, other])]), noState, logger, undefined, first);
    expect(second.parts[0]!.authenticator).not.toBe(first.parts[0]!.authenticator);
    expect(await accepted(second)).toBe('spiffe://cluster.local/ns/default/sa/sleep');
    // The issuer removed, then put back (a rollback): the build in force has no keys for it, the one retired before has.
    const third = await buildAuthChain(config([cluster([other])]), noState, logger, undefined, second);
    const back = await buildAuthChain(config([cluster([remote])]), noState, logger, undefined, third, [second]);
    expect(await accepted(back)).toBe('spiffe://cluster.local/ns/default/sa/sleep');
    const none = await buildAuthChain(config([cluster([remote])]), noState, logger, undefined, third);
    expect(await accepted(none)).toBe('AUTH_BACKEND_UNAVAILABLE');
    for (const built of [first, second, third, back, none]) built.parts.forEach((p) => p.close());
  }, 20_000);
});
