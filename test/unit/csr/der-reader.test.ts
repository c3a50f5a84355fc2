import { describe, expect, it } from 'vitest';
import { CaError } from '../../../src/errors/ca-error.js';
import {
  DerReader,
  MAX_DEPTH,
  Tag,
  integerMagnitude,
  oidKey,
  oidKeyToDotted,
  readBitString,
  readBoolean,
  readOidKey,
  readSmallUint,
} from '../../../src/csr/der-reader.js';

const b = (...bytes: number[]): Buffer => Buffer.from(bytes);

function malformed(fn: () => unknown, message: RegExp): void {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(CaError);
    expect((err as CaError).code).toBe('CSR_MALFORMED');
    expect((err as CaError).message).toMatch(message);
    return;
  }
  throw new Error('expected CSR_MALFORMED');
}

describe('DerReader', () => {
  it('reads short- and long-form lengths', () => {
    const long = Buffer.concat([b(0x04, 0x81, 0x80), Buffer.alloc(0x80)]);
    const r = new DerReader(Buffer.concat([b(0x30, 0x00), long]));
    expect(r.expect(Tag.SEQUENCE, 'x')).toEqual({ tag: 0x30, start: 0, contentStart: 2, end: 2 });
    expect(r.expect(Tag.OCTET_STRING, 'y')).toEqual({ tag: 0x04, start: 2, contentStart: 5, end: 5 + 0x80 });
    expect(r.done).toBe(true);
    r.finish('z');
  });

  const bad: { name: string; bytes: Buffer; message: RegExp }[] = [
    { name: 'an indefinite length', bytes: b(0x30, 0x80, 0x00, 0x00), message: /indefinite length/ },
    { name: 'a long-form length below 128', bytes: b(0x04, 0x81, 0x05, 1, 2, 3, 4, 5), message: /non-minimal length/ },
    { name: 'a length with a leading zero octet', bytes: Buffer.concat([b(0x04, 0x82, 0x00, 0x90), Buffer.alloc(0x90)]), message: /non-minimal length/ },
    { name: 'a length beyond the buffer', bytes: b(0x04, 0x05, 1, 2), message: /longer than the data/ },
    { name: 'a length of more than four octets', bytes: b(0x04, 0x85, 1, 0, 0, 0, 0), message: /impossibly large/ },
    { name: 'a truncated length', bytes: b(0x04, 0x82, 0x01), message: /truncated/ },
    { name: 'a missing length', bytes: b(0x04), message: /truncated/ },
    { name: 'a high tag number', bytes: b(0x1f, 0x81, 0x00, 0x00), message: /high tag number/ },
  ];
  it.each(bad)('rejects $name', ({ bytes, message }) => {
    malformed(() => new DerReader(bytes).next('element'), message);
  });

  it('rejects a missing element and an unexpected tag', () => {
    malformed(() => new DerReader(b()).expect(Tag.SEQUENCE, 'thing'), /thing is missing/);
    malformed(() => new DerReader(b(0x31, 0x00)).expect(Tag.SEQUENCE, 'thing'), /thing has an unexpected type/);
  });

  it('rejects trailing data on finish', () => {
    const r = new DerReader(b(0x05, 0x00, 0x00));
    r.next('null');
    malformed(() => r.finish('the null'), /unexpected data after the null/);
  });

  it('does not let a child read past its parent', () => {
    // SEQUENCE of length 2 whose child claims 3 bytes, although the buffer has them.
    const buf = b(0x30, 0x02, 0x04, 0x03, 0x01, 0x02, 0x03);
    const r = new DerReader(buf);
    const seq = r.next('seq');
    malformed(() => r.enter(seq, 'seq').next('child'), /longer than the data/);
  });

  it(`bounds nesting at ${MAX_DEPTH} levels`, () => {
    /** Enters `levels` nested SEQUENCEs around a NULL. */
    const walk = (levels: number): void => {
      let buf = b(0x05, 0x00);
      for (let i = 0; i < levels; i++) buf = Buffer.concat([b(0x30, buf.length), buf]);
      let r = new DerReader(buf);
      for (;;) {
        const tlv = r.next('level');
        if (tlv.tag !== Tag.SEQUENCE) break;
        r = r.enter(tlv, 'level');
      }
    };
    malformed(() => walk(MAX_DEPTH + 2), /nested too deeply/);
    malformed(() => walk(MAX_DEPTH + 1), /nested too deeply/);
    expect(() => walk(MAX_DEPTH)).not.toThrow();
  });

  it('peeks and reads optional elements', () => {
    const r = new DerReader(b(0x01, 0x01, 0xff, 0x02, 0x01, 0x05));
    expect(r.optional(Tag.INTEGER, 'int')).toBeUndefined();
    expect(r.peekTag()).toBe(Tag.BOOLEAN);
    expect(r.optional(Tag.BOOLEAN, 'bool')).toBeDefined();
    expect(r.optional(Tag.INTEGER, 'int')).toBeDefined();
    expect(r.peekTag()).toBe(-1);
  });
});

describe('primitive decoders', () => {
  const one = (bytes: Buffer) => ({ buf: bytes, tlv: new DerReader(bytes).next('x') });

  it('decodes non-negative minimal INTEGERs', () => {
    const { buf, tlv } = one(b(0x02, 0x03, 0x00, 0x80, 0x01));
    expect(integerMagnitude(buf, tlv, 'n')).toEqual(b(0x80, 0x01));
    const zero = one(b(0x02, 0x01, 0x00));
    expect(readSmallUint(zero.buf, zero.tlv, 'v')).toBe(0);
    const big = one(b(0x02, 0x02, 0x01, 0x00));
    expect(readSmallUint(big.buf, big.tlv, 'v')).toBe(256);
  });

  it.each([
    ['an empty INTEGER', b(0x02, 0x00), /empty INTEGER/],
    ['a padded positive INTEGER', b(0x02, 0x02, 0x00, 0x7f), /non-minimally/],
    ['a padded negative INTEGER', b(0x02, 0x02, 0xff, 0x80), /non-minimally/],
    ['a negative INTEGER', b(0x02, 0x01, 0x80), /negative/],
  ])('rejects %s', (_name, bytes, message) => {
    const { buf, tlv } = one(bytes);
    malformed(() => integerMagnitude(buf, tlv, 'n'), message);
  });

  it('rejects a small integer that does not fit', () => {
    const { buf, tlv } = one(b(0x02, 0x08, 1, 2, 3, 4, 5, 6, 7, 8));
    malformed(() => readSmallUint(buf, tlv, 'v'), /too large/);
    // Six octets at most: a seventh could leave the range a number holds exactly.
    const seven = one(b(0x02, 0x07, 1, 2, 3, 4, 5, 6, 7));
    malformed(() => readSmallUint(seven.buf, seven.tlv, 'v'), /too large/);
    const six = one(b(0x02, 0x06, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff));
    expect(readSmallUint(six.buf, six.tlv, 'v')).toBe(2 ** 47 - 1);
  });

  it('accepts only DER BOOLEANs', () => {
    expect(readBoolean(b(0x01, 0x01, 0xff), { tag: 1, start: 0, contentStart: 2, end: 3 }, 'b')).toBe(true);
    expect(readBoolean(b(0x01, 0x01, 0x00), { tag: 1, start: 0, contentStart: 2, end: 3 }, 'b')).toBe(false);
    malformed(() => readBoolean(b(0x01, 0x01, 0x01), { tag: 1, start: 0, contentStart: 2, end: 3 }, 'b'), /not a DER BOOLEAN/);
    malformed(() => readBoolean(b(0x01, 0x02, 0xff, 0xff), { tag: 1, start: 0, contentStart: 2, end: 4 }, 'b'), /not a valid BOOLEAN/);
  });

  it.each([
    ['an empty BIT STRING', b(0x03, 0x00), /empty BIT STRING/],
    ['more than 7 unused bits', b(0x03, 0x02, 0x08, 0x00), /not a valid BIT STRING/],
    ['unused bits with no data', b(0x03, 0x01, 0x01), /not a valid BIT STRING/],
    ['non-zero padding bits', b(0x03, 0x02, 0x01, 0x01), /non-zero padding/],
  ])('rejects a BIT STRING with %s', (_name, bytes, message) => {
    const { buf, tlv } = one(bytes);
    malformed(() => readBitString(buf, tlv, 'bits'), message);
  });

  it('reads a BIT STRING with padding', () => {
    const { buf, tlv } = one(b(0x03, 0x02, 0x05, 0xa0));
    expect(readBitString(buf, tlv, 'bits')).toEqual({ unusedBits: 5, bytes: b(0xa0) });
  });

  it.each([
    ['an empty OID', b(0x06, 0x00), /empty OBJECT IDENTIFIER/],
    ['a truncated OID', b(0x06, 0x02, 0x2a, 0x86), /truncated/],
    ['a non-minimal OID arc', b(0x06, 0x03, 0x2a, 0x80, 0x01), /non-minimally/],
    ['an OID arc of 2^31', b(0x06, 0x06, 0x2a, 0x88, 0x80, 0x80, 0x80, 0x00), /arc above 2147483647/],
    // 3,000 octets of one arc: refused at its fifth octet, not converted (that cost quadratic time)
    ['an OID arc of 3,000 octets', Buffer.concat([b(0x06, 0x82, 0x0b, 0xb9, 0x2a), Buffer.alloc(2999, 0x81), b(0x01)]), /arc above 2147483647/],
  ])('rejects %s', (_name, bytes, message) => {
    const { buf, tlv } = one(bytes);
    malformed(() => readOidKey(buf, tlv, 'oid'), message);
  });

  it.each(['1.2.840.113549.1.9.14', '2.5.29.17', '0.9.2342.19200300.100.1.1', '2.999.3', '1.3.6.1.4.1.99999.2147483647', '2.2147483567'])(
    'round-trips the OID %s',
    (dotted) => {
      const key = oidKey(dotted);
      const der = Buffer.concat([b(0x06, key.length), Buffer.from(key, 'latin1')]);
      const tlv = new DerReader(der).next('oid');
      expect(readOidKey(der, tlv, 'oid')).toBe(key);
      expect(oidKeyToDotted(key)).toBe(dotted);
    },
  );
});
