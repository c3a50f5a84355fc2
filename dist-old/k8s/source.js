import { readFileSync } from 'node:fs';
/** Where the Kubernetes API is: the `kubernetes` section, else in-cluster. (No client loaded here.) */
export function kubeSource(config) {
    const k = config.kubernetes;
    if (k.kubeconfig)
        return { kubeconfig: k.kubeconfig };
    if (k.server)
        return { server: k.server, ...(k.caFile ? { caPem: readFileSync(k.caFile, 'utf8') } : {}), ...(k.tokenFile ? { tokenFile: k.tokenFile } : {}) };
    return { inCluster: true };
}
//# sourceMappingURL=source.js.map