/**
 * The chain constraints that a signature check does not cover but Go's crypto/x509 (istio-agent)
 * and OpenSSL enforce on every handshake: a CA's path length, the extended key usages of CAs,
 * and name constraints on the leaf's URI SANs. A CA chain that breaks one of them signs leaves
 * that clients refuse, so meshcert checks a sample leaf's path when it loads a CA. Go's rules
 * where they differ: a CA whose only extended key usage is anyExtendedKeyUsage passes (Go
 * accepts it; OpenSSL's purpose check does not). Never stricter than Go.
 * Setup-time code: reads extensions with the small DER reader, not a full X.509 library.
 */
import { oid, readChildren, readElement, TAG_BOOLEAN, TAG_INTEGER, TAG_OCTET_STRING, TAG_OID, type DerElement } from './der.js';

const OID_BASIC_CONSTRAINTS = oid('2.5.29.19');
const OID_NAME_CONSTRAINTS = oid('2.5.29.30');
const OID_EXT_KEY_USAGE = oid('2.5.29.37');
const OID_ANY_EKU = oid('2.5.29.37.0');
const OID_SERVER_AUTH = oid('1.3.6.1.5.5.7.3.1');
const OID_CLIENT_AUTH = oid('1.3.6.1.5.5.7.3.2');
/** GeneralName uniformResourceIdentifier: [6] IA5String, implicit. */
const TAG_GN_URI = 0x86;

/** One certificate of a path: its DER and a name for messages. */
export interface PathCert {
  readonly der: Uint8Array;
  readonly name: string;
}

/**
 * Problems with a certification path, leaf first and trust anchor last, or [] when Go would accept
 * its constraints. `leafUris` are the leaf's URI SANs (checked against name constraints).
 */
export function pathConstraintProblems(path: readonly PathCert[], leafUris: readonly string[]): string[] {
  const problems: string[] = [];
  for (let k = 1; k < path.length; k++) {
    const ca = path[k]!;
    const ext = extensions(ca.der);
    // Go counts every CA certificate between this one and the leaf (no self-issued exception).
    const below = k - 1;
    const pathLen = pathLenConstraint(ca.der, ext.get(hex(OID_BASIC_CONSTRAINTS)));
    if (pathLen !== undefined && below > pathLen) {
      problems.push(`"${ca.name}" allows ${pathLen} CA certificate(s) below it (pathLenConstraint) but the chain has ${below}`);
    }
    const eku = ext.get(hex(OID_EXT_KEY_USAGE));
    if (eku && !allowsMtls(ca.der, eku)) {
      problems.push(`"${ca.name}" has an extended key usage without serverAuth and clientAuth, so the mesh's mTLS certificates below it are refused`);
    }
    const nc = ext.get(hex(OID_NAME_CONSTRAINTS));
    if (nc) {
      for (const uri of leafUris) {
        const why = uriConstraintProblem(ca.der, nc, uri);
        if (why) problems.push(`"${ca.name}" has name constraints that exclude ${uri} (${why})`);
      }
    }
  }
  return problems;
}

/** The certificate's extensions by OID (hex of the OID's content), each as its extnValue's content. */
function extensions(der: Uint8Array): Map<string, DerElement> {
  const out = new Map<string, DerElement>();
  const tbs = readChildren(der, readElement(der))[0]!;
  const wrapper = readChildren(der, tbs).find((f) => f.tag === 0xa3);
  if (!wrapper) return out;
  const list = readChildren(der, wrapper)[0]!;
  for (const e of readChildren(der, list)) {
    const parts = readChildren(der, e);
    const id = parts[0]!;
    const value = parts[parts.length - 1]!;
    if (id.tag !== TAG_OID || value.tag !== TAG_OCTET_STRING) throw new Error('malformed certificate extension');
    out.set(Buffer.from(der.subarray(id.start, id.end)).toString('hex'), readElement(der, value.start, value.end));
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

function allowsMtls(der: Uint8Array, eku: DerElement): boolean {
  const ids = new Set(readChildren(der, eku).map((e) => Buffer.from(der.subarray(e.start, e.end)).toString('hex')));
  return ids.has(hex(OID_ANY_EKU)) || (ids.has(hex(OID_SERVER_AUTH)) && ids.has(hex(OID_CLIENT_AUTH)));
}

/**
 * Why name constraints exclude a URI, as Go matches them: a URI constraint is a domain that
 * matches the host and its subdomains, or only subdomains when it starts with ".". A permitted
 * list with URI entries must match one; an excluded entry must match none.
 */
function uriConstraintProblem(der: Uint8Array, nc: DerElement, uri: string): string | null {
  const host = new URL(uri).hostname.toLowerCase();
  const subtrees = (tag: number): string[] => {
    const list = readChildren(der, nc).find((e) => e.tag === tag);
    if (!list) return [];
    return readChildren(der, list)
      .map((subtree) => readChildren(der, subtree)[0]!)
      .filter((base) => base.tag === TAG_GN_URI)
      .map((base) => Buffer.from(der.subarray(base.start, base.end)).toString('latin1').toLowerCase());
  };
  const permitted = subtrees(0xa0);
  const excluded = subtrees(0xa1);
  const hit = excluded.find((c) => domainMatches(host, c));
  if (hit !== undefined) return `excluded: "${hit}"`;
  if (permitted.length > 0 && !permitted.some((c) => domainMatches(host, c))) return `permitted only: ${permitted.map((c) => `"${c}"`).join(', ')}`;
  return null;
}

function domainMatches(host: string, constraint: string): boolean {
  if (constraint === '') return true;
  if (constraint.startsWith('.')) return host.length > constraint.length && host.endsWith(constraint);
  return host === constraint || host.endsWith(`.${constraint}`);
}
