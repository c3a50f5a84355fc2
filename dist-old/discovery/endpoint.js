/**
 * Certificates presented by live TLS endpoints.
 *
 * meshcert connects without verifying (rejectUnauthorized: false: the point is to see what is
 * served, including expired or untrusted chains), offers ALPN h2 and http/1.1, sends SNI for
 * host names (not for IP literals, which SNI cannot carry), and records every certificate of the
 * chain Node reports from `getPeerCertificate(true)`: the presented chain, to which Node may add
 * the issuing root when it finds it in its own trust store. Connect + handshake must finish within
 * the timeout (default 5 s). Nothing is sent after the handshake.
 */
import { X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import tls, {} from 'node:tls';
export const DEFAULT_ENDPOINT_TIMEOUT_MS = 5000;
/** `host:port`, `[v6]:port`; throws a message for anything else. */
export function parseHostPort(s) {
    const m = /^\[([^\]]+)\]:(\d+)$/.exec(s) ?? /^([^:[\]]+):(\d+)$/.exec(s);
    if (!m)
        throw new Error(`"${s}" is not host:port (use [addr]:port for IPv6)`);
    const port = Number(m[2]);
    if (!Number.isInteger(port) || port < 1 || port > 65535)
        throw new Error(`"${s}": port must be 1-65535`);
    return { host: m[1], port };
}
/** The peer chain, leaf first, each certificate once. */
function chainOf(peer) {
    const out = [];
    const seen = new Set();
    let c = peer;
    while (c !== undefined && c !== null && c.raw !== undefined) {
        const cert = new X509Certificate(c.raw);
        if (seen.has(cert.fingerprint256))
            break;
        seen.add(cert.fingerprint256);
        out.push(cert);
        if (c.issuerCertificate === c)
            break;
        c = c.issuerCertificate;
    }
    return out;
}
/** Connects to `hostPort` and returns its chain as one item (never throws). */
export function discoverEndpoint(hostPort, options = {}) {
    const source = `discovered:endpoint:${hostPort}`;
    const fail = (error) => ({ kind: 'endpoint', target: hostPort, source, status: 'error', error });
    let host;
    let port;
    try {
        ({ host, port } = parseHostPort(hostPort));
    }
    catch (e) {
        return Promise.resolve(fail(e.message));
    }
    const timeoutMs = options.timeoutMs ?? DEFAULT_ENDPOINT_TIMEOUT_MS;
    return new Promise((resolve) => {
        let done = false;
        const finish = (item) => {
            if (done)
                return;
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
            }
            catch (e) {
                finish(fail(`cannot read the presented chain: ${e.message}`));
            }
        });
        socket.once('error', (err) => {
            finish(fail(err.code === 'ECONNREFUSED' ? 'connection refused' : err.code ? `${err.code}: ${err.message}` : err.message));
        });
        socket.once('close', () => finish(fail('connection closed before the TLS handshake completed')));
    });
}
//# sourceMappingURL=endpoint.js.map