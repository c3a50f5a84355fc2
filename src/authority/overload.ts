import { CaError } from '../errors/ca-error.js';

/**
 * Restart storms: thousands of agents ask at once. Rather than queue without limit, calls beyond
 * `maxInFlight`, or beyond `maxBytes` of request messages held at once, are refused at once with
 * OVERLOADED (UNAVAILABLE), which istio-agent retries with backoff, spreading the herd out.
 *
 * Two bounds because a call's memory is a fixed part (streams, parsed CSR, promises: about 10 KB
 * measured) plus its request, which a client chooses up to server.maxRequestBytes. Counting calls
 * alone would have to assume every request is as large as allowed, and so shed real storms of
 * ~3 KB requests long before memory is at risk; counting bytes lets those through and still holds
 * a flood of maximal requests to `maxBytes`. A call is always admitted when none is in flight, so
 * one request never waits on a budget smaller than itself.
 */
export class InFlightLimiter {
  private inFlight = 0;
  private bytes = 0;
  shed = 0;

  constructor(
    readonly maxInFlight: number,
    readonly maxBytes = Number.POSITIVE_INFINITY,
  ) {}

  /** Admits a call whose request message is `requestBytes` long: returns its release function, or throws OVERLOADED. */
  admit(requestBytes = 0): () => void {
    if (this.inFlight >= this.maxInFlight || (this.inFlight > 0 && this.bytes + requestBytes > this.maxBytes)) {
      this.shed++;
      throw new CaError('OVERLOADED', 'the CA is busy (too many certificate requests in flight); retry with backoff');
    }
    this.inFlight++;
    this.bytes += requestBytes;
    let released = false;
    return () => {
      if (!released) {
        released = true;
        this.inFlight--;
        this.bytes -= requestBytes;
      }
    };
  }

  get current(): number {
    return this.inFlight;
  }

  /** Request bytes held by the calls in flight. */
  get currentBytes(): number {
    return this.bytes;
  }
}

/**
 * Admission that also refuses, with OVERLOADED, while the process is short of memory
 * (src/runtime/heap-pressure.ts): a call in flight holds heap, and one refused is retried.
 */
export function admitUnlessShortOfMemory(memory: { readonly high: boolean } | undefined, admit: (requestBytes: number) => () => void): (requestBytes: number) => () => void {
  if (!memory) return admit;
  return (requestBytes) => {
    if (memory.high) throw new CaError('OVERLOADED', 'the CA is short of memory; retry with backoff');
    return admit(requestBytes);
  };
}

export interface RateLimitOptions {
  /** Sustained requests per second per identity. */
  readonly rate: number;
  readonly burst: number;
  /** Identities tracked at once (least recently seen evicted). */
  readonly maxKeys?: number;
  readonly now?: () => number;
}

/**
 * Token bucket per identity and, when known, per workload instance asking for it: one misbehaving
 * workload cannot monopolise the CA, and the replicas of a Deployment (one identity) restarting
 * together do not share one bucket, which would refuse all but a burst of them.
 */
export class IdentityRateLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();
  private readonly now: () => number;
  private readonly maxKeys: number;

  constructor(private readonly o: RateLimitOptions) {
    this.now = o.now ?? (() => performance.now());
    this.maxKeys = o.maxKeys ?? 100_000;
  }

  /** Throws RATE_LIMITED when the identity (as asked for by `instance`, when given) has no token left. */
  take(identity: string, instance?: string): void {
    const t = this.now();
    // A newline is in no SPIFFE ID: the key cannot be another identity's.
    const key = instance === undefined ? identity : `${identity}\n${instance}`;
    let b = this.buckets.get(key);
    if (b) {
      this.buckets.delete(key); // re-insert: Map order is our LRU order
      b.tokens = Math.min(this.o.burst, b.tokens + ((t - b.at) / 1000) * this.o.rate);
      b.at = t;
    } else {
      b = { tokens: this.o.burst, at: t };
      if (this.buckets.size >= this.maxKeys) this.buckets.delete(this.buckets.keys().next().value!);
    }
    this.buckets.set(key, b);
    if (b.tokens < 1) {
      throw new CaError('RATE_LIMITED', `too many certificate requests for ${identity}; at most ${this.o.rate}/s (burst ${this.o.burst})`);
    }
    b.tokens -= 1;
  }
}
