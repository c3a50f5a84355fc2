/**
 * The authentication in force, swapped whole by a hot reload. A call authenticates with the
 * authenticators in force when it began; those a reload retired (an issuer removed, a TokenReview
 * server changed) are closed once the last call using them has ended, not under it: closing a
 * TokenReview authenticator destroys its connections, which would fail a review in flight.
 */
import type { AuthChain } from './chain.js';
import type { AuthRequest, Caller } from './types.js';

/** An authenticator that holds timers or connections, keyed by the settings it was built from (equal keys: reusable). */
export interface AuthPart {
  readonly key: string;
  readonly authenticator: object;
  close(): void;
}

/** What buildAuthChain makes from a config. */
export interface BuiltAuth {
  readonly chain: AuthChain;
  /** The cluster an empty `clusterid` means. */
  readonly defaultCluster: string;
  /** Every part to close, once each (a part a later build reuses is the same object). */
  readonly parts: readonly AuthPart[];
  /** Re-reads every jwksFile and TokenReview CA file; returns what puts them in force, or throws changing nothing. */
  prepareKeyFiles(): () => void;
}

interface Held {
  readonly built: BuiltAuth;
  /** Calls authenticating with it now. */
  active: number;
  retired: boolean;
}

export class AuthInForce {
  private current: Held;
  /** The build the last swap retired, closed or not: a rollback takes over the key sets it held (JwtAuthenticator.adoptKeys). */
  private lastRetired: BuiltAuth | undefined;
  /** Retired builds with calls still under way. */
  private readonly draining = new Set<Held>();
  private closed = false;

  constructor(built: BuiltAuth) {
    this.current = { built, active: 0, retired: false };
  }

  get built(): BuiltAuth {
    return this.current.built;
  }

  get retired(): BuiltAuth | undefined {
    return this.lastRetired;
  }

  async authenticate(req: AuthRequest): Promise<Caller> {
    const held = this.current;
    held.active++;
    try {
      return await held.built.chain.authenticate(req);
    } finally {
      if (--held.active === 0 && held.retired) this.release(held);
    }
  }

  /** Puts `next` in force for every call from now on; the build before is closed once its calls end. */
  swap(next: BuiltAuth): void {
    // After close() (a reload finishing during shutdown) nothing new may keep timers running.
    if (this.closed) return this.closeParts(next.parts);
    const old = this.current;
    this.current = { built: next, active: 0, retired: false };
    this.lastRetired = old.built;
    old.retired = true;
    if (old.active === 0) this.release(old);
    else this.draining.add(old);
  }

  /** Closes what is in force and every retired build, calls under way or not (the server has drained them). */
  close(): void {
    this.closed = true;
    for (const held of [this.current, ...this.draining]) this.closeParts(held.built.parts);
    this.draining.clear();
  }

  /** Closes the parts of a retired build that no build still held shares. */
  private release(held: Held): void {
    // close() has closed every part already.
    if (this.closed) return;
    this.draining.delete(held);
    const kept = new Set<object>();
    for (const h of [this.current, ...this.draining]) for (const p of h.built.parts) kept.add(p.authenticator);
    this.closeParts(held.built.parts.filter((p) => !kept.has(p.authenticator)));
  }

  private closeParts(parts: readonly AuthPart[]): void {
    for (const p of parts) p.close();
  }
}
