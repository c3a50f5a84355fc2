import { CERTIFICATE_SERVICE, methodDefinition } from '../../src/grpc/proto.js';
import { frameMessage } from '../../src/grpc/wire.js';

/** One CreateCertificate request as a gRPC length-prefixed message (uncompressed), encoded with the server's own codec. */
export function grpcRequestFrame(csrPem: string, validitySeconds = 86400, metadata: Record<string, string> = { CertSigner: '' }): Buffer {
  const fields: Record<string, { stringValue: string }> = {};
  for (const [k, v] of Object.entries(metadata)) fields[k] = { stringValue: v };
  const encode = methodDefinition<object, object>(CERTIFICATE_SERVICE, 'CreateCertificate').requestSerialize;
  return frameMessage(encode({ csr: csrPem, validityDuration: validitySeconds, metadata: { fields } }));
}
