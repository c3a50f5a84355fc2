/**
 * The chain constraints that a signature check does not cover but Go's crypto/x509 (istio-agent)
 * and OpenSSL enforce on every handshake: a CA's path length, the extended key usages of CAs,
 * and name constraints on the leaf's names. A CA chain that breaks one of them signs leaves that
 * clients refuse, so meshcert checks a sample leaf's path when it loads a CA, and the names of
 * each leaf with DNS names or IP addresses before signing it (src/x509/name-constraints.ts).
 * Where verifiers differ, the strictest: a chain any of them refuses would break some handshakes.
 * So a CA whose only extended key usage is anyExtendedKeyUsage is refused (Go accepts it; OpenSSL,
 * BoringSSL and rustls-webpki do not), and so is a URI outside a permitted URI constraint's one
 * host (see src/x509/name-constraints.ts, also for where Go releases differ).
 * Reads extensions with the small DER reader, not a full X.509 library: a CA's constraints are
 * read once at load, and each leaf with DNS names or IP addresses is checked against them.
 */
import type { X509Certificate } from 'node:crypto';
import { oid, readChildren, readElement, TAG_BOOLEAN, TAG_INTEGER, TAG_OCTET_STRING, TAG_OID, type DerElement } from './der.js';
import type { IpPrefix } from '../net/ip-text.js';
import { nameRefusals, rangeRefusals, readNameConstraints, type LeafNames, type NameConstraints } from './name-constraints.js';
import { oneLine } from './names.js';

const OID_SUBJECT_ALT_NAME = oid('2.5.29.17');
const OID_BASIC_CONSTRAINTS = oid('2.5.29.19');
const OID_NAME_CONSTRAINTS = oid('2.5.29.30');
const OID_EXT_KEY_USAGE = oid('2.5.29.37');
const OID_ANY_EKU = oid('2.5.29.37.0');
const OID_SERVER_AUTH = oid('1.3.6.1.5.5.7.3.1');
const OID_CLIENT_AUTH = oid('1.3.6.1.5.5.7.3.2');

/** One certificate of a path: its DER and a name for messages. */
export interface PathCert {
  readonly der: Uint8Array;
  readonly name: string;
}

/**
 * Problems with a certification path, leaf first and trust anchor last, or [] when Go would accept
 * its constraints for a leaf with `names` (name constraints are checked against them).
 */
export function pathConstraintProblems(path: readonly PathCert[], names: LeafNames): string[] {
  const problems: string[] = [];
  for (let k = 1; k < path.length; k++) {
    const ca = path[k]!;
    const ext = extensions(ca);
    // Go counts every CA certificate between this one and the leaf (no self-issued exception).
    const below = k - 1;
    const pathLen = pathLenConstraint(ca.der, ext.get(hex(OID_BASIC_CONSTRAINTS))?.value);
    if (pathLen !== undefined && below > pathLen) {
      problems.push(`"${ca.name}" allows ${pathLen} CA certificate(s) below it (pathLenConstraint) but the chain has ${below}`);
    }
    const eku = ext.get(hex(OID_EXT_KEY_USAGE))?.value;
    const purposes = eku && mtlsPurposes(ca.der, eku);
    if (purposes === 'any only') {
      problems.push(`"${ca.name}" has anyExtendedKeyUsage as its only extended key usage: Go accepts the mesh's mTLS certificates below it, but OpenSSL, BoringSSL (Envoy's) and rustls-webpki refuse them; it needs serverAuth and clientAuth`);
    } else if (purposes === 'missing') {
      problems.push(`"${ca.name}" has an extended key usage without serverAuth and clientAuth, so the mesh's mTLS certificates below it are refused`);
    }
  }
  return [...problems, ...pathNameRefusals(pathNameConstraints(path.slice(1)), names)];
}

/** The name constraints of a path's CA certificates (leaf excluded), read once for many leaves. */
export interface ConstrainedCa {
  readonly name: string;
  readonly constraints: NameConstraints;
  readonly critical: boolean;
}

export function pathNameConstraints(cas: readonly PathCert[]): ConstrainedCa[] {
  const out: ConstrainedCa[] = [];
  for (const ca of cas) {
    const nc = extensions(ca).get(hex(OID_NAME_CONSTRAINTS));
    if (!nc) continue;
    let constraints: NameConstraints;
    try {
      constraints = readNameConstraints(ca.der, nc.value);
    } catch (e) {
      throw new Error(`"${ca.name}" has name constraints Go's crypto/x509 cannot parse, so it refuses every chain through that CA: ${(e as Error).message}`, { cause: e });
    }
    out.push({ name: ca.name, constraints, critical: nc.critical });
  }
  return out;
}

/** Why the path's name constraints refuse some address of these IP ranges ([] when none). */
export function pathRangeRefusals(cas: readonly ConstrainedCa[], ranges: readonly IpPrefix[]): string[] {
  return cas.flatMap((ca) => rangeRefusals(ca.constraints, ranges).map((r) => `"${ca.name}" has name constraints that exclude ${r}`));
}

/** Why the path's name constraints refuse a leaf with `names` ([] when Go would accept them). */
export function pathNameRefusals(cas: readonly ConstrainedCa[], names: LeafNames): string[] {
  const problems: string[] = [];
  for (const ca of cas) {
    if (ca.critical && ca.constraints.unhandled.length > 0) {
      problems.push(`"${ca.name}" has critical name constraints on ${ca.constraints.unhandled.join(', ')}, which Go's crypto/x509 does not support: it refuses every certificate below that CA`);
    }
    for (const name of nameRefusals(ca.constraints, names)) problems.push(`"${ca.name}" has name constraints that exclude ${name}`);
  }
  return problems;
}

/** A certificate as the path checks read it. */
export function pathCertOf(c: X509Certificate): PathCert {
  return { der: c.raw, name: oneLine(c.subject ?? '') }; // a leaf's subject is empty
}

/**
 * The names of a leaf that name constraints apply to, read from its subjectAltName's DER
 * (GeneralName [6] URI, [2] dNSName, [7] iPAddress), not from Node's display text, which does not
 * escape separators inside names.
 */
export function leafNamesOf(leaf: PathCert): LeafNames {
  const names = { uris: [] as string[], dnsNames: [] as string[], ipAddresses: [] as Uint8Array[] };
  const san = extensions(leaf).get(hex(OID_SUBJECT_ALT_NAME))?.value;
  for (const name of san ? readChildren(leaf.der, san) : []) {
    const content = leaf.der.subarray(name.start, name.end);
    if (name.tag === 0x86) names.uris.push(Buffer.from(content).toString('latin1'));
    else if (name.tag === 0x82) names.dnsNames.push(Buffer.from(content).toString('latin1'));
    else if (name.tag === 0x87) names.ipAddresses.push(content);
  }
  return names;
}

/** The certificate's extensions by OID (hex of the OID's content): extnValue's content, and criticality. */
function extensions(ca: PathCert): Map<string, { value: DerElement; critical: boolean }> {
  try {
    return readExtensions(ca.der);
  } catch (e) {
    throw new Error(`"${ca.name}": ${(e as Error).message}`, { cause: e });
  }
}

function readExtensions(der: Uint8Array): Map<string, { value: DerElement; critical: boolean }> {
  const out = new Map<string, { value: DerElement; critical: boolean }>();
  const tbs = readChildren(der, readElement(der))[0]!;
  const wrapper = readChildren(der, tbs).find((f) => f.tag === 0xa3);
  if (!wrapper) return out;
  const list = readChildren(der, wrapper)[0]!;
  for (const e of readChildren(der, list)) {
    const parts = readChildren(der, e);
    const id = parts[0]!;
    const value = parts[parts.length - 1]!;
    if (id.tag !== TAG_OID || value.tag !== TAG_OCTET_STRING) throw new Error('malformed certificate extension');
    let critical = false;
    if (parts.length === 3) {
      const flag = parts[1]!;
      // A BOOLEAN is one octet, 0x00 or 0xff (Go refuses to parse the certificate otherwise).
      if (flag.tag !== TAG_BOOLEAN || flag.end - flag.start !== 1 || (der[flag.start] !== 0 && der[flag.start] !== 0xff)) throw new Error('malformed certificate extension');
      critical = der[flag.start] === 0xff;
    } else if (parts.length !== 2) throw new Error('malformed certificate extension');
    const key = Buffer.from(der.subarray(id.start, id.end)).toString('hex');
    if (out.has(key)) throw new Error('a certificate with the same extension twice');
    out.set(key, { value: readElement(der, value.start, value.end), critical });
  }
  return out;
}

function hex(encodedOid: Buffer): string {
  return encodedOid.subarray(2).toString('hex');
}

function pathLenConstraint(der: Uint8Array, bc: DerElement | undefined): number | undefined {
  if (!bc) return undefined;
  const fields = readChildren(der, bc);
  const n = fields.find((f) => f.tag === TAG_INTEGER);
  if (!n || fields[0]?.tag !== TAG_BOOLEAN) return undefined;
  let v = 0;
  for (let i = n.start; i < n.end; i++) v = v * 256 + (der[i] as number);
  return v;
}

/**
 * Whether a CA's extended key usage lets verifiers accept mTLS certificates below it. Go also
 * takes anyExtendedKeyUsage alone; OpenSSL and BoringSSL (Envoy checks the "ssl_client" and
 * "ssl_server" purposes on every CA of the chain) and rustls-webpki do not, so that is refused too.
 */
function mtlsPurposes(der: Uint8Array, eku: DerElement): 'ok' | 'any only' | 'missing' {
  const ids = new Set(readChildren(der, eku).map((e) => Buffer.from(der.subarray(e.start, e.end)).toString('hex')));
  if (ids.has(hex(OID_SERVER_AUTH)) && ids.has(hex(OID_CLIENT_AUTH))) return 'ok';
  return ids.has(hex(OID_ANY_EKU)) ? 'any only' : 'missing';
}
