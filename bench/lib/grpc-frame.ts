import type { MethodDefinition } from '@grpc/proto-loader';
import { CERTIFICATE_SERVICE, protoDefinition } from '../../src/grpc/proto.js';
import { frameMessage } from '../../src/grpc/wire.js';

/** The request encoder the server's decoder comes from (proto-loader's protobufjs codec). */
function serializeRequest(): (msg: object) => Buffer {
  const def = (protoDefinition()[CERTIFICATE_SERVICE] as unknown as Record<string, MethodDefinition<object, object>>).CreateCertificate!;
  return def.requestSerialize;
}

/** One CreateCertificate request as a gRPC length-prefixed message (uncompressed). */
export function grpcRequestFrame(csrPem: string, validitySeconds = 86400, metadata: Record<string, string> = { CertSigner: '' }): Buffer {
  const fields: Record<string, { stringValue: string }> = {};
  for (const [k, v] of Object.entries(metadata)) fields[k] = { stringValue: v };
  return frameMessage(serializeRequest()({ csr: csrPem, validityDuration: validitySeconds, metadata: { fields } }));
}
