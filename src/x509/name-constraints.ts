/**
 * A CA certificate's name constraints (RFC 5280 §4.2.1.10), and whether they allow a leaf's
 * names, as Go's crypto/x509 (istio-agent) decides. A leaf whose names a CA of its chain does not
 * allow is refused by clients, so meshcert checks before it signs.
 *
 * Go's rules: under a CA with the extension, a leaf DNS name Go cannot parse is refused, and
 * names of a type are checked only against constraints of that type; an excluded
 * constraint that matches refuses, and a non-empty permitted list must have one that matches. A
 * DNS or URI constraint matches the domain and its subdomains, or only subdomains with a leading
 * "."; an IP constraint matches addresses of its own length (IPv4 or IPv6) within its mask.
 * OpenSSL (and BoringSSL, Envoy's) reads a permitted URI constraint without a leading "." as RFC
 * 5280 says, one host and not its subdomains: that stricter reading is kept for permitted ones.
 * Since CVE-2025-61727 (Go 1.24.11 / 1.25.5) a wildcard name is excluded when the constraint
 * matches it with the leftmost label of both dropped (`*.example.com` under an excluded
 * `foo.example.com`); older Go and OpenSSL accept that one, the stricter verdict is kept.
 */
import { isIP } from 'node:net';
import { ipBytesToText, type IpPrefix } from '../net/ip-text.js';
import { isIpv4Mapped } from '../net/ipv4-mapped.js';
import { readChildren, type DerElement } from './der.js';

/** GeneralName tags (context-specific, primitive) that Go reads in name constraints. */
const TAG_GN_EMAIL = 0x81;
const TAG_GN_DNS = 0x82;
const TAG_GN_URI = 0x86;
const TAG_GN_IP = 0x87;
/** The other GeneralName choices, by tag number, for messages. */
const OTHER_NAMES: Readonly<Record<number, string>> = { 0: 'otherName', 3: 'x400Address', 4: 'directoryName', 5: 'ediPartyName', 8: 'registeredID' };

/** A constraint's IP range; its mask, checked to be a prefix, as the prefix's length. */
type IpRange = IpPrefix;

/** A DNS or URI constraint: its text, and its labels right to left (without a leading "."). */
interface DomainConstraint {
  readonly text: string;
  readonly labels: readonly string[];
  readonly subdomainsOnly: boolean;
}

interface Subtrees {
  readonly dns: DomainConstraint[];
  readonly uri: DomainConstraint[];
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

/**
 * Reads the NameConstraints SEQUENCE (the extension's value), checked as Go parses it. Throws on
 * one Go refuses to parse: Go then refuses the certificate, and every chain through it.
 */
export function readNameConstraints(der: Uint8Array, value: DerElement): NameConstraints {
  const unhandled = new Set<string>();
  const fields = readChildren(der, value);
  // permittedSubtrees [0], excludedSubtrees [1], in that order, and nothing else.
  const shape = fields.map((f) => f.tag.toString(16)).join(',');
  if (!['', 'a0', 'a1', 'a0,a1'].includes(shape)) throw new Error('malformed name constraints');
  const read = (tag: number): Subtrees => {
    const out: Subtrees = { dns: [], uri: [], ip: [] };
    const list = fields.find((e) => e.tag === tag);
    if (!list) return out;
    for (const subtree of readChildren(der, list)) {
      const base = readChildren(der, subtree)[0];
      if (!base) throw new Error('malformed name constraints: an empty subtree');
      const content = der.subarray(base.start, base.end);
      const text = Buffer.from(content).toString('latin1');
      if (base.tag === TAG_GN_DNS) out.dns.push(domainConstraint(text, 'DNS'));
      else if (base.tag === TAG_GN_URI) {
        if (isIP(text) !== 0) throw new Error(`malformed name constraints: URI constraint ${JSON.stringify(text)} is an IP address`);
        out.uri.push(domainConstraint(text, 'URI'));
      } else if (base.tag === TAG_GN_IP) out.ip.push(ipRange(content));
      else if (base.tag === TAG_GN_EMAIL) domainConstraint(text.includes('@') ? text.slice(text.lastIndexOf('@') + 1) : text, 'email');
      else unhandled.add(OTHER_NAMES[base.tag & 0x1f] ?? `GeneralName tag 0x${base.tag.toString(16)}`);
    }
    return out;
  };
  const permitted = read(0xa0);
  const excluded = read(0xa1);
  if (fields.every((f) => readChildren(der, f).length === 0)) throw new Error('empty name constraints (RFC 5280: a permitted or excluded subtree must be present)');
  return { permitted, excluded, unhandled: [...unhandled] };
}

/**
 * A DNS, URI or email domain constraint, checked as Go parses it: ASCII, a leading "." allowed,
 * no trailing "." (current Go refuses "." itself, which older releases read as "everything"),
 * and, as some Go releases checked, at most 253 octets with labels of at most 63.
 */
function domainConstraint(text: string, kind: string): DomainConstraint {
  const subdomainsOnly = text.startsWith('.');
  // eslint-disable-next-line no-control-regex -- IA5String: the ASCII range
  const labels = /^[\x00-\x7f]*$/.test(text) && !text.endsWith('.') && text.length <= 253 ? reverseLabels(subdomainsOnly ? text.slice(1) : text) : null;
  if (labels === null || labels.some((l) => l.length > 63)) throw new Error(`malformed name constraints: ${kind} constraint ${JSON.stringify(text)} is not a domain name`);
  return { text, labels, subdomainsOnly };
}

function ipRange(content: Uint8Array): IpRange {
  if (content.length !== 8 && content.length !== 32) throw new Error(`malformed name constraints: an IP range of ${content.length} octets`);
  const half = content.length / 2;
  const mask = content.subarray(half);
  // Ones, then zeros (Go's isValidIPMask).
  const text = [...mask].map((b) => b.toString(2).padStart(8, '0')).join('');
  if (!/^1*0*$/.test(text)) throw new Error(`malformed name constraints: IP mask ${Buffer.from(mask).toString('hex')} is not a prefix`);
  const ip = content.subarray(0, half);
  if (isIpv4Mapped(ip)) throw new Error('malformed name constraints: an IP range written as an IPv4-mapped IPv6 address');
  return { ip, bits: text.indexOf('0') === -1 ? text.length : text.indexOf('0') };
}

/** Why `nc` refuses the leaf's names, one entry per name refused ([] when it allows them all). */
export function nameRefusals(nc: NameConstraints, names: LeafNames): string[] {
  const out: string[] = [];
  for (const uri of names.uris ?? []) {
    const why = uriRefusal(nc, uri);
    if (why) out.push(`${uri} (${why})`);
  }
  for (const name of names.dnsNames ?? []) {
    const labels = dnsNameLabels(name);
    // Under a CA with the extension (whatever it holds), Go refuses a DNS name it cannot parse.
    const why = labels ? verdict(nc.permitted.dns, nc.excluded.dns, (c, excluded) => domainMatches(name, labels, c, excluded), domainText) : 'not a DNS name Go can parse';
    if (why) out.push(`DNS name ${name} (${why})`);
  }
  for (const ip of names.ipAddresses ?? []) {
    const why = verdict(nc.permitted.ip, nc.excluded.ip, (c) => ipMatches(ip, c), rangeText);
    if (why) out.push(`IP address ${ipBytesToText(ip)} (${why})`);
  }
  return out;
}

/**
 * Why `nc` refuses some address of each range, one entry per range ([] when it allows every
 * address of them all): for load-time checks of a policy's IP entries. Prefixes nest or are
 * apart, so a range is refused when an excluded range overlaps it, or when permitted ranges
 * exist and none holds it whole (one that only several permitted ranges cover together is
 * reported too: these are warnings).
 */
export function rangeRefusals(nc: NameConstraints, ranges: readonly IpPrefix[]): string[] {
  const out: string[] = [];
  for (const r of ranges) {
    const why = verdict(nc.permitted.ip, nc.excluded.ip, (c, excluded) => (excluded ? overlaps(r, c) : holds(c, r)), rangeText);
    if (why) out.push(`IP range ${rangeText(r)} (${why})`);
  }
  return out;
}

function overlaps(r: IpPrefix, c: IpRange): boolean {
  return r.ip.length === c.ip.length && samePrefix(r.ip, c.ip, Math.min(r.bits, c.bits));
}

function holds(c: IpRange, r: IpPrefix): boolean {
  return r.ip.length === c.ip.length && c.bits <= r.bits && samePrefix(r.ip, c.ip, c.bits);
}

function samePrefix(a: Uint8Array, b: Uint8Array, bits: number): boolean {
  for (let i = 0; i < bits; i++) {
    const m = 0x80 >> (i & 7);
    if (((a[i >> 3] as number) & m) !== ((b[i >> 3] as number) & m)) return false;
  }
  return true;
}

function uriRefusal(nc: NameConstraints, uri: string): string | null {
  if (nc.permitted.uri.length === 0 && nc.excluded.uri.length === 0) return null;
  let host: string;
  try {
    host = new URL(uri).hostname;
  } catch {
    return 'not a URI Go can parse';
  }
  const labels = reverseLabels(host);
  // Go refuses to match a URI without a domain host against any URI constraint.
  if (host === '' || host.startsWith('[') || isIP(host) !== 0 || labels === null) return 'its host is not a domain name';
  return verdict(nc.permitted.uri, nc.excluded.uri, (c, excluded) => domainMatches(host, labels, c, excluded) && (excluded || c.subdomainsOnly || labels.length === c.labels.length), domainText);
}

function verdict<C>(permitted: readonly C[], excluded: readonly C[], matches: (c: C, excluded: boolean) => boolean, show: (c: C) => string): string | null {
  const hit = excluded.find((c) => matches(c, true));
  if (hit !== undefined) return `excluded: "${show(hit)}"`;
  if (permitted.length > 0 && !permitted.some((c) => matches(c, false))) return `permitted only: ${permitted.map((c) => `"${show(c)}"`).join(', ')}`;
  return null;
}

function domainText(c: DomainConstraint): string {
  return c.text;
}

/** Go's matchDomainConstraint: labels compared from the right, case-insensitively. */
function domainMatches(domain: string, labels: readonly string[], constraint: DomainConstraint, excluded: boolean): boolean {
  let c = constraint.labels;
  let d = labels;
  if (d.length < c.length || (constraint.subdomainsOnly && d.length === c.length)) return false;
  if (excluded && domain.startsWith('*') && d.length > 1 && c.length > 0) {
    d = d.slice(0, -1);
    c = c.slice(0, -1);
  }
  return c.every((label, i) => label === d[i]);
}

/**
 * The labels right to left, lowercased ([] for ""), or null for an empty label or a character
 * outside "!".."~" (Go's domainToReverseLabels).
 */
function reverseLabels(domain: string): string[] | null {
  if (domain === '') return [];
  const labels = domain.toLowerCase().split('.').reverse();
  return labels.every((l) => /^[\x21-\x7e]+$/.test(l)) ? labels : null;
}

/**
 * A leaf's DNS name as labels, or null when Go cannot parse it: empty labels, a trailing ".",
 * characters outside "!".."~"; and, as some Go releases checked, more than 253 octets or a label
 * over 63.
 */
function dnsNameLabels(name: string): string[] | null {
  if (name === '' || name.length > 253) return null;
  const labels = reverseLabels(name);
  return labels && labels.every((l) => l.length <= 63) ? labels : null;
}

function ipMatches(ip: Uint8Array, range: IpRange): boolean {
  return ip.length === range.ip.length && samePrefix(ip, range.ip, range.bits);
}

function rangeText(r: IpRange): string {
  return `${ipBytesToText(r.ip)}/${r.bits}`;
}
