import { describe, expect, it } from 'vitest';
import { ipBytesToText, ipv6ToText } from '../../../src/net/ip-text.js';

describe('ipv6ToText', () => {
  const hex = (s: string): Uint8Array => Buffer.from(s.replace(/:/g, ''), 'hex');
  it.each([
    ['2001:0db8:0000:0000:0000:0000:0000:0001', '2001:db8::1'],
    ['0000:0000:0000:0000:0000:0000:0000:0000', '::'],
    ['0000:0000:0000:0000:0000:0000:0000:0001', '::1'],
    ['2001:0db8:0000:0001:0000:0000:0000:0001', '2001:db8:0:1::1'],
    ['2001:0db8:0000:0000:0001:0000:0000:0001', '2001:db8::1:0:0:1'],
    ['2001:0db8:0001:0001:0001:0001:0000:0001', '2001:db8:1:1:1:1:0:1'],
    ['fe80:0000:0000:0000:0000:0000:0000:0000', 'fe80::'],
    ['0000:0000:0000:0000:0000:ffff:c000:0201', '::ffff:192.0.2.1'],
    ['ABCD:EF01:2345:6789:ABCD:EF01:2345:6789', 'abcd:ef01:2345:6789:abcd:ef01:2345:6789'],
  ])('formats %s as %s (RFC 5952)', (input, expected) => {
    expect(ipv6ToText(hex(input))).toBe(expected);
  });
});

describe('ipBytesToText', () => {
  it('writes 4 octets as IPv4 and 16 as IPv6', () => {
    expect(ipBytesToText(Uint8Array.from([10, 0, 0, 1]))).toBe('10.0.0.1');
    expect(ipBytesToText(Buffer.from('00000000000000000000000000000001', 'hex'))).toBe('::1');
  });
});
