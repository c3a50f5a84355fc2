/**
 * Pre-generated requests for the timed phases: distinct CSRs (distinct SPIFFE IDs) and distinct
 * tokens. CSRs are encoded with meshcert's DER helpers and signed with Node's crypto, because the
 * generic libraries would take minutes for 10,000 of them. RSA keys come from a pool (making
 * 10,000 RSA keys takes minutes too): the server imports and verifies each CSR's key afresh
 * either way, so a pooled key costs the server exactly what a new one would. EC keys are all new.
 */
import { createPrivateKey, generateKeyPair, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { promisify } from 'node:util';
import { bitString, implicitPrimitive, oid, sequence, set, smallInteger, tlv, tlvParts, boolean, octetString, utf8String } from '../../src/x509/der.js';

const genKeyPair = promisify(generateKeyPair);

export type KeyKind = 'rsa2048' | 'ec256';

export interface BenchRequest {
  readonly csrPem: string;
  readonly token: string;
  readonly spiffeId: string;
  /** The CSR's public key (SubjectPublicKeyInfo DER): the leaf answered must carry it. */
  readonly spki: Buffer;
}

export interface TokenSigner {
  readonly kid: string;
  readonly alg: 'RS256' | 'ES256';
  readonly key: KeyObject;
  readonly jwk: Record<string, unknown>;
}

export const BENCH_ISSUER = 'https://kubernetes.default.svc.cluster.local';

export function makeTokenSigners(): TokenSigner[] {
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return [
    { kid: 'bench-rs256', alg: 'RS256', key: rsa.privateKey, jwk: { ...rsa.publicKey.export({ format: 'jwk' }), kid: 'bench-rs256', alg: 'RS256', use: 'sig' } },
    { kid: 'bench-es256', alg: 'ES256', key: ec.privateKey, jwk: { ...ec.publicKey.export({ format: 'jwk' }), kid: 'bench-es256', alg: 'ES256', use: 'sig' } },
  ];
}

const b64url = (b: Buffer | string): string => Buffer.from(b).toString('base64url');

/** A projected service-account token (RS256 or ES256, JOSE signature format). */
export function mintToken(s: TokenSigner, ns: string, sa: string, ttlSeconds = 3600): string {
  const now = Math.floor(Date.now() / 1000);
  const header = b64url(JSON.stringify({ alg: s.alg, kid: s.kid, typ: 'JWT' }));
  const payload = b64url(
    JSON.stringify({
      iss: BENCH_ISSUER,
      sub: `system:serviceaccount:${ns}:${sa}`,
      aud: ['istio-ca'],
      iat: now,
      nbf: now - 5,
      exp: now + ttlSeconds,
      'kubernetes.io': { namespace: ns, serviceaccount: { name: sa, uid: `uid-${ns}-${sa}` } },
    }),
  );
  const input = `${header}.${payload}`;
  const sig = s.alg === 'RS256' ? sign('sha256', Buffer.from(input), s.key) : sign('sha256', Buffer.from(input), { key: s.key, dsaEncoding: 'ieee-p1363' });
  return `${input}.${b64url(sig)}`;
}

const OID_EXT_REQ = '1.2.840.113549.1.9.14';
const OID_SAN = '2.5.29.17';
const OID_O = '2.5.4.10';
const RSA_SHA256 = sequence(oid('1.2.840.113549.1.1.11'), tlv(0x05, Buffer.alloc(0)));
const ECDSA_SHA256 = sequence(oid('1.2.840.10045.4.3.2'));
/** Subject `O=` as istio-agent's Go code writes it (one empty Organization). */
const SUBJECT_O_EMPTY = sequence(set(sequence(oid(OID_O), utf8String(''))));

/** An istio-agent-shaped CSR: subject O=, one critical URI SAN. */
export function buildCsr(key: { privateKey: KeyObject; spki: Buffer; kind: KeyKind }, spiffeId: string): string {
  const san = sequence(oid(OID_SAN), boolean(true), octetString(sequence(implicitPrimitive(6, Buffer.from(spiffeId, 'ascii')))));
  const attrs = tlvParts(0xa0, [sequence(oid(OID_EXT_REQ), set(sequence(san)))]);
  const info = sequence(smallInteger(0), SUBJECT_O_EMPTY, key.spki, attrs);
  const sig = sign('sha256', info, key.privateKey);
  const der = sequence(info, key.kind === 'rsa2048' ? RSA_SHA256 : ECDSA_SHA256, bitString(sig));
  const b64 = der.toString('base64').match(/.{1,64}/g)!.join('\n');
  return `-----BEGIN CERTIFICATE REQUEST-----\n${b64}\n-----END CERTIFICATE REQUEST-----\n`;
}

export interface CsrKey {
  privateKey: KeyObject;
  spki: Buffer;
  kind: KeyKind;
}

export async function rsaKeyPool(size: number): Promise<CsrKey[]> {
  return Promise.all(
    Array.from({ length: size }, async () => {
      const { privateKey, publicKey } = await genKeyPair('rsa', { modulusLength: 2048 });
      return { privateKey, spki: publicKey.export({ type: 'spki', format: 'der' }), kind: 'rsa2048' as const };
    }),
  );
}

export function ecKey(): CsrKey {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return { privateKey, spki: publicKey.export({ type: 'spki', format: 'der' }), kind: 'ec256' };
}

/**
 * `count` distinct identities with their own token and CSR. Tokens are valid for `ttlSeconds` from
 * now: long enough for every phase that sends them (a soak needs its duration plus a margin).
 */
export function makeRequests(count: number, kind: KeyKind, signers: TokenSigner[], rsaPool: CsrKey[], prefix = 'bench', ttlSeconds = 3600): BenchRequest[] {
  const signer = signers.find((s) => s.alg === (kind === 'rsa2048' ? 'RS256' : 'ES256'))!;
  const out: BenchRequest[] = [];
  for (let i = 0; i < count; i++) {
    const ns = `${prefix}-${i % 200}`;
    const sa = `sa-${i}`;
    const spiffeId = `spiffe://cluster.local/ns/${ns}/sa/${sa}`;
    const key = kind === 'rsa2048' ? rsaPool[i % rsaPool.length]! : ecKey();
    out.push({ spiffeId, token: mintToken(signer, ns, sa, ttlSeconds), csrPem: buildCsr(key, spiffeId), spki: key.spki });
  }
  return out;
}

export { createPrivateKey };
