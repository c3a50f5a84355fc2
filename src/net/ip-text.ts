/** IP addresses between text and octets (a certificate's iPAddress, a name constraint's range, a policy's entries). */
import { isIPv4, isIPv6 } from 'node:net';
import { isIpv4Mapped } from './ipv4-mapped.js';

/** A range of IP addresses: an address (4 or 16 octets) and its prefix length. */
export interface IpPrefix {
  readonly ip: Uint8Array;
  readonly bits: number;
}

/** RFC 5952 text form: lowercase, no leading zeros, longest (first) run of 2+ zero groups as "::". */
export function ipv6ToText(b: Uint8Array): string {
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((b[i]! << 8) | b[i + 1]!);
  // IPv4-mapped (::ffff:a.b.c.d) keeps the dotted tail, per RFC 5952 §5.
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) {
    return `::ffff:${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
  }
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (gs: number[]): string => gs.map((g) => g.toString(16)).join(':');
  if (bestStart < 0) return hex(groups);
  return `${hex(groups.slice(0, bestStart))}::${hex(groups.slice(bestStart + bestLen))}`;
}

/** 4 octets as dotted IPv4, 16 as RFC 5952 IPv6. */
export function ipBytesToText(b: Uint8Array): string {
  return b.length === 4 ? `${b[0]}.${b[1]}.${b[2]}.${b[3]}` : ipv6ToText(b);
}

/**
 * IPv4 (4 octets) or IPv6 (16 octets) from text; zone ids are refused (not encodable). An
 * IPv4-mapped IPv6 address is written as the 4-octet IPv4 address: Go 1.27's X.509 parser
 * refuses a certificate carrying the mapped form.
 */
export function ipToBytes(text: string): Buffer {
  if (isIPv4(text)) return Buffer.from(text.split('.').map((o) => Number(o)));
  if (!isIPv6(text) || text.includes('%')) throw new Error(`invalid IP address: ${JSON.stringify(text)}`);
  let groups: string[];
  let tail = text;
  const v4: number[] = [];
  const lastColon = text.lastIndexOf(':');
  if (text.indexOf('.', lastColon) !== -1) {
    // embedded dotted quad (e.g. ::ffff:192.0.2.1) supplies the last 32 bits
    const quad = text.slice(lastColon + 1);
    if (!isIPv4(quad)) throw new Error(`invalid IP address: ${JSON.stringify(text)}`);
    v4.push(...quad.split('.').map((o) => Number(o)));
    tail = text.slice(0, lastColon + 1);
    if (tail.endsWith(':') && !tail.endsWith('::')) tail = tail.slice(0, -1);
  }
  const wanted = 8 - v4.length / 2;
  const dbl = tail.indexOf('::');
  if (dbl === -1) {
    groups = tail === '' ? [] : tail.split(':');
  } else {
    const head = tail.slice(0, dbl) === '' ? [] : tail.slice(0, dbl).split(':');
    const rest = tail.slice(dbl + 2) === '' ? [] : tail.slice(dbl + 2).split(':');
    groups = [...head, ...Array<string>(wanted - head.length - rest.length).fill('0'), ...rest];
  }
  if (groups.length !== wanted) throw new Error(`invalid IP address: ${JSON.stringify(text)}`);
  const out = Buffer.alloc(16);
  groups.forEach((g, idx) => out.writeUInt16BE(parseInt(g, 16), idx * 2));
  out.set(v4, 12);
  return isIpv4Mapped(out) ? out.subarray(12) : out;
}
