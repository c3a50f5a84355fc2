/**
 * Certificates presented by live TLS endpoints.
 *
 * meshcert connects without verifying (rejectUnauthorized: false: the point is to see what is
 * served, including expired or untrusted chains), offers ALPN h2 and http/1.1, sends SNI for
 * host names (not for IP literals, which SNI cannot carry), and records every certificate of the
 * chain Node reports from `getPeerCertificate(true)`: the presented chain, to which Node may add
 * the issuing root when it finds it in its own trust store. Connect + handshake must finish within
 * the timeout (default 5 s). Nothing is sent after the handshake. A server that ends the handshake
 * after presenting its chain (one that requires a client certificate, in TLS 1.2) is recorded with it.
 */
import { X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import tls, { type DetailedPeerCertificate } from 'node:tls';
import { parseHostPort } from '../net/host-port.js';
import type { DiscoveredItem } from './types.js';

export const DEFAULT_ENDPOINT_TIMEOUT_MS = 5000;

/** The peer chain, leaf first, each certificate once. */
function chainOf(peer: DetailedPeerCertificate): X509Certificate[] {
  const out: X509Certificate[] = [];
  const seen = new Set<string>();
  let c: DetailedPeerCertificate | undefined = peer;
  while (c !== undefined && c !== null && c.raw !== undefined) {
    const cert = new X509Certificate(c.raw);
    if (seen.has(cert.fingerprint256)) break;
    seen.add(cert.fingerprint256);
    out.push(cert);
    if (c.issuerCertificate === c) break;
    c = c.issuerCertificate;
  }
  return out;
}

/** The chain a server presented before the handshake failed, or none. */
function presentedBeforeFailing(socket: tls.TLSSocket): X509Certificate[] {
  try {
    const peer = socket.getPeerCertificate(true);
    return peer?.raw === undefined ? [] : chainOf(peer);
  } catch {
    return [];
  }
}

/** Connects to `hostPort` and returns its chain as one item (never throws). */
export function discoverEndpoint(hostPort: string, options: { timeoutMs?: number } = {}): Promise<DiscoveredItem> {
  const source = `discovered:endpoint:${hostPort}` as const;
  const fail = (error: string): DiscoveredItem => ({ kind: 'endpoint', target: hostPort, source, status: 'error', error });
  let host: string;
  let port: number;
  try {
    ({ host, port } = parseHostPort(hostPort));
  } catch (e) {
    return Promise.resolve(fail((e as Error).message));
  }
  const timeoutMs = options.timeoutMs ?? DEFAULT_ENDPOINT_TIMEOUT_MS;
  return new Promise((resolve) => {
    let done = false;
    const finish = (item: DiscoveredItem): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(item);
    };
    const socket = tls.connect({
      host,
      port,
      ...(isIP(host) === 0 ? { servername: host } : {}),
      rejectUnauthorized: false,
      ALPNProtocols: ['h2', 'http/1.1'],
    });
    const timer = setTimeout(() => finish(fail(`no TLS handshake within ${timeoutMs} ms`)), timeoutMs);
    socket.once('secureConnect', () => {
      try {
        const peer = socket.getPeerCertificate(true);
        if (peer === null || peer === undefined || peer.raw === undefined) {
          finish(fail('the server presented no certificate'));
          return;
        }
        const certificates = chainOf(peer);
        finish({ kind: 'endpoint', target: hostPort, source, status: 'ok', certificates });
      } catch (e) {
        finish(fail(`cannot read the presented chain: ${(e as Error).message}`));
      }
    });
    socket.once('error', (err: NodeJS.ErrnoException & { reason?: string }) => {
      // Refused after it presented its chain (a TLS 1.2 server that requires a client certificate
      // sends its own first): that chain is what it serves.
      const presented = presentedBeforeFailing(socket);
      if (presented.length > 0) return finish({ kind: 'endpoint', target: hostPort, source, status: 'ok', certificates: presented });
      // OpenSSL's errors carry its source file and line in the message: its reason is what matters.
      const text = typeof err.reason === 'string' && err.reason !== '' ? err.reason : err.message;
      // A server that speaks its own protocol first drops a bare TLS hello (PostgreSQL, SMTP and
      // LDAP start TLS inside theirs): say so, since "disconnected" alone gives no hint.
      const why = err.code === 'ECONNRESET' ? `${text} (the server may not speak TLS at once on this port: protocols that start TLS inside their own, such as PostgreSQL or STARTTLS, cannot be read)` : text;
      finish(fail(err.code === 'ECONNREFUSED' ? 'connection refused' : err.code ? `${err.code}: ${why}` : why));
    });
    socket.once('close', () => finish(fail('connection closed before the TLS handshake completed')));
  });
}
