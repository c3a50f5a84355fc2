import { CaError } from '../errors/ca-error.js';
/**
 * istiod's rule: <= 0 means the default; above the maximum is refused (istio-csr clamps instead,
 * and so does meshcert by default since istio-agent reads the real NotAfter and renews at half-life).
 * `requested` is the proto's int64 as a string or number, so absurd values never overflow.
 */
export function resolveLifetimeSeconds(requested, o) {
    let secs;
    try {
        secs = BigInt(requested ?? 0);
    }
    catch {
        throw new CaError('TTL_INVALID', 'validity_duration must be an integer number of seconds');
    }
    if (secs <= 0n)
        return o.defaultTtl;
    if (secs > BigInt(o.maxTtl)) {
        if (o.onTtlAboveMax === 'clamp')
            return o.maxTtl;
        throw new CaError('TTL_INVALID', `requested lifetime ${secs}s exceeds the maximum of ${o.maxTtl}s; ask for ${o.maxTtl}s or less`);
    }
    return Number(secs);
}
//# sourceMappingURL=lifetime.js.map