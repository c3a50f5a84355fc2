import { describe, expect, it } from 'vitest';
import { CERTIFICATE_SERVICE, methodCodec, methodDefinition, type IstioCertificateRequestMsg, type IstioCertificateResponseMsg } from '../../../src/grpc/proto.js';
import { CERTIFICATE_REQUEST_WIRE, checkWire, HEALTH_CHECK_REQUEST_WIRE } from '../../../src/grpc/wire-check.js';

const encode = (req: IstioCertificateRequestMsg): Buffer => {
  const def = methodDefinition<IstioCertificateRequestMsg, IstioCertificateResponseMsg>(CERTIFICATE_SERVICE, 'CreateCertificate');
  return def.requestSerialize(req);
};

describe('checkWire', () => {
  it('passes what the codec encodes: a CSR, a lifetime, and metadata nesting structs, lists and every value kind', () => {
    const req = {
      csr: '-----BEGIN CERTIFICATE REQUEST-----\nMIIB…\n-----END CERTIFICATE REQUEST-----\n',
      validityDuration: '-9223372036854775808',
      metadata: {
        fields: {
          CertSigner: { stringValue: '' },
          ImpersonatedIdentity: { stringValue: 'spiffe://cluster.local/ns/ü/sa/b' },
          n: { numberValue: 1.5 },
          b: { boolValue: true },
          z: { nullValue: 'NULL_VALUE' },
          s: { structValue: { fields: { inner: { listValue: { values: [{ stringValue: 'x' }, { structValue: { fields: {} } }] } } } } },
        },
      },
    } as unknown as IstioCertificateRequestMsg;
    expect(() => checkWire(encode(req), CERTIFICATE_REQUEST_WIRE)).not.toThrow();
    expect(() => checkWire(Buffer.alloc(0), CERTIFICATE_REQUEST_WIRE)).not.toThrow();
    // Unknown fields of every wire type (protobuf keeps them), a well-formed group among them.
    expect(() => checkWire(Buffer.from('2801' + '310300000000000000' + '3a0100' + '3d01020304' + '434801' + '44', 'hex'), CERTIFICATE_REQUEST_WIRE)).not.toThrow();
    // A known field sent as a group is an unknown field to protobuf-go, and well-formed.
    expect(() => checkWire(Buffer.from('0b0c', 'hex'), CERTIFICATE_REQUEST_WIRE)).not.toThrow();
    // What has no field sent with another wire type is decoded as it came (no copy on the hot path).
    const plain = encode(req);
    expect(checkWire(plain, CERTIFICATE_REQUEST_WIRE)).toBe(plain);
    expect(() => checkWire(Buffer.from('0a07636c7573746572', 'hex'), HEALTH_CHECK_REQUEST_WIRE)).not.toThrow();
  });

  it.each([
    ['0a0561', /out of range|runs past/],
    ['0affffffff0f01', /out of range|runs past/],
    ['0001', /a field numbered 0/],
    ['0b', /a group \(field 1\) without its end/],
    ['0c', /an end of group \(field 1\) without its start/],
    ['1b24', /ended as field 4/],
    ['0e', /invalid wire type 6/],
    ['18ffffffffffffffffffff01', /a varint longer than 10 bytes/],
    ['22040a020a05', /out of range|runs past/],
    ['22060a040a0201ff', /out of range|runs past|not UTF-8/],
    ['0a02c328', /string field 1 is not UTF-8/],
    // metadata { fields { key "a" value { string_value "\xff" } } }: a Value's string_value is a string too.
    ['220a' + '0a08' + '0a0161' + '1203' + '1a01ff', /string field 3 is not UTF-8/],
    // A Value of one byte whose number_value (fixed64) reads 8 bytes past it, into a csr field after
    // the metadata: each nested message is bounded by its own length, not by the buffer's.
    ['2208' + '0a06' + '0a0161' + '1201' + '11' + '0a06616263646566', /runs past/],
  ])('refuses %s (%s)', (hex, why) => {
    expect(() => checkWire(Buffer.from(hex, 'hex'), CERTIFICATE_REQUEST_WIRE)).toThrow(why);
  });

  it('refuses messages nested deeper than any request (a Struct in a Value in a Struct...), which protobufjs would recurse into', () => {
    const nested = (levels: number): unknown => (levels === 0 ? { stringValue: 'x' } : { structValue: { fields: { a: nested(levels - 1) } } });
    const at = (levels: number): Buffer => encode({ csr: '', validityDuration: '0', metadata: { fields: { a: nested(levels) } } } as unknown as IstioCertificateRequestMsg);
    // Each level is three messages deep (Value, Struct, its map entry).
    expect(() => checkWire(at(30), CERTIFICATE_REQUEST_WIRE)).not.toThrow();
    expect(() => checkWire(at(40), CERTIFICATE_REQUEST_WIRE)).toThrow(/nested deeper than 100/);
    // Groups too: 60,000 group starts are refused at the bound, not by the stack running out.
    expect(() => checkWire(Buffer.alloc(60_000, 0x0b), CERTIFICATE_REQUEST_WIRE)).toThrow(/nested deeper than 100/);
  });

  // protobuf-go (grpc-go, istiod) keeps a declared field sent with another wire type as an unknown
  // field and decodes the rest; protobufjs alone failed on these (INTERNAL, which istio-agent
  // retries) or took the next bytes for the CSR.
  const decode = (hex: string): IstioCertificateRequestMsg =>
    methodCodec<IstioCertificateRequestMsg, IstioCertificateResponseMsg>(CERTIFICATE_SERVICE, 'CreateCertificate').deserialize(Buffer.from(hex, 'hex'));
  it.each([
    ['validity_duration sent length-delimited', '0a03616263' + '1a03616263', { csr: 'abc', validityDuration: '0', metadata: null }],
    ['metadata sent as a varint', '0a03616263' + '18901c' + '2001', { csr: 'abc', validityDuration: '3600', metadata: null }],
    ['csr sent as a varint before the real one', '0805' + '0a03616263', { csr: 'abc', validityDuration: '0', metadata: null }],
    ['csr sent as a varint after the real one', '0a03616263' + '0805', { csr: 'abc', validityDuration: '0', metadata: null }],
    ['csr sent as fixed32 and as a group', '0d01020304' + '0b0c' + '0a03616263', { csr: 'abc', validityDuration: '0', metadata: null }],
    [
      // metadata { fields { key "a" value { number_value as a varint; string_value "x" } } and a
      // second entry whose key is sent as a varint (its key is then empty, as in protobuf-go) }
      'fields of a Struct, its entries and their Values sent with another wire type',
      '0a03616263' + '2215' + '0a0a' + '0a0161' + '1205' + '1007' + '1a0178' + '0a07' + '0801' + '1203' + '1a0179',
      { csr: 'abc', validityDuration: '0', metadata: { fields: { a: { stringValue: 'x', kind: 'stringValue' }, '': { stringValue: 'y', kind: 'stringValue' } } } },
    ],
  ])('decodes as protobuf-go does: %s', (_name, hex, expected) => {
    expect(decode(hex)).toMatchObject(expected);
  });
});
