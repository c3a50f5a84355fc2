/**
 * Certificates in Kubernetes TLS Secrets: `tls.crt` of every Secret of type kubernetes.io/tls in
 * every namespace the credentials can list (one list call, paged by 500 with `continue`).
 *
 * Credentials: a kubeconfig file when given, else `KubeConfig.loadFromDefault()` (KUBECONFIG,
 * ~/.kube/config, then the in-cluster service account). meshcert's ServiceAccount needs
 * `list secrets` cluster-wide for this. The API server's certificate is verified as configured.
 *
 * Each Secret is one item: no or empty `tls.crt` (cert-manager creates Secrets before issuing)
 * is skipped; a `tls.crt` that is not a PEM certificate bundle is an error. A failing list call
 * (unreachable API server, 403...) is one error item (`kind: 'k8s'`).
 */
import { X509Certificate } from 'node:crypto';
import { CoreV1Api, KubeConfig, type V1Secret, type V1SecretList } from '@kubernetes/client-node';
import type { DiscoveredItem } from './types.js';
import { withTimeout } from '../async/with-timeout.js';

export const DEFAULT_K8S_TIMEOUT_MS = 30_000;
const CERT_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

export interface K8sSecretsOptions {
  /** A kubeconfig file; default KubeConfig.loadFromDefault(). */
  kubeconfig?: string;
  /** For each list call; default 30 s. */
  timeoutMs?: number;
  /** Page size; default 500. */
  pageSize?: number;
}

export function loadKubeConfig(kubeconfig?: string): KubeConfig {
  const kc = new KubeConfig();
  if (kubeconfig !== undefined) kc.loadFromFile(kubeconfig);
  else kc.loadFromDefault();
  return kc;
}

const STATUS_HINTS: Record<number, string> = {
  401: 'Unauthorized (check the token or client certificate)',
  403: 'Forbidden (the credentials need "list secrets" in all namespaces)',
};

function statusMessage(body: unknown): string | null {
  let v = body;
  if (typeof v === 'string') {
    try {
      v = JSON.parse(v);
    } catch {
      return null;
    }
  }
  const m = (v as { message?: unknown } | null)?.message;
  return typeof m === 'string' && m !== '' ? m : null;
}

function describeError(e: unknown): string {
  const err = e as { code?: unknown; message?: unknown; body?: unknown };
  if (typeof err.code === 'number') {
    const reason = statusMessage(err.body) ?? STATUS_HINTS[err.code] ?? null;
    return `API server answered HTTP ${err.code}${reason !== null ? `: ${reason}` : ''}`;
  }
  return typeof err.message === 'string' ? err.message.split('\n')[0]! : String(e);
}

/** One item for a Secret. */
export function secretItem(secret: V1Secret): DiscoveredItem {
  const ns = secret.metadata?.namespace ?? '';
  const name = secret.metadata?.name ?? '';
  const target = `${ns}/${name}`;
  const source = `discovered:k8s-secret:${target}` as const;
  const b64 = secret.data?.['tls.crt'];
  if (b64 === undefined || b64 === '') return { kind: 'k8s-secret', target, source, status: 'skipped', reason: 'no tls.crt' };
  const pem = Buffer.from(b64, 'base64').toString('latin1');
  const blocks = pem.match(CERT_BLOCK) ?? [];
  if (blocks.length === 0) return { kind: 'k8s-secret', target, source, status: 'error', error: 'tls.crt holds no PEM certificate' };
  const certificates: X509Certificate[] = [];
  let bad = 0;
  for (const b of blocks) {
    try {
      certificates.push(new X509Certificate(b));
    } catch {
      bad++;
    }
  }
  if (bad > 0) return { kind: 'k8s-secret', target, source, status: 'error', error: `tls.crt: ${bad} certificate(s) do not parse`, certificates };
  return { kind: 'k8s-secret', target, source, status: 'ok', certificates };
}

/** Lists TLS Secrets cluster-wide; one item per Secret, or one error item when listing fails. */
export async function discoverK8sSecrets(options: K8sSecretsOptions = {}): Promise<DiscoveredItem[]> {
  let api: CoreV1Api;
  try {
    api = loadKubeConfig(options.kubeconfig).makeApiClient(CoreV1Api);
  } catch (e) {
    return [{ kind: 'k8s', target: 'kubernetes', source: null, status: 'error', error: `cannot load Kubernetes credentials: ${describeError(e)}` }];
  }
  const timeoutMs = options.timeoutMs ?? DEFAULT_K8S_TIMEOUT_MS;
  const items: DiscoveredItem[] = [];
  let cont: string | undefined;
  try {
    do {
      const list: V1SecretList = await withTimeout(
        api.listSecretForAllNamespaces({ fieldSelector: 'type=kubernetes.io/tls', limit: options.pageSize ?? 500, ...(cont ? { _continue: cont } : {}) }),
        timeoutMs,
        'listing TLS Secrets',
      );
      for (const s of list.items) items.push(secretItem(s));
      cont = list.metadata?._continue || undefined;
    } while (cont !== undefined);
  } catch (e) {
    items.push({ kind: 'k8s', target: 'kubernetes', source: null, status: 'error', error: `cannot list TLS Secrets: ${describeError(e)}` });
  }
  return items;
}
