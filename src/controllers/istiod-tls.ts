/**
 * Issues and renews istiod's serving certificate: Secret `istiod-tls` (type kubernetes.io/tls) in
 * istiod's namespace, keys `tls.crt` (leaf + intermediates), `tls.key`, `ca.crt` (root bundle).
 * With its CA off (ENABLE_CA_SERVER=false) istiod serves XDS and its webhooks with this pair and
 * stops minting its own (PROTOCOL §5).
 *
 * DNS names (istiodDnsNames, src/config/istiod-names.ts): for `istiod` and each revision's
 * `istiod-<rev>`: NAME, NAME.<ns>, NAME.<ns>.svc, plus NAME.<ns>.svc.<clusterDomain> when
 * clusterDomain is set, plus extraDnsNames.
 *
 * The Secret is reissued when it is missing; lacks a key; tls.crt or tls.key does not parse or do
 * not match; the DNS names differ; the chain in tls.crt does not verify to ca.crt; ca.crt is not
 * the current root bundle (root rotation: onRootBundleChanged()); or less than renewBeforeRatio
 * (1/3) of the certificate's lifetime is left. Checked every checkIntervalMs (1 min), on every
 * change of the Secret (an optional watch on that one name) and when leadership is gained.
 * Only the leader checks and writes. Writes carry the read resourceVersion (409: read again and
 * write the same, already issued, material). An existing Secret keeps its other keys, labels and
 * annotations; a Secret of another type keeps its type (type is immutable; a warning says so).
 * Failures are retried with exponential backoff. The private key is never logged.
 *
 * RBAC in `namespace`: secrets get/update on resourceNames [istiod-tls], secrets create; for the
 * watch also list/watch on resourceNames [istiod-tls] (without them, set watch: false; the periodic
 * check still repairs a deleted or edited Secret within checkIntervalMs).
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import type { V1Secret } from '@kubernetes/client-node';
import type { KubeClient, WatchOptions } from '../k8s/client.js';
import { bundleKey, PEM_CERT, pemCerts } from './bundle-key.js';
import { explainKubeError, InformerRunner, isConflict, isNotFound, makeNamedSecretInformer, type ControllerLog } from './kube-util.js';
import { istiodDnsNames, type IstiodDnsNameOptions } from '../config/istiod-names.js';
import { signedBy } from '../x509/verify-chain.js';
import { serialHex } from '../x509/serial-hex.js';

export const ISTIOD_TLS_SECRET = 'istiod-tls';
export const DEFAULT_ISTIOD_NAMESPACE = 'istio-system';
export const TLS_SECRET_TYPE = 'kubernetes.io/tls';
const MANAGED_BY_LABEL = 'app.kubernetes.io/managed-by';

export interface IssuedServingCert {
  /** Leaf first, then intermediates (PEM). */
  readonly certChainPem: string;
  /** PKCS#8 PEM private key of the leaf. */
  readonly keyPem: string;
  /** The root bundle the chain verifies to (PEM). */
  readonly caPem: string;
  readonly notAfter: Date;
}

/** Issues a serving certificate for `dnsNames`; meshcert passes one backed by its CA. */
export type ServingCertIssuer = (dnsNames: string[], lifetimeSeconds: number) => Promise<IssuedServingCert>;

export interface IstiodTlsOptions extends IstiodDnsNameOptions {
  readonly kube: Pick<KubeClient, 'core' | 'kubeConfig'>;
  readonly issue: ServingCertIssuer;
  /** The current root bundle (PEM); ca.crt must equal it. */
  readonly rootBundle: () => string;
  /**
   * The certificate that signs now (the default issuer's). A Secret signed by another is reissued:
   * after a rotation's switch the bundle is unchanged, but the old intermediate's certificate
   * must be replaced before the old root leaves the bundle.
   */
  readonly signer?: () => X509Certificate;
  readonly isLeader: () => boolean;
  /** istiod's namespace. Default istio-system. */
  readonly namespace?: string;
  /** Default istiod-tls. */
  readonly secretName?: string;
  /** Requested lifetime. Default 30 days. */
  readonly lifetimeSeconds?: number;
  /** Renew when less than this fraction of the lifetime is left. Default 1/3. */
  readonly renewBeforeRatio?: number;
  /** Periodic check. Default 60000 ms. */
  readonly checkIntervalMs?: number;
  /** Watch the Secret for edits and deletion (needs list/watch RBAC on it). Default true. */
  readonly watch?: boolean;
  readonly watchOptions?: WatchOptions;
  /** Retry backoff after a failed issue or write. Defaults 1000 ms, 300000 ms. */
  readonly retryBaseMs?: number;
  readonly retryMaxMs?: number;
  readonly now?: () => number;
  readonly log?: ControllerLog | undefined;
}

export interface IstiodTlsStatus {
  readonly dnsNames: readonly string[];
  /** NotAfter of the certificate last seen or written by this replica. */
  readonly notAfter: Date | undefined;
  readonly issued: number;
  readonly failures: number;
  readonly lastError: string | undefined;
}

/** What is wrong with the Secret (undefined: nothing, it is current). Exported for tests. */
export interface SecretCheck {
  readonly reason: string | undefined;
  readonly notAfter: Date | undefined;
}

function dnsSans(cert: X509Certificate): string[] {
  const san = cert.subjectAltName ?? '';
  return san
    .split(', ')
    .filter((e) => e.startsWith('DNS:'))
    .map((e) => e.slice(4))
    .sort();
}

const decode = (v: string | undefined): string | undefined => (v === undefined ? undefined : Buffer.from(v, 'base64').toString('utf8'));
const encode = (s: string): string => Buffer.from(s, 'utf8').toString('base64');

export class IstiodTlsController {
  readonly namespace: string;
  readonly secretName: string;
  readonly dnsNames: readonly string[];
  private readonly opts: IstiodTlsOptions;
  private readonly log: ControllerLog | undefined;
  private readonly now: () => number;
  private readonly lifetimeSeconds: number;
  private readonly renewBeforeRatio: number;
  private readonly retryBaseMs: number;
  private readonly retryMaxMs: number;
  private readonly watcher: InformerRunner<V1Secret> | undefined;

  private timer: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private rerun = false;
  private started = false;
  private stopped = false;
  private consecutiveFailures = 0;
  private issued = 0;
  private failures = 0;
  private lastError: string | undefined;
  private lastNotAfter: Date | undefined;
  private typeWarned = false;
  /** Issued but not yet written (a write failed): reused while it still fits. */
  private pending: { issued: IssuedServingCert; rootKey: string } | undefined;
  /** The issuer's ca bundle at the last issue, when it differed from rootBundle(): accepted as current. */
  private acceptedCa: { rootKey: string; caKey: string } | undefined;

  constructor(opts: IstiodTlsOptions) {
    this.opts = opts;
    this.log = opts.log;
    this.now = opts.now ?? Date.now;
    this.namespace = opts.namespace ?? DEFAULT_ISTIOD_NAMESPACE;
    this.secretName = opts.secretName ?? ISTIOD_TLS_SECRET;
    this.dnsNames = istiodDnsNames(this.namespace, opts);
    this.lifetimeSeconds = opts.lifetimeSeconds ?? 30 * 86_400;
    this.renewBeforeRatio = opts.renewBeforeRatio ?? 1 / 3;
    this.retryBaseMs = opts.retryBaseMs ?? 1_000;
    this.retryMaxMs = opts.retryMaxMs ?? 300_000;
    if (!(this.lifetimeSeconds > 0)) throw new Error('istiod-tls lifetime must be positive');
    if (!(this.renewBeforeRatio > 0 && this.renewBeforeRatio < 1)) throw new Error('renewBeforeRatio must be between 0 and 1');
    if (opts.watch ?? true) {
      const informer = makeNamedSecretInformer(opts.kube, this.namespace, this.secretName, opts.watchOptions);
      this.watcher = new InformerRunner(informer, {
        name: `secret ${this.namespace}/${this.secretName}`,
        verbs: `list and watch secret ${this.secretName} in namespace ${this.namespace}`,
        log: opts.log,
        stopOnForbidden: true,
      });
      const onChange = (): void => {
        if (this.watcher?.synced && this.opts.isLeader()) this.trigger();
      };
      informer.on('update', onChange);
      informer.on('delete', onChange);
      informer.on('add', onChange);
    }
  }

  start(): void {
    if (this.started || this.stopped) return;
    this.started = true;
    this.watcher?.start();
    const every = this.opts.checkIntervalMs ?? 60_000;
    this.timer = setInterval(() => this.trigger(), every);
    this.timer.unref();
    this.trigger();
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    clearInterval(this.timer);
    clearTimeout(this.retryTimer);
    await this.watcher?.stop();
    await this.running?.catch(() => undefined);
  }

  /** Checks (and if needed reissues) now; resolves when that check is done. */
  async reconcileNow(): Promise<void> {
    this.trigger();
    while (this.running) await this.running.catch(() => undefined);
  }

  /** Call after the root bundle changed: ca.crt must follow, and the leaf is reissued. */
  onRootBundleChanged(): void {
    this.trigger();
  }

  /** Wire to LeaderElector's onStartedLeading. */
  onStartedLeading(): void {
    this.trigger();
  }

  status(): IstiodTlsStatus {
    return { dnsNames: this.dnsNames, notAfter: this.lastNotAfter, issued: this.issued, failures: this.failures, lastError: this.lastError };
  }

  /** Runs one check, or schedules one more after the running one. */
  private trigger(): void {
    if (this.stopped || !this.started) return;
    if (this.running) {
      this.rerun = true;
      return;
    }
    this.running = this.loop().finally(() => {
      this.running = undefined;
    });
  }

  private async loop(): Promise<void> {
    do {
      this.rerun = false;
      if (this.stopped || !this.opts.isLeader()) return;
      try {
        await this.reconcile();
        this.consecutiveFailures = 0;
        clearTimeout(this.retryTimer);
        this.retryTimer = undefined;
      } catch (err) {
        this.failures++;
        this.consecutiveFailures++;
        const delay = Math.min(this.retryMaxMs, this.retryBaseMs * 2 ** Math.min(this.consecutiveFailures - 1, 30));
        this.lastError = explainKubeError(err, `get, create and update secret ${this.secretName} in namespace ${this.namespace}`);
        this.log?.warn({ secret: `${this.namespace}/${this.secretName}`, error: this.lastError, retryInMs: delay }, 'istiod serving certificate not reconciled; retrying');
        if (!this.retryTimer && !this.stopped) {
          this.retryTimer = setTimeout(() => {
            this.retryTimer = undefined;
            this.trigger();
          }, delay);
          this.retryTimer.unref();
        }
      }
    } while (this.rerun && !this.stopped);
  }

  /** Decides whether the Secret's content is current (pure; exported through check()). */
  check(secret: V1Secret | undefined): SecretCheck {
    if (!secret) return { reason: 'missing', notAfter: undefined };
    const crt = decode(secret.data?.['tls.crt']);
    const key = decode(secret.data?.['tls.key']);
    const ca = decode(secret.data?.['ca.crt']);
    if (!crt || !key || !ca) return { reason: `missing key ${!crt ? 'tls.crt' : !key ? 'tls.key' : 'ca.crt'}`, notAfter: undefined };
    let chain: X509Certificate[];
    let roots: X509Certificate[];
    try {
      chain = pemCerts(crt);
      roots = pemCerts(ca);
    } catch {
      return { reason: 'tls.crt or ca.crt does not parse', notAfter: undefined };
    }
    const leaf = chain[0];
    if (!leaf || roots.length === 0) return { reason: 'tls.crt or ca.crt holds no certificate', notAfter: undefined };
    const notAfter = new Date(leaf.validTo);
    try {
      if (!leaf.checkPrivateKey(createPrivateKey(key))) return { reason: 'tls.key does not match tls.crt', notAfter };
    } catch {
      return { reason: 'tls.key does not parse', notAfter };
    }
    if (dnsSans(leaf).join(',') !== [...this.dnsNames].sort().join(',')) return { reason: 'DNS names differ', notAfter };
    if (!this.caIsCurrent(ca)) return { reason: 'ca.crt is not the current root bundle', notAfter };
    if (!verifiesTo(chain, roots)) return { reason: 'tls.crt does not verify to ca.crt', notAfter };
    const signer = this.opts.signer?.();
    if (signer && !(leaf.checkIssued(signer) && leaf.verify(signer.publicKey))) return { reason: 'tls.crt is not signed by the current signing CA', notAfter };
    const from = new Date(leaf.validFrom).getTime();
    const to = notAfter.getTime();
    const renewAt = to - (to - from) * this.renewBeforeRatio;
    if (this.now() >= renewAt) return { reason: this.now() >= to ? 'expired' : 'due for renewal', notAfter };
    return { reason: undefined, notAfter };
  }

  private caIsCurrent(caPem: string): boolean {
    const rootKey = bundleKey(this.opts.rootBundle());
    const caKey = bundleKey(caPem);
    if (caKey === rootKey) return true;
    return this.acceptedCa !== undefined && this.acceptedCa.rootKey === rootKey && this.acceptedCa.caKey === caKey;
  }

  private async read(): Promise<V1Secret | undefined> {
    try {
      return await this.opts.kube.core.readNamespacedSecret({ namespace: this.namespace, name: this.secretName });
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  private async material(): Promise<IssuedServingCert> {
    const rootKey = bundleKey(this.opts.rootBundle());
    const p = this.pending;
    if (p && p.rootKey === rootKey) {
      const left = p.issued.notAfter.getTime() - this.now();
      if (left > this.lifetimeSeconds * 1000 * this.renewBeforeRatio * 1.5) return p.issued;
    }
    const issued = await this.opts.issue([...this.dnsNames], this.lifetimeSeconds);
    this.issued++;
    const caKey = bundleKey(issued.caPem);
    if (caKey !== rootKey) {
      this.acceptedCa = { rootKey, caKey };
      this.log?.warn({ secret: `${this.namespace}/${this.secretName}` }, 'the issuer returned a CA bundle different from the distributed root bundle; writing the issuer\'s');
    }
    this.pending = { issued, rootKey };
    return issued;
  }

  private async reconcile(): Promise<void> {
    const core = this.opts.kube.core;
    let secret = await this.read();
    const first = this.check(secret);
    if (first.reason === undefined) {
      this.lastNotAfter = first.notAfter;
      this.lastError = undefined;
      return;
    }
    const reason = first.reason;
    for (let round = 0; round < 4; round++) {
      if (this.stopped || !this.opts.isLeader()) return;
      const m = await this.material();
      const data = { 'tls.crt': encode(m.certChainPem), 'tls.key': encode(m.keyPem), 'ca.crt': encode(m.caPem) };
      let serial: string | undefined;
      try {
        serial = serialHex(new X509Certificate(m.certChainPem.match(PEM_CERT)?.[0] ?? '').serialNumber);
      } catch {
        serial = undefined;
      }
      const logFields = { secret: `${this.namespace}/${this.secretName}`, reason, dnsNames: this.dnsNames, serial, notAfter: m.notAfter.toISOString() };
      if (!this.opts.isLeader()) return;
      try {
        if (!secret) {
          await core.createNamespacedSecret({
            namespace: this.namespace,
            body: {
              apiVersion: 'v1',
              kind: 'Secret',
              metadata: { name: this.secretName, namespace: this.namespace, labels: { [MANAGED_BY_LABEL]: 'meshcert' } },
              type: TLS_SECRET_TYPE,
              data,
            },
          });
          this.log?.info(logFields, 'istiod serving certificate created');
        } else {
          if ((secret.type ?? TLS_SECRET_TYPE) !== TLS_SECRET_TYPE && !this.typeWarned) {
            this.typeWarned = true;
            this.log?.warn(
              { secret: `${this.namespace}/${this.secretName}`, type: secret.type },
              `the Secret has type ${secret.type}, not ${TLS_SECRET_TYPE}; its type cannot be changed (delete it to let meshcert recreate it)`,
            );
          }
          const body: V1Secret = {
            ...secret,
            apiVersion: 'v1',
            kind: 'Secret',
            metadata: { ...secret.metadata, labels: { ...(secret.metadata?.labels ?? {}), [MANAGED_BY_LABEL]: 'meshcert' } },
            data: { ...(secret.data ?? {}), ...data },
          };
          delete body.stringData;
          await core.replaceNamespacedSecret({ namespace: this.namespace, name: this.secretName, body });
          this.log?.info(logFields, 'istiod serving certificate renewed');
        }
        this.pending = undefined;
        this.lastNotAfter = m.notAfter;
        this.lastError = undefined;
        return;
      } catch (err) {
        // A 404 on create means the namespace does not exist: not worth re-reading.
        if (isConflict(err) || (isNotFound(err) && secret !== undefined)) {
          // Created or modified meanwhile (409), or deleted meanwhile (404): read it again. The
          // material already issued is written unless the Secret is now current.
          secret = await this.read();
          const again = this.check(secret);
          if (again.reason === undefined) {
            this.pending = undefined;
            this.lastNotAfter = again.notAfter;
            return;
          }
          continue;
        }
        throw err;
      }
    }
    throw new Error(`Secret ${this.namespace}/${this.secretName} kept changing under meshcert (repeated 409 Conflict)`);
  }
}

/** True when `chain` (leaf first) verifies link by link and ends at, or under, one of `roots`. */
function verifiesTo(chain: readonly X509Certificate[], roots: readonly X509Certificate[]): boolean {
  try {
    let cur = chain[0]!;
    for (const next of chain.slice(1)) {
      if (roots.some((r) => r.fingerprint256 === cur.fingerprint256)) return true;
      if (!signedBy(cur, next)) return false;
      cur = next;
    }
    if (roots.some((r) => r.fingerprint256 === cur.fingerprint256)) return true;
    return roots.some((r) => signedBy(cur, r));
  } catch {
    return false;
  }
}
