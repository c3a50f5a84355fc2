/**
 * Extra SANs a rule allows.
 *
 * DNS entries are templates over the caller: `{namespace}`, `{serviceAccount}`, `{trustDomain}`
 * and `{cluster}` are replaced by the caller's values, then a requested DNS name is allowed when it
 * equals the result (compared case-insensitively, as DNS names are). A template starting with `*.`
 * allows the wildcard name itself (`*.ns.svc.cluster.local`) and any one label in place of the `*`
 * (`web.ns.svc.cluster.local`), but not several labels (`a.b.ns.svc.cluster.local`) nor an empty
 * one. A label is 1-63 letters, digits and hyphens, not starting or ending with a hyphen.
 * `{namespace}` and `{serviceAccount}` stand for one whole label each: a template may not join
 * them to other text in a label (two callers could render the same name), and a caller whose
 * service account has dots in its name (Kubernetes allows them) gets no name from one that uses it.
 *
 * IP entries are addresses (`10.0.0.1`, `fd00::1`) or CIDR ranges (`10.0.0.0/8`, `fd00::/64`);
 * a requested IP SAN is allowed when it is one of them or inside one of them.
 */
import { BlockList, isIP } from 'node:net';
import { ipToBytes, type IpPrefix } from '../net/ip-text.js';

export const TEMPLATE_PLACEHOLDERS = ['namespace', 'serviceAccount', 'trustDomain', 'cluster'] as const;
export type TemplatePlaceholder = (typeof TEMPLATE_PLACEHOLDERS)[number];
export type TemplateValues = Readonly<Record<TemplatePlaceholder, string>>;

const PLACEHOLDER_SET: ReadonlySet<string> = new Set(TEMPLATE_PLACEHOLDERS);
const PLACEHOLDER = /\{([^{}]*)\}/g;
const LABEL = '[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?';
/** A DNS name, optionally with a leading `*.` (placeholders replaced by `x` before this test). */
const DNS_TEMPLATE_SHAPE = new RegExp(`^(?:\\*\\.)?${LABEL}(?:\\.${LABEL})*$`, 'i');
const ONE_LABEL = new RegExp(`^${LABEL}$`);
/** Placeholders whose values the workload's owner picks (the others come from the config). */
const WORKLOAD_CHOSEN: ReadonlySet<TemplatePlaceholder> = new Set(['namespace', 'serviceAccount']);

/** Why `template` is not a valid DNS SAN template, or null when it is. */
export function dnsTemplateProblem(template: string): string | null {
  if (template.length === 0) return 'DNS template must not be empty';
  if (template.length > 253) return 'DNS template is longer than 253 characters';
  const unknown: string[] = [];
  const shape = template.replace(PLACEHOLDER, (_m, name: string) => {
    if (!PLACEHOLDER_SET.has(name)) unknown.push(`{${name}}`);
    return 'x';
  });
  if (unknown.length > 0) {
    return `unknown placeholder ${unknown.join(', ')}; use ${TEMPLATE_PLACEHOLDERS.map((p) => `{${p}}`).join(', ')}`;
  }
  if (shape.includes('{') || shape.includes('}')) return 'DNS template has an unbalanced "{" or "}"';
  for (const m of template.matchAll(PLACEHOLDER)) {
    if (!WORKLOAD_CHOSEN.has(m[1] as TemplatePlaceholder)) continue;
    const before = template[m.index - 1];
    const after = template[m.index + m[0].length];
    if ((before !== undefined && before !== '.') || (after !== undefined && after !== '.')) {
      return `{${m[1]}} must be a whole label ("{serviceAccount}.{namespace}.svc"): joined to other text in one label, two callers can render the same name (namespace "team" with service account "a-web" and namespace "team-a" with "web" in "{namespace}-{serviceAccount}")`;
    }
  }
  if (shape.includes('*') && !(shape.startsWith('*.') && shape.indexOf('*', 1) === -1)) {
    return 'a wildcard is allowed only as the whole first label ("*.example.com")';
  }
  if (!DNS_TEMPLATE_SHAPE.test(shape)) {
    return 'DNS template must be a DNS name: labels of letters, digits and "-", separated by "."';
  }
  return null;
}

/** Why `entry` is not an IP address or CIDR range, or null when it is. */
export function ipEntryProblem(entry: string): string | null {
  const slash = entry.indexOf('/');
  const address = slash === -1 ? entry : entry.slice(0, slash);
  const family = isIP(address);
  if (family === 0) return 'expected an IP address or a CIDR range (10.0.0.0/8, fd00::/64)';
  if (address.includes('%')) return 'a zone index (%...) is not part of an address a certificate can name';
  // Requested SANs in the mapped form are compared as the IPv4 address they map: so are entries.
  // The leaf encoder's parser writes a mapped address as its 4 IPv4 octets.
  if (family === 6 && ipToBytes(address).length === 4) {
    return 'an IPv4-mapped IPv6 entry: write it as IPv4 (::ffff:10.0.0.0/104 is 10.0.0.0/8); requested mapped addresses are compared as IPv4';
  }
  if (slash === -1) return null;
  const prefix = entry.slice(slash + 1);
  const max = family === 4 ? 32 : 128;
  if (!/^\d{1,3}$/.test(prefix) || Number(prefix) > max) return `CIDR prefix length must be 0-${max}`;
  return null;
}

type Part = string | TemplatePlaceholder;

/** A DNS template split once into literal text and placeholders. */
export class DnsTemplate {
  readonly template: string;
  readonly wildcard: boolean;
  /** Even indexes: literal text (lowercased); odd indexes: placeholder names. */
  private readonly parts: readonly Part[];
  /** The lowercased result when there are no placeholders. */
  private readonly fixed: string | null;

  constructor(template: string) {
    const problem = dnsTemplateProblem(template);
    if (problem) throw new Error(`invalid DNS template ${JSON.stringify(template)}: ${problem}`);
    this.template = template;
    this.wildcard = template.startsWith('*.');
    const parts: Part[] = [];
    let last = 0;
    for (const m of template.matchAll(PLACEHOLDER)) {
      parts.push(template.slice(last, m.index).toLowerCase(), m[1] as TemplatePlaceholder);
      last = m.index + m[0].length;
    }
    parts.push(template.slice(last).toLowerCase());
    this.parts = parts;
    this.fixed = parts.length === 1 ? parts[0]! : null;
  }

  /**
   * The template with the caller's values in place, lowercased; null when the caller's namespace
   * or service account is not a single DNS label. Kubernetes allows dots in service-account names,
   * and `{serviceAccount}.svc.cluster.local` must not render `payments.prod.svc.cluster.local`
   * (service payments in namespace prod) for a service account named `payments.prod` elsewhere.
   */
  render(values: TemplateValues): string | null {
    if (this.fixed !== null) return this.fixed;
    let out = '';
    for (let i = 0; i < this.parts.length; i++) {
      if (i % 2 === 0) {
        out += this.parts[i]!;
        continue;
      }
      const placeholder = this.parts[i] as TemplatePlaceholder;
      const value = values[placeholder].toLowerCase();
      // No value (a client-certificate caller whose cluster cannot be told): no name.
      if (value === '' || (WORKLOAD_CHOSEN.has(placeholder) && !ONE_LABEL.test(value))) return null;
      out += value;
    }
    return out;
  }
}

/** Whether `name` (lowercased) is allowed by a rendered template. */
export function dnsNameAllowed(name: string, rendered: string, wildcard: boolean): boolean {
  if (name === rendered) return true;
  if (!wildcard) return false;
  const suffix = rendered.slice(1); // ".ns.svc.cluster.local"
  if (name.length <= suffix.length || !name.endsWith(suffix)) return false;
  return ONE_LABEL.test(name.slice(0, name.length - suffix.length));
}

/** The allowed IP addresses and ranges of a rule. */
export class IpAllowList {
  readonly entries: readonly string[];
  /** The entries as ranges (one address: its full length), for checks against a CA's constraints. */
  readonly prefixes: readonly IpPrefix[];
  /**
   * One list per family: Node's BlockList matches an IPv4 address against IPv4-mapped IPv6
   * ranges, so `::/0` (or any `::/96` and wider) in one list would allow every IPv4 address.
   */
  private readonly lists: { readonly 4: BlockList | null; readonly 6: BlockList | null };

  constructor(entries: readonly string[]) {
    this.entries = [...entries];
    const lists: { 4: BlockList | null; 6: BlockList | null } = { 4: null, 6: null };
    const prefixes: IpPrefix[] = [];
    for (const e of entries) {
      const problem = ipEntryProblem(e);
      if (problem) throw new Error(`invalid IP entry ${JSON.stringify(e)}: ${problem}`);
      const slash = e.indexOf('/');
      const address = slash === -1 ? e : e.slice(0, slash);
      const family = isIP(address) === 4 ? 4 : 6;
      const bits = slash === -1 ? (family === 4 ? 32 : 128) : Number(e.slice(slash + 1));
      const type = family === 4 ? 'ipv4' : 'ipv6';
      (lists[family] ??= new BlockList()).addSubnet(address, bits, type);
      prefixes.push({ ip: ipToBytes(address), bits });
    }
    this.lists = lists;
    this.prefixes = prefixes;
  }

  allows(ip: string): boolean {
    const family = isIP(ip);
    if (family !== 4 && family !== 6) return false;
    const list = this.lists[family];
    return list !== null && list.check(ip, family === 4 ? 'ipv4' : 'ipv6');
  }
}
