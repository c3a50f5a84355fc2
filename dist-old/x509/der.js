/**
 * Minimal DER encoder (and a bounds-checked element reader) for the handful of ASN.1 types a
 * leaf certificate needs. Hand-written because generic ASN.1 libraries cost ~30x more per leaf.
 * Every encoder returns a fresh Buffer; nothing here keeps state.
 */
export const TAG_BOOLEAN = 0x01;
export const TAG_INTEGER = 0x02;
export const TAG_BIT_STRING = 0x03;
export const TAG_OCTET_STRING = 0x04;
export const TAG_NULL = 0x05;
export const TAG_OID = 0x06;
export const TAG_UTF8_STRING = 0x0c;
export const TAG_IA5_STRING = 0x16;
export const TAG_UTC_TIME = 0x17;
export const TAG_GENERALIZED_TIME = 0x18;
export const TAG_SEQUENCE = 0x30;
export const TAG_SET = 0x31;
/** Number of octets the length field takes for `len`. */
function lengthSize(len) {
    if (len < 0x80)
        return 1;
    if (len <= 0xff)
        return 2;
    if (len <= 0xffff)
        return 3;
    if (len <= 0xffffff)
        return 4;
    return 5;
}
function writeLength(buf, offset, len) {
    if (len < 0x80) {
        buf[offset] = len;
        return offset + 1;
    }
    const n = lengthSize(len) - 1;
    buf[offset] = 0x80 | n;
    for (let i = n; i >= 1; i--) {
        buf[offset + i] = len & 0xff;
        len = Math.floor(len / 256);
    }
    return offset + n + 1;
}
function checkLength(len) {
    // 2^32 - 1 is far beyond any certificate; the bound keeps the long form at <= 4 octets.
    if (!Number.isSafeInteger(len) || len < 0 || len > 0xffffffff) {
        throw new RangeError(`DER length out of range: ${len}`);
    }
}
/** DER length octets: short form below 128, otherwise minimal long form. */
export function encodeLength(len) {
    checkLength(len);
    const out = Buffer.allocUnsafe(lengthSize(len));
    writeLength(out, 0, len);
    return out;
}
function checkTag(tag) {
    // Low-tag-number form only (tag numbers 0..30): all this module needs.
    if (!Number.isInteger(tag) || tag < 0 || tag > 0xff || (tag & 0x1f) === 0x1f) {
        throw new RangeError(`unsupported DER tag: ${tag}`);
    }
}
/** One TLV whose content is the concatenation of `parts` (single allocation, one copy). */
export function tlvParts(tag, parts) {
    checkTag(tag);
    let len = 0;
    for (const p of parts)
        len += p.length;
    checkLength(len);
    const out = Buffer.allocUnsafe(1 + lengthSize(len) + len);
    out[0] = tag;
    let off = writeLength(out, 1, len);
    for (const p of parts) {
        out.set(p, off);
        off += p.length;
    }
    return out;
}
/** One TLV with the given content octets. */
export function tlv(tag, content) {
    return tlvParts(tag, [content]);
}
export function sequence(...parts) {
    return tlvParts(TAG_SEQUENCE, parts);
}
export function set(...parts) {
    return tlvParts(TAG_SET, parts);
}
/**
 * INTEGER from an unsigned big-endian magnitude: leading zero octets are stripped (DER minimal
 * encoding) and a 0x00 is prepended when the high bit is set so the value stays positive.
 */
export function integer(magnitude) {
    if (magnitude.length === 0)
        return Buffer.from([TAG_INTEGER, 1, 0]);
    let start = 0;
    while (start < magnitude.length - 1 && magnitude[start] === 0)
        start++;
    const body = magnitude.subarray(start);
    if (body[0] & 0x80)
        return tlvParts(TAG_INTEGER, [ZERO_OCTET, body]);
    return tlvParts(TAG_INTEGER, [body]);
}
const ZERO_OCTET = Buffer.from([0]);
/** INTEGER from a non-negative safe JS integer (versions, small counters). */
export function smallInteger(n) {
    if (!Number.isSafeInteger(n) || n < 0)
        throw new RangeError(`smallInteger needs a non-negative safe integer, got ${n}`);
    const bytes = [];
    do {
        bytes.unshift(n % 256);
        n = Math.floor(n / 256);
    } while (n > 0);
    return integer(Uint8Array.from(bytes));
}
/** OBJECT IDENTIFIER from dotted form. Meant for building constants once, not for hot paths. */
export function oid(dotted) {
    const arcs = dotted.split('.').map((a) => {
        if (!/^(0|[1-9][0-9]*)$/.test(a))
            throw new Error(`invalid OID: ${dotted}`);
        return BigInt(a);
    });
    const [first, second] = arcs;
    if (first === undefined || second === undefined || first > 2n || (first < 2n && second > 39n)) {
        throw new Error(`invalid OID: ${dotted}`);
    }
    const out = [];
    for (const arc of [first * 40n + second, ...arcs.slice(2)]) {
        // base-128, most significant group first, continuation bit on all but the last
        const groups = [Number(arc & 0x7fn)];
        for (let v = arc >> 7n; v > 0n; v >>= 7n)
            groups.unshift(Number(v & 0x7fn) | 0x80);
        out.push(...groups);
    }
    return tlv(TAG_OID, Uint8Array.from(out));
}
/** BIT STRING; `unusedBits` counts the padding bits in the last octet (0 for keys/signatures). */
export function bitString(bytes, unusedBits = 0) {
    if (!Number.isInteger(unusedBits) || unusedBits < 0 || unusedBits > 7 || (bytes.length === 0 && unusedBits !== 0)) {
        throw new RangeError(`invalid BIT STRING unused bits: ${unusedBits}`);
    }
    return tlvParts(TAG_BIT_STRING, [Uint8Array.of(unusedBits), bytes]);
}
export function octetString(bytes) {
    return tlv(TAG_OCTET_STRING, bytes);
}
const DER_TRUE = Buffer.from([TAG_BOOLEAN, 1, 0xff]);
const DER_FALSE = Buffer.from([TAG_BOOLEAN, 1, 0x00]);
/** BOOLEAN; DER requires TRUE to be 0xff. */
export function boolean(value) {
    return Buffer.from(value ? DER_TRUE : DER_FALSE);
}
export function nullValue() {
    return Buffer.from([TAG_NULL, 0]);
}
/** IA5String; throws on characters outside 0x00..0x7f (DER would be invalid). */
export function ia5String(s) {
    return tlv(TAG_IA5_STRING, ia5Bytes(s));
}
/** ASCII bytes of `s`, throwing if any character is outside the IA5 range. */
export function ia5Bytes(s) {
    for (let i = 0; i < s.length; i++) {
        if (s.charCodeAt(i) > 0x7f)
            throw new Error('IA5String may only contain ASCII characters');
    }
    return Buffer.from(s, 'latin1');
}
export function utf8String(s) {
    return tlv(TAG_UTF8_STRING, Buffer.from(s, 'utf8'));
}
function pad2(n) {
    return n < 10 ? `0${n}` : String(n);
}
function checkDate(d) {
    const t = d.getTime();
    if (Number.isNaN(t))
        throw new RangeError('invalid Date');
    return t;
}
/** "MMDDHHMMSSZ" tail shared by both time types; sub-second precision is dropped (DER forbids it here). */
function timeTail(d) {
    return (pad2(d.getUTCMonth() + 1) +
        pad2(d.getUTCDate()) +
        pad2(d.getUTCHours()) +
        pad2(d.getUTCMinutes()) +
        pad2(d.getUTCSeconds()) +
        'Z');
}
/** UTCTime "YYMMDDHHMMSSZ"; only years 1950..2049 are representable. */
export function utcTime(d) {
    checkDate(d);
    const y = d.getUTCFullYear();
    if (y < 1950 || y > 2049)
        throw new RangeError(`UTCTime cannot represent year ${y}`);
    return tlv(TAG_UTC_TIME, Buffer.from(pad2(y % 100) + timeTail(d), 'latin1'));
}
/** GeneralizedTime "YYYYMMDDHHMMSSZ" (no fractional seconds, as RFC 5280 requires). */
export function generalizedTime(d) {
    checkDate(d);
    const y = d.getUTCFullYear();
    if (y < 0 || y > 9999)
        throw new RangeError(`GeneralizedTime cannot represent year ${y}`);
    return tlv(TAG_GENERALIZED_TIME, Buffer.from(String(y).padStart(4, '0') + timeTail(d), 'latin1'));
}
/** RFC 5280 Time: UTCTime for 1950..2049, GeneralizedTime otherwise. */
export function x509Time(d) {
    checkDate(d);
    const y = d.getUTCFullYear();
    return y >= 1950 && y <= 2049 ? utcTime(d) : generalizedTime(d);
}
/** [n] EXPLICIT: constructed context tag wrapping complete TLVs. */
export function explicitTag(n, ...parts) {
    if (!Number.isInteger(n) || n < 0 || n > 30)
        throw new RangeError(`context tag out of range: ${n}`);
    return tlvParts(0xa0 | n, parts);
}
/** [n] IMPLICIT on a primitive type: context tag with the raw content octets. */
export function implicitPrimitive(n, content) {
    if (!Number.isInteger(n) || n < 0 || n > 30)
        throw new RangeError(`context tag out of range: ${n}`);
    return tlv(0x80 | n, content);
}
/**
 * Reads the element at `offset`, checking every bound against `limit`. Definite lengths and
 * low tag numbers only, which is all DER certificates use. Meant for setup-time parsing.
 */
export function readElement(buf, offset = 0, limit = buf.length) {
    if (offset + 2 > limit)
        throw new Error('DER: truncated element');
    const tag = buf[offset];
    if ((tag & 0x1f) === 0x1f)
        throw new Error('DER: high tag numbers are not supported');
    let len = buf[offset + 1];
    let start = offset + 2;
    if (len & 0x80) {
        const n = len & 0x7f;
        if (n === 0)
            throw new Error('DER: indefinite length is not DER');
        if (n > 4)
            throw new Error('DER: length too large');
        if (start + n > limit)
            throw new Error('DER: truncated length');
        len = 0;
        for (let i = 0; i < n; i++)
            len = len * 256 + buf[start + i];
        if (len < 0x80 || (n > 1 && buf[start] === 0))
            throw new Error('DER: non-minimal length');
        start += n;
    }
    const end = start + len;
    if (end > limit)
        throw new Error('DER: truncated content');
    return { tag, offset, start, end };
}
/** The child elements of a constructed element, in order. */
export function readChildren(buf, parent) {
    const out = [];
    for (let off = parent.start; off < parent.end;) {
        const el = readElement(buf, off, parent.end);
        out.push(el);
        off = el.end;
    }
    return out;
}
//# sourceMappingURL=der.js.map