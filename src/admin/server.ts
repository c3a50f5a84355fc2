import { createServer, type Server } from 'node:http';
import { boundConnections } from './connection-bound.js';
import { CERTIFICATES_API_PATH, handleCertificatesApi, QuerySlots, requestTarget } from './certificates-api.js';
import { isIP } from 'node:net';
import { listenOn } from '../net/host-port.js';
import { isLoopback } from '../net/loopback.js';
import type { InventoryStore } from '../inventory/types.js';
import type { Logger } from '../log/logger.js';
import { LogThrottle } from '../log/throttle.js';

export interface ReadinessCheck {
  readonly name: string;
  readonly ok: boolean;
  readonly detail?: string;
}

/** Inventory queries under way at once (see QuerySlots). */
const INVENTORY_QUERY_SLOTS = 2;

/**
 * Bounds on clients, so that none can hold the primary's memory: probes, a scraper and a few
 * people or scripts use this server. A request's headers must arrive within 10 s and the whole
 * request within 30 s; a connection stuck for 30 s while a request is under way (a client that
 * stopped reading a page of the inventory, say) is closed. Idle kept-alive ones close after Node's
 * keep-alive timeout (5 s). At 128 open connections, or 32 from one address, a new one takes the slot
 * of the one idle longest (see boundConnections), so that one client's connections never lock the
 * kubelet's probes out.
 */
export const ADMIN_LIMITS = { maxConnections: 128, maxConnectionsPerAddress: 32, headersTimeoutMs: 10_000, requestTimeoutMs: 30_000, idleTimeoutMs: 30_000 };

export interface AdminServerOptions {
  readonly listen: string;
  /** Tests: other bounds than ADMIN_LIMITS. */
  readonly limits?: typeof ADMIN_LIMITS;
  /** Prometheus text exposition (aggregated across workers in multi-process mode). */
  readonly metrics: () => Promise<{ contentType: string; body: string }>;
  readonly readiness: () => Promise<readonly ReadinessCheck[]>;
  readonly store?: InventoryStore;
  readonly logger: Logger;
  /** The clock the store-failure warnings are spaced by (tests). */
  readonly now?: () => number;
}

/** A store that is down fails every inventory request: a warning at most this often says so. */
const STORE_WARN_EVERY_MS = 60_000;

/**
 * The admin HTTP server, on its own address (loopback by default), never on the gRPC port:
 * /metrics, /healthz (process up), /readyz (CA loaded, serving, inventory reachable or buffering
 * within bounds), and the read-only certificate inventory API.
 */
export async function startAdminServer(o: AdminServerOptions): Promise<{ port: number; close(): Promise<void> }> {
  const limits = o.limits ?? ADMIN_LIMITS;
  const slots = new QuerySlots(INVENTORY_QUERY_SLOTS);
  const now = o.now ?? Date.now;
  // One line a minute (with how many failed since), not one per request a client can repeat at will.
  const storeWarnings = new LogThrottle(STORE_WARN_EVERY_MS, now);
  const storeFailed = (err: Error): void => {
    const unsaid = storeWarnings.take();
    if (unsaid === undefined) o.logger.debug({ err }, 'inventory API: store failed');
    else o.logger.warn({ err, ...(unsaid > 0 ? { failedSinceLastWarning: unsaid } : {}) }, 'inventory API: store failed (warned at most once a minute)');
  };
  const server: Server = createServer({ headersTimeout: limits.headersTimeoutMs, requestTimeout: limits.requestTimeoutMs, connectionsCheckingInterval: Math.min(5_000, limits.headersTimeoutMs) }, (req, res) => {
    const send = (status: number, body: string, type = 'text/plain; charset=utf-8', extra: Record<string, string> = {}): void => {
      res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store', ...extra });
      res.end(body); // Node sends no body for HEAD
    };
    // On loopback, a web page the user has open could reach this server through DNS rebinding (its
    // own name resolving to 127.0.0.1) and read the inventory: only local names and addresses.
    // RFC 9112 §3.2: a request with more than one Host is refused (Node would keep the first).
    if (hostHeaderCount(req.rawHeaders) > 1) {
      return send(400, `${JSON.stringify({ error: 'more than one Host header' })}\n`, 'application/json', { connection: 'close' });
    }
    // Judged by the address the connection came in on, not admin.listen's text: a host name that
    // resolves to loopback (the machine's own name), or a wildcard listen reached over loopback,
    // is as reachable by rebinding as 127.0.0.1.
    if (isLoopback(req.socket.localAddress ?? '') && !isLocalHostHeader(targetHost(req.url, req.headers.host))) {
      return send(421, `${JSON.stringify({ error: 'the admin server answers only requests addressed to localhost or an IP address' })}\n`, 'application/json');
    }
    const { path } = requestTarget(req.url);
    void (async () => {
      try {
        // Read-only endpoints: a probe or scraper sending anything else has a wrong URL or method.
        if ((path === '/healthz' || path === '/readyz' || path === '/metrics') && req.method !== 'GET' && req.method !== 'HEAD') {
          return send(405, `${JSON.stringify({ error: `method ${String(req.method).slice(0, 20)} not allowed; use GET` })}\n`, 'application/json', { allow: 'GET, HEAD' });
        }
        if (path === '/healthz') return send(200, 'ok\n');
        if (path === '/readyz') {
          const checks = await o.readiness();
          const ok = checks.every((c) => c.ok);
          return send(ok ? 200 : 503, `${JSON.stringify({ ready: ok, checks })}\n`, 'application/json');
        }
        if (path === '/metrics') {
          const m = await o.metrics();
          return send(200, m.body, m.contentType);
        }
        if (o.store && (await handleCertificatesApi(req, res, o.store, { slots, onError: storeFailed }))) return undefined;
        if (!o.store && (path === CERTIFICATES_API_PATH || path.startsWith(`${CERTIFICATES_API_PATH}/`))) {
          return send(404, `${JSON.stringify({ error: 'the certificate inventory is disabled (inventory.store: none)' })}\n`, 'application/json');
        }
        return send(404, `${JSON.stringify({ error: 'not found' })}\n`, 'application/json');
      } catch (err) {
        o.logger.error({ err, path }, 'admin request failed');
        if (!res.headersSent) send(500, `${JSON.stringify({ error: 'internal error' })}\n`, 'application/json');
        else res.destroy();
      }
    })();
  });
  boundConnections(server, { max: limits.maxConnections, perAddress: limits.maxConnectionsPerAddress });
  server.setTimeout(limits.idleTimeoutMs, (socket) => socket.destroy());
  const bound = await listenOn(server, o.listen, 'admin.listen');
  server.on('error', (err: Error) => o.logger.error({ err }, 'admin listener error'));
  o.logger.info({ listen: o.listen, port: bound }, 'admin server listening');
  return {
    port: bound,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** A Host header naming this machine by a local name or any IP literal (never a DNS name that could be rebound). */
export function isLocalHostHeader(host: string | undefined): boolean {
  if (host === undefined) return true; // HTTP/1.0 without Host: no name to rebind
  // RFC 3986 host[:port]: an IPv6 literal only in closed brackets, a name or IPv4 without any.
  const m = /^(?:\[([^\]]*)\]|([^[\]:]*))(?::\d*)?$/.exec(host);
  if (!m) return false;
  if (m[1] !== undefined) return isIP(m[1]) === 6;
  return m[2]!.toLowerCase() === 'localhost' || isIP(m[2]!) === 4;
}

/**
 * The host a request is addressed to: an absolute-form target's authority (less any userinfo),
 * which RFC 9112 §3.2.2 puts before the Host header, else the Host header.
 */
export function targetHost(url: string | undefined, host: string | undefined): string | undefined {
  const m = /^[a-z][a-z0-9+.-]*:\/\/([^/?#]*)/i.exec(url ?? '');
  return m ? m[1]!.slice(m[1]!.lastIndexOf('@') + 1) : host;
}

function hostHeaderCount(raw: readonly string[]): number {
  let n = 0;
  for (let i = 0; i < raw.length; i += 2) if (raw[i]!.toLowerCase() === 'host') n++;
  return n;
}
