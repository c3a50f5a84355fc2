import { describe, expect, it } from 'vitest';
import { AuthChain } from '../../../src/auth/chain.js';
import { AuthInForce, type AuthPart, type BuiltAuth } from '../../../src/auth/in-force.js';
import type { Authenticator, Caller } from '../../../src/auth/types.js';

/** An authenticator whose verdicts wait until released, and a part that records its closing. */
function gated(name: string): { part: AuthPart & { closed: number }; release: () => void; started: () => number } {
  let waiting: Array<() => void> = [];
  let calls = 0;
  const authenticator: Authenticator = {
    name,
    authenticate: async () => {
      calls++;
      await new Promise<void>((r) => waiting.push(r));
      return { method: 'jwt', identities: [`spiffe://cluster.local/ns/${name}/sa/x`] } satisfies Caller;
    },
  };
  const part = {
    key: name,
    authenticator,
    closed: 0,
    close() {
      part.closed++;
    },
  };
  return {
    part,
    release: () => {
      waiting.forEach((r) => r());
      waiting = [];
    },
    started: () => calls,
  };
}

function build(...parts: AuthPart[]): BuiltAuth {
  return {
    chain: new AuthChain({ clusters: { Kubernetes: parts.map((p) => p.authenticator as Authenticator) }, cache: false }),
    defaultCluster: 'Kubernetes',
    parts,
    prepareKeyFiles: () => () => {},
  };
}

const req = { bearerToken: 'x.y.z' };
const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('AuthInForce', () => {
  it('serves each call with the build in force when it began, and closes a retired build once its last call ended', async () => {
    const a = gated('a');
    const b = gated('b');
    const auth = new AuthInForce(build(a.part));
    const before = auth.authenticate(req);
    await tick();
    auth.swap(build(b.part));
    const after = auth.authenticate(req);
    await tick();
    expect([a.started(), b.started()]).toEqual([1, 1]);
    // The call under way holds the retired build open.
    expect(a.part.closed).toBe(0);
    a.release();
    expect((await before).identities).toEqual(['spiffe://cluster.local/ns/a/sa/x']);
    expect(a.part.closed).toBe(1);
    b.release();
    expect((await after).identities).toEqual(['spiffe://cluster.local/ns/b/sa/x']);
    expect(b.part.closed).toBe(0);
    auth.close();
    expect([a.part.closed, b.part.closed]).toEqual([1, 1]);
  });

  it('closes a retired build with no call under way at once, but never a part the build in force (or a draining one) shares', async () => {
    const shared = gated('shared');
    const gone = gated('gone');
    const auth = new AuthInForce(build(shared.part, gone.part));
    auth.swap(build(shared.part));
    expect([shared.part.closed, gone.part.closed]).toEqual([0, 1]);
    // A draining build's parts are kept while a newer one drops them.
    const other = gated('other');
    const call = auth.authenticate(req);
    await tick();
    auth.swap(build(other.part));
    expect(shared.part.closed).toBe(0);
    shared.release();
    await call;
    expect(shared.part.closed).toBe(1);
    expect(other.part.closed).toBe(0);
  });

  it('keeps a part a draining build shares when a later retired build is released (two reloads in quick succession)', async () => {
    const shared = gated('shared');
    const c = gated('c');
    const auth = new AuthInForce(build(shared.part));
    const call = auth.authenticate(req);
    await tick();
    // The first build drains its call; the second shares its part and is retired at once, with no call.
    auth.swap(build(shared.part));
    auth.swap(build(c.part));
    expect(shared.part.closed).toBe(0);
    shared.release();
    await call;
    expect(shared.part.closed).toBe(1);
  });

  it('closes what is in force and every draining build at close(), and a build swapped in after it at once', async () => {
    const a = gated('a');
    const b = gated('b');
    const c = gated('c');
    const auth = new AuthInForce(build(a.part));
    const call = auth.authenticate(req);
    await tick();
    auth.swap(build(b.part));
    auth.close();
    expect([a.part.closed, b.part.closed]).toEqual([1, 1]);
    auth.swap(build(c.part));
    expect(c.part.closed).toBe(1);
    a.release();
    await call;
    // Not closed twice by the call that ended after close().
    expect(a.part.closed).toBe(1);
  });
});
