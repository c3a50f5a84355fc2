import { credentials, Metadata, status, type Client, type ServiceError } from '@grpc/grpc-js';
import type { IstioCertificateResponseMsg } from '../grpc/proto.js';
import { loadProtos } from './protos.js';

export interface CaClientOptions {
  /** host:port of meshcert's gRPC endpoint. */
  readonly address: string;
  /** PEM roots the server certificate must chain to (istio-agent uses istio-ca-root-cert). */
  readonly rootPem: string;
  /** TLS server name to verify, when it differs from the address host. */
  readonly serverName?: string;
  /** Optional mTLS identity. */
  readonly clientCert?: { certPem: string; keyPem: string };
}

export interface CreateCertificateArgs {
  readonly csrPem: string;
  readonly validitySeconds?: number;
  readonly token?: string;
  readonly clusterId?: string;
  readonly metadata?: Record<string, string>;
  readonly deadlineMs?: number;
}

/** A minimal istio-agent-shaped client for IstioCertificateService (used by `meshcert request` and tests). */
export class CaClient {
  private readonly client: Client & Record<string, (...args: unknown[]) => unknown>;

  constructor(o: CaClientOptions) {
    const creds = credentials.createSsl(
      Buffer.from(o.rootPem),
      o.clientCert ? Buffer.from(o.clientCert.keyPem) : null,
      o.clientCert ? Buffer.from(o.clientCert.certPem) : null,
    );
    const Ctor = loadProtos().certificateService;
    this.client = new Ctor(o.address, creds, o.serverName ? { 'grpc.ssl_target_name_override': o.serverName, 'grpc.default_authority': o.serverName } : {}) as never;
  }

  createCertificate(a: CreateCertificateArgs): Promise<string[]> {
    const md = new Metadata();
    if (a.token !== undefined) md.set('authorization', `Bearer ${a.token}`);
    md.set('clusterid', a.clusterId ?? 'Kubernetes');
    const fields: Record<string, { stringValue: string }> = {};
    for (const [k, v] of Object.entries(a.metadata ?? { CertSigner: '' })) fields[k] = { stringValue: v };
    const req = { csr: a.csrPem, validityDuration: a.validitySeconds ?? 86400, metadata: { fields } };
    return new Promise((resolve, reject) => {
      this.client.CreateCertificate!(req, md, { deadline: Date.now() + (a.deadlineMs ?? 30_000) }, (err: ServiceError | null, res: IstioCertificateResponseMsg) =>
        err ? reject(err) : resolve(res.certChain),
      );
    });
  }

  close(): void {
    this.client.close();
  }
}

export function statusName(code: number): string {
  return (status as unknown as Record<number, string>)[code] ?? String(code);
}
