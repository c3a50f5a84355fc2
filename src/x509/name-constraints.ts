/**
 * A CA certificate's name constraints (RFC 5280 §4.2.1.10), and whether they allow a leaf's
 * names, as Go's crypto/x509 (istio-agent, ztunnel's Go peers) decides. A leaf whose names a CA
 * of its chain does not allow is refused by every client, so meshcert checks before it signs.
 *
 * Go's rules: names of a type are checked only against constraints of that type; an excluded
 * constraint that matches refuses, and a non-empty permitted list must have one that matches. A
 * DNS or URI constraint matches the domain and its subdomains, or only subdomains with a leading
 * "."; an IP constraint matches addresses of its own length (IPv4 or IPv6) within its mask.
 * Since CVE-2025-61727 (Go 1.24.11 / 1.25.5) a wildcard name is excluded when the constraint
 * matches it with the leftmost label of both dropped (`*.example.com` under an excluded
 * `foo.example.com`); older Go and OpenSSL accept that one, the stricter verdict is kept.
 */
import { ipBytesToText } from '../net/ip-text.js';
import { readChildren, type DerElement } from './der.js';

/** GeneralName tags (context-specific, primitive) that Go reads in name constraints. */
const GN_EMAIL = 0x81;
const GN_DNS = 0x82;
const GN_URI = 0x86;
const GN_IP = 0x87;
/** The other GeneralName choices, by tag number, for messages. */
const OTHER_NAMES: Readonly<Record<number, string>> = { 0: 'otherName', 3: 'x400Address', 4: 'directoryName', 5: 'ediPartyName', 8: 'registeredID' };

interface IpRange {
  readonly ip: Uint8Array;
  readonly mask: Uint8Array;
}

interface Subtrees {
  readonly dns: string[];
  readonly uri: string[];
  readonly ip: IpRange[];
}

export interface NameConstraints {
  readonly permitted: Subtrees;
  readonly excluded: Subtrees;
  /**
   * Subtree types Go does not read (directoryName, otherName, ...). In a critical extension Go
   * counts the whole extension as unhandled, and refuses every certificate below the CA.
   */
  readonly unhandled: readonly string[];
}

/** The names of a leaf that name constraints apply to (meshcert's leaves carry no email). */
export interface LeafNames {
  readonly uris?: readonly string[];
  readonly dnsNames?: readonly string[];
  /** As the leaf encodes them: 4 octets (IPv4) or 16 (IPv6). */
  readonly ipAddresses?: readonly Uint8Array[];
}

/** Reads the NameConstraints SEQUENCE (the extension's value). Throws on a malformed one. */
export function readNameConstraints(der: Uint8Array, value: DerElement): NameConstraints {
  const unhandled = new Set<string>();
  const read = (tag: number): Subtrees => {
    const out: Subtrees = { dns: [], uri: [], ip: [] };
    const list = readChildren(der, value).find((e) => e.tag === tag);
    if (!list) return out;
    for (const subtree of readChildren(der, list)) {
      const base = readChildren(der, subtree)[0];
      if (!base) throw new Error('malformed name constraints: an empty subtree');
      const content = der.subarray(base.start, base.end);
      if (base.tag === GN_DNS) out.dns.push(Buffer.from(content).toString('latin1'));
      else if (base.tag === GN_URI) out.uri.push(Buffer.from(content).toString('latin1'));
      else if (base.tag === GN_IP) {
        if (content.length !== 8 && content.length !== 32) throw new Error(`malformed name constraints: an IP range of ${content.length} octets`);
        const half = content.length / 2;
        out.ip.push({ ip: content.subarray(0, half), mask: content.subarray(half) });
      } else if (base.tag !== GN_EMAIL) unhandled.add(OTHER_NAMES[base.tag & 0x1f] ?? `GeneralName tag 0x${base.tag.toString(16)}`);
    }
    return out;
  };
  return { permitted: read(0xa0), excluded: read(0xa1), unhandled: [...unhandled] };
}

/** Why `nc` refuses the leaf's names, one entry per name refused ([] when it allows them all). */
export function refusedNames(nc: NameConstraints, names: LeafNames): string[] {
  const out: string[] = [];
  for (const uri of names.uris ?? []) {
    const why = uriRefusal(nc, uri);
    if (why) out.push(`${uri} (${why})`);
  }
  for (const name of names.dnsNames ?? []) {
    const why = verdict(nc.permitted.dns, nc.excluded.dns, (c, excluded) => domainMatches(name, c, excluded));
    if (why) out.push(`DNS name ${name} (${why})`);
  }
  for (const ip of names.ipAddresses ?? []) {
    const why = verdict(nc.permitted.ip, nc.excluded.ip, (c) => ipMatches(ip, c), rangeText);
    if (why) out.push(`IP address ${ipBytesToText(ip)} (${why})`);
  }
  return out;
}

function uriRefusal(nc: NameConstraints, uri: string): string | null {
  if (nc.permitted.uri.length === 0 && nc.excluded.uri.length === 0) return null;
  let host: string;
  try {
    host = new URL(uri).hostname;
  } catch {
    return 'not a URI Go can parse';
  }
  // Go refuses to match a URI without a domain host against any URI constraint.
  if (host === '' || host.startsWith('[') || /^[0-9.]+$/.test(host)) return 'its host is not a domain name';
  return verdict(nc.permitted.uri, nc.excluded.uri, (c, excluded) => domainMatches(host, c, excluded));
}

function verdict<C>(permitted: readonly C[], excluded: readonly C[], matches: (c: C, excluded: boolean) => boolean, show: (c: C) => string = (c) => String(c)): string | null {
  const hit = excluded.find((c) => matches(c, true));
  if (hit !== undefined) return `excluded: "${show(hit)}"`;
  if (permitted.length > 0 && !permitted.some((c) => matches(c, false))) return `permitted only: ${permitted.map((c) => `"${show(c)}"`).join(', ')}`;
  return null;
}

/** Go's matchDomainConstraint: labels compared from the right, case-insensitively. */
function domainMatches(domain: string, constraint: string, excluded: boolean): boolean {
  if (constraint === '') return true;
  const subdomainsOnly = constraint.startsWith('.');
  let d = reverseLabels(domain);
  let c = reverseLabels(subdomainsOnly ? constraint.slice(1) : constraint);
  // A name or constraint Go cannot parse fails the check: refuse rather than guess.
  if (!d || !c) return excluded;
  if (d.length < c.length || (subdomainsOnly && d.length === c.length)) return false;
  if (excluded && domain.startsWith('*') && d.length > 1 && c.length > 0) {
    d = d.slice(0, -1);
    c = c.slice(0, -1);
  }
  return c.every((label, i) => label === d[i]);
}

/** The labels right to left, lowercased; null for an empty label (as Go's domainToReverseLabels). */
function reverseLabels(domain: string): string[] | null {
  const labels = domain.toLowerCase().split('.').reverse();
  return labels.every((l) => l.length > 0 && /^[\x21-\x7e]+$/.test(l)) ? labels : null;
}

function ipMatches(ip: Uint8Array, range: IpRange): boolean {
  if (ip.length !== range.ip.length) return false;
  for (let i = 0; i < ip.length; i++) {
    const m = range.mask[i] as number;
    if (((ip[i] as number) & m) !== ((range.ip[i] as number) & m)) return false;
  }
  return true;
}

function rangeText(r: IpRange): string {
  let bits = 0;
  for (const m of r.mask) bits += m.toString(2).replace(/0/g, '').length;
  return `${ipBytesToText(r.ip)}/${bits}`;
}
