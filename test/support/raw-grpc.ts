/**
 * A raw node:http2 gRPC client for tests that must see exactly what the server sends (which frame
 * holds the status, trailers-only responses, resets, connections closed under a call), all of
 * which a gRPC library would hide or turn into its own errors.
 */
import { connect, constants as h2, type ClientHttp2Session, type ClientHttp2Stream, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http2';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';

export interface RawReply {
  /** HTTP :status; undefined when no response came (the stream was reset or its connection closed first). */
  readonly httpStatus: number | undefined;
  readonly headers: IncomingHttpHeaders;
  readonly trailers: IncomingHttpHeaders | undefined;
  /** The response's only HEADERS frame carried END_STREAM (a gRPC "Trailers-Only" response). */
  readonly trailersOnly: boolean;
  readonly body: Buffer;
  readonly grpcStatus: number | undefined;
  readonly grpcMessage: string | undefined;
  /** Node's code for how the stream closed: the RST_STREAM code of a reset, NO_ERROR (0) also for a plain end. */
  readonly rstCode: number | undefined;
}

/**
 * An HTTP/2 connection over TLS (ALPN h2) to 127.0.0.1, trusting `caPem`, checked against the
 * name 'localhost'. Connection errors are left to the calls (a refused or closed connection shows
 * as a reply without status); `sockets` collects the TLS sockets under it, for tests that cut them.
 */
export function connectTls(port: number, caPem: string, sockets: TLSSocket[] = []): ClientHttp2Session {
  const session = connect(`https://localhost:${port}`, {
    createConnection: () => {
      const socket = tlsConnect({ host: '127.0.0.1', port, ca: caPem, servername: 'localhost', ALPNProtocols: ['h2'] });
      sockets.push(socket);
      return socket;
    },
  });
  session.on('error', () => {});
  return session;
}

/** Connections a test file opens, destroyed together when it ends. */
export class RawConnections {
  private readonly all: ClientHttp2Session[] = [];

  open(port: number, caPem: string): ClientHttp2Session {
    const s = connectTls(port, caPem);
    this.all.push(s);
    return s;
  }

  destroyAll(): void {
    this.all.forEach((s) => s.destroy());
  }
}

/** A reply's grpc-status as a string, or 'no connection' when none came (the connection was refused or closed first). */
export function statusOf(r: RawReply): string {
  return r.grpcStatus === undefined ? 'no connection' : String(r.grpcStatus);
}

/**
 * Starts a gRPC call (POST, application/grpc, te: trailers, then `headers`, which may override
 * or remove any of those). `reply` settles, and never rejects, once the stream is closed: after
 * both sides ended it, or a reset, or the connection's end.
 */
export function startCall(session: ClientHttp2Session, path: string, headers: OutgoingHttpHeaders = {}): { stream: ClientHttp2Stream; reply: Promise<RawReply> } {
  const stream = session.request({ ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers', ...headers });
  const reply = new Promise<RawReply>((resolve) => {
    let response: IncomingHttpHeaders | undefined;
    let trailers: IncomingHttpHeaders | undefined;
    let trailersOnly = false;
    const chunks: Buffer[] = [];
    stream.on('response', (h, flags) => {
      response = h;
      trailersOnly = (flags & h2.NGHTTP2_FLAG_END_STREAM) !== 0;
    });
    stream.on('trailers', (t) => (trailers = t));
    stream.on('data', (d: Buffer) => chunks.push(d));
    stream.on('error', () => {}); // a reset or a lost connection: seen in the reply as no status
    stream.on('close', () => {
      const final = trailersOnly ? response : trailers;
      const grpcStatus = final?.['grpc-status'];
      resolve({
        httpStatus: response === undefined ? undefined : Number(response[h2.HTTP2_HEADER_STATUS]),
        headers: response ?? {},
        trailers,
        trailersOnly,
        body: Buffer.concat(chunks),
        grpcStatus: grpcStatus === undefined ? undefined : Number(grpcStatus),
        grpcMessage: final?.['grpc-message'] as string | undefined,
        rstCode: stream.rstCode,
      });
    });
  });
  return { stream, reply };
}

/** One complete call: headers, `body` with END_STREAM, the reply. */
export function unaryCall(session: ClientHttp2Session, path: string, body: Uint8Array, headers: OutgoingHttpHeaders = {}): Promise<RawReply> {
  const { stream, reply } = startCall(session, path, headers);
  stream.end(body);
  return reply;
}

/** A gRPC length-prefixed message; `flag` and `declaredLength` may lie, to test the server's checks. */
export function grpcFrame(payload: Uint8Array, flag = 0, declaredLength = payload.length): Buffer {
  const prefix = Buffer.alloc(5);
  prefix[0] = flag;
  prefix.writeUInt32BE(declaredLength, 1);
  return Buffer.concat([prefix, payload]);
}
