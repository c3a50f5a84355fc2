import protobuf from 'protobufjs/minimal.js';

/** A message's fields: every one the proto declares, so that one sent with another wire type is known as such. */
export interface WireSchema {
  /** Fields that are proto3 strings (must be UTF-8). */
  readonly strings?: readonly number[];
  /** Fields that are messages, with their own schema (a function: schemas may nest themselves). */
  readonly messages?: Readonly<Record<number, () => WireSchema>>;
  /** The other fields (singular scalars), with their wire type: 0 varint, 1 fixed64, 5 fixed32. */
  readonly scalars?: Readonly<Record<number, 0 | 1 | 5>>;
}

const GROUP_START = 3;
const GROUP_END = 4;
const LENGTH_DELIMITED = 2;
/**
 * Far deeper than any request nests (metadata is a Struct of strings), and shallow enough that
 * neither this walk nor protobufjs's decoder, both recursive, comes near the stack's end.
 */
const MAX_DEPTH = 100;
/** protobuf-go's bound: a varint holds at most 64 bits. */
const MAX_VARINT_BYTES = 10;

/**
 * Checks that a request is well-formed protobuf before protobufjs decodes it, and returns what
 * protobufjs is to decode. protobufjs reads a string cut short as what is there, and a field
 * numbered 0 or an unclosed group as nothing, where protobuf-go (istiod, grpc-go) refuses the
 * message: such a request is then INTERNAL ("could not be decoded"), as grpc-go answers it, not a
 * CSR error. Walks the message with protobufjs's own bounds-checked Reader: every tag, length and
 * varint in range, and the strings and nested messages the schema names checked as UTF-8 and as
 * messages in turn. Throws an Error saying what is wrong.
 *
 * A declared field sent with another wire type is an unknown field to protobuf-go, which decodes
 * the rest; protobufjs reads it as its declared type (and fails, or takes the bytes after it for
 * its value). Such fields are left out of the returned copy, which protobufjs then decodes as
 * protobuf-go does; a request without any is returned as it came.
 */
export function checkWire(payload: Buffer, schema: WireSchema): Buffer {
  const r = protobuf.Reader.create(payload);
  return checkMessage(r, payload.length, schema, 0) ? withoutMisplaced(payload, 0, payload.length, schema) : payload;
}

/** The wire type a declared field is sent with; undefined for a field the message does not declare. */
function declaredWireType(schema: WireSchema, field: number): number | undefined {
  if (schema.messages?.[field] !== undefined || schema.strings?.includes(field)) return LENGTH_DELIMITED;
  return schema.scalars?.[field];
}

/** True when the message (or one nested in it) has a declared field sent with another wire type. */
function checkMessage(r: protobuf.Reader, end: number, schema: WireSchema, depth: number): boolean {
  if (depth > MAX_DEPTH) throw new Error(`messages nested deeper than ${MAX_DEPTH}`);
  let misplaced = false;
  while (r.pos < end) {
    const tag = r.uint32();
    const field = tag >>> 3;
    const wireType = tag & 7;
    if (field === 0) throw new Error('a field numbered 0');
    if (wireType === GROUP_END) throw new Error(`an end of group (field ${field}) without its start`);
    const declared = declaredWireType(schema, field);
    if (declared !== undefined && declared !== wireType) misplaced = true;
    const nested = schema.messages?.[field];
    if (wireType === LENGTH_DELIMITED && declared === LENGTH_DELIMITED) {
      const length = r.uint32();
      const start = r.pos;
      if (start + length > end) throw new Error(`field ${field} runs past the end of its message`);
      if (nested !== undefined) {
        if (checkMessage(r, start + length, nested(), depth + 1)) misplaced = true;
      } else {
        if (!isUtf8(r.buf.subarray(start, start + length))) throw new Error(`string field ${field} is not UTF-8`);
        r.pos = start + length;
      }
    } else if (wireType === GROUP_START) {
      // An unknown group: skipped as a whole, its end checked (protobufjs reads an unclosed one to the end).
      skipGroup(r, field, end, depth + 1);
    } else {
      skipValue(r, wireType);
    }
    if (r.pos > end) throw new Error(`field ${field} runs past the end of its message`);
  }
  return misplaced;
}

/**
 * A copy of bytes[start, end) (a message checked by checkMessage) without its declared fields sent
 * with another wire type, nested messages copied so in turn (with their new lengths).
 */
function withoutMisplaced(bytes: Buffer, start: number, end: number, schema: WireSchema): Buffer {
  const r = protobuf.Reader.create(bytes);
  r.pos = start;
  const parts: Uint8Array[] = [];
  while (r.pos < end) {
    const fieldStart = r.pos;
    const tag = r.uint32();
    const field = tag >>> 3;
    const wireType = tag & 7;
    const declared = declaredWireType(schema, field);
    const nested = schema.messages?.[field];
    if (nested !== undefined && wireType === LENGTH_DELIMITED) {
      const tagEnd = r.pos;
      const length = r.uint32();
      const inner = withoutMisplaced(bytes, r.pos, r.pos + length, nested());
      r.pos += length;
      parts.push(bytes.subarray(fieldStart, tagEnd), protobuf.Writer.create().uint32(inner.length).finish(), inner);
      continue;
    }
    if (wireType === GROUP_START) skipGroup(r, field, end, 1);
    else skipValue(r, wireType);
    if (declared === undefined || declared === wireType) parts.push(bytes.subarray(fieldStart, r.pos));
  }
  return Buffer.concat(parts);
}

function skipGroup(r: protobuf.Reader, field: number, end: number, depth: number): void {
  if (depth > MAX_DEPTH) throw new Error(`messages nested deeper than ${MAX_DEPTH}`);
  for (;;) {
    if (r.pos >= end) throw new Error(`a group (field ${field}) without its end`);
    const tag = r.uint32();
    const wireType = tag & 7;
    if (tag >>> 3 === 0) throw new Error('a field numbered 0');
    if (wireType === GROUP_END) {
      if (tag >>> 3 !== field) throw new Error(`a group (field ${field}) ended as field ${tag >>> 3}`);
      return;
    }
    if (wireType === GROUP_START) skipGroup(r, tag >>> 3, end, depth + 1);
    else skipValue(r, wireType);
  }
}

/** One value of a wire type other than a group's: bounds-checked by protobufjs (which throws on wire types 6 and 7), a varint at most 10 bytes. */
function skipValue(r: protobuf.Reader, wireType: number): void {
  const start = r.pos;
  r.skipType(wireType);
  if (wireType === 0 && r.pos - start > MAX_VARINT_BYTES) throw new Error(`a varint longer than ${MAX_VARINT_BYTES} bytes`);
}

const UTF8 = new TextDecoder('utf-8', { fatal: true });

function isUtf8(bytes: Uint8Array): boolean {
  try {
    UTF8.decode(bytes);
    return true;
  } catch {
    return false;
  }
}

// google.protobuf.Struct and friends (struct.proto): Struct { map<string, Value> fields = 1 },
// its map entries { string key = 1; Value value = 2 }, Value { NullValue null_value = 1; double
// number_value = 2; string_value = 3; bool bool_value = 4; Struct struct_value = 5; ListValue
// list_value = 6 }, ListValue { repeated Value values = 1 }.
const STRUCT: WireSchema = { messages: { 1: () => STRUCT_ENTRY } };
const STRUCT_ENTRY: WireSchema = { strings: [1], messages: { 2: () => VALUE } };
const VALUE: WireSchema = { strings: [3], messages: { 5: () => STRUCT, 6: () => LIST_VALUE }, scalars: { 1: 0, 2: 1, 4: 0 } };
const LIST_VALUE: WireSchema = { messages: { 1: () => VALUE } };

/** istio.v1.auth.IstioCertificateRequest { string csr = 1; reserved 2; int64 validity_duration = 3; Struct metadata = 4 }. */
export const CERTIFICATE_REQUEST_WIRE: WireSchema = { strings: [1], messages: { 4: () => STRUCT }, scalars: { 3: 0 } };
/** grpc.health.v1.HealthCheckRequest { string service = 1 }. */
export const HEALTH_CHECK_REQUEST_WIRE: WireSchema = { strings: [1] };
