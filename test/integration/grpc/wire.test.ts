/**
 * gRPC over HTTP/2 as the wire carries it (grpc/doc/PROTOCOL-HTTP2.md), checked with a raw
 * node:http2 client so that nothing in a gRPC library can hide what the server actually sends:
 * which frame holds the status, length-prefixed messages, compression, size limits, 415s, and
 * clients that go away mid-call.
 */
import { constants as h2, type ClientHttp2Session, type ClientHttp2Stream, type OutgoingHttpHeaders } from 'node:http2';
import { once } from 'node:events';
import { createConnection } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { deflateSync, gzipSync } from 'node:zlib';
import { credentials, status, type ClientReadableStream } from '@grpc/grpc-js';
import type { MethodDefinition } from '@grpc/proto-loader';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { grpcRequestFrame } from '../../../bench/lib/grpc-frame.js';
import { loadProtos } from '../../../src/client/protos.js';
import { CERTIFICATE_SERVICE, protoDefinition, type IstioCertificateResponseMsg } from '../../../src/grpc/proto.js';
import { makeCsr } from '../../fixtures/csr.js';
import { mintToken, startTestCa, type TestCa } from '../../support/harness.js';
import { connectTls, grpcFrame as frame, startCall, unaryCall, type RawReply } from '../../support/raw-grpc.js';

const CREATE = `/${CERTIFICATE_SERVICE}/CreateCertificate`;
/** The config default for server.maxRequestBytes (the harness does not override it). */
const MAX_REQUEST_BYTES = 64 * 1024;

type CallOptions = { path?: string; headers?: OutgoingHttpHeaders; token?: string };
const callHeaders = (o: CallOptions): OutgoingHttpHeaders => ({ clusterid: 'Kubernetes', ...(o.token ? { authorization: `Bearer ${o.token}` } : {}), ...o.headers });

/** A connection to the test CA; `sockets` collects the raw TLS sockets under it. */
const open = (ca: TestCa, sockets: TLSSocket[] = []): ClientHttp2Session => connectTls(ca.port, ca.rootPem, sockets);
/** Starts a CreateCertificate call (or one to `path`); `reply` settles once the stream is closed. */
const start = (session: ClientHttp2Session, o: CallOptions): { stream: ClientHttp2Stream; reply: Promise<RawReply> } => startCall(session, o.path ?? CREATE, callHeaders(o));
const call = (session: ClientHttp2Session, body: Buffer, o: CallOptions = {}): Promise<RawReply> => unaryCall(session, o.path ?? CREATE, body, callHeaders(o));

/** The length-prefixed messages of a response body (all must be uncompressed and complete). */
function messages(body: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let at = 0; at < body.length; ) {
    expect(body.length - at, 'a message prefix is cut short').toBeGreaterThanOrEqual(5);
    expect(body[at], 'compressed-flag byte').toBe(0);
    const length = body.readUInt32BE(at + 1);
    out.push(body.subarray(at + 5, at + 5 + length));
    at += 5 + length;
    expect(at, 'a message is cut short').toBeLessThanOrEqual(body.length);
  }
  return out;
}

function decodeResponse(payload: Buffer): IstioCertificateResponseMsg {
  const method = (protoDefinition()[CERTIFICATE_SERVICE] as unknown as Record<string, MethodDefinition<unknown, IstioCertificateResponseMsg>>).CreateCertificate!;
  return method.responseDeserialize(payload);
}

/** An IstioCertificateRequest of exactly `total` bytes: field 1 (csr) holding `total - 4` bytes of 'x'. */
function requestOfSize(total: number): Buffer {
  const csrLength = total - 4; // 1 tag byte + 3 length-varint bytes (16384 <= n < 2^21)
  expect(csrLength).toBeGreaterThanOrEqual(16384);
  const varint = Buffer.from([(csrLength & 0x7f) | 0x80, ((csrLength >> 7) & 0x7f) | 0x80, csrLength >> 14]);
  return Buffer.concat([Buffer.from([0x0a]), varint, Buffer.alloc(csrLength, 'x')]);
}

describe('gRPC over HTTP/2 on the wire (raw node:http2 client)', () => {
  let ca: TestCa;
  let session: ClientHttp2Session;
  let token: string;
  let validRequest: Buffer;

  const expectIssued = async (s: ClientHttp2Session): Promise<void> => {
    const r = await call(s, validRequest, { token });
    expect(r.grpcStatus, r.grpcMessage).toBe(status.OK);
  };

  beforeAll(async () => {
    ca = await startTestCa();
    session = open(ca);
    token = await mintToken();
    validRequest = grpcRequestFrame((await makeCsr()).pem);
  });
  afterAll(async () => {
    session?.close();
    await ca?.close();
  });

  it('answers a hand-framed CreateCertificate with 200, application/grpc, one message, and grpc-status 0 in trailers', async () => {
    expect(session.alpnProtocol).toBe('h2');
    const r = await call(session, validRequest, { token });

    expect(r.httpStatus).toBe(200);
    expect(String(r.headers['content-type'])).toMatch(/^application\/grpc/);
    expect(r.headers['grpc-status'], 'the status belongs in the trailers of a call with a message').toBeUndefined();
    expect(r.trailersOnly).toBe(false);
    expect(r.trailers?.['grpc-status']).toBe('0');
    const [only, ...more] = messages(r.body);
    expect(more).toHaveLength(0);
    const chain = decodeResponse(only!).certChain;
    expect(chain).toHaveLength(3);
    expect(chain[2]).toBe(ca.rootPem);
  });

  it.each([
    ['gzip', gzipSync],
    ['deflate', deflateSync],
  ] as const)('reads a request compressed with %s (flag 1 and grpc-encoding)', async (encoding, compress) => {
    const compressed = frame(compress(validRequest.subarray(5)), 1);
    const r = await call(session, compressed, { token, headers: { 'grpc-encoding': encoding } });
    expect(r.grpcStatus, r.grpcMessage).toBe(status.OK);
    expect(decodeResponse(messages(r.body)[0]!).certChain).toHaveLength(3);
  });

  it('answers an unknown method with a trailers-only UNIMPLEMENTED', async () => {
    const r = await call(session, validRequest, { token, path: `/${CERTIFICATE_SERVICE}/DeleteEverything` });
    expect(r.httpStatus).toBe(200);
    expect(String(r.headers['content-type'])).toMatch(/^application\/grpc/);
    expect(r.trailersOnly).toBe(true);
    expect(r.grpcStatus).toBe(status.UNIMPLEMENTED);
    expect(r.body).toHaveLength(0);
    expect(r.trailers).toBeUndefined();
  });

  it.each([
    ['content-type text/plain', { 'content-type': 'text/plain' }],
    ['content-type application/grpc-web', { 'content-type': 'application/grpc-web' }],
    ['content-type application/grpcx', { 'content-type': 'application/grpcx' }],
    ['a GET', { ':method': 'GET', 'content-type': undefined }],
    // gRPC is POST only, whatever the content-type says.
    ['a GET with content-type application/grpc', { ':method': 'GET' }],
    ['a PUT with content-type application/grpc', { ':method': 'PUT' }],
  ] as Array<[string, OutgoingHttpHeaders]>)('answers %s with HTTP 415 and no gRPC status', async (_name, headers) => {
    const { stream, reply } = start(session, { token, headers });
    if (headers[':method'] === 'GET') stream.end();
    else stream.end(validRequest);
    const r = await reply;
    expect(r.httpStatus).toBe(415);
    expect(r.grpcStatus).toBeUndefined();
  });

  it.each(['application/grpc+proto', 'application/grpc;charset=utf-8'])('serves a call with content-type %s (a codec or parameters after application/grpc)', async (contentType) => {
    const r = await call(session, validRequest, { token, headers: { 'content-type': contentType } });
    expect(r.httpStatus).toBe(200);
    expect(r.grpcStatus, r.grpcMessage).toBe(status.OK);
  });

  it('refuses an unsupported grpc-encoding (br) with UNIMPLEMENTED and lists what it accepts', async () => {
    const r = await call(session, frame(Buffer.from('not really brotli'), 1), { token, headers: { 'grpc-encoding': 'br' } });
    expect(r.grpcStatus).toBe(status.UNIMPLEMENTED);
    const accepted = String(r.headers['grpc-accept-encoding']).split(',').map((e) => e.trim());
    expect(accepted.sort()).toEqual(['deflate', 'gzip', 'identity']);
  });

  it('answers a message that is not the request protobuf with INTERNAL and a grpc-message, then keeps serving', async () => {
    const r = await call(session, frame(Buffer.alloc(32, 0xff)), { token });
    expect(r.trailersOnly).toBe(true);
    expect(r.grpcStatus).toBe(status.INTERNAL);
    expect(r.grpcMessage).toMatch(/could not be decoded/);
    await expectIssued(session);
  });

  it.each([
    ['a string field cut short', '0a0561'],
    ['a length past the end', '0affffffff0f01'],
    ['a field numbered 0', '0001'],
    ['a group never ended', '0b'],
    ['metadata whose nested string is cut short', '22040a020a05'],
    ['a csr that is not UTF-8', '0a02c328'],
  ])('answers %s with INTERNAL, as grpc-go does, not a CSR error (protobufjs alone would decode it)', async (_what, hex) => {
    const r = await call(session, frame(Buffer.from(hex, 'hex')), { token });
    expect(r.grpcStatus).toBe(status.INTERNAL);
    expect(r.grpcMessage).toBe("the request message could not be decoded as CreateCertificate's request");
  });

  it('issues for a request with a declared field sent with another wire type, which protobuf-go (and so grpc-go) skips as unknown', async () => {
    // The valid request, then validity_duration (field 3) sent length-delimited and csr (field 1) as a varint.
    const r = await call(session, frame(Buffer.concat([validRequest.subarray(5), Buffer.from('1a036162630805', 'hex')])), { token });
    expect(r.grpcStatus, r.grpcMessage).toBe(status.OK);
    expect(decodeResponse(messages(r.body)[0]!).certChain).toHaveLength(3);
  });

  it.each(['Basic dXNlcjpwYXNz', 'just-a-token'])('tells a caller whose authorization header is not "Bearer <token>" (%s) so', async (authorization) => {
    const r = await call(session, validRequest, { headers: { authorization } });
    expect(r.grpcStatus).toBe(status.UNAUTHENTICATED);
    expect(r.grpcMessage).toMatch(/^the authorization header is not "Bearer <token>": send the service-account token as "authorization: Bearer <token>"/);
  });

  it('refuses a declared length above maxRequestBytes with RESOURCE_EXHAUSTED after the 5-byte prefix alone, while the request is still open', async () => {
    const { stream, reply } = start(session, { token });
    stream.write(frame(Buffer.alloc(0), 0, MAX_REQUEST_BYTES + 1)); // no END_STREAM, no payload
    const endedAtAnswer = new Promise<boolean>((resolve) => stream.once('response', () => resolve(stream.writableEnded)));
    const r = await reply;
    expect(await endedAtAnswer, 'answered while the client had not ended its side').toBe(false);
    expect(r.trailersOnly).toBe(true);
    expect(r.grpcStatus).toBe(status.RESOURCE_EXHAUSTED);
    expect(r.grpcMessage).toMatch(/too large/);
    // As grpc-go does: after the status, RST_STREAM(NO_ERROR) tells the client to stop sending.
    expect(r.rstCode).toBe(h2.NGHTTP2_NO_ERROR);
    await expectIssued(session);
  }, 5_000); // a server that waits for the body would hang here

  it('stops a client uploading an oversized request: the rest is not read (RST_STREAM NO_ERROR after the status)', async () => {
    const { stream, reply } = start(session, { token });
    const closed = new Promise<number>((resolve) => stream.on('close', () => resolve(stream.rstCode ?? -1)));
    const chunk = Buffer.alloc(16 * 1024, 0x41);
    stream.write(frame(Buffer.alloc(0), 0, 4 * 1024 * 1024));
    let written = 0;
    // Keep writing until the server's reset ends the stream (a server that reads on would take all 4 MiB).
    while (!stream.closed && !stream.destroyed && written < 4 * 1024 * 1024) {
      if (!stream.write(chunk)) await Promise.race([new Promise((w) => stream.once('drain', w)), closed]);
      written += chunk.length;
    }
    const r = await reply;
    expect(r.grpcStatus).toBe(status.RESOURCE_EXHAUSTED);
    expect(await closed).toBe(h2.NGHTTP2_NO_ERROR);
    expect(written).toBeLessThan(4 * 1024 * 1024);
    await expectIssued(session);
  }, 10_000);

  it('ends a call whose request is still incomplete at its grpc-timeout with DEADLINE_EXCEEDED', async () => {
    const { stream, reply } = start(session, { token, headers: { 'grpc-timeout': '150m' } });
    const started = Date.now();
    stream.write(validRequest.subarray(0, 40));
    const r = await reply;
    expect(r.trailersOnly).toBe(true);
    expect(r.grpcStatus).toBe(status.DEADLINE_EXCEEDED);
    expect(Date.now() - started).toBeGreaterThanOrEqual(140);
    stream.close(h2.NGHTTP2_CANCEL);
  });

  it('refuses a malformed grpc-timeout with a trailers-only INTERNAL, as grpc-go does, and issues on the connection after it', async () => {
    const r = await call(session, validRequest, { token, headers: { 'grpc-timeout': '1.5S' } });
    expect(r.trailersOnly).toBe(true);
    expect(r.grpcStatus).toBe(status.INTERNAL);
    expect(r.grpcMessage).toMatch(/^malformed grpc-timeout "1.5S"/);
    await expectIssued(session);
  });

  it.each(['99999999H', '2592000S'])('serves a call whose grpc-timeout (%s) is beyond the longest timer Node can set (about 24.8 days)', async (timeout) => {
    // Node fires a longer setTimeout after 1 ms: such a call must not end at once with DEADLINE_EXCEEDED.
    const { stream, reply } = start(session, { token, headers: { 'grpc-timeout': timeout } });
    stream.write(validRequest.subarray(0, 40));
    await new Promise((r) => setTimeout(r, 50));
    stream.end(validRequest.subarray(40));
    const r = await reply;
    expect(r.grpcStatus, r.grpcMessage).toBe(status.OK);
  });

  it('takes a message of exactly maxRequestBytes to the handler, and refuses one byte more as RESOURCE_EXHAUSTED', async () => {
    const atLimit = await call(session, frame(requestOfSize(MAX_REQUEST_BYTES)), { token });
    expect(atLimit.grpcStatus, `${atLimit.grpcMessage}: a CSR of x's is refused for its content`).toBe(status.INVALID_ARGUMENT);
    const over = await call(session, frame(requestOfSize(MAX_REQUEST_BYTES + 1)), { token });
    expect(over.grpcStatus).toBe(status.RESOURCE_EXHAUSTED);
  });

  const gzip = { 'grpc-encoding': 'gzip' };
  it.each<[string, () => Buffer, OutgoingHttpHeaders?]>([
    ['a body that ends inside its message (prefix says 100 bytes, 10 sent)', () => frame(Buffer.alloc(10, 0x0a), 0, 100)],
    ['an empty body', () => Buffer.alloc(0)],
    ['a body shorter than the 5-byte prefix', () => Buffer.from([0, 0, 0])],
    ['two messages in one unary call', () => Buffer.concat([validRequest, validRequest])],
    ['an unknown message flag (2)', () => frame(validRequest.subarray(5), 2)],
    ['a compressed flag without grpc-encoding', () => frame(gzipSync(validRequest.subarray(5)), 1)],
    ['a gzip flag on bytes that are not gzip', () => frame(validRequest.subarray(5), 1), gzip],
  ])('refuses %s with INTERNAL', async (_name, body, headers = {}) => {
    const r = await call(session, body(), { token, headers });
    expect(r.trailersOnly).toBe(true);
    expect(r.grpcStatus, r.grpcMessage).toBe(status.INTERNAL);
    expect(r.grpcMessage).toBeTruthy();
  });

  it('refuses a gzip bomb (small on the wire, huge inflated) with RESOURCE_EXHAUSTED', async () => {
    const bomb = gzipSync(Buffer.alloc(16 * 1024 * 1024));
    expect(bomb.length).toBeLessThan(MAX_REQUEST_BYTES);
    const r = await call(session, frame(bomb, 1), { token, headers: gzip });
    expect(r.grpcStatus).toBe(status.RESOURCE_EXHAUSTED);
  });

  it("percent-encodes '%' and non-ASCII in a grpc-message that echoes the request", async () => {
    const path = `/${CERTIFICATE_SERVICE}/100%-caf\u00e9`;
    const r = await call(session, validRequest, { token, path });
    expect(r.grpcStatus).toBe(status.UNIMPLEMENTED);
    const raw = r.grpcMessage!;
    expect(raw).toMatch(/^[\x20-\x7e]*$/);
    expect(raw).toContain('100%25-caf%C3%A9');
    expect(decodeURIComponent(raw)).toBe(`this server does not implement ${path}`);
    // The same path as a Go client sends it, in UTF-8 (Node reads header bytes as Latin-1): quoted once, not twice.
    const utf8 = await call(session, validRequest, { token, path: Buffer.from(path, 'utf8').toString('latin1') });
    expect(utf8.grpcMessage).toContain('100%25-caf%C3%A9');
    expect(decodeURIComponent(utf8.grpcMessage!)).toBe(`this server does not implement ${path}`);
  });

  it('keeps serving after a client resets a stream mid-body, and after one resets while its call is being handled', async () => {
    const midBody = start(session, { token });
    midBody.stream.write(validRequest.subarray(0, 40));
    midBody.stream.close(h2.NGHTTP2_CANCEL);

    const midHandler = start(session, { token });
    midHandler.stream.end(validRequest, () => midHandler.stream.close(h2.NGHTTP2_CANCEL));

    await new Promise((resolve) => setTimeout(resolve, 200));
    await expectIssued(session);
    expect(ca.logs()).not.toMatch(/unexpected error in a gRPC handler/);
  });

  it('keeps serving after a client destroys its connection with calls in flight', async () => {
    const sockets: TLSSocket[] = [];
    const doomed = open(ca, sockets);
    await once(doomed, 'connect');
    const calls = Array.from({ length: 6 }, (_, i) => {
      const c = start(doomed, { token });
      if (i % 2 === 0) c.stream.end(validRequest);
      else c.stream.write(validRequest.subarray(0, 40));
      return c;
    });
    await new Promise((resolve) => setImmediate(resolve));
    sockets[0]!.destroy(); // the TCP connection, under HTTP/2's feet: no GOAWAY, no RST_STREAM
    await Promise.all(calls.map((c) => c.reply));

    await new Promise((resolve) => setTimeout(resolve, 200));
    const fresh = open(ca);
    try {
      await expectIssued(fresh);
    } finally {
      fresh.close();
    }
    expect(ca.logs()).not.toMatch(/unexpected error in a gRPC handler/);
  });
});

describe('grpc.health.v1.Health/Watch', () => {
  type HealthClient = { Watch(req: { service: string }): ClientReadableStream<{ status: string }>; close(): void };

  it('streams SERVING, then NOT_SERVING and an UNAVAILABLE end when the server shuts down, instead of hanging', async () => {
    const ca = await startTestCa();
    const Health = loadProtos().health;
    const client = new Health(ca.address, credentials.createSsl(Buffer.from(ca.rootPem)), {
      'grpc.ssl_target_name_override': 'localhost',
      'grpc.default_authority': 'localhost',
    }) as unknown as HealthClient;
    try {
      const watch = client.Watch({ service: CERTIFICATE_SERVICE });
      const seen: string[] = [];
      const first = new Promise<void>((resolve) => watch.once('data', () => resolve()));
      // grpc-js emits the non-OK end both as 'error' and as 'status'.
      const ended = new Promise<number>((resolve) => {
        watch.on('status', (s: { code: number }) => resolve(s.code));
        watch.on('error', () => {});
      });
      watch.on('data', (m: { status: string }) => seen.push(m.status));
      await first;
      expect(seen).toEqual(['SERVING']);

      await ca.close();
      expect(await ended).toBe(status.UNAVAILABLE);
      expect(seen).toEqual(['SERVING', 'NOT_SERVING']);
    } finally {
      client.close();
    }
  }, 10_000);
});

describe('connection timeouts (server.handshakeTimeout, server.idleTimeout)', () => {
  let ca: TestCa;
  beforeAll(async () => {
    ca = await startTestCa({ server: { handshakeTimeout: '1s', idleTimeout: '1s' } });
  });
  afterAll(async () => ca?.close());

  it('drops a connection that never starts its TLS handshake', async () => {
    const socket = createConnection({ host: '127.0.0.1', port: ca.port });
    const started = Date.now();
    await new Promise<void>((resolve) => socket.once('close', () => resolve()));
    expect(Date.now() - started).toBeLessThan(5_000);
  }, 10_000);

  it('closes an idle connection gracefully (GOAWAY), after serving its calls', async () => {
    // Everything the call needs is made before connecting: the connection may idle only 1 s.
    const token = await mintToken();
    const body = grpcRequestFrame((await makeCsr()).pem);
    const session = open(ca);
    const r = await call(session, body, { token });
    expect(r.grpcStatus).toBe(status.OK);
    const goaway = new Promise<number>((resolve) => session.once('goaway', (code: number) => resolve(code)));
    const closed = new Promise<void>((resolve) => session.once('close', () => resolve()));
    expect(await goaway).toBe(h2.NGHTTP2_NO_ERROR);
    await closed;
  }, 10_000);

  it('lets a quiet call (a health Watch) go on past the idle timeout', async () => {
    const session = open(ca);
    const stream = session.request({ ':method': 'POST', ':path': '/grpc.health.v1.Health/Watch', 'content-type': 'application/grpc', te: 'trailers' });
    stream.end(Buffer.from([0, 0, 0, 0, 0])); // an empty HealthCheckRequest: the server as a whole
    const goaway = new Promise<void>((resolve) => session.once('goaway', () => resolve()));
    await new Promise<void>((resolve) => stream.once('data', () => resolve()));
    await goaway;
    await new Promise((r) => setTimeout(r, 500));
    expect(stream.closed, 'the Watch must not be cut by the idle close').toBe(false);
    stream.close(h2.NGHTTP2_CANCEL);
    session.close();
  }, 10_000);
});
