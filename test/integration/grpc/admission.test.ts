/**
 * Admission in the gRPC transport: asked when a unary call's length prefix arrives, before its
 * body is read; a refusal stops the upload; the release runs once, after the handler settles (or at
 * close when the call never reached it). The real server over TLS, a raw HTTP/2 client.
 */
import { gzipSync } from 'node:zlib';
import { connect, constants as h2, type ClientHttp2Session, type ClientHttp2Stream, type IncomingHttpHeaders } from 'node:http2';
import { Writable } from 'node:stream';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { GrpcStatusError, Status } from '../../../src/grpc/codes.js';
import { GrpcServer, type MethodCodec } from '../../../src/grpc/server.js';
import { createLogger } from '../../../src/log/logger.js';
import { localhostIdentity } from '../../support/serving-identity.js';

const MAX_REQUEST_BYTES = 65536;
const codec: MethodCodec<Buffer, Buffer> = { path: '/t.T/Echo', deserialize: (b) => b, serialize: (r) => r };

/** What the admission hook and the handler saw, and how the test wants them to behave. */
const seen = { asked: [] as number[], released: 0, handled: 0, refuse: false, hold: undefined as Promise<void> | undefined };
let askedNow: () => void = () => {};
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
        askedNow();
        if (seen.refuse) throw new GrpcStatusError(Status.UNAVAILABLE, 'busy; retry with backoff');
        return () => seen.released++;
      },
    },
  );
  const port = await server.start();
  session = connect(`https://localhost:${port}`, { ca: identity.certChainPem, host: '127.0.0.1' });
});

afterAll(async () => {
  session?.close();
  await server?.shutdown();
});

afterEach(() => {
  Object.assign(seen, { asked: [], released: 0, handled: 0, refuse: false, hold: undefined });
});

function prefix(length: number, compressed = false): Buffer {
  const p = Buffer.alloc(5);
  p[0] = compressed ? 1 : 0;
  p.writeUInt32BE(length, 1);
  return p;
}

function open(headers: Record<string, string> = {}): { stream: ClientHttp2Stream; reply: Promise<{ status?: string; message?: string; body: Buffer }> } {
  const stream = session.request({ ':method': 'POST', ':path': codec.path, 'content-type': 'application/grpc', te: 'trailers', ...headers });
  const reply = new Promise<{ status?: string; message?: string; body: Buffer }>((resolve) => {
    let h: IncomingHttpHeaders = {};
    const chunks: Buffer[] = [];
    stream.on('response', (r) => (h = r));
    stream.on('trailers', (t) => (h = { ...h, ...t }));
    stream.on('data', (d: Buffer) => chunks.push(d));
    stream.on('error', () => {});
    stream.on('close', () => resolve({ status: h['grpc-status'] as string | undefined, message: h['grpc-message'] as string | undefined, body: Buffer.concat(chunks) }));
  });
  return { stream, reply };
}

const next = (set: (f: () => void) => void): Promise<void> => new Promise((resolve) => set(resolve));
const settle = (): Promise<void> => new Promise((r) => setTimeout(r, 100));

describe('admission of a unary call', () => {
  it('is asked with the declared length as soon as the prefix arrives, before the body; the release runs once the handler has answered', async () => {
    const { stream, reply } = open();
    const asked = next((f) => (askedNow = f));
    stream.write(prefix(3000)); // the prefix alone, nothing of the body yet
    await asked;
    expect(seen.asked).toEqual([3000]);
    expect(seen.handled).toBe(0);
    stream.end(Buffer.alloc(3000, 0x61));
    const r = await reply;
    expect(r.status).toBe(String(Status.OK));
    expect(r.body.length).toBe(5 + 3000);
    expect(seen.released).toBe(1);
  });

  it('a refusal is decided at the prefix; the rest of the upload is dropped unread and the status sent when it ends (not reset); the handler never runs', async () => {
    seen.refuse = true;
    const { stream, reply } = open();
    const asked = next((f) => (askedNow = f));
    stream.write(prefix(MAX_REQUEST_BYTES)); // the prefix alone
    await asked;
    for (let sent = 0; sent < MAX_REQUEST_BYTES; sent += 4096) stream.write(Buffer.alloc(Math.min(4096, MAX_REQUEST_BYTES - sent), 0x61));
    stream.end();
    const r = await reply;
    expect(r.status).toBe(String(Status.UNAVAILABLE));
    expect(r.message).toBe('busy; retry with backoff');
    expect(stream.rstCode).toBe(h2.NGHTTP2_NO_ERROR);
    expect(seen.asked).toEqual([MAX_REQUEST_BYTES]);
    expect(seen.handled).toBe(0);
    expect(seen.released).toBe(0); // nothing was admitted
  }, 10_000);

  it('holds the admission until the handler settles, even when the client cancels first', async () => {
    let finish!: () => void;
    seen.hold = new Promise<void>((r) => (finish = r));
    const { stream, reply } = open();
    const handled = next((f) => (handledNow = f));
    stream.end(Buffer.concat([prefix(5), Buffer.from('hello')]));
    await handled;
    stream.close(h2.NGHTTP2_CANCEL);
    await reply;
    await settle();
    expect(seen.released, 'the work goes on after the cancel, so the admission must too').toBe(0);
    finish();
    await settle();
    expect(seen.released).toBe(1);
  });

  it('is released at close when the call ends before reaching the handler', async () => {
    const { stream, reply } = open();
    const asked = next((f) => (askedNow = f));
    stream.write(Buffer.concat([prefix(100), Buffer.alloc(10)]));
    await asked;
    stream.close(h2.NGHTTP2_CANCEL);
    await reply;
    await settle();
    expect(seen.handled).toBe(0);
    expect(seen.released).toBe(1);
  });

  it('counts a compressed message as maxRequestBytes (its inflated size is unknown before inflating)', async () => {
    const payload = gzipSync(Buffer.alloc(2000, 0x61));
    const { stream, reply } = open({ 'grpc-encoding': 'gzip' });
    stream.end(Buffer.concat([prefix(payload.length, true), payload]));
    const r = await reply;
    expect(r.status).toBe(String(Status.OK));
    expect(seen.asked).toEqual([MAX_REQUEST_BYTES]);
    expect(seen.released).toBe(1);
  });
});

describe('shedding at scale on one connection', () => {
  it('every shed call of a burst, and of its immediate retries, ends with a grpc-status (no stream refused or reset)', async () => {
    seen.refuse = true;
    const body = Buffer.concat([prefix(60_000), Buffer.alloc(60_000, 0x61)]);
    const outcomes: Record<string, number> = {};
    const one = (): Promise<void> =>
      new Promise((resolve) => {
        const { stream, reply } = open();
        stream.end(body);
        void reply.then((r) => {
          const k = r.status ?? `no status, RST_STREAM ${stream.rstCode}`;
          outcomes[k] = (outcomes[k] ?? 0) + 1;
          resolve();
        });
      });
    // Three waves of 10 streams (the server's maxConcurrentStreams), each retried as soon as it is shed.
    await Promise.all(Array.from({ length: 10 }, async () => {
      for (let attempt = 0; attempt < 30; attempt++) await one();
    }));
    expect(outcomes).toEqual({ [String(Status.UNAVAILABLE)]: 300 });
  }, 30_000);
});
