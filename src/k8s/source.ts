import { MAX_PEM_BYTES, readTextFile } from '../fs/read-file.js';
import type { MeshcertConfig } from '../config/schema.js';
import type { KubeConfigSource } from './client.js';

/** Where the Kubernetes API is: the `kubernetes` section, else in-cluster. (No client loaded here.) */
export function kubeSource(config: MeshcertConfig): KubeConfigSource {
  const k = config.kubernetes;
  if (k.kubeconfig) return { kubeconfig: k.kubeconfig };
  if (k.server) return { server: k.server, ...(k.caFile ? { caPem: readTextFile(k.caFile, MAX_PEM_BYTES) } : {}), ...(k.tokenFile ? { tokenFile: k.tokenFile } : {}) };
  return { inCluster: true };
}
