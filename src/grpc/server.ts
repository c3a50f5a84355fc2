import {
  constants as h2,
  createSecureServer,
  type Http2SecureServer,
  type Http2Session,
  type IncomingHttpHeaders,
  type ServerHttp2Session,
  type ServerHttp2Stream,
} from 'node:http2';
import type { Socket } from 'node:net';
import type { DetailedPeerCertificate, TLSSocket } from 'node:tls';
import type { Logger } from '../log/logger.js';
import { listenOn } from '../net/host-port.js';
import { GrpcStatusError, Status, type StatusCode } from './codes.js';
import { secureContextOptions, type ServingIdentity } from './tls.js';
import { ACCEPT_ENCODING, encodeGrpcMessage, frameMessage, parseGrpcTimeout, supportedEncoding, UnaryBody } from './wire.js';

export interface GrpcServerOptions {
  /** host:port; port 0 picks a free port. */
  readonly listen: string;
  /**
   * Another process listens and hands this server its connections (acceptConnection); start()
   * then binds nothing and reports this port. Used by cluster workers (src/runtime/dispatcher.ts).
   */
  readonly handedConnections?: { readonly port: number };
  readonly maxRequestBytes: number;
  /** Seconds in-flight calls get to finish on shutdown. */
  readonly shutdownGrace: number;
  readonly maxConcurrentStreams: number;
  /** Seconds a connection may take to finish its TLS handshake. Default 30. */
  readonly handshakeTimeout?: number;
  /** Seconds a call's request may take to arrive in full; beyond it DEADLINE_EXCEEDED. 0 or absent: no limit. */
  readonly requestReadTimeout?: number;
  /** Seconds without traffic after which a connection is closed gracefully; 0 never. Default 0. */
  readonly idleTimeout?: number;
  /** Connections kept open at once (per process); one beyond it is closed as soon as it is accepted. 0 or absent: no limit. */
  readonly maxConnections?: number;
  /**
   * Bytes of requests still arriving that this process holds at once; 0 or absent: no limit. Each
   * stream may hold up to maxRequestBytes before admission sees it, so without a bound a client
   * that starts uploads and never finishes them holds maxConcurrentStreams x maxRequestBytes per
   * connection, outside the V8 heap. Beyond it the oldest stalled upload is dropped
   * (UNAVAILABLE), or, with none, the new data's call; an upload alone is never refused.
   */
  readonly maxUploadBytes?: number;
  /** Tests: EVICT_PENDING_MS, EVICT_IDLE_MS, SLOW_UPLOAD_MS and HALF_CLOSED_MS. */
  readonly evictAfterMs?: { readonly pending: number; readonly idle: number; readonly slowUpload?: number; readonly halfClosed?: number };
  /**
   * While high, new connections are closed as soon as they are accepted, and connections with no
   * call open get GOAWAY, so that a flood of connections cannot exhaust the heap.
   */
  readonly memoryPressure?: MemoryPressure;
  /** Counts each connection refused at accept, or closed while idle because memory was short. */
  readonly onConnectionShed?: (reason: ConnectionShedReason) => void;
  /**
   * Counts each status other than OK sent to a client, whatever sent it: a handler's refusal, or
   * the transport's own (unknown method, deadline, a request that does not decode, shutdown). Not
   * a call whose client had gone (nothing is sent).
   */
  readonly onErrorStatusSent?: (code: StatusCode) => void;
}

export const CONNECTION_SHED_REASONS = ['max_connections', 'max_connections_idle', 'memory', 'idle_memory'] as const;
export type ConnectionShedReason = (typeof CONNECTION_SHED_REASONS)[number];

interface Upload {
  readonly started: number;
  readonly fail: (code: StatusCode, details: string) => void;
  /** Refuses the call with UNAVAILABLE, told to the route's Shed first. */
  readonly shed: (details: string) => void;
  /** Bytes of the request received so far (held in memory until it is complete). */
  bytes: number;
  /** performance.now() of its last data. */
  lastData: number;
}

/** An upload younger than this is never made room for: a client sends a CSR in one read. */
const STALLED_UPLOAD_MS = 1000;

/**
 * Advertised as SETTINGS_MAX_HEADER_LIST_SIZE: a client that honours it (grpc-go fails such a call
 * at once) never sends more. Unsaid, past about 100 KB nghttp2 answers a GOAWAY that leaves the
 * stream open, and an istio-agent call, which has no deadline, waited for server.idleTimeout.
 * Four times the longest token meshcert reads (16 KiB) and more than any agent sends.
 */
const MAX_HEADER_LIST_BYTES = 65_536;

interface SessionActivity {
  /** Unary calls whose request is complete and which have not closed. */
  unaryCalls: number;
  /** performance.now() of the last new stream, or of the last unary call's close. */
  lastActive: number;
  /** Set once the session was sent GOAWAY for memory. */
  goawayAt?: number;
}

/** Under memory pressure a connection must have been idle this long to be shed. */
const IDLE_BEFORE_SHED_MS = 1000;
/** ...and one still open this long after its GOAWAY (a server stream keeps it) is destroyed. */
const GOAWAY_GRACE_MS = 5000;
/**
 * At server.maxConnections, a socket that has sent nothing for EVICT_PENDING_MS gives its slot to
 * a new connection, and so does a handshake pending for three times that whatever it has sent (a
 * client's takes milliseconds, or seconds queued in a storm: not the half minute of the handshake
 * timeout a stalled client could otherwise hold), and a connection with no unary call for
 * EVICT_IDLE_MS.
 */
const EVICT_PENDING_MS = 5000;
const EVICT_IDLE_MS = 10_000;
/** An upload this old may be dropped for room even while data trickles in (a CSR arrives in one read). */
const SLOW_UPLOAD_MS = 5000;
/**
 * A connection whose session has ended (closed and drained, or destroyed) but whose client has not
 * closed its side is destroyed once two checks this far apart have found it so (1 to 2 times this
 * after the end): Node ends only its own side of a session that was closed gracefully first, and a
 * client that never answers with its own FIN would otherwise hold the socket, and a
 * server.maxConnections slot, for good.
 */
const HALF_CLOSED_MS = 5000;
/** What a server stream ended by destroySession gets to send its trailers before the session is destroyed. */
const STREAM_END_FLUSH_MS = 1000;
/** Keepalive probes on accepted connections from this much idle time: a peer gone without a FIN (a node lost) is noticed. */
const KEEPALIVE_MS = 60_000;
/** After an idle connection's GOAWAY, a unary call still in progress is waited for at most this long. */
const IDLE_CLOSE_MAX_WAIT_MS = 60_000;
/** The longest delay setTimeout honours (2^31-1 ms). */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** Whether this process is short of memory (src/runtime/heap-pressure.ts), as the transport sees it. */
export interface MemoryPressure {
  readonly high: boolean;
  /** Called on every sample while high, and once when it turns low again. */
  onSample(listener: (high: boolean) => void): void;
}

/** A method's codec (proto-loader's protobufjs functions). */
export interface MethodCodec<Req, Res> {
  readonly path: string;
  readonly deserialize: (payload: Buffer) => Req;
  readonly serialize: (response: Res) => Buffer;
}

/** What a handler may know about the call besides its message. */
export interface CallInfo {
  /** Request headers (gRPC metadata), names lower-case. */
  readonly headers: IncomingHttpHeaders;
  /** "address:port" of the client ("[v6]:port" for IPv6). */
  readonly peer: string;
  /** The client's IP address alone; undefined when the connection does not say. */
  readonly peerHost: string | undefined;
  /**
   * DER of the client certificate, then of the certificates the handshake chained it through (to
   * the root it trusts), present only when the handshake verified it. The intermediates matter to
   * client-certificate authentication: a workload certificate from another intermediate under a
   * trusted root (another cluster's, under a shared root) verifies only through them.
   */
  readonly peerCertificates: readonly Buffer[] | undefined;
  /** Why the handshake refused the client certificate presented (OpenSSL's code); undefined when none was presented or it verified. */
  readonly peerCertificateRefused?: string | undefined;
  /** True once the call is over for the client: it reset the stream, its connection closed or its deadline passed. */
  readonly cancelled: () => boolean;
}

/** Unary: resolve with the response or reject with a GrpcStatusError (anything else is INTERNAL). */
export type UnaryHandler<Req, Res> = (request: Req, call: CallInfo) => Promise<Res> | Res;

/**
 * Admission of a unary call, asked once its request message is complete (and inflated, if it was
 * compressed), before it is decoded, with the message's size. Throw a GrpcStatusError to refuse:
 * a shed call is never decoded or handled. Not asked earlier (at the length prefix) on purpose: a
 * client that sent a prefix and then stalled would hold capacity for as long as it liked, so a few
 * hundred stalled streams could have every other call shed. The returned release runs once the
 * handler has settled, or at close when the call never reached it (its message did not decode).
 */
export type Admission = (requestBytes: number, call: CallInfo) => () => void;

/**
 * Told of a unary call the transport refuses with UNAVAILABLE while its request is still
 * arriving (server-wide maxUploadBytes), so the route can log and count it as it does the calls
 * its Admission refuses. The transport sends the status.
 */
export type Shed = (details: string, call: CallInfo, waitedMs: number) => void;

export interface ServerStream<Res> {
  write(response: Res): void;
  /** Ends the call with OK. */
  end(): void;
  /** Ends the call with this status (in the trailers, after what was written). */
  fail(code: StatusCode, details: string): void;
  onClose(listener: () => void): void;
}
export type ServerStreamHandler<Req, Res> = (request: Req, call: CallInfo, stream: ServerStream<Res>) => void;

type Route =
  | { kind: 'unary'; codec: MethodCodec<unknown, unknown>; handler: UnaryHandler<unknown, unknown>; admit: Admission | undefined; shed: Shed | undefined }
  | { kind: 'stream'; codec: MethodCodec<unknown, unknown>; handler: ServerStreamHandler<unknown, unknown> };

interface Peer {
  readonly address: string;
  readonly host: string | undefined;
  readonly certificates: readonly Buffer[] | undefined;
  readonly certificateRefused: string | undefined;
}

const RESPONSE_HEADERS = {
  [h2.HTTP2_HEADER_STATUS]: 200,
  [h2.HTTP2_HEADER_CONTENT_TYPE]: 'application/grpc+proto',
  'grpc-accept-encoding': ACCEPT_ENCODING,
} as const;
const OK_TRAILERS = { 'grpc-status': '0' } as const;
/** "application/grpc" alone or with a "+codec" / ";params" suffix (as grpc-go reads it; not grpc-web). */
const GRPC_CONTENT_TYPE = /^application\/grpc(?:$|[+;])/i;

function sendOkTrailers(this: ServerHttp2Stream): void {
  this.sendTrailers(OK_TRAILERS);
}

function ignore(): void {}

/**
 * gRPC over Node's HTTP/2 (the same node:http2 server grpc-js is built on), without grpc-js's
 * per-call machinery: on two cores that machinery cost about as much CPU as the certificate's
 * crypto (see README "Performance"). It serves unary and server-streaming calls with the
 * behaviour clients rely on: trailers-only errors, grpc-message percent-encoding, grpc-timeout,
 * gzip/deflate requests, a request size limit checked before buffering, 415 for non-gRPC
 * requests, UNIMPLEMENTED for unknown methods, graceful GOAWAY drain on shutdown.
 */
export class GrpcServer {
  private readonly server: Http2SecureServer;
  private readonly routes = new Map<string, Route>();
  private readonly sessions = new Set<ServerHttp2Session>();
  private readonly sockets = new Set<Socket>();
  /** Accepted sockets by connectionKey, to find a session's own (session.socket cannot be destroyed). */
  private readonly byPeer = new Map<string, Socket>();
  /** Each session's accepted socket. */
  private readonly rawSocket = new WeakMap<Http2Session, Socket>();
  /** Each session's server streams still open (health Watches), ended with a status before the session is destroyed. */
  private readonly serverStreams = new WeakMap<Http2Session, Set<ServerHttp2Stream>>();
  /** Sessions this server has ended whose connection is watched until it closes (reapWhenEnded). */
  private readonly reaping = new WeakSet<Http2Session>();
  /** Accepted sockets whose TLS handshake has not finished, by connectionKey (oldest first). */
  private readonly pending = new Map<string, { socket: Socket; since: number }>();
  private readonly peers = new WeakMap<Http2Session, Peer>();
  /** Streams whose request is still arriving, for server.requestReadTimeout. */
  private readonly uploads = new Map<ServerHttp2Stream, Upload>();
  /** Sum of Upload.bytes. */
  private uploadBytes = 0;
  private sweeper: NodeJS.Timeout | undefined;
  private stopping = false;
  /** What each session is doing, to find the ones to shed when memory is short. */
  private readonly activity = new Map<Http2Session, SessionActivity>();
  /** Connections refused and idle sessions closed because memory was short, since it last was. */
  private readonly shedCounts = { connections: 0, idleSessions: 0 };
  private port = 0;

  constructor(
    private readonly options: GrpcServerOptions,
    tls: ServingIdentity,
    private readonly logger: Logger,
  ) {
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
      // SETTINGS_MAX_HEADER_LIST_SIZE (MAX_HEADER_LIST_BYTES), said so that clients keep to it.
      settings: { maxConcurrentStreams: options.maxConcurrentStreams, enablePush: false, maxHeaderListSize: MAX_HEADER_LIST_BYTES },
      // Node resets a session whose buffered data passes this many MB (default 10); allow every
      // stream of a connection to hold a full-size request.
      maxSessionMemory: Math.max(10, Math.ceil((options.maxConcurrentStreams * (options.maxRequestBytes + 16_384)) / 2 ** 20)),
      // A connection that never completes its handshake holds a socket and buffers for nothing.
      handshakeTimeout: (options.handshakeTimeout ?? 30) * 1000,
    });
    // Every accepted or handed-over connection, TLS finished or not: counted for
    // server.maxConnections (here rather than with net.Server's own limit, which does not see the
    // connections a cluster primary hands over), and closed by a shutdown whose grace has run out.
    this.server.on('connection', (socket: Socket) => {
      // Closed before the handshake, which is where a new connection's CPU and memory go; the
      // client reconnects with backoff. Checked first: no connection is given up for one refused.
      if (options.memoryPressure?.high) {
        this.shedCounts.connections++;
        options.onConnectionShed?.('memory');
        socket.destroy();
        return;
      }
      if (options.maxConnections && this.sockets.size >= options.maxConnections && !this.evictForNewConnection()) {
        this.logger.debug({ maxConnections: options.maxConnections }, 'connection refused: server.maxConnections reached');
        options.onConnectionShed?.('max_connections');
        socket.destroy();
        return;
      }
      this.sockets.add(socket);
      socket.setKeepAlive(true, KEEPALIVE_MS);
      // Without addresses (a socket reset before it was handed here) it is not tracked by key.
      const key = connectionKey(socket);
      if (key !== undefined) {
        this.pending.set(key, { socket, since: performance.now() });
        this.byPeer.set(key, socket);
      }
      socket.once('close', () => {
        this.sockets.delete(socket);
        if (key === undefined) return;
        if (this.pending.get(key)?.socket === socket) this.pending.delete(key);
        if (this.byPeer.get(key) === socket) this.byPeer.delete(key);
      });
    });
    // The handshake is done: the TLS socket has the raw socket's addresses and ports.
    this.server.on('secureConnection', (tls: Socket) => {
      const key = connectionKey(tls);
      if (key !== undefined) this.pending.delete(key);
    });
    this.server.on('session', (session: ServerHttp2Session) => {
      const key = connectionKey(session.socket);
      const raw = key === undefined ? undefined : this.byPeer.get(key);
      if (raw) this.rawSocket.set(session, raw);
      else this.logger.debug({ peer: `${session.socket.remoteAddress}|${session.socket.remotePort}` }, 'no accepted socket found for a new HTTP/2 session: its connection is not reaped once the session ends');
      // A client's GOAWAY ends the session from its side: its connection is watched as one the server ends.
      session.once('goaway', () => this.reapWhenEnded(session));
      // Its handshake finished after shutdown began: GOAWAY at once, or it would hold the drain.
      if (this.stopping) this.closeSession(session);
      this.sessions.add(session);
      if (options.memoryPressure || options.maxConnections || options.idleTimeout) this.activity.set(session, { unaryCalls: 0, lastActive: performance.now() });
      session.on('close', () => {
        this.sessions.delete(session);
        this.activity.delete(session);
      });
      // Idle connections (no frame either way) are closed gracefully: GOAWAY, and calls still open
      // get GOAWAY_GRACE_MS to finish. A health Watch never does, and would hold the connection
      // (and a server.maxConnections slot) for good; a unary call being handled (a slow
      // TokenReview) is waited for.
      if (options.idleTimeout) {
        session.setTimeout(options.idleTimeout * 1000, () => {
          this.closeSession(session);
          const goawayAt = performance.now();
          const destroyWhenNoUnaryCall = (): void => {
            if (session.destroyed) return;
            // Bounded: a response the client never reads holds its call open for good when
            // server.requestReadTimeout is 0.
            const busy = (this.activity.get(session)?.unaryCalls ?? 0) > 0 && performance.now() - goawayAt < IDLE_CLOSE_MAX_WAIT_MS;
            if (busy) setTimeout(destroyWhenNoUnaryCall, GOAWAY_GRACE_MS).unref();
            else this.destroySession(session);
          };
          setTimeout(destroyWhenNoUnaryCall, GOAWAY_GRACE_MS).unref();
        });
      }
      // A broken connection ends its calls; it must never take the process down.
      session.on('error', (err: Error) => this.logger.debug({ err: err.message }, 'HTTP/2 session error'));
    });
    this.server.on('tlsClientError', (err: Error) => this.logger.debug({ err: err.message }, 'TLS handshake failed'));
    this.server.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => this.onStream(stream, headers));
    options.memoryPressure?.onSample((high) => (high ? this.closeIdleSessions() : this.reportShed()));
  }

  /**
   * Memory is short: GOAWAY to every connection with no unary call being handled and nothing new
   * for a second (so one that just finished its handshake, or just got its answer and is about to
   * call again, is left alone). A CA's clients call once every few hours, so most connections are
   * idle, and after a restart storm there are thousands, each holding about 50 KB until
   * server.idleTimeout; a client reconnects for its next call. Requests still arriving on such a
   * connection are reset with REFUSED_STREAM (not processed: clients retry), so a client cannot keep
   * a connection by never finishing an upload; one kept open by a server stream (a health Watch)
   * is destroyed if memory is still short 5 s after its GOAWAY.
   */
  private closeIdleSessions(): void {
    const now = performance.now();
    const shedding = new Set<Http2Session>();
    for (const [session, a] of this.activity) {
      if (session.destroyed) continue;
      if (a.goawayAt !== undefined) {
        if (now - a.goawayAt >= GOAWAY_GRACE_MS) this.destroySession(session);
        continue;
      }
      if (session.closed) continue; // closing for another reason (idle timeout, shutdown)
      if (a.unaryCalls > 0 || now - a.lastActive < IDLE_BEFORE_SHED_MS) continue;
      shedding.add(session);
    }
    // Requests still arriving on those connections: refused before the GOAWAY, which would wait for them.
    if (shedding.size > 0) for (const stream of this.uploads.keys()) if (stream.session && shedding.has(stream.session)) stream.close(h2.NGHTTP2_REFUSED_STREAM);
    for (const session of shedding) {
      this.activity.get(session)!.goawayAt = now;
      this.shedCounts.idleSessions++;
      this.options.onConnectionShed?.('idle_memory');
      this.closeSession(session);
    }
  }

  /**
   * server.maxConnections is reached and a connection arrives: rather than refuse it, close a
   * connection that holds a slot for nothing, if there is one: first one whose session has ended
   * but whose client keeps its side open (see HALF_CLOSED_MS), then the oldest socket that has sent
   * nothing for EVICT_PENDING_MS (or whose handshake is pending for three times that), else an
   * established connection with no unary call in progress and no new call for EVICT_IDLE_MS (a
   * health Watch alone does not count). Clients of a CA call
   * once every few hours, so most of its connections are idle, and a closed one reconnects for its
   * next call; without this, sockets that never send a byte (or connections parked on a Watch)
   * would hold every slot and lock the agents out.
   */
  private evictForNewConnection(): boolean {
    const now = performance.now();
    const after = this.options.evictAfterMs ?? { pending: EVICT_PENDING_MS, idle: EVICT_IDLE_MS };
    for (const [session, a] of this.activity) {
      const raw = session.destroyed ? this.rawSocket.get(session) : undefined;
      if (!raw || raw.destroyed) continue;
      raw.destroy();
      // One shed for memory was counted then (idle_memory): not twice.
      if (a.goawayAt === undefined) this.options.onConnectionShed?.('max_connections_idle');
      return true;
    }
    for (const [key, p] of this.pending) {
      if (now - p.since < after.pending) break; // oldest first: the rest are younger
      // One whose client has sent its hello may be a handshake queued behind others (a storm on a
      // busy CPU): it gets three times as long before its work is thrown away.
      if (p.socket.bytesRead > 0 && now - p.since < 3 * after.pending) continue;
      this.pending.delete(key);
      p.socket.destroy();
      this.sockets.delete(p.socket);
      this.options.onConnectionShed?.('max_connections_idle');
      return true;
    }
    for (const [session, a] of this.activity) {
      if (session.destroyed || a.unaryCalls > 0 || now - a.lastActive < after.idle) continue;
      // Its raw socket leaves the count when it closes, a moment later.
      this.activity.delete(session);
      session.goaway(h2.NGHTTP2_NO_ERROR);
      this.destroySession(session);
      this.options.onConnectionShed?.('max_connections_idle');
      return true;
    }
    return false;
  }

  /** GOAWAY: calls in progress finish, no new one starts; then see reapWhenEnded. */
  private closeSession(session: Http2Session): void {
    session.close();
    this.reapWhenEnded(session);
  }

  /**
   * Ends the session now. Server streams still open (a health Watch) first end with UNAVAILABLE,
   * which a client reconnects on: a bare destroy resets them with NO_ERROR, which gRPC clients read
   * as INTERNAL. The session is then closed and, its trailers given STREAM_END_FLUSH_MS, destroyed.
   */
  private destroySession(session: Http2Session): void {
    const open = this.serverStreams.get(session);
    if (open && open.size > 0 && !session.destroyed) {
      for (const stream of open) this.sendStatus(stream, Status.UNAVAILABLE, 'the server closed this connection; reconnect');
      if (!session.closed) session.close();
      setTimeout(() => {
        if (!session.destroyed) session.destroy();
      }, STREAM_END_FLUSH_MS).unref();
    } else {
      session.destroy();
    }
    this.reapWhenEnded(session);
  }

  /**
   * Destroys the session's connection once the session has ended and its client has kept its side
   * open past HALF_CLOSED_MS (see there); a session still draining (a call in progress, a Watch) is
   * looked at again every HALF_CLOSED_MS. Never while a stream is open: a session is destroyed only
   * once its last stream has closed, or by this server.
   */
  private reapWhenEnded(session: Http2Session): void {
    const raw = this.rawSocket.get(session);
    if (!raw || this.reaping.has(session)) return;
    this.reaping.add(session);
    const every = this.options.evictAfterMs?.halfClosed ?? HALF_CLOSED_MS;
    let endedBefore = false;
    const check = (): void => {
      if (raw.destroyed) return;
      // destroy(), not resetAndDestroy(): a reset is refused while our FIN still waits behind data
      // the client does not read, and the socket would then stay open, marked destroyed.
      if (session.destroyed && endedBefore) return void raw.destroy();
      endedBefore = session.destroyed;
      setTimeout(check, every).unref();
    };
    setTimeout(check, every).unref();
  }

  private reportShed(): void {
    this.logger.warn({ ...this.shedCounts }, 'memory was short: connections refused and idle connections closed meanwhile');
    this.shedCounts.connections = 0;
    this.shedCounts.idleSessions = 0;
  }

  unary<Req, Res>(codec: MethodCodec<Req, Res>, handler: UnaryHandler<Req, Res>, options: { admit?: Admission; shed?: Shed } = {}): this {
    this.routes.set(codec.path, { kind: 'unary', codec, handler, admit: options.admit, shed: options.shed } as unknown as Route);
    return this;
  }

  serverStream<Req, Res>(codec: MethodCodec<Req, Res>, handler: ServerStreamHandler<Req, Res>): this {
    this.routes.set(codec.path, { kind: 'stream', codec, handler } as unknown as Route);
    return this;
  }

  /** New handshakes use the new certificate; established connections are untouched. */
  updateTls(identity: ServingIdentity): void {
    this.server.setSecureContext(secureContextOptions(identity));
  }

  /**
   * A connection accepted by another process (server.handedConnections), not yet read: it goes
   * through the same path as one this server accepted (limits, TLS handshake, HTTP/2).
   */
  acceptConnection(socket: Socket): void {
    if (this.stopping) return void socket.destroy();
    this.server.emit('connection', socket);
  }

  async start(): Promise<number> {
    if (this.options.handedConnections) {
      this.port = this.options.handedConnections.port;
      this.startSweeper();
      return this.port;
    }
    this.port = await listenOn(this.server, this.options.listen, 'server.listen');
    this.server.on('error', (err: Error) => this.logger.error({ err }, 'gRPC listener error'));
    this.startSweeper();
    return this.port;
  }

  private startSweeper(): void {
    // One sweep for every request still arriving rather than a timer per call: requests nearly
    // always arrive in one read, so the sweep finds few, and the hot path only adds a Map entry.
    const readMs = (this.options.requestReadTimeout ?? 0) * 1000;
    if (readMs > 0) this.sweeper = setInterval(() => this.sweepUploads(readMs), Math.min(1000, readMs / 2)).unref();
  }

  /** DEADLINE_EXCEEDED to every call whose request has been arriving for longer than server.requestReadTimeout. */
  private sweepUploads(readMs: number): void {
    const now = performance.now();
    for (const [stream, u] of this.uploads) {
      if (now - u.started < readMs) continue;
      this.endUpload(stream);
      u.fail(Status.DEADLINE_EXCEEDED, `the request did not arrive within ${this.options.requestReadTimeout} s (server.requestReadTimeout)`);
    }
  }

  /** Forgets an upload (complete, failed or closed) and the bytes it held. */
  private endUpload(stream: ServerHttp2Stream): void {
    const u = this.uploads.get(stream);
    if (u === undefined) return;
    this.uploadBytes -= u.bytes;
    this.uploads.delete(stream);
  }

  /**
   * Counts `n` more bytes held by `upload` within server-wide maxUploadBytes, dropping the oldest
   * stalled uploads (UNAVAILABLE: an agent retries) to make room; false when there is none to drop.
   */
  private holdUpload(stream: ServerHttp2Stream, upload: Upload, n: number): boolean {
    const max = this.options.maxUploadBytes ?? 0;
    if (max > 0 && this.uploadBytes + n > max) {
      const now = performance.now();
      const slow = this.options.evictAfterMs?.slowUpload ?? SLOW_UPLOAD_MS;
      // Oldest first (a Map keeps insertion order): the ones holding memory longest.
      for (const [other, u] of this.uploads) {
        if (this.uploadBytes + n <= max || now - u.started < STALLED_UPLOAD_MS) break;
        // Not one that frees nothing, nor one still making progress (data within the last second)
        // unless it has taken SLOW_UPLOAD_MS already: trickling a byte a second must not hold memory.
        if (other === stream || u.bytes === 0 || (now - u.lastData < STALLED_UPLOAD_MS && now - u.started < slow)) continue;
        this.endUpload(other);
        u.shed('the request stalled while the server needed its memory for others; retry');
      }
      // One upload alone always gets in (as admission always admits one call).
      if (this.uploadBytes + n > max && this.uploadBytes > upload.bytes) return false;
    }
    upload.bytes += n;
    upload.lastData = performance.now();
    this.uploadBytes += n;
    return true;
  }

  get boundPort(): number {
    return this.port;
  }

  /** Stop accepting, send GOAWAY, let in-flight calls finish (up to the grace period), then close everything. */
  async shutdown(): Promise<void> {
    if (this.sweeper) clearInterval(this.sweeper);
    this.stopping = true;
    // Done once every connection has closed, accepted here or handed over (net.Server's own close
    // callback counts only those it accepted itself).
    if (this.server.listening) this.server.close();
    const closed = this.socketsClosed();
    for (const s of this.sessions) this.closeSession(s);
    let timer: NodeJS.Timeout | undefined;
    const graceOver = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        this.logger.warn({ graceSeconds: this.options.shutdownGrace, connections: this.sockets.size }, 'shutdown grace period over; closing remaining calls');
        for (const s of this.sessions) s.destroy();
        // Connections that are not (yet) HTTP/2 sessions too, such as a TLS handshake under way.
        for (const s of this.sockets) s.destroy();
        // The close callback follows once the destroyed sockets have closed; a shutdown is bounded
        // even if one never reports it.
        setTimeout(resolve, 1000).unref();
      }, this.options.shutdownGrace * 1000);
    });
    await Promise.race([closed, graceOver]);
    clearTimeout(timer);
  }

  private socketsClosed(): Promise<void> {
    return new Promise((resolve) => {
      const check = (): void => {
        if (this.sockets.size === 0) resolve();
      };
      for (const s of this.sockets) s.once('close', () => setImmediate(check));
      check();
    });
  }

  private onStream(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): void {
    // A reset or broken stream just ends the call.
    stream.on('error', ignore);
    const contentType = headers[h2.HTTP2_HEADER_CONTENT_TYPE];
    if (headers[h2.HTTP2_HEADER_METHOD] !== 'POST' || typeof contentType !== 'string' || !GRPC_CONTENT_TYPE.test(contentType)) {
      // Not a gRPC request (gRPC over HTTP/2: "SHOULD respond with HTTP status 415"), unless
      // already reset: respond() on a closed stream throws.
      if (!stream.closed && !stream.destroyed) stream.respond({ [h2.HTTP2_HEADER_STATUS]: 415 }, { endStream: true });
      return;
    }
    const path = String(headers[h2.HTTP2_HEADER_PATH] ?? '');
    const route = this.routes.get(path);
    const encoding = headers['grpc-encoding'] as string | undefined;
    let done = false;
    /** A unary call's status is on its way (refused, or answered): its deadline no longer matters. */
    let answered = false;
    const fail = (code: StatusCode, details: string): void => {
      if (done) return;
      done = true;
      answered = true;
      this.sendStatus(stream, code, details);
      // Refused before the request was complete (too large, deadline, unknown method...): as
      // grpc-go does, RST_STREAM(NO_ERROR) after the status tells the client to stop sending,
      // rather than reading the rest of an upload for nothing.
      if (!stream.readableEnded) stream.close(h2.NGHTTP2_NO_ERROR);
    };
    if (!route) return fail(Status.UNIMPLEMENTED, `this server does not implement ${headerText(path).slice(0, 200)}`);
    if (!supportedEncoding(encoding)) return fail(Status.UNIMPLEMENTED, `unsupported grpc-encoding ${headerText(String(encoding)).slice(0, 50)}; supported: ${ACCEPT_ENCODING}`);

    let timeoutMs: number | undefined;
    try {
      timeoutMs = parseGrpcTimeout(headers['grpc-timeout'] as string | undefined);
    } catch (e) {
      return this.failFrom(e, path, fail);
    }
    // grpc-timeout reaches 99999999 hours; Node fires a timer beyond 2^31-1 ms (about 24.8 days)
    // after 1 ms instead, so such a deadline is as good as none.
    const deadline = timeoutMs === undefined || timeoutMs > MAX_TIMER_MS ? undefined : performance.now() + timeoutMs;
    let expired = false;
    const expire = (): void => {
      if (expired || answered) return;
      expired = true;
      if (timer) clearTimeout(timer);
      // A server stream under way (its handler has it: `done`) ends with the status in its
      // trailers; before, the call fails as a unary one does.
      if (done && stream.headersSent) this.sendStatus(stream, Status.DEADLINE_EXCEEDED, 'deadline exceeded');
      else fail(Status.DEADLINE_EXCEEDED, 'deadline exceeded');
    };
    // Over for the client (reset, connection gone, deadline passed): what CallInfo.cancelled
    // reports. Not `done`, which a server stream sets as soon as its handler has it. The clock is
    // read too: on a busy event loop the timer fires late, after the work it should have spared.
    const cancelled = (): boolean => {
      if (!expired && deadline !== undefined && performance.now() >= deadline) expire();
      return expired || stream.closed || stream.destroyed;
    };
    const timer = deadline === undefined ? undefined : setTimeout(expire, timeoutMs);
    // Until its request is complete the stream is an upload: swept for server.requestReadTimeout,
    // and (with memory pressure) no reason to keep its connection.
    const shed = (details: string): void => {
      if (done) return;
      try {
        if (route.kind === 'unary') route.shed?.(details, this.callInfo(stream, headers, cancelled), performance.now() - upload.started);
      } catch (e) {
        // Telling is best effort; the call is refused all the same.
        this.logger.error({ err: e, method: path }, 'unexpected error reporting a shed call');
      } finally {
        fail(Status.UNAVAILABLE, details);
      }
    };
    const upload: Upload = { started: performance.now(), fail, shed, bytes: 0, lastData: 0 };
    this.uploads.set(stream, upload);
    const activity = stream.session ? this.activity.get(stream.session) : undefined;
    if (activity) activity.lastActive = upload.started;
    let counted = false;
    // Admission (unary routes that ask for it): released once the handler settles, or at close if
    // the call never reached it.
    const admit = route.kind === 'unary' ? route.admit : undefined;
    let release: (() => void) | undefined;
    let handling = false;
    const releaseOnce = (): void => {
      const r = release;
      release = undefined;
      r?.();
    };
    stream.on('close', () => {
      done = true;
      if (timer) clearTimeout(timer);
      this.endUpload(stream);
      if (counted && --activity!.unaryCalls === 0) activity!.lastActive = performance.now();
      if (!handling) releaseOnce();
    });

    const body = new UnaryBody(this.options.maxRequestBytes);
    stream.on('data', (chunk: Buffer) => {
      if (done) return;
      if (!this.holdUpload(stream, upload, chunk.length)) {
        return shed('the CA is busy (too many certificate requests in flight); retry with backoff');
      }
      try {
        body.push(chunk);
      } catch (e) {
        this.failFrom(e, path, fail);
      }
    });
    stream.on('end', () => {
      this.endUpload(stream);
      if (activity && route.kind === 'unary' && !done) {
        counted = true;
        activity.unaryCalls++;
      }
      if (done) return;
      let message: Buffer;
      try {
        message = body.message(encoding);
      } catch (e) {
        return failUndecodable(e, path, fail);
      }
      const call = this.callInfo(stream, headers, cancelled);
      if (admit) {
        try {
          release = admit(message.length, call);
        } catch (e) {
          return this.failFrom(e, path, fail);
        }
      }
      let request: unknown;
      try {
        request = route.codec.deserialize(message);
      } catch (e) {
        return failUndecodable(e, path, fail);
      }
      if (route.kind === 'stream') return this.runStream(stream, route, request, call, () => (done = true));
      let result: unknown;
      handling = true;
      try {
        result = route.handler(request, call);
      } catch (e) {
        releaseOnce();
        return this.failFrom(e, path, fail);
      }
      Promise.resolve(result).then(
        (response) => {
          releaseOnce();
          if (done) return;
          let payload: Buffer;
          try {
            payload = route.codec.serialize(response);
          } catch (e) {
            return this.failFrom(e, path, fail);
          }
          done = true;
          answered = true;
          if (timer) clearTimeout(timer);
          if (stream.closed || stream.destroyed) return;
          stream.respond(RESPONSE_HEADERS, { waitForTrailers: true });
          stream.once('wantTrailers', sendOkTrailers);
          stream.end(frameMessage(payload));
          this.bounceUnread(stream);
        },
        (e: unknown) => {
          releaseOnce();
          this.failFrom(e, path, fail);
        },
      );
    });
  }

  /**
   * A response of a few KB that its client has not taken in within server.requestReadTimeout is
   * not being read (a zero flow-control window, say): the stream is reset. Left open it would count
   * as a call in flight for ever, and keep its connection from being closed when idle or when
   * memory is short.
   */
  private bounceUnread(stream: ServerHttp2Stream): void {
    const ms = (this.options.requestReadTimeout ?? 0) * 1000;
    if (ms <= 0 || stream.closed) return;
    const timer = setTimeout(() => {
      if (!stream.closed && !stream.destroyed) stream.close(h2.NGHTTP2_CANCEL);
    }, ms);
    timer.unref();
    stream.once('close', () => clearTimeout(timer));
  }

  private runStream(stream: ServerHttp2Stream, route: Extract<Route, { kind: 'stream' }>, request: unknown, call: CallInfo, markDone: () => void): void {
    markDone();
    if (stream.closed || stream.destroyed) return;
    stream.respond(RESPONSE_HEADERS, { waitForTrailers: true });
    stream.once('wantTrailers', sendOkTrailers);
    const session = stream.session;
    if (session) {
      const streams = this.serverStreams.get(session) ?? new Set<ServerHttp2Stream>();
      this.serverStreams.set(session, streams.add(stream));
      stream.once('close', () => streams.delete(stream));
    }
    const open = (): boolean => !stream.closed && !stream.destroyed && !stream.writableEnded;
    try {
      route.handler(request, call, {
        write: (response) => {
          if (open()) stream.write(frameMessage(route.codec.serialize(response)));
        },
        end: () => {
          if (open()) stream.end();
        },
        fail: (code, details) => {
          if (open()) this.sendStatus(stream, code, details);
        },
        onClose: (listener) => stream.on('close', listener),
      });
    } catch (e) {
      this.failFrom(e, route.codec.path, (code, details) => this.sendStatus(stream, code, details));
    }
  }

  private sendStatus(stream: ServerHttp2Stream, code: StatusCode, details: string): void {
    if (sendStatus(stream, code, details)) this.options.onErrorStatusSent?.(code);
  }

  /** A GrpcStatusError ends the call with its status; anything else is logged and becomes INTERNAL. */
  private failFrom(e: unknown, path: string, fail: (code: StatusCode, details: string) => void): void {
    if (e instanceof GrpcStatusError) return fail(e.code, e.details);
    // Never the error's own text: it may carry internals.
    this.logger.error({ err: e, method: path }, 'unexpected error in a gRPC handler');
    fail(Status.INTERNAL, 'internal error');
  }

  private callInfo(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, cancelled: () => boolean): CallInfo {
    const session = stream.session;
    let peer = session ? this.peers.get(session) : undefined;
    if (session && !peer) {
      // Once per connection: getPeerCertificate parses the certificates into objects.
      const socket = session.socket as TLSSocket;
      // null once the socket is destroyed (a call refused as its connection goes).
      const chain = socket.authorized ? peerChain(socket.getPeerCertificate(true) as DetailedPeerCertificate | null) : [];
      // Not verified: say why only when a certificate was presented (without one, Node reports an
      // issuer error too), so that its holder hears more than "no credential".
      const presented = !socket.authorized && (socket.getPeerCertificate(false) as DetailedPeerCertificate | null)?.raw !== undefined;
      const certificateRefused = presented ? String(socket.authorizationError ?? 'UNKNOWN') : undefined;
      const host = socket.remoteAddress;
      const shown = host ?? 'unknown';
      peer = { address: `${shown.includes(':') ? `[${shown}]` : shown}:${socket.remotePort ?? 0}`, host, certificates: chain.length > 0 ? chain : undefined, certificateRefused };
      this.peers.set(session, peer);
    }
    return { headers, peer: peer?.address ?? 'unknown', peerHost: peer?.host, peerCertificates: peer?.certificates, peerCertificateRefused: peer?.certificateRefused, cancelled };
  }
}

/** Longest client chain read from a handshake (leaf, intermediates, root), as client authentication bounds it. */
const MAX_PEER_CHAIN = 8;

/** The DER of a verified peer's certificate and of those it was chained through, leaf first (Node links each to its issuer; a root links to itself). */
function peerChain(cert: DetailedPeerCertificate | null): Buffer[] {
  const out: Buffer[] = [];
  for (let c = cert; c && c.raw && c.raw.length > 0 && out.length < MAX_PEER_CHAIN; c = c.issuerCertificate) {
    out.push(c.raw);
    if (c.issuerCertificate === c) break;
  }
  return out;
}

/**
 * A header value as text, to quote it back: Node reads header bytes as Latin-1, so the UTF-8 a Go
 * client sends ("é" as C3 A9) would be echoed as two characters. Bytes that are not UTF-8 stay
 * Latin-1.
 */
function headerText(value: string): string {
  if (/^[\x20-\x7e]*$/.test(value)) return value;
  const bytes = Buffer.from(value, 'latin1');
  const text = bytes.toString('utf8');
  return Buffer.from(text, 'utf8').equals(bytes) ? text : value;
}

/** A request that cannot be framed, inflated or decoded: its own status if it has one, else INTERNAL naming the method. */
function failUndecodable(e: unknown, path: string, fail: (code: StatusCode, details: string) => void): void {
  if (e instanceof GrpcStatusError) return fail(e.code, e.details);
  fail(Status.INTERNAL, `the request message could not be decoded as ${methodName(path)}'s request`);
}

/**
 * Streams already given a status. A stream ends with one: a second (a session destroyed, or a
 * deadline, while a Watch's UNAVAILABLE waits for its trailers) would add a second trailers
 * listener, whose sendTrailers throws ERR_HTTP2_TRAILERS_ALREADY_SENT out of an event handler.
 */
const statusGiven = new WeakSet<ServerHttp2Stream>();

/**
 * Ends the call with this status: before a response, as a Trailers-only response (the one HEADERS
 * frame that ends the stream); on a server stream under way, in its trailers. False when nothing
 * was sent: the stream had gone, or already has its status.
 */
function sendStatus(stream: ServerHttp2Stream, code: StatusCode, details: string): boolean {
  if (stream.closed || stream.destroyed || statusGiven.has(stream)) return false;
  statusGiven.add(stream);
  if (stream.headersSent) {
    // A server stream already under way: its status goes in the trailers.
    stream.removeListener('wantTrailers', sendOkTrailers);
    stream.once('wantTrailers', () => stream.sendTrailers({ 'grpc-status': String(code), 'grpc-message': encodeGrpcMessage(details) }));
    if (!stream.writableEnded) stream.end();
    return true;
  }
  stream.respond(
    { ...RESPONSE_HEADERS, 'grpc-status': String(code), 'grpc-message': encodeGrpcMessage(details) },
    { endStream: true },
  );
  return true;
}

function methodName(path: string): string {
  return path.split('/').pop() ?? path;
}

/**
 * A connection's key in pending and byPeer, the same for its raw socket and its TLS socket: both
 * ends' addresses and ports, since on a wildcard listener one remote address and port may reach two
 * local addresses.
 */
function connectionKey(s: Pick<Socket, 'localAddress' | 'localPort' | 'remoteAddress' | 'remotePort'>): string | undefined {
  if (s.remoteAddress === undefined || s.localAddress === undefined) return undefined;
  return `${s.localAddress}|${s.localPort}|${s.remoteAddress}|${s.remotePort}`;
}
