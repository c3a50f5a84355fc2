import { CERTIFICATE_SERVICE, methodDefinition } from '../../src/grpc/proto.js';
import { frameMessage } from '../../src/grpc/wire.js';

/** One CreateCertificate request as a gRPC length-prefixed message (uncompressed), encoded with the server's own codec. */
export function grpcRequestFrame(csrPem: string, validitySeconds = 86400, metadata: Record<string, string> = { CertSigner: '' }): Buffer {
  const fields: Record<string, { stringValue: string }> = {};
  for (const [k, v] of Object.entries(metadata)) fields[k] = { stringValue: v };
  const encode = methodDefinition<object, object>(CERTIFICATE_SERVICE, 'CreateCertificate').requestSerialize;
  return frameMessage(encode({ csr: csrPem, validityDuration: validitySeconds, metadata: { fields } }));
}

/** Minimal decode of IstioCertificateResponse { repeated string cert_chain = 1 } from a gRPC frame. */
export function decodeChain(frame: Buffer): string[] {
  const msg = frame.subarray(5, 5 + frame.readUInt32BE(1));
  const out: string[] = [];
  let i = 0;
  while (i < msg.length) {
    const tag = msg[i++]!;
    let len = 0;
    let shift = 0;
    for (;;) {
      const b = msg[i++]!;
      len |= (b & 0x7f) << shift;
      if (!(b & 0x80)) break;
      shift += 7;
    }
    if (tag === 0x0a) out.push(msg.subarray(i, i + len).toString('utf8'));
    i += len;
  }
  return out;
}
