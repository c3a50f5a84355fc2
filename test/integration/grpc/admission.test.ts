/**
 * Admission in the gRPC transport: asked once a unary call's message is complete, before it is
 * decoded; a refused call is never decoded or handled; the release runs once, after the handler
 * settles (or at close when the call never reached it). The real server over TLS, a raw HTTP/2
 * client.
 */
import { gzipSync } from 'node:zlib';
import { constants as h2, type ClientHttp2Session } from 'node:http2';
import { Writable } from 'node:stream';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { GrpcStatusError, Status } from '../../../src/grpc/codes.js';
import { GrpcServer, type MethodCodec } from '../../../src/grpc/server.js';
import { createLogger } from '../../../src/log/logger.js';
import { connectTls, grpcFrame, startCall, unaryCall } from '../../support/raw-grpc.js';
import { localhostIdentity } from '../../support/serving-identity.js';

const MAX_REQUEST_BYTES = 65536;
/** What the admission hook, the decoder and the handler saw, and how the test wants them to behave. */
const seen = { asked: [] as number[], released: 0, decoded: 0, handled: 0, refuse: false, hold: undefined as Promise<void> | undefined };
const codec: MethodCodec<Buffer, Buffer> = {
  path: '/t.T/Echo',
  deserialize: (b) => {
    seen.decoded++;
    if (b.toString() === 'bad!') throw new Error('undecodable');
    return b;
  },
  serialize: (r) => r,
};
let handledNow: () => void = () => {};
let server: GrpcServer;
let session: ClientHttp2Session;

beforeAll(async () => {
  const identity = await localhostIdentity();
  const logger = createLogger('silent', new Writable({ write: (_c, _e, cb) => cb() }));
  server = new GrpcServer({ listen: '127.0.0.1:0', maxRequestBytes: MAX_REQUEST_BYTES, shutdownGrace: 1, maxConcurrentStreams: 10 }, identity, logger).unary(
    codec,
    async (request) => {
      seen.handled++;
      handledNow();
      await seen.hold;
      return request;
    },
    {
      admit: (bytes) => {
        seen.asked.push(bytes);
        if (seen.refuse) throw new GrpcStatusError(Status.UNAVAILABLE, 'busy; retry with backoff');
        return () => seen.released++;
      },
    },
  );
  const port = await server.start();
  session = connectTls(port, identity.certChainPem);
});

afterAll(async () => {
  session?.close();
  await server?.shutdown();
});

afterEach(() => {
  Object.assign(seen, { asked: [], released: 0, decoded: 0, handled: 0, refuse: false, hold: undefined });
});

/** The 5-byte prefix alone, declaring `length` bytes. */
const prefix = (length: number, compressed = false): Buffer => grpcFrame(Buffer.alloc(0), compressed ? 1 : 0, length);
const open = (headers: Record<string, string> = {}): ReturnType<typeof startCall> => startCall(session, codec.path, headers);

const next = (set: (f: () => void) => void): Promise<void> => new Promise((resolve) => set(resolve));

describe('admission of a unary call', () => {
  it('is asked with the message size once the message is complete, before it is decoded; the release runs once the handler has answered', async () => {
    const { stream, reply } = open();
    stream.write(Buffer.concat([prefix(3000), Buffer.alloc(1000, 0x61)]));
    // A second call on the same connection, complete: once it is answered, the first one's bytes
    // have been read too, and they must not have been admitted yet.
    const other = open();
    other.stream.end(Buffer.concat([prefix(2), Buffer.from('ok')]));
    expect((await other.reply).grpcStatus).toBe(Status.OK);
    expect(seen.asked).toEqual([2]);
    stream.end(Buffer.alloc(2000, 0x61));
    const r = await reply;
    expect(r.grpcStatus).toBe(Status.OK);
    expect(r.body.length).toBe(5 + 3000);
    expect(seen.asked).toEqual([2, 3000]);
    await vi.waitFor(() => expect(seen.released).toBe(2), { timeout: 10_000 });
  });

  it('is not held by a client that sent a length prefix and stalled', async () => {
    const stalled = open();
    stalled.stream.write(prefix(MAX_REQUEST_BYTES));
    const next = open();
    next.stream.end(Buffer.concat([prefix(2), Buffer.from('ok')]));
    expect((await next.reply).grpcStatus).toBe(Status.OK);
    expect(seen.asked, 'only the complete call was admitted').toEqual([2]);
    stalled.stream.close(h2.NGHTTP2_CANCEL);
    await stalled.reply;
    expect(seen.asked).toEqual([2]);
  });

  it('a refused call gets the status the admission gave and is never decoded or handled', async () => {
    seen.refuse = true;
    const { stream, reply } = open();
    stream.end(Buffer.concat([prefix(5), Buffer.from('hello')]));
    const r = await reply;
    expect(r.grpcStatus).toBe(Status.UNAVAILABLE);
    expect(r.grpcMessage).toBe('busy; retry with backoff');
    expect(seen.asked).toEqual([5]);
    expect(seen.decoded).toBe(0);
    expect(seen.handled).toBe(0);
    expect(seen.released).toBe(0); // nothing was admitted
  });

  it('holds the admission until the handler settles, even when the client cancels first', async () => {
    let finish!: () => void;
    seen.hold = new Promise<void>((r) => (finish = r));
    const { stream, reply } = open();
    const handled = next((f) => (handledNow = f));
    stream.end(Buffer.concat([prefix(5), Buffer.from('hello')]));
    await handled;
    stream.close(h2.NGHTTP2_CANCEL);
    await reply;
    await new Promise((r) => setTimeout(r, 100)); // the server has seen the cancel
    expect(seen.released, 'the work goes on after the cancel, so the admission must too').toBe(0);
    finish();
    await vi.waitFor(() => expect(seen.released).toBe(1), { timeout: 10_000 });
  });

  it('is released at close when the admitted message does not decode', async () => {
    const { stream, reply } = open();
    stream.end(Buffer.concat([prefix(4), Buffer.from('bad!')]));
    const r = await reply;
    expect(r.grpcStatus).toBe(Status.INTERNAL);
    expect(r.grpcMessage).toBe("the request message could not be decoded as Echo's request");
    expect(seen.asked).toEqual([4]);
    expect(seen.handled).toBe(0);
    await vi.waitFor(() => expect(seen.released).toBe(1), { timeout: 10_000 });
  });

  it('weighs a compressed message by its inflated size', async () => {
    const payload = gzipSync(Buffer.alloc(2000, 0x61));
    const { stream, reply } = open({ 'grpc-encoding': 'gzip' });
    stream.end(Buffer.concat([prefix(payload.length, true), payload]));
    const r = await reply;
    expect(r.grpcStatus).toBe(Status.OK);
    expect(seen.asked).toEqual([2000]);
    await vi.waitFor(() => expect(seen.released).toBe(1), { timeout: 10_000 });
  });
});

describe('shedding at scale on one connection', () => {
  it('every shed call of a burst, and of its immediate retries, ends with a grpc-status (no stream refused or reset)', async () => {
    seen.refuse = true;
    const body = Buffer.concat([prefix(60_000), Buffer.alloc(60_000, 0x61)]);
    const outcomes: Record<string, number> = {};
    const one = async (): Promise<void> => {
      const r = await unaryCall(session, codec.path, body);
      const k = r.grpcStatus === undefined ? `no status, RST_STREAM ${r.rstCode}` : String(r.grpcStatus);
      outcomes[k] = (outcomes[k] ?? 0) + 1;
    };
    // Three waves of 10 streams (the server's maxConcurrentStreams), each retried as soon as it is shed.
    await Promise.all(Array.from({ length: 10 }, async () => {
      for (let attempt = 0; attempt < 30; attempt++) await one();
    }));
    expect(outcomes).toEqual({ [String(Status.UNAVAILABLE)]: 300 });
  }, 30_000);
});
