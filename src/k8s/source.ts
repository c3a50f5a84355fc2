import { MAX_PEM_BYTES, readProblem, readTextFile } from '../fs/read-file.js';
import { ConfigError } from '../errors/ca-error.js';
import type { MeshcertConfig } from '../config/schema.js';
import type { KubeConfigSource } from './client.js';
import { caBundleProblem } from '../x509/pem.js';
import { resolve } from 'node:path';

/** Where the Kubernetes API is: the `kubernetes` section, else in-cluster. (No client loaded here.) */
export function kubeSource(config: MeshcertConfig): KubeConfigSource {
  const k = config.kubernetes;
  if (k.kubeconfig) return { kubeconfig: k.kubeconfig };
  if (k.server) return { server: k.server, ...(k.caFile ? { caFile: checkedKubeCaFile(k.caFile) } : {}), ...(k.tokenFile ? { tokenFile: k.tokenFile } : {}) };
  return { inCluster: true };
}

/**
 * The CA file, checked once here so that serve and config check refuse one that is unreadable or
 * that TLS would trust nothing (or too little) from; the client reads it again for every request,
 * so a rotated cluster CA written over it is used without a restart.
 */
function checkedKubeCaFile(file: string): string {
  let text: string;
  try {
    text = readTextFile(file, MAX_PEM_BYTES);
  } catch (e) {
    throw new ConfigError(`kubernetes.caFile ${file}: ${readProblem(e)}`, { cause: e });
  }
  const problem = caBundleProblem(text);
  if (problem) throw new ConfigError(`kubernetes.caFile ${file}: ${problem}`);
  return resolve(file);
}

/**
 * A Kubernetes client that cannot be built (no pod environment, a kubeconfig that does not load) is
 * the operator's to fix: a ConfigError naming the section, not an "unexpected error".
 */
export function kubeSettingError(e: unknown): ConfigError {
  return e instanceof ConfigError ? e : new ConfigError(`kubernetes: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
}

/** `make()` (a client or config built from the `kubernetes` section), its failure a kubeSettingError. */
export function fromKubeSettings<T>(make: () => T): T {
  try {
    return make();
  } catch (e) {
    throw kubeSettingError(e);
  }
}
