import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  bitString,
  boolean,
  encodeLength,
  explicitTag,
  generalizedTime,
  ia5String,
  implicitPrimitive,
  integer,
  nullValue,
  octetString,
  oid,
  readChildren,
  readElement,
  sequence,
  set,
  smallInteger,
  tlv,
  utcTime,
  utf8String,
  x509Time,
} from '../../../src/x509/der.js';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const bytes = (h: string): Buffer => Buffer.from(h, 'hex');

describe('DER lengths', () => {
  it.each([
    { len: 0, der: '00' },
    { len: 1, der: '01' },
    { len: 127, der: '7f' },
    { len: 128, der: '8180' },
    { len: 255, der: '81ff' },
    { len: 256, der: '820100' },
    { len: 65535, der: '82ffff' },
    { len: 65536, der: '83010000' },
    { len: 0x1000000, der: '8401000000' },
  ])('length $len encodes as $der', ({ len, der }) => {
    expect(hex(encodeLength(len))).toBe(der);
  });

  it.each([-1, 1.5, 2 ** 32, Number.NaN])('length %s is refused', (len) => {
    expect(() => encodeLength(len)).toThrow(RangeError);
  });

  it('a 200-octet value uses the long form and reads back intact', () => {
    const content = Buffer.alloc(200, 7);
    const der = octetString(content);
    expect(hex(der.subarray(0, 3))).toBe('0481c8');
    const el = readElement(der);
    expect(el).toEqual({ tag: 0x04, offset: 0, start: 3, end: 203 });
    expect(der.subarray(el.start, el.end).equals(content)).toBe(true);
  });

  it('any content length survives an encode/read round trip', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 70000 }), (n) => {
        const der = tlv(0x04, Buffer.alloc(n));
        const el = readElement(der);
        return el.end === der.length && el.end - el.start === n;
      }),
      { numRuns: 200 },
    );
  });
});

describe('DER INTEGER', () => {
  it.each([
    { name: 'empty magnitude is zero', in: '', der: '020100' },
    { name: 'zero stays one octet', in: '00', der: '020100' },
    { name: 'leading zeros are stripped', in: '000001', der: '020101' },
    { name: '0x7f needs no sign octet', in: '7f', der: '02017f' },
    { name: 'high bit set gets a 0x00 sign octet', in: '80', der: '02020080' },
    { name: 'a caller-supplied sign octet is kept once', in: '0080', der: '02020080' },
    { name: 'zeros before a high-bit octet collapse to one sign octet', in: '000000ff01', der: '020300ff01' },
    { name: 'a multi-octet positive value is copied', in: '0100', der: '02020100' },
  ])('$name', (c) => {
    expect(hex(integer(bytes(c.in)))).toBe(c.der);
  });

  it.each([
    { n: 0, der: '020100' },
    { n: 2, der: '020102' },
    { n: 127, der: '02017f' },
    { n: 128, der: '02020080' },
    { n: 256, der: '02020100' },
  ])('small integer $n encodes as $der', ({ n, der }) => {
    expect(hex(smallInteger(n))).toBe(der);
  });

  it('a negative small integer is refused', () => {
    expect(() => smallInteger(-1)).toThrow(RangeError);
  });

  it('every magnitude decodes back to the same positive value', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 1, maxLength: 40 }), (mag) => {
        const der = integer(mag);
        const el = readElement(der);
        const content = der.subarray(el.start, el.end);
        // positive: sign bit clear; minimal: no redundant leading 0x00
        if ((content[0] as number) & 0x80) return false;
        if (content.length > 1 && content[0] === 0 && !((content[1] as number) & 0x80)) return false;
        const value = BigInt('0x' + (hex(content) || '0'));
        return value === BigInt('0x' + hex(mag));
      }),
    );
  });
});

describe('DER OBJECT IDENTIFIER', () => {
  it.each([
    { oid: '2.5.29.17', der: '0603551d11' },
    { oid: '1.2.840.10045.4.3.2', der: '06082a8648ce3d040302' },
    { oid: '1.2.840.113549.1.1.11', der: '06092a864886f70d01010b' },
    { oid: '1.3.6.1.5.5.7.3.1', der: '06082b06010505070301' },
    { oid: '2.999.3', der: '0603883703' },
  ])('$oid encodes as $der', (c) => {
    expect(hex(oid(c.oid))).toBe(c.der);
  });

  it.each(['', '1', '3.1', '1.40', '1.2.-3', '1..2', '1.02'])('malformed OID "%s" is refused', (s) => {
    expect(() => oid(s)).toThrow();
  });
});

describe('DER primitives and tags', () => {
  it.each([
    { name: 'BIT STRING with 5 unused bits (key usage)', der: () => bitString(Uint8Array.of(0xa0), 5), want: '030205a0' },
    { name: 'BIT STRING with no unused bits', der: () => bitString(Uint8Array.of(1, 2)), want: '0303000102' },
    { name: 'empty BIT STRING', der: () => bitString(new Uint8Array(0)), want: '030100' },
    { name: 'BOOLEAN TRUE is 0xff', der: () => boolean(true), want: '0101ff' },
    { name: 'BOOLEAN FALSE is 0x00', der: () => boolean(false), want: '010100' },
    { name: 'NULL', der: () => nullValue(), want: '0500' },
    { name: 'empty SEQUENCE', der: () => sequence(), want: '3000' },
    { name: 'SEQUENCE concatenates its children', der: () => sequence(nullValue(), boolean(true)), want: '30050500' + '0101ff' },
    { name: 'IA5String', der: () => ia5String('abc'), want: '1603616263' },
    { name: 'UTF8String keeps multi-byte characters', der: () => utf8String('é'), want: '0c02c3a9' },
    { name: 'SET concatenates its children', der: () => set(nullValue()), want: '31020500' },
    { name: 'explicit [3] wraps a complete TLV', der: () => explicitTag(3, nullValue()), want: 'a3020500' },
    { name: 'implicit [6] keeps only the content', der: () => implicitPrimitive(6, Buffer.from('a')), want: '860161' },
  ])('$name', (c) => {
    expect(hex(c.der())).toBe(c.want);
  });

  it('IA5String refuses characters outside ASCII', () => {
    expect(() => ia5String('spiffe://td/ns/é')).toThrow(/ASCII/);
  });

  it.each([-1, 8])('BIT STRING refuses %s unused bits', (n) => {
    expect(() => bitString(Uint8Array.of(0), n)).toThrow(RangeError);
  });
});

describe('DER times (RFC 5280 §4.1.2.5)', () => {
  const ascii = (der: Buffer): string => der.subarray(2).toString('latin1');
  it.each([
    { when: '1950-01-01T00:00:00Z', tag: 0x17, text: '500101000000Z' },
    { when: '1999-12-31T23:59:59Z', tag: 0x17, text: '991231235959Z' },
    { when: '2000-01-01T00:00:00Z', tag: 0x17, text: '000101000000Z' },
    { when: '2026-03-04T05:06:07.890Z', tag: 0x17, text: '260304050607Z' },
    { when: '2049-12-31T23:59:59.999Z', tag: 0x17, text: '491231235959Z' },
    { when: '2050-01-01T00:00:00Z', tag: 0x18, text: '20500101000000Z' },
    { when: '9999-12-31T23:59:59Z', tag: 0x18, text: '99991231235959Z' },
    { when: '1949-12-31T23:59:59Z', tag: 0x18, text: '19491231235959Z' },
  ])('$when is encoded as tag $tag "$text"', (c) => {
    const der = x509Time(new Date(c.when));
    expect(der[0]).toBe(c.tag);
    expect(der[1]).toBe(c.text.length);
    expect(ascii(der)).toBe(c.text);
  });

  it('UTCTime refuses 2050, the first year it cannot represent', () => {
    expect(() => utcTime(new Date('2050-01-01T00:00:00Z'))).toThrow(RangeError);
  });

  it('UTCTime refuses 1949', () => {
    expect(() => utcTime(new Date('1949-12-31T23:59:59Z'))).toThrow(RangeError);
  });

  it('GeneralizedTime can encode 2049 when asked directly', () => {
    expect(ascii(generalizedTime(new Date('2049-12-31T23:59:59Z')))).toBe('20491231235959Z');
  });

  it('an invalid Date is refused', () => {
    expect(() => x509Time(new Date('nope'))).toThrow(RangeError);
  });
});

describe('DER reader', () => {
  it('children of a SEQUENCE are listed in order', () => {
    const der = sequence(nullValue(), boolean(true), octetString(Buffer.alloc(130)));
    const kids = readChildren(der, readElement(der));
    expect(kids.map((k) => k.tag)).toEqual([0x05, 0x01, 0x04]);
    expect(kids[2]?.end).toBe(der.length);
  });

  it.each([
    { name: 'an indefinite length', der: '3080' },
    { name: 'a non-minimal long-form length', der: '048101ff' },
    { name: 'a length past the end of the buffer', der: '0405ff' },
    { name: 'a truncated long-form length', der: '0482' },
    { name: 'a lone tag octet', der: '30' },
    { name: 'a high tag number', der: '1f0100' },
  ])('refuses $name', (c) => {
    expect(() => readElement(bytes(c.der))).toThrow();
  });
});
