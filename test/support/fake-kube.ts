/**
 * A fake Kubernetes API server for tests: HTTPS on 127.0.0.1 (a throwaway CA, see `caPem`),
 * real Kubernetes JSON shapes, an in-memory store with one global resourceVersion counter.
 *
 *   const fake = await FakeKube.start({ token: 'test-token' });      // token: require this bearer
 *   const client = createKubeClient({ server: fake.url, caPem: fake.caPem, token: 'test-token' });
 *   fake.put('pods', fakePod({ namespace: 'a', name: 'p', node: 'n1', serviceAccount: 'sa' }));
 *   fake.delete('pods', 'a', 'p'); fake.get('pods', 'a', 'p'); fake.list('configmaps', 'ns');
 *   fake.cutWatches('pods');       // destroy open watch connections (client sees a reset)
 *   fake.endWatches('pods');       // end them cleanly (as a server-side timeout does)
 *   fake.compact();                // forget history: resuming a watch from an older RV gets 410
 *   fake.fail({ method: 'GET', path: /\/pods$/ }, { status: 503 }, 2);   // fault injection (clearFaults())
 *   fake.tokenReviewer = (spec) => ({ authenticated: true, user: serviceAccountUser('ns', 'sa'), audiences: spec.audiences });
 *   fake.requests                  // every request: method, path, query, authorization, body, status
 *   await fake.close();
 *
 * Kinds: pods, configmaps, secrets (core/v1, namespaced), namespaces (core/v1, cluster-scoped),
 * leases (coordination.k8s.io/v1, namespaced). Per kind: list (all namespaces or one; labelSelector,
 * fieldSelector, limit/continue), watch (resourceVersion resume from history, or synthetic ADDED
 * events when resourceVersion is ""/"0"; selector-aware ADDED/MODIFIED/DELETED; timeoutSeconds),
 * get, create (409 AlreadyExists), replace (409 Conflict on a stale metadata.resourceVersion,
 * unconditional without one, 404 when absent), patch (merge-patch, strategic-merge treated as
 * merge-patch, json-patch), delete (preconditions; pods return the object, others a Status).
 * Leases: spec.acquireTime/renewTime must be MicroTime with exactly six fractional digits, as the
 * real API server demands (a plain Date from @kubernetes/client-node 1.4 gets 400; use V1MicroTime).
 * Errors are `kind: Status` objects with the API server's reasons and messages.
 * Plus POST /apis/authentication.k8s.io/v1/tokenreviews answered by `tokenReviewer`, and
 * GET /openid/v1/jwks serving `serviceAccountKeys`.
 * Not modelled: graceful pod deletion (put a pod with metadata.deletionTimestamp instead),
 * subresources, server-side apply, bookmarks, admission.
 */
import { randomBytes, randomUUID, webcrypto } from 'node:crypto';
import https from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { x509 } from '../fixtures/csr.js';

export type FakeKind = 'pods' | 'configmaps' | 'secrets' | 'namespaces' | 'leases';

export interface FakeMeta {
  name: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  generateName?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  [k: string]: unknown;
}

export interface FakeObject {
  apiVersion?: string;
  kind?: string;
  metadata: FakeMeta;
  [k: string]: unknown;
}

export interface FakeRequest {
  readonly method: string;
  readonly path: string;
  readonly query: Readonly<Record<string, string>>;
  readonly watch: boolean;
  readonly authorization: string | undefined;
  readonly contentType: string | undefined;
  readonly body: unknown;
  /** HTTP status sent (a watch records 200 when the stream opens). */
  status: number | undefined;
}

export interface TokenReviewSpec {
  token: string;
  audiences?: string[];
}

/** A TokenReview status to return, or `{ httpStatus }` to fail the request. */
export type TokenReviewAnswer =
  | { authenticated: boolean; user?: { username?: string; uid?: string; groups?: string[]; extra?: Record<string, string[]> }; audiences?: string[]; error?: string }
  | { httpStatus: number; message?: string };

/** A TokenReview's user for a service account's token, as the API server gives it (username and groups). */
export function serviceAccountUser(namespace: string, serviceAccount: string, extra?: Record<string, string[]>): { username: string; groups: string[]; extra?: Record<string, string[]> } {
  return {
    username: `system:serviceaccount:${namespace}:${serviceAccount}`,
    groups: ['system:serviceaccounts', `system:serviceaccounts:${namespace}`, 'system:authenticated'],
    ...(extra ? { extra } : {}),
  };
}

export interface FakeKubeOptions {
  /** When set, every request must carry `Authorization: Bearer <token>` (else 401). */
  readonly token?: string;
}

interface KindInfo {
  readonly kind: string;
  readonly apiVersion: string;
  /** Resource name as used in messages: plural, with the group for non-core kinds. */
  readonly resource: string;
  readonly namespaced: boolean;
  /** Field selectors the real API server accepts for this kind (besides metadata.name/namespace). */
  readonly fields: readonly string[];
}

const KINDS: Record<FakeKind, KindInfo> = {
  pods: {
    kind: 'Pod',
    apiVersion: 'v1',
    resource: 'pods',
    namespaced: true,
    fields: ['spec.nodeName', 'spec.serviceAccountName', 'spec.restartPolicy', 'spec.schedulerName', 'status.phase', 'status.podIP', 'status.nominatedNodeName'],
  },
  configmaps: { kind: 'ConfigMap', apiVersion: 'v1', resource: 'configmaps', namespaced: true, fields: [] },
  secrets: { kind: 'Secret', apiVersion: 'v1', resource: 'secrets', namespaced: true, fields: ['type'] },
  namespaces: { kind: 'Namespace', apiVersion: 'v1', resource: 'namespaces', namespaced: false, fields: ['status.phase'] },
  leases: { kind: 'Lease', apiVersion: 'coordination.k8s.io/v1', resource: 'leases.coordination.k8s.io', namespaced: true, fields: [] },
};

type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';

interface HistoryEntry {
  readonly rv: number;
  readonly kind: FakeKind;
  readonly type: EventType;
  readonly object: FakeObject;
  /** The object before the change (MODIFIED), for selector transitions. */
  readonly prev: FakeObject | undefined;
}

interface OpenWatch {
  readonly kind: FakeKind;
  readonly namespace: string | undefined;
  readonly labels: LabelSelector;
  readonly fields: FieldSelector;
  readonly res: ServerResponse;
  readonly socket: Socket;
  timer: NodeJS.Timeout | undefined;
}

interface Fault {
  readonly method: string | undefined;
  readonly path: string | RegExp | undefined;
  readonly watch: boolean | undefined;
  readonly status: number;
  readonly message: string | undefined;
  /** Never answer (the request stays open until the client gives up or close()). */
  readonly hang: boolean;
  remaining: number;
}

class HttpError extends Error {
  constructor(
    readonly code: number,
    readonly reason: string,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
  }
}

const clone = <T>(v: T): T => structuredClone(v);

// ---------------------------------------------------------------------------------------------
// TLS material (one CA + server certificate per test process)

export interface FakeTls {
  readonly caPem: string;
  readonly certPem: string;
  readonly keyPem: string;
}

let tlsPromise: Promise<FakeTls> | undefined;

export function fakeKubeTls(): Promise<FakeTls> {
  tlsPromise ??= makeTls();
  return tlsPromise;
}

async function makeTls(): Promise<FakeTls> {
  const alg = { name: 'ECDSA', namedCurve: 'P-256' } as const;
  const sign = { name: 'ECDSA', hash: 'SHA-256' } as const;
  const subtle = webcrypto.subtle as unknown as SubtleCrypto;
  const caKeys = (await subtle.generateKey(alg, true, ['sign', 'verify'])) as CryptoKeyPair;
  const notBefore = new Date(Date.now() - 60_000);
  const notAfter = new Date(Date.now() + 24 * 3600_000);
  const ca = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomBytes(8).toString('hex').replace(/^[89a-f]/, '1'),
    name: 'CN=fake-kube test CA',
    notBefore,
    notAfter,
    keys: caKeys,
    signingAlgorithm: sign,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(caKeys.publicKey),
    ],
  });
  const leafKeys = (await subtle.generateKey(alg, true, ['sign', 'verify'])) as CryptoKeyPair;
  const leaf = await x509.X509CertificateGenerator.create({
    serialNumber: randomBytes(8).toString('hex').replace(/^[89a-f]/, '1'),
    subject: 'CN=fake-kube',
    issuer: ca.subject,
    notBefore,
    notAfter,
    publicKey: leafKeys.publicKey,
    signingKey: caKeys.privateKey,
    signingAlgorithm: sign,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension([
        { type: 'ip', value: '127.0.0.1' },
        { type: 'dns', value: 'localhost' },
      ]),
      await x509.AuthorityKeyIdentifierExtension.create(caKeys.publicKey),
    ],
  });
  const pkcs8 = Buffer.from(await subtle.exportKey('pkcs8', leafKeys.privateKey));
  const keyPem = `-----BEGIN PRIVATE KEY-----\n${pkcs8.toString('base64').replace(/.{64}/g, '$&\n').replace(/\n?$/, '\n')}-----END PRIVATE KEY-----\n`;
  return { caPem: ca.toString('pem') + '\n', certPem: leaf.toString('pem') + '\n', keyPem };
}

// ---------------------------------------------------------------------------------------------
// Helpers for tests

export interface FakePodSpec {
  namespace: string;
  name: string;
  node?: string;
  serviceAccount?: string;
  phase?: string;
  uid?: string;
  deletionTimestamp?: string;
  labels?: Record<string, string>;
}

/** A Pod shaped as the API server stores it (only the fields meshcert reads, plus a container). */
export function fakePod(p: FakePodSpec): FakeObject {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: p.name,
      namespace: p.namespace,
      ...(p.uid ? { uid: p.uid } : {}),
      ...(p.labels ? { labels: p.labels } : {}),
      ...(p.deletionTimestamp ? { deletionTimestamp: p.deletionTimestamp, deletionGracePeriodSeconds: 30 } : {}),
    },
    spec: {
      ...(p.node ? { nodeName: p.node } : {}),
      serviceAccountName: p.serviceAccount ?? 'default',
      containers: [{ name: 'app', image: 'example.invalid/app:1' }],
    },
    status: { phase: p.phase ?? 'Running' },
  };
}

/** A Kubernetes Status object, as the API server returns on errors. */
export function statusObject(code: number, reason: string, message: string, details?: Record<string, unknown>): Record<string, unknown> {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, ...(details ? { details } : {}), code };
}

// ---------------------------------------------------------------------------------------------
// Selectors

type LabelReq = { key: string; op: 'in' | 'notin' | 'exists' | '!exists'; values: string[] };
type LabelSelector = LabelReq[];
type FieldSelector = Array<{ path: string; op: '=' | '!='; value: string }>;

function splitTopLevel(s: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of s) {
    if (ch === '(') depth++;
    if (ch === ')') depth--;
    if (ch === ',' && depth === 0) {
      out.push(cur);
      cur = '';
    } else cur += ch;
  }
  out.push(cur);
  return out.map((t) => t.trim()).filter((t) => t !== '');
}

export function parseLabelSelector(raw: string | undefined): LabelSelector {
  if (!raw) return [];
  return splitTopLevel(raw).map((term) => {
    let m: RegExpExecArray | null;
    if ((m = /^([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)$/.exec(term))) {
      return { key: m[1]!, op: m[2] as 'in' | 'notin', values: m[3]!.split(',').map((v) => v.trim()).filter(Boolean) };
    }
    if ((m = /^!\s*([\w./-]+)$/.exec(term))) return { key: m[1]!, op: '!exists', values: [] };
    if ((m = /^([\w./-]+)\s*(==|=|!=)\s*([\w./-]*)$/.exec(term))) {
      return { key: m[1]!, op: m[2] === '!=' ? 'notin' : 'in', values: [m[3]!] };
    }
    if ((m = /^([\w./-]+)$/.exec(term))) return { key: m[1]!, op: 'exists', values: [] };
    throw new HttpError(400, 'BadRequest', `unable to parse requirement: ${JSON.stringify(term)}`);
  });
}

function labelsMatch(sel: LabelSelector, labels: Record<string, string> | undefined): boolean {
  const l = labels ?? {};
  return sel.every((r) => {
    const has = Object.hasOwn(l, r.key);
    switch (r.op) {
      case 'exists':
        return has;
      case '!exists':
        return !has;
      case 'in':
        return has && r.values.includes(l[r.key]!);
      case 'notin':
        return !has || !r.values.includes(l[r.key]!);
    }
  });
}

function parseFieldSelector(raw: string | undefined, info: KindInfo): FieldSelector {
  if (!raw) return [];
  return raw.split(',').map((term) => {
    const m = /^([\w.]+)\s*(==|=|!=)\s*(.*)$/.exec(term.trim());
    if (!m) throw new HttpError(400, 'BadRequest', `invalid field selector: ${JSON.stringify(term)}`);
    const path = m[1]!;
    if (path !== 'metadata.name' && path !== 'metadata.namespace' && !info.fields.includes(path)) {
      throw new HttpError(400, 'BadRequest', `field label not supported: ${path}`);
    }
    return { path, op: m[2] === '!=' ? '!=' : '=', value: m[3]! };
  });
}

function fieldValue(obj: FakeObject, path: string): string {
  let cur: unknown = obj;
  for (const part of path.split('.')) {
    if (typeof cur !== 'object' || cur === null) return '';
    cur = (cur as Record<string, unknown>)[part];
  }
  return cur === undefined || cur === null ? '' : String(cur);
}

function fieldsMatch(sel: FieldSelector, obj: FakeObject): boolean {
  return sel.every((f) => (fieldValue(obj, f.path) === f.value) === (f.op === '='));
}

// ---------------------------------------------------------------------------------------------
// Patches

function mergePatch(target: unknown, patch: unknown): unknown {
  if (typeof patch !== 'object' || patch === null || Array.isArray(patch)) return clone(patch);
  const out: Record<string, unknown> = typeof target === 'object' && target !== null && !Array.isArray(target) ? { ...(target as Record<string, unknown>) } : {};
  for (const [k, v] of Object.entries(patch as Record<string, unknown>)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

function jsonPointer(path: string): string[] {
  if (path === '') return [];
  if (!path.startsWith('/')) throw new HttpError(422, 'Invalid', `invalid JSON pointer ${JSON.stringify(path)}`);
  return path.slice(1).split('/').map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
}

function jsonPatch(doc: unknown, ops: unknown): unknown {
  if (!Array.isArray(ops)) throw new HttpError(400, 'BadRequest', 'json patch must be an array of operations');
  let root = clone(doc);
  for (const op of ops as Array<{ op?: string; path?: string; value?: unknown }>) {
    const parts = jsonPointer(String(op.path ?? ''));
    if (parts.length === 0) {
      if (op.op === 'replace' || op.op === 'add') root = clone(op.value);
      else throw new HttpError(422, 'Invalid', `unsupported json patch on the root: ${op.op}`);
      continue;
    }
    let parent: unknown = root;
    for (const p of parts.slice(0, -1)) {
      parent = (parent as Record<string, unknown> | undefined)?.[p];
      if (typeof parent !== 'object' || parent === null) throw new HttpError(422, 'Invalid', `json patch path ${op.path} does not exist`);
    }
    const last = parts[parts.length - 1]!;
    const rec = parent as Record<string, unknown>;
    const arr = Array.isArray(parent) ? (parent as unknown[]) : undefined;
    switch (op.op) {
      case 'add':
        if (arr) arr.splice(last === '-' ? arr.length : Number(last), 0, clone(op.value));
        else rec[last] = clone(op.value);
        break;
      case 'replace':
        if (!(last in rec)) throw new HttpError(422, 'Invalid', `json patch replace: ${op.path} does not exist`);
        rec[last] = clone(op.value);
        break;
      case 'remove':
        if (!(last in rec)) throw new HttpError(422, 'Invalid', `json patch remove: ${op.path} does not exist`);
        if (arr) arr.splice(Number(last), 1);
        else delete rec[last];
        break;
      case 'test':
        if (JSON.stringify(rec[last]) !== JSON.stringify(op.value)) {
          throw new HttpError(422, 'Invalid', `json patch test failed at ${op.path}`);
        }
        break;
      default:
        throw new HttpError(422, 'Invalid', `unsupported json patch operation ${JSON.stringify(op.op)}`);
    }
  }
  return root;
}

// ---------------------------------------------------------------------------------------------
// The server

const MAX_BODY = 4 * 1024 * 1024;

export class FakeKube {
  readonly url: string;
  readonly caPem: string;
  readonly port: number;
  readonly requests: FakeRequest[] = [];
  /**
   * The service-account keys served at GET /openid/v1/jwks (a JWK Set's `keys`); undefined: 404,
   * as from an API server that does not serve them.
   */
  serviceAccountKeys: unknown[] | undefined;
  /** Delay before each request other than a watch is served, in ms (a slow API server). */
  latencyMs = 0;
  /** Answers TokenReviews; default: not authenticated. */
  tokenReviewer: (spec: TokenReviewSpec) => TokenReviewAnswer | Promise<TokenReviewAnswer> = () => ({ authenticated: false, error: 'token not recognised by the fake' });

  private readonly server: https.Server;
  private readonly opts: FakeKubeOptions;
  private readonly store = new Map<FakeKind, Map<string, FakeObject>>();
  private readonly history: HistoryEntry[] = [];
  private readonly watches = new Set<OpenWatch>();
  private readonly faults: Fault[] = [];
  private rv = 1000;
  /** Watches may resume from RVs >= this. */
  private oldestRv = 1000;

  private constructor(server: https.Server, tls: FakeTls, opts: FakeKubeOptions) {
    this.server = server;
    this.opts = opts;
    this.caPem = tls.caPem;
    this.port = (server.address() as AddressInfo).port;
    this.url = `https://127.0.0.1:${this.port}`;
    for (const k of Object.keys(KINDS) as FakeKind[]) this.store.set(k, new Map());
  }

  static async start(opts: FakeKubeOptions = {}): Promise<FakeKube> {
    const tls = await fakeKubeTls();
    const server = https.createServer({ cert: tls.certPem, key: tls.keyPem, minVersion: 'TLSv1.2' });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    const fake = new FakeKube(server, tls, opts);
    server.on('request', (req: IncomingMessage, res: ServerResponse) => {
      void fake.handle(req, res);
    });
    return fake;
  }

  async close(): Promise<void> {
    for (const w of [...this.watches]) this.closeWatch(w, true);
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  /** The current global resourceVersion. */
  get resourceVersion(): string {
    return String(this.rv);
  }

  // -- store API for tests ----------------------------------------------------------------------

  /** Creates or replaces an object (no resourceVersion check); open watches see ADDED or MODIFIED. */
  put(kind: FakeKind, obj: FakeObject): FakeObject {
    const info = KINDS[kind];
    const ns = info.namespaced ? obj.metadata.namespace ?? 'default' : undefined;
    const k = this.key(kind, ns, obj.metadata.name);
    const prev = this.store.get(kind)!.get(k);
    return clone(this.write(kind, ns, obj, prev));
  }

  /** Deletes an object; returns false when absent. Open watches see DELETED. */
  delete(kind: FakeKind, namespace: string | undefined, name: string): boolean {
    const ns = KINDS[kind].namespaced ? namespace ?? 'default' : undefined;
    const k = this.key(kind, ns, name);
    const prev = this.store.get(kind)!.get(k);
    if (!prev) return false;
    this.remove(kind, k, prev);
    return true;
  }

  get(kind: FakeKind, namespace: string | undefined, name: string): FakeObject | undefined {
    const ns = KINDS[kind].namespaced ? namespace ?? 'default' : undefined;
    const obj = this.store.get(kind)!.get(this.key(kind, ns, name));
    return obj ? clone(obj) : undefined;
  }

  list(kind: FakeKind, namespace?: string): FakeObject[] {
    return [...this.store.get(kind)!.values()].filter((o) => namespace === undefined || o.metadata.namespace === namespace).map(clone);
  }

  /** Number of open watch streams (of a kind). */
  watchCount(kind?: FakeKind): number {
    return [...this.watches].filter((w) => kind === undefined || w.kind === kind).length;
  }

  /** Destroys open watch connections abruptly (the client sees a reset, not a clean end). */
  cutWatches(kind?: FakeKind): number {
    let n = 0;
    for (const w of [...this.watches]) {
      if (kind !== undefined && w.kind !== kind) continue;
      this.closeWatch(w, true);
      n++;
    }
    return n;
  }

  /** Ends open watch streams cleanly, as a server-side timeoutSeconds does. */
  endWatches(kind?: FakeKind): number {
    let n = 0;
    for (const w of [...this.watches]) {
      if (kind !== undefined && w.kind !== kind) continue;
      this.closeWatch(w, false);
      n++;
    }
    return n;
  }

  /** Sends an ERROR event (410 Expired by default) on open watches, then ends them. */
  expireWatches(kind?: FakeKind): void {
    for (const w of [...this.watches]) {
      if (kind !== undefined && w.kind !== kind) continue;
      this.send(w, 'ERROR', statusObject(410, 'Expired', `too old resource version: 1 (${this.rv})`) as unknown as FakeObject);
      this.closeWatch(w, false);
    }
  }

  /** Forgets the event history: resuming a watch from an older resourceVersion gets 410 Expired. */
  compact(): void {
    this.history.length = 0;
    this.oldestRv = this.rv;
  }

  /**
   * Fails the next `times` matching requests with a Status of `status` (a watch that matches is
   * refused before its stream opens), or with `{ hang: true }` never answers them.
   */
  fail(match: { method?: string; path?: string | RegExp; watch?: boolean }, response: { status: number; message?: string } | { hang: true }, times = 1): void {
    const hang = 'hang' in response;
    this.faults.push({
      method: match.method?.toUpperCase(),
      path: match.path,
      watch: match.watch,
      status: hang ? 0 : response.status,
      message: hang ? undefined : response.message,
      hang,
      remaining: times,
    });
  }

  clearFaults(): void {
    this.faults.length = 0;
  }

  clearRequests(): void {
    this.requests.length = 0;
  }

  // -- internals -----------------------------------------------------------------------------

  private key(kind: FakeKind, ns: string | undefined, name: string): string {
    return KINDS[kind].namespaced ? `${ns}/${name}` : name;
  }

  private write(kind: FakeKind, ns: string | undefined, input: FakeObject, prev: FakeObject | undefined): FakeObject {
    const info = KINDS[kind];
    const obj = clone(input);
    this.rv++;
    obj.apiVersion = info.apiVersion;
    obj.kind = info.kind;
    obj.metadata = {
      ...obj.metadata,
      ...(ns === undefined ? {} : { namespace: ns }),
      uid: prev?.metadata.uid ?? obj.metadata.uid ?? randomUUID(),
      resourceVersion: String(this.rv),
      creationTimestamp: prev?.metadata.creationTimestamp ?? obj.metadata.creationTimestamp ?? new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
    };
    if (ns === undefined) delete obj.metadata.namespace;
    this.store.get(kind)!.set(this.key(kind, ns, obj.metadata.name), obj);
    this.emit({ rv: this.rv, kind, type: prev ? 'MODIFIED' : 'ADDED', object: obj, prev });
    return obj;
  }

  private remove(kind: FakeKind, k: string, prev: FakeObject): FakeObject {
    this.store.get(kind)!.delete(k);
    this.rv++;
    const obj = clone(prev);
    obj.metadata.resourceVersion = String(this.rv);
    this.emit({ rv: this.rv, kind, type: 'DELETED', object: obj, prev: undefined });
    return obj;
  }

  private emit(entry: HistoryEntry): void {
    this.history.push(entry);
    if (this.history.length > 10_000) {
      const dropped = this.history.splice(0, this.history.length - 10_000);
      this.oldestRv = dropped[dropped.length - 1]!.rv;
    }
    if (this.held) this.held.push(entry);
    else for (const w of this.watches) this.deliver(w, entry);
  }

  /** Events written while watches are held, sent when they are released; undefined: not held. */
  private held: HistoryEntry[] | undefined;

  /**
   * Holds every watch event back (the store and lists see the change at once), as a watcher that
   * lags behind the API server would see it; `releaseWatchEvents` sends them in order.
   */
  holdWatchEvents(): void {
    this.held ??= [];
  }

  releaseWatchEvents(): void {
    const held = this.held ?? [];
    this.held = undefined;
    for (const entry of held) for (const w of this.watches) this.deliver(w, entry);
  }

  /** Sends `entry` on `w` as the selector-aware event the API server would send, if any. */
  private deliver(w: OpenWatch, entry: HistoryEntry): void {
    if (entry.kind !== w.kind) return;
    if (w.namespace !== undefined && entry.object.metadata.namespace !== w.namespace) return;
    const matches = (o: FakeObject | undefined): boolean => o !== undefined && labelsMatch(w.labels, o.metadata.labels) && fieldsMatch(w.fields, o);
    const now = matches(entry.object);
    if (entry.type === 'MODIFIED') {
      const before = matches(entry.prev);
      if (before && now) this.send(w, 'MODIFIED', entry.object);
      else if (now) this.send(w, 'ADDED', entry.object);
      else if (before) this.send(w, 'DELETED', entry.object);
      return;
    }
    if (now) this.send(w, entry.type, entry.object);
  }

  private send(w: OpenWatch, type: EventType | 'ERROR', object: FakeObject): void {
    if (w.res.writableEnded || w.res.destroyed) return;
    w.res.write(`${JSON.stringify({ type, object })}\n`);
  }

  private closeWatch(w: OpenWatch, abrupt: boolean): void {
    if (!this.watches.delete(w)) return;
    clearTimeout(w.timer);
    if (abrupt) w.socket.destroy();
    else w.res.end();
  }

  private takeFault(method: string, path: string, watch: boolean): Fault | undefined {
    const f = this.faults.find(
      (x) =>
        x.remaining > 0 &&
        (x.method === undefined || x.method === method) &&
        (x.watch === undefined || x.watch === watch) &&
        (x.path === undefined || (typeof x.path === 'string' ? x.path === path : x.path.test(path))),
    );
    if (f) {
      f.remaining--;
      if (f.remaining <= 0) this.faults.splice(this.faults.indexOf(f), 1);
    }
    return f;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'https://fake');
    const method = (req.method ?? 'GET').toUpperCase();
    const query = Object.fromEntries(url.searchParams.entries());
    const watch = method === 'GET' && (query.watch === 'true' || query.watch === '1');
    const entry: FakeRequest = {
      method,
      path: url.pathname,
      query,
      watch,
      authorization: req.headers.authorization,
      contentType: req.headers['content-type'],
      body: undefined,
      status: undefined,
    };
    this.requests.push(entry);
    const reply = (code: number, body: unknown): void => {
      entry.status = code;
      const text = JSON.stringify(body);
      res.writeHead(code, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
      res.end(text);
    };
    try {
      const raw = await readBody(req);
      // A slow API server (overloaded, throttled): every request but a watch is served this late.
      if (this.latencyMs > 0 && !watch) await new Promise((r) => setTimeout(r, this.latencyMs));
      if (raw.length > 0) {
        try {
          (entry as { body: unknown }).body = JSON.parse(raw.toString('utf8'));
        } catch {
          throw new HttpError(400, 'BadRequest', 'the request body is not valid JSON');
        }
      }
      if (this.opts.token !== undefined && req.headers.authorization !== `Bearer ${this.opts.token}`) {
        throw new HttpError(401, 'Unauthorized', 'Unauthorized');
      }
      const fault = this.takeFault(method, url.pathname, watch);
      if (fault?.hang) return;
      if (fault) throw new HttpError(fault.status, reasonFor(fault.status), fault.message ?? `injected failure (HTTP ${fault.status})`);

      if (url.pathname === '/apis/authentication.k8s.io/v1/tokenreviews') {
        if (method !== 'POST') throw new HttpError(405, 'MethodNotAllowed', `the server does not allow this method on the requested resource`);
        const spec = ((entry.body as { spec?: TokenReviewSpec } | undefined)?.spec ?? { token: '' }) as TokenReviewSpec;
        const answer = await this.tokenReviewer(spec);
        if ('httpStatus' in answer) throw new HttpError(answer.httpStatus, reasonFor(answer.httpStatus), answer.message ?? `HTTP ${answer.httpStatus}`);
        reply(201, { kind: 'TokenReview', apiVersion: 'authentication.k8s.io/v1', metadata: { creationTimestamp: null }, spec, status: answer });
        return;
      }

      if (url.pathname === '/openid/v1/jwks' && method === 'GET' && this.serviceAccountKeys !== undefined) {
        reply(200, { keys: this.serviceAccountKeys });
        return;
      }

      const route = parseRoute(url.pathname);
      if (!route) throw new HttpError(404, 'NotFound', 'the server could not find the requested resource');
      const { kind, namespace, name } = route;
      const info = KINDS[kind];

      if (name === undefined) {
        if (method === 'GET' && watch) {
          this.openWatch(kind, namespace, query, req, res, entry);
          return;
        }
        if (method === 'GET') {
          reply(200, this.listResponse(kind, namespace, query));
          return;
        }
        if (method === 'POST') {
          if (info.namespaced && namespace === undefined) throw new HttpError(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource');
          reply(201, this.create(kind, namespace, entry.body));
          return;
        }
        throw new HttpError(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource');
      }

      const k = this.key(kind, namespace, name);
      const current = this.store.get(kind)!.get(k);
      const notFound = (): HttpError => new HttpError(404, 'NotFound', `${info.resource} "${name}" not found`, { name, kind: kind });
      switch (method) {
        case 'GET':
          if (!current) throw notFound();
          reply(200, current);
          return;
        case 'PUT': {
          if (!current) throw notFound();
          const body = this.checkBody(kind, namespace, entry.body, name);
          const want = body.metadata.resourceVersion;
          if (want !== undefined && want !== '' && want !== current.metadata.resourceVersion) throw conflict(info, name);
          reply(200, this.write(kind, namespace, body, current));
          return;
        }
        case 'PATCH': {
          if (!current) throw notFound();
          const ct = (req.headers['content-type'] ?? '').split(';')[0]!.trim();
          let patched: unknown;
          if (ct === 'application/merge-patch+json' || ct === 'application/strategic-merge-patch+json') patched = mergePatch(current, entry.body);
          else if (ct === 'application/json-patch+json') patched = jsonPatch(current, entry.body);
          else throw new HttpError(415, 'UnsupportedMediaType', `the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json`);
          const body = this.checkBody(kind, namespace, patched, name);
          const want = body.metadata.resourceVersion;
          if (want !== undefined && want !== '' && want !== current.metadata.resourceVersion) throw conflict(info, name);
          reply(200, this.write(kind, namespace, body, current));
          return;
        }
        case 'DELETE': {
          if (!current) throw notFound();
          const pre = (entry.body as { preconditions?: { uid?: string; resourceVersion?: string } } | undefined)?.preconditions;
          if (pre?.uid !== undefined && pre.uid !== current.metadata.uid) {
            throw new HttpError(409, 'Conflict', `Operation cannot be fulfilled on ${info.resource} "${name}": Precondition failed: UID in precondition: ${pre.uid}, UID in object meta: ${current.metadata.uid}`, { name, kind });
          }
          if (pre?.resourceVersion !== undefined && pre.resourceVersion !== current.metadata.resourceVersion) {
            throw new HttpError(409, 'Conflict', `Operation cannot be fulfilled on ${info.resource} "${name}": Precondition failed: ResourceVersion in precondition: ${pre.resourceVersion}, ResourceVersion in object meta: ${current.metadata.resourceVersion}`, { name, kind });
          }
          const deleted = this.remove(kind, k, current);
          if (kind === 'pods') reply(200, deleted);
          else reply(200, { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Success', details: { name, kind, uid: current.metadata.uid } });
          return;
        }
        default:
          throw new HttpError(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource');
      }
    } catch (err) {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      if (err instanceof HttpError) reply(err.code, statusObject(err.code, err.reason, err.message, err.details));
      else reply(500, statusObject(500, 'InternalError', `fake-kube: ${(err as Error).message}`));
    }
  }

  /** Validates a create/replace body against the URL (as the API server does). */
  private checkBody(kind: FakeKind, namespace: string | undefined, body: unknown, urlName: string | undefined): FakeObject {
    const info = KINDS[kind];
    if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new HttpError(400, 'BadRequest', 'the request body must be an object');
    const obj = clone(body) as FakeObject;
    if (obj.kind !== undefined && obj.kind !== info.kind) throw new HttpError(400, 'BadRequest', `the API version in the data (${String(obj.apiVersion)}) / kind ${obj.kind} does not match the expected kind ${info.kind}`);
    if (typeof obj.metadata !== 'object' || obj.metadata === null) obj.metadata = { name: '' };
    if (urlName !== undefined) {
      if (obj.metadata.name === undefined || obj.metadata.name === '') obj.metadata.name = urlName;
      if (obj.metadata.name !== urlName) throw new HttpError(400, 'BadRequest', `the name of the object (${obj.metadata.name}) does not match the name on the URL (${urlName})`);
    }
    if (kind === 'leases') checkLeaseTimes(obj);
    if (info.namespaced) {
      if (obj.metadata.namespace !== undefined && obj.metadata.namespace !== '' && obj.metadata.namespace !== namespace) {
        throw new HttpError(400, 'BadRequest', 'the namespace of the provided object does not match the namespace sent on the request');
      }
      obj.metadata.namespace = namespace;
    }
    return obj;
  }

  private create(kind: FakeKind, namespace: string | undefined, body: unknown): FakeObject {
    const info = KINDS[kind];
    const obj = this.checkBody(kind, namespace, body, undefined);
    if (!obj.metadata.name) {
      if (obj.metadata.generateName) obj.metadata.name = obj.metadata.generateName + randomBytes(3).toString('hex').slice(0, 5);
      else throw new HttpError(422, 'Invalid', `${info.kind} "" is invalid: metadata.name: Required value: name or generateName is required`, { kind });
    }
    if (!/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(obj.metadata.name) || obj.metadata.name.length > 253) {
      throw new HttpError(422, 'Invalid', `${info.kind} "${obj.metadata.name}" is invalid: metadata.name: Invalid value: "${obj.metadata.name}": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'`, { name: obj.metadata.name, kind });
    }
    if (obj.metadata.resourceVersion) throw new HttpError(500, 'InternalError', 'resourceVersion should not be set on objects to be created');
    const k = this.key(kind, namespace, obj.metadata.name);
    if (this.store.get(kind)!.has(k)) throw new HttpError(409, 'AlreadyExists', `${info.resource} "${obj.metadata.name}" already exists`, { name: obj.metadata.name, kind });
    delete obj.metadata.uid;
    delete obj.metadata.creationTimestamp;
    return this.write(kind, namespace, obj, undefined);
  }

  private matching(kind: FakeKind, namespace: string | undefined, labels: LabelSelector, fields: FieldSelector): Array<[string, FakeObject]> {
    return [...this.store.get(kind)!.entries()]
      .filter(([, o]) => (namespace === undefined || o.metadata.namespace === namespace) && labelsMatch(labels, o.metadata.labels) && fieldsMatch(fields, o))
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  }

  private listResponse(kind: FakeKind, namespace: string | undefined, query: Record<string, string>): Record<string, unknown> {
    const info = KINDS[kind];
    const labels = parseLabelSelector(query.labelSelector);
    const fields = parseFieldSelector(query.fieldSelector, info);
    let all = this.matching(kind, namespace, labels, fields);
    let listRv = this.rv;
    if (query.continue) {
      let token: { k?: unknown; rv?: unknown };
      try {
        token = JSON.parse(Buffer.from(query.continue, 'base64url').toString('utf8')) as { k?: unknown; rv?: unknown };
      } catch {
        throw new HttpError(400, 'BadRequest', 'continue key is not valid');
      }
      if (typeof token.k !== 'string' || typeof token.rv !== 'number') throw new HttpError(400, 'BadRequest', 'continue key is not valid');
      if (token.rv < this.oldestRv) {
        throw new HttpError(410, 'Expired', 'The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.');
      }
      const after = token.k;
      all = all.filter(([k]) => k > after);
      listRv = token.rv;
    }
    const limit = query.limit ? Number(query.limit) : 0;
    let cont: string | undefined;
    let remaining: number | undefined;
    if (limit > 0 && all.length > limit) {
      remaining = all.length - limit;
      all = all.slice(0, limit);
      cont = Buffer.from(JSON.stringify({ k: all[all.length - 1]![0], rv: listRv })).toString('base64url');
    }
    // List items carry no apiVersion/kind (the list does), as from the real API server.
    const items = all.map(([, o]) => {
      const rest: Partial<FakeObject> = { ...o };
      delete rest.apiVersion;
      delete rest.kind;
      return rest;
    });
    return {
      kind: `${info.kind}List`,
      apiVersion: info.apiVersion,
      metadata: { resourceVersion: String(listRv), ...(cont ? { continue: cont, remainingItemCount: remaining } : {}) },
      items,
    };
  }

  private openWatch(kind: FakeKind, namespace: string | undefined, query: Record<string, string>, req: IncomingMessage, res: ServerResponse, entry: FakeRequest): void {
    const info = KINDS[kind];
    const labels = parseLabelSelector(query.labelSelector);
    const fields = parseFieldSelector(query.fieldSelector, info);
    const from = query.resourceVersion ?? '';
    if (from !== '' && !/^\d+$/.test(from)) throw new HttpError(400, 'BadRequest', `invalid resource version: ${from}`);
    entry.status = 200;
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-cache, private' });
    res.flushHeaders();
    const w: OpenWatch = { kind, namespace, labels, fields, res, socket: req.socket, timer: undefined };
    this.watches.add(w);
    res.on('close', () => {
      this.watches.delete(w);
      clearTimeout(w.timer);
    });
    if (from === '' || from === '0') {
      for (const [, o] of this.matching(kind, namespace, labels, fields)) this.send(w, 'ADDED', o);
    } else {
      const since = Number(from);
      if (since < this.oldestRv) {
        this.send(w, 'ERROR', statusObject(410, 'Expired', `too old resource version: ${since} (${this.oldestRv})`) as unknown as FakeObject);
        this.closeWatch(w, false);
        return;
      }
      for (const h of this.history) if (h.rv > since) this.deliver(w, h);
    }
    const timeout = Number(query.timeoutSeconds ?? '0');
    if (timeout > 0) w.timer = setTimeout(() => this.closeWatch(w, false), timeout * 1000);
  }
}

/**
 * Lease spec.acquireTime/renewTime are MicroTime: the API server parses them with the layout
 * 2006-01-02T15:04:05.000000Z07:00 and refuses anything else (e.g. Date#toISOString's 3 digits).
 */
function checkLeaseTimes(obj: FakeObject): void {
  const spec = (obj.spec ?? {}) as Record<string, unknown>;
  for (const field of ['acquireTime', 'renewTime']) {
    const v = spec[field];
    if (v === undefined || v === null) continue;
    if (typeof v !== 'string' || !/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|[+-]\d\d:\d\d)$/.test(v)) {
      const frac = typeof v === 'string' ? (/(\.\d*)?(Z|[+-]\d\d:\d\d)?$/.exec(v)?.[0] ?? v) : String(v);
      throw new HttpError(
        400,
        'BadRequest',
        `Lease in version "v1" cannot be handled as a Lease: parsing time ${JSON.stringify(v)} as "2006-01-02T15:04:05.000000Z07:00": cannot parse ${JSON.stringify(frac)} as ".000000"`,
      );
    }
  }
}

function conflict(info: KindInfo, name: string): HttpError {
  return new HttpError(
    409,
    'Conflict',
    `Operation cannot be fulfilled on ${info.resource} "${name}": the object has been modified; please apply your changes to the latest version and try again`,
    { name, kind: info.resource.split('.')[0] },
  );
}

function reasonFor(code: number): string {
  switch (code) {
    case 400:
      return 'BadRequest';
    case 401:
      return 'Unauthorized';
    case 403:
      return 'Forbidden';
    case 404:
      return 'NotFound';
    case 409:
      return 'Conflict';
    case 410:
      return 'Expired';
    case 422:
      return 'Invalid';
    case 429:
      return 'TooManyRequests';
    case 503:
      return 'ServiceUnavailable';
    default:
      return code >= 500 ? 'InternalError' : 'Unknown';
  }
}

/** Maps an API path to a kind, namespace and name; undefined when not served. */
function parseRoute(path: string): { kind: FakeKind; namespace: string | undefined; name: string | undefined } | undefined {
  const seg = path.split('/').filter(Boolean).map(decodeURIComponent);
  let rest: string[];
  if (seg[0] === 'api' && seg[1] === 'v1') rest = seg.slice(2);
  else if (seg[0] === 'apis' && seg[1] === 'coordination.k8s.io' && seg[2] === 'v1') rest = seg.slice(3);
  else return undefined;
  const core = seg[0] === 'api';
  const served = (k: string): k is FakeKind => (core ? ['pods', 'configmaps', 'secrets', 'namespaces'] : ['leases']).includes(k);
  // /namespaces, /namespaces/{name}
  if (rest[0] === 'namespaces' && rest.length <= 2 && core) return { kind: 'namespaces', namespace: undefined, name: rest[1] };
  // /namespaces/{ns}/{plural}[/{name}]
  if (rest[0] === 'namespaces' && (rest.length === 3 || rest.length === 4)) {
    const kind = rest[2]!;
    if (!served(kind) || kind === 'namespaces') return undefined;
    return { kind, namespace: rest[1], name: rest[3] };
  }
  // /{plural} across namespaces
  if (rest.length === 1 && served(rest[0]!) && rest[0] !== 'namespaces') return { kind: rest[0], namespace: undefined, name: undefined };
  return undefined;
}

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY) {
        reject(new HttpError(413, 'RequestEntityTooLarge', 'request entity too large'));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}
