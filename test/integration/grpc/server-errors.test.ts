/**
 * The gRPC layer's last line of defence: a handler that throws something other than a
 * GrpcStatusError (a bug) ends its call with INTERNAL and a fixed message; the error's own text,
 * which may hold internals, reaches only the log. The real server over TLS, a raw HTTP/2 client.
 */
import { connect, constants as h2, type ClientHttp2Session } from 'node:http2';
import { connect as tlsConnect } from 'node:tls';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { GrpcStatusError, Status } from '../../../src/grpc/codes.js';
import { GrpcServer, type CallInfo, type MethodCodec } from '../../../src/grpc/server.js';
import { frameMessage } from '../../../src/grpc/wire.js';
import { createLogger } from '../../../src/log/logger.js';
import { connectTls, startCall, unaryCall } from '../../support/raw-grpc.js';
import { localhostIdentity } from '../../support/serving-identity.js';

const SECRET = 'password=hunter2 at /var/lib/meshcert/ca-key.pem';
const codec = (path: string): MethodCodec<Buffer, Buffer> => ({ path, deserialize: (b) => b, serialize: (r) => r });

let server: GrpcServer;
let session: ClientHttp2Session;
let logged = '';

beforeAll(async () => {
  const { certChainPem: certPem, keyPem } = await localhostIdentity();
  const logger = createLogger('info', new Writable({ write: (c: Buffer, _e, cb) => ((logged += c.toString()), cb()) }));
  server = new GrpcServer({ listen: '127.0.0.1:0', maxRequestBytes: 65536, shutdownGrace: 1, maxConcurrentStreams: 10 }, { certChainPem: certPem, keyPem }, logger)
    .unary(codec('/t.T/Unary'), () => {
      throw new Error(SECRET);
    })
    .unary(codec('/t.T/Rejects'), () => Promise.reject(new Error(SECRET)))
    .serverStream(codec('/t.T/Stream'), () => {
      throw new Error(SECRET);
    });
  const port = await server.start();
  session = connectTls(port, certPem);
});

afterAll(async () => {
  session?.close();
  await server?.shutdown();
});

async function call(path: string): Promise<{ status?: number; message?: string }> {
  const r = await unaryCall(session, path, frameMessage(Buffer.from('x')));
  return { status: r.grpcStatus, message: r.grpcMessage };
}

describe('a handler that fails unexpectedly', () => {
  it.each(['/t.T/Unary', '/t.T/Rejects', '/t.T/Stream'])('%s ends with INTERNAL and a fixed message; the detail reaches only the log', async (path) => {
    logged = '';
    const r = await call(path);
    expect(r).toEqual({ status: Status.INTERNAL, message: 'internal error' });
    expect(JSON.stringify(r)).not.toContain('hunter2');
    await new Promise((res) => setTimeout(res, 300)); // pino writes asynchronously
    expect(logged).toContain('unexpected error in a gRPC handler');
    expect(logged).toContain('hunter2');
  });

  it('keeps serving afterwards', async () => {
    expect((await call('/t.T/Unary')).status).toBe(Status.INTERNAL);
  });
});

/** A silent server (routes to be added) that records every error status it reports as sent. */
async function countingServer(): Promise<{ server: GrpcServer; sent: number[]; certPem: string }> {
  const sent: number[] = [];
  const { certChainPem: certPem, keyPem } = await localhostIdentity();
  const logger = createLogger('silent', new Writable({ write: (_c, _e, cb) => cb() }));
  const server = new GrpcServer(
    { listen: '127.0.0.1:0', maxRequestBytes: 65536, shutdownGrace: 1, maxConcurrentStreams: 10, onErrorStatusSent: (code) => sent.push(code) },
    { certChainPem: certPem, keyPem },
    logger,
  );
  return { server, sent, certPem };
}

describe('onErrorStatusSent', () => {
  it('counts each error status sent to a client, and not the refusal of a call whose client had gone (nothing is sent)', async () => {
    let held: { call: CallInfo; refuse: () => void } | undefined;
    const { server, sent, certPem } = await countingServer();
    const s = server.unary(codec('/t.T/Refuses'), (_r, call) => new Promise<Buffer>((_resolve, reject) => (held = { call, refuse: () => reject(new GrpcStatusError(Status.PERMISSION_DENIED, 'no')) })));
    const c = connectTls(await s.start(), certPem);
    try {
      expect((await unaryCall(c, '/t.T/Nope', frameMessage(Buffer.from('x')))).grpcStatus).toBe(Status.UNIMPLEMENTED);
      expect(sent).toEqual([Status.UNIMPLEMENTED]);

      // The client resets its call before the handler refuses it.
      const gone = startCall(c, '/t.T/Refuses');
      gone.stream.end(frameMessage(Buffer.from('x')));
      await vi.waitFor(() => expect(held).toBeDefined(), { timeout: 10_000 });
      gone.stream.close(h2.NGHTTP2_CANCEL);
      await gone.reply;
      await vi.waitFor(() => expect(held!.call.cancelled()).toBe(true), { timeout: 10_000 });
      held!.refuse();
      await new Promise((r) => setTimeout(r, 100));
      expect(sent).toEqual([Status.UNIMPLEMENTED]);

      // The same refusal to a client that waits for it is counted.
      held = undefined;
      const waited = unaryCall(c, '/t.T/Refuses', frameMessage(Buffer.from('x')));
      await vi.waitFor(() => expect(held).toBeDefined(), { timeout: 10_000 });
      held!.refuse();
      expect((await waited).grpcStatus).toBe(Status.PERMISSION_DENIED);
      expect(sent).toEqual([Status.UNIMPLEMENTED, Status.PERMISSION_DENIED]);
    } finally {
      c.destroy();
      await s.shutdown();
    }
  });
});

describe('a server stream given its status while its data waits on flow control', () => {
  it('keeps that first status when its deadline passes before the trailers go out: one status, counted once, nothing thrown', async () => {
    const { server, sent, certPem } = await countingServer();
    const s = server.serverStream(codec('/t.T/Watch'), (_r, _call, stream) => {
      stream.write(Buffer.alloc(1000));
      stream.fail(Status.UNAVAILABLE, 'the server is shutting down'); // as health's endWatches at shutdown
    });
    const port = await s.start();
    // A client that grants no flow-control window: the server's DATA, and so its trailers, wait
    // until the window opens; meanwhile the call's deadline passes (a second status, before).
    const c = connect(`https://localhost:${port}`, {
      createConnection: () => tlsConnect({ host: '127.0.0.1', port, ca: certPem, servername: 'localhost', ALPNProtocols: ['h2'] }),
      settings: { initialWindowSize: 0 },
    });
    c.on('error', () => {});
    try {
      const { stream, reply } = startCall(c, '/t.T/Watch', { 'grpc-timeout': '200m' });
      stream.end(frameMessage(Buffer.from('x')));
      await new Promise((r) => setTimeout(r, 600));
      c.settings({ initialWindowSize: 65_535 });
      const r = await reply;
      expect(r.body.length).toBeGreaterThan(1000);
      expect([r.grpcStatus, r.grpcMessage]).toEqual([Status.UNAVAILABLE, 'the server is shutting down']);
      expect(sent).toEqual([Status.UNAVAILABLE]);
    } finally {
      c.destroy();
      await s.shutdown();
    }
  });
});
