import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { X509Certificate } from 'node:crypto';
import { oneLine } from '../x509/names.js';
import type { IssuanceObserver } from '../authority/observer.js';
import { CA_ERROR_CODES, type CaErrorCode } from '../errors/ca-error.js';

/** A CA's certificates whose expiry the gauges report. */
export interface ExpiringCa {
  readonly name: string;
  readonly roots: readonly X509Certificate[];
  /** The signing certificate and the intermediates above it. */
  readonly intermediates: readonly X509Certificate[];
}

/**
 * meshcert's metrics. Istio's Citadel names come first so existing Istio dashboards and alerts
 * work unchanged; meshcert's own carry the `meshcert_` prefix. In multi-process mode each worker
 * registers these in prom-client's global registry and the primary aggregates them
 * (`aggregator` says how: counters sum, expiry timestamps take the earliest).
 */
export class CaMetrics {
  readonly registry: Registry;
  readonly csrCount: Counter;
  readonly success: Counter;
  readonly authnFailures: Counter;
  readonly csrParsingErrors: Counter;
  readonly idExtractionErrors: Counter;
  readonly signErrors: Counter<'error'>;
  readonly rootExpiryTimestamp: Gauge;
  readonly rootExpirySeconds: Gauge;
  readonly chainExpiryTimestamp: Gauge;
  readonly chainExpirySeconds: Gauge;
  readonly requestDuration: Histogram<'code'>;
  readonly refusals: Counter<'code'>;
  readonly caExpiry: Gauge<'issuer' | 'role' | 'subject'>;
  readonly jwksRefreshFailures: Counter<'issuer'>;
  readonly overloadRejections: Counter;
  readonly memoryPressure: Gauge;
  readonly connectionsShed: Counter<'reason'>;
  readonly errorStatuses: Counter<'code'>;
  readonly undelivered: Counter;

  constructor(
    registry: Registry = new Registry(),
    private readonly now: () => number = Date.now,
  ) {
    this.registry = registry;
    const r = [registry];
    this.csrCount = new Counter({ name: 'citadel_server_csr_count', help: 'The number of CSRs received by the CA server.', registers: r });
    this.success = new Counter({ name: 'citadel_server_success_cert_issuance_count', help: 'The number of certificates issuances that have succeeded.', registers: r });
    this.authnFailures = new Counter({ name: 'citadel_server_authentication_failure_count', help: 'The number of authentication failures.', registers: r });
    this.csrParsingErrors = new Counter({ name: 'citadel_server_csr_parsing_err_count', help: 'The number of errors occurred when parsing the CSR.', registers: r });
    this.idExtractionErrors = new Counter({ name: 'citadel_server_id_extraction_err_count', help: 'The number of errors occurred when extracting the ID from the CSR or the caller.', registers: r });
    this.signErrors = new Counter({ name: 'citadel_server_csr_sign_err_count', help: 'The number of errors occurred when signing the CSR.', labelNames: ['error'], registers: r });
    // The expiry gauges are computed at each scrape from the CAs in force, so the "seconds until"
    // ones count down and a reload's removed certificates leave no series behind.
    const collect = (): void => this.collectExpiry();
    this.rootExpiryTimestamp = new Gauge({ name: 'citadel_server_root_cert_expiry_timestamp', help: 'The unix timestamp, in seconds, when the (earliest) root cert will expire.', registers: r, aggregator: 'min', collect });
    this.rootExpirySeconds = new Gauge({ name: 'citadel_server_root_cert_expiry_seconds', help: 'Seconds until the (earliest) root cert expires; negative when expired.', registers: r, aggregator: 'min', collect });
    this.chainExpiryTimestamp = new Gauge({ name: 'citadel_server_cert_chain_expiry_timestamp', help: 'The unix timestamp, in seconds, when the signing cert chain will expire.', registers: r, aggregator: 'min', collect });
    this.chainExpirySeconds = new Gauge({ name: 'citadel_server_cert_chain_expiry_seconds', help: 'Seconds until the signing cert chain expires; negative when expired.', registers: r, aggregator: 'min', collect });
    this.requestDuration = new Histogram({
      name: 'meshcert_request_duration_seconds',
      help: 'CreateCertificate latency by result code (OK or the refusal code).',
      labelNames: ['code'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: r,
    });
    this.refusals = new Counter({ name: 'meshcert_refusals_total', help: 'Refused CreateCertificate calls by meshcert error code.', labelNames: ['code'], registers: r });
    zeroSeries(this.refusals, 'code', CA_ERROR_CODES);
    this.caExpiry = new Gauge({ name: 'meshcert_ca_cert_expiry_timestamp_seconds', help: 'NotAfter of each CA and serving certificate.', labelNames: ['issuer', 'role', 'subject'], registers: r, aggregator: 'min', collect });
    this.jwksRefreshFailures = new Counter({ name: 'meshcert_jwks_refresh_failures_total', help: 'Failed JWKS refreshes by token issuer.', labelNames: ['issuer'], registers: r });
    this.overloadRejections = new Counter({ name: 'meshcert_overload_rejections_total', help: 'Calls shed with UNAVAILABLE because too many calls, or too many request bytes, were in flight (overload.maxInFlight, overload.maxInFlightBytes), or the process was short of memory (overload.heapLimitRatio).', registers: r });
    this.memoryPressure = new Gauge({ name: 'meshcert_memory_pressure', help: '1 while a serving process is short of heap (overload.heapLimitRatio) and sheds connections and calls.', registers: r, aggregator: 'max' });
    this.undelivered = new Counter({
      name: 'meshcert_certificates_undelivered_total',
      help: 'Certificates signed but not delivered because their inventory record could not be stored in time (inventory.failClosed); their calls were refused.',
      registers: r,
    });
    this.connectionsShed = new Counter({ name: 'meshcert_connections_shed_total', help: 'Connections refused at accept (reason max_connections or memory) or closed while idle (GOAWAY, or one whose session had ended but whose client kept it open), to make room under server.maxConnections (max_connections_idle) or because memory was short (idle_memory).', labelNames: ['reason'], registers: r });
    this.errorStatuses = new Counter({
      name: 'meshcert_grpc_error_statuses_total',
      help: 'gRPC statuses other than OK sent to clients, by code name: the refusals as clients got them, and the transport\'s own (UNIMPLEMENTED for an unknown method or encoding, DEADLINE_EXCEEDED, INTERNAL or INVALID_ARGUMENT for a request that does not decode, UNAVAILABLE at shutdown). Not calls whose client had gone: nothing is sent.',
      labelNames: ['code'],
      registers: r,
    });
  }

  /** The CAs in force (replacing those before: call at start and after each reload). */
  setCas(cas: readonly ExpiringCa[]): void {
    this.cas = cas;
  }

  /** NotAfter of meshcert's own serving certificate (on start and each renewal). */
  setServingExpiry(notAfter: Date): void {
    this.servingNotAfter = notAfter;
  }

  private cas: readonly ExpiringCa[] = [];
  private servingNotAfter: Date | undefined;

  /** Fills every expiry gauge from the CAs in force (each gauge's collect calls it: cheap). */
  private collectExpiry(): void {
    const now = this.now();
    const ts = (c: X509Certificate): number => Date.parse(c.validTo) / 1000;
    this.caExpiry.reset();
    for (const g of [this.rootExpiryTimestamp, this.rootExpirySeconds, this.chainExpiryTimestamp, this.chainExpirySeconds]) g.reset();
    const roots = this.cas.flatMap((ca) => ca.roots);
    const chain = this.cas.flatMap((ca) => ca.intermediates);
    // The earliest across every CA: a mesh breaks when any of them expires.
    if (roots.length > 0) {
      const rootTs = Math.min(...roots.map(ts));
      this.rootExpiryTimestamp.set(rootTs);
      this.rootExpirySeconds.set(rootTs - now / 1000);
    }
    if (chain.length > 0) {
      const chainTs = Math.min(...chain.map(ts));
      this.chainExpiryTimestamp.set(chainTs);
      this.chainExpirySeconds.set(chainTs - now / 1000);
    }
    // Two certificates may share issuer, role and subject (an old and a new root of one name during
    // a rotation): the series shows the earlier end, the one an alert must not miss.
    const earliest = new Map<string, { labels: { issuer: string; role: string; subject: string }; ts: number }>();
    const put = (labels: { issuer: string; role: string; subject: string }, t: number): void => {
      const key = JSON.stringify(labels);
      const seen = earliest.get(key);
      if (seen === undefined || t < seen.ts) earliest.set(key, { labels, ts: t });
    };
    for (const ca of this.cas) {
      for (const c of ca.roots) put({ issuer: ca.name, role: 'root', subject: oneLine(c.subject) }, ts(c));
      for (const c of ca.intermediates) put({ issuer: ca.name, role: 'intermediate', subject: oneLine(c.subject) }, ts(c));
    }
    for (const { labels, ts: t } of earliest.values()) this.caExpiry.set(labels, t);
    if (this.servingNotAfter) this.caExpiry.set({ issuer: 'default', role: 'serving', subject: 'meshcert serving certificate' }, this.servingNotAfter.getTime() / 1000);
  }

  /** Maps each decision onto Citadel's counters (as istiod counts them) and meshcert's own. */
  observer(): IssuanceObserver {
    return {
      issued: (_cert, ctx) => {
        this.csrCount.inc();
        this.success.inc();
        this.requestDuration.observe({ code: 'OK' }, ctx.latencyMs / 1000);
      },
      refused: (code, _reason, ctx) => {
        this.csrCount.inc();
        this.refusals.inc({ code });
        this.requestDuration.observe({ code }, ctx.latencyMs / 1000);
        const citadel = CITADEL_COUNTER[code];
        if (citadel === 'authn') this.authnFailures.inc();
        else if (citadel === 'parse') this.csrParsingErrors.inc();
        else if (citadel === 'id') this.idExtractionErrors.inc();
        else if (citadel) this.signErrors.inc({ error: citadel.sign });
        if (code === 'OVERLOADED') this.overloadRejections.inc();
      },
    };
  }
}

/**
 * Starts a labelled counter's series at 0. prom-client exports a labelled series only from its
 * first increment, which Prometheus's increase() and rate() cannot see (they need a sample before
 * it): a first failed reload, or one lost record, would never raise an alert.
 */
export function zeroSeries<L extends string>(c: Counter<L>, label: L, values: readonly string[]): void {
  for (const v of values) c.inc({ [label]: v } as Partial<Record<L, string>>, 0);
}

/** The label values of the labelled counters started at 0 (besides error codes and shed reasons). */
export const AUDIT_LOST_REASONS = ['dropped', 'rejected'] as const;
export const REFUSED_ITEM_KINDS = ['record', 'audit'] as const;
export const RELOAD_RESULTS = ['applied', 'rejected'] as const;

/** InventoryMetrics' series that only a store gives values to. */
const STORE_BACKED = /^meshcert_(inventory_|stale_identities|discovered_certs_expiring)/;

/**
 * Metrics of the process that owns the inventory store (the primary in multi-process mode):
 * kept apart from CaMetrics so aggregated worker metrics and these never share a name.
 */
export class InventoryMetrics {
  readonly backlog: Gauge;
  readonly records: Gauge;
  readonly recordsCountedAt: Gauge;
  readonly dropped: Gauge;
  readonly rejected: Gauge;
  readonly auditLost: Gauge;
  /** The same three counts as counters (`_total`), which is what they are: the gauges stay for dashboards made on them. */
  readonly droppedTotal: Counter;
  readonly rejectedTotal: Counter;
  readonly auditLostTotal: Counter<'reason'>;
  /** Items a worker shipped that the primary's inventory refused (see src/runtime/inventory-intake.ts). */
  readonly refusedFromWorkers: Counter<'kind'>;
  readonly storeUp: Gauge;
  readonly staleIdentities: Gauge;
  /** When meshcert_stale_identities was last computed: it keeps its value while the store cannot be queried. */
  readonly staleIdentitiesCheckedAt: Gauge;
  readonly discoveredExpiring: Gauge;
  readonly discoveredExpiringCheckedAt: Gauge;
  readonly caWarnings: Gauge;
  /** Issuers whose CA files (or the serving certificate file) the last expiry check could not read in full. */
  readonly caFilesUnreadable: Gauge;
  /** When the CA files were last checked (with or without an inventory store: a check stuck on the store stops it too). */
  readonly caCheckedAt: Gauge;
  /** Read at scrape time, so the gauges are never stale. */
  recorder?: { readonly backlog: number; readonly storeHealthy: boolean; readonly dropped: number; readonly stats: { readonly rejected: number; readonly auditDropped: number; readonly auditRejected: number } };

  constructor(private readonly registry: Registry) {
    const r = [registry];
    // eslint-disable-next-line @typescript-eslint/no-this-alias -- prom-client calls collect() with the gauge as `this`
    const self = this;
    this.backlog = new Gauge({ name: 'meshcert_inventory_backlog', help: 'Certificate records waiting to be written to the inventory store.', registers: r, collect() { if (self.recorder) this.set(self.recorder.backlog); } });
    this.records = new Gauge({ name: 'meshcert_inventory_records', help: 'Certificates in the inventory store (counted every 30 s; it keeps its value while the store cannot be queried).', registers: r });
    this.recordsCountedAt = new Gauge({ name: 'meshcert_inventory_records_checked_timestamp_seconds', help: 'Unix time meshcert_inventory_records was last counted.', registers: r });
    this.dropped = new Gauge({ name: 'meshcert_inventory_dropped_records', help: 'Records dropped because the buffer overflowed (failClosed off).', registers: r, collect() { if (self.recorder) this.set(self.recorder.dropped); } });
    this.rejected = new Gauge({ name: 'meshcert_inventory_rejected_records', help: 'Certificate records the store refused as invalid data and that were discarded.', registers: r, collect() { if (self.recorder) this.set(self.recorder.stats.rejected); } });
    this.auditLost = new Gauge({
      name: 'meshcert_inventory_audit_events_lost',
      help: 'Audit events not stored: dropped because the buffer overflowed, or refused by the store as invalid.',
      labelNames: ['reason'],
      registers: r,
      collect() {
        if (!self.recorder) return;
        this.set({ reason: 'dropped' }, self.recorder.stats.auditDropped);
        this.set({ reason: 'rejected' }, self.recorder.stats.auditRejected);
      },
    });
    // The recorder's counts only rise (until a restart, which Prometheus reads as a counter reset):
    // each scrape adds what they rose by since the last.
    const following = (read: () => number | undefined): ((c: Counter<string>, labels?: Record<string, string>) => void) => {
      let last = 0;
      return (c, labels) => {
        const v = read();
        if (v === undefined || v <= last) return;
        if (labels) c.inc(labels, v - last);
        else c.inc(v - last);
        last = v;
      };
    };
    const droppedNow = following(() => self.recorder?.dropped);
    const rejectedNow = following(() => self.recorder?.stats.rejected);
    const auditDroppedNow = following(() => self.recorder?.stats.auditDropped);
    const auditRejectedNow = following(() => self.recorder?.stats.auditRejected);
    this.droppedTotal = new Counter({ name: 'meshcert_inventory_dropped_records_total', help: 'Records dropped because the buffer overflowed (failClosed off).', registers: r, collect() { droppedNow(this); } });
    this.rejectedTotal = new Counter({ name: 'meshcert_inventory_rejected_records_total', help: 'Certificate records the store refused as invalid data and that were discarded.', registers: r, collect() { rejectedNow(this); } });
    this.auditLostTotal = new Counter({
      name: 'meshcert_inventory_audit_events_lost_total',
      help: 'Audit events not stored: dropped because the buffer overflowed, or refused by the store as invalid.',
      labelNames: ['reason'],
      registers: r,
      collect() {
        auditDroppedNow(this, { reason: 'dropped' });
        auditRejectedNow(this, { reason: 'rejected' });
      },
    });
    zeroSeries(this.auditLostTotal, 'reason', AUDIT_LOST_REASONS);
    this.refusedFromWorkers = new Counter({
      name: 'meshcert_inventory_refused_from_workers_total',
      help: 'Certificate records and audit events shipped by a worker that the inventory refused as invalid and dropped.',
      labelNames: ['kind'],
      registers: r,
    });
    zeroSeries(this.refusedFromWorkers, 'kind', REFUSED_ITEM_KINDS);
    this.storeUp = new Gauge({ name: 'meshcert_inventory_store_up', help: '1 when the last inventory write (or ping) succeeded and no write has been outstanding longer than 5 s.', registers: r, collect() { if (self.recorder) this.set(self.recorder.storeHealthy ? 1 : 0); } });
    this.staleIdentities = new Gauge({ name: 'meshcert_stale_identities', help: 'Identities whose latest certificate expires soon and was not renewed.', registers: r });
    this.staleIdentitiesCheckedAt = new Gauge({ name: 'meshcert_stale_identities_checked_timestamp_seconds', help: 'Unix time meshcert_stale_identities was last computed (it keeps its value while the inventory cannot be queried).', registers: r });
    this.discoveredExpiring = new Gauge({ name: 'meshcert_discovered_certs_expiring', help: 'Certificates that places found by discovery served when last seen, expiring within monitoring.discoveredWarnBefore (state="warning") or expired (state="expired"), counted once per place.', labelNames: ['state'], registers: r });
    this.discoveredExpiringCheckedAt = new Gauge({ name: 'meshcert_discovered_certs_expiring_checked_timestamp_seconds', help: 'Unix time meshcert_discovered_certs_expiring was last computed (it keeps its value while the inventory cannot be queried).', registers: r });
    this.caWarnings = new Gauge({ name: 'meshcert_ca_certs_in_warning_window', help: 'CA certificates expiring within monitoring.caWarnBefore (or expired); a file that cannot be read counts with what it held when last read.', registers: r });
    this.caFilesUnreadable = new Gauge({ name: 'meshcert_ca_files_unreadable', help: 'Issuers whose CA files (or server.tls.certFile) the last expiry check could not read in full (see the log).', registers: r });
    this.caCheckedAt = new Gauge({ name: 'meshcert_ca_certs_checked_timestamp_seconds', help: 'Unix time the expiry check last read the CA files (meshcert_ca_certs_in_warning_window and meshcert_ca_files_unreadable are as of then).', registers: r });
  }

  /**
   * With no inventory store (`inventory.store: none`) the store's series would read 0 for good:
   * `meshcert_inventory_store_up 0` is an outage that is not there, and a checked-at timestamp of
   * 0 a check that never ran. They are left out instead; the CA expiry gauge stays.
   */
  withoutStore(): void {
    for (const m of this.registry.getMetricsAsArray()) if (STORE_BACKED.test(m.name)) this.registry.removeSingleMetric(m.name);
  }
}

/** Config reloads (SIGHUP or file change), in the process that coordinates them. */
export class ReloadMetrics {
  readonly reloads: Counter<'result'>;

  constructor(registry: Registry) {
    this.reloads = new Counter({ name: 'meshcert_config_reloads_total', help: 'Configuration reloads by result (applied, rejected).', labelNames: ['result'], registers: [registry] });
    zeroSeries(this.reloads, 'result', RELOAD_RESULTS);
  }
}

/** How a worker process died unasked: killed by a signal (SIGKILL, the OOM killer, V8's abort when its heap is exhausted) or exited with a non-zero code. */
export const WORKER_DEATHS = ['signal', 'exit_code'] as const;

/** The cluster primary's view of its workers. */
export class WorkerMetrics {
  /** Serving workers that did not answer the last scrape in time (reported with their last answer). */
  readonly unanswered: Gauge;
  /** Workers that died unasked (each replaced), by how. */
  readonly deaths: Counter<'how'>;

  constructor(registry: Registry, connections: () => ReadonlyArray<{ readonly worker: number; readonly open: number }>) {
    this.unanswered = new Gauge({
      name: 'meshcert_metrics_workers_unanswered',
      help: 'Serving worker processes that did not answer this scrape in time (busy or dying): their last answer is reported instead.',
      registers: [registry],
    });
    this.deaths = new Counter({
      name: 'meshcert_worker_deaths_total',
      help: 'Worker processes that died unasked and were replaced, by how (signal: killed, e.g. SIGKILL or out of memory; exit_code: a crash). Their calls in flight failed, and, without inventory.failClosed, the records of what they issued in their last 100 ms may be missing from the inventory.',
      labelNames: ['how'],
      registers: [registry],
    });
    zeroSeries(this.deaths, 'how', WORKER_DEATHS);
    new Gauge({
      name: 'meshcert_worker_connections',
      help: 'Open connections the primary has handed to each worker (it gives a new one to the worker with the fewest).',
      labelNames: ['worker'],
      registers: [registry],
      collect() {
        this.reset();
        for (const c of connections()) this.set({ worker: String(c.worker) }, c.open);
      },
    });
  }
}

/** What the controllers say of themselves (RunningControllers.status), as the metrics read it. */
export interface ControllerStatusView {
  readonly leader: boolean;
  readonly rootConfigMaps?: { readonly queued: number; readonly failures: number };
  readonly istiodTls?: { readonly failures: number; readonly notAfter: Date | undefined };
}

/**
 * The Kubernetes controllers (root ConfigMaps, istiod-tls) in the process that runs them: a
 * replica that can never lead, or writes the API server keeps refusing, showed only in the log.
 */
export class ControllerMetrics {
  constructor(registry: Registry, status: () => ControllerStatusView) {
    new Gauge({
      name: 'meshcert_leader',
      help: 'Whether this replica holds the leader Lease and so writes the root ConfigMaps and istiod-tls (1) or not (0); some replica of a mesh should.',
      registers: [registry],
      collect() {
        this.set(status().leader ? 1 : 0);
      },
    });
    new Gauge({
      name: 'meshcert_root_configmaps_pending',
      help: 'Namespaces whose istio-ca-root-cert ConfigMap this replica has still to write (queued or being written).',
      registers: [registry],
      collect() {
        this.set(status().rootConfigMaps?.queued ?? 0);
      },
    });
    new Counter({
      name: 'meshcert_root_configmap_write_failures_total',
      help: 'Writes of istio-ca-root-cert ConfigMaps the API server refused or did not answer (each is retried).',
      registers: [registry],
      collect() {
        this.reset();
        this.inc(status().rootConfigMaps?.failures ?? 0);
      },
    });
    new Counter({
      name: 'meshcert_istiod_tls_write_failures_total',
      help: "Attempts to check or write istiod's serving certificate (Secret istiod-tls) that failed (each is retried).",
      registers: [registry],
      collect() {
        this.reset();
        this.inc(status().istiodTls?.failures ?? 0);
      },
    });
  }
}

type CitadelCounter = 'authn' | 'parse' | 'id' | { sign: string } | null;

/** Which Citadel counter each refusal feeds (istiod: authn, CSR parsing, ID extraction, signing errors by kind). */
const CITADEL_COUNTER: Record<CaErrorCode, CitadelCounter> = {
  AUTH_MISSING: 'authn',
  AUTH_INVALID: 'authn',
  AUTH_BACKEND_UNAVAILABLE: 'authn',
  IMPERSONATION_DENIED: 'authn',
  CSR_MALFORMED: 'parse',
  CSR_BAD_SIGNATURE: 'parse',
  CSR_UNSUPPORTED_KEY: 'parse',
  IDENTITY_MISMATCH: 'id',
  CSR_FORBIDDEN_EXTENSION: 'id',
  POLICY_DENIED: null,
  // istiod's caerror.ErrorType() names, so that its dashboards' selectors match.
  TTL_INVALID: { sign: 'TTL_ERROR' },
  ISSUER_FAILED: { sign: 'CERT_GEN_ERROR' },
  ISSUER_UNAVAILABLE: { sign: 'CA_NOT_READY' },
  REQUEST_TOO_LARGE: null,
  NOT_READY: null,
  OVERLOADED: null,
  RATE_LIMITED: null,
  CANCELLED: null,
  INTERNAL: { sign: 'UNKNOWN' },
};

