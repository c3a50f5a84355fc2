import { deflateSync, gzipSync } from 'node:zlib';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { GrpcStatusError, Status, type StatusCode } from '../../../src/grpc/codes.js';
import { encodeGrpcMessage, frameMessage, parseGrpcTimeout, supportedEncoding, UnaryBody } from '../../../src/grpc/wire.js';

const MAX = 64 * 1024;

function prefix(length: number, flag = 0): Buffer {
  const p = Buffer.alloc(5);
  p[0] = flag;
  p.writeUInt32BE(length, 1);
  return p;
}

function framed(payload: Buffer, flag = 0): Buffer {
  return Buffer.concat([prefix(payload.length, flag), payload]);
}

function expectStatus(fn: () => unknown, code: StatusCode, details?: RegExp): void {
  let thrown: unknown;
  try {
    fn();
  } catch (e) {
    thrown = e;
  }
  expect(thrown).toBeInstanceOf(GrpcStatusError);
  expect((thrown as GrpcStatusError).code).toBe(code);
  if (details) expect((thrown as GrpcStatusError).details).toMatch(details);
}

/** A UnaryBody fed `chunks`, then asked for its message. */
function read(chunks: Buffer[], encoding?: string, max = MAX): Buffer {
  const body = new UnaryBody(max);
  for (const c of chunks) body.push(c);
  return body.message(encoding);
}

describe('frameMessage', () => {
  it('writes flag 0, the big-endian length, then the payload', () => {
    expect(frameMessage(Buffer.from('abc'))).toEqual(Buffer.from([0, 0, 0, 0, 3, 0x61, 0x62, 0x63]));
    expect(frameMessage(new Uint8Array(0))).toEqual(Buffer.from([0, 0, 0, 0, 0]));
    expect(frameMessage(Buffer.alloc(0x010203)).subarray(0, 5)).toEqual(Buffer.from([0, 0, 0x01, 0x02, 0x03]));
  });
});

describe('UnaryBody', () => {
  const payload = Buffer.from('a request message');

  it('returns the one message, whole or split at every byte (prefix included)', () => {
    expect(read([framed(payload)])).toEqual(payload);
    expect(read([...framed(payload)].map((b) => Buffer.from([b])))).toEqual(payload);
  });

  it("copies what it is given: it keeps no slice of a chunk's buffer (a socket read a one-byte DATA frame would pin)", () => {
    const frame = framed(payload);
    for (const split of [[frame.length], [1, 4, frame.length], [...frame.keys()].map((i) => i + 1)]) {
      // The chunks are views of one large buffer, as node:http2 hands DATA frames over.
      const read16k = Buffer.alloc(16 * 1024);
      frame.copy(read16k, 100);
      const body = new UnaryBody(MAX);
      let from = 0;
      for (const to of split) {
        body.push(read16k.subarray(100 + from, 100 + to));
        from = to;
      }
      read16k.fill(0xee); // the socket's buffer reused for the next read
      const message = body.message(undefined);
      expect(message).toEqual(payload);
      expect(message.buffer).not.toBe(read16k.buffer);
    }
  });

  it('returns an empty message (length 0) as empty', () => {
    expect(read([prefix(0)])).toHaveLength(0);
  });

  it('refuses a declared length above the limit as soon as the 5-byte prefix is in, before any payload', () => {
    const body = new UnaryBody(MAX);
    body.push(prefix(MAX + 1).subarray(0, 3));
    expectStatus(() => body.push(prefix(MAX + 1).subarray(3)), Status.RESOURCE_EXHAUSTED, /too large/);
  });

  it('accepts a declared length of exactly the limit', () => {
    expect(read([framed(Buffer.alloc(MAX, 7))])).toHaveLength(MAX);
  });

  it('bounds what is buffered even when the prefix declares a small message', () => {
    const body = new UnaryBody(MAX);
    body.push(framed(payload));
    expectStatus(() => body.push(Buffer.alloc(MAX)), Status.RESOURCE_EXHAUSTED);
  });

  it.each([
    ['no bytes at all', []],
    ['a partial prefix', [Buffer.from([0, 0, 0])]],
    ['a message cut short (declares 100, carries 10)', [prefix(100), Buffer.alloc(10)]],
    ['two messages', [framed(payload), framed(payload)]],
    ['trailing bytes after the message', [framed(payload), Buffer.from([0])]],
    ['an unknown flag (2)', [framed(payload, 2)]],
  ] as Array<[string, Buffer[]]>)('refuses %s as INTERNAL', (_name, chunks) => {
    expectStatus(() => read(chunks), Status.INTERNAL);
  });

  it.each([
    ['gzip', gzipSync],
    ['deflate', deflateSync],
  ] as const)('decompresses a %s message', (encoding, compress) => {
    expect(read([framed(compress(payload), 1)], encoding)).toEqual(payload);
  });

  it('refuses a compressed flag without a usable grpc-encoding as INTERNAL', () => {
    expectStatus(() => read([framed(gzipSync(payload), 1)], undefined), Status.INTERNAL);
    expectStatus(() => read([framed(gzipSync(payload), 1)], 'identity'), Status.INTERNAL);
  });

  it('refuses bytes that do not decompress as INTERNAL', () => {
    expectStatus(() => read([framed(payload, 1)], 'gzip'), Status.INTERNAL, /decompressed/);
    expectStatus(() => read([framed(payload, 1)], 'deflate'), Status.INTERNAL, /decompressed/);
  });

  it('inflates up to the limit, and refuses a zip bomb past it as RESOURCE_EXHAUSTED', () => {
    expect(read([framed(gzipSync(Buffer.alloc(MAX)), 1)], 'gzip')).toHaveLength(MAX);
    expectStatus(() => read([framed(gzipSync(Buffer.alloc(MAX + 1)), 1)], 'gzip'), Status.RESOURCE_EXHAUSTED);
    const bomb = gzipSync(Buffer.alloc(64 * 1024 * 1024));
    expect(bomb.length).toBeLessThan(MAX);
    expectStatus(() => read([framed(bomb, 1)], 'gzip'), Status.RESOURCE_EXHAUSTED);
    expectStatus(() => read([framed(deflateSync(Buffer.alloc(64 * 1024 * 1024)), 1)], 'deflate'), Status.RESOURCE_EXHAUSTED);
  });
});

describe('supportedEncoding', () => {
  it('reads identity (or none), gzip and deflate only', () => {
    for (const e of [undefined, 'identity', 'gzip', 'deflate']) expect(supportedEncoding(e)).toBe(true);
    for (const e of ['br', 'snappy', 'GZIP', '']) expect(supportedEncoding(e)).toBe(false);
  });
});

describe('parseGrpcTimeout', () => {
  it.each([
    ['1H', 3_600_000],
    ['2M', 120_000],
    ['3S', 3000],
    ['4m', 4],
    ['5000u', 5],
    ['7000000n', 7],
    ['0m', 0],
    ['99999999S', 99_999_999_000],
  ])('reads %s as %d ms', (value, ms) => {
    expect(parseGrpcTimeout(value)).toBeCloseTo(ms, 9);
  });

  it('reads an absent header as no deadline', () => {
    expect(parseGrpcTimeout(undefined)).toBeUndefined();
  });

  it.each(['', '10', 'S', '1s', '1h', '-1S', '1.5S', ' 1S', '1S ', '1 S', '123456789S', '1SS'])('refuses %j as INTERNAL, as grpc-go does', (value) => {
    expect(() => parseGrpcTimeout(value)).toThrow(expect.objectContaining({ code: Status.INTERNAL, message: expect.stringMatching(/^malformed grpc-timeout/) }));
  });
});

describe('encodeGrpcMessage', () => {
  it('leaves printable ASCII other than % as it is', () => {
    const printable = Array.from({ length: 0x7f - 0x20 }, (_, i) => String.fromCharCode(0x20 + i))
      .filter((c) => c !== '%')
      .join('');
    expect(encodeGrpcMessage(printable)).toBe(printable);
  });

  it('percent-encodes %, control characters and the UTF-8 bytes of non-ASCII, in upper-case hex', () => {
    expect(encodeGrpcMessage('100%')).toBe('100%25');
    expect(encodeGrpcMessage('a\nb\tc\x7f')).toBe('a%0Ab%09c%7F');
    expect(encodeGrpcMessage('caf\u00e9')).toBe('caf%C3%A9');
    expect(encodeGrpcMessage('\u65e5\u672c')).toBe('%E6%97%A5%E6%9C%AC');
    expect(encodeGrpcMessage('\u{1F512} locked')).toBe('%F0%9F%94%92 locked');
  });

  it('always yields printable ASCII that percent-decodes back to the message', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }), (message) => {
        const encoded = encodeGrpcMessage(message);
        expect(encoded).toMatch(/^[\x20-\x7e]*$/);
        expect(decodeURIComponent(encoded)).toBe(message);
      }),
    );
  });
});
