/**
 * Leader election on a coordination.k8s.io/v1 Lease, with client-go's semantics
 * (k8s.io/client-go/tools/leaderelection):
 *
 * - every `retryPeriod` (±20 % jitter while a candidate) the elector reads the Lease and
 *   acquires it when it is absent, released (empty holderIdentity), held by this identity, or
 *   expired; writes carry the read resourceVersion (optimistic concurrency: a 409 means another
 *   replica wrote first: the Lease is read again);
 * - expired means: the Lease record has not changed for leaseDurationSeconds, measured on this
 *   process's own monotonic clock from when it saw the record (client-go's observedTime rule).
 *   The holder's renewTime is never compared with this node's clock: replicas whose clocks differ,
 *   or a clock stepped by NTP, must not see a live holder as expired. A new candidate therefore
 *   waits one leaseDuration before taking over a Lease whose holder died;
 * - the leader renews every `retryPeriod`; it stops leading when it has not renewed for
 *   `renewDeadline`, or at once when it sees another holder. `isLeader` also turns false on its
 *   own once the last successful renewal is older than `renewDeadline` (a stalled event loop),
 *   before any other replica may take over (leaseDuration > renewDeadline);
 * - after losing the lease it becomes a candidate again (it does not exit);
 * - stop() stops campaigning, calls onStoppedLeading (and waits for it) and then releases the
 *   Lease (holderIdentity "", leaseDurationSeconds 1) so another replica takes over at once.
 *
 * Times are written as V1MicroTime (six fractional digits, as the API server demands).
 * RBAC: leases get/create/update in `namespace`.
 */
import { V1MicroTime, type V1Lease, type V1LeaseSpec } from '@kubernetes/client-node';
import { kubeStatusCode, type KubeClient } from '../k8s/client.js';
import { explainKubeError, isConflict, isNotFound, sleep, withDeadline, type ControllerLog } from './kube-util.js';
import { LogThrottle } from '../log/throttle.js';

/** How often a replica the API server refuses the Lease says so again. */
const REFUSED_LINE_EVERY_MS = 600_000;

export const DEFAULT_LEASE_NAME = 'meshcert-leader';

export interface LeaderElectorOptions {
  readonly kube: Pick<KubeClient, 'coordination'>;
  /** Namespace of the Lease (the pod's own namespace). */
  readonly namespace: string;
  /** Lease name. Default `meshcert-leader`. */
  readonly name?: string;
  /** This replica's identity (its pod name). Must be unique among the replicas. */
  readonly identity: string;
  /** How long a lease is valid without renewal. Default 15000 ms (written in whole seconds, at least 1). */
  readonly leaseDurationMs?: number;
  /** The leader gives up when it could not renew for this long. Default 10000 ms. */
  readonly renewDeadlineMs?: number;
  /** Interval between attempts to acquire or renew. Default 2000 ms. */
  readonly retryPeriodMs?: number;
  /** Clock (ms since epoch). */
  readonly now?: () => number;
  /**
   * Clock for durations (renew deadline, observed expiry). Default: performance.now, which wall
   * clock steps do not move; when only `now` is given (tests), `now`.
   */
  readonly monotonic?: () => number;
  /** Called when this replica starts leading. Should return quickly (work belongs in the controllers). */
  readonly onStartedLeading: () => void | Promise<void>;
  /** Called when this replica stops leading (lost lease, or stop()). stop() waits for a returned promise. */
  readonly onStoppedLeading: () => void | Promise<void>;
  /** Called when the observed holder changes (including to this replica). */
  readonly onNewLeader?: (identity: string) => void;
  readonly log?: ControllerLog | undefined;
}

interface LeaseRecord {
  readonly holder: string;
  readonly durationSeconds: number;
  readonly renewTime: number | undefined;
  readonly acquireTime: number | undefined;
  readonly transitions: number;
}

type Attempt = { readonly ok: true } | { readonly ok: false; readonly otherHolder: string | undefined };

function parseTime(v: unknown): number | undefined {
  if (v instanceof Date) return Number.isNaN(v.getTime()) ? undefined : v.getTime();
  if (typeof v === 'string' && v !== '') {
    const t = Date.parse(v);
    return Number.isNaN(t) ? undefined : t;
  }
  return undefined;
}

function recordOf(spec: V1LeaseSpec | undefined): LeaseRecord {
  return {
    holder: spec?.holderIdentity ?? '',
    durationSeconds: spec?.leaseDurationSeconds ?? 0,
    renewTime: parseTime(spec?.renewTime as unknown),
    acquireTime: parseTime(spec?.acquireTime as unknown),
    transitions: spec?.leaseTransitions ?? 0,
  };
}

const sameRecord = (a: LeaseRecord, b: LeaseRecord): boolean =>
  a.holder === b.holder && a.renewTime === b.renewTime && a.durationSeconds === b.durationSeconds && a.transitions === b.transitions;

export class LeaderElector {
  readonly identity: string;
  readonly namespace: string;
  readonly name: string;
  private readonly kube: Pick<KubeClient, 'coordination'>;
  private readonly leaseDurationMs: number;
  private readonly leaseDurationSeconds: number;
  private readonly renewDeadlineMs: number;
  private readonly retryPeriodMs: number;
  /** Wall clock: the times written into the Lease. */
  private readonly now: () => number;
  /** Durations: see LeaderElectorOptions.monotonic. */
  private readonly clock: () => number;
  private readonly opts: LeaderElectorOptions;
  private readonly log: ControllerLog | undefined;
  /**
   * Lines saying the Lease is refused (401/403): the first at once, then one every 10 minutes with
   * how many refusals went unsaid, so a replica that can never lead keeps saying so; made anew
   * by an attempt that was not refused.
   */
  private refusedLines: LogThrottle;

  private leading = false;
  /** Local time at which the last successful acquire/renew was sent. */
  private renewedAt = 0;
  /** The last Lease read or written, and when (local clock) its record last changed. */
  private observed: { lease: V1Lease; record: LeaseRecord; at: number } | undefined;
  private lastHolder: string | undefined;
  private attemptSeq = 0;
  /** Attempts up to this one were given up on (failed or past their deadline): whatever of them is still in flight writes nothing. */
  private abandonedUpTo = 0;
  private loop: Promise<void> | undefined;
  private abort: AbortController | undefined;
  private startedCallback: Promise<void> | undefined;
  private stopped = false;

  constructor(opts: LeaderElectorOptions) {
    if (!opts.identity) throw new Error('leader election needs a non-empty identity (the pod name)');
    if (!opts.namespace) throw new Error('leader election needs the namespace of its Lease');
    this.opts = opts;
    this.kube = opts.kube;
    this.identity = opts.identity;
    this.namespace = opts.namespace;
    this.name = opts.name ?? DEFAULT_LEASE_NAME;
    this.leaseDurationMs = opts.leaseDurationMs ?? 15_000;
    this.renewDeadlineMs = opts.renewDeadlineMs ?? 10_000;
    this.retryPeriodMs = opts.retryPeriodMs ?? 2_000;
    this.leaseDurationSeconds = Math.max(1, Math.ceil(this.leaseDurationMs / 1000));
    this.now = opts.now ?? Date.now;
    this.clock = opts.monotonic ?? opts.now ?? (() => performance.now());
    this.refusedLines = new LogThrottle(REFUSED_LINE_EVERY_MS, this.clock);
    this.log = opts.log;
    if (!(this.leaseDurationMs > this.renewDeadlineMs)) throw new Error('leaseDuration must be greater than renewDeadline');
    if (!(this.renewDeadlineMs > 1.2 * this.retryPeriodMs)) throw new Error('renewDeadline must be greater than 1.2 × retryPeriod');
    if (!(this.retryPeriodMs > 0)) throw new Error('retryPeriod must be positive');
  }

  /** True while this replica holds the lease and renewed it within renewDeadline. */
  get isLeader(): boolean {
    return this.leading && this.clock() - this.renewedAt < this.renewDeadlineMs;
  }

  /** The holder last seen on the Lease ('' when released, undefined before the first read). */
  get leader(): string | undefined {
    return this.lastHolder;
  }

  /** Starts campaigning (idempotent). */
  start(): void {
    if (this.loop || this.stopped) return;
    this.abort = new AbortController();
    this.loop = this.run(this.abort.signal);
  }

  /** Stops campaigning; when leading, calls onStoppedLeading, waits for it, then releases the Lease. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.abort?.abort();
    await this.loop;
    this.attemptSeq++; // an abandoned attempt still in flight must not write
    if (this.leading) {
      this.leading = false;
      await this.startedCallback;
      await this.callStopped();
    }
    // Also when an acquisition succeeded just as stop() was called (never reported as leading),
    // and after an attempt given up on, whose write may have landed unseen: release() re-reads the
    // Lease and gives it up only if it names this replica.
    if (this.observed?.record.holder === this.identity || this.abandonedUpTo > 0) await this.release();
  }

  private async run(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      const started = this.clock();
      let result: Attempt = { ok: false, otherHolder: undefined };
      const seq = ++this.attemptSeq;
      // A leader's attempt may last until its renew deadline; a candidate's as long as a renewal
      // may (a read and a write on a slow API server: with less, no candidate could ever win).
      const budget = this.leading ? Math.max(1, this.renewedAt + this.renewDeadlineMs - started) : Math.max(this.renewDeadlineMs, this.retryPeriodMs, 1000);
      try {
        result = await withDeadline(this.tryAcquireOrRenew(seq), budget, `no answer from the API server within ${budget} ms`);
      } catch (err) {
        // Over, whatever is still in flight: it must write nothing more (see live()).
        this.abandonedUpTo = seq;
        const msg = explainKubeError(err, `get, create and update leases in namespace ${this.namespace}`);
        const status = kubeStatusCode(err);
        const refused = status === 401 || status === 403;
        // Refused, not busy: no replica can ever lead (RBAC for another lease name, say), so say
        // it, throttled (a candidate retries every couple of seconds). A leader's refused renewal
        // is warned about as such; the candidate's line is still owed.
        const unsaid = !this.leading && refused ? this.refusedLines.take() : undefined;
        if (this.leading) this.log?.warn({ lease: this.leaseRef(), error: msg }, 'failed to renew the leader lease');
        else if (unsaid !== undefined) this.log?.warn({ lease: this.leaseRef(), error: msg, refusalsUnsaid: unsaid }, 'the API server refuses the leader lease to meshcert: no replica can lead');
        else this.log?.debug({ lease: this.leaseRef(), error: msg }, 'failed to acquire the leader lease');
      }
      if (signal.aborted || seq !== this.attemptSeq) break;
      if (result.ok) {
        this.refusedLines = new LogThrottle(REFUSED_LINE_EVERY_MS, this.clock);
        this.renewedAt = started;
        if (!this.leading) {
          this.leading = true;
          this.log?.info({ lease: this.leaseRef(), identity: this.identity }, 'became the leader');
          this.startedCallback = this.callStarted();
        }
      } else if (this.leading) {
        const lostTo = result.otherHolder;
        if (lostTo !== undefined || this.clock() - this.renewedAt >= this.renewDeadlineMs) {
          this.leading = false;
          this.log?.warn(
            { lease: this.leaseRef(), identity: this.identity, ...(lostTo === undefined ? {} : { newLeader: lostTo }) },
            lostTo === undefined ? `lost the leader lease: not renewed within ${this.renewDeadlineMs} ms` : 'lost the leader lease to another replica',
          );
          await this.startedCallback;
          await this.callStopped();
        }
      }
      const wait = this.leading ? this.retryPeriodMs : this.retryPeriodMs * (1 + Math.random() * 0.2);
      await sleep(wait, signal);
    }
  }

  /** Whether attempt `seq` is still the one under way (not superseded, stopped or given up on). */
  private live(seq: number): boolean {
    return seq === this.attemptSeq && seq > this.abandonedUpTo;
  }

  private async callStarted(): Promise<void> {
    try {
      await this.opts.onStartedLeading();
    } catch (err) {
      this.log?.error({ err }, 'onStartedLeading failed');
    }
  }

  private async callStopped(): Promise<void> {
    try {
      await this.opts.onStoppedLeading();
    } catch (err) {
      this.log?.error({ err }, 'onStoppedLeading failed');
    }
  }

  private leaseRef(): string {
    return `${this.namespace}/${this.name}`;
  }

  private observe(lease: V1Lease, now: number): LeaseRecord {
    const record = recordOf(lease.spec);
    if (!this.observed || !sameRecord(this.observed.record, record)) this.observed = { lease, record, at: now };
    else this.observed = { lease, record, at: this.observed.at };
    if (record.holder !== this.lastHolder) {
      this.lastHolder = record.holder;
      if (record.holder !== '') {
        if (record.holder !== this.identity) this.log?.info({ lease: this.leaseRef(), leader: record.holder }, 'new leader observed');
        try {
          this.opts.onNewLeader?.(record.holder);
        } catch (err) {
          this.log?.error({ err }, 'onNewLeader failed');
        }
      }
    }
    return record;
  }

  private expired(record: LeaseRecord, now: number): boolean {
    if (record.holder === '') return true;
    const durMs = Math.max(1, record.durationSeconds) * 1000;
    return this.observed !== undefined && this.observed.at + durMs < now;
  }

  private spec(prev: LeaseRecord | undefined, now: number): V1LeaseSpec {
    const t = new V1MicroTime(now);
    const keep = prev !== undefined && prev.holder === this.identity && this.leading;
    return {
      holderIdentity: this.identity,
      leaseDurationSeconds: this.leaseDurationSeconds,
      acquireTime: keep && prev.acquireTime !== undefined ? new V1MicroTime(prev.acquireTime) : t,
      renewTime: t,
      leaseTransitions: prev === undefined ? 0 : prev.holder === this.identity ? prev.transitions : prev.transitions + 1,
    };
  }

  /** One acquire-or-renew round; a 409 on the write re-reads the Lease once. */
  private async tryAcquireOrRenew(seq: number): Promise<Attempt> {
    const api = this.kube.coordination;
    // Observations and expiry use the monotonic clock (when each answer came); the Lease carries wall-clock times.
    const wall = this.now();
    for (let round = 0; round < 2; round++) {
      let lease: V1Lease;
      try {
        lease = await api.readNamespacedLease({ namespace: this.namespace, name: this.name });
      } catch (err) {
        if (!isNotFound(err)) throw err;
        if (!this.live(seq)) return { ok: false, otherHolder: undefined };
        try {
          const created = await api.createNamespacedLease({
            namespace: this.namespace,
            body: { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name: this.name, namespace: this.namespace }, spec: this.spec(undefined, wall) },
          });
          if (this.live(seq)) this.observe(created, this.clock());
          return { ok: true };
        } catch (cerr) {
          if (isConflict(cerr)) continue; // created by another replica meanwhile: read it
          throw cerr;
        }
      }
      // An attempt given up on observes nothing: its read may be seconds old by now.
      if (!this.live(seq)) return { ok: false, otherHolder: undefined };
      // When the answer came, not when the attempt began: a record first seen late must not
      // look unchanged for longer than it has been seen.
      const seen = this.clock();
      const record = this.observe(lease, seen);
      if (record.holder !== '' && record.holder !== this.identity && !this.expired(record, seen)) return { ok: false, otherHolder: record.holder };
      try {
        const updated = await api.replaceNamespacedLease({
          namespace: this.namespace,
          name: this.name,
          body: { ...lease, metadata: { ...lease.metadata, resourceVersion: lease.metadata?.resourceVersion }, spec: { ...lease.spec, ...this.spec(record, wall) } },
        });
        if (this.live(seq)) this.observe(updated, this.clock());
        if (record.holder !== this.identity) {
          this.log?.info({ lease: this.leaseRef(), previousHolder: record.holder || undefined, expired: record.holder !== '' }, 'took over the leader lease');
        }
        return { ok: true };
      } catch (err) {
        if (isConflict(err)) continue; // someone else wrote first: read again
        throw err;
      }
    }
    return { ok: false, otherHolder: undefined };
  }

  /** Gives the lease up (holderIdentity "", duration 1 s) if it still names this replica. */
  private async release(): Promise<void> {
    const api = this.kube.coordination;
    const deadline = this.clock() + Math.max(this.renewDeadlineMs, 1000);
    try {
      await withDeadline(
        (async () => {
          // What was last seen may predate a write this replica gave up waiting for (an attempt
          // abandoned at renewDeadline that landed after all): then read what is there now.
          let lease = this.abandonedUpTo > 0 ? undefined : this.observed?.lease;
          for (let round = 0; round < 3 && this.clock() < deadline; round++) {
            if (!lease || round > 0) lease = await api.readNamespacedLease({ namespace: this.namespace, name: this.name });
            if ((lease.spec?.holderIdentity ?? '') !== this.identity) return;
            const t = new V1MicroTime(this.now());
            try {
              await api.replaceNamespacedLease({
                namespace: this.namespace,
                name: this.name,
                body: {
                  ...lease,
                  spec: { ...lease.spec, holderIdentity: '', leaseDurationSeconds: 1, acquireTime: t, renewTime: t, leaseTransitions: lease.spec?.leaseTransitions ?? 0 },
                },
              });
              this.log?.info({ lease: this.leaseRef(), identity: this.identity }, 'released the leader lease');
              return;
            } catch (err) {
              if (!isConflict(err)) throw err;
            }
          }
        })(),
        Math.max(1, deadline - this.clock()),
        'timed out releasing the leader lease',
      );
    } catch (err) {
      this.log?.warn({ lease: this.leaseRef(), error: explainKubeError(err, `update leases in namespace ${this.namespace}`) }, 'could not release the leader lease; another replica takes over when it expires');
    }
  }
}
