import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import type { MeshcertConfig } from '../config/schema.js';
import { istiodDnsNameOptions } from '../config/istiod-names.js';
import { fromKubeSettings, kubeSource } from '../k8s/source.js';
import type { IssuerRegistry } from '../issuer/registry.js';
import type { Logger } from '../log/logger.js';
import { ISTIOD_TLS_REQUESTER, ownCertificateRecorder } from '../inventory/sink.js';
import type { CertificateRecord } from '../inventory/types.js';
import type { ControllerStatusView } from '../metrics/ca-metrics.js';

export interface RunningControllers {
  /** Call after a reload changed the CAs: the root bundle is pushed out at once. */
  onRootBundleChanged(): void;
  /** Leadership and each controller's counts, for the metrics. */
  status(): ControllerStatusView;
  stop(): Promise<void>;
}

const NAMESPACE_FILE = '/var/run/secrets/kubernetes.io/serviceaccount/namespace';

/**
 * What istiod does itself when its CA is on, and stops doing when it is off: distribute the root
 * bundle (ConfigMap istio-ca-root-cert) and make istiod's serving certificate (Secret istiod-tls).
 * One set per replica, in the process that owns the inventory; only the Lease holder writes.
 * Loaded on demand so meshes that do not use them never load the Kubernetes client.
 */
export async function startControllers(
  config: MeshcertConfig,
  issuers: () => IssuerRegistry,
  logger: Logger,
  /** The inventory's intake: istiod's certificates are recorded as every workload's are. */
  record?: (rec: CertificateRecord) => void,
): Promise<RunningControllers | undefined> {
  const { rootCertConfigMap, istiodTls } = config.istio;
  if (!rootCertConfigMap.enabled && !istiodTls.enabled) return undefined;
  const [{ createKubeClient, PROMPT_WATCH }, { LeaderElector }, { RootCertDistributor }, { IstiodTlsController }, { localServingCertIssuer }] = await Promise.all([
    import('../k8s/client.js'),
    import('../controllers/leader.js'),
    import('../controllers/root-distribution.js'),
    import('../controllers/istiod-tls.js'),
    import('../controllers/serving-issuer.js'),
  ]);
  // A new namespace's root ConfigMap must not wait ten minutes for a silent watch to be noticed.
  const kube = fromKubeSettings(() => createKubeClient(kubeSource(config), { watch: PROMPT_WATCH }));
  const le = config.leaderElection;
  const namespace = le.namespace ?? process.env.MESHCERT_POD_NAMESPACE ?? readNamespace() ?? 'meshcert';
  const identity = process.env.MESHCERT_POD_NAME ?? hostname();
  const rootBundle = (): string => issuers().rootBundlePem;
  const ctl: { root?: InstanceType<typeof RootCertDistributor>; tls?: InstanceType<typeof IstiodTlsController> } = {};
  const elector = new LeaderElector({
    kube,
    namespace,
    identity,
    name: le.leaseName,
    leaseDurationMs: le.leaseDuration * 1000,
    renewDeadlineMs: le.renewDeadline * 1000,
    retryPeriodMs: le.retryPeriod * 1000,
    log: logger,
    onStartedLeading: () => {
      logger.info({ identity, lease: `${namespace}/${le.leaseName}` }, 'leader: this replica now writes root ConfigMaps and istiod-tls');
      ctl.root?.onStartedLeading();
      ctl.tls?.onStartedLeading();
    },
    onStoppedLeading: () => logger.info({ identity }, 'no longer leader'),
  });
  const isLeader = (): boolean => elector.isLeader;
  if (rootCertConfigMap.enabled) {
    ctl.root = new RootCertDistributor({
      kube,
      rootBundle,
      isLeader,
      ...(rootCertConfigMap.namespaceSelector ? { namespaceSelector: rootCertConfigMap.namespaceSelector } : {}),
      excludeNamespaces: [...rootCertConfigMap.excludeNamespaces],
      log: logger,
    });
    ctl.root.start();
  }
  if (istiodTls.enabled) {
    ctl.tls = new IstiodTlsController({
      kube,
      isLeader,
      rootBundle,
      signer: () => issuers().default.material.signingCert,
      issue: localServingCertIssuer(() => issuers().default, { caBundle: rootBundle, ...(record ? { onIssued: ownCertificateRecorder(record, ISTIOD_TLS_REQUESTER, logger) } : {}) }),
      namespace: istiodTls.namespace,
      ...istiodDnsNameOptions(istiodTls),
      lifetimeSeconds: istiodTls.lifetime,
      log: logger,
    });
    ctl.tls.start();
  }
  elector.start();
  return {
    onRootBundleChanged() {
      ctl.root?.onRootBundleChanged();
      ctl.tls?.onRootBundleChanged();
    },
    status() {
      return {
        leader: elector.isLeader,
        ...(ctl.root ? { rootConfigMaps: ctl.root.status() } : {}),
        ...(ctl.tls ? { istiodTls: ctl.tls.status() } : {}),
      };
    },
    async stop() {
      // Stop writing before giving up the Lease, so two replicas never write at once; the two
      // controllers together, so a slow API server costs the pod's grace period once, not twice.
      await Promise.all([ctl.root?.stop(), ctl.tls?.stop()]);
      await elector.stop();
    },
  };
}

function readNamespace(): string | undefined {
  try {
    return readFileSync(NAMESPACE_FILE, 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}
