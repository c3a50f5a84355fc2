/**
 * The deployment files, checked offline:
 * - every kustomization under deploy/kubernetes is rendered with `kubectl kustomize` (no cluster needed),
 *   each object is validated against the Kubernetes schemas (npm `kubernetes-models`), and the security,
 *   availability and RBAC invariants are asserted;
 * - the embedded config.yaml passes meshcert's own schema and agrees with the Deployment;
 * - the Istio install files point at the Service meshcert really exposes, under a name meshcert serves;
 * - the Dockerfile (which cannot be built here: no container engine) is checked statically.
 *
 * Missing tools: with CI set, a missing kubectl (or one embedding kustomize < v5) or a missing
 * kubernetes-models FAILS the run with the reason; locally those tests are skipped and say why.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, posix, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml, parseAllDocuments } from 'yaml';
import { loadConfigFile, parseConfig } from '../../src/config/load.js';
import type { MeshcertConfig } from '../../src/config/schema.js';
import { loadDashboard } from '../support/prometheus-rules.js';
import { evaluate as celEvaluate } from '@marcbachmann/cel-js';
import { ROOT_CERT_CONFIGMAP } from '../../src/controllers/root-distribution.js';
import { ISTIOD_TLS_SECRET } from '../../src/controllers/istiod-tls.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const KUSTOMIZE_ROOT = join(ROOT, 'deploy/kubernetes');

const KUSTOMIZATIONS = {
  base: 'base',
  'standalone-sqlite': 'overlays/standalone-sqlite',
  'ha-postgres': 'overlays/ha-postgres',
  'ha-postgres-discovery': 'overlays/ha-postgres-discovery',
} as const;
type KustomizationName = keyof typeof KUSTOMIZATIONS;

const NAMESPACE = 'meshcert';
const ISTIO_NAMESPACE = 'istio-system';
const RUN_AS = 65532;
const GRPC_PORT = 15012;
const ADMIN_PORT = 9402;
const CONFIG_PATH = '/etc/meshcert/config.yaml';
const SERVE_ARGS = ['serve', '--config', CONFIG_PATH];

// ---------------------------------------------------------------------------------------------
// Tools

function isCi(): boolean {
  const ci = process.env.CI;
  return ci !== undefined && ci !== '' && ci !== '0' && ci.toLowerCase() !== 'false';
}

interface Tool {
  readonly ok: boolean;
  readonly reason: string;
}

/** kubectl with kustomize v5 (kubectl 1.27+): the kustomizations use `patches` and `labels`. */
function findKubectl(): Tool & { readonly bin: string } {
  const bin = process.env.KUBECTL || 'kubectl';
  const r = spawnSync(bin, ['version', '--client'], { encoding: 'utf8' });
  if (r.error || r.status !== 0) {
    return {
      ok: false,
      bin,
      reason: `kubectl not found or not working (${r.error?.message ?? r.stderr.trim()}): it renders deploy/kubernetes offline. Install kubectl 1.27+ (or set KUBECTL=/path/to/kubectl).`,
    };
  }
  const m = /Kustomize Version:\s*v(\d+)\.(\d+)/.exec(r.stdout);
  if (!m || Number(m[1]) < 5) {
    return {
      ok: false,
      bin,
      reason: `${bin} embeds kustomize ${m ? `v${m[1]}.${m[2]}` : '(unknown version)'}; deploy/kubernetes needs kustomize v5 (kubectl 1.27+). Debian 12's kubernetes-client (1.20) is too old.`,
    };
  }
  return { ok: true, bin, reason: '' };
}

type ModelCtor = new (data: unknown) => { validate(): void };

async function findModels(): Promise<Tool> {
  const pkg = 'kubernetes-models';
  try {
    await import(`${pkg}/v1`);
    return { ok: true, reason: '' };
  } catch (e) {
    return {
      ok: false,
      reason: `npm package kubernetes-models is not installed (${(e as Error).message.split('\n')[0]}): run \`npm i -D kubernetes-models@^4.5.1\` (5.x needs Node 22).`,
    };
  }
}

const KUBECTL = findKubectl();
const MODELS = await findModels();

function noteSkip(tool: Tool): void {
  if (!tool.ok && !isCi()) console.warn(`[test/deploy] skipped: ${tool.reason}`);
}
noteSkip(KUBECTL);
noteSkip(MODELS);

/** Runs when the tool is there; with CI set, fails when it is not; otherwise skips. */
const withKubectl = KUBECTL.ok || isCi() ? describe : describe.skip;
const itWithModels = MODELS.ok || isCi() ? it : it.skip;

function requireTool(tool: Tool): void {
  if (!tool.ok) throw new Error(tool.reason);
}

// ---------------------------------------------------------------------------------------------
// Shapes read by the assertions (only the fields used)

interface Metadata {
  name: string;
  namespace?: string;
  labels?: Record<string, string>;
}
interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: Metadata;
  [key: string]: unknown;
}
interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: { secretKeyRef?: { name: string; key: string }; fieldRef?: { fieldPath: string } };
}
interface Probe {
  httpGet?: { path?: string; port: number | string; scheme?: string };
  grpc?: unknown;
  exec?: unknown;
  tcpSocket?: unknown;
}
interface SecurityContext {
  runAsNonRoot?: boolean;
  runAsUser?: number;
  runAsGroup?: number;
  readOnlyRootFilesystem?: boolean;
  allowPrivilegeEscalation?: boolean;
  privileged?: boolean;
  capabilities?: { drop?: string[]; add?: string[] };
  seccompProfile?: { type: string };
}
interface Container {
  name: string;
  image?: string;
  args?: string[];
  command?: string[];
  ports?: { name?: string; containerPort: number; hostPort?: number }[];
  env?: EnvVar[];
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
  securityContext?: SecurityContext;
  readinessProbe?: Probe;
  livenessProbe?: Probe;
  startupProbe?: Probe;
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean; subPath?: string }[];
}
interface Volume {
  name: string;
  configMap?: { name: string };
  secret?: { secretName: string; optional?: boolean };
  emptyDir?: Record<string, unknown>;
  persistentVolumeClaim?: { claimName: string };
  hostPath?: unknown;
}
interface AffinityTerm {
  topologyKey: string;
  labelSelector?: { matchLabels?: Record<string, string> };
}
interface PodSpec {
  serviceAccountName?: string;
  terminationGracePeriodSeconds?: number;
  automountServiceAccountToken?: boolean;
  hostNetwork?: boolean;
  hostPID?: boolean;
  hostIPC?: boolean;
  securityContext?: SecurityContext & { fsGroup?: number };
  containers: Container[];
  initContainers?: Container[];
  volumes?: Volume[];
  affinity?: {
    podAntiAffinity?: {
      preferredDuringSchedulingIgnoredDuringExecution?: { weight: number; podAffinityTerm: AffinityTerm }[];
      requiredDuringSchedulingIgnoredDuringExecution?: AffinityTerm[];
    };
  };
}
interface Deployment extends K8sObject {
  spec: {
    replicas?: number;
    selector: { matchLabels?: Record<string, string> };
    strategy?: { type?: string; rollingUpdate?: { maxUnavailable?: number | string; maxSurge?: number | string } };
    template: { metadata: { labels?: Record<string, string>; annotations?: Record<string, string> }; spec: PodSpec };
  };
}
interface Service extends K8sObject {
  spec: {
    selector?: Record<string, string>;
    ports: { name?: string; port: number; targetPort?: number | string; appProtocol?: string }[];
  };
}
interface PolicyRule {
  apiGroups?: string[];
  resources?: string[];
  resourceNames?: string[];
  verbs: string[];
  nonResourceURLs?: string[];
}
interface RbacRole extends K8sObject {
  rules?: PolicyRule[];
}
interface RbacBinding extends K8sObject {
  roleRef: { apiGroup: string; kind: string; name: string };
  subjects?: { kind: string; name: string; namespace?: string }[];
}
interface Pdb extends K8sObject {
  spec: { minAvailable?: number | string; maxUnavailable?: number | string; selector: { matchLabels?: Record<string, string> } };
}
interface Pvc extends K8sObject {
  spec: { accessModes?: string[]; resources?: { requests?: { storage?: string } } };
}
interface ConfigMap extends K8sObject {
  data?: Record<string, string>;
}

// ---------------------------------------------------------------------------------------------
// Rendering and lookups

function render(dir: string): K8sObject[] {
  return renderAbsolute(join(KUSTOMIZE_ROOT, dir));
}

/** A kustomization (under deploy/kubernetes) with one of its components added, as a user's overlay adds it. */
function renderWithComponent(dir: string, component: string): K8sObject[] {
  requireTool(KUBECTL);
  const tmp = mkdtempSync(join(tmpdir(), 'meshcert-kustomize-'));
  try {
    // kustomize takes bases and components by relative path only.
    writeFileSync(
      join(tmp, 'kustomization.yaml'),
      ['apiVersion: kustomize.config.k8s.io/v1beta1', 'kind: Kustomization', 'resources:', `  - ${relative(tmp, KUSTOMIZE_ROOT)}/${dir}`, 'components:', `  - ${relative(tmp, KUSTOMIZE_ROOT)}/components/${component}`, ''].join('\n'),
    );
    return renderAbsolute(tmp);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

function renderAbsolute(dir: string): K8sObject[] {
  const out = execFileSync(KUBECTL.bin, ['kustomize', dir], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const objects: K8sObject[] = [];
  for (const doc of parseAllDocuments(out)) {
    if (doc.errors.length > 0) throw new Error(`kubectl kustomize ${dir}: invalid YAML: ${doc.errors[0]!.message}`);
    const value: unknown = doc.toJS();
    if (value === null || value === undefined) continue;
    objects.push(value as K8sObject);
  }
  return objects;
}

function ref(o: K8sObject): string {
  return `${o.kind} ${o.metadata.namespace ? `${o.metadata.namespace}/` : ''}${o.metadata.name}`;
}

function ofKind<T extends K8sObject>(objects: readonly K8sObject[], kind: string): T[] {
  return objects.filter((o) => o.kind === kind) as T[];
}

function only<T extends K8sObject>(objects: readonly K8sObject[], kind: string, name?: string): T {
  const found = ofKind<T>(objects, kind).filter((o) => name === undefined || o.metadata.name === name);
  expect(found.map(ref), `exactly one ${kind}${name ? ` ${name}` : ''}`).toHaveLength(1);
  return found[0]!;
}

function meshcertDeployment(objects: readonly K8sObject[]): Deployment {
  return only<Deployment>(objects, 'Deployment', 'meshcert');
}

function mainContainer(d: Deployment): Container {
  const c = d.spec.template.spec.containers.find((x) => x.name === 'meshcert');
  expect(c, 'container "meshcert"').toBeDefined();
  return c!;
}

function allContainers(d: Deployment): Container[] {
  return [...d.spec.template.spec.containers, ...(d.spec.template.spec.initContainers ?? [])];
}

/** A probe's or Service's port (number or container port name) as a number. */
function resolvePort(c: Container, port: number | string | undefined): number | undefined {
  if (typeof port === 'number') return port;
  return c.ports?.find((p) => p.name === port)?.containerPort;
}

function selects(selector: Record<string, string> | undefined, labels: Record<string, string> | undefined): boolean {
  if (!selector || Object.keys(selector).length === 0) return false;
  return Object.entries(selector).every(([k, v]) => labels?.[k] === v);
}

function volumeAt(d: Deployment, mountPath: string): { mount: NonNullable<Container['volumeMounts']>[number]; volume: Volume } {
  const mount = mainContainer(d).volumeMounts?.find((m) => m.mountPath === mountPath);
  expect(mount, `a volume mounted at ${mountPath}`).toBeDefined();
  const volume = d.spec.template.spec.volumes?.find((v) => v.name === mount!.name);
  expect(volume, `volume ${mount!.name}`).toBeDefined();
  return { mount: mount!, volume: volume! };
}

/**
 * Validates one object against the Kubernetes OpenAPI schema shipped by kubernetes-models (the
 * Prometheus Operator's kinds: by @kubernetes-models/prometheus-operator).
 */
async function validateSchema(o: K8sObject): Promise<void> {
  const slash = o.apiVersion.indexOf('/');
  const pkg = o.apiVersion.startsWith('monitoring.coreos.com/') ? '@kubernetes-models/prometheus-operator' : 'kubernetes-models';
  const spec = slash < 0 ? `${pkg}/${o.apiVersion}` : `${pkg}/${o.apiVersion.slice(0, slash)}/${o.apiVersion.slice(slash + 1)}`;
  let mod: Record<string, unknown>;
  try {
    mod = (await import(spec)) as Record<string, unknown>;
  } catch (e) {
    throw new Error(`${ref(o)}: no schema for apiVersion ${o.apiVersion} in kubernetes-models`, { cause: e });
  }
  const Ctor = mod[o.kind];
  if (typeof Ctor !== 'function') throw new Error(`${ref(o)}: kubernetes-models has no ${o.kind} in ${o.apiVersion}`);
  try {
    new (Ctor as ModelCtor)(structuredClone(o)).validate();
  } catch (e) {
    throw new Error(`${ref(o)} does not match the ${o.apiVersion} ${o.kind} schema: ${(e as Error).message}`, { cause: e });
  }
}

// ---------------------------------------------------------------------------------------------
// Expected RBAC: one line per (apiGroup, resource, resourceNames), verbs sorted.

function ruleLines(rules: readonly PolicyRule[] | undefined): string[] {
  const lines: string[] = [];
  for (const r of rules ?? []) {
    if (r.nonResourceURLs !== undefined) {
      // A rule is for URLs or for resources, never both.
      expect(r.apiGroups ?? [], 'a nonResourceURLs rule names no API group').toEqual([]);
      expect(r.resources ?? [], 'a nonResourceURLs rule names no resource').toEqual([]);
      for (const u of r.nonResourceURLs) lines.push(`url ${u} ${[...r.verbs].sort().join(',')}`);
    }
    for (const g of r.apiGroups ?? []) {
      for (const res of r.resources ?? []) {
        lines.push(`${g || 'core'} ${res} [${[...(r.resourceNames ?? [])].sort().join(',')}] ${[...r.verbs].sort().join(',')}`);
      }
    }
  }
  return lines.sort();
}

interface ExpectedRole {
  kind: 'ClusterRole' | 'Role';
  namespace?: string;
  rules: string[];
  /** The service account its binding names; default meshcert's own. */
  serviceAccount?: string;
}

/** The discovery component's: its own service account, Secrets listed everywhere (components/discovery/kustomization.yaml says why). */
const DISCOVERY_RBAC: Record<string, ExpectedRole> = {
  'meshcert-discovery': { kind: 'ClusterRole', rules: ['core secrets [] list'], serviceAccount: 'meshcert-discovery' },
};

function expectedRbac(name: KustomizationName): Record<string, ExpectedRole> {
  return name === 'ha-postgres-discovery' ? { ...EXPECTED_RBAC, ...DISCOVERY_RBAC } : EXPECTED_RBAC;
}

const EXPECTED_RBAC: Record<string, ExpectedRole> = {
  meshcert: {
    kind: 'ClusterRole',
    rules: [
      'authentication.k8s.io tokenreviews [] create',
      'core configmaps [] create',
      'core configmaps [istio-ca-root-cert] get,list,update,watch',
      'core namespaces [] list,watch',
      'core pods [] list,watch',
      'url /openid/v1/jwks get',
    ],
  },
  'meshcert-istiod-tls': {
    kind: 'Role',
    namespace: ISTIO_NAMESPACE,
    rules: ['core secrets [] create', 'core secrets [istiod-tls] get,list,update,watch'],
  },
  'meshcert-leader-election': {
    kind: 'Role',
    namespace: NAMESPACE,
    rules: ['coordination.k8s.io leases [] create', 'coordination.k8s.io leases [meshcert-leader] get,update'],
  },
};

// ---------------------------------------------------------------------------------------------
// Source files read without kubectl (Istio and Dockerfile checks cross-check against them)

function readYamlFile<T>(rel: string): T {
  return parseYaml(readFileSync(join(ROOT, rel), 'utf8')) as T;
}

function expectedCaAddress(): { address: string; host: string } {
  const svc = readYamlFile<Service>('deploy/kubernetes/base/service.yaml');
  const grpc = svc.spec.ports.find((p) => p.name === 'tls-grpc');
  expect(grpc, 'base Service has a port named tls-grpc').toBeDefined();
  const host = `${svc.metadata.name}.${svc.metadata.namespace}.svc`;
  return { address: `${host}:${grpc!.port}`, host };
}

function baseConfig(): MeshcertConfig {
  return loadConfigFile(join(ROOT, 'deploy/kubernetes/base/config.yaml'), {}).config;
}

// =============================================================================================

describe('deploy/kubernetes/base/config.yaml (no kubectl needed)', () => {
  it('passes meshcert config validation as a file, with an empty environment', () => {
    const c = baseConfig();
    expect(c.server.listen).toBe(`0.0.0.0:${GRPC_PORT}`);
    expect(c.trustDomain).toBe('cluster.local');
    expect(c.ca.dir).toBe('/etc/cacerts');
    expect(c.dataDir).toBe('/var/run/meshcert');
    expect(c.server.tls.dnsNames).toEqual(['meshcert.meshcert.svc', 'meshcert.meshcert.svc.cluster.local']);
    expect(c.auth.clusters).toHaveLength(1);
    expect(c.auth.clusters[0]!.name).toBe('Kubernetes');
    expect(c.auth.clusters[0]!.tokenReview).toBeDefined();
    expect(c.auth.clusters[0]!.tokenReview!.audiences).toEqual(['istio-ca']);
    // Production: no dev token issuer, no self-created CA (the CA comes from the cacerts Secret).
    expect(c.dev.tokenIssuer).toBe(false);
    expect(c.ca.autoInit).toBe(false);
    // The root ConfigMap goes where istiod would put it: not into two of Kubernetes' own
    // namespaces, but into kube-system, where ztunnel may run and mounts it.
    expect(c.istio.rootCertConfigMap).toMatchObject({ enabled: true, excludeNamespaces: ['kube-public', 'kube-node-lease'] });
    expect(c.istio.rootCertConfigMap.excludeNamespaces).not.toContain('kube-system');
    // Clients dial the Service's name; a loopback IP SAN would only widen the certificate.
    expect(c.server.tls.ipAddresses).toEqual([]);
  });
});

describe.each(Object.entries(KUSTOMIZATIONS) as [KustomizationName, string][])('kustomization %s', (name, dir) => {
  let objects: K8sObject[] = [];

  withKubectl('rendered with kubectl kustomize', () => {
    beforeAll(() => {
      requireTool(KUBECTL);
      objects = render(dir);
    });

    it('renders named objects, each namespaced one with an explicit namespace', () => {
      expect(objects.length).toBeGreaterThan(0);
      const clusterScoped = new Set(['Namespace', 'ClusterRole', 'ClusterRoleBinding', 'ValidatingAdmissionPolicy', 'ValidatingAdmissionPolicyBinding']);
      for (const o of objects) {
        expect(o.apiVersion, 'apiVersion').toBeTruthy();
        expect(o.kind, 'kind').toBeTruthy();
        expect(o.metadata?.name, `${o.kind} name`).toBeTruthy();
        if (clusterScoped.has(o.kind)) {
          expect(o.metadata.namespace, `${ref(o)} is cluster-scoped`).toBeUndefined();
        } else if (o.metadata.name === 'meshcert-istiod-tls') {
          expect(o.metadata.namespace, ref(o)).toBe(ISTIO_NAMESPACE);
        } else {
          expect(o.metadata.namespace, ref(o)).toBe(NAMESPACE);
        }
      }
      only(objects, 'Namespace', NAMESPACE);
      const keys = objects.map(ref);
      expect(new Set(keys).size, 'no duplicate objects').toBe(keys.length);
    });

    itWithModels('validates every object against the Kubernetes schemas (kubernetes-models)', async () => {
      requireTool(MODELS);
      for (const o of objects) await validateSchema(o);
    });

    it('runs locked down: non-root 65532, read-only root fs, no privilege escalation, no capabilities, seccomp RuntimeDefault', () => {
      const d = meshcertDeployment(objects);
      const pod = d.spec.template.spec;
      expect(pod.securityContext?.runAsNonRoot).toBe(true);
      expect(pod.securityContext?.runAsUser).toBe(RUN_AS);
      expect(pod.securityContext?.seccompProfile?.type).toBe('RuntimeDefault');
      expect(pod.hostNetwork ?? false).toBe(false);
      expect(pod.hostPID ?? false).toBe(false);
      expect(pod.hostIPC ?? false).toBe(false);
      expect((pod.volumes ?? []).filter((v) => v.hostPath !== undefined).map((v) => v.name), 'no hostPath volumes').toEqual([]);
      for (const c of allContainers(d)) {
        const sc = c.securityContext;
        expect(sc, `${c.name}: securityContext`).toBeDefined();
        expect(sc!.allowPrivilegeEscalation, `${c.name}: allowPrivilegeEscalation`).toBe(false);
        expect(sc!.readOnlyRootFilesystem, `${c.name}: readOnlyRootFilesystem`).toBe(true);
        expect(sc!.privileged ?? false, `${c.name}: privileged`).toBe(false);
        expect(sc!.runAsNonRoot ?? pod.securityContext?.runAsNonRoot, `${c.name}: runAsNonRoot`).toBe(true);
        expect(sc!.runAsUser ?? pod.securityContext?.runAsUser, `${c.name}: runAsUser`).toBe(RUN_AS);
        expect(sc!.capabilities?.drop, `${c.name}: capabilities.drop`).toContain('ALL');
        expect(sc!.capabilities?.add ?? [], `${c.name}: capabilities.add`).toEqual([]);
        expect(sc!.seccompProfile?.type ?? pod.securityContext?.seccompProfile?.type, `${c.name}: seccomp`).toBe('RuntimeDefault');
        expect((c.ports ?? []).filter((p) => p.hostPort !== undefined), `${c.name}: no hostPort`).toEqual([]);
      }
    });

    it('probes /readyz and /healthz on the admin HTTP port, never the TLS gRPC port', () => {
      const c = mainContainer(meshcertDeployment(objects));
      expect(resolvePort(c, 'admin')).toBe(ADMIN_PORT);
      const expectations: [string, Probe | undefined, string][] = [
        ['readinessProbe', c.readinessProbe, '/readyz'],
        ['livenessProbe', c.livenessProbe, '/healthz'],
      ];
      if (c.startupProbe) expectations.push(['startupProbe', c.startupProbe, '/healthz']);
      for (const [what, probe, path] of expectations) {
        expect(probe, what).toBeDefined();
        // The kubelet's grpc probe is plaintext; exec needs a binary the distroless image lacks.
        expect(probe!.grpc, `${what}: no native grpc probe`).toBeUndefined();
        expect(probe!.exec, `${what}: no exec probe`).toBeUndefined();
        expect(probe!.httpGet?.path, `${what}: path`).toBe(path);
        expect(resolvePort(c, probe!.httpGet?.port), `${what}: port`).toBe(ADMIN_PORT);
        expect(probe!.httpGet?.scheme ?? 'HTTP', `${what}: scheme`).toBe('HTTP');
      }
      // The admin server listens on loopback unless told otherwise: the kubelet must reach it.
      expect(c.env?.find((e) => e.name === 'MESHCERT_ADMIN_LISTEN')?.value).toBe(`0.0.0.0:${ADMIN_PORT}`);
    });

    it('sets CPU and memory requests, and a memory limit', () => {
      const r = mainContainer(meshcertDeployment(objects)).resources;
      expect(r?.requests?.cpu, 'requests.cpu').toBeTruthy();
      expect(r?.requests?.memory, 'requests.memory').toBeTruthy();
      expect(r?.limits?.memory, 'limits.memory').toBeTruthy();
      expect(r?.limits?.cpu, 'limits.cpu').toBeTruthy();
    });

    it('bounds connections so that the memory limit holds them: workers (one per CPU of the limit) x maxConnections x 50 KB, plus the idle processes, fit', () => {
      const r = mainContainer(meshcertDeployment(objects)).resources!;
      const cpus = Math.ceil(Number(r.limits!.cpu));
      const limitMb = Number(/^(\d+)Mi$/.exec(r.limits!.memory!)?.[1]);
      const config = baseConfig();
      // server.workers auto is one per CPU of the pod's limit (src/runtime/auto-shape.ts), or a number.
      const workers = config.server.workers === 'auto' ? cpus : config.server.workers;
      expect(config.server.maxConnections, 'server.maxConnections is set').toBeGreaterThan(0);
      // README "Performance": about 50 KB per connection outside the V8 heap; the processes, idle and
      // with their heaps at their limits, about 250 MB plus 192 MB per worker.
      const needMb = workers * config.server.maxConnections * 0.05 + 250 + workers * config.server.workerHeapMb;
      expect(needMb, `${workers} workers x ${config.server.maxConnections} connections need about ${needMb} MB`).toBeLessThanOrEqual(limitMb);
    });

    it('leaves the V8 heap limit to server.workerHeapMb (a --max-old-space-size in NODE_OPTIONS would override it and the memory-pressure mark measured against it)', () => {
      const env = mainContainer(meshcertDeployment(objects)).env ?? [];
      for (const e of env) if (e.name === 'NODE_OPTIONS') expect(e.value ?? '').not.toMatch(/max[-_]old[-_]space[-_]size/);
    });

    it('starts `serve --config` on the mounted config, with cacerts read-only and a writable data dir', () => {
      const d = meshcertDeployment(objects);
      const c = mainContainer(d);
      expect(c.command, 'the image ENTRYPOINT is used').toBeUndefined();
      expect(c.args).toEqual(SERVE_ARGS);
      expect(c.image, 'a pinned image tag').toMatch(/^[^@]+:[^:/@]+$|@sha256:/);
      expect(c.image).not.toMatch(/:latest$/);
      expect(c.ports?.find((p) => p.name === 'grpc')?.containerPort).toBe(GRPC_PORT);

      const config = volumeAt(d, posix.dirname(CONFIG_PATH));
      expect(config.mount.readOnly).toBe(true);
      expect(config.volume.configMap, 'config comes from a ConfigMap').toBeDefined();
      const cm = only<ConfigMap>(objects, 'ConfigMap', config.volume.configMap!.name);
      expect(cm.metadata.name).toMatch(/^meshcert-config(-[a-z0-9]+)?$/);
      expect(Object.keys(cm.data ?? {})).toContain(posix.basename(CONFIG_PATH));

      const cacerts = volumeAt(d, '/etc/cacerts');
      expect(cacerts.mount.readOnly).toBe(true);
      expect(cacerts.volume.secret?.secretName).toBe('cacerts');
      expect(cacerts.volume.secret?.optional ?? false, 'the CA Secret is required').toBe(false);

      const data = volumeAt(d, '/var/run/meshcert');
      expect(data.mount.readOnly ?? false, 'data dir writable').toBe(false);
      expect(data.volume.emptyDir !== undefined || data.volume.persistentVolumeClaim !== undefined).toBe(true);
      expect(volumeAt(d, '/tmp').mount.readOnly ?? false, '/tmp writable (read-only root fs)').toBe(false);
    });

    it('embeds a config.yaml that meshcert accepts (empty env, and with the Deployment env) and that matches the pod', () => {
      const d = meshcertDeployment(objects);
      const c = mainContainer(d);
      const cm = only<ConfigMap>(objects, 'ConfigMap', volumeAt(d, '/etc/meshcert').volume.configMap!.name);
      const raw: unknown = parseYaml(cm.data![posix.basename(CONFIG_PATH)]!);
      expect(typeof raw === 'object' && raw !== null && !Array.isArray(raw)).toBe(true);

      const plain = parseConfig(raw as Parameters<typeof parseConfig>[0], {}, `${name}: ConfigMap ${cm.metadata.name}`, '/');
      // A value from a Secret is the user's (the PostgreSQL URL): a stand-in of the same form.
      const fromSecret = (e: { name: string }): string | undefined => (e.name === 'MESHCERT_INVENTORY_URL' ? 'postgres://meshcert@db/meshcert' : undefined);
      const literalEnv = Object.fromEntries((c.env ?? []).map((e) => [e.name, e.value ?? (e.valueFrom?.secretKeyRef ? fromSecret(e) : undefined)]).filter((kv): kv is [string, string] => kv[1] !== undefined));
      const withEnv = parseConfig(raw as Parameters<typeof parseConfig>[0], literalEnv, `${name}: ConfigMap with the Deployment env`, '/');

      for (const cfg of [plain, withEnv]) {
        expect(Number(cfg.server.listen.split(':').pop())).toBe(GRPC_PORT);
        // dataDir and ca.dir are where the pod mounts the data volume and the cacerts Secret.
        expect(volumeAt(d, cfg.dataDir).mount.readOnly ?? false, 'dataDir writable').toBe(false);
        expect(volumeAt(d, cfg.ca.dir!).volume.secret?.secretName).toBe('cacerts');
        const svc = only<Service>(objects, 'Service', 'meshcert');
        expect(cfg.server.tls.dnsNames).toContain(`${svc.metadata.name}.${svc.metadata.namespace}.svc`);
        expect(cfg.auth.clusters.map((x) => x.name)).toContain(cfg.auth.defaultCluster);
        expect(cfg.dev.tokenIssuer).toBe(false);
        // Reported not ready while still serving as the pod leaves the endpoints, then drained,
        // then the inventory flushed (at most 8 s past the grace), all before the kubelet's SIGKILL.
        expect(cfg.server.shutdownDelay).toBeGreaterThan(0);
        expect(d.spec.template.spec.terminationGracePeriodSeconds).toBeGreaterThanOrEqual(cfg.server.shutdownDelay + cfg.server.shutdownGrace + 10);
      }
    });

    it('keeps the CA out of the mesh (no sidecar, no ambient capture)', () => {
      const labels = meshcertDeployment(objects).spec.template.metadata.labels ?? {};
      expect(labels['sidecar.istio.io/inject']).toBe('false');
      expect(labels['istio.io/dataplane-mode']).toBe('none');
      expect(only(objects, 'Namespace', NAMESPACE).metadata.labels?.['istio-injection']).toBe('disabled');
    });

    it('exposes gRPC over TLS as Service port 443 -> 15012 (name tls-grpc, appProtocol tls: Istio reads grpc as plaintext) and metrics on 9402', () => {
      const d = meshcertDeployment(objects);
      const c = mainContainer(d);
      const svc = only<Service>(objects, 'Service', 'meshcert');
      expect(selects(svc.spec.selector, d.spec.template.metadata.labels), 'Service selects the pods').toBe(true);
      const grpc = svc.spec.ports.find((p) => p.port === 443);
      expect(grpc?.name).toBe('tls-grpc');
      expect(grpc?.appProtocol).toBe('tls');
      expect(resolvePort(c, grpc?.targetPort)).toBe(GRPC_PORT);
      const metrics = svc.spec.ports.find((p) => p.port === ADMIN_PORT);
      expect(metrics, 'metrics port').toBeDefined();
      expect(resolvePort(c, metrics!.targetPort)).toBe(ADMIN_PORT);
    });

    it('selects its own pods, and any PodDisruptionBudget leaves room for a disruption', () => {
      const d = meshcertDeployment(objects);
      expect(selects(d.spec.selector.matchLabels, d.spec.template.metadata.labels)).toBe(true);
      const replicas = d.spec.replicas ?? 1;
      for (const pdb of ofKind<Pdb>(objects, 'PodDisruptionBudget')) {
        expect(selects(pdb.spec.selector.matchLabels, d.spec.template.metadata.labels), `${ref(pdb)} selects the pods`).toBe(true);
        expect(typeof pdb.spec.minAvailable, `${ref(pdb)}: minAvailable as a number`).toBe('number');
        expect(pdb.spec.minAvailable as number, `${ref(pdb)} must not block every drain`).toBeLessThan(replicas);
        expect(pdb.spec.minAvailable as number).toBeGreaterThanOrEqual(1);
      }
    });

    it('grants exactly the RBAC meshcert uses: no wildcards; Secrets only istiod-tls in istio-system, and listed everywhere only by the discovery component\'s own account', () => {
      const roles = [...ofKind<RbacRole>(objects, 'ClusterRole'), ...ofKind<RbacRole>(objects, 'Role')];
      expect(roles.map(ref).sort()).toEqual(
        Object.entries(expectedRbac(name))
          .map(([n, r]) => `${r.kind} ${r.namespace ? `${r.namespace}/` : ''}${n}`)
          .sort(),
      );
      for (const role of roles) {
        for (const rule of role.rules ?? []) {
          for (const v of [...(rule.apiGroups ?? []), ...(rule.resources ?? []), ...rule.verbs]) {
            expect(v, `${ref(role)}: no wildcard`).not.toContain('*');
          }
          for (const v of ['escalate', 'bind', 'impersonate', 'delete', 'deletecollection']) expect(rule.verbs, ref(role)).not.toContain(v);
        }
        const expected = expectedRbac(name)[role.metadata.name]!;
        expect(role.metadata.namespace).toBe(expected.namespace);
        expect(ruleLines(role.rules), ref(role)).toEqual([...expected.rules].sort());
      }

      const bindings = [...ofKind<RbacBinding>(objects, 'ClusterRoleBinding'), ...ofKind<RbacBinding>(objects, 'RoleBinding')];
      expect(bindings).toHaveLength(roles.length);
      const sa = only(objects, 'ServiceAccount', 'meshcert');
      expect(meshcertDeployment(objects).spec.template.spec.serviceAccountName).toBe(sa.metadata.name);
      for (const b of bindings) {
        const role = roles.find((r) => r.kind === b.roleRef.kind && r.metadata.name === b.roleRef.name && r.metadata.namespace === b.metadata.namespace);
        expect(role, `${ref(b)} binds a role defined here (same namespace)`).toBeDefined();
        expect(b.roleRef.apiGroup).toBe('rbac.authorization.k8s.io');
        const account = only(objects, 'ServiceAccount', expectedRbac(name)[b.roleRef.name]?.serviceAccount ?? 'meshcert');
        expect(b.subjects).toEqual([{ kind: 'ServiceAccount', name: account.metadata.name, namespace: account.metadata.namespace }]);
      }
    });
  });
});

withKubectl('kustomization base: the admission policy behind RBAC\'s create', () => {
  let objects: K8sObject[] = [];
  beforeAll(() => {
    requireTool(KUBECTL);
    objects = render(KUSTOMIZATIONS.base);
  });

  it('holds the ServiceAccount meshcert runs as to the ConfigMap and Secret its controllers write, never a service-account token, and denies', () => {
    type Vap = K8sObject & { spec: { failurePolicy: string; matchConstraints: { resourceRules: Array<{ apiGroups: string[]; resources: string[]; operations: string[] }> }; matchConditions: Array<{ expression: string }>; validations: Array<{ expression: string }> } };
    const policy = only(objects, 'ValidatingAdmissionPolicy', 'meshcert-writes-only-its-objects') as Vap;
    const binding = only(objects, 'ValidatingAdmissionPolicyBinding', 'meshcert-writes-only-its-objects') as K8sObject & { spec: { policyName: string; validationActions: string[] } };
    expect(policy.apiVersion).toBe('admissionregistration.k8s.io/v1');
    expect(binding.spec).toEqual({ policyName: policy.metadata.name, validationActions: ['Deny'] });
    expect(policy.spec.failurePolicy).toBe('Fail');
    expect(policy.spec.matchConstraints.resourceRules).toEqual([{ apiGroups: [''], apiVersions: ['v1'], operations: ['CREATE', 'UPDATE'], resources: ['configmaps', 'secrets'] }]);
    // The account the Deployment runs as, spelled as the API server names it.
    const sa = only(objects, 'ServiceAccount', meshcertDeployment(objects).spec.template.spec.serviceAccountName!);
    expect(policy.spec.matchConditions.map((c) => c.expression)).toEqual([`request.userInfo.username == 'system:serviceaccount:${sa.metadata.namespace}:${sa.metadata.name}'`]);
    expect(policy.spec.validations).toHaveLength(1);
    // The rule evaluated as the API server would (CEL), on what meshcert writes and what it must not.
    const allows = (resource: 'configmaps' | 'secrets', object: Record<string, unknown>): unknown => celEvaluate(policy.spec.validations[0]!.expression, { request: { resource: { group: '', version: 'v1', resource } }, object });
    expect(allows('configmaps', { metadata: { name: ROOT_CERT_CONFIGMAP } })).toBe(true);
    expect(allows('secrets', { metadata: { name: ISTIOD_TLS_SECRET }, type: 'kubernetes.io/tls' })).toBe(true);
    expect(allows('secrets', { metadata: { name: ISTIOD_TLS_SECRET }, type: 'Opaque' })).toBe(true); // a Secret made before keeps its type
    expect(allows('configmaps', { metadata: { name: 'kube-root-ca.crt' } })).toBe(false);
    expect(allows('secrets', { metadata: { name: 'istiod-token' }, type: 'kubernetes.io/service-account-token', annotations: { 'kubernetes.io/service-account.name': 'istiod' } })).toBe(false);
    expect(allows('secrets', { metadata: { name: ISTIOD_TLS_SECRET }, type: 'kubernetes.io/service-account-token' })).toBe(false);
    expect(allows('secrets', { metadata: { name: 'cacerts' }, type: 'Opaque' })).toBe(false);
    const username = (name: string): unknown => celEvaluate(policy.spec.matchConditions[0]!.expression, { request: { userInfo: { username: name } } });
    expect(username(`system:serviceaccount:${sa.metadata.namespace}:${sa.metadata.name}`)).toBe(true);
    expect(username('system:serviceaccount:istio-system:istiod')).toBe(false);
  });
});

withKubectl('kustomization base: highly available', () => {
  let objects: K8sObject[] = [];
  beforeAll(() => {
    requireTool(KUBECTL);
    objects = render(KUSTOMIZATIONS.base);
  });

  it('runs 2+ replicas, spread across nodes, rolling without losing capacity', () => {
    const d = meshcertDeployment(objects);
    expect(d.spec.replicas).toBeGreaterThanOrEqual(2);
    expect(d.spec.strategy?.type ?? 'RollingUpdate').toBe('RollingUpdate');
    expect(d.spec.strategy?.rollingUpdate?.maxUnavailable).toBe(0);
    const terms = d.spec.template.spec.affinity?.podAntiAffinity?.preferredDuringSchedulingIgnoredDuringExecution ?? [];
    const byHost = terms.find((t) => t.podAffinityTerm.topologyKey === 'kubernetes.io/hostname');
    expect(byHost, 'preferred pod anti-affinity by hostname').toBeDefined();
    expect(selects(byHost!.podAffinityTerm.labelSelector?.matchLabels, d.spec.template.metadata.labels), 'anti-affinity selects its own pods').toBe(true);
    expect(only<Pdb>(objects, 'PodDisruptionBudget', 'meshcert').spec.minAvailable).toBe(1);
    expect(volumeAt(d, '/var/run/meshcert').volume.emptyDir).toBeDefined();
  });

  it('keeps no inventory: replicas with a file each on an emptyDir would each hold part of it, lost at restart', () => {
    const d = meshcertDeployment(objects);
    expect(mainContainer(d).env?.find((e) => e.name === 'MESHCERT_INVENTORY_STORE')).toBeUndefined();
    expect(baseConfig().inventory.store).toBe('none');
  });
});

withKubectl('kustomization standalone-sqlite', () => {
  let objects: K8sObject[] = [];
  beforeAll(() => {
    requireTool(KUBECTL);
    objects = render(KUSTOMIZATIONS['standalone-sqlite']);
  });

  it('runs one replica with Recreate rollouts, its data dir on a ReadWriteOnce PVC, and no PDB', () => {
    const d = meshcertDeployment(objects);
    expect(d.spec.replicas).toBe(1);
    expect(d.spec.strategy?.type).toBe('Recreate');
    expect(d.spec.strategy?.rollingUpdate).toBeUndefined();
    const data = volumeAt(d, '/var/run/meshcert').volume;
    expect(data.emptyDir, 'emptyDir replaced').toBeUndefined();
    expect(data.persistentVolumeClaim?.claimName).toBe('meshcert-data');
    const pvc = only<Pvc>(objects, 'PersistentVolumeClaim', 'meshcert-data');
    expect(pvc.spec.accessModes).toEqual(['ReadWriteOnce']);
    expect(pvc.spec.resources?.requests?.storage).toBeTruthy();
    expect(ofKind(objects, 'PodDisruptionBudget')).toEqual([]);
    // Its inventory: SQLite in the data dir on that volume.
    const env = Object.fromEntries((mainContainer(d).env ?? []).filter((e) => e.value !== undefined).map((e) => [e.name, e.value!]));
    expect(loadConfigFile(join(ROOT, 'deploy/kubernetes/base/config.yaml'), env).config.inventory.store).toBe('sqlite');
  });
});

withKubectl('kustomization ha-postgres', () => {
  let objects: K8sObject[] = [];
  beforeAll(() => {
    requireTool(KUBECTL);
    objects = render(KUSTOMIZATIONS['ha-postgres']);
  });

  it('runs 3 replicas with the PostgreSQL URL from a Secret (never a literal) and keeps 2 through drains', () => {
    const d = meshcertDeployment(objects);
    expect(d.spec.replicas).toBe(3);
    expect(d.spec.strategy?.type ?? 'RollingUpdate').toBe('RollingUpdate');
    const url = mainContainer(d).env?.find((e) => e.name === 'MESHCERT_INVENTORY_URL');
    expect(url?.value, 'no literal URL (it holds a password)').toBeUndefined();
    expect(url?.valueFrom?.secretKeyRef).toEqual({ name: 'meshcert-postgres', key: 'url' });
    const env = { ...Object.fromEntries((mainContainer(d).env ?? []).filter((e) => e.value !== undefined).map((e) => [e.name, e.value!])), MESHCERT_INVENTORY_URL: 'postgres://u@db/meshcert' };
    expect(loadConfigFile(join(ROOT, 'deploy/kubernetes/base/config.yaml'), env).config.inventory).toMatchObject({ store: 'postgres', url: 'postgres://u@db/meshcert' });
    expect(only<Pdb>(objects, 'PodDisruptionBudget', 'meshcert').spec.minAvailable).toBe(2);
    expect(volumeAt(d, '/var/run/meshcert').volume.emptyDir).toBeDefined();
    // The Secret is the user's to create: the overlay must not ship a placeholder password.
    expect(ofKind(objects, 'Secret')).toEqual([]);
  });
});

withKubectl('kustomization ha-postgres-discovery', () => {
  interface CronJob extends K8sObject {
    spec: { schedule: string; concurrencyPolicy?: string; jobTemplate: { spec: { template: { metadata?: { labels?: Record<string, string> }; spec: Deployment['spec']['template']['spec'] } } } };
  }
  let objects: K8sObject[] = [];
  beforeAll(() => {
    requireTool(KUBECTL);
    objects = render(KUSTOMIZATIONS['ha-postgres-discovery']);
  });

  it('runs `discover --k8s-secrets` hourly, one run at a time, as its own account, on the server image, config and inventory', () => {
    const job = only<CronJob>(objects, 'CronJob', 'meshcert-discovery');
    expect(job.spec.concurrencyPolicy).toBe('Forbid');
    expect(job.spec.schedule).toMatch(/^\d+ \* \* \* \*$/);
    const pod = job.spec.jobTemplate.spec.template.spec;
    expect(pod.serviceAccountName).toBe('meshcert-discovery');
    expect(pod.serviceAccountName).not.toBe(meshcertDeployment(objects).spec.template.spec.serviceAccountName);
    expect(job.spec.jobTemplate.spec.template.metadata?.labels?.['sidecar.istio.io/inject']).toBe('false');
    const [c, ...more] = pod.containers;
    expect(more).toEqual([]);
    expect(c!.args).toEqual(['discover', '--k8s-secrets', '--forget-gone', '--config', CONFIG_PATH]);
    expect(c!.image, 'the server image, tag included').toBe(mainContainer(meshcertDeployment(objects)).image);
    const sc = c!.securityContext!;
    expect([sc.readOnlyRootFilesystem, sc.allowPrivilegeEscalation, sc.runAsNonRoot, sc.runAsUser, sc.capabilities?.drop, sc.seccompProfile?.type]).toEqual([true, false, true, RUN_AS, ['ALL'], 'RuntimeDefault']);
    // The server's generated ConfigMap (its hashed name), and its PostgreSQL URL from the same Secret.
    const configVolume = pod.volumes?.find((v) => v.name === c!.volumeMounts?.find((m) => m.mountPath === posix.dirname(CONFIG_PATH))?.name);
    expect(configVolume?.configMap?.name).toBe(volumeAt(meshcertDeployment(objects), posix.dirname(CONFIG_PATH)).volume.configMap?.name);
    const serverEnv = mainContainer(meshcertDeployment(objects)).env ?? [];
    for (const name of ['MESHCERT_INVENTORY_STORE', 'MESHCERT_INVENTORY_URL']) {
      expect(serverEnv.find((e) => e.name === name), name).toBeDefined();
      expect(c!.env?.find((e) => e.name === name), name).toEqual(serverEnv.find((e) => e.name === name));
    }
    // Locked down like the server's pod, and no retries (a bad Secret fails every run alike).
    expect([pod.hostNetwork ?? false, pod.hostPID ?? false, pod.hostIPC ?? false, pod.securityContext?.runAsNonRoot, pod.securityContext?.seccompProfile?.type]).toEqual([false, false, false, true, 'RuntimeDefault']);
    expect((pod.volumes ?? []).filter((v) => v.hostPath !== undefined)).toEqual([]);
    expect([sc.privileged ?? false, sc.capabilities?.add ?? []]).toEqual([false, []]);
    expect((job.spec.jobTemplate.spec as { backoffLimit?: number }).backoffLimit).toBe(0);
    expect(job.metadata.labels?.['app.kubernetes.io/part-of']).toBe('meshcert');
  });

  it("runs the server's image wherever that is set: no image setting of its own", () => {
    const overlay = parseYaml(readFileSync(join(KUSTOMIZE_ROOT, KUSTOMIZATIONS['ha-postgres-discovery'], 'kustomization.yaml'), 'utf8')) as { images?: unknown };
    expect(overlay.images).toBeUndefined();
    // The image set one level down, on the server's overlay (as the install steps do): the CronJob,
    // added above it, follows (an images: entry applies only to the objects of its own level and below).
    const dir = mkdtempSync(join(tmpdir(), 'meshcert-kustomize-'));
    try {
      const server = join(dir, 'server');
      const withDiscovery = join(dir, 'with-discovery');
      mkdirSync(server);
      mkdirSync(withDiscovery);
      // kustomize takes bases by relative path only.
      const head = ['apiVersion: kustomize.config.k8s.io/v1beta1', 'kind: Kustomization', 'resources:'];
      writeFileSync(join(server, 'kustomization.yaml'), [...head, `  - ${relative(server, KUSTOMIZE_ROOT)}/overlays/ha-postgres`, 'images:', '  - name: meshcert', '    newName: registry.example/meshcert', '    newTag: 9.9.9', ''].join('\n'));
      writeFileSync(join(withDiscovery, 'kustomization.yaml'), [...head, '  - ../server', 'components:', `  - ${relative(withDiscovery, KUSTOMIZE_ROOT)}/components/discovery`, ''].join('\n'));
      const rendered = renderAbsolute(withDiscovery);
      const job = only<CronJob>(rendered, 'CronJob', 'meshcert-discovery');
      expect(mainContainer(meshcertDeployment(rendered)).image).toBe('registry.example/meshcert:9.9.9');
      expect(job.spec.jobTemplate.spec.template.spec.containers[0]!.image).toBe('registry.example/meshcert:9.9.9');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

withKubectl('component monitoring (Prometheus Operator), added to the base', () => {
  interface ServiceMonitor extends K8sObject {
    spec: { selector: { matchLabels: Record<string, string> }; namespaceSelector: { matchNames: string[] }; endpoints: { port: string; path: string; scrapeTimeout?: string }[] };
  }
  interface Service extends K8sObject {
    spec: { selector: Record<string, string>; ports: { name: string; port: number; targetPort: string | number }[] };
  }
  let objects: K8sObject[] = [];
  beforeAll(() => {
    objects = renderWithComponent(KUSTOMIZATIONS.base, 'monitoring');
  });

  itWithModels('renders a ServiceMonitor, a PrometheusRule and the dashboard ConfigMap that match their schemas, beside the base unchanged', async () => {
    requireTool(MODELS);
    const added = objects.filter((o) => o.apiVersion.startsWith('monitoring.coreos.com/') || o.metadata.name === 'meshcert-grafana-dashboard');
    expect(added.map(ref).sort()).toEqual(['ConfigMap meshcert/meshcert-grafana-dashboard', 'PrometheusRule meshcert/meshcert', 'ServiceMonitor meshcert/meshcert']);
    for (const o of added) await validateSchema(o);
    for (const o of added) expect(o.metadata.labels?.['app.kubernetes.io/part-of'], ref(o)).toBe('meshcert');
    // The base's objects as they were, but for the Deployment's prometheus.io annotations (next test).
    const withoutScrapeAnnotations = (o: K8sObject): K8sObject => {
      if (o.kind !== 'Deployment') return o;
      const d = structuredClone(o) as Deployment;
      const a = d.spec.template.metadata.annotations ?? {};
      for (const k of Object.keys(a)) if (k.startsWith('prometheus.io/')) delete a[k];
      return d;
    };
    expect(objects.filter((o) => !added.includes(o)).map(withoutScrapeAnnotations)).toEqual(render(KUSTOMIZATIONS.base).map(withoutScrapeAnnotations));
  });

  it("scrapes every replica on the Service's admin port, in meshcert's namespace, within the per-worker answer time", () => {
    const monitor = only<ServiceMonitor>(objects, 'ServiceMonitor', 'meshcert');
    const service = only<Service>(objects, 'Service', 'meshcert');
    expect(selects(monitor.spec.selector.matchLabels, service.metadata.labels)).toBe(true);
    expect(monitor.spec.namespaceSelector.matchNames).toEqual([service.metadata.namespace]);
    const [endpoint, ...more] = monitor.spec.endpoints;
    expect(more).toEqual([]);
    expect(endpoint!.path).toBe('/metrics');
    const port = service.spec.ports.find((p) => p.name === endpoint!.port);
    expect(port?.port, 'the endpoint names a Service port').toBe(ADMIN_PORT);
    expect(resolvePort(mainContainer(meshcertDeployment(objects)), port!.targetPort)).toBe(ADMIN_PORT);
    // Each worker has 2 s to answer a scrape; the timeout leaves room for that and the primary.
    expect(Number(/^(\d+)s$/.exec(endpoint!.scrapeTimeout ?? '')?.[1])).toBeGreaterThanOrEqual(3);
  });

  it("ships the dashboard in a ConfigMap Grafana's sidecar loads (label grafana_dashboard), under a fixed name", () => {
    const map = only<K8sObject & { data: Record<string, string> }>(objects, 'ConfigMap', 'meshcert-grafana-dashboard');
    expect(map.metadata.labels).toMatchObject({ grafana_dashboard: '1' });
    expect(Object.keys(map.data)).toEqual(['meshcert.json']);
    expect(JSON.parse(map.data['meshcert.json']!)).toEqual(loadDashboard());
  });

  it("drops the base's prometheus.io annotations (a Prometheus scraping by annotation too would read each replica twice), and nothing else", () => {
    const annotations = (objs: readonly K8sObject[]): Record<string, string> => meshcertDeployment(objs).spec.template.metadata.annotations ?? {};
    const base = annotations(render(KUSTOMIZATIONS.base));
    expect(Object.keys(base).filter((k) => k.startsWith('prometheus.io/')).length).toBe(3);
    expect(annotations(objects)).toEqual(Object.fromEntries(Object.entries(base).filter(([k]) => !k.startsWith('prometheus.io/'))));
  });
});

withKubectl('component priority, added to the overlay with the discovery CronJob', () => {
  interface PriorityClass extends K8sObject {
    value: number;
    globalDefault?: boolean;
    preemptionPolicy?: string;
    description?: string;
  }
  const POD_SPEC_FIELD = 'priorityClassName';
  let objects: K8sObject[] = [];
  beforeAll(() => {
    objects = renderWithComponent(KUSTOMIZATIONS['ha-postgres-discovery'], 'priority');
  });

  itWithModels('renders a PriorityClass of its own that matches its schema, above ordinary pods, below the system classes, never a global default', async () => {
    requireTool(MODELS);
    const classes = objects.filter((o) => o.kind === 'PriorityClass') as PriorityClass[];
    expect(classes.map(ref)).toEqual(['PriorityClass meshcert-critical']);
    const pc = classes[0]!;
    await validateSchema(pc);
    expect(pc.metadata.namespace).toBeUndefined(); // cluster-scoped
    expect(pc.value).toBeGreaterThan(0);
    // The API server refuses a user class above 1,000,000,000 (the system classes are 2,000,000,000 and up).
    expect(pc.value).toBeLessThanOrEqual(1_000_000_000);
    expect(pc.globalDefault ?? false).toBe(false);
    expect(pc.preemptionPolicy).toBe('PreemptLowerPriority');
    expect(pc.metadata.labels?.['app.kubernetes.io/part-of']).toBe('meshcert');
  });

  it("gives the server's pods that class, and nothing else changes: the discovery CronJob keeps the default priority", () => {
    const pc = objects.find((o) => o.kind === 'PriorityClass')!;
    const spec = meshcertDeployment(objects).spec.template.spec as unknown as Record<string, unknown>;
    expect(spec[POD_SPEC_FIELD]).toBe(pc.metadata.name);
    const without = (o: K8sObject): K8sObject => {
      if (o.kind !== 'Deployment') return o;
      const d = structuredClone(o) as Deployment;
      delete (d.spec.template.spec as unknown as Record<string, unknown>)[POD_SPEC_FIELD];
      return d;
    };
    expect(objects.filter((o) => o !== pc).map(without)).toEqual(render(KUSTOMIZATIONS['ha-postgres-discovery']));
    const job = objects.find((o) => o.kind === 'CronJob') as K8sObject & { spec: { jobTemplate: { spec: { template: { spec: Record<string, unknown> } } } } };
    expect(job.spec.jobTemplate.spec.template.spec[POD_SPEC_FIELD]).toBeUndefined();
  });
});

withKubectl('component ambient, added to each overlay', () => {
  /**
   * The server's config as the container reads it: the base config.yaml under the container's
   * MESHCERT_* variables (one from a Secret, the PostgreSQL URL, as a stand-in URL).
   */
  function serverConfig(objects: readonly K8sObject[]): MeshcertConfig {
    const vars = (mainContainer(meshcertDeployment(objects)).env ?? []).filter((e) => e.name.startsWith('MESHCERT_'));
    const env = Object.fromEntries(vars.map((e) => [e.name, e.valueFrom?.secretKeyRef ? 'postgres://from-secret.invalid/meshcert' : (e.value ?? '')]));
    return loadConfigFile(join(ROOT, 'deploy/kubernetes/base/config.yaml'), env).config;
  }

  it.each(['ha-postgres', 'standalone-sqlite'] as const)("%s: turns ambient mode on, trusting ztunnel's ServiceAccount, and changes nothing else", (overlay) => {
    const plain = render(KUSTOMIZATIONS[overlay]);
    expect(serverConfig(plain).ambient.enabled).toBe(false);
    const objects = renderWithComponent(KUSTOMIZATIONS[overlay], 'ambient');
    const config = serverConfig(objects);
    expect(config.ambient.enabled).toBe(true);
    // The ambient profile runs ztunnel as this ServiceAccount (deploy/istio/ambient.yaml keeps its namespace).
    expect(config.ambient.trustedNodeAccounts).toContain(`${ISTIO_NAMESPACE}/ztunnel`);
    const without = (o: K8sObject): K8sObject => {
      if (o.kind !== 'Deployment') return o;
      const d = structuredClone(o) as Deployment;
      const c = mainContainer(d);
      c.env = c.env?.filter((e) => e.name !== 'MESHCERT_AMBIENT_ENABLED');
      return d;
    };
    expect(objects.map(without)).toEqual(plain);
  });
});

// =============================================================================================

describe('deploy/istio install files (no kubectl needed)', () => {
  interface IstioOperator {
    apiVersion: string;
    kind: string;
    metadata?: { namespace?: string };
    spec: {
      profile?: string;
      meshConfig?: { trustDomain?: string };
      values?: {
        global?: { caAddress?: string };
        pilot?: { env?: Record<string, unknown> };
        ztunnel?: { caAddress?: string };
      };
      components?: { pilot?: { k8s?: { env?: { name: string; value?: unknown }[] } } };
    };
  }

  function load(file: string): IstioOperator {
    const text = readFileSync(join(ROOT, 'deploy/istio', file), 'utf8');
    const docs = parseAllDocuments(text);
    expect(docs, `${file}: one YAML document`).toHaveLength(1);
    expect(docs[0]!.errors).toEqual([]);
    return docs[0]!.toJS() as IstioOperator;
  }

  function enableCaServer(op: IstioOperator): unknown {
    const fromValues = op.spec.values?.pilot?.env?.ENABLE_CA_SERVER;
    const fromK8s = op.spec.components?.pilot?.k8s?.env?.find((e) => e.name === 'ENABLE_CA_SERVER')?.value;
    return fromValues ?? fromK8s;
  }

  it.each(['sidecar.yaml', 'ambient.yaml'])('%s points istio-agent at the meshcert Service and turns istiod\'s CA off', (file) => {
    const op = load(file);
    const { address, host } = expectedCaAddress();
    const config = baseConfig();
    expect(op.apiVersion).toBe('install.istio.io/v1alpha1');
    expect(op.kind).toBe('IstioOperator');
    expect(op.metadata?.namespace).toBe(ISTIO_NAMESPACE);
    expect(address).toBe('meshcert.meshcert.svc:443');
    expect(op.spec.values?.global?.caAddress).toBe(address);
    // The agent checks the host part as the TLS server name: meshcert must serve a certificate for it.
    expect(config.server.tls.dnsNames).toContain(host);
    // A string: Kubernetes env values are strings, and istioctl rejects a bare boolean here.
    expect(enableCaServer(op)).toBe('false');
    expect(op.spec.meshConfig?.trustDomain ?? 'cluster.local').toBe(config.trustDomain);
  });

  it('sidecar.yaml is not the ambient profile', () => {
    expect(load('sidecar.yaml').spec.profile).not.toBe('ambient');
  });

  it('ambient.yaml uses the ambient profile and points ztunnel at meshcert too', () => {
    // Its instructions deploy meshcert with the component that turns ambient mode on.
    expect(readFileSync(join(ROOT, 'deploy/istio/ambient.yaml'), 'utf8')).toContain('components/ambient');
    const op = load('ambient.yaml');
    expect(op.spec.profile).toBe('ambient');
    expect(op.spec.values?.ztunnel?.caAddress).toBe(expectedCaAddress().address);
  });

  it('README.md explains both files', () => {
    const readme = readFileSync(join(ROOT, 'deploy/istio/README.md'), 'utf8');
    for (const f of readdirSync(join(ROOT, 'deploy/istio')).filter((x) => x.endsWith('.yaml'))) expect(readme).toContain(f);
  });
});

describe('Dockerfile (static checks: no container engine here)', () => {
  const text = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
  // Join continuation lines, drop comments and blank lines.
  const lines = text
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
  const stages: { from: string; lines: string[] }[] = [];
  for (const l of lines) {
    if (/^FROM\s/i.test(l)) stages.push({ from: l, lines: [] });
    else stages.at(-1)?.lines.push(l);
  }

  it('builds on node:20-bookworm-slim and runs on distroless nodejs20-debian12 (same Debian 12 glibc and Node ABI for better-sqlite3)', () => {
    expect(stages).toHaveLength(2);
    expect(stages[0]!.from).toMatch(/^FROM node:20-bookworm-slim AS build$/i);
    expect(stages[1]!.from).toMatch(/^FROM gcr\.io\/distroless\/nodejs20-debian12:nonroot$/i);
    const build = stages[0]!.lines.join('\n');
    expect(build).toMatch(/apt-get install[^\n]*\bpython3\b[^\n]*\bmake\b[^\n]*\bg\+\+/);
    expect(build).toMatch(/RUN npm ci\b/);
    expect(build).toMatch(/npm run build/);
    expect(build).toMatch(/npm prune --omit=dev/);
  });

  it('runs as 65532 with the CLI entrypoint and the Deployment\'s default args', () => {
    const runtime = stages[1]!.lines;
    expect(runtime).toContain('USER 65532:65532');
    const entry = runtime.find((l) => l.startsWith('ENTRYPOINT '));
    expect(JSON.parse(entry!.slice('ENTRYPOINT '.length))).toEqual(['/nodejs/bin/node', '/app/dist/cli.js']);
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { bin: Record<string, string> };
    expect(`/app/${pkg.bin.meshcert}`).toBe('/app/dist/cli.js');
    const cmd = runtime.find((l) => l.startsWith('CMD '));
    expect(JSON.parse(cmd!.slice('CMD '.length))).toEqual(SERVE_ARGS);
    const deployment = readYamlFile<Deployment>('deploy/kubernetes/base/deployment.yaml');
    expect(deployment.spec.template.spec.containers[0]!.args).toEqual(SERVE_ARGS);
  });

  it('copies dist, node_modules, package.json and proto (read at run time) into the runtime image', () => {
    const copied = stages[1]!.lines
      .filter((l) => l.startsWith('COPY --from=build '))
      .map((l) => l.split(/\s+/)[2]);
    expect(copied.sort()).toEqual(['/app/dist', '/app/node_modules', '/app/package.json', '/app/proto']);
    // src/grpc/proto.ts loads ../../proto/ relative to dist/grpc/.
    expect(readFileSync(join(ROOT, 'src/grpc/proto.ts'), 'utf8')).toContain("new URL('../../proto/', import.meta.url)");
  });

  it('.dockerignore lets in everything the build stage copies, and keeps node_modules and dist out', () => {
    const ignored = readFileSync(join(ROOT, '.dockerignore'), 'utf8')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l !== '' && !l.startsWith('#'));
    expect(ignored).toEqual(expect.arrayContaining(['node_modules', 'dist', '.git']));
    const sources = stages[0]!.lines
      .filter((l) => l.startsWith('COPY ') && !l.startsWith('COPY --from'))
      .flatMap((l) => l.split(/\s+/).slice(1, -1));
    expect(sources.length).toBeGreaterThan(0);
    for (const s of sources) {
      expect(existsSync(join(ROOT, s)), `${s} exists`).toBe(true);
      const top = s.split('/')[0]!;
      expect(ignored.some((p) => p === top || p === s || (p.endsWith('*') && top.startsWith(p.slice(0, -1)))), `${s} is not in .dockerignore`).toBe(false);
    }
  });
});
