import { gunzipSync, inflateSync } from 'node:zlib';
import { GrpcStatusError, Status } from './codes.js';

/**
 * gRPC's length-prefixed messages and header values (grpc/doc/PROTOCOL-HTTP2.md). HTTP/2 itself
 * is Node's (the same node:http2 that grpc-js serves with); this file is only the thin gRPC layer.
 */

/** Encodings we can read; also sent as grpc-accept-encoding. */
export const ACCEPT_ENCODING = 'identity,deflate,gzip';

/** One uncompressed message: flag 0, 4-byte big-endian length, payload. */
export function frameMessage(payload: Uint8Array): Buffer {
  const frame = Buffer.allocUnsafe(5 + payload.length);
  frame[0] = 0;
  frame.writeUInt32BE(payload.length, 1);
  frame.set(payload, 5);
  return frame;
}

/**
 * Collects a unary request body and returns its single message. The declared length is checked
 * as soon as the prefix arrives, so an oversized request is refused before it is buffered. Each
 * chunk is copied into one buffer of the call's own: node:http2 hands DATA frames over as slices
 * of the socket's read (up to 16 KB), and a slice kept as it came pins the whole read, so a client
 * sending a byte per frame would hold far more memory than the bytes counted against it.
 */
export class UnaryBody {
  private buf: Buffer = Buffer.alloc(0);
  private received = 0;
  private declared = -1;

  constructor(private readonly maxMessageBytes: number) {}

  /** Throws RESOURCE_EXHAUSTED as soon as the message is known to be too large. */
  push(chunk: Buffer): void {
    const total = this.received + chunk.length;
    if (this.declared < 0 && total >= 5) {
      const head = Buffer.alloc(5);
      this.buf.copy(head, 0, 0, this.received);
      chunk.copy(head, this.received, 0, 5 - this.received);
      this.declared = head.readUInt32BE(1);
      if (this.declared > this.maxMessageBytes) throw tooLarge(this.declared, this.maxMessageBytes);
    }
    // A second message (or trailing garbage) would also land here; bound it the same way.
    if (total > 5 + this.maxMessageBytes) throw tooLarge(total - 5, this.maxMessageBytes);
    if (total > this.buf.length) {
      // Doubling, up to the declared message (past it only trailing bytes, refused at the end):
      // at most about twice what was received, and usually one allocation of the message's size.
      const bound = this.declared >= 0 ? 5 + this.declared : 5;
      // Not from Buffer's shared pool, whose 8 KB slabs a small stalled buffer would pin too.
      const grown = Buffer.allocUnsafeSlow(Math.max(total, Math.min(Math.max(64, this.buf.length * 2), bound)));
      this.buf.copy(grown, 0, 0, this.received);
      this.buf = grown;
    }
    chunk.copy(this.buf, this.received);
    this.received = total;
  }

  /** At end of stream: exactly one complete message, decompressed when flagged. */
  message(encoding: string | undefined): Buffer {
    const body = this.buf.subarray(0, this.received);
    if (body.length < 5) throw new GrpcStatusError(Status.INTERNAL, 'the request carried no complete gRPC message');
    const length = body.readUInt32BE(1);
    if (body.length < 5 + length) throw new GrpcStatusError(Status.INTERNAL, 'the request ended inside a gRPC message');
    if (body.length > 5 + length) throw new GrpcStatusError(Status.INTERNAL, 'a unary call carries exactly one request message; more were sent');
    const payload = body.subarray(5);
    const flag = body[0]!;
    if (flag === 0) return payload;
    if (flag !== 1) throw new GrpcStatusError(Status.INTERNAL, `unknown gRPC message flag ${flag}`);
    return decompress(payload, encoding, this.maxMessageBytes);
  }
}

function tooLarge(size: number, max: number): GrpcStatusError {
  return new GrpcStatusError(Status.RESOURCE_EXHAUSTED, `the request message is too large (${size} bytes; at most ${max} are accepted)`);
}

function decompress(payload: Buffer, encoding: string | undefined, max: number): Buffer {
  // maxOutputLength bounds a decompression bomb to the same limit as an uncompressed message.
  try {
    if (encoding === 'gzip') return gunzipSync(payload, { maxOutputLength: max });
    if (encoding === 'deflate') return inflateSync(payload, { maxOutputLength: max });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') throw tooLarge(max + 1, max);
    throw new GrpcStatusError(Status.INTERNAL, `the request message could not be decompressed (${encoding})`);
  }
  throw new GrpcStatusError(Status.INTERNAL, 'the request message is flagged compressed but the call names no grpc-encoding');
}

/** Whether a request's grpc-encoding is one this server reads (absent means identity). */
export function supportedEncoding(encoding: string | undefined): boolean {
  return encoding === undefined || encoding === 'identity' || encoding === 'gzip' || encoding === 'deflate';
}

const TIMEOUT_UNIT_MS: Readonly<Record<string, number>> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 0.000001 };

/**
 * grpc-timeout ("1-8 digits, then a unit") in milliseconds; undefined when absent. A malformed
 * value is INTERNAL, as grpc-go's server answers it (the client's deadline is unknown).
 */
export function parseGrpcTimeout(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const m = /^(\d{1,8})([HMSmun])$/.exec(value);
  if (!m) throw new GrpcStatusError(Status.INTERNAL, `malformed grpc-timeout ${JSON.stringify(value.slice(0, 20))}: expected 1-8 digits and a unit (H, M, S, m, u, n)`);
  return Number(m[1]) * TIMEOUT_UNIT_MS[m[2]!]!;
}

/** grpc-message is percent-encoded: anything outside printable ASCII, and '%' itself. */
export function encodeGrpcMessage(message: string): string {
  if (/^[\x20-\x24\x26-\x7e]*$/.test(message)) return message;
  let out = '';
  for (const byte of Buffer.from(message, 'utf8')) {
    out += byte >= 0x20 && byte <= 0x7e && byte !== 0x25 ? String.fromCharCode(byte) : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}
