import protobuf from 'protobufjs';
import { CA_PROTO, PROTO_DIR } from '../../src/grpc/proto.js';

let type: protobuf.Type | undefined;

function requestType(): protobuf.Type {
  if (!type) {
    const root = new protobuf.Root();
    root.resolvePath = (_origin, target) => (target.startsWith('google/') ? target : `${PROTO_DIR}${target.replace(/^.*proto\//, '')}`);
    root.loadSync(CA_PROTO, { keepCase: false });
    type = root.lookupType('istio.v1.auth.IstioCertificateRequest');
  }
  return type;
}

/** A gRPC length-prefixed message: 1 byte flag (0 = uncompressed), 4-byte big-endian length, protobuf. */
export function grpcRequestFrame(csrPem: string, validitySeconds = 86400, metadata: Record<string, string> = { CertSigner: '' }): Buffer {
  const t = requestType();
  const fields: Record<string, { stringValue: string }> = {};
  for (const [k, v] of Object.entries(metadata)) fields[k] = { stringValue: v };
  const msg = t.encode(t.fromObject({ csr: csrPem, validityDuration: validitySeconds, metadata: { fields } })).finish();
  const frame = Buffer.alloc(5 + msg.length);
  frame.writeUInt8(0, 0);
  frame.writeUInt32BE(msg.length, 1);
  Buffer.from(msg).copy(frame, 5);
  return frame;
}
