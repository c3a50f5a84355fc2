import { loadSync } from '@grpc/proto-loader';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
/** proto/ at the package root, found from this file in both src/ (tsx) and dist/ (built). */
export const PROTO_DIR = fileURLToPath(new URL('../../proto/', import.meta.url));
export const CA_PROTO = join(PROTO_DIR, 'istio/security/v1alpha1/ca.proto');
export const HEALTH_PROTO = join(PROTO_DIR, 'grpc/health/v1/health.proto');
/** int64 as string: validity_duration may be absurdly large and must not lose precision. */
const LOADER_OPTIONS = { keepCase: false, longs: String, enums: String, defaults: true, oneofs: true, includeDirs: [PROTO_DIR] };
export const CERTIFICATE_SERVICE = 'istio.v1.auth.IstioCertificateService';
export const HEALTH_SERVICE = 'grpc.health.v1.Health';
let cached;
/** The protos as proto-loader reads them (protobufjs codecs); shared by the server and grpc-js clients. */
export function protoDefinition() {
    cached ??= loadSync([CA_PROTO, HEALTH_PROTO], LOADER_OPTIONS);
    return cached;
}
/** A method as proto-loader defines it: path and both directions' protobufjs codecs. */
export function methodDefinition(service, method) {
    const def = protoDefinition()[service]?.[method];
    if (!def)
        throw new Error(`no method ${service}/${method} in the loaded protos`);
    return def;
}
/** A method's path and protobufjs codec, for the server. */
export function methodCodec(service, method) {
    const def = methodDefinition(service, method);
    return { path: def.path, deserialize: (b) => def.requestDeserialize(b), serialize: (r) => def.responseSerialize(r) };
}
/**
 * The keys Istio uses are strings; a value of another kind is kept as its JSON text so that a
 * present-but-odd key (say a numeric ImpersonatedIdentity) is still seen and refused, never ignored.
 */
export function flattenMetadata(m) {
    const out = {};
    for (const [k, v] of Object.entries(m?.fields ?? {})) {
        if (!v)
            continue;
        out[k] = typeof v.stringValue === 'string' && v.kind === 'stringValue' ? v.stringValue : JSON.stringify(v[(v.kind ?? 'stringValue')] ?? null);
    }
    return out;
}
//# sourceMappingURL=proto.js.map