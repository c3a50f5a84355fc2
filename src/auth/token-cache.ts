/**
 * Bounded LRU cache of verified bearer tokens. Keys are SHA-256 digests of (scope, token):
 * the raw token is never stored. An entry lives until min(token exp, insertion + maxTtl).
 */
import { sha256Hex } from '../crypto/digest.js';
import type { Caller } from './types.js';

export interface TokenCacheOptions {
  /** Most entries kept; the least recently used is evicted first. Default 10 000. */
  maxEntries?: number;
  /** Longest an entry is trusted, whatever the token's exp. Default 60 000 ms. */
  maxTtlMs?: number;
  /** Clock in ms since epoch (tests). Default Date.now. */
  now?: () => number;
}

interface Entry {
  readonly caller: Caller;
  readonly expiresAtMs: number;
}

export class TokenCache {
  readonly maxEntries: number;
  readonly maxTtlMs: number;
  private readonly now: () => number;
  private readonly entries = new Map<string, Entry>();
  private hitCount = 0;
  private missCount = 0;

  constructor(opts: TokenCacheOptions = {}) {
    this.maxEntries = opts.maxEntries ?? 10_000;
    this.maxTtlMs = opts.maxTtlMs ?? 60_000;
    this.now = opts.now ?? Date.now;
    if (!Number.isInteger(this.maxEntries) || this.maxEntries < 0) throw new Error('tokenCache.maxEntries must be a non-negative integer');
    if (!Number.isFinite(this.maxTtlMs) || this.maxTtlMs < 0) throw new Error('tokenCache.maxTtlMs must be a non-negative number');
  }

  /** The cache key: hex SHA-256 over the length-prefixed scope and the token. */
  static keyFor(token: string, scope = ''): string {
    return sha256Hex(`${scope.length}:${scope}\0${token}`);
  }

  get size(): number {
    return this.entries.size;
  }

  get hits(): number {
    return this.hitCount;
  }

  get misses(): number {
    return this.missCount;
  }

  /** The cached caller for this token in this scope, if still valid. */
  get(token: string, scope = ''): Caller | undefined {
    const key = TokenCache.keyFor(token, scope);
    const e = this.entries.get(key);
    if (!e) {
      this.missCount++;
      return undefined;
    }
    if (this.now() >= e.expiresAtMs) {
      this.entries.delete(key);
      this.missCount++;
      return undefined;
    }
    // Refresh LRU position.
    this.entries.delete(key);
    this.entries.set(key, e);
    this.hitCount++;
    return e.caller;
  }

  /** Remembers a verified caller. Skipped when the credential is already expired or the cache is disabled. */
  set(token: string, caller: Caller, scope = ''): void {
    if (this.maxEntries === 0 || this.maxTtlMs === 0) return;
    const now = this.now();
    let expiresAtMs = now + this.maxTtlMs;
    if (typeof caller.expiresAt === 'number' && Number.isFinite(caller.expiresAt)) {
      expiresAtMs = Math.min(expiresAtMs, caller.expiresAt * 1000);
    }
    if (expiresAtMs <= now) return;
    const key = TokenCache.keyFor(token, scope);
    this.entries.delete(key);
    this.entries.set(key, { caller, expiresAtMs });
    while (this.entries.size > this.maxEntries) {
      const oldest = this.entries.keys().next().value as string;
      this.entries.delete(oldest);
    }
  }

  delete(token: string, scope = ''): void {
    this.entries.delete(TokenCache.keyFor(token, scope));
  }

  clear(): void {
    this.entries.clear();
  }
}
