/**
 * Certificates in Kubernetes Secrets, in every namespace the credentials can list:
 * - `kubernetes.io/tls` Secrets: `tls.crt`, and `ca.crt` (cert-manager puts the issuing CA there);
 * - Istio's CA Secrets: `cacerts` (the plug-in CA, usually Opaque) and `istio-ca-secret` (istiod's
 *   self-signed CA): `ca-cert.pem`, `root-cert.pem`, `cert-chain.pem`;
 * - `istio.io/key-and-cert` Secrets: `cert-chain.pem`, `root-cert.pem`.
 * Key fields (`tls.key`, `ca-key.pem`, `key.pem`...) are never read: only the keys above are.
 *
 * Listing: one cluster-wide list call per query (`type=kubernetes.io/tls`,
 * `type=istio.io/key-and-cert`, `metadata.name=cacerts`, `metadata.name=istio-ca-secret`, field
 * selectors, so no other Secret is transferred), each paged by 500 with `continue`; a Secret
 * matched by two queries is read once.
 *
 * Credentials: a kubeconfig file when given, else `KubeConfig.loadFromDefault()` (KUBECONFIG,
 * ~/.kube/config, then the in-cluster service account). The credentials need `list secrets`
 * cluster-wide for this. The API server's certificate is verified as configured.
 *
 * Items: `tls.crt` of a TLS Secret is the item `<ns>/<name>` (source
 * `discovered:k8s-secret:<ns>/<name>`); every other key that holds something is its own item
 * `<ns>/<name>/<key>` (source `discovered:k8s-secret:<ns>/<name>/<key>`). With `cluster`, the
 * sources name it (`discovered:k8s-secret@<cluster>:<ns>/<name>[/<key>]`), so several clusters'
 * Secrets are apart in one inventory. A certificate already
 * read from an earlier key of the same Secret (`cert-chain.pem` repeats `ca-cert.pem` and the
 * root) is not repeated: each certificate is recorded once, with the first key holding it. No or
 * empty `tls.crt` (cert-manager creates Secrets before issuing) is skipped, as is an Istio Secret
 * none of whose keys holds anything; a key that is not a PEM certificate bundle is an error. A
 * failing list call (unreachable API server, 403...) is one error item (`kind: 'k8s'`), and the
 * remaining queries are not tried.
 */
import { X509Certificate } from 'node:crypto';
import { KubeConfig, type CoreV1Api, type V1Secret, type V1SecretList } from '@kubernetes/client-node';
import type { DiscoveredItem } from './types.js';
import { withTimeout } from '../async/with-timeout.js';
import { sha256Hex } from '../crypto/digest.js';
import { createKubeClient } from '../k8s/client.js';
import { splitPemCertificates } from '../x509/pem.js';

export const DEFAULT_K8S_TIMEOUT_MS = 30_000;

export interface K8sSecretsOptions {
  /** A kubeconfig file; default KubeConfig.loadFromDefault(). */
  kubeconfig?: string;
  /** For each list call; default 30 s. */
  timeoutMs?: number;
  /** Page size; default 500. */
  pageSize?: number;
  /**
   * The cluster's name in its places' sources (k8sSecretPlaces): several clusters discovered into
   * one inventory. Without it the places name no cluster (one cluster per inventory).
   */
  cluster?: string;
}

/** A name `--cluster` takes: as a cluster ID (1–63 letters, digits, ".", "_", "-"); never ":" or "/", which end it in a place. */
export const PLACE_CLUSTER_NAME = /^[A-Za-z0-9._-]{1,63}$/;

/** The start of every Secret place's source of one cluster (`discovered:k8s-secret:` for an unnamed one). */
export function k8sSecretPlaces(cluster?: string): `discovered:${string}` {
  if (cluster !== undefined && !PLACE_CLUSTER_NAME.test(cluster)) throw new TypeError(`not a cluster name for places: ${JSON.stringify(cluster)}`);
  return cluster === undefined ? 'discovered:k8s-secret:' : `discovered:k8s-secret@${cluster}:`;
}

export function loadKubeConfig(kubeconfig?: string): KubeConfig {
  const kc = new KubeConfig();
  if (kubeconfig !== undefined) kc.loadFromFile(kubeconfig);
  else {
    kc.loadFromDefault();
    // With no KUBECONFIG, no ~/.kube/config and no pod's service account, the library falls back
    // to http://localhost:8080, and its refusal of plain HTTP would hide what is missing.
    const cluster = kc.getCurrentCluster();
    if (cluster?.name === 'cluster' && cluster.server === 'http://localhost:8080' && kc.getCurrentUser()?.name === 'user') {
      throw new Error('none found (no KUBECONFIG, no ~/.kube/config, not in a pod with a service account): pass --kubeconfig FILE');
    }
  }
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

const TLS_KEYS = ['tls.crt', 'ca.crt'] as const;
const ISTIO_CA_KEYS = ['ca-cert.pem', 'root-cert.pem', 'cert-chain.pem'] as const;
const KEY_AND_CERT_KEYS = ['cert-chain.pem', 'root-cert.pem'] as const;
const ISTIO_CA_NAMES = new Set(['cacerts', 'istio-ca-secret']);

/** The list calls, in order; `what` names them in messages. */
const QUERIES = [
  { fieldSelector: 'type=kubernetes.io/tls', what: 'TLS Secrets' },
  { fieldSelector: 'type=istio.io/key-and-cert', what: 'istio.io/key-and-cert Secrets' },
  { fieldSelector: 'metadata.name=cacerts', what: 'Secrets named cacerts' },
  { fieldSelector: 'metadata.name=istio-ca-secret', what: 'Secrets named istio-ca-secret' },
] as const;

/** The certificate keys read from a Secret, in order (never a key field). */
export function certificateKeys(secret: V1Secret): string[] {
  const keys: string[] = [];
  if (secret.type === 'kubernetes.io/tls') keys.push(...TLS_KEYS);
  if (ISTIO_CA_NAMES.has(secret.metadata?.name ?? '')) keys.push(...ISTIO_CA_KEYS);
  if (secret.type === 'istio.io/key-and-cert') keys.push(...KEY_AND_CERT_KEYS);
  return [...new Set(keys)];
}

/** The items of a Secret: see the module comment. */
export function secretItems(secret: V1Secret, cluster?: string): DiscoveredItem[] {
  const places = k8sSecretPlaces(cluster);
  const ns = secret.metadata?.namespace ?? '';
  const name = secret.metadata?.name ?? '';
  const keys = certificateKeys(secret);
  const items: DiscoveredItem[] = [];
  const seen = new Map<string, string>(); // fingerprint -> the key it was first read from
  const empty: Array<`discovered:${string}`> = []; // keys that hold nothing now (tls.crt has its own item)
  for (const key of keys) {
    const target = key === 'tls.crt' ? `${ns}/${name}` : `${ns}/${name}/${key}`;
    const source = `${places}${target}` as const;
    const b64 = secret.data?.[key];
    if (b64 === undefined || b64 === '') {
      if (key === 'tls.crt') items.push({ kind: 'k8s-secret', target, source, status: 'skipped', reason: 'no tls.crt' });
      else empty.push(source);
      continue;
    }
    const text = Buffer.from(b64, 'base64').toString('latin1');
    const blocks = splitPemCertificates(text);
    // A block cut short (no END line) is no block to the splitter: counted by its BEGIN line.
    const unended = (text.match(/-----BEGIN CERTIFICATE-----/g) ?? []).length - blocks.length;
    if (blocks.length === 0 && unended <= 0) {
      items.push({ kind: 'k8s-secret', target, source, status: 'error', error: `${key} holds no PEM certificate` });
      continue;
    }
    const certificates: X509Certificate[] = [];
    const held: string[] = [];
    let bad = 0;
    const repeatedFrom = new Set<string>();
    for (const b of blocks) {
      let cert: X509Certificate;
      try {
        cert = new X509Certificate(b);
      } catch {
        bad++;
        continue;
      }
      held.push(sha256Hex(cert.raw)); // as a record's fingerprint is computed (record-from-cert.ts)
      const first = seen.get(cert.fingerprint256);
      if (first !== undefined) repeatedFrom.add(first);
      else {
        seen.set(cert.fingerprint256, key);
        certificates.push(cert);
      }
    }
    // A Secret is read whole: what parsed is what it serves.
    const broken = [...(bad > 0 ? [`${bad} certificate(s) do not parse`] : []), ...(unended > 0 ? [`${unended} certificate block(s) without a matching END line`] : [])];
    if (broken.length > 0) items.push({ kind: 'k8s-secret', target, source, status: 'error', error: `${key}: ${broken.join('; ')}`, certificates, ...(held.length > 0 ? { readInFull: true as const, held } : {}) });
    else if (certificates.length === 0) items.push({ kind: 'k8s-secret', target, source, status: 'skipped', reason: `no new certificate (all already read from ${[...repeatedFrom].join(', ')})`, held });
    else items.push({ kind: 'k8s-secret', target, source, status: 'ok', certificates, ...(repeatedFrom.size > 0 ? { held } : {}) });
  }
  if (items.length === 0) {
    const target = `${ns}/${name}`;
    const reason = keys.length > 0 ? `no ${keys.join(', ')}` : 'not a TLS or Istio CA Secret';
    items.push({ kind: 'k8s-secret', target, source: `${places}${target}`, status: 'skipped', reason });
  }
  if (empty.length > 0) items[0]!.alsoEmpty = empty;
  return items;
}

/** Lists the Secrets cluster-wide; their items, or one error item when listing fails. */
export async function discoverK8sSecrets(options: K8sSecretsOptions = {}): Promise<DiscoveredItem[]> {
  const timeoutMs = options.timeoutMs ?? DEFAULT_K8S_TIMEOUT_MS;
  let api: CoreV1Api;
  try {
    // Each request aborted a second after withTimeout gives up on it (which names what timed out):
    // a request left open to an API server that never answers would keep the process alive.
    api = createKubeClient(loadKubeConfig(options.kubeconfig), { requestTimeoutMs: timeoutMs + 1000 }).core;
  } catch (e) {
    return [{ kind: 'k8s', target: 'kubernetes', source: null, status: 'error', error: `cannot load Kubernetes credentials: ${describeError(e)}` }];
  }
  const items: DiscoveredItem[] = [];
  const done = new Set<string>();
  for (const q of QUERIES) {
    let cont: string | undefined;
    try {
      do {
        const list: V1SecretList = await withTimeout(
          api.listSecretForAllNamespaces({ fieldSelector: q.fieldSelector, limit: options.pageSize ?? 500, ...(cont ? { _continue: cont } : {}) }),
          timeoutMs,
          `listing ${q.what}`,
        );
        for (const s of list.items) {
          const id = `${s.metadata?.namespace ?? ''}/${s.metadata?.name ?? ''}`;
          if (done.has(id)) continue;
          done.add(id);
          items.push(...secretItems(s, options.cluster));
        }
        cont = list.metadata?._continue || undefined;
      } while (cont !== undefined);
    } catch (e) {
      items.push({ kind: 'k8s', target: 'kubernetes', source: null, status: 'error', error: `cannot list ${q.what}: ${describeError(e)}` });
      break;
    }
  }
  return items;
}
