import { constants as h2, createSecureServer, } from 'node:http2';
import { splitHostPort } from '../net/host-port.js';
import { GrpcStatusError, Status } from './codes.js';
import { secureContextOptions } from './tls.js';
import { ACCEPT_ENCODING, encodeGrpcMessage, frameMessage, parseGrpcTimeout, supportedEncoding, UnaryBody } from './wire.js';
const RESPONSE_HEADERS = {
    [h2.HTTP2_HEADER_STATUS]: 200,
    [h2.HTTP2_HEADER_CONTENT_TYPE]: 'application/grpc+proto',
    'grpc-accept-encoding': ACCEPT_ENCODING,
};
const OK_TRAILERS = { 'grpc-status': '0' };
/** "application/grpc" alone or with a "+codec" / ";params" suffix (as grpc-go reads it; not grpc-web). */
const GRPC_CONTENT_TYPE = /^application\/grpc(?:$|[+;])/i;
function sendOkTrailers() {
    this.sendTrailers(OK_TRAILERS);
}
function ignore() { }
/**
 * gRPC over Node's HTTP/2 (the same node:http2 server grpc-js is built on), without grpc-js's
 * per-call machinery: on two cores that machinery cost about as much CPU as the certificate's
 * crypto (see README "Performance"). It serves unary and server-streaming calls with the
 * behaviour clients rely on: trailers-only errors, grpc-message percent-encoding, grpc-timeout,
 * gzip/deflate requests, a request size limit checked before buffering, 415 for non-gRPC
 * requests, UNIMPLEMENTED for unknown methods, graceful GOAWAY drain on shutdown.
 */
export class GrpcServer {
    options;
    logger;
    server;
    routes = new Map();
    sessions = new Set();
    peers = new WeakMap();
    port = 0;
    constructor(options, tls, logger) {
        this.options = options;
        this.logger = logger;
        this.server = createSecureServer({
            ...secureContextOptions(tls),
            // Client certificates are optional (workloads use tokens; VMs and istiod may use mTLS). The
            // handshake checks one against meshcert's roots and intermediates; only a verified one is
            // shown to the authenticator, which checks identity, validity and usage again.
            requestCert: true,
            rejectUnauthorized: false,
            allowHTTP1: false,
            // Bounds memory in a restart storm: a client opens at most this many calls per connection at
            // once and queues the rest itself (SETTINGS_MAX_CONCURRENT_STREAMS).
            settings: { maxConcurrentStreams: options.maxConcurrentStreams, enablePush: false },
            // Node resets a session whose buffered data passes this many MB (default 10); allow every
            // stream of a connection to hold a full-size request.
            maxSessionMemory: Math.max(10, Math.ceil((options.maxConcurrentStreams * (options.maxRequestBytes + 16_384)) / 2 ** 20)),
        });
        this.server.on('session', (session) => {
            this.sessions.add(session);
            session.on('close', () => this.sessions.delete(session));
            // A broken connection ends its calls; it must never take the process down.
            session.on('error', (err) => this.logger.debug({ err: err.message }, 'HTTP/2 session error'));
        });
        this.server.on('tlsClientError', (err) => this.logger.debug({ err: err.message }, 'TLS handshake failed'));
        this.server.on('stream', (stream, headers) => this.onStream(stream, headers));
    }
    unary(codec, handler) {
        this.routes.set(codec.path, { kind: 'unary', codec, handler });
        return this;
    }
    serverStream(codec, handler) {
        this.routes.set(codec.path, { kind: 'stream', codec, handler });
        return this;
    }
    /** New handshakes use the new certificate; established connections are untouched. */
    updateTls(identity) {
        this.server.setSecureContext(secureContextOptions(identity));
    }
    async start() {
        const { host, port } = splitHostPort(this.options.listen);
        await new Promise((resolve, reject) => {
            this.server.once('error', reject);
            this.server.listen(port, host, () => {
                this.server.off('error', reject);
                resolve();
            });
        });
        this.server.on('error', (err) => this.logger.error({ err }, 'gRPC listener error'));
        this.port = this.server.address().port;
        return this.port;
    }
    get boundPort() {
        return this.port;
    }
    /** Stop accepting, send GOAWAY, let in-flight calls finish (up to the grace period), then close everything. */
    async shutdown() {
        const closed = new Promise((resolve) => this.server.close(() => resolve()));
        for (const s of this.sessions)
            s.close();
        const timer = setTimeout(() => {
            this.logger.warn({ graceSeconds: this.options.shutdownGrace }, 'shutdown grace period over; closing remaining calls');
            for (const s of this.sessions)
                s.destroy();
        }, this.options.shutdownGrace * 1000);
        await closed;
        clearTimeout(timer);
    }
    onStream(stream, headers) {
        // A reset or broken stream just ends the call.
        stream.on('error', ignore);
        const contentType = headers[h2.HTTP2_HEADER_CONTENT_TYPE];
        if (headers[h2.HTTP2_HEADER_METHOD] !== 'POST' || typeof contentType !== 'string' || !GRPC_CONTENT_TYPE.test(contentType)) {
            // Not a gRPC request (gRPC over HTTP/2: "SHOULD respond with HTTP status 415").
            stream.respond({ [h2.HTTP2_HEADER_STATUS]: 415 }, { endStream: true });
            return;
        }
        const path = String(headers[h2.HTTP2_HEADER_PATH] ?? '');
        const route = this.routes.get(path);
        const encoding = headers['grpc-encoding'];
        let done = false;
        const fail = (code, details) => {
            if (done)
                return;
            done = true;
            sendStatus(stream, code, details);
        };
        if (!route)
            return fail(Status.UNIMPLEMENTED, `this server does not implement ${path.slice(0, 200)}`);
        if (!supportedEncoding(encoding))
            return fail(Status.UNIMPLEMENTED, `unsupported grpc-encoding ${String(encoding).slice(0, 50)}; supported: ${ACCEPT_ENCODING}`);
        const timeoutMs = parseGrpcTimeout(headers['grpc-timeout']);
        const timer = timeoutMs === undefined ? undefined : setTimeout(() => fail(Status.DEADLINE_EXCEEDED, 'deadline exceeded'), timeoutMs);
        stream.on('close', () => {
            done = true;
            if (timer)
                clearTimeout(timer);
        });
        const body = new UnaryBody(this.options.maxRequestBytes);
        stream.on('data', (chunk) => {
            if (done)
                return;
            try {
                body.push(chunk);
            }
            catch (e) {
                this.failFrom(e, path, fail);
            }
        });
        stream.on('end', () => {
            if (done)
                return;
            let request;
            try {
                request = route.codec.deserialize(body.message(encoding));
            }
            catch (e) {
                return e instanceof GrpcStatusError ? fail(e.code, e.details) : fail(Status.INTERNAL, `the request message could not be decoded as ${methodName(path)}'s request`);
            }
            const call = this.callInfo(stream, headers);
            if (route.kind === 'stream')
                return this.runStream(stream, route, request, call, () => (done = true));
            let result;
            try {
                result = route.handler(request, call);
            }
            catch (e) {
                return this.failFrom(e, path, fail);
            }
            Promise.resolve(result).then((response) => {
                if (done)
                    return;
                let payload;
                try {
                    payload = route.codec.serialize(response);
                }
                catch (e) {
                    return this.failFrom(e, path, fail);
                }
                done = true;
                if (timer)
                    clearTimeout(timer);
                if (stream.closed || stream.destroyed)
                    return;
                stream.respond(RESPONSE_HEADERS, { waitForTrailers: true });
                stream.once('wantTrailers', sendOkTrailers);
                stream.end(frameMessage(payload));
            }, (e) => this.failFrom(e, path, fail));
        });
    }
    runStream(stream, route, request, call, markDone) {
        markDone();
        if (stream.closed || stream.destroyed)
            return;
        stream.respond(RESPONSE_HEADERS, { waitForTrailers: true });
        stream.once('wantTrailers', sendOkTrailers);
        const open = () => !stream.closed && !stream.destroyed && !stream.writableEnded;
        try {
            route.handler(request, call, {
                write: (response) => {
                    if (open())
                        stream.write(frameMessage(route.codec.serialize(response)));
                },
                end: () => {
                    if (open())
                        stream.end();
                },
                onClose: (listener) => stream.on('close', listener),
            });
        }
        catch (e) {
            this.failFrom(e, route.codec.path, (code, details) => sendStatus(stream, code, details));
        }
    }
    /** A GrpcStatusError ends the call with its status; anything else is logged and becomes INTERNAL. */
    failFrom(e, path, fail) {
        if (e instanceof GrpcStatusError)
            return fail(e.code, e.details);
        // Never the error's own text: it may carry internals.
        this.logger.error({ err: e, method: path }, 'unexpected error in a gRPC handler');
        fail(Status.INTERNAL, 'internal error');
    }
    callInfo(stream, headers) {
        const session = stream.session;
        let peer = session ? this.peers.get(session) : undefined;
        if (session && !peer) {
            // Once per connection: getPeerCertificate parses the certificate into an object.
            const socket = session.socket;
            const raw = socket.authorized ? socket.getPeerCertificate().raw : undefined;
            const host = socket.remoteAddress ?? 'unknown';
            peer = { address: `${host.includes(':') ? `[${host}]` : host}:${socket.remotePort ?? 0}`, certificate: raw && raw.length > 0 ? raw : undefined };
            this.peers.set(session, peer);
        }
        return { headers, peer: peer?.address ?? 'unknown', peerCertificate: peer?.certificate };
    }
}
/** Trailers-only response: the status travels in the one HEADERS frame that ends the stream. */
function sendStatus(stream, code, details) {
    if (stream.closed || stream.destroyed)
        return;
    if (stream.headersSent) {
        // A server stream already under way: its status goes in the trailers.
        stream.removeListener('wantTrailers', sendOkTrailers);
        stream.once('wantTrailers', () => stream.sendTrailers({ 'grpc-status': String(code), 'grpc-message': encodeGrpcMessage(details) }));
        if (!stream.writableEnded)
            stream.end();
        return;
    }
    stream.respond({ ...RESPONSE_HEADERS, 'grpc-status': String(code), 'grpc-message': encodeGrpcMessage(details) }, { endStream: true });
}
function methodName(path) {
    return path.split('/').pop() ?? path;
}
//# sourceMappingURL=server.js.map