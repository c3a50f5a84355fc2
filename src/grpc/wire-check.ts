import protobuf from 'protobufjs/minimal.js';

/** Which fields of a message are strings and which are messages (the rest are skipped as their wire type says). */
export interface WireSchema {
  /** Fields that are proto3 strings (must be UTF-8). */
  readonly strings?: readonly number[];
  /** Fields that are messages, with their own schema (a function: schemas may nest themselves). */
  readonly messages?: Readonly<Record<number, () => WireSchema>>;
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
 * Checks that a request is well-formed protobuf before protobufjs decodes it. protobufjs reads a
 * string cut short as what is there, and a field numbered 0 or an unclosed group as nothing, where
 * protobuf-go (istiod, grpc-go) refuses the message: such a request is then INTERNAL ("could not be
 * decoded"), as grpc-go answers it, not a CSR error. Walks the message with protobufjs's own
 * bounds-checked Reader: every tag, length and varint in range, and the strings and nested messages
 * the schema names checked as UTF-8 and as messages in turn. Throws an Error saying what is wrong.
 */
export function checkWire(payload: Uint8Array, schema: WireSchema): void {
  const r = protobuf.Reader.create(payload);
  checkMessage(r, payload.length, schema, 0);
}

function checkMessage(r: protobuf.Reader, end: number, schema: WireSchema, depth: number): void {
  if (depth > MAX_DEPTH) throw new Error(`messages nested deeper than ${MAX_DEPTH}`);
  while (r.pos < end) {
    const tag = r.uint32();
    const field = tag >>> 3;
    const wireType = tag & 7;
    if (field === 0) throw new Error('a field numbered 0');
    if (wireType === GROUP_END) throw new Error(`an end of group (field ${field}) without its start`);
    const nested = schema.messages?.[field];
    if (wireType === LENGTH_DELIMITED && (nested !== undefined || schema.strings?.includes(field))) {
      const length = r.uint32();
      const start = r.pos;
      if (start + length > end) throw new Error(`field ${field} runs past the end of its message`);
      if (nested !== undefined) {
        checkMessage(r, start + length, nested(), depth + 1);
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
// its map entries { string key = 1; Value value = 2 }, Value { ... string_value = 3;
// Struct struct_value = 5; ListValue list_value = 6 }, ListValue { repeated Value values = 1 }.
const STRUCT: WireSchema = { messages: { 1: () => STRUCT_ENTRY } };
const STRUCT_ENTRY: WireSchema = { strings: [1], messages: { 2: () => VALUE } };
const VALUE: WireSchema = { strings: [3], messages: { 5: () => STRUCT, 6: () => LIST_VALUE } };
const LIST_VALUE: WireSchema = { messages: { 1: () => VALUE } };

/** istio.v1.auth.IstioCertificateRequest { string csr = 1; int64 validity_duration = 3; Struct metadata = 4 }. */
export const CERTIFICATE_REQUEST_WIRE: WireSchema = { strings: [1], messages: { 4: () => STRUCT } };
/** grpc.health.v1.HealthCheckRequest { string service = 1 }. */
export const HEALTH_CHECK_REQUEST_WIRE: WireSchema = { strings: [1] };
