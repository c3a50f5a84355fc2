/**
 * A small, strict DER reader for the handful of structures a PKCS#10 CSR contains.
 *
 * Why hand-written and not asn1js: measured on the dev box (Node 20.20), `asn1js.fromBER` alone
 * takes ~150-180 µs for a 0.3-1 KB CSR, more than the whole RSA parse+verify budget, and is BER
 * (lenient) anyway. This reader builds no tree, allocates one tiny object per TLV it is asked
 * about, and walks a whole CSR in a few µs (~5 µs including the SPKI copy).
 *
 * Strictness (DER, X.690 §10):
 *  - single-byte tags only (no high-tag-number form: nothing in a CSR needs it);
 *  - definite lengths only, in minimal form (short form below 128, no leading zero length octets);
 *  - every length must fit in the enclosing element; callers call `finish()` so trailing bytes fail;
 *  - nesting depth bounded by {@link MAX_DEPTH}.
 * Failures throw `CaError('CSR_MALFORMED')` whose messages name the structure and an offset, never
 * the bytes themselves.
 */
import { CaError } from '../errors/ca-error.js';

/** Tag bytes (class | constructed | number) used by CSRs. */
export const Tag = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OID: 0x06,
  UTF8_STRING: 0x0c,
  PRINTABLE_STRING: 0x13,
  TELETEX_STRING: 0x14,
  IA5_STRING: 0x16,
  UNIVERSAL_STRING: 0x1c,
  BMP_STRING: 0x1e,
  SEQUENCE: 0x30,
  SET: 0x31,
} as const;

/** Context-specific tag byte: [n] IMPLICIT primitive, or constructed (EXPLICIT / IMPLICIT SEQUENCE). */
export function contextTag(n: number, constructed: boolean): number {
  return 0x80 | (constructed ? 0x20 : 0) | n;
}

export const MAX_DEPTH = 16;

/** One element: `buf[start, contentStart)` is the header, `buf[contentStart, end)` the content. */
export interface Tlv {
  readonly tag: number;
  readonly start: number;
  readonly contentStart: number;
  readonly end: number;
}

export function malformed(message: string): CaError {
  return new CaError('CSR_MALFORMED', `CSR is malformed: ${message}`);
}

export class DerReader {
  private pos: number;

  constructor(
    readonly buf: Buffer,
    start = 0,
    private readonly end = buf.length,
    private readonly depth = 0,
  ) {
    this.pos = start;
  }

  get done(): boolean {
    return this.pos >= this.end;
  }

  /** The next tag byte, or -1 at the end. */
  peekTag(): number {
    return this.pos < this.end ? this.buf[this.pos]! : -1;
  }

  /** Reads the next element, whatever its tag. */
  next(what: string): Tlv {
    const buf = this.buf;
    const end = this.end;
    const start = this.pos;
    if (start >= end) throw malformed(`${what} is missing`);
    const tag = buf[start]!;
    if ((tag & 0x1f) === 0x1f) throw malformed(`${what} uses an unsupported high tag number (offset ${start})`);
    let p = start + 1;
    if (p >= end) throw malformed(`${what} is truncated (offset ${start})`);
    let len = buf[p++]!;
    if (len >= 0x80) {
      const n = len & 0x7f;
      if (n === 0) throw malformed(`${what} uses an indefinite length, which DER forbids (offset ${start})`);
      if (n > 4) throw malformed(`${what} has an impossibly large length (offset ${start})`);
      if (p + n > end) throw malformed(`${what} is truncated (offset ${start})`);
      if (buf[p] === 0) throw malformed(`${what} has a non-minimal length encoding (offset ${start})`);
      len = 0;
      for (let i = 0; i < n; i++) len = len * 256 + buf[p++]!;
      if (len < 0x80) throw malformed(`${what} has a non-minimal length encoding (offset ${start})`);
    }
    if (len > end - p) throw malformed(`${what} is longer than the data that contains it (offset ${start})`);
    this.pos = p + len;
    return { tag, start, contentStart: p, end: p + len };
  }

  /** Reads the next element and checks its tag. */
  expect(tag: number, what: string): Tlv {
    if (this.pos < this.end && this.buf[this.pos] !== tag) {
      throw malformed(`${what} has an unexpected type (offset ${this.pos})`);
    }
    return this.next(what);
  }

  /** Reads the next element only if it has this tag. */
  optional(tag: number, what: string): Tlv | undefined {
    return this.peekTag() === tag ? this.next(what) : undefined;
  }

  /** A reader over the content of `tlv`, one level deeper. */
  enter(tlv: Tlv, what: string): DerReader {
    if (this.depth + 1 > MAX_DEPTH) throw malformed(`${what} is nested too deeply`);
    return new DerReader(this.buf, tlv.contentStart, tlv.end, this.depth + 1);
  }

  /** Throws if anything is left. */
  finish(what: string): void {
    if (this.pos !== this.end) throw malformed(`unexpected data after ${what} (offset ${this.pos})`);
  }
}

/* ----------------------------------------------------------------------------------------------
 * Primitive decoders. All take the element already read, check its content, and never copy more
 * than they return.
 * -------------------------------------------------------------------------------------------- */

/** A small non-negative INTEGER (version, saltLength, pathLen...). */
export function readSmallUint(buf: Buffer, tlv: Tlv, what: string): number {
  const mag = integerMagnitude(buf, tlv, what);
  if (mag.length > 6) throw malformed(`${what} is too large`);
  let v = 0;
  for (const b of mag) v = v * 256 + b;
  return v;
}

/**
 * The big-endian magnitude of a non-negative INTEGER, without the sign octet. Rejects empty,
 * negative and non-minimally encoded integers.
 */
export function integerMagnitude(buf: Buffer, tlv: Tlv, what: string): Buffer {
  const { contentStart: s, end: e } = tlv;
  if (e === s) throw malformed(`${what} is an empty INTEGER`);
  const b0 = buf[s]!;
  if (e - s > 1) {
    const b1 = buf[s + 1]!;
    if ((b0 === 0x00 && b1 < 0x80) || (b0 === 0xff && b1 >= 0x80)) {
      throw malformed(`${what} is a non-minimally encoded INTEGER`);
    }
  }
  if (b0 >= 0x80) throw malformed(`${what} is negative`);
  return b0 === 0 && e - s > 1 ? buf.subarray(s + 1, e) : buf.subarray(s, e);
}

/** BOOLEAN content: exactly one octet, 0x00 or 0xFF (DER). */
export function readBoolean(buf: Buffer, tlv: Tlv, what: string): boolean {
  if (tlv.end - tlv.contentStart !== 1) throw malformed(`${what} is not a valid BOOLEAN`);
  const b = buf[tlv.contentStart]!;
  if (b === 0xff) return true;
  if (b === 0x00) return false;
  throw malformed(`${what} is not a DER BOOLEAN`);
}

/**
 * BIT STRING content as (unusedBits, bytes). Checks the unused-bit count is 0..7, is 0 for an
 * empty string, and that the unused bits are zero (DER).
 */
export function readBitString(buf: Buffer, tlv: Tlv, what: string): { unusedBits: number; bytes: Buffer } {
  const { contentStart: s, end: e } = tlv;
  if (e === s) throw malformed(`${what} is an empty BIT STRING`);
  const unusedBits = buf[s]!;
  if (unusedBits > 7 || (unusedBits !== 0 && e - s === 1)) throw malformed(`${what} is not a valid BIT STRING`);
  if (unusedBits !== 0 && (buf[e - 1]! & ((1 << unusedBits) - 1)) !== 0) {
    throw malformed(`${what} has non-zero padding bits`);
  }
  return { unusedBits, bytes: buf.subarray(s + 1, e) };
}

/** BIT STRING that must hold whole octets (keys, signatures). */
export function readOctetAlignedBitString(buf: Buffer, tlv: Tlv, what: string): Buffer {
  const { unusedBits, bytes } = readBitString(buf, tlv, what);
  if (unusedBits !== 0) throw malformed(`${what} is not a whole number of bytes`);
  return bytes;
}

/** NULL: empty content. */
export function checkNull(tlv: Tlv, what: string): void {
  if (tlv.end !== tlv.contentStart) throw malformed(`${what} is not a valid NULL`);
}

/**
 * Validates an OBJECT IDENTIFIER's content and returns it as a `latin1` string of its content bytes,
 * which is the cheap key used to compare against known OIDs (see {@link oidKey}).
 */
export function readOidKey(buf: Buffer, tlv: Tlv, what: string): string {
  const { contentStart: s, end: e } = tlv;
  if (e === s) throw malformed(`${what} is an empty OBJECT IDENTIFIER`);
  if (buf[e - 1]! & 0x80) throw malformed(`${what} is a truncated OBJECT IDENTIFIER`);
  let first = true;
  let arc = 0;
  for (let i = s; i < e; i++) {
    const b = buf[i]!;
    if (first && b === 0x80) throw malformed(`${what} is a non-minimally encoded OBJECT IDENTIFIER`);
    // Go's encoding/asn1 (istio-agent, ztunnel's peers) refuses arcs above 2^31-1; refusing them
    // here also keeps every arc a small number, so no OID costs more than linear time to print.
    arc = arc * 128 + (b & 0x7f);
    if (arc > MAX_OID_ARC) throw malformed(`${what} is an OBJECT IDENTIFIER with an arc above ${MAX_OID_ARC}`);
    first = (b & 0x80) === 0;
    if (first) arc = 0;
  }
  return buf.toString('latin1', s, e);
}

/** The comparison key of a dotted OID (content octets as latin1), for building lookup tables. */
export function oidKey(dotted: string): string {
  const arcs = dotted.split('.').map((a) => BigInt(a));
  const out: number[] = [];
  const push = (v: bigint): void => {
    const tmp: number[] = [Number(v & 0x7fn)];
    v >>= 7n;
    while (v > 0n) {
      tmp.unshift(Number(v & 0x7fn) | 0x80);
      v >>= 7n;
    }
    out.push(...tmp);
  };
  push(arcs[0]! * 40n + arcs[1]!);
  for (const a of arcs.slice(2)) push(a);
  return Buffer.from(out).toString('latin1');
}

/** Dotted form of an OID key produced by {@link readOidKey} (for messages and unknownExtensions). */
export function oidKeyToDotted(key: string): string {
  const arcs: number[] = [];
  let v = 0; // readOidKey bounds every arc by MAX_OID_ARC, so a number holds it exactly
  for (let i = 0; i < key.length; i++) {
    const b = key.charCodeAt(i);
    v = v * 128 + (b & 0x7f);
    if ((b & 0x80) === 0) {
      if (arcs.length === 0) arcs.push(v < 40 ? 0 : v < 80 ? 1 : 2, v < 80 ? v % 40 : v - 80);
      else arcs.push(v);
      v = 0;
    }
  }
  return arcs.join('.');
}

/** The largest OID arc Go's encoding/asn1 accepts (it parses arcs into an int32). */
const MAX_OID_ARC = 2 ** 31 - 1;
