import { CaError } from '../errors/ca-error.js';
/**
 * Restart storms: thousands of agents ask at once. Rather than queue without limit (latency grows
 * until everyone times out), calls beyond `maxInFlight` are refused at once with OVERLOADED
 * (UNAVAILABLE), which istio-agent retries with backoff, spreading the herd out.
 */
export class InFlightLimiter {
    maxInFlight;
    inFlight = 0;
    shed = 0;
    constructor(maxInFlight) {
        this.maxInFlight = maxInFlight;
    }
    /** Returns the release function, or throws OVERLOADED. */
    admit() {
        if (this.inFlight >= this.maxInFlight) {
            this.shed++;
            throw new CaError('OVERLOADED', 'the CA is busy (too many certificate requests in flight); retry with backoff');
        }
        this.inFlight++;
        let released = false;
        return () => {
            if (!released) {
                released = true;
                this.inFlight--;
            }
        };
    }
    get current() {
        return this.inFlight;
    }
}
/** Token bucket per identity: one misbehaving workload cannot monopolise the CA. */
export class IdentityRateLimiter {
    o;
    buckets = new Map();
    now;
    maxKeys;
    constructor(o) {
        this.o = o;
        this.now = o.now ?? (() => performance.now());
        this.maxKeys = o.maxKeys ?? 100_000;
    }
    /** Throws RATE_LIMITED when the identity has no token left. */
    take(identity) {
        const t = this.now();
        let b = this.buckets.get(identity);
        if (b) {
            this.buckets.delete(identity); // re-insert: Map order is our LRU order
            b.tokens = Math.min(this.o.burst, b.tokens + ((t - b.at) / 1000) * this.o.rate);
            b.at = t;
        }
        else {
            b = { tokens: this.o.burst, at: t };
            if (this.buckets.size >= this.maxKeys)
                this.buckets.delete(this.buckets.keys().next().value);
        }
        this.buckets.set(identity, b);
        if (b.tokens < 1) {
            throw new CaError('RATE_LIMITED', `too many certificate requests for ${identity}; at most ${this.o.rate}/s (burst ${this.o.burst})`);
        }
        b.tokens -= 1;
    }
}
//# sourceMappingURL=overload.js.map