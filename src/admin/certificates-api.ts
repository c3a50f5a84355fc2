/**
 * Read-only HTTP API over the certificate inventory, mounted on the admin server.
 *
 *   GET /api/v1/certificates?namespace=&serviceAccount=&issuer=&spiffeId=&requester=&source=
 *       &expiringWithin=7d&includeExpired=true|false&limit=1..1000&cursor=
 *     -> 200 { items: [record...], nextCursor: string | null }
 *   GET /api/v1/certificates/{serialOrFingerprint}
 *     -> 200 record | 404 { error: "not found" }
 *
 * Records are JSON with ISO-8601 dates (see {@link recordToJson}). Ordering and cursors are the
 * store's: notAfter then fingerprint, keyset cursors; follow `nextCursor` until it is null to see
 * every matching certificate exactly once. `source` is `issued`, `discovered` (any discovery
 * source) or an exact `discovered:...` source. `expiringWithin` is a duration (`90s`, `15m`,
 * `24h`, `7d` or seconds) and selects notAfter < now + duration (expired ones included unless
 * `includeExpired=false`). Empty parameters are ignored; unknown or repeated ones are errors.
 * Typed values (`limit`, `expiringWithin`, `includeExpired`) may carry surrounding spaces; names
 * and identities are compared as sent.
 *
 * A `nextCursor` is tied to the filters of the request that returned it: sent with other filters
 * it is refused (400), since it would silently skip whatever the new filters select before its
 * position. Only `limit` may change from page to page.
 *
 * Errors are JSON `{ error: message }`, never a stack trace: 400 for a bad query (unknown
 * parameter, bad duration, limit outside 1..1000, invalid cursor, a key that is not hex), 404,
 * 405 with `Allow: GET, HEAD` for other methods, 503 when the store fails (unreachable, closed...).
 */
import { createHash } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { bareSpanProblem, parseDurationArg } from '../config/duration.js';
import { certificateKey, NOT_A_CERTIFICATE_KEY } from '../x509/serial-hex.js';
import { decodeCursor } from '../inventory/common.js';
import { InvalidCursorError, InvalidFilterError, type CertificateFilter, type CertificateRecord, type InventoryStore, type RecordSource } from '../inventory/types.js';

export const CERTIFICATES_API_PATH = '/api/v1/certificates';

export interface CertificatesApiOptions {
  /** Reference time for expiringWithin/includeExpired; default the current time. */
  now?: () => Date;
  /** Store failures answered with 503 (for logging). Never throws into the handler. */
  onError?: (err: Error) => void;
  /** Bounds the queries under way at once; one more is answered 503 with Retry-After. */
  slots?: QuerySlots;
}

/**
 * How many inventory queries run at once. They share the store with the records being written
 * (SQLite's one worker thread, PostgreSQL's pool), and a filter no index serves reads every row:
 * a few callers repeating one must not hold up the writes (which inventory.failClosed waits for)
 * or the readiness ping.
 */
export class QuerySlots {
  private inUse = 0;
  constructor(readonly max: number) {}

  /** Runs `query` in a slot, or throws QueriesBusy when every slot is taken. */
  async run<T>(query: () => Promise<T>): Promise<T> {
    if (this.inUse >= this.max) throw new QueriesBusy();
    this.inUse++;
    try {
      return await query();
    } finally {
      this.inUse--;
    }
  }
}

class QueriesBusy extends Error {}

/** A record as the API (and `meshcert certs --json`) prints it. */
export interface CertificateRecordJson {
  serial: string;
  fingerprint: string;
  spiffeId: string | null;
  namespace: string | null;
  serviceAccount: string | null;
  cluster: string | null;
  issuer: string;
  subject: string | null;
  dnsNames: string[];
  keyAlgorithm: string;
  keySize: number;
  notBefore: string;
  notAfter: string;
  issuedAt: string;
  requester: string | null;
  policyRule: string | null;
  source: string;
}

export function recordToJson(r: CertificateRecord): CertificateRecordJson {
  return {
    serial: r.serial,
    fingerprint: r.fingerprint,
    spiffeId: r.spiffeId,
    namespace: r.namespace,
    serviceAccount: r.serviceAccount,
    cluster: r.cluster,
    issuer: r.issuer,
    subject: r.subject ?? null,
    dnsNames: r.dnsNames ?? [],
    keyAlgorithm: r.keyAlgorithm,
    keySize: r.keySize,
    notBefore: r.notBefore.toISOString(),
    notAfter: r.notAfter.toISOString(),
    issuedAt: r.issuedAt.toISOString(),
    requester: r.requester,
    policyRule: r.policyRule,
    source: r.source,
  };
}

class BadRequest extends Error {}

const PARAMS = ['namespace', 'serviceAccount', 'issuer', 'spiffeId', 'requester', 'source', 'expiringWithin', 'includeExpired', 'limit', 'cursor'] as const;
type Param = (typeof PARAMS)[number];

/** `issued`, `discovered` or `discovered:<name>`; null otherwise. */
export function parseSourceFilter(value: string): RecordSource | 'discovered' | null {
  if (value === 'issued' || value === 'discovered') return value;
  if (value.startsWith('discovered:') && value.length > 'discovered:'.length) return value as RecordSource;
  return null;
}

/**
 * Refuses a query string that is not valid percent-encoded UTF-8, as the lookup path refuses such
 * a key: URLSearchParams would read `%FF` as U+FFFD and a stray `%` as itself, and run a filter
 * that was never asked for.
 */
function checkPercentEncoding(query: string): void {
  for (const part of query.split('&')) {
    try {
      decodeURIComponent(part.replace(/\+/g, ' '));
    } catch {
      throw new BadRequest(`the query ${JSON.stringify(part.slice(0, 64))} is not valid percent-encoding (UTF-8)`);
    }
  }
}

function queryParams(search: URLSearchParams): Partial<Record<Param, string>> {
  const out: Partial<Record<Param, string>> = {};
  for (const name of new Set(search.keys())) {
    if (!(PARAMS as readonly string[]).includes(name)) throw new BadRequest(`unknown query parameter ${JSON.stringify(name.slice(0, 64))}; known: ${PARAMS.join(', ')}`);
    const values = search.getAll(name);
    if (values.length > 1) throw new BadRequest(`query parameter "${name}" given more than once`);
    if (values[0] !== '') out[name as Param] = values[0];
  }
  return out;
}

interface ParsedQuery {
  filter: CertificateFilter;
  /** What a cursor is tied to: every criterion, parsed (so `1` and `true` agree), not the page size. */
  tag: string;
}

function filterFrom(q: Partial<Record<Param, string>>, now: Date): ParsedQuery {
  const f: CertificateFilter = { now };
  if (q.namespace !== undefined) f.namespace = q.namespace;
  if (q.serviceAccount !== undefined) f.serviceAccount = q.serviceAccount;
  if (q.issuer !== undefined) f.issuer = q.issuer;
  if (q.spiffeId !== undefined) f.spiffeId = q.spiffeId;
  if (q.requester !== undefined) f.requester = q.requester;
  if (q.source !== undefined) {
    const s = parseSourceFilter(q.source);
    if (s === null) throw new BadRequest('source must be "issued", "discovered" or "discovered:<name>"');
    f.source = s;
  }
  let expiringSeconds: number | null = null;
  if (q.expiringWithin !== undefined) {
    // A unit is needed, as on the command line: ?expiringWithin=30 would be thirty seconds.
    const bare = bareSpanProblem(q.expiringWithin);
    if (bare !== null) throw new BadRequest(`expiringWithin ${bare}`);
    try {
      expiringSeconds = parseDurationArg(q.expiringWithin);
    } catch (e) {
      throw new BadRequest(`expiringWithin: ${(e as Error).message}`);
    }
    // At most a century (parseDurationArg): always a date the stores hold.
    f.expiringBefore = new Date(now.getTime() + expiringSeconds * 1000);
  }
  if (q.includeExpired !== undefined) {
    const v = q.includeExpired.trim().toLowerCase();
    if (v === 'true' || v === '1') f.includeExpired = true;
    else if (v === 'false' || v === '0') f.includeExpired = false;
    else throw new BadRequest('includeExpired must be true or false (or 1 or 0)');
  }
  if (q.limit !== undefined) {
    const v = q.limit.trim();
    if (!/^\d+$/.test(v) || Number(v) < 1 || Number(v) > 1000) throw new BadRequest('limit must be an integer from 1 to 1000');
    f.limit = Number(v);
  }
  // The window, not its end: the end moves with the clock from page to page, the query does not.
  // includeExpired as it acts: absent is true.
  const criteria = [f.namespace, f.serviceAccount, f.issuer, f.spiffeId, f.requester, f.source, expiringSeconds, f.includeExpired !== false].map((v) => v ?? null);
  const tag = createHash('sha256').update(JSON.stringify(criteria)).digest('base64url').slice(0, 16);
  if (q.cursor !== undefined) f.cursor = cursorFor(q.cursor, tag);
  return { filter: f, tag };
}

/** The API's cursor is the store's, a dot, and the tag of the query it belongs to. */
function cursorFor(apiCursor: string, tag: string): string {
  const dot = apiCursor.lastIndexOf('.');
  if (dot < 0) throw new InvalidCursorError();
  if (apiCursor.slice(dot + 1) !== tag) {
    // Text that is no cursor at all is said to be one, not blamed on the filters.
    decodeCursor(apiCursor.slice(0, dot));
    throw new BadRequest('this cursor was returned for other filters: send the same filters as the request that returned it (only limit may change), or start again without a cursor');
  }
  return apiCursor.slice(0, dot);
}

function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
    ...headers,
  });
  res.end(text);
}

/**
 * A request target's path and query as sent, as every admin route reads them: a URL parser would
 * resolve "/healthz/../api/..." (or "%2e%2e", or "\\") to the inventory API, past a proxy that
 * guards only "/api/". The absolute form (`GET http://host:port/path`, RFC 9112 §3.2.2) loses only
 * its scheme and authority.
 */
export function requestTarget(url: string | undefined): { path: string; query: string } {
  const target = (url ?? '/').replace(/^https?:\/\/[^/?#]*/i, '') || '/';
  const q = target.indexOf('?');
  return q < 0 ? { path: target, query: '' } : { path: target.slice(0, q), query: target.slice(q + 1) };
}

/**
 * Answers requests under /api/v1/certificates; returns false (and touches nothing) for any other
 * path, so the admin server can try its other routes.
 */
export async function handleCertificatesApi(req: IncomingMessage, res: ServerResponse, store: InventoryStore, options: CertificatesApiOptions = {}): Promise<boolean> {
  const { path, query } = requestTarget(req.url);
  const search = new URLSearchParams(query);
  if (path !== CERTIFICATES_API_PATH && !path.startsWith(`${CERTIFICATES_API_PATH}/`)) return false;

  const rest = path.slice(CERTIFICATES_API_PATH.length + 1); // '' for the collection (with or without '/')
  // A path below a certificate is served by no method: 404 whatever the method, before 405.
  if (rest.includes('/')) {
    send(res, 404, { error: 'not found' });
    return true;
  }
  // HEAD is GET without the body (Node sends none for HEAD).
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    send(res, 405, { error: `method ${req.method ?? ''} not allowed; use GET` }, { allow: 'GET, HEAD' });
    return true;
  }
  const inSlot = <T>(query: () => Promise<T>): Promise<T> => (options.slots ? options.slots.run(query) : query());
  const now = options.now?.() ?? new Date();
  try {
    checkPercentEncoding(query);
    if (rest === '') {
      const { filter, tag } = filterFrom(queryParams(search), now);
      const page = await inSlot(() => store.list(filter));
      send(res, 200, { items: page.items.map(recordToJson), nextCursor: page.nextCursor === null ? null : `${page.nextCursor}.${tag}` });
      return true;
    }
    // A lookup takes no parameters: one sent is a filter meant for the list, which it would not apply.
    const param = [...search.keys()][0];
    if (param !== undefined) throw new BadRequest(`unknown query parameter ${JSON.stringify(param.slice(0, 64))}: a certificate is looked up by its key alone`);
    let key: string;
    try {
      key = decodeURIComponent(rest);
    } catch {
      throw new BadRequest('the certificate key is not valid percent-encoding');
    }
    const norm = certificateKey(key);
    if (norm === null) throw new BadRequest(NOT_A_CERTIFICATE_KEY);
    const record = await inSlot(() => store.get(norm));
    if (record === null) send(res, 404, { error: 'not found' });
    else send(res, 200, recordToJson(record));
    return true;
  } catch (err) {
    if (err instanceof BadRequest || err instanceof InvalidCursorError || err instanceof InvalidFilterError) {
      send(res, 400, { error: err.message });
    } else if (err instanceof QueriesBusy) {
      send(res, 503, { error: `the inventory is answering ${options.slots?.max ?? 0} other queries; retry in a second` }, { 'retry-after': '1' });
    } else {
      try {
        options.onError?.(err instanceof Error ? err : new Error(String(err)));
      } catch {
        // logging must not break the response
      }
      if (!res.headersSent) send(res, 503, { error: 'inventory store unavailable' });
      else res.destroy();
    }
    return true;
  }
}
