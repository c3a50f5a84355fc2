import { loadSync, type MethodDefinition, type PackageDefinition } from '@grpc/proto-loader';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import type { MethodCodec } from './server.js';
import { CERTIFICATE_REQUEST_WIRE, checkWire, HEALTH_CHECK_REQUEST_WIRE, type WireSchema } from './wire-check.js';

/** proto/ at the package root, found from this file in both src/ (tsx) and dist/ (built). */
export const PROTO_DIR = fileURLToPath(new URL('../../proto/', import.meta.url));
export const CA_PROTO = join(PROTO_DIR, 'istio/security/v1alpha1/ca.proto');
export const HEALTH_PROTO = join(PROTO_DIR, 'grpc/health/v1/health.proto');

/** int64 as string: validity_duration may be absurdly large and must not lose precision. */
const LOADER_OPTIONS = { keepCase: false, longs: String, enums: String, defaults: true, oneofs: true, includeDirs: [PROTO_DIR] };

export const CERTIFICATE_SERVICE = 'istio.v1.auth.IstioCertificateService';
export const HEALTH_SERVICE = 'grpc.health.v1.Health';

let cached: PackageDefinition | undefined;

/** The protos as proto-loader reads them (protobufjs codecs); shared by the server and grpc-js clients. */
export function protoDefinition(): PackageDefinition {
  cached ??= loadSync([CA_PROTO, HEALTH_PROTO], LOADER_OPTIONS);
  return cached;
}

/** A method as proto-loader defines it: path and both directions' protobufjs codecs. */
export function methodDefinition<Req, Res>(service: string, method: string): MethodDefinition<Req, Res> {
  const def = (protoDefinition()[service] as unknown as Record<string, MethodDefinition<Req, Res>> | undefined)?.[method];
  if (!def) throw new Error(`no method ${service}/${method} in the loaded protos`);
  return def;
}

/** The request messages the server checks as protobuf-go would before decoding (see wire-check.ts). */
const REQUEST_WIRE: Readonly<Record<string, WireSchema>> = {
  [`${CERTIFICATE_SERVICE}/CreateCertificate`]: CERTIFICATE_REQUEST_WIRE,
  [`${HEALTH_SERVICE}/Check`]: HEALTH_CHECK_REQUEST_WIRE,
  [`${HEALTH_SERVICE}/Watch`]: HEALTH_CHECK_REQUEST_WIRE,
};

/** A method's path and protobufjs codec, for the server: a request that is not well-formed protobuf is refused before decoding. */
export function methodCodec<Req, Res>(service: string, method: string): MethodCodec<Req, Res> {
  const def = methodDefinition<Req, Res>(service, method);
  const wire = REQUEST_WIRE[`${service}/${method}`];
  return {
    path: def.path,
    deserialize: (b) => def.requestDeserialize(wire ? checkWire(b, wire) : b),
    serialize: (r) => def.responseSerialize(r),
  };
}

/** Wire shapes as proto-loader decodes them (camelCase, longs as strings). */
export interface ProtoStructValue {
  kind?: string;
  stringValue?: string;
  numberValue?: number;
  boolValue?: boolean;
}
export interface IstioCertificateRequestMsg {
  csr: string;
  validityDuration: string;
  metadata?: { fields?: Record<string, ProtoStructValue> } | null;
}
export interface IstioCertificateResponseMsg {
  certChain: string[];
}

/**
 * The keys Istio uses are strings; a value of another kind is kept as its JSON text so that a
 * present-but-odd key (say a numeric ImpersonatedIdentity) is still seen and refused, never ignored.
 */
export function flattenMetadata(m: IstioCertificateRequestMsg['metadata']): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(m?.fields ?? {})) {
    if (!v) continue;
    out[k] = typeof v.stringValue === 'string' && v.kind === 'stringValue' ? v.stringValue : JSON.stringify(v[(v.kind ?? 'stringValue') as keyof ProtoStructValue] ?? null);
  }
  return out;
}
