import { statSync, unwatchFile, watchFile, type Stats } from 'node:fs';
import { join } from 'node:path';
import { IN_CLUSTER_CA_FILE } from '../auth/tokenreview.js';
import { CA_FILES } from '../ca/files.js';
import { caDirectories, loadConfigFile } from '../config/load.js';
import { MAX_CONFIG_BYTES, readTextFile } from '../fs/read-file.js';
import { assertServable } from '../config/servable.js';
import { reloadedConfig, restartOnlyChanges } from '../config/restart-only.js';
import type { MeshcertConfig } from '../config/schema.js';
import type { Logger } from '../log/logger.js';
import type { ReloadMetrics } from '../metrics/ca-metrics.js';

export interface ReloadOptions {
  /** The config file to re-read; absent for the embedded dev config (then only CA files are watched). */
  readonly configFile?: string;
  readonly current: () => MeshcertConfig;
  /** Validates and applies a new config (CAs, policy, authentication); throws to reject it. */
  readonly apply: (next: MeshcertConfig) => Promise<void>;
  readonly logger: Logger;
  readonly metrics?: ReloadMetrics;
  readonly pollIntervalMs?: number;
  /**
   * The config file's text the running config was read from. The watch (from watch()) compares
   * with the file as it is when the watch begins, after serve read it: start() compares with this
   * so that an edit in between is not missed.
   */
  readonly loadedText?: string;
}

/**
 * Hot reload of policy, issuers, authentication (revoked client certificates and token issuers'
 * key files included) and trusted node accounts when
 * asked (trigger(): the serve command forwards SIGHUP, whose handler it keeps for the whole life
 * of the process) and when the config file, a CA file, a jwksFile or a TokenReview's CA file changes.
 * A new config that does not validate, or whose CAs do not load, is rejected with one log line
 * and a metric; the running state stays in force. In-flight calls finish with what they began.
 */
export class Reloader {
  private timer: NodeJS.Timeout | undefined;
  private readonly reasons = new Set<string>();
  private running: Promise<void> = Promise.resolve();
  /** Each watched file, with the listener fs.watchFile calls for it. */
  private readonly watched = new Map<string, (curr: Stats, prev: Stats) => void>();
  /** Each watched file as the last reload found it when it began (fileVersion): a change to that version is what it read. */
  private readVersions = new Map<string, string>();
  /** Set by start(), unset by stop(): until then a file change is only noted (the server cannot apply one yet). */
  private listening = false;
  private changedBeforeStart = false;
  private onFileChange(file: string, curr: Stats, prev: Stats): void {
    // fs.watchFile reports a file missing when the watch begins as a change (zeroed stats, both):
    // an optional file that is not there (cert-chain.pem, say) is no reason to reload.
    if (curr.mtimeMs === 0 && prev.mtimeMs === 0) return;
    // The version the last reload found when it began (the edit a SIGHUP followed, seen by the
    // 2 s poll after the 300 ms debounce): that reload read it. Compared by identity, not by
    // time, so a file server whose clock runs behind cannot hide an edit; the ctime tells a file
    // renamed into place (an old copy restored, its mtime old) from the one it replaced.
    if (this.readVersions.get(file) === fileVersion(curr)) return;
    if (this.listening) this.trigger('file change');
    else this.changedBeforeStart = true;
  }

  /** The config the server was started with: what settings read only at start still follow. */
  private readonly started: MeshcertConfig;
  /** What the last applied reload put in force (reloadedConfig): its token issuers' key files are watched. */
  private inForce: MeshcertConfig;

  constructor(private readonly o: ReloadOptions) {
    this.started = o.current();
    this.inForce = this.started;
  }

  /**
   * Starts watching the files while the server is still starting, right after it has read them:
   * one edited from then on (a jwksFile the workers read as they start, say) is reloaded once
   * start() runs. Without it, the watch would compare with the file as it is once started.
   */
  watch(): void {
    this.watchFiles(this.o.current());
  }

  start(): void {
    this.listening = true;
    this.watchFiles(this.o.current());
    if (this.changedBeforeStart) this.trigger('file change during startup');
    if (this.o.configFile !== undefined && this.o.loadedText !== undefined && this.textNow(this.o.configFile) !== this.o.loadedText) {
      this.trigger('config file changed during startup');
    }
  }

  /** The file's text, or undefined when it cannot be read now (a reload then says why). */
  private textNow(file: string): string | undefined {
    try {
      return readTextFile(file, MAX_CONFIG_BYTES);
    } catch {
      return undefined;
    }
  }

  /** Ends watching and reloading: a reload asked for from here on is not run. */
  stop(): void {
    this.listening = false;
    if (this.timer) clearTimeout(this.timer);
    for (const [f, listener] of this.watched) unwatchFile(f, listener);
    this.watched.clear();
  }

  /**
   * Asks for a reload; false when the reloader is not running (before start(), after stop()).
   * Debounced: editors and Kubernetes' atomic writer touch several files in a burst.
   */
  trigger(reason: string): boolean {
    if (!this.listening) return false;
    if (this.timer) clearTimeout(this.timer);
    // One reload for the burst, logged with every reason in it (a SIGHUP and the file change it follows).
    this.reasons.add(reason);
    this.timer = setTimeout(() => {
      const reasons = [...this.reasons].join(', ');
      this.reasons.clear();
      // A failure is logged inside reload(); the chain itself must never stay rejected. One that
      // waited behind another and finds the reloader stopped (the server shutting down) is dropped.
      this.running = this.running.then(() => (this.listening ? this.reloadNow(reasons) : undefined)).then(
        () => undefined,
        (err: unknown) => this.o.logger.error({ err }, 'reload failed unexpectedly'),
      );
    }, 300);
    this.timer.unref();
    return true;
  }

  /** Reloads now, or once a reload under way has ended (two never overlap); false when rejected. */
  reload(reason: string): Promise<boolean> {
    const run = this.running.then(() => this.reloadNow(reason));
    this.running = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  private async reloadNow(reason: string): Promise<boolean> {
    this.readVersions = new Map([...this.watched.keys()].map((f) => [f, fileVersion(statOrAbsent(f))]));
    let next: MeshcertConfig;
    try {
      next = this.o.configFile ? loadConfigFile(this.o.configFile).config : this.o.current();
      // A file the next start would refuse is refused now, while the server can still say so.
      if (this.o.configFile) assertServable(next, this.o.configFile);
      // Its files are watched before they are read, and stay watched if it is rejected: a CA
      // directory the config names before its files are there (ConfigMap and Secret volumes
      // update apart) is reloaded when they arrive, not left until the next SIGHUP.
      if (this.listening) this.watchFiles(next, { prune: false });
      await this.o.apply(next);
    } catch (err) {
      this.o.metrics?.reloads.inc({ result: 'rejected' });
      this.o.logger.error({ reason, err }, 'configuration reload rejected; the previous policy, CAs and authentication stay in force');
      return false;
    }
    this.o.metrics?.reloads.inc({ result: 'applied' });
    this.o.logger.info({ reason }, 'configuration reload applied');
    this.inForce = reloadedConfig(this.started, next, this.inForce);
    // Said at every reload until a restart: the file no longer describes what runs.
    const pending = restartOnlyChanges(this.started, next);
    // Authentication the reload could not apply (the clusters served changed, or ambient mode was
    // turned on or off): an issuer or node account removed with it (a key compromised, say) is
    // still trusted until a restart, which must not read as a mere notice.
    const trust: string[] = pending.filter((s) => s === 'auth' || s === 'dev' || s === 'ambient');
    if (trust.length > 0) {
      const clusters = trust.includes('auth') || trust.includes('dev');
      const ambient = trust.includes('ambient');
      const why = [...(clusters ? ['the clusters served (names, trust domains, the default cluster) changed'] : []), ...(ambient ? ['ambient mode was turned on or off'] : [])].join(' and ');
      const kept = [...(clusters ? ['an issuer, cluster or token issuer'] : []), ...(ambient ? ['a trusted node account'] : [])].join(' or ');
      this.o.logger.error(
        { settings: trust },
        `authentication settings changed in the config but are not in force: ${why}, which only a restart applies, so the rest of ${trust.length > 1 ? 'these sections' : 'this section'} was not applied either and the running server still accepts every credential it accepted before this reload (${kept} removed is still trusted); restart meshcert to apply them`,
      );
    }
    const rest = pending.filter((s) => !trust.includes(s));
    if (rest.length > 0) {
      this.o.logger.warn({ settings: rest }, 'these settings changed in the config but take effect only after a restart; the running server still uses the values it started with');
    }
    if (this.listening) this.watchFiles(next);
    return true;
  }

  /** Watches `config`'s files; with `prune`, no longer those of CAs it does not name (their edits are not reloads). */
  private watchFiles(config: MeshcertConfig, o: { prune: boolean } = { prune: true }): void {
    const files = [
      ...(this.o.configFile ? [this.o.configFile] : []),
      ...caDirectories(config).flatMap(({ dir: d }) => [CA_FILES.cert, CA_FILES.key, CA_FILES.chain, CA_FILES.root].map((f) => join(d, f))),
      // A token issuer's key file (its keys rotate): those in force, and `config`'s (in force once applied).
      ...[this.inForce, config].flatMap((k) => k.auth.clusters.flatMap((c) => c.jwt.flatMap((j) => (j.jwksFile ? [j.jwksFile] : [])))),
      // A TokenReview's CA bundle (the cluster's CA rotates, and kube-root-ca.crt with it): its
      // caFile, else the in-cluster one it may use (watching a file that is not there costs nothing).
      ...[this.inForce, config].flatMap((k) => k.auth.clusters.flatMap((c) => (c.tokenReview ? [c.tokenReview.caFile ?? IN_CLUSTER_CA_FILE] : []))),
    ];
    const wanted = new Set(files);
    for (const [f, listener] of this.watched) {
      if (!o.prune || wanted.has(f)) continue;
      unwatchFile(f, listener);
      this.watched.delete(f);
    }
    for (const f of files) {
      if (this.watched.has(f)) continue;
      const listener = (curr: Stats, prev: Stats): void => this.onFileChange(f, curr, prev);
      this.watched.set(f, listener);
      watchFile(f, { interval: this.o.pollIntervalMs ?? 2000, persistent: false }, listener);
    }
  }

  /** Whether a watched file changed between watch() and start() (tests). */
  get changedWhileStarting(): boolean {
    return this.changedBeforeStart;
  }

  /** The files watched now (tests). */
  get watchedFiles(): readonly string[] {
    return [...this.watched.keys()];
  }
}

/** A file version's identity as fs.watchFile compares them: inode, size and both times ('' when absent). */
function fileVersion(st: Stats | undefined): string {
  return st === undefined || st.mtimeMs === 0 ? '' : `${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;
}

/** The file's stats, or undefined when it cannot be stat-ed now (absent, unreadable directory). */
function statOrAbsent(file: string): Stats | undefined {
  try {
    return statSync(file);
  } catch {
    return undefined;
  }
}
