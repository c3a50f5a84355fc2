import { describe, expect, it } from 'vitest';
import { ipBytesToText, ipToBytes, ipv6ToText } from '../../../src/net/ip-text.js';

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

describe('ipToBytes', () => {
  it.each([
    { ip: '10.1.2.3', hex: '0a010203' },
    { ip: '0.0.0.0', hex: '00000000' },
    { ip: '::', hex: '0'.repeat(32) },
    { ip: '::1', hex: '0'.repeat(31) + '1' },
    { ip: '2001:db8::1', hex: '20010db8' + '0'.repeat(23) + '1' },
    { ip: '2001:DB8:0:0:1:0:0:1', hex: '20010db8000000000001000000000001' },
    { ip: 'fe80::', hex: 'fe80' + '0'.repeat(28) },
    // IPv4-mapped: written as the IPv4 address (Go 1.27 refuses the 16-octet mapped form)
    { ip: '::ffff:192.0.2.1', hex: 'c0000201' },
    { ip: '::FFFF:c000:0201', hex: 'c0000201' },
    { ip: '::fffe:192.0.2.1', hex: '00000000000000000000fffec0000201' },
    { ip: '::192.0.2.1', hex: '000000000000000000000000c0000201' },
    { ip: '1:2:3:4:5:6:192.0.2.1', hex: '000100020003000400050006c0000201' },
    { ip: '1::6:192.0.2.1', hex: '00010000000000000000' + '0006c0000201' },
  ])('$ip becomes $hex', (c) => {
    expect(ipToBytes(c.ip).toString('hex')).toBe(c.hex);
  });
});
