import { credentials, Metadata, status } from '@grpc/grpc-js';
import { loadProtos } from './protos.js';
/** A minimal istio-agent-shaped client for IstioCertificateService (used by `meshcert request` and tests). */
export class CaClient {
    client;
    constructor(o) {
        const creds = credentials.createSsl(Buffer.from(o.rootPem), o.clientCert ? Buffer.from(o.clientCert.keyPem) : null, o.clientCert ? Buffer.from(o.clientCert.certPem) : null);
        const Ctor = loadProtos().certificateService;
        this.client = new Ctor(o.address, creds, o.serverName ? { 'grpc.ssl_target_name_override': o.serverName, 'grpc.default_authority': o.serverName } : {});
    }
    createCertificate(a) {
        const md = new Metadata();
        if (a.token !== undefined)
            md.set('authorization', `Bearer ${a.token}`);
        md.set('clusterid', a.clusterId ?? 'Kubernetes');
        const fields = {};
        for (const [k, v] of Object.entries(a.metadata ?? { CertSigner: '' }))
            fields[k] = { stringValue: v };
        const req = { csr: a.csrPem, validityDuration: a.validitySeconds ?? 86400, metadata: { fields } };
        return new Promise((resolve, reject) => {
            this.client.CreateCertificate(req, md, { deadline: Date.now() + (a.deadlineMs ?? 30_000) }, (err, res) => err ? reject(err) : resolve(res.certChain));
        });
    }
    close() {
        this.client.close();
    }
}
export function statusName(code) {
    return status[code] ?? String(code);
}
//# sourceMappingURL=ca-client.js.map