/**
 * Kubernetes API access for meshcert, on @kubernetes/client-node 1.4 (pinned: 2.x needs Node 22).
 *
 * - createKubeConfig(): a KubeConfig from in-cluster files, an explicit server (tests use a loopback
 *   fake API server with its own CA), or a kubeconfig file. TLS verification is never skipped.
 * - createKubeClient(): the only API surface meshcert uses: CoreV1Api, CoordinationV1Api (leases)
 *   and list+watch informers for pods, configmaps and namespaces.
 *
 * Informers are the library's ListWatch (list, then watch from the list's resourceVersion; a clean
 * end of the stream re-watches from the last seen resourceVersion; 410 Gone re-lists), with a watch
 * transport of our own (StreamingWatch) because 1.4's Watch has no connect or idle timeout and
 * reports a deliberate abort as an error. The ListWatch emits 'error' and STOPS on any other watch
 * or list failure: the owner must restart it (PodCache does, with backoff).
 */
import { existsSync } from 'node:fs';
import { MAX_TOKEN_BYTES, readTextFile } from '../fs/read-file.js';
import http from 'node:http';
import https from 'node:https';
import { join } from 'node:path';
import {
  ApiException,
  CoordinationV1Api,
  CoreV1Api,
  KubeConfig,
  ListWatch,
  Observable,
  ServerConfiguration,
  Watch,
  createConfiguration,
} from '@kubernetes/client-node';
import type {
  KubernetesListObject,
  KubernetesObject,
  ObservableMiddleware,
  RequestContext,
  ResponseContext,
  User,
  V1ConfigMap,
  V1Namespace,
  V1Pod,
} from '@kubernetes/client-node';

export const IN_CLUSTER_SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

/** Where the API server and meshcert's credentials come from. */
export type KubeConfigSource =
  | {
      /** The pod's own service account and KUBERNETES_SERVICE_HOST/PORT. */
      readonly inCluster: true;
      /** Default process.env (tests). */
      readonly env?: Readonly<Record<string, string | undefined>>;
      /** Default /var/run/secrets/kubernetes.io/serviceaccount (files `token`, `ca.crt`, `namespace`). */
      readonly serviceAccountDir?: string;
    }
  | {
      /** https URL of the API server. */
      readonly server: string;
      /** PEM CA bundle for the API server; default: the system roots. */
      readonly caPem?: string;
      /** Or a file holding it, read again for every request (the library does), so a rotated CA is picked up. */
      readonly caFile?: string;
      /** Bearer token (token wins over tokenFile; tokenFile is re-read every minute). */
      readonly token?: string;
      readonly tokenFile?: string;
      /** Only `false` is accepted: meshcert never talks to an unverified API server. */
      readonly skipTLSVerify?: false;
    }
  | {
      /** Path of a kubeconfig file. */
      readonly kubeconfig: string;
      /** Context to use; default the file's current-context. */
      readonly context?: string;
    };

/** Reads a bearer token from a file, trimmed, re-read every minute, keeping the last good value. */
const TOKEN_FILE_PROVIDER = 'meshcert-token-file';
/** The library does not export its Authenticator interface. */
type Authenticator = Parameters<KubeConfig['addAuthenticator']>[0];
const TOKEN_FILE_REREAD_MS = 60_000;

class TokenFileAuthenticator implements Authenticator {
  private readonly cache = new Map<string, { value: string; readAt: number }>();

  isAuthProvider(user: User): boolean {
    return (user.authProvider as { name?: unknown } | undefined)?.name === TOKEN_FILE_PROVIDER;
  }

  async applyAuthentication(user: User, opts: https.RequestOptions): Promise<void> {
    const file = String((user.authProvider as { config: { path: string } }).config.path);
    const now = Date.now();
    let entry = this.cache.get(file);
    if (!entry || now - entry.readAt >= TOKEN_FILE_REREAD_MS) {
      try {
        const value = readTextFile(file, MAX_TOKEN_BYTES).trim();
        if (!value) throw new Error('the file is empty');
        entry = { value, readAt: now };
        this.cache.set(file, entry);
      } catch (err) {
        if (!entry) throw new Error(`cannot read the Kubernetes API token file ${file}: ${(err as Error).message}`, { cause: err });
        // keep the last good token
      }
    }
    opts.headers = { ...(opts.headers ?? {}), Authorization: `Bearer ${entry.value}` };
  }
}

function tokenFileUser(name: string, path: string): User {
  return { name, authProvider: { name: TOKEN_FILE_PROVIDER, config: { path } } };
}

function httpsServerUrl(raw: string, what: string): string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new Error(`${what} is not a URL: ${JSON.stringify(raw)}`);
  }
  if (url.protocol !== 'https:') throw new Error(`${what} must be an https:// URL (got ${url.protocol})`);
  if (url.search || url.hash) throw new Error(`${what} must not have a query or fragment`);
  return url.toString().replace(/\/+$/, '');
}

/**
 * Why a kubeconfig did not load, without its text: js-yaml's message quotes the lines around the
 * error, which may hold a token or a key. Its reason and position only; any other error's first line.
 */
export function kubeconfigProblem(err: unknown): string {
  const e = err as { reason?: unknown; mark?: { line?: unknown; column?: unknown }; message?: unknown };
  if (typeof e?.reason === 'string') {
    const at = typeof e.mark?.line === 'number' && typeof e.mark.column === 'number' ? ` (line ${e.mark.line + 1}, column ${e.mark.column + 1})` : '';
    return `${e.reason}${at}`;
  }
  return String(e?.message ?? err).split('\n')[0]!.slice(0, 200);
}

/** Builds a KubeConfig; throws Error with an actionable message when the source is unusable. */
export function createKubeConfig(source: KubeConfigSource): KubeConfig {
  if (typeof source !== 'object' || source === null) throw new Error('Kubernetes API settings must be an object');
  const kc = new KubeConfig();
  kc.addAuthenticator(new TokenFileAuthenticator());

  if ('inCluster' in source) {
    const env = source.env ?? process.env;
    const dir = source.serviceAccountDir ?? IN_CLUSTER_SERVICE_ACCOUNT_DIR;
    const host = env.KUBERNETES_SERVICE_HOST;
    const port = env.KUBERNETES_SERVICE_PORT || '443';
    if (!host) throw new Error('not running in a Kubernetes pod: KUBERNETES_SERVICE_HOST is not set (configure an API server or a kubeconfig instead)');
    const tokenFile = join(dir, 'token');
    const caFile = join(dir, 'ca.crt');
    for (const f of [tokenFile, caFile]) {
      if (!existsSync(f)) throw new Error(`in-cluster Kubernetes credentials not found: ${f} is missing (is automountServiceAccountToken disabled?)`);
    }
    const server = httpsServerUrl(`https://${host.includes(':') ? `[${host}]` : host}:${port}`, 'in-cluster API server');
    kc.loadFromOptions({
      clusters: [{ name: 'in-cluster', server, caFile, skipTLSVerify: false }],
      users: [tokenFileUser('in-cluster', tokenFile)],
      contexts: [{ name: 'in-cluster', cluster: 'in-cluster', user: 'in-cluster' }],
      currentContext: 'in-cluster',
    });
    return kc;
  }

  if ('server' in source) {
    if ((source as { skipTLSVerify?: unknown }).skipTLSVerify === true) throw new Error('skipTLSVerify is not supported: give the API server CA (caPem) instead');
    const server = httpsServerUrl(source.server, 'Kubernetes API server');
    if (source.token !== undefined && source.tokenFile !== undefined) throw new Error('give either token or tokenFile for the Kubernetes API server, not both');
    if (source.caPem !== undefined && source.caFile !== undefined) throw new Error('give either caPem or caFile for the Kubernetes API server, not both');
    let user: User = { name: 'explicit' };
    if (source.token !== undefined) {
      if (source.token === '' || /\s/.test(source.token)) throw new Error('the Kubernetes API token must be non-empty and hold no whitespace');
      user = { name: 'explicit', token: source.token };
    } else if (source.tokenFile !== undefined) {
      if (!existsSync(source.tokenFile)) throw new Error(`Kubernetes API token file ${source.tokenFile} does not exist`);
      user = tokenFileUser('explicit', source.tokenFile);
    }
    kc.loadFromOptions({
      clusters: [
        {
          name: 'explicit',
          server,
          skipTLSVerify: false,
          ...(source.caPem === undefined ? {} : { caData: Buffer.from(source.caPem, 'utf8').toString('base64') }),
          ...(source.caFile === undefined ? {} : { caFile: source.caFile }),
        },
      ],
      users: [user],
      contexts: [{ name: 'explicit', cluster: 'explicit', user: 'explicit' }],
      currentContext: 'explicit',
    });
    return kc;
  }

  if ('kubeconfig' in source) {
    try {
      kc.loadFromFile(source.kubeconfig);
    } catch (err) {
      throw new Error(`cannot load kubeconfig ${source.kubeconfig}: ${kubeconfigProblem(err)}`, { cause: err });
    }
    if (source.context !== undefined) {
      if (!kc.getContextObject(source.context)) throw new Error(`kubeconfig ${source.kubeconfig} has no context ${JSON.stringify(source.context)}`);
      kc.setCurrentContext(source.context);
    }
    const cluster = kc.getCurrentCluster();
    if (!cluster) throw new Error(`kubeconfig ${source.kubeconfig}: the current context names no cluster`);
    if (cluster.skipTLSVerify) throw new Error(`kubeconfig ${source.kubeconfig}: cluster ${cluster.name} sets insecure-skip-tls-verify, which meshcert refuses`);
    httpsServerUrl(cluster.server, `kubeconfig cluster ${cluster.name} server`);
    return kc;
  }

  throw new Error('Kubernetes API settings need one of: inCluster, server, kubeconfig');
}

// ---------------------------------------------------------------------------------------------
// Watch transport

export interface WatchOptions {
  /** Server-side watch timeoutSeconds is picked in [min, 2×min) per request (client-go style). Default 300. */
  readonly minTimeoutSeconds?: number;
  /** Time allowed for the watch response headers. Default 10000. */
  readonly connectTimeoutMs?: number;
  /** Silence tolerated past timeoutSeconds before the stream is considered dead. Default 30000. */
  readonly idleGraceMs?: number;
}

type WatchCallback = (phase: string, apiObj: any, watchObj?: any) => void; // eslint-disable-line @typescript-eslint/no-explicit-any
type WatchDone = (err: any) => void; // eslint-disable-line @typescript-eslint/no-explicit-any

const MAX_WATCH_LINE = 16 * 1024 * 1024;
/** A watch ended sooner than this with no event is an error (client-go: "very short watch"). */
const SHORT_WATCH_MS = 1000;

/**
 * Watches re-made every 1-2 min (not client-go's 5-10): a stream that goes silent without closing
 * (a half-open connection, a stalled proxy) is noticed within ~2.5 min, not ~10, so node
 * authorization stops answering from a stale view, and a new namespace gets its root ConfigMap, sooner.
 */
export const PROMPT_WATCH: WatchOptions = { minTimeoutSeconds: 60 };
const MAX_ERROR_BODY = 64 * 1024;

/** An HTTP error from the API server, shaped as ListWatch expects (`statusCode`, 410 handling). */
export class KubeHttpError extends Error {
  override readonly name = 'KubeHttpError';
  readonly statusCode: number;
  readonly reason: string | undefined;

  constructor(statusCode: number, message: string, reason?: string) {
    super(message);
    this.statusCode = statusCode;
    this.reason = reason;
  }
}

/**
 * Watch over node:http(s) with the KubeConfig's TLS and credentials. Differences from 1.4's Watch:
 * a connect timeout and an idle timeout; `timeoutSeconds` and `allowWatchBookmarks` are sent; an
 * abort through the returned controller ends the stream silently (no `done`); a non-200 answer
 * reports the API server's Status message. `done` is always called before the promise resolves
 * when the watch could not be established, so ListWatch.start() has seen the error when it resolves.
 */
export class StreamingWatch extends Watch {
  private readonly opts: Required<WatchOptions>;
  private readonly transform: ((obj: unknown) => unknown) | undefined;
  private readonly active = new Set<AbortController>();
  /** Called synchronously at the start of every watch request (see KubeInformer's sync signal). */
  beforeWatch: (() => void) | undefined;
  /** Set while the owning informer is stopped: a watch ListWatch opens late (after a list that was in flight) is not started. */
  closed = false;

  constructor(config: KubeConfig, opts: WatchOptions = {}, transform?: (obj: unknown) => unknown) {
    super(config);
    this.opts = {
      minTimeoutSeconds: opts.minTimeoutSeconds ?? 300,
      connectTimeoutMs: opts.connectTimeoutMs ?? 10_000,
      idleGraceMs: opts.idleGraceMs ?? 30_000,
    };
    this.transform = transform;
  }

  /** Aborts every open watch of this transport. */
  abortAll(): void {
    for (const c of [...this.active]) c.abort();
  }

  override async watch(
    path: string,
    queryParams: Record<string, string | number | boolean | undefined>,
    callback: WatchCallback,
    done: WatchDone,
  ): Promise<AbortController> {
    const controller = new AbortController();
    if (this.closed) return controller;
    this.beforeWatch?.();
    const cluster = this.config.getCurrentCluster();
    if (!cluster) {
      done(new Error('no current cluster in the Kubernetes configuration'));
      return controller;
    }
    const url = new URL(cluster.server.replace(/\/+$/, '') + path);
    url.searchParams.set('watch', 'true');
    url.searchParams.set('allowWatchBookmarks', 'true');
    const min = Math.max(1, this.opts.minTimeoutSeconds);
    url.searchParams.set('timeoutSeconds', String(min + Math.floor(Math.random() * min)));
    for (const [k, v] of Object.entries(queryParams ?? {})) if (v !== undefined) url.searchParams.set(k, String(v));
    const idleMs = Number(url.searchParams.get('timeoutSeconds')) * 1000 + this.opts.idleGraceMs;

    const reqOpts: https.RequestOptions = { method: 'GET', headers: { accept: 'application/json' } };
    try {
      await this.config.applyToHTTPSOptions(reqOpts);
    } catch (err) {
      done(err);
      return controller;
    }

    this.active.add(controller);
    return new Promise<AbortController>((resolve) => {
      let finished = false;
      let resolved = false;
      let idleTimer: NodeJS.Timeout | undefined;
      const settle = (): void => {
        if (!resolved) {
          resolved = true;
          resolve(controller);
        }
      };
      const finish = (err: unknown, notify = true): void => {
        if (finished) return;
        finished = true;
        clearTimeout(connectTimer);
        clearTimeout(idleTimer);
        this.active.delete(controller);
        request.destroy();
        if (notify && !controller.signal.aborted) done(err);
        settle();
      };
      const connectTimer = setTimeout(
        () => finish(new Error(`watch ${path}: no answer from the API server within ${this.opts.connectTimeoutMs} ms`)),
        this.opts.connectTimeoutMs,
      );
      controller.signal.addEventListener('abort', () => finish(null, false), { once: true });

      const transport = url.protocol === 'http:' ? http : https;
      const request = transport.request(url, reqOpts, (res) => {
        clearTimeout(connectTimer);
        const status = res.statusCode ?? 0;
        if (status !== 200) {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (c: Buffer) => {
            size += c.length;
            if (size <= MAX_ERROR_BODY) chunks.push(c);
          });
          res.on('error', (err) => finish(err));
          res.on('end', () => {
            const { message, reason } = statusMessage(Buffer.concat(chunks).toString('utf8'));
            finish(new KubeHttpError(status, `watch ${path} failed: HTTP ${status}${message ? `: ${message}` : ''}`, reason));
          });
          return;
        }
        settle();
        const openedAt = performance.now();
        let events = 0;
        let buffered = '';
        const armIdle = (): void => {
          clearTimeout(idleTimer);
          // A silent stream past its own timeout is dead (half-open connection): end it cleanly so
          // the ListWatch re-watches from its resourceVersion.
          idleTimer = setTimeout(() => finish(null), idleMs);
        };
        armIdle();
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          armIdle();
          buffered += chunk;
          let nl: number;
          while ((nl = buffered.indexOf('\n')) !== -1) {
            const line = buffered.slice(0, nl).trim();
            buffered = buffered.slice(nl + 1);
            if (line) {
              events++;
              this.dispatchSafely(line, callback, finish);
            }
            if (finished) return;
          }
          if (buffered.length > MAX_WATCH_LINE) finish(new Error(`watch ${path}: event larger than ${MAX_WATCH_LINE} bytes`));
        });
        res.on('error', (err) => finish(err));
        res.on('close', () => {
          if (!res.complete) finish(new Error(`watch ${path}: connection reset by the API server`));
        });
        res.on('end', () => {
          const line = buffered.trim();
          if (line) {
            events++;
            this.dispatchSafely(line, callback, finish);
          }
          // Ended at once with nothing (a proxy or API server closing watches): an error, so the
          // owner's backoff applies, as client-go's "very short watch"; a clean end is re-watched
          // at once, which here would be a tight loop of requests.
          if (events === 0 && performance.now() - openedAt < SHORT_WATCH_MS) finish(new Error(`watch ${path}: the API server ended the watch at once with no event (a very short watch)`));
          else finish(null);
        });
      });
      request.on('error', (err) => finish(err));
      request.end();
    });
  }

  /**
   * A throwing event handler ends the stream with that error (ListWatch emits 'error'; its owner
   * restarts it) instead of crashing the process from a socket callback. Handlers should not
   * throw: ListWatch has already stored the object, so the event is not delivered to them again.
   */
  private dispatchSafely(line: string, callback: WatchCallback, finish: (err: unknown) => void): void {
    try {
      // ListWatch's handler is async: its throw arrives as a rejected promise, not here.
      const pending: unknown = this.dispatch(line, callback);
      if (pending instanceof Promise) pending.catch(finish);
    } catch (err) {
      finish(err);
    }
  }

  private dispatch(line: string, callback: WatchCallback): unknown {
    let data: { type?: unknown; object?: unknown };
    try {
      data = JSON.parse(line) as { type?: unknown; object?: unknown };
    } catch {
      return; // as the library does: an unparsable line is skipped
    }
    if (typeof data !== 'object' || data === null || typeof data.type !== 'string' || typeof data.object !== 'object' || data.object === null) return;
    const isObjectEvent = data.type === 'ADDED' || data.type === 'MODIFIED' || data.type === 'DELETED';
    const obj = isObjectEvent && this.transform ? this.transform(data.object) : data.object;
    return callback(data.type, obj, data);
  }
}

function statusMessage(body: string): { message: string | undefined; reason: string | undefined } {
  try {
    const s = JSON.parse(body) as { message?: unknown; reason?: unknown };
    return {
      message: typeof s.message === 'string' ? s.message.slice(0, 300) : undefined,
      reason: typeof s.reason === 'string' ? s.reason : undefined,
    };
  } catch {
    return { message: undefined, reason: undefined };
  }
}

// ---------------------------------------------------------------------------------------------
// Informers

export type InformerKind = 'pods' | 'configmaps' | 'namespaces';

export interface InformerKindMap {
  pods: V1Pod;
  configmaps: V1ConfigMap;
  namespaces: V1Namespace;
}

export interface InformerOptions<T> {
  /** Only this namespace (pods, configmaps); default all namespaces. */
  readonly namespace?: string;
  readonly labelSelector?: string;
  readonly fieldSelector?: string;
  /** List page size (limit/continue). Default 500. */
  readonly pageSize?: number;
  /**
   * Applied to every listed and watched object before it is cached: keep only the fields you
   * read (a cluster's pods are large). Must keep metadata.name, namespace and resourceVersion.
   */
  readonly transform?: (obj: T) => T;
}

/**
 * The library's ListWatch plus: stop() also aborts the open watch, and onSynced() fires every time
 * a full list has been applied to the cache (the first one, and each re-list after 410 Gone).
 */
export class KubeInformer<T extends KubernetesObject> extends ListWatch<T> {
  readonly #stream: StreamingWatch;
  readonly #synced: Array<(resourceVersion: string) => void> = [];

  constructor(path: string, stream: StreamingWatch, listFn: () => Promise<KubernetesListObject<T>>, labelSelector?: string, fieldSelector?: string) {
    let listedRv: string | undefined;
    super(
      path,
      stream,
      async () => {
        const list = await listFn();
        listedRv = list.metadata?.resourceVersion ?? '';
        return list;
      },
      false,
      labelSelector,
      fieldSelector,
    );
    this.#stream = stream;
    // ListWatch applies a list's items synchronously, then immediately opens the watch.
    stream.beforeWatch = () => {
      if (listedRv === undefined) return;
      const rv = listedRv;
      listedRv = undefined;
      for (const cb of [...this.#synced]) cb(rv);
    };
  }

  onSynced(cb: (resourceVersion: string) => void): void {
    this.#synced.push(cb);
  }

  override async start(): Promise<void> {
    this.#stream.closed = false;
    await super.start();
  }

  override async stop(): Promise<void> {
    this.#stream.closed = true;
    await super.stop();
    this.#stream.abortAll();
  }
}

// ---------------------------------------------------------------------------------------------
// The client

export interface KubeClientOptions {
  /** Timeout of each non-watch API request. Default 10000. */
  readonly requestTimeoutMs?: number;
  readonly watch?: WatchOptions;
}

export interface KubeClient {
  readonly kubeConfig: KubeConfig;
  /** The API server URL (for messages). */
  readonly server: string;
  readonly core: CoreV1Api;
  readonly coordination: CoordinationV1Api;
  /** The watch options this client's informers use (for informers built beside makeInformer). */
  readonly watchOptions?: WatchOptions;
  makeInformer<K extends InformerKind>(kind: K, opts?: InformerOptions<InformerKindMap[K]>): KubeInformer<InformerKindMap[K]>;
}

function timeoutMiddleware(ms: number): ObservableMiddleware {
  return {
    pre: (ctx: RequestContext) => {
      ctx.setSignal(AbortSignal.timeout(ms));
      return new Observable(Promise.resolve(ctx));
    },
    post: (ctx: ResponseContext) => new Observable(Promise.resolve(ctx)),
  };
}

export function createKubeClient(source: KubeConfigSource | KubeConfig, opts: KubeClientOptions = {}): KubeClient {
  const kc = source instanceof KubeConfig ? source : createKubeConfig(source);
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new Error('the Kubernetes configuration has no current cluster');
  const requestTimeoutMs = opts.requestTimeoutMs ?? 10_000;
  const configuration = createConfiguration({
    baseServer: new ServerConfiguration(cluster.server, {}),
    authMethods: { default: kc },
    middleware: [timeoutMiddleware(requestTimeoutMs)],
  });
  const core = new CoreV1Api(configuration);
  const coordination = new CoordinationV1Api(configuration);

  function makeInformer<K extends InformerKind>(kind: K, iopts: InformerOptions<InformerKindMap[K]> = {}): KubeInformer<InformerKindMap[K]> {
    type T = InformerKindMap[K];
    const { namespace, labelSelector, fieldSelector, transform } = iopts;
    const pageSize = iopts.pageSize ?? 500;
    if (!Number.isInteger(pageSize) || pageSize <= 0) throw new Error('pageSize must be a positive integer');
    if (kind === 'namespaces' && namespace !== undefined) throw new Error('namespaces are cluster-scoped: no namespace option');
    const path = kind === 'namespaces' ? '/api/v1/namespaces' : namespace === undefined ? `/api/v1/${kind}` : `/api/v1/namespaces/${encodeURIComponent(namespace)}/${kind}`;

    const listPage = (cont: string | undefined): Promise<KubernetesListObject<T>> => {
      const p = {
        ...(labelSelector === undefined ? {} : { labelSelector }),
        ...(fieldSelector === undefined ? {} : { fieldSelector }),
        limit: pageSize,
        ...(cont === undefined ? {} : { _continue: cont }),
      };
      switch (kind) {
        case 'pods':
          return (namespace === undefined ? core.listPodForAllNamespaces(p) : core.listNamespacedPod({ ...p, namespace })) as Promise<KubernetesListObject<T>>;
        case 'configmaps':
          return (namespace === undefined ? core.listConfigMapForAllNamespaces(p) : core.listNamespacedConfigMap({ ...p, namespace })) as Promise<KubernetesListObject<T>>;
        default:
          return core.listNamespace(p) as Promise<KubernetesListObject<T>>;
      }
    };

    const listAll = async (): Promise<KubernetesListObject<T>> => {
      for (let attempt = 0; ; attempt++) {
        const items: T[] = [];
        let cont: string | undefined;
        let rv = '';
        try {
          do {
            const page = await listPage(cont);
            for (const item of page.items ?? []) items.push(transform ? transform(item) : item);
            rv = page.metadata?.resourceVersion ?? rv;
            cont = page.metadata?._continue || undefined;
          } while (cont !== undefined);
        } catch (err) {
          // An expired continue token: start the list again (a fresh consistent snapshot).
          if (cont !== undefined && kubeStatusCode(err) === 410 && attempt < 2) continue;
          throw err;
        }
        return { metadata: { resourceVersion: rv }, items };
      }
    };

    const stream = new StreamingWatch(kc, opts.watch, transform as ((o: unknown) => unknown) | undefined);
    return new KubeInformer<T>(path, stream, listAll, labelSelector, fieldSelector);
  }

  return { kubeConfig: kc, server: cluster.server, core, coordination, makeInformer, ...(opts.watch === undefined ? {} : { watchOptions: opts.watch }) };
}

// ---------------------------------------------------------------------------------------------
// Errors

/** HTTP status of a failed API call (ApiException or KubeHttpError), if any. */
export function kubeStatusCode(err: unknown): number | undefined {
  if (err instanceof ApiException) return err.code;
  if (err instanceof KubeHttpError) return err.statusCode;
  const e = err as { statusCode?: unknown; code?: unknown } | null;
  if (e && typeof e.statusCode === 'number') return e.statusCode;
  return undefined;
}

/** One line about a failed API call, for logs and error messages (no bodies beyond the Status message). */
export function describeKubeError(err: unknown): string {
  const code = kubeStatusCode(err);
  if (err instanceof ApiException) {
    // 1.4 puts the raw response text in `body` (a Status JSON from a real API server).
    const body: unknown = err.body;
    const msg = typeof body === 'string' ? statusMessage(body).message : typeof (body as { message?: unknown } | null)?.message === 'string' ? String((body as { message: string }).message).slice(0, 300) : undefined;
    return `HTTP ${code}${msg ? `: ${msg}` : ''}`;
  }
  if (err instanceof Error) {
    const sys = (err as { code?: unknown }).code;
    const cause = err.cause instanceof Error ? `: ${err.cause.message}` : '';
    return `${err.message}${typeof sys === 'string' && !err.message.includes(sys) ? ` (${sys})` : ''}${cause}`.slice(0, 500);
  }
  return String(err).slice(0, 500);
}
